//! Which connections a `Match` block applies to: the [`Connection`] a
//! configuration is evaluated for, each criterion tested against it, and
//! OpenSSH's pattern matching underneath (match.c's wildcard lists,
//! addrmatch.c's address and CIDR lists), with its return codes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::config::{Criterion, CriterionKind, MatchLine};

/// The connection a configuration is evaluated for, as `sshd -T -C` takes it.
/// A field left `None` makes every criterion on it fail, as in `sshd -T`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    pub user: Option<String>,
    /// The user's groups, for `Match Group`; `None` when unknown.
    pub groups: Option<Vec<String>>,
    /// The client's host name; with `UseDNS no` (the default), its address.
    pub host: Option<String>,
    pub addr: Option<IpAddr>,
    pub laddr: Option<IpAddr>,
    pub lport: Option<u16>,
    pub rdomain: Option<String>,
}

impl Connection {
    /// `user=root,host=...,addr=...`, the `-C` argument of `sshd -T`.
    pub fn criteria(&self) -> String {
        let mut parts = Vec::new();
        if let Some(user) = &self.user {
            parts.push(format!("user={user}"));
        }
        if let Some(host) = &self.host {
            parts.push(format!("host={host}"));
        }
        if let Some(addr) = self.addr {
            parts.push(format!("addr={addr}"));
        }
        if let Some(laddr) = self.laddr {
            parts.push(format!("laddr={laddr}"));
        }
        if let Some(lport) = self.lport {
            parts.push(format!("lport={lport}"));
        }
        if let Some(rdomain) = &self.rdomain {
            parts.push(format!("rdomain={rdomain}"));
        }
        parts.join(",")
    }
}

impl MatchLine {
    /// Whether the block applies. With no connection (sshd's start-up pass),
    /// only `Match All` does.
    pub fn matches(&self, conn: Option<&Connection>) -> bool {
        let Some(conn) = conn else {
            return self.is_all();
        };
        self.criteria
            .iter()
            .all(|criterion| criterion.matches(conn))
    }
}

impl Criterion {
    pub fn matches(&self, conn: &Connection) -> bool {
        let list = self.patterns.as_str();
        match self.kind {
            CriterionKind::User => conn
                .user
                .as_deref()
                .is_some_and(|u| match_pattern_list(u, list, false) == 1),
            CriterionKind::Group => conn.groups.as_ref().is_some_and(|groups| {
                // ga_match_pattern_list: a negated match on any group wins.
                let results: Vec<i32> = groups
                    .iter()
                    .map(|g| match_pattern_list(g, list, false))
                    .collect();
                !results.contains(&-1) && results.contains(&1)
            }),
            CriterionKind::Host => conn
                .host
                .as_deref()
                .is_some_and(|h| match_pattern_list(&h.to_ascii_lowercase(), list, true) == 1),
            CriterionKind::Address => conn
                .addr
                .is_some_and(|a| addr_match_list(Some(a), list) == 1),
            CriterionKind::LocalAddress => conn
                .laddr
                .is_some_and(|a| addr_match_list(Some(a), list) == 1),
            CriterionKind::LocalPort => conn.lport.is_some_and(|p| list.parse::<u16>() == Ok(p)),
            CriterionKind::RDomain => conn
                .rdomain
                .as_deref()
                .is_some_and(|r| match_pattern_list(r, list, false) == 1),
        }
    }
}

/// `match_pattern`: `*` and `?` wildcards, case-sensitive. Iterative, with the
/// usual single backtrack point, so no pattern can make it recurse or take
/// exponential time.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((star_pi, star_si)) => {
                    pi = star_pi + 1;
                    si = star_si + 1;
                    star = Some((star_pi, star_si + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// `match_pattern_list`: 1 when some pattern of the comma list matches and no
/// negated (`!`) one does, -1 when a negated one matches, 0 otherwise. With
/// `lower`, the patterns are lowercased first (host names).
pub fn match_pattern_list(s: &str, list: &str, lower: bool) -> i32 {
    let mut got_positive = false;
    for sub in list.split(',') {
        let (negated, sub) = match sub.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, sub),
        };
        let sub = if lower {
            sub.to_ascii_lowercase()
        } else {
            sub.to_owned()
        };
        if match_pattern(s, &sub) {
            if negated {
                return -1;
            }
            got_positive = true;
        }
    }
    i32::from(got_positive)
}

