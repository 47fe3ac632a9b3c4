//! NTP (port 123): three questions and their bounded parsers.
//!
//! - A client request (mode 3, RFC 5905 §7.3) identifies a server: version,
//!   stratum, reference ID. Every NTP server answers it; it proves nothing wrong.
//! - A control message READVAR (mode 6, RFC 1305 Appendix B, now RFC 9327 §2
//!   and §3.2) asks for the system variables, `ntpq -c rv`'s question. An
//!   answer gives away the exact daemon version and OS and is a bounded
//!   reflection: [`rules::NTP_MODE6`] (medium).
//! - A private-mode request (mode 7) for MON_GETLIST_1, `ntpdc -c monlist`'s
//!   question, is the CVE-2013-5211 check. Mode 7 has no RFC: RFC 5905 §7.3
//!   only reserves the mode "for private use"; the layout below follows the
//!   reference implementation's description of it (the `ntp_request.h` header
//!   comment of ntpd/xntpd). An answer is [`rules::NTP_MONLIST`] (high).
//!
//! Why two rules and two severities: a READVAR answer is a few hundred bytes
//! for a 12-byte request, tens of times the request but bounded, and ntpd
//! answered it by default for years; a monlist answer lists up to 600 recent
//! clients in up to 100 datagrams of 440 bytes, the ~557x reflection US-CERT
//! TA14-017A lists for NTP, and leaks who uses the server.
//!
//! All three requests read only; none changes the server's state beyond the
//! entry ntpd's monitor keeps for every client anyway.

use std::net::Ipv4Addr;

use perimeter_model::ServiceInfo;

use super::{u16_at, u64_at};
use crate::{Identified, rules, text};

/// The NTP packet without extension fields or MAC (RFC 5905 §7.3, Figure 8).
pub const PACKET_LEN: usize = 48;
/// The mode 6 header (RFC 9327 §2).
pub const CONTROL_HEADER_LEN: usize = 12;
/// The most data one mode 6 datagram carries (RFC 9327 §2: 468 octets); more in
/// a reply is not read.
pub const MAX_CONTROL_DATA: usize = 468;
/// The most `name=value` pairs kept from one mode 6 datagram.
pub const MAX_VARIABLES: usize = 64;
/// The mode 7 header (`ntp_request.h`: eight octets before the data).
pub const PRIVATE_HEADER_LEN: usize = 8;

/// The mode 7 implementation number of ntpd 4 (`IMPL_XNTPD`); 2 was xntpd 3's.
pub const IMPL_XNTPD: u8 = 3;
/// ntpd 4's monitor list request (`REQ_MON_GETLIST_1`); 20 was xntpd 3's.
pub const REQ_MON_GETLIST_1: u8 = 42;
/// The READVAR opcode of mode 6 (RFC 9327 §3.2).
pub const OP_READVAR: u8 = 2;

const MODE_CLIENT: u8 = 3;
const MODE_SERVER: u8 = 4;
const MODE_CONTROL: u8 = 6;
const MODE_PRIVATE: u8 = 7;

/// The transmit timestamp the client request carries for `id`. RFC 5905 §8 has
/// the server copy it into the reply's origin timestamp, which is how a reply is
/// matched to the request; draft-ietf-ntp-data-minimization recommends a
/// random value there rather than the client's clock, and the scan needs no
/// clock, so it is a fixed tag with the request ID in its low bits.
pub fn client_nonce(id: u16) -> u64 {
    0x7065_726d_6d65_0000 | u64::from(id)
}

/// A client request (mode 3). RFC 5905 §7.3: LI=0, VN=4, Mode=3 in the first
/// octet; stratum, poll, precision, root delay, root dispersion, reference ID,
/// reference, origin and receive timestamps all zero (a client has none to
/// give); the transmit timestamp is [`client_nonce`].
pub fn client_request(id: u16) -> Vec<u8> {
    let mut packet = vec![0u8; PACKET_LEN];
    if let Some(first) = packet.first_mut() {
        *first = (4 << 3) | MODE_CLIENT;
    }
    if let Some(transmit) = packet.get_mut(40..48) {
        transmit.copy_from_slice(&client_nonce(id).to_be_bytes());
    }
    packet
}

