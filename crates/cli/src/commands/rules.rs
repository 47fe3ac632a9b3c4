//! `perimeter rules`: the catalogue of rule ids.

use anyhow::Result;

use crate::terminal::Terminal;

pub(crate) fn run(_terminal: &Terminal) -> Result<u8> {
    println!("{:<28} {:<9} WHAT IT MEANS", "RULE", "SEVERITY");
    for rule in perimeter_checks::rules::AUDIT_RULES
        .iter()
        .chain(perimeter_checks::rules::PKG_RULES)
    {
        println!(
            "{:<28} {:<9} {}",
            rule.id,
            rule.severity.as_str(),
            rule.summary
        );
    }
    for rule in perimeter_probe::rules::ALL {
        println!("{rule:<28} {:<9} found by `perimeter scan`", "");
    }
    Ok(crate::exit_codes::CLEAN)
}
