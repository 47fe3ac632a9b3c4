//! What the server's approvals say about a host's listeners: the approvals
//! that cover a host (fleet-wide, its environment's, its own) rendered as an
//! approvals file and parsed by `checks::approvals` (the same strict parser
//! and the same matching rule as the local `perimeter check`), so a listener
//! is approved on the server exactly when the same entries in a file would
//! approve it on the host.

use std::net::IpAddr;
use std::path::Path;

use perimeter_api::{JudgedListener, ListenerDoc};
use perimeter_checks::approvals::{
    Approvals, ListenerFacts, OwnerFacts, StoredEntry, Verdict, parse_approvals, render_file,
};
use perimeter_model::{Protocol, Scope};
use perimeter_store::fleet::{AgentRow, ApprovalScope, FleetApproval};
use time::{Date, OffsetDateTime};

/// The approvals that cover a host, in id order; revoked ones never do.
pub(crate) fn covering<'a>(rows: &'a [FleetApproval], agent: &AgentRow) -> Vec<&'a FleetApproval> {
    rows.iter()
        .filter(|row| row.revoked.is_none())
        .filter(|row| match &row.scope {
            ApprovalScope::Fleet => true,
            ApprovalScope::Environment(name) => agent.environment.as_deref() == Some(name.as_str()),
            ApprovalScope::Host(id) => *id == agent.id,
        })
        .collect()
}

/// `fleet`, `environment:NAME`, `host:ID`.
pub(crate) fn scope_text(scope: &ApprovalScope) -> String {
    match scope {
        ApprovalScope::Fleet => "fleet".to_owned(),
        ApprovalScope::Environment(name) => format!("environment:{name}"),
        ApprovalScope::Host(id) => format!("host:{id}"),
    }
}

/// The approvals file of these rows, each entry preceded by nothing but its
/// keys (the file is generated; its header says from where).
pub(crate) fn render(rows: &[&FleetApproval], header: &str) -> Result<String, String> {
    let entries: Vec<StoredEntry<'_>> = rows
        .iter()
        .map(|row| StoredEntry {
            selector: &row.selector,
            approved_by: &row.approved_by,
            approved_at: row.approved_at.date(),
            reason: &row.reason,
            expires: row.expires.map(OffsetDateTime::date),
        })
        .collect();
    render_file(header, &entries)
}

/// The rows as parsed approvals, index for index.
pub(crate) fn parsed(rows: &[&FleetApproval]) -> Result<Approvals, String> {
    let text = render(rows, "")?;
    parse_approvals(&text, Path::new("<server>")).map_err(|err| err.to_string())
}

/// A reported listener as facts; `None` when the agent sent values that are
/// not a protocol, an address or a scope (refused at ingest, so only a
/// database written by something else gets here).
pub(crate) fn facts(listener: &ListenerDoc) -> Option<ListenerFacts<'_>> {
    Some(ListenerFacts {
        netns: &listener.netns,
        protocol: Protocol::parse(&listener.protocol)?,
        address: listener.address.parse::<IpAddr>().ok()?,
        scope: Scope::parse(&listener.scope)?,
        port: listener.port,
        owners: listener
            .owners
            .iter()
            .map(|owner| OwnerFacts {
                exe: owner.exe.as_deref().map(Path::new),
                package: owner.package.as_deref(),
                user: &owner.user,
            })
            .collect(),
    })
}

/// Each listener with its verdict.
pub(crate) fn judge(
    listeners: &[ListenerDoc],
    rows: &[&FleetApproval],
    approvals: &Approvals,
    today: Date,
) -> Vec<JudgedListener> {
    listeners
        .iter()
        .map(|listener| {
            let (approval, approval_id) = if !listener.is_exposed() {
                ("not-needed", None)
            } else {
                match facts(listener) {
                    None => ("unapproved", None),
                    Some(facts) => match approvals.verdict_facts(&facts, today) {
                        (Verdict::Approved(_), index) => {
                            ("approved", index.and_then(|i| rows.get(i)).map(|r| r.id))
                        }
                        (Verdict::Expired(_), index) => {
                            ("expired", index.and_then(|i| rows.get(i)).map(|r| r.id))
                        }
                        (Verdict::Unapproved, _) => ("unapproved", None),
                    },
                }
            };
            JudgedListener {
                listener: listener.clone(),
                approval: approval.to_owned(),
                approval_id,
            }
        })
        .collect()
}
