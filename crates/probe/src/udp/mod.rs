//! UDP probes, sans I/O: the datagrams to send to a port, and what the
//! datagrams that come back prove. One module per protocol (DNS, mDNS, NTP,
//! SNMP, memcached, SSDP, NetBIOS-NS), each with a request builder written from
//! its RFC or specification and a parser that treats every byte as hostile;
//! [`UDP_TOP_PORTS`], the ranked port list; and the plan an engine follows.
//!
//! What an engine does for one (address, port):
//!
//! 1. [`udp_payloads_for_address`] (or [`udp_payloads_for`]) gives the
//!    datagrams to send, the usual question for the port first, an empty
//!    datagram for a port with none. An engine that picks its own IDs calls
//!    [`udp_requests_for`] and [`UdpRequest::payload`] instead.
//! 2. It sends the first payload (a retry resends the same bytes) and feeds
//!    every datagram that comes back from the target, one at a time, to
//!    [`identify_udp`] with the payload that drew it. Any datagram proves the
//!    port open; [`identify_udp`] names the service when it can, and returns the
//!    findings the answer proves.
//! 3. It sends the remaining payloads, each after the previous one's answer or
//!    timeout, skipping those with [`UdpPayload::only_if_answered`] when the
//!    port stayed silent, and folds each identification into the first with
//!    [`merge`].
//!
//! A reply that does not answer the question sent (another protocol on an
//! unexpected port, a FORMERR to someone else's bytes) goes through
//! [`sniff_udp`], which tries every parser in turn and names the service
//! without findings: as for TCP's `sniff`, a finding needs the question that
//! proves it.
//!
//! Architecture invariant (as for TCP): nothing here does I/O, no parser
//! indexes unchecked or allocates by a length it has not checked against the
//! datagram, and every parser has a proptest and a fuzz target. Every request
//! reads only.

use std::net::SocketAddr;

use crate::Identified;

pub mod ber;
pub mod dns;
pub mod mdns;
pub mod memcached;
pub mod netbios;
pub mod ntp;
mod ports;
pub mod snmp;
pub mod ssdp;

pub use ports::UDP_TOP_PORTS;

/// The ID [`udp_payloads_for`] puts in every request that carries one (DNS and
/// NetBIOS transaction IDs, SNMP request-id, memcached request ID, the NTP
/// nonce and mode 6 sequence). An engine that wants IDs an off-path host cannot
/// guess uses [`UdpRequest::payload`] with its own.
pub const DEFAULT_ID: u16 = 0x7072;

/// One question the UDP scan knows how to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UdpRequest {
    /// DNS: `example.com A` with RD=1 ([`dns::recursion_query`]).
    DnsRecursion,
    /// DNS: `version.bind CH TXT` ([`dns::version_query`]).
    DnsVersion,
    /// mDNS: DNS-SD service enumeration ([`mdns::services_query`]).
    MdnsServices,
    /// NTP mode 3 client request ([`ntp::client_request`]).
    NtpClient,
    /// NTP mode 6 READVAR ([`ntp::readvar_request`]).
    NtpReadvar,
    /// NTP mode 7 MON_GETLIST_1 ([`ntp::monlist_request`]).
    NtpMonlist,
    /// SNMPv2c GetRequest sysDescr.0, community `public`.
    SnmpV2cPublic,
    /// SNMPv1 GetRequest sysDescr.0, community `public`.
    SnmpV1Public,
    /// memcached `version` in a UDP frame.
    MemcachedVersion,
    /// memcached `stats` in a UDP frame.
    MemcachedStats,
    /// SSDP M-SEARCH `ssdp:all` ([`ssdp::m_search`]).
    SsdpSearch,
    /// NetBIOS node status for `*` ([`netbios::node_status_request`]).
    NetbiosStatus,
    /// An empty datagram, for ports without a question: some services answer
    /// anything, and an ICMP port unreachable says closed.
    Empty,
}

impl UdpRequest {
    /// Every request, in the order [`sniff_udp`] falls back on.
    pub const ALL: [UdpRequest; 13] = [
        UdpRequest::DnsRecursion,
        UdpRequest::DnsVersion,
        UdpRequest::MdnsServices,
        UdpRequest::NtpClient,
        UdpRequest::NtpReadvar,
        UdpRequest::NtpMonlist,
        UdpRequest::SnmpV2cPublic,
        UdpRequest::SnmpV1Public,
        UdpRequest::MemcachedVersion,
        UdpRequest::MemcachedStats,
        UdpRequest::SsdpSearch,
        UdpRequest::NetbiosStatus,
        UdpRequest::Empty,
    ];

