//! One module per command. Each takes its raw flags, validates them into
//! settings, builds what it needs and returns the exit code.

pub(crate) mod approve;
pub(crate) mod audit;
pub(crate) mod audits;
pub(crate) mod check;
pub(crate) mod diff;
pub(crate) mod envs;
mod host;
pub(crate) mod inventory;
pub(crate) mod rules;
pub(crate) mod scan;
pub(crate) mod scans;
mod store;
pub(crate) mod verify;
pub(crate) mod watch;