/// A server's reply to a client request (RFC 5905 §7.3, the fields this crate
/// reports and matches on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub leap: u8,
    pub version: u8,
    pub stratum: u8,
    pub poll: i8,
    pub precision: i8,
    pub reference_id: [u8; 4],
    pub origin: u64,
    pub transmit: u64,
}

impl ServerReply {
    /// The reference ID as text (RFC 5905 §7.3): a kiss code at stratum 0, a
    /// four-character source name at stratum 1, an IPv4 address (or the hash of
    /// an IPv6 one, which reads like one) above.
    pub fn reference(&self) -> String {
        match self.stratum {
            0 | 1 => {
                let name = self
                    .reference_id
                    .split(|&b| b == 0)
                    .next()
                    .unwrap_or_default();
                text::value_bytes(name)
            }
            _ => Ipv4Addr::from(self.reference_id).to_string(),
        }
    }
}

/// Parses a mode 4 (server) packet. `None` for anything shorter than 48 bytes or
/// of another mode or a version outside 1..=4.
pub fn parse_server_reply(reply: &[u8]) -> Option<ServerReply> {
    let first = *reply.first()?;
    if reply.len() < PACKET_LEN || first & 0x07 != MODE_SERVER {
        return None;
    }
    let version = (first >> 3) & 0x07;
    if !(1..=4).contains(&version) {
        return None;
    }
    let reference_id: [u8; 4] = reply.get(12..16)?.try_into().ok()?;
    Some(ServerReply {
        leap: first >> 6,
        version,
        stratum: *reply.get(1)?,
        poll: i8::from_be_bytes([*reply.get(2)?]),
        precision: i8::from_be_bytes([*reply.get(3)?]),
        reference_id,
        origin: u64_at(reply, 24)?,
        transmit: u64_at(reply, 40)?,
    })
}

/// Identifies an NTP server from its reply to [`client_request`] with `id`.
pub fn identify_client(id: u16, reply: &[u8]) -> Option<Identified> {
    let server = parse_server_reply(reply).filter(|server| server.origin == client_nonce(id))?;
    let mut service = ServiceInfo::named("ntp");
    // The packet's version is the protocol's, not the daemon's (which only mode
    // 6 tells), so it goes into `extra`.
    service
        .extra
        .insert("protocol".into(), format!("NTPv{}", server.version));
    service
        .extra
        .insert("stratum".into(), server.stratum.to_string());
    let reference = server.reference();
    if server.stratum == 0 {
        // Stratum 0 carries a kiss code (RFC 5905 §7.4): RATE, DENY, RSTR tell a
        // client to go away, INIT says the server has not synchronised yet.
        // chrony leaves it empty while unsynchronised.
        if !reference.is_empty() {
            service.extra.insert("kiss".into(), reference);
        }
    } else {
        service.extra.insert("refid".into(), reference);
    }
    // LI=3: the server's clock is not synchronised (RFC 5905 §7.3).
    if server.leap == 3 {
        service.extra.insert("synchronised".into(), "no".into());
    }
    Some(Identified::service_only(service))
}

/// A READVAR request for the system variables (RFC 9327 §2 header, §3.2
/// opcode 2): VN=2 as ntpq sends (every ntpd accepts versions 1 to 4), mode 6,
/// R=E=M=0, the sequence number `id`, status 0, association ID 0 (the system,
/// not a peer), offset 0, count 0 (no data: all variables).
pub fn readvar_request(id: u16) -> Vec<u8> {
    let mut packet = Vec::with_capacity(CONTROL_HEADER_LEN);
    packet.push((2 << 3) | MODE_CONTROL);
    packet.push(OP_READVAR);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0; 8]);
    packet
}

/// One mode 6 datagram (RFC 9327 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlReply {
    pub version: u8,
    /// R: a response.
    pub response: bool,
    /// E: the server refused or failed the request.
    pub error: bool,
    /// M: more datagrams follow.
    pub more: bool,
    pub opcode: u8,
    pub sequence: u16,
    pub status: u16,
    pub association_id: u16,
    pub offset: u16,
    /// The data, as many bytes as the count field says and the datagram holds,
    /// at most [`MAX_CONTROL_DATA`].
    pub data: Vec<u8>,
}