    /// A short stable name, for logs and the scan record.
    pub fn name(self) -> &'static str {
        match self {
            UdpRequest::DnsRecursion => "dns-recursion",
            UdpRequest::DnsVersion => "dns-version",
            UdpRequest::MdnsServices => "mdns-services",
            UdpRequest::NtpClient => "ntp-client",
            UdpRequest::NtpReadvar => "ntp-readvar",
            UdpRequest::NtpMonlist => "ntp-monlist",
            UdpRequest::SnmpV2cPublic => "snmp-v2c-public",
            UdpRequest::SnmpV1Public => "snmp-v1-public",
            UdpRequest::MemcachedVersion => "memcached-version",
            UdpRequest::MemcachedStats => "memcached-stats",
            UdpRequest::SsdpSearch => "ssdp-search",
            UdpRequest::NetbiosStatus => "netbios-status",
            UdpRequest::Empty => "empty",
        }
    }

    /// Whether the request is worth sending only once the port has answered an
    /// earlier one. Identification follow-ups are; questions that test for an
    /// exposure on their own are not (a server may drop mode 3 and still answer
    /// mode 7; a v1-only agent drops v2c).
    pub fn only_if_answered(self) -> bool {
        matches!(self, UdpRequest::DnsVersion | UdpRequest::MemcachedStats)
    }

    /// The datagram for this request with `id`, `HOST` of an SSDP search being
    /// the multicast group.
    pub fn payload(self, id: u16) -> UdpPayload {
        self.build(id, None)
    }

    /// Like [`UdpRequest::payload`], an SSDP search naming `target` as its
    /// `HOST`, as UDA 1.1 §1.3.2 asks of a unicast search.
    pub fn payload_to(self, id: u16, target: SocketAddr) -> UdpPayload {
        self.build(id, Some(target))
    }

    fn build(self, id: u16, target: Option<SocketAddr>) -> UdpPayload {
        let bytes = match self {
            UdpRequest::DnsRecursion => dns::recursion_query(id),
            UdpRequest::DnsVersion => dns::version_query(id),
            UdpRequest::MdnsServices => mdns::services_query(id),
            UdpRequest::NtpClient => ntp::client_request(id),
            UdpRequest::NtpReadvar => ntp::readvar_request(id),
            UdpRequest::NtpMonlist => ntp::monlist_request(),
            UdpRequest::SnmpV2cPublic => snmp::get_request(snmp::Version::V2c, id),
            UdpRequest::SnmpV1Public => snmp::get_request(snmp::Version::V1, id),
            UdpRequest::MemcachedVersion => memcached::request(id, crate::memcached::VERSION),
            UdpRequest::MemcachedStats => memcached::request(id, crate::memcached::STATS),
            UdpRequest::SsdpSearch => match target {
                // SocketAddr's Display brackets IPv6 addresses, as HOST wants.
                Some(target) => ssdp::m_search(&target.to_string()),
                None => ssdp::m_search(ssdp::MULTICAST_HOST),
            },
            UdpRequest::NetbiosStatus => netbios::node_status_request(id),
            UdpRequest::Empty => Vec::new(),
        };
        UdpPayload {
            request: self,
            id,
            bytes,
            only_if_answered: self.only_if_answered(),
        }
    }
}

/// One datagram to send, and what is needed to read its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPayload {
    pub request: UdpRequest,
    /// The ID the request carries (ignored by requests without one).
    pub id: u16,
    pub bytes: Vec<u8>,
    /// Send only when the port answered an earlier payload.
    pub only_if_answered: bool,
}

/// The questions for `port`, the usual one first. Ports without one get
/// [`UdpRequest::Empty`].
pub fn udp_requests_for(port: u16) -> &'static [UdpRequest] {
    match port {
        53 => &[UdpRequest::DnsRecursion, UdpRequest::DnsVersion],
        123 => &[
            UdpRequest::NtpClient,
            UdpRequest::NtpReadvar,
            UdpRequest::NtpMonlist,
        ],
        161 => &[UdpRequest::SnmpV2cPublic, UdpRequest::SnmpV1Public],
        137 => &[UdpRequest::NetbiosStatus],
        1900 => &[UdpRequest::SsdpSearch],
        5353 => &[UdpRequest::MdnsServices],
        11211 => &[UdpRequest::MemcachedVersion, UdpRequest::MemcachedStats],
        _ => &[UdpRequest::Empty],
    }
}

/// The datagrams for `port` with [`DEFAULT_ID`], in order.
pub fn udp_payloads_for(port: u16) -> Vec<UdpPayload> {
    udp_requests_for(port)
        .iter()
        .map(|request| request.payload(DEFAULT_ID))
        .collect()
}

/// Like [`udp_payloads_for`], with the target's address in an SSDP search.
pub fn udp_payloads_for_address(target: SocketAddr) -> Vec<UdpPayload> {
    udp_requests_for(target.port())
        .iter()
        .map(|request| request.payload_to(DEFAULT_ID, target))
        .collect()
}