/// `addr_pton_cidr`: `Ok(Some((network, len)))` for an address or CIDR block,
/// `Ok(None)` for something that is not one (so a wildcard pattern), `Err` for
/// a CIDR block sshd rejects (prefix too long for the family, host bits set).
///
/// sshd parses addresses with getaddrinfo, which also takes inet_aton's short
/// forms (`10.1`); those are wildcard patterns here, as in every real config.
pub(super) fn addr_pton_cidr(text: &str) -> Result<Option<(IpAddr, u8)>, ()> {
    let (addr_text, len) = match text.split_once('/') {
        Some((addr, len)) => {
            if !len.starts_with(|c: char| c.is_ascii_digit())
                || !len.bytes().all(|b| b.is_ascii_digit())
            {
                return Ok(None);
            }
            match len.parse::<u32>() {
                Ok(len) if len <= 128 => (addr, Some(len)),
                _ => return Ok(None),
            }
        }
        None => (text, None),
    };
    let Ok(addr) = addr_text.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return Err(());
    }
    let len = u8::try_from(len).map_err(|_| ())?;
    if network_of(addr, len) != addr {
        return Err(());
    }
    Ok(Some((addr, len)))
}

fn network_of(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

pub(super) fn in_network(addr: IpAddr, network: IpAddr, len: u8) -> bool {
    addr.is_ipv4() == network.is_ipv4() && network_of(addr, len) == network
}

/// `addr_match_list`: 1 when the address matches an entry (CIDR or wildcard
/// pattern on its text) and no negated entry, -1 when a negated entry matches,
/// 0 when none does, -2 when the list is malformed. With no address, only
/// checks the list (0 or -2).
pub fn addr_match_list(addr: Option<IpAddr>, list: &str) -> i32 {
    let text = addr.map(|a| a.to_string());
    let mut result = 0;
    for entry in list.split(',') {
        let (negated, entry) = match entry.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if entry.is_empty() {
            return -2;
        }
        let found = match addr_pton_cidr(entry) {
            Err(()) => return -2,
            Ok(Some((network, len))) => addr.is_some_and(|a| in_network(a, network, len)),
            Ok(None) => text.as_deref().is_some_and(|t| match_pattern(t, entry)),
        };
        if found {
            if negated {
                return -1;
            }
            result = 1;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(match_pattern("10.1.2.3", "10.*"));
        assert!(match_pattern("abc", "a?c"));
        assert!(!match_pattern("abc", "a?"));
        assert!(match_pattern("", "*"));
        assert!(match_pattern("a.example.com", "*.example.com"));
        assert!(!match_pattern("example.com", "*.example.com"));
        // A pathological pattern stays linear-ish.
        let long = "a".repeat(2000);
        assert!(!match_pattern(&long, &format!("{}b", "*a".repeat(50))));
        assert_eq!(match_pattern_list("root", "alice,!root,*", false), -1);
        assert_eq!(match_pattern_list("bob", "alice,!root,*", false), 1);
        assert_eq!(match_pattern_list("bob", "alice", false), 0);
        assert_eq!(match_pattern_list("web1", "WEB*", true), 1);
    }

    #[test]
    fn address_lists() {
        let a = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(addr_match_list(a("10.1.2.3"), "10.0.0.0/8"), 1);
        assert_eq!(
            addr_match_list(a("10.1.2.3"), "10.0.0.0/8,!10.1.0.0/16"),
            -1
        );
        assert_eq!(addr_match_list(a("10.2.2.3"), "10.0.0.0/8,!10.1.0.0/16"), 1);
        assert_eq!(addr_match_list(a("192.168.7.1"), "192.168.*"), 1);
        assert_eq!(addr_match_list(a("2001:db8::5"), "2001:db8::/32"), 1);
        assert_eq!(addr_match_list(a("10.0.0.1"), "2001:db8::/32"), 0);
        assert_eq!(addr_match_list(None, "10.0.0.1/8"), -2);
        assert_eq!(addr_match_list(None, "10.0.0.0/33"), -2);
        assert_eq!(addr_match_list(None, "10.0.0.0/8,"), -2);
        assert_eq!(addr_match_list(None, "10.0.0.0/8"), 0);
    }
}
