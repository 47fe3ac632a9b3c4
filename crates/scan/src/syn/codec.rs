//! The SYN scan's wire format: no sockets, no tasks, no clock. It
//! builds what is sent (the [`syn_segment`], or for an `IPPROTO_RAW` socket
//! the whole [`ipv4_syn`] datagram, with its [`tcp_checksum`]), derives the
//! sequence number each SYN carries ([`Cookies`]), and reads what a raw
//! socket delivers back ([`parse_ipv4_reply`], [`parse_tcp_reply`],
//! [`parse_icmpv4_unreachable`], [`parse_icmpv6_unreachable`]) into a
//! [`Reply`].
//!
//! Every parser takes hostile bytes: lengths are checked with `.get(..)?`
//! before a field is read, and nothing panics. They are fuzzed by
//! `fuzz/fuzz_targets/scan_syn.rs` and proptested below. It is kept apart
//! from the sockets so that it can be read, tested and fuzzed without a raw
//! socket, a runtime or privileges: its one impurity is the random secret a
//! [`Cookies`] draws when it is made.

use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The length of the SYN segment sent: the 20-byte TCP header and one option,
/// the maximum segment size (a SYN without options is a scanner's tell, and
/// some stacks drop it).
pub const SYN_LEN: usize = 24;

const FLAG_FIN: u8 = 0x01;
const FLAG_SYN: u8 = 0x02;
const FLAG_RST: u8 = 0x04;
const FLAG_ACK: u8 = 0x10;

/// What an answer to a SYN says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK: something listens.
    SynAck,
    /// RST: nothing listens.
    Rst,
    /// An ICMP destination unreachable quoting the SYN: a router or firewall
    /// refused it (filtered, as nmap has it, but decided at once).
    Unreachable,
}

/// A TCP segment that may answer one of our SYNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The scanned address (the reply's source).
    pub from: IpAddr,
    /// The scanned port (the reply's source port).
    pub port: u16,
    /// Our source port (the reply's destination port).
    pub to_port: u16,
    pub ack: u32,
    pub answer: Answer,
}

