//! The firewall as a model: nftables (`nft -j list ruleset`) and iptables
//! (`iptables-save`, legacy or nft backend) rulesets read into one small
//! intermediate representation of chains and rules ([`Ruleset`]), whether
//! that ruleset denies new inbound connections by default ([`default_deny`]),
//! and which source addresses it lets through to a listener
//! ([`reachability::reachability`]), worked out symbolically without sending
//! a packet.
//!
//! Architecture invariant: this crate is pure. It takes the tools' text and
//! returns answers; running `nft` or `iptables-save` inside a namespace is
//! `perimeter-host`'s job (`host::firewall::read_ruleset`). A test it cannot
//! decide makes the answer *unknown*, never a guess.
//!
//! Sources, and why each is read (by `host`):
//! - `nft -j list ruleset` sees every nf_tables table, including those made by
//!   iptables-nft; but a match or target it cannot translate shows only as an
//!   xt expression, so a table holding one is read from `iptables-nft-save`
//!   instead ([`xt`]), as is everything when `nft` is missing (each table is
//!   read once: reading both would count the same chains twice);
//! - `iptables-legacy-save` and `ip6tables-legacy-save` see the legacy x_tables
//!   hooks, which nft does not show. A packet passes through both, so either
//!   can deny it.

mod deny;
mod display;
mod iptables;
mod ir;
mod nat;
mod nft;
pub mod reachability;
mod xt;

pub use deny::{default_deny, verdict_from_iptables_save, verdict_from_nft_json, verdict_of};
pub use iptables::parse_iptables_save;
pub use ir::*;
pub use nat::{ForwardedPort, forwarded_ports};
pub use nft::parse_nft_json;
pub use xt::{iptables_nft_tables, read_through_iptables};

#[cfg(test)]
mod tests;
