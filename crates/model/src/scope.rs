//! Bind scope: how far an address reaches.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How far a bound address reaches, from the narrowest to the widest.
///
/// `Private` covers RFC 1918, CGNAT (100.64.0.0/10) and IPv6 unique-local
/// (fc00::/7) addresses; `Public` is everything routable that is none of the
/// others (including documentation and benchmarking ranges, which a host only
/// carries when someone put them there); `Wildcard` is 0.0.0.0 or `::`, which
/// exposes every address of the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Loopback,
    LinkLocal,
    Private,
    Public,
    Wildcard,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Loopback,
        Scope::LinkLocal,
        Scope::Private,
        Scope::Public,
        Scope::Wildcard,
    ];

    /// The scope of a bound address. An IPv4-mapped IPv6 address takes the scope of
    /// the IPv4 address it carries.
    pub fn of(address: IpAddr) -> Scope {
        match address {
            IpAddr::V4(v4) => scope_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => scope_v4(v4),
                None => scope_v6(v6),
            },
        }
    }

    /// Whether a listener with this scope can be reached from beyond the host.
    pub fn is_exposed(self) -> bool {
        self != Scope::Loopback
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Loopback => "loopback",
            Scope::LinkLocal => "link-local",
            Scope::Private => "private",
            Scope::Public => "public",
            Scope::Wildcard => "wildcard",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

fn scope_v4(v4: Ipv4Addr) -> Scope {
    let [a, b, ..] = v4.octets();
    if v4.is_unspecified() {
        Scope::Wildcard
    } else if v4.is_loopback() {
        Scope::Loopback
    } else if v4.is_link_local() {
        Scope::LinkLocal
    } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
        Scope::Private
    } else {
        Scope::Public
    }
}

fn scope_v6(v6: Ipv6Addr) -> Scope {
    let first = v6.segments()[0];
    if v6.is_unspecified() {
        Scope::Wildcard
    } else if v6.is_loopback() {
        Scope::Loopback
    } else if first & 0xffc0 == 0xfe80 {
        Scope::LinkLocal
    } else if first & 0xfe00 == 0xfc00 {
        Scope::Private
    } else {
        Scope::Public
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        Scope::of(text.parse().expect("test address parses"))
    }

    #[test]
    fn classifies_addresses() {
        assert_eq!(scope("0.0.0.0"), Scope::Wildcard);
        assert_eq!(scope("::"), Scope::Wildcard);
        assert_eq!(scope("127.0.0.1"), Scope::Loopback);
        assert_eq!(scope("127.3.4.5"), Scope::Loopback);
        assert_eq!(scope("::1"), Scope::Loopback);
        assert_eq!(scope("::ffff:127.0.0.1"), Scope::Loopback);
        assert_eq!(scope("169.254.1.1"), Scope::LinkLocal);
        assert_eq!(scope("fe80::1"), Scope::LinkLocal);
        assert_eq!(scope("10.1.2.3"), Scope::Private);
        assert_eq!(scope("172.16.0.1"), Scope::Private);
        assert_eq!(scope("172.32.0.1"), Scope::Public);
        assert_eq!(scope("192.168.1.1"), Scope::Private);
        assert_eq!(scope("100.64.0.1"), Scope::Private);
        assert_eq!(scope("100.128.0.1"), Scope::Public);
        assert_eq!(scope("fd00::1"), Scope::Private);
        assert_eq!(scope("198.18.0.1"), Scope::Public);
        assert_eq!(scope("2001:db8::1"), Scope::Public);
        assert_eq!(scope("::ffff:10.0.0.1"), Scope::Private);
    }

    #[test]
    fn only_loopback_is_unexposed() {
        let exposed: Vec<_> = Scope::ALL.into_iter().filter(|s| !s.is_exposed()).collect();
        assert_eq!(exposed, vec![Scope::Loopback]);
    }
}
