//! `perimeter rules`: the catalogue of rule ids.

use anyhow::Result;

use crate::exit_codes::ExitCode;
use crate::terminal::Terminal;

pub(crate) fn run(_terminal: &Terminal) -> Result<ExitCode> {
    outln!("{:<28} {:<9} WHAT IT MEANS", "RULE", "SEVERITY");
    for rule in perimeter_checks::rules::AUDIT_RULES
        .iter()
        .chain(perimeter_checks::rules::PKG_RULES)
    {
        outln!(
            "{:<28} {:<9} {}",
            rule.id,
            rule.severity.as_str(),
            rule.summary
        );
    }
    for finding in perimeter_probe::rules::catalogue() {
        outln!(
            "{:<28} {:<9} {} (perimeter scan)",
            finding.rule,
            finding.severity.as_str(),
            finding.message
        );
    }
    outln!(
        "{:<28} {:<9} any other open port, with the service that answers (perimeter scan)",
        "exposed.service",
        "info"
    );
    Ok(ExitCode::Clean)
}
