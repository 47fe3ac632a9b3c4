//! Exit codes, defined once. The README documents them; scripts and CI gates
//! depend on them, so they never change meaning.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | clean: ran, and nothing at or above the gate threshold |
//! | 1    | findings (or changes, or unapproved listeners) at or above the threshold |
//! | 2    | usage, configuration or runtime error: the answer is not known |
//! | 130  | interrupted (Ctrl-C) |

use std::process::ExitCode;

pub(crate) const CLEAN: u8 = 0;
pub(crate) const FINDINGS: u8 = 1;
pub(crate) const ERROR: u8 = 2;
pub(crate) const INTERRUPTED: u8 = 130;

pub(crate) fn code(value: u8) -> ExitCode {
    ExitCode::from(value)
}
