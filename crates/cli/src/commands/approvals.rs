//! `perimeter approvals export|import`: the server's approvals and the
//! approvals file, round trip, so that teams who keep the checklist in
//! version control go on doing so (with `import --sync`, the file stays the
//! source of truth).

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use perimeter_checks::approvals::{self, selector_toml};

use crate::args::{ApprovalsAction, ApprovalsArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{As, Session};
use crate::terminal::Terminal;

pub(crate) fn run(args: ApprovalsArgs, _terminal: &Terminal) -> Result<ExitCode> {
    match args.action {
        ApprovalsAction::Export(export) => {
            require_server(export.server.server.as_deref())?;
            let session = Session::open(&export.server, As::Person)?;
            let text = session.export(&export.scope)?;
            // What comes back must be an approvals file this perimeter reads.
            let parsed = approvals::parse_approvals(&text, std::path::Path::new("<server>"))?;
            match &export.output {
                Some(path) => {
                    approvals::save_atomic(path, &text)?;
                    eprintln!(
                        "perimeter: {} approvals of {} written to {}",
                        parsed.entries.len(),
                        export.scope,
                        path.display()
                    );
                }
                None => out!("{text}"),
            }
            Ok(ExitCode::Clean)
        }
        ApprovalsAction::Import(import) => {
            require_server(import.server.server.as_deref())?;
            let file = approvals::load(&import.file, false)?;
            let session = Session::open(&import.server, As::Person)?;
            let held: Vec<_> = session
                .approvals(false)?
                .into_iter()
                .filter(|approval| approval.scope == import.scope)
                .collect();
            let held_selectors: BTreeSet<&str> = held
                .iter()
                .map(|approval| approval.selector.as_str())
                .collect();
            let mut in_file = BTreeSet::new();
            let (mut added, mut kept) = (0, 0);
            for entry in &file.entries {
                let new = entry.to_new();
                let selector = selector_toml(&new);
                if held_selectors.contains(selector.as_str()) || !in_file.insert(selector) {
                    kept += 1;
                    continue;
                }
                let stored = session.approve(&import.scope, &new, true)?;
                outln!("added approval {}: {entry}", stored.id);
                added += 1;
            }
            let mut revoked = 0;
            if import.sync {
                let reason = format!("not in {}", import.file.display());
                for approval in held.iter().filter(|a| !in_file.contains(&a.selector)) {
                    session.revoke(approval.id, &reason)?;
                    outln!("revoked approval {} ({reason})", approval.id);
                    revoked += 1;
                }
            }
            outln!(
                "{}: {added} added, {kept} already held{}",
                import.scope,
                if import.sync {
                    format!(", {revoked} revoked")
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::Clean)
        }
    }
}

fn require_server(server: Option<&str>) -> Result<()> {
    if server.is_none() {
        bail!("approvals export and import work on a server: give --server URL");
    }
    Ok(())
}
