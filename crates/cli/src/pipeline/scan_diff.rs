//! What changed between two scans of the same targets, as the report shows
//! it: `diff` compares two stored scans, `scan` its own run with the previous
//! complete one.

use anyhow::Result;
use perimeter_model::{PortResult, ScanInfo};
use perimeter_report::diff::{PortChange, PortSide};
use perimeter_store::{
    Change, PortSummary, ScanSummary, SqliteStore, Store, TargetKey, diff_scan_runs,
};

/// The newest complete scan of the same targets and ports as `info`, other
/// than `info` itself.
pub(crate) fn previous_complete_scan(
    db: &SqliteStore,
    info: &ScanInfo,
) -> Result<Option<ScanSummary>> {
    Ok(db
        .previous_scans_of(&TargetKey::of(info), 3)?
        .into_iter()
        .find(|s| s.info.id != info.id))
}

/// The changes from one scan run to another.
pub(crate) fn port_changes(
    before_info: &ScanInfo,
    before: &[PortResult],
    after_info: &ScanInfo,
    after: &[PortResult],
) -> Vec<PortChange> {
    diff_scan_runs(before_info, before, after_info, after)
        .into_iter()
        .map(port_change)
        .collect()
}

fn side(summary: PortSummary) -> PortSide {
    PortSide {
        state: summary.state.as_str().to_owned(),
        service: summary.service,
        product: summary.product,
        version: summary.version,
        auth: summary.auth.as_str().to_owned(),
        tls_subject: summary.tls_subject,
        findings: summary.findings.into_iter().map(|(rule, _)| rule).collect(),
    }
}

fn port_change(change: Change) -> PortChange {
    PortChange {
        kind: change.kind.as_str().to_owned(),
        address: change.address.to_string(),
        port: change.port,
        protocol: change.protocol.as_str().to_owned(),
        severity: change.severity,
        rule: change.rule,
        message: change.message,
        before: change.before.map(side),
        after: change.after.map(side),
    }
}
