//! Exit codes, defined once. The README documents them; scripts and CI gates
//! depend on them, so they never change meaning.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | clean: ran, and nothing at or above the gate threshold |
//! | 1    | findings (or changes, or unapproved listeners) at or above the threshold |
//! | 2    | usage, configuration or runtime error: the answer is not known |
//! | 130  | interrupted (Ctrl-C) |
//!
//! Every command returns an [`ExitCode`] and `main` turns it into the
//! process's status, so no other number can reach the shell.

/// How a run ended, as the shell sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCode {
    /// 0: ran, and nothing at or above the gate threshold.
    Clean,
    /// 1: findings (or changes, or unapproved listeners) at or above the
    /// threshold.
    Findings,
    /// 2: usage, configuration or runtime error: the answer is not known.
    Error,
    /// 130: interrupted (Ctrl-C), after storing what was found.
    Interrupted,
}

impl ExitCode {
    /// The gate's answer: findings when it failed, else clean.
    pub(crate) fn findings_if(failed: bool) -> ExitCode {
        if failed {
            ExitCode::Findings
        } else {
            ExitCode::Clean
        }
    }

    /// The number the shell sees.
    pub(crate) fn code(self) -> u8 {
        match self {
            ExitCode::Clean => 0,
            ExitCode::Findings => 1,
            ExitCode::Error => 2,
            // 128 + SIGINT, as shells report a process Ctrl-C ended.
            ExitCode::Interrupted => 130,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_numbers() {
        assert_eq!(ExitCode::Clean.code(), 0);
        assert_eq!(ExitCode::Findings.code(), 1);
        assert_eq!(ExitCode::Error.code(), 2);
        assert_eq!(ExitCode::Interrupted.code(), 130);
        assert_eq!(ExitCode::findings_if(true), ExitCode::Findings);
        assert_eq!(ExitCode::findings_if(false), ExitCode::Clean);
    }
}