/// Parses a mode 6 datagram.
pub fn parse_control(reply: &[u8]) -> Option<ControlReply> {
    let first = *reply.first()?;
    let second = *reply.get(1)?;
    if first & 0x07 != MODE_CONTROL {
        return None;
    }
    let count = usize::from(u16_at(reply, 10)?).min(MAX_CONTROL_DATA);
    let body = reply.get(CONTROL_HEADER_LEN..).unwrap_or_default();
    let data = body.get(..count).unwrap_or(body).to_vec();
    Some(ControlReply {
        version: (first >> 3) & 0x07,
        response: second & 0x80 != 0,
        error: second & 0x40 != 0,
        more: second & 0x20 != 0,
        opcode: second & 0x1f,
        sequence: u16_at(reply, 2)?,
        status: u16_at(reply, 4)?,
        association_id: u16_at(reply, 6)?,
        offset: u16_at(reply, 8)?,
        data,
    })
}

/// Splits mode 6 variable text (RFC 9327 §3.2: `name=value` pairs separated by
/// commas, values possibly quoted, lines broken with CR LF) into at most
/// [`MAX_VARIABLES`] pairs, values unquoted and escaped. A pair cut off at the
/// end of a datagram is kept as far as it arrived.
pub fn parse_variables(data: &[u8]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = data;
    while pairs.len() < MAX_VARIABLES {
        rest = trim_start(rest);
        if rest.is_empty() {
            break;
        }
        // Find the end of this item: a comma outside quotes.
        let mut in_quotes = false;
        let mut end = rest.len();
        for (idx, &byte) in rest.iter().enumerate() {
            match byte {
                b'"' => in_quotes = !in_quotes,
                b',' if !in_quotes => {
                    end = idx;
                    break;
                }
                _ => {}
            }
        }
        let item = rest.get(..end).unwrap_or(rest);
        rest = rest.get(end + 1..).unwrap_or_default();
        let (name, value) = match item.iter().position(|&b| b == b'=') {
            Some(eq) => (
                item.get(..eq).unwrap_or_default(),
                item.get(eq + 1..).unwrap_or_default(),
            ),
            None => (item, &b""[..]),
        };
        let value = value.trim_ascii();
        let value = value.strip_prefix(b"\"").unwrap_or(value);
        let value = value.strip_suffix(b"\"").unwrap_or(value);
        let name = text::value_bytes(name);
        if !name.is_empty() {
            pairs.push((name, text::value_bytes(value)));
        }
    }
    pairs
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0)
        .unwrap_or(bytes.len());
    bytes.get(skip..).unwrap_or_default()
}

/// Product and version from the `version` variable: ntpsec's `ntpd
/// ntpsec-1.2.2 2023-...` and the reference ntpd's `ntpd 4.2.8p15@1.3728-o ...`.
pub fn daemon_version(version: &str) -> (Option<String>, Option<String>) {
    let mut words = version.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    if let Some(number) = second.strip_prefix("ntpsec-") {
        return (Some("ntpsec".into()), Some(text::value(number)));
    }
    if first == "ntpd" && second.starts_with(|c: char| c.is_ascii_digit()) {
        let number = second.split('@').next().unwrap_or(second);
        return (Some("ntpd".into()), Some(text::value(number)));
    }
    (None, None)
}

