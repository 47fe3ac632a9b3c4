//! The addresses on each interface of the calling thread's network namespace,
//! and the interface names behind the indexes sockets are bound to.
//!
//! Both ask the kernel over rtnetlink (glibc's `getifaddrs` and
//! `if_nameindex`), whose socket belongs to the namespace of the thread that
//! opens it; run them inside `netns::run_in_netns` to ask about another
//! namespace.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::if_nameindex;
use nix::sys::socket::SockaddrStorage;
use perimeter_model::Interface;

/// The kernel would not list interfaces or their addresses.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    #[error("cannot list interface addresses: {0}")]
    Addresses(#[source] nix::Error),
    #[error("cannot list interface names: {0}")]
    Names(#[source] nix::Error),
}

/// Every IPv4 and IPv6 address of every interface in the calling thread's
/// namespace, sorted by interface name then address.
pub fn read_interfaces() -> Result<Vec<Interface>, InterfaceError> {
    let mut interfaces: Vec<Interface> = getifaddrs()
        .map_err(InterfaceError::Addresses)?
        .filter_map(|entry| {
            let address = ip_of(entry.address.as_ref()?)?;
            let prefix_len = entry
                .netmask
                .as_ref()
                .and_then(ip_of)
                .map_or(full_prefix(address), prefix_len);
            Some(Interface {
                name: entry.interface_name,
                address,
                prefix_len,
            })
        })
        .collect();
    interfaces.sort_by(|a, b| (&a.name, a.address).cmp(&(&b.name, b.address)));
    interfaces.dedup();
    Ok(interfaces)
}

/// Interface index → name, for sockets bound to a device (`SO_BINDTODEVICE`).
pub fn interface_names() -> Result<BTreeMap<u32, String>, InterfaceError> {
    let interfaces = if_nameindex().map_err(InterfaceError::Names)?;
    Ok(interfaces
        .iter()
        .map(|interface| {
            (
                interface.index(),
                interface.name().to_string_lossy().into_owned(),
            )
        })
        .collect())
}

fn ip_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// The prefix length of a netmask: its count of leading one bits.
pub fn prefix_len(netmask: IpAddr) -> u8 {
    let ones = match netmask {
        IpAddr::V4(v4) => u32::from(v4).leading_ones(),
        IpAddr::V6(v6) => u128::from(v6).leading_ones(),
    };
    // At most 128, so it fits.
    u8::try_from(ones).unwrap_or(u8::MAX)
}

fn full_prefix(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn netmask_prefix_lengths() {
        assert_eq!(prefix_len(ip("255.0.0.0")), 8);
        assert_eq!(prefix_len(ip("255.255.255.0")), 24);
        assert_eq!(prefix_len(ip("255.255.254.0")), 23);
        assert_eq!(prefix_len(ip("0.0.0.0")), 0);
        assert_eq!(prefix_len(ip("255.255.255.255")), 32);
        assert_eq!(prefix_len(ip("ffff:ffff:ffff:ffff::")), 64);
        assert_eq!(
            prefix_len(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            128
        );
    }

    #[test]
    fn loopback_is_listed_with_its_index() {
        let interfaces = read_interfaces().expect("getifaddrs works");
        let lo: Vec<_> = interfaces.iter().filter(|i| i.name == "lo").collect();
        assert!(
            lo.iter()
                .any(|i| i.address == ip("127.0.0.1") && i.prefix_len == 8),
            "{interfaces:?}"
        );
        let names = interface_names().expect("if_nameindex works");
        assert_eq!(names.get(&1).map(String::as_str), Some("lo"));
    }
}
