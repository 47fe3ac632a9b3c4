//! What the fleet's commands share: how a client trusts the server, where
//! the agent keeps its state, and the server's approvals for this host (the
//! gate of `check --server`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use perimeter_api::client::{ApiClient, Auth, Trust};
use perimeter_checks::approvals::{Approvals, parse_approvals};

use crate::args::{GateServerArgs, ServerTrustArgs};

/// The largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

pub(crate) fn trust(args: &ServerTrustArgs) -> Result<Trust> {
    match (&args.fingerprint, &args.ca) {
        (Some(fingerprint), _) => Trust::parse_fingerprint(fingerprint).with_context(|| {
            format!("--fingerprint `{fingerprint}` is not a SHA-256 fingerprint (sha256: and 64 hex digits)")
        }),
        (None, Some(ca)) => Ok(Trust::CaFile(ca.clone())),
        (None, None) => Ok(Trust::System),
    }
}

/// The agent's state directory: the one named, else /var/lib/perimeter/agent
/// as root, else under $XDG_DATA_HOME or ~/.local/share.
pub(crate) fn agent_dir(named: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = named {
        return Ok(dir);
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/perimeter/agent"));
    }
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    xdg.filter(|p| p.is_absolute())
        .map(|p| p.join("perimeter/agent"))
        .or_else(|| {
            home.filter(|p| p.is_absolute())
                .map(|p| p.join(".local/share/perimeter/agent"))
        })
        .context("no place for the agent's state: set --state-dir, XDG_DATA_HOME or HOME")
}

/// The approvals the server holds for this host, parsed as a local file
/// would be, and the URL they came from (for messages).
pub(crate) fn server_approvals(args: &GateServerArgs) -> Result<(Approvals, PathBuf)> {
    let Some(server) = &args.server else {
        bail!("no --server");
    };
    let trust = trust(&args.trust)?;
    let identity = perimeter_agent::load_identity(&agent_dir(args.agent_dir.clone())?)?;
    let (auth, enrolled_id) = match (&args.token_file, identity) {
        (Some(path), identity) => {
            let token = perimeter_files::read_text(path, "a token file", MAX_TOKEN_BYTES)?;
            (
                Auth::Token(token.trim().to_owned()),
                identity.map(|(id, _)| id),
            )
        }
        (None, Some((id, key))) => (Auth::Agent(Arc::new(key)), Some(id)),
        (None, None) => bail!(
            "check --server needs --token-file, or an enrolled agent on this host (its state directory: --agent-dir)"
        ),
    };
    let host_id = args.host_id.clone().or(enrolled_id).context(
        "which host is this on the server? give --host-id (see `perimeter server agents`)",
    )?;
    let client = ApiClient::new(server, &trust, auth)?;
    let path = format!("{}/approvals.toml?host={host_id}", perimeter_api::PREFIX);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let text = runtime.block_on(client.get_text(&path))?;
    let label = PathBuf::from(format!("{}{path}", client.base()));
    let approvals = parse_approvals(&text, &label)?;
    Ok((approvals, label))
}