/// Identifies an NTP server from a mode 6 datagram answering [`readvar_request`]
/// with `id`. A response without the error bit is [`rules::NTP_MODE6`]; with it
/// (ntpd answers some refusals that way), only the service.
pub fn identify_readvar(id: u16, reply: &[u8]) -> Option<Identified> {
    let control = parse_control(reply)
        .filter(|c| c.response && c.opcode == OP_READVAR && c.sequence == id)?;
    let mut service = ServiceInfo::named("ntp");
    if control.error {
        service.extra.insert(
            "mode6".into(),
            format!("error status 0x{:04x}", control.status),
        );
        return Some(Identified::service_only(service));
    }
    let variables = parse_variables(&control.data);
    let get = |name: &str| {
        variables
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut evidence = vec![format!(
        "mode 6 READVAR answered with {} bytes of system variables{}",
        control.data.len(),
        if control.more {
            " (more datagrams follow)"
        } else {
            ""
        }
    )];
    if let Some(version) = get("version") {
        let (product, number) = daemon_version(&version);
        service.product = product;
        service.version = number;
        service.banner = Some(text::banner(version.as_bytes()));
        evidence.push(format!("version=\"{version}\""));
    }
    for key in ["system", "stratum", "refid"] {
        if let Some(value) = get(key) {
            service.extra.insert(key.into(), value);
        }
    }
    service.extra.insert("mode6".into(), "answered".into());
    Some(Identified {
        service,
        findings: vec![rules::ntp_mode6(evidence)],
    })
}

/// A mode 7 MON_GETLIST_1 request. Per the `ntp_request.h` layout: first octet
/// R=0, M=0, VN=2, Mode=7; then A=0 with sequence 0 (ntpd rejects requests with
/// any other sequence); implementation [`IMPL_XNTPD`]; request code
/// [`REQ_MON_GETLIST_1`]; err=0 and zero items; MBZ=0 and item size 0; then a
/// data area of zeros that pads the request to the 48 octets of an NTP packet,
/// the size the header comment says requests have.
pub fn monlist_request() -> Vec<u8> {
    let mut packet = vec![0u8; PACKET_LEN];
    let header = [(2 << 3) | MODE_PRIVATE, 0, IMPL_XNTPD, REQ_MON_GETLIST_1];
    if let Some(head) = packet.get_mut(..4) {
        head.copy_from_slice(&header);
    }
    packet
}

/// One mode 7 datagram's header (`ntp_request.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateReply {
    pub response: bool,
    pub more: bool,
    pub version: u8,
    pub sequence: u8,
    pub implementation: u8,
    pub request: u8,
    /// 0 is success; 1 bad implementation, 2 unknown request, 3 format error,
    /// 4 no data, 7 authentication failure.
    pub error: u8,
    pub n_items: u16,
    pub item_size: u16,
}

/// Parses a mode 7 header.
pub fn parse_private(reply: &[u8]) -> Option<PrivateReply> {
    let first = *reply.first()?;
    if first & 0x07 != MODE_PRIVATE {
        return None;
    }
    let err_items = u16_at(reply, 4)?;
    let mbz_size = u16_at(reply, 6)?;
    Some(PrivateReply {
        response: first & 0x80 != 0,
        more: first & 0x40 != 0,
        version: (first >> 3) & 0x07,
        sequence: *reply.get(1)? & 0x7f,
        implementation: *reply.get(2)?,
        request: *reply.get(3)?,
        error: (err_items >> 12) as u8,
        n_items: err_items & 0x0fff,
        item_size: mbz_size & 0x0fff,
    })
}

/// Identifies an NTP server from a mode 7 datagram answering
/// [`monlist_request`]. Success is [`rules::NTP_MONLIST`]; an error answer
/// proves mode 7 is processed but not that monlist answers, so it is recorded
/// without a finding.
pub fn identify_monlist(reply: &[u8]) -> Option<Identified> {
    let private = parse_private(reply).filter(|p| {
        p.response && p.request == REQ_MON_GETLIST_1 && matches!(p.implementation, IMPL_XNTPD | 2)
    })?;
    let mut service = ServiceInfo::named("ntp");
    if private.error != 0 {
        service
            .extra
            .insert("mode7".into(), format!("error {}", private.error));
        return Some(Identified::service_only(service));
    }
    service
        .extra
        .insert("mode7".into(), "monlist answered".into());
    let evidence = vec![format!(
        "mode 7 MON_GETLIST_1 answered: {} entries of {} bytes in this datagram{}",
        private.n_items,
        private.item_size,
        if private.more {
            ", more datagrams follow"
        } else {
            ""
        }
    )];
    Some(Identified {
        service,
        findings: vec![rules::ntp_monlist(evidence)],
    })
}

/// Whether `reply` is an NTP server's packet of any mode, for naming a service
/// on an unexpected port. Only shapes a server sends: mode 4 with a 48-byte
/// minimum and a version 1 to 4, or mode 6/7 with the response bit.
pub fn looks_like_reply(reply: &[u8]) -> bool {
    if parse_server_reply(reply).is_some_and(|server| server.stratum <= 16) {
        return true;
    }
    if let Some(control) = parse_control(reply) {
        return control.response
            && (1..=4).contains(&control.version)
            && reply.len() >= CONTROL_HEADER_LEN;
    }
    parse_private(reply).is_some_and(|p| {
        p.response && (1..=4).contains(&p.version) && reply.len() >= PRIVATE_HEADER_LEN
    })
}

#[cfg(test)]
mod tests;
