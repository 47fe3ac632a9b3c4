//! The runs two or more commands share, built from validated settings: the
//! audit of this host (`audit`, `check`, `approve`), a scan job (`scan`,
//! `verify`, the monitor's jobs), the changes between two scans (`scan`, `diff`), the inventory
//! of environments (the audit, `envs`, `verify`), the history database, the
//! fleet's client side (`agent`, `check --server`), and a scanner node's
//! work (`scanner`, and `server` on SQLite).
//!
//! Architecture invariant: commands import `args`, `settings` and
//! `pipeline`, never each other; what two commands need lives here.

pub(crate) mod environments;
pub(crate) mod fleet;
pub(crate) mod host;
pub(crate) mod monitor;
pub(crate) mod scan;
pub(crate) mod scan_diff;
pub(crate) mod scanner;
pub(crate) mod store;
pub(crate) mod verify;
