//! The history database as output: the stored scans (`perimeter.scans/1`),
//! the stored audits (`perimeter.audits/1`) and what changed between the
//! last two audits of a host (`perimeter.audit-diff/1`), each as JSON and as
//! human lines. The store lists and compares; the CLI lends the rows through
//! the views here, so this crate depends on the domain model only.

use std::fmt::Write as _;
use std::path::Path;

use perimeter_model::{ScanInfo, Severity};
use time::OffsetDateTime;

use crate::audit::ChangeLine;
use crate::time_fmt::rfc3339;

/// The schema string of the list of stored scans.
pub const SCANS_SCHEMA: &str = "perimeter.scans/1";
/// The schema string of the list of stored audits.
pub const AUDITS_SCHEMA: &str = "perimeter.audits/1";
/// The schema string of the comparison of two audits.
pub const AUDIT_DIFF_SCHEMA: &str = "perimeter.audit-diff/1";

/// A stored scan in a listing.
#[derive(Debug, Clone, Copy)]
pub struct StoredScan<'a> {
    pub info: &'a ScanInfo,
    /// Where the scan stands, as the store derived it: `running`,
    /// `complete`, `incomplete` (stopped early, and said so) or `interrupted`
    /// (its process died without saying).
    pub status: &'a str,
    /// Results recorded, in any state.
    pub n_results: u64,
    /// Results recorded in state open.
    pub n_open: u64,
}

/// The `perimeter.scans/1` document, newest first as given.
pub fn scans_to_json(scans: &[StoredScan<'_>]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = scans
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.info.id,
                "targets": s.info.targets,
                "ports": s.info.ports,
                "profile": s.info.profile,
                "seed": s.info.seed.to_string(),
                "started": rfc3339(s.info.started),
                "finished": s.info.finished.map(rfc3339),
                "complete": s.info.complete,
                "status": s.status,
                "n_results": s.n_results,
                "n_open": s.n_open,
            })
        })
        .collect();
    serde_json::json!({
        "schema": SCANS_SCHEMA,
        "scans": rows,
    })
}

/// The stored scans as a table, or where none are stored (`db`).
pub fn scans_to_human(scans: &[StoredScan<'_>], db: &Path) -> String {
    let mut out = String::new();
    if scans.is_empty() {
        let _ = writeln!(out, "no scans stored in {}", db.display());
        return out;
    }
    let _ = writeln!(
        out,
        "{:>5}  {:<20}  {:<8}  {:>5}  {:<10}  TARGETS (PORTS)",
        "ID", "STARTED", "PROFILE", "OPEN", "STATUS"
    );
    for s in scans {
        let status = s.status;
        let _ = writeln!(
            out,
            "{:>5}  {:<20}  {:<8}  {:>5}  {:<10}  {} ({})",
            s.info.id,
            rfc3339(s.info.started),
            s.info.profile,
            s.n_open,
            status,
            s.info.targets.join(" "),
            s.info.ports
        );
    }
    out
}

/// A stored audit in a listing.
#[derive(Debug, Clone, Copy)]
pub struct StoredAudit<'a> {
    pub id: i64,
    pub host: &'a str,
    pub taken_at: OffsetDateTime,
    pub n_listeners: u64,
    pub n_findings: u64,
    pub worst_severity: Option<Severity>,
}

/// The `perimeter.audits/1` document, newest first as given.
pub fn audits_to_json(audits: &[StoredAudit<'_>]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = audits
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a.id,
                "host": a.host,
                "taken_at": rfc3339(a.taken_at),
                "listeners": a.n_listeners,
                "findings": a.n_findings,
                "worst": a.worst_severity.map(|s| s.as_str()),
            })
        })
        .collect();
    serde_json::json!({"schema": AUDITS_SCHEMA, "audits": rows})
}

/// The stored audits, one line each, or where none are stored (`db`).
pub fn audits_to_human(audits: &[StoredAudit<'_>], db: &Path) -> String {
    let mut out = String::new();
    if audits.is_empty() {
        let _ = writeln!(out, "no audits stored in {}", db.display());
    }
    for a in audits {
        let _ = writeln!(
            out,
            "{:>5}  {}  {:<20}  {:>3} listeners  {:>3} findings  worst {}",
            a.id,
            rfc3339(a.taken_at),
            a.host,
            a.n_listeners,
            a.n_findings,
            a.worst_severity.map(|s| s.as_str()).unwrap_or("-")
        );
    }
    out
}

/// One of the two audits compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRef {
    pub id: i64,
    pub taken_at: OffsetDateTime,
}

/// The `perimeter.audit-diff/1` document: what changed on `host` from one
/// audit to the next.
pub fn audit_diff_to_json(
    host: &str,
    before: AuditRef,
    after: AuditRef,
    changes: &[ChangeLine],
) -> serde_json::Value {
    serde_json::json!({
        "schema": AUDIT_DIFF_SCHEMA,
        "host": host,
        "before": {"id": before.id, "taken_at": rfc3339(before.taken_at)},
        "after": {"id": after.id, "taken_at": rfc3339(after.taken_at)},
        "changes": changes,
    })
}

/// What changed from one audit to the next, one line per change.
pub fn audit_diff_to_human(before: AuditRef, after: AuditRef, changes: &[ChangeLine]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "audit #{} ({}) -> audit #{} ({}): {} changes",
        before.id,
        rfc3339(before.taken_at),
        after.id,
        rfc3339(after.taken_at),
        changes.len()
    );
    for c in changes {
        let _ = writeln!(
            out,
            "{:<8} {:<21} {}",
            c.severity.as_str().to_ascii_uppercase(),
            c.kind,
            c.message
        );
    }
    out
}
