//! Environments: named address ranges with the rules of who may reach them.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use time::Date;

/// What an environment is for; decides which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EnvKind {
    Prod,
    Staging,
    Dev,
    Experiment,
}

impl EnvKind {
    pub const ALL: [EnvKind; 4] = [
        EnvKind::Prod,
        EnvKind::Staging,
        EnvKind::Dev,
        EnvKind::Experiment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EnvKind::Prod => "prod",
            EnvKind::Staging => "staging",
            EnvKind::Dev => "dev",
            EnvKind::Experiment => "experiment",
        }
    }

    pub fn parse(text: &str) -> Option<EnvKind> {
        EnvKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Dev and experiment environments must be reachable only from known
    /// ranges.
    pub fn is_restricted(self) -> bool {
        matches!(self, EnvKind::Dev | EnvKind::Experiment)
    }
}

impl fmt::Display for EnvKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One environment of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub kind: EnvKind,
    pub ranges: Vec<IpNet>,
    /// Host names that belong to it (resolved when needed).
    pub hosts: Vec<String>,
    /// Ports anyone may reach.
    pub public_ports: Vec<u16>,
    /// Sources that may reach every port.
    pub allow_from: Vec<IpNet>,
    pub owner: Option<String>,
    /// After this date an experiment must be gone.
    pub expires: Option<Date>,
}

impl Environment {
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.ranges.iter().any(|net| net.contains(&address))
    }

    pub fn allows_source(&self, source: IpAddr) -> bool {
        let source = source.to_canonical();
        self.allow_from.iter().any(|net| net.contains(&source))
    }

    /// Days past `expires` on `today` (0 or negative: not expired).
    pub fn days_overdue(&self, today: Date) -> Option<i64> {
        self.expires.map(|expires| (today - expires).whole_days())
    }
}

/// Which sources can reach a listener through the namespace's firewall, as
/// the local evaluation of the ruleset found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reach {
    /// Source prefixes that are accepted.
    pub allowed: Vec<IpNet>,
    /// Source prefixes whose fate depends on a rule perimeter cannot evaluate,
    /// with the reason.
    pub unknown: Vec<(IpNet, String)>,
    /// Accept rules that let some source in without restricting the source
    /// address at all (their text).
    pub unrestricted_accepts: Vec<String>,
    /// Short lines saying which chain, policy or rule decided.
    pub evidence: Vec<String>,
    /// Connections to the listener's address and port that a DNAT in nat
    /// prerouting sends elsewhere (a Docker-published port): they never
    /// reach the listener or the input chain, and are judged by the forward
    /// path instead. Their sources are already counted in `allowed` and
    /// `unknown`.
    pub published: Vec<PublishedPath>,
}

/// A DNAT that takes connections to a listener's port elsewhere, and whom
/// the forward path lets through to where it sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPath {
    /// The chain holding the DNAT rule: `iptables-nft: ip nat DOCKER`.
    pub chain: String,
    /// The rule as listed.
    pub rule: String,
    /// Where it sends connections (`198.18.90.2:6379`), as written.
    pub to: String,
    /// The interface toward it (`docker0`), when known.
    pub oif: Option<String>,
    /// Sources the forward path lets through.
    pub allowed: Vec<IpNet>,
    /// Of those, the ones the input path alone denies: what a look at the
    /// input chain (`ufw status`) hides.
    pub input_denies: Vec<IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_expiry() {
        let env = Environment {
            name: "scratch".into(),
            kind: EnvKind::Experiment,
            ranges: vec!["192.0.2.64/26".parse().expect("net")],
            hosts: vec![],
            public_ports: vec![],
            allow_from: vec!["198.51.100.0/24".parse().expect("net")],
            owner: None,
            expires: Some(time::macros::date!(2026 - 12 - 01)),
        };
        assert!(env.contains("192.0.2.70".parse().expect("ip")));
        assert!(env.contains("::ffff:192.0.2.70".parse().expect("ip")));
        assert!(!env.contains("192.0.2.1".parse().expect("ip")));
        assert!(env.allows_source("198.51.100.9".parse().expect("ip")));
        assert_eq!(
            env.days_overdue(time::macros::date!(2026 - 12 - 04)),
            Some(3)
        );
        assert!(EnvKind::Dev.is_restricted() && !EnvKind::Prod.is_restricted());
    }
}
