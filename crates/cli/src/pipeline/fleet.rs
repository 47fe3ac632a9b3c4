//! What the fleet's commands share: how a client trusts the server, where
//! the agent keeps its state, and a session with the server for the commands
//! that use it (`check --server`, `approve --server`, `approvals`,
//! `alerts --server`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use perimeter_api::client::{ApiClient, Auth, Trust};
use perimeter_api::{
    AckRequest, AlertList, ApprovalDoc, ApprovalList, ConditionDoc, Decision, NewApprovalDoc,
    NewScanJobDoc, SCHEMA, ScanJobDoc, ScanJobList, ShardRunList,
};
use perimeter_checks::approvals::{Approvals, Bind, NewApproval, OwnerKey, parse_approvals};
use perimeter_store::fleet::{FleetStore, PostgresFleet, SqliteFleet};

use crate::args::{GateServerArgs, ServerTrustArgs};

/// The largest token file read.
const MAX_TOKEN_BYTES: u64 = 4096;

pub(crate) fn trust(args: &ServerTrustArgs) -> Result<Trust> {
    match (&args.fingerprint, &args.ca) {
        (Some(fingerprint), _) => Trust::parse_fingerprint(fingerprint).with_context(|| {
            format!(
                "--fingerprint `{fingerprint}` is not a SHA-256 fingerprint (sha256: and 64 hex digits)"
            )
        }),
        (None, Some(ca)) => Ok(Trust::CaFile(ca.clone())),
        (None, None) => Ok(Trust::System),
    }
}

/// The agent's state directory: the one named, else the agent unit's
/// /var/lib/perimeter-agent as root, else under $XDG_DATA_HOME or
/// ~/.local/share.
pub(crate) fn agent_dir(named: Option<PathBuf>) -> Result<PathBuf> {
    match named {
        Some(dir) => Ok(dir),
        None => crate::settings::data_path(
            "/var/lib/perimeter-agent",
            "perimeter/agent",
            "the agent's state",
            "--state-dir",
        ),
    }
}

/// The API token in a file (its first line, trimmed).
pub(crate) fn read_token(path: &Path) -> Result<String> {
    let text = perimeter_files::read_text(path, "a token file", MAX_TOKEN_BYTES)?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        bail!("{}: the token file is empty", path.display());
    }
    Ok(token)
}

/// Whether a command needs a person's token or may act as the host's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum As {
    /// Reading this host's approvals: the enrolled agent may sign.
    HostOrPerson,
    /// Approving, exporting, importing: only a person (or a script with a
    /// person's token) decides.
    Person,
}

/// A session with the server: the client, and this host's id on it when
/// known.
#[derive(Debug)]
pub(crate) struct Session {
    client: ApiClient,
    runtime: tokio::runtime::Runtime,
    pub(crate) host_id: Option<String>,
}

impl Session {
    pub(crate) fn open(args: &GateServerArgs, who: As) -> Result<Session> {
        let Some(server) = &args.server else {
            bail!("no --server");
        };
        let trust = trust(&args.trust)?;
        let identity = perimeter_agent::load_identity(&agent_dir(args.agent_dir.clone())?)?;
        let (auth, enrolled_id) = match (&args.token_file, identity) {
            (Some(path), identity) => (Auth::Token(read_token(path)?), identity.map(|(id, _)| id)),
            (None, Some((id, key))) if who == As::HostOrPerson => {
                (Auth::Agent(Arc::new(key)), Some(id))
            }
            (None, _) if who == As::Person => {
                bail!(
                    "this needs a person's API token: --token-file (see `perimeter server token add`)"
                )
            }
            (None, _) => bail!(
                "--server needs --token-file, or an enrolled agent on this host (its state directory: --agent-dir)"
            ),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Session {
            client: ApiClient::new(server, &trust, auth)?,
            runtime,
            host_id: args.host_id.clone().or(enrolled_id),
        })
    }

    /// The approvals the server holds for this host, parsed as a local file
    /// would be, and the URL they came from (for messages).
    pub(crate) fn host_approvals(&self) -> Result<(Approvals, PathBuf)> {
        let host_id = self.host_id.as_deref().context(
            "which host is this on the server? give --host-id (see `perimeter server agents`)",
        )?;
        let path = format!("{}/approvals.toml?host={host_id}", perimeter_api::PREFIX);
        let text = self.runtime.block_on(self.client.get_text(&path))?;
        let label = PathBuf::from(format!("{}{path}", self.client.base()));
        let approvals = parse_approvals(&text, &label)?;
        Ok((approvals, label))
    }

    /// One scope's approvals as an approvals file.
    pub(crate) fn export(&self, scope: &str) -> Result<String> {
        let path = format!(
            "{}/approvals.toml?scope={}",
            perimeter_api::PREFIX,
            query_escape(scope)
        );
        Ok(self.runtime.block_on(self.client.get_text(&path))?)
    }

    /// Every approval the server holds (revoked ones too when asked).
    pub(crate) fn approvals(&self, revoked: bool) -> Result<Vec<ApprovalDoc>> {
        let path = format!("{}/approvals?revoked={revoked}", perimeter_api::PREFIX);
        let list: ApprovalList = self.runtime.block_on(self.client.get_json(&path))?;
        Ok(list.approvals)
    }

    /// Adds an approval for `scope`; the server records the token's user as
    /// the approver, or with `keep_approver` (an import; administrators
    /// only) the entry's own approver and date.
    pub(crate) fn approve(
        &self,
        scope: &str,
        entry: &NewApproval,
        keep_approver: bool,
    ) -> Result<ApprovalDoc> {
        let mut doc = approval_doc(scope, entry);
        if keep_approver {
            doc.recorded_by = Some(entry.approved_by.clone());
            doc.recorded_at = Some(entry.approved_at.to_string());
        }
        let path = format!("{}/approvals", perimeter_api::PREFIX);
        Ok(self.runtime.block_on(self.client.post_json(&path, &doc))?)
    }

