//! Tables that iptables-nft manages, read through iptables' own view.
//!
//! iptables-nft writes its rules into nf_tables, so `nft -j list ruleset`
//! lists them, but every match or target nft cannot translate back (conntrack,
//! addrtype, limit, LOG, REJECT: most of ufw's ruleset) shows there only as
//! `{"xt": {"type": "match", "name": "conntrack"}}`, a test the walk cannot
//! decide. `iptables-nft-save` reads the same table and prints those matches
//! in full, so a table with xt expressions in nft's view is read from the
//! save command's output instead. A table nft shows without xt expressions
//! stays nft's: its view is exact, and reading both would count its chains
//! twice.

use crate::ir::*;
use crate::nft::{XT_MATCH, XT_TARGET};

/// The nft tables (family and name) whose rules hold an xt match or target:
/// the ones iptables-nft manages and nft cannot show in full. Only `ip` and
/// `ip6` tables are listed, the families iptables-nft writes.
pub fn iptables_nft_tables(ruleset: &Ruleset) -> Vec<(Family, String)> {
    let mut tables: Vec<(Family, String)> = Vec::new();
    for chain in &ruleset.chains {
        if chain.backend != Backend::Nftables
            || !matches!(chain.family, Family::Ip | Family::Ip6)
            || tables
                .iter()
                .any(|(family, table)| *family == chain.family && *table == chain.table)
        {
            continue;
        }
        let has_xt = chain.rules.iter().any(|rule| {
            rule.conditions
                .iter()
                .any(|c| matches!(c, Condition::Opaque(text) if text.starts_with(XT_MATCH)))
                || matches!(&rule.verdict, Some(Verdict::Other(action)) if action.starts_with(XT_TARGET))
        });
        if has_xt {
            tables.push((chain.family, chain.table.clone()));
        }
    }
    tables
}

/// Replaces in `ruleset` (nft's view) every table of `tables` that `saved`
/// (parsed `iptables-nft-save` / `ip6tables-nft-save` output) also lists with
/// the saved chains of that table. Returns the tables replaced; a table the
/// save command did not list (it prints "Table `filter' is incompatible" for
/// one it cannot read) keeps nft's view, whose xt tests stay unknown. The
/// saved tables nft shows in full are left out, as nft already has them.
pub fn read_through_iptables(
    ruleset: &mut Ruleset,
    tables: &[(Family, String)],
    saved: Ruleset,
) -> Vec<(Family, String)> {
    let replaced: Vec<(Family, String)> = tables
        .iter()
        .filter(|(family, table)| {
            saved
                .chains
                .iter()
                .any(|c| c.family == *family && c.table == *table)
        })
        .cloned()
        .collect();
    let is_replaced = |chain: &Chain| {
        replaced
            .iter()
            .any(|(family, table)| chain.family == *family && chain.table == *table)
    };
    ruleset
        .chains
        .retain(|chain| chain.backend != Backend::Nftables || !is_replaced(chain));
    ruleset.chains.extend(
        saved
            .chains
            .into_iter()
            .filter(|chain| chain.backend == Backend::IptablesNft && is_replaced(chain)),
    );
    replaced
}
