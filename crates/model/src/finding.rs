//! Findings (what is wrong), their severities, and problems (what could not be seen).

use std::fmt;
use std::str::FromStr;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`, so a gate
/// threshold is a plain comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text given was not one of the five severity names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeverityParseError(pub String);

impl fmt::Display for SeverityParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown severity `{}` (expected info, low, medium, high or critical)",
            self.0
        )
    }
}

impl std::error::Error for SeverityParseError {}

impl FromStr for Severity {
    type Err = SeverityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|sev| sev.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| SeverityParseError(s.to_owned()))
    }
}

/// One thing wrong, as a rule saw it.
///
/// `rule` is a stable dotted id (`redis.no-auth`); `subject` names what it is about
/// in words a reader can find on the host (`tcp 0.0.0.0:6379 redis-server (pid 812)`);
/// `evidence` lists the observed facts that made the rule fire; `remedy` says what
/// to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub evidence: Vec<String>,
    pub remedy: String,
}

impl Finding {
    pub fn new(
        rule: impl Into<String>,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            rule: rule.into(),
            severity,
            subject: subject.into(),
            message: message.into(),
            evidence: Vec::new(),
            remedy: String::new(),
        }
    }

    pub fn with_evidence(mut self, evidence: impl Into<String>) -> Self {
        self.evidence.push(evidence.into());
        self
    }

    pub fn with_remedy(mut self, remedy: impl Into<String>) -> Self {
        self.remedy = remedy.into();
        self
    }
}

/// Something perimeter could not see or could not decide, kept as data so the run
/// goes on and the reader learns what the report does not cover.
///
/// `subject` is what was being looked at (`/proc/4242/fd`, `tcp [::]:22`), `message`
/// what went wrong, `hint` what would fix it (often the missing capability).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub subject: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(subject: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            subject: subject.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Info < Severity::Low);
        assert!(Severity::High < Severity::Critical);
        assert_eq!("HIGH".parse::<Severity>(), Ok(Severity::High));
        assert_eq!(
            "severe".parse::<Severity>().map_err(|e| e.to_string()),
            Err("unknown severity `severe` (expected info, low, medium, high or critical)".into())
        );
    }
}
