//! Versioned output: the JSON documents (`perimeter.audit/1`, `perimeter.scan/1`,
//! `perimeter.diff/1`, `perimeter.inventory/1`, `perimeter.manifest/1`, the
//! history's `perimeter.scans/1`, `perimeter.audits/1` and
//! `perimeter.audit-diff/1`, `perimeter.envs/1`, `perimeter.alert/1`), the JSON
//! Lines of scans and of `perimeter.watch-event/1`, nmap-compatible XML, the
//! human tables and lines, and the monitor's alerts as Slack, email and syslog
//! carry them. The CLI prints what this crate renders and writes no document
//! of its own.
//!
//! Architecture invariant: every machine-readable document carries a `schema`
//! string naming its format and version; a field's meaning never changes within
//! a version (fields may be added). The serde structs here are the wire format;
//! the domain types in `perimeter-model` know nothing of them.

pub mod alert;
pub mod audit;
pub mod diff;
pub mod envs;
pub mod history;
pub mod inventory;
mod json;
pub mod monitor;
pub mod scan;
mod style;
mod time_fmt;
pub mod watch;

pub use style::Style;

/// `1 listener`, `3 listeners`: counts in human output read as English.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
pub use time_fmt::{rfc3339, time_of_day};