    pub(crate) fn revoke(&self, id: i64, reason: &str) -> Result<()> {
        let path = format!("{}/approvals/{id}/revoke", perimeter_api::PREFIX);
        let _: serde_json::Value = self.runtime.block_on(self.client.post_json(
            &path,
            &Decision {
                schema: SCHEMA.to_owned(),
                reason: reason.to_owned(),
            },
        ))?;
        Ok(())
    }

    /// The monitor's open conditions and latest alerts.
    pub(crate) fn alerts(&self, limit: usize) -> Result<AlertList> {
        let path = format!("{}/alerts?limit={limit}", perimeter_api::PREFIX);
        Ok(self.runtime.block_on(self.client.get_json(&path))?)
    }

    /// Acknowledges one of the monitor's open conditions.
    pub(crate) fn acknowledge(
        &self,
        id: i64,
        reason: &str,
        until: Option<time::OffsetDateTime>,
    ) -> Result<ConditionDoc> {
        let path = format!("{}/conditions/{id}/ack", perimeter_api::PREFIX);
        Ok(self.runtime.block_on(self.client.post_json(
            &path,
            &AckRequest {
                schema: SCHEMA.to_owned(),
                reason: reason.to_owned(),
                until,
            },
        ))?)
    }

    /// The server's URL.
    pub(crate) fn base(&self) -> &str {
        self.client.base()
    }

    /// Submits a scan job.
    pub(crate) fn submit_scan_job(&self, job: &NewScanJobDoc) -> Result<ScanJobDoc> {
        let path = format!("{}/scan-jobs", perimeter_api::PREFIX);
        Ok(self.runtime.block_on(self.client.post_json(&path, job))?)
    }

    /// The newest scan jobs.
    pub(crate) fn scan_jobs(&self, limit: usize) -> Result<Vec<ScanJobDoc>> {
        let path = format!("{}/scan-jobs?limit={limit}", perimeter_api::PREFIX);
        let list: ScanJobList = self.runtime.block_on(self.client.get_json(&path))?;
        Ok(list.jobs)
    }

    /// One scan job with its parts.
    pub(crate) fn scan_job(&self, id: i64) -> Result<ScanJobDoc> {
        let path = format!("{}/scan-jobs/{id}", perimeter_api::PREFIX);
        Ok(self.runtime.block_on(self.client.get_json(&path))?)
    }

    /// The run of one done part of a scan job (a job's runs together may
    /// be larger than one answer).
    pub(crate) fn scan_job_run(&self, id: i64, part: u32) -> Result<ShardRunList> {
        let path = format!("{}/scan-jobs/{id}/runs?part={part}", perimeter_api::PREFIX);
        Ok(self.runtime.block_on(self.client.get_json(&path))?)
    }

    /// The scope of this host: `host:ID`.
    pub(crate) fn host_scope(&self) -> Result<String> {
        self.host_id
            .as_deref()
            .map(|id| format!("host:{id}"))
            .context("which host is this on the server? give --host-id or --scope")
    }
}

/// The API's document for an approvals file entry.
pub(crate) fn approval_doc(scope: &str, entry: &NewApproval) -> NewApprovalDoc {
    let (address, bind_scope) = match entry.bind {
        Bind::Address(address) => (Some(address_text(address)), None),
        Bind::Scope(scope) => (None, Some(scope.as_str().to_owned())),
    };
    let (exe, package, user, unowned) = match &entry.owner {
        OwnerKey::Unowned => (None, None, None, true),
        OwnerKey::Process { exe, package, user } => {
            (exe.clone(), package.clone(), user.clone(), false)
        }
    };
    NewApprovalDoc {
        schema: SCHEMA.to_owned(),
        scope: scope.to_owned(),
        netns: (entry.netns != "host").then(|| entry.netns.clone()),
        protocol: entry.protocol.as_str().to_owned(),
        address,
        bind_scope,
        port: entry.port,
        exe,
        package,
        user,
        unowned,
        reason: entry.reason.clone(),
        expires: entry.expires.map(|date| date.to_string()),
        recorded_by: None,
        recorded_at: None,
    }
}

fn address_text(address: IpAddr) -> String {
    address.to_string()
}

/// A query value with the few characters a scope may hold escaped.
fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The database named, or the default file.
pub(crate) fn open_fleet_store(database: Option<&str>) -> Result<Box<dyn FleetStore>> {
    match database {
        Some(url) if is_postgres(url) => Ok(Box::new(PostgresFleet::connect(url)?)),
        Some(path) => Ok(Box::new(SqliteFleet::open(&PathBuf::from(path))?)),
        None => {
            let path = default_fleet_database()?;
            Ok(Box::new(SqliteFleet::open(&path)?))
        }
    }
}

/// The server's default database file: the server unit's as root, else
/// under $XDG_DATA_HOME or ~/.local/share.
pub(crate) fn default_fleet_database() -> Result<PathBuf> {
    crate::settings::data_path(
        "/var/lib/perimeter-server/server.db",
        "perimeter/server.db",
        "the server's database",
        "--database",
    )
}

/// Whether a `--database` names PostgreSQL rather than a SQLite file.
pub(crate) fn is_postgres(database: &str) -> bool {
    database.starts_with("postgres://")
        || database.starts_with("postgresql://")
        || database.contains("host=")
        || database.contains("dbname=")
}