/// What one datagram from the target, received after sending `sent` to `port`,
/// proves. First the parser of the question asked, with its ID checked; when
/// that does not read the reply, [`sniff_udp`]. `None`: nothing recognised
/// (the port still answered, so it is open).
pub fn identify_udp(port: u16, sent: &UdpPayload, reply: &[u8]) -> Option<Identified> {
    let id = sent.id;
    let answered = match sent.request {
        UdpRequest::DnsRecursion => dns::identify_recursion(id, reply),
        UdpRequest::DnsVersion => dns::identify_version(id, reply),
        UdpRequest::MdnsServices => mdns::identify(id, port, reply),
        UdpRequest::NtpClient => ntp::identify_client(id, reply),
        UdpRequest::NtpReadvar => ntp::identify_readvar(id, reply),
        UdpRequest::NtpMonlist => ntp::identify_monlist(reply),
        UdpRequest::SnmpV2cPublic => snmp::identify(snmp::Version::V2c, id, reply),
        UdpRequest::SnmpV1Public => snmp::identify(snmp::Version::V1, id, reply),
        UdpRequest::MemcachedVersion | UdpRequest::MemcachedStats => memcached::identify(id, reply),
        UdpRequest::SsdpSearch => ssdp::identify(reply),
        UdpRequest::NetbiosStatus => netbios::identify(id, reply),
        UdpRequest::Empty => None,
    };
    answered.or_else(|| sniff_udp(port, &sent.bytes, reply))
}

/// Names the service that sent `reply` in answer to `sent`, whatever was asked:
/// each protocol's shape check in turn, the port's usual protocol first. No
/// findings (a finding needs the question that proves it). A reply that
/// repeats a non-empty `sent` byte for byte is an echo service (RFC 862).
pub fn sniff_udp(port: u16, sent: &[u8], reply: &[u8]) -> Option<Identified> {
    if reply.is_empty() {
        return None;
    }
    if !sent.is_empty() && reply == sent {
        return Some(Identified::service_only(
            perimeter_model::ServiceInfo::named("echo"),
        ));
    }
    let mut order = [
        Sniffer::Ntp,
        Sniffer::Snmp,
        Sniffer::Memcached,
        Sniffer::Ssdp,
        Sniffer::NetbiosOrDns,
    ];
    let first = match port {
        123 => Sniffer::Ntp,
        161 | 162 => Sniffer::Snmp,
        11211 => Sniffer::Memcached,
        1900 => Sniffer::Ssdp,
        _ => Sniffer::NetbiosOrDns,
    };
    if let Some(head) = order
        .iter()
        .position(|s| *s == first)
        .and_then(|idx| order.get_mut(..=idx))
    {
        head.rotate_right(1);
    }
    order
        .into_iter()
        .find_map(|sniffer| sniffer.name(port, sent, reply))
        .map(|name| Identified::service_only(perimeter_model::ServiceInfo::named(name)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffer {
    Ntp,
    Snmp,
    Memcached,
    Ssdp,
    NetbiosOrDns,
}

impl Sniffer {
    fn name(self, port: u16, sent: &[u8], reply: &[u8]) -> Option<&'static str> {
        match self {
            Sniffer::Ntp => ntp::looks_like_reply(reply).then_some("ntp"),
            Sniffer::Snmp => snmp::looks_like_reply(reply).then_some("snmp"),
            Sniffer::Memcached => memcached::looks_like_reply(reply).then_some("memcached"),
            Sniffer::Ssdp => ssdp::looks_like_reply(reply).then_some("upnp"),
            Sniffer::NetbiosOrDns => {
                if !dns::looks_like_reply(sent, reply) {
                    None
                } else if port == 137 || dns_records_are_nbstat(reply) {
                    Some("netbios-ns")
                } else if port == 5353 {
                    Some("mdns")
                } else {
                    Some("domain")
                }
            }
        }
    }
}

fn dns_records_are_nbstat(reply: &[u8]) -> bool {
    dns::parse_message(reply).is_some_and(|message| {
        message
            .records
            .first()
            .is_some_and(|(_, record)| record.rtype == netbios::NBSTAT)
    })
}

/// Folds `more` (another datagram's identification of the same port) into
/// `found`: fields `found` lacks are filled, `extra` keys it lacks are added
/// (at most [`MAX_MERGED_EXTRA`] in all), findings of rules it does not have
/// yet are appended. The first identification's name stands: the engine sends
/// the port's usual question first, so that is the best-founded one.
pub fn merge(found: &mut Identified, more: Identified) {
    let service = &mut found.service;
    let extra_service = more.service;
    if service.product.is_none() {
        service.product = extra_service.product;
    }
    if service.version.is_none() {
        service.version = extra_service.version;
    }
    if service.banner.is_none() {
        service.banner = extra_service.banner;
    }
    if service.auth == perimeter_model::AuthState::Unknown {
        service.auth = extra_service.auth;
    }
    for (key, value) in extra_service.extra {
        if service.extra.len() >= MAX_MERGED_EXTRA {
            break;
        }
        service.extra.entry(key).or_insert(value);
    }
    for finding in more.findings {
        if !found.findings.iter().any(|f| f.rule == finding.rule) {
            found.findings.push(finding);
        }
    }
}

/// The most `extra` entries [`merge`] lets one service collect.
pub const MAX_MERGED_EXTRA: usize = 32;

/// The big-endian `u16` at `at`.
pub(crate) fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let pair: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(pair))
}

/// The big-endian `u32` at `at`.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let quad: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(quad))
}

/// The big-endian `u64` at `at`.
pub(crate) fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let octets: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(octets))
}

#[cfg(test)]
mod tests;
