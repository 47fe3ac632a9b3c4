//! `perimeter monitor`: the service that runs scheduled scans, audits and
//! verifies, compares each run with the previous complete run of the same
//! job, and advises of every unexpected change, once, through alert channels.

pub mod changes;
pub mod config;
pub mod metrics;
pub mod observe;
pub mod runner;
pub mod schedule;
pub mod service;
