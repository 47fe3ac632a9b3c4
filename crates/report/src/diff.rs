//! Change reports: `perimeter.diff/1` for scans, and the human list. The store
//! computes the changes; the CLI maps them into these views, so this crate
//! depends on the domain model only.

use std::fmt::Write as _;

use perimeter_model::{ScanInfo, Severity};
use serde::Serialize;

use crate::json::severity_str;
use crate::style::Style;
use crate::time_fmt::rfc3339;

/// The schema string of the scan diff document.
pub const SCHEMA: &str = "perimeter.diff/1";

/// One side of a port change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSide {
    pub state: String,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub auth: String,
    pub tls_subject: Option<String>,
    pub findings: Vec<String>,
}

/// One change on one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortChange {
    pub kind: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    #[serde(serialize_with = "severity_str")]
    pub severity: Severity,
    pub rule: Option<String>,
    pub message: String,
    pub before: Option<PortSide>,
    pub after: Option<PortSide>,
}

/// Which scans were compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compared {
    pub id: i64,
    pub started: String,
    pub targets: Vec<String>,
    pub complete: bool,
}

impl Compared {
    /// A stored scan, as a side of the comparison.
    pub fn of(info: &ScanInfo) -> Compared {
        Compared {
            id: info.id,
            started: rfc3339(info.started),
            targets: info.targets.clone(),
            complete: info.complete,
        }
    }
}

pub fn to_json(before: &Compared, after: &Compared, changes: &[PortChange]) -> serde_json::Value {
    serde_json::json!({
        "schema": SCHEMA,
        "before": before,
        "after": after,
        "changes": changes,
    })
}

pub fn to_human(
    before: &Compared,
    after: &Compared,
    changes: &[PortChange],
    style: Style,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} scan #{} ({}) -> scan #{} ({}): {}",
        style.bold("perimeter diff"),
        before.id,
        before.started,
        after.id,
        after.started,
        if changes.is_empty() {
            "no changes".to_owned()
        } else {
            crate::count(changes.len(), "change")
        }
    );
    let mut sorted: Vec<&PortChange> = changes.iter().collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.severity));
    for change in sorted {
        let severity = format!("{:<8}", change.severity.as_str().to_ascii_uppercase());
        let _ = writeln!(
            out,
            "{} {:<18} {}",
            style.paint(&severity, Style::severity_color(change.severity)),
            change.kind,
            change.message
        );
    }
    out
}