/// The ones' complement sum of `bytes` (an odd last byte padded with zero),
/// added to `sum`.
fn sum_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([pair[0], pair[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP checksum of `segment` (its checksum field zero) between `source`
/// and `destination`, over the pseudo-header of RFC 793 (IPv4) or RFC 8200
/// section 8.1 (IPv6). None when the two addresses are of different families.
pub fn tcp_checksum(source: IpAddr, destination: IpAddr, segment: &[u8]) -> Option<u16> {
    let length = u32::try_from(segment.len()).ok()?;
    let mut sum = 0u32;
    match (source, destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            sum = sum_words(sum, &source.octets());
            sum = sum_words(sum, &destination.octets());
            sum = sum.wrapping_add(6);
            sum = sum.wrapping_add(length & 0xffff);
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            sum = sum_words(sum, &source.octets());
            sum = sum_words(sum, &destination.octets());
            sum = sum_words(sum, &length.to_be_bytes());
            sum = sum.wrapping_add(6);
        }
        _ => return None,
    }
    Some(fold(sum_words(sum, segment)))
}

/// A SYN from `source`:`source_port` to `destination`:`port` with sequence
/// number `seq`, checksummed, ready for a raw `IPPROTO_TCP` socket (the kernel
/// adds the IP header). None when the addresses are of different families.
pub fn syn_segment(
    source: IpAddr,
    source_port: u16,
    destination: IpAddr,
    port: u16,
    seq: u32,
) -> Option<[u8; SYN_LEN]> {
    let mut segment = [0u8; SYN_LEN];
    segment[0..2].copy_from_slice(&source_port.to_be_bytes());
    segment[2..4].copy_from_slice(&port.to_be_bytes());
    segment[4..8].copy_from_slice(&seq.to_be_bytes());
    // Acknowledgement number 0; data offset 6 words (24 bytes).
    segment[12] = 6 << 4;
    segment[13] = FLAG_SYN;
    // A window of 1024, as nmap's SYN scan uses.
    segment[14..16].copy_from_slice(&1024u16.to_be_bytes());
    // Checksum at 16..18, urgent pointer 0; then MSS 1460.
    segment[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let checksum = tcp_checksum(source, destination, &segment)?;
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    Some(segment)
}

/// The length of an IPv4 SYN as sent from an `IPPROTO_RAW` socket: a 20-byte
/// IPv4 header and the [`syn_segment`].
pub const IPV4_SYN_LEN: usize = 20 + SYN_LEN;

/// An IPv4 datagram carrying [`syn_segment`], for an `IPPROTO_RAW` socket
/// (which takes the IP header from us; the kernel fills in the total length,
/// the identification and the header checksum).
pub fn ipv4_syn(
    source: Ipv4Addr,
    source_port: u16,
    destination: Ipv4Addr,
    port: u16,
    seq: u32,
) -> [u8; IPV4_SYN_LEN] {
    let mut datagram = [0u8; IPV4_SYN_LEN];
    datagram[0] = 0x45;
    datagram[2..4].copy_from_slice(&(IPV4_SYN_LEN as u16).to_be_bytes());
    datagram[8] = 64;
    datagram[9] = 6;
    datagram[12..16].copy_from_slice(&source.octets());
    datagram[16..20].copy_from_slice(&destination.octets());
    if let Some(segment) = syn_segment(
        IpAddr::V4(source),
        source_port,
        IpAddr::V4(destination),
        port,
        seq,
    ) {
        datagram[20..].copy_from_slice(&segment);
    }
    datagram
}

/// A TCP segment (from its first byte) sent by `from`, if it is a SYN-ACK or a
/// RST. Anything shorter than a TCP header, or carrying other flags, is None.
pub fn parse_tcp_reply(from: IpAddr, segment: &[u8]) -> Option<Reply> {
    let header = segment.get(..20)?;
    let port = u16::from_be_bytes([header[0], header[1]]);
    let to_port = u16::from_be_bytes([header[2], header[3]]);
    let ack = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    let flags = header[13];
    let answer = if flags & FLAG_RST != 0 {
        Answer::Rst
    } else if flags & (FLAG_SYN | FLAG_ACK) == FLAG_SYN | FLAG_ACK && flags & FLAG_FIN == 0 {
        Answer::SynAck
    } else {
        return None;
    };
    Some(Reply {
        from,
        port,
        to_port,
        ack,
        answer,
    })
}

/// An IPv4 datagram as a raw IPv4 `IPPROTO_TCP` socket delivers it (IP header
/// included), if it carries a SYN-ACK or a RST. Fragments after the first,
/// bad header lengths and other protocols are None.
pub fn parse_ipv4_reply(datagram: &[u8]) -> Option<Reply> {
    let first = *datagram.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 {
        return None;
    }
    let header = datagram.get(..header_len)?;
    if header[9] != 6 || u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0 {
        return None;
    }
    let from = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    parse_tcp_reply(IpAddr::V4(from), datagram.get(header_len..)?)
}

/// The SYN an ICMP error quotes, as a [`Reply`] to it: `from` and `port` are
/// the SYN's destination, `to_port` its source port, and `ack` its sequence
/// number plus one (what a waiter expects). `quoted` starts at the quoted IP
/// header.
fn quoted_syn(destination: IpAddr, tcp: &[u8]) -> Option<Reply> {
    let tcp = tcp.get(..8)?;
    Some(Reply {
        from: destination,
        port: u16::from_be_bytes([tcp[2], tcp[3]]),
        to_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        ack: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]).wrapping_add(1),
        answer: Answer::Unreachable,
    })
}

/// An IPv4 datagram as a raw `IPPROTO_ICMP` socket delivers it, if it is a
/// destination unreachable (type 3) of the codes nmap counts as filtered (0
/// net, 1 host, 2 protocol, 3 port, 9 and 10 prohibited, 13 administratively
/// filtered) quoting a TCP segment.
pub fn parse_icmpv4_unreachable(datagram: &[u8]) -> Option<Reply> {
    let first = *datagram.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || *datagram.get(9)? != 1 {
        return None;
    }
    let icmp = datagram.get(header_len..)?;
    let (kind, code) = (*icmp.first()?, *icmp.get(1)?);
    if kind != 3 || !matches!(code, 0 | 1 | 2 | 3 | 9 | 10 | 13) {
        return None;
    }
    let quoted = icmp.get(8..)?;
    let quoted_first = *quoted.first()?;
    let quoted_len = usize::from(quoted_first & 0x0f) * 4;
    if quoted_first >> 4 != 4 || quoted_len < 20 || *quoted.get(9)? != 6 {
        return None;
    }
    let destination: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
    quoted_syn(
        IpAddr::V4(Ipv4Addr::from(destination)),
        quoted.get(quoted_len..)?,
    )
}

/// An ICMPv6 message as a raw `IPPROTO_ICMPV6` socket delivers it (no IPv6
/// header), if it is a destination unreachable (type 1, codes 0 to 6) quoting
/// a TCP segment right after the quoted IPv6 header.
pub fn parse_icmpv6_unreachable(message: &[u8]) -> Option<Reply> {
    let (kind, code) = (*message.first()?, *message.get(1)?);
    if kind != 1 || code > 6 {
        return None;
    }
    let quoted = message.get(8..)?;
    if *quoted.first()? >> 4 != 6 || *quoted.get(6)? != 6 {
        return None;
    }
    let destination: [u8; 16] = quoted.get(24..40)?.try_into().ok()?;
    quoted_syn(IpAddr::V6(Ipv6Addr::from(destination)), quoted.get(40..)?)
}

/// The per-scan secret that makes sequence numbers unguessable, so a forged
/// or stray segment cannot pass for an answer.
#[derive(Debug, Clone)]
pub struct Cookies {
    key: RandomState,
}

impl Cookies {
    pub fn new() -> Cookies {
        Cookies {
            key: RandomState::new(),
        }
    }

    /// The sequence number of every SYN to `address`:`port`; its answer
    /// acknowledges this plus one.
    pub fn seq(&self, address: IpAddr, port: u16, source_port: u16) -> u32 {
        let mut hasher = self.key.build_hasher();
        hasher.write(&match address {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        });
        hasher.write_u16(port);
        hasher.write_u16(source_port);
        let hash = hasher.finish();
        (hash ^ (hash >> 32)) as u32
    }
}

impl Default for Cookies {
    fn default() -> Self {
        Cookies::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCANNER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const TARGET: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));

    #[test]
    fn syn_segment_layout_and_checksum() {
        let segment = syn_segment(SCANNER, 40000, TARGET, 6379, 0x0102_0304).expect("v4");
        assert_eq!(&segment[0..4], &[0x9c, 0x40, 0x18, 0xeb]);
        assert_eq!(&segment[4..8], &[1, 2, 3, 4]);
        assert_eq!(segment[12], 0x60);
        assert_eq!(segment[13], FLAG_SYN);
        assert_eq!(&segment[20..], &[2, 4, 0x05, 0xb4]);
        // Summing the pseudo-header and the segment with its checksum gives
        // all ones: the receiver's test.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2, 0, 6, 0, 24]);
        pseudo.extend_from_slice(&segment);
        assert_eq!(fold(sum_words(0, &pseudo)), 0);
    }

    #[test]
    fn checksum_matches_a_hand_computed_one() {
        // 127.0.0.1:40000 -> 127.0.0.1:6379, seq 0x01020304, worked by hand:
        // the pseudo-header's words (0x7f00 0x0001 0x7f00 0x0001 0x0006
        // 0x0018) and the segment's (0x9c40 0x18eb 0x0102 0x0304 0 0 0x6002
        // 0x0400 0 0 0x0204 0x05b4) sum to 0x2_230b, folded 0x230d, and the
        // complement is 0xdcf2.
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let segment = syn_segment(local, 40000, local, 6379, 0x0102_0304).expect("v4");
        assert_eq!(u16::from_be_bytes([segment[16], segment[17]]), 0xdcf2);
        assert_eq!(
            tcp_checksum(local, IpAddr::V6(Ipv6Addr::LOCALHOST), &segment),
            None
        );
    }

    #[test]
    fn ipv4_datagram_carries_the_segment() {
        let (source, destination) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let datagram = ipv4_syn(source, 40000, destination, 22, 9);
        assert_eq!(datagram[0], 0x45);
        assert_eq!(u16::from_be_bytes([datagram[2], datagram[3]]), 44);
        assert_eq!((datagram[8], datagram[9]), (64, 6));
        assert_eq!(&datagram[12..16], &source.octets());
        assert_eq!(&datagram[16..20], &destination.octets());
        let segment = syn_segment(SCANNER, 40000, TARGET, 22, 9).expect("v4");
        assert_eq!(&datagram[20..], &segment);
    }

    #[test]
    fn ipv6_checksum_covers_the_pseudo_header() {
        let a = IpAddr::V6("2001:db8::1".parse().expect("v6"));
        let b = IpAddr::V6("2001:db8::2".parse().expect("v6"));
        let segment = syn_segment(a, 1, b, 2, 3).expect("v6");
        let mut pseudo = Vec::new();
        if let (IpAddr::V6(a), IpAddr::V6(b)) = (a, b) {
            pseudo.extend_from_slice(&a.octets());
            pseudo.extend_from_slice(&b.octets());
        }
        pseudo.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 6]);
        pseudo.extend_from_slice(&segment);
        assert_eq!(fold(sum_words(0, &pseudo)), 0);
        assert!(syn_segment(a, 1, TARGET, 2, 3).is_none());
    }

    fn ipv4_datagram(flags: u8, ack: u32) -> Vec<u8> {
        let mut datagram = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
        ];
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&6379u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        datagram.extend_from_slice(&tcp);
        datagram
    }

    #[test]
    fn replies_parse_by_flags() {
        let syn_ack = parse_ipv4_reply(&ipv4_datagram(FLAG_SYN | FLAG_ACK, 7)).expect("syn-ack");
        assert_eq!(
            syn_ack,
            Reply {
                from: TARGET,
                port: 6379,
                to_port: 40000,
                ack: 7,
                answer: Answer::SynAck
            }
        );
        let rst = parse_ipv4_reply(&ipv4_datagram(FLAG_RST | FLAG_ACK, 7)).expect("rst");
        assert_eq!(rst.answer, Answer::Rst);
        // A plain ACK, a SYN alone, a FIN: not answers to a SYN.
        assert_eq!(parse_ipv4_reply(&ipv4_datagram(FLAG_ACK, 7)), None);
        assert_eq!(parse_ipv4_reply(&ipv4_datagram(FLAG_SYN, 7)), None);
        assert_eq!(
            parse_ipv4_reply(&ipv4_datagram(FLAG_SYN | FLAG_ACK | FLAG_FIN, 7)),
            None
        );
    }

    /// An ICMP destination unreachable from 198.18.0.254 quoting our SYN to
    /// 198.18.0.2:6379 from port 40000 with sequence number 41.
    fn icmpv4_unreachable(code: u8) -> Vec<u8> {
        let mut datagram = vec![
            0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 254, 198, 18, 0, 1,
        ];
        datagram.extend_from_slice(&[3, code, 0, 0, 0, 0, 0, 0]);
        datagram.extend_from_slice(
            &ipv4_syn(
                Ipv4Addr::new(198, 18, 0, 1),
                40000,
                Ipv4Addr::new(198, 18, 0, 2),
                6379,
                41,
            )[..28],
        );
        datagram
    }

    #[test]
    fn icmp_errors_quoting_a_syn_answer_it() {
        let expected = Reply {
            from: TARGET,
            port: 6379,
            to_port: 40000,
            ack: 42,
            answer: Answer::Unreachable,
        };
        for code in [0, 1, 2, 3, 9, 10, 13] {
            assert_eq!(
                parse_icmpv4_unreachable(&icmpv4_unreachable(code)),
                Some(expected),
                "code {code}"
            );
        }
        // Fragmentation needed, source route failed: not a refusal.
        assert_eq!(parse_icmpv4_unreachable(&icmpv4_unreachable(4)), None);
        // Another ICMP type (time exceeded), or a quoted UDP datagram.
        let mut other = icmpv4_unreachable(3);
        other[20] = 11;
        assert_eq!(parse_icmpv4_unreachable(&other), None);
        let mut udp = icmpv4_unreachable(3);
        udp[28 + 9] = 17;
        assert_eq!(parse_icmpv4_unreachable(&udp), None);
        let whole = icmpv4_unreachable(3);
        for cut in 0..whole.len() {
            assert_eq!(
                parse_icmpv4_unreachable(&whole[..cut]),
                None,
                "cut at {cut}"
            );
        }

        // ICMPv6: administratively prohibited, quoting the IPv6 header and SYN.
        let scanner: Ipv6Addr = "fd00:198:18::1".parse().expect("v6");
        let target: Ipv6Addr = "fd00:198:18::2".parse().expect("v6");
        let mut message = vec![1, 1, 0, 0, 0, 0, 0, 0];
        let mut header = [0u8; 40];
        header[0] = 0x60;
        header[6] = 6;
        header[8..24].copy_from_slice(&scanner.octets());
        header[24..40].copy_from_slice(&target.octets());
        message.extend_from_slice(&header);
        message.extend_from_slice(
            &syn_segment(IpAddr::V6(scanner), 40000, IpAddr::V6(target), 22, 7).expect("v6")[..8],
        );
        assert_eq!(
            parse_icmpv6_unreachable(&message),
            Some(Reply {
                from: IpAddr::V6(target),
                port: 22,
                to_port: 40000,
                ack: 8,
                answer: Answer::Unreachable,
            })
        );
        let mut packet_too_big = message.clone();
        packet_too_big[0] = 2;
        assert_eq!(parse_icmpv6_unreachable(&packet_too_big), None);
        for cut in 0..message.len() {
            assert_eq!(
                parse_icmpv6_unreachable(&message[..cut]),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_datagrams_are_none() {
        let good = ipv4_datagram(FLAG_RST, 0);
        assert!(parse_ipv4_reply(&good).is_some());
        for cut in 0..good.len() {
            assert_eq!(parse_ipv4_reply(&good[..cut]), None, "cut at {cut}");
        }
        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(parse_ipv4_reply(&v6), None);
        let mut short_header = good.clone();
        short_header[0] = 0x44;
        assert_eq!(parse_ipv4_reply(&short_header), None);
        let mut udp = good.clone();
        udp[9] = 17;
        assert_eq!(parse_ipv4_reply(&udp), None);
        let mut fragment = good;
        fragment[7] = 1;
        assert_eq!(parse_ipv4_reply(&fragment), None);
    }

    #[test]
    fn cookies_depend_on_every_part_and_the_secret() {
        let cookies = Cookies::new();
        let seq = cookies.seq(TARGET, 80, 40000);
        assert_eq!(cookies.seq(TARGET, 80, 40000), seq);
        assert_ne!(cookies.seq(TARGET, 81, 40000), seq);
        assert_ne!(cookies.seq(SCANNER, 80, 40000), seq);
        assert_ne!(cookies.seq(TARGET, 80, 40001), seq);
        assert_ne!(Cookies::new().seq(TARGET, 80, 40000), seq);
    }

    proptest::proptest! {
        /// Hostile bytes never panic the reply parsers, and what parses is a
        /// SYN-ACK or a RST with the bytes' own ports.
        #[test]
        fn any_bytes_parse_or_not_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            if let Some(reply) = parse_ipv4_reply(&bytes) {
                let header_len = usize::from(bytes[0] & 0x0f) * 4;
                proptest::prop_assert!(bytes.len() >= header_len + 20);
                proptest::prop_assert_eq!(reply.port, u16::from_be_bytes([bytes[header_len], bytes[header_len + 1]]));
            }
            if let Some(reply) = parse_tcp_reply(TARGET, &bytes) {
                proptest::prop_assert_eq!(reply.to_port, u16::from_be_bytes([bytes[2], bytes[3]]));
            }
            for reply in [parse_icmpv4_unreachable(&bytes), parse_icmpv6_unreachable(&bytes)].into_iter().flatten() {
                proptest::prop_assert_eq!(reply.answer, Answer::Unreachable);
            }
        }

        /// Every SYN built checksums to zero with its pseudo-header, whatever
        /// the addresses, ports and sequence number.
        #[test]
        fn every_syn_checksums(a in proptest::prelude::any::<[u8; 4]>(), b in proptest::prelude::any::<[u8; 4]>(), sport in 1u16.., dport in 1u16.., seq in proptest::prelude::any::<u32>()) {
            let (a, b) = (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)));
            let segment = syn_segment(a, sport, b, dport, seq).expect("v4");
            proptest::prop_assert_eq!(tcp_checksum(a, b, &segment), Some(0));
        }
    }
}
