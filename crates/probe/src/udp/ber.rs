//! The subset of BER (ITU-T X.690 §8) that SNMP v1/v2c messages use: single
//! octet tags, definite lengths, INTEGER, OCTET STRING, NULL, OBJECT
//! IDENTIFIER, SEQUENCE and the application and context tags of RFC 1157 and
//! RFC 3416. Encoding writes minimal definite lengths (X.690 §10.1, the DER
//! rule, which every BER reader accepts).
//!
//! Written by hand rather than taken from a crate: SNMP needs a dozen types, the
//! hostile-input rules here (no indefinite lengths, no high tag numbers, a
//! length cap, a depth cap, an arc cap) are the whole point, and a general ASN.1
//! crate would have to be fenced in to the same rules anyway.

/// The deepest nesting [`decode_tree`] follows. An SNMP message nests five
/// deep (message, PDU, varbind list, varbind, value).
pub const MAX_DEPTH: usize = 8;
/// The most TLVs [`decode_tree`] keeps from one buffer.
pub const MAX_NODES: usize = 512;
/// The most sub-identifiers in an OID (RFC 2578 §3.5 allows 128).
pub const MAX_OID_ARCS: usize = 128;
/// The longest value accepted; a UDP datagram cannot carry more.
pub const MAX_LENGTH: usize = 65_535;

/// Tags (X.690 §8.1.2: class, constructed bit, number).
pub mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    /// Application types of RFC 2578 §7.1 (SMIv2) and RFC 1155.
    pub const IP_ADDRESS: u8 = 0x40;
    pub const COUNTER32: u8 = 0x41;
    pub const GAUGE32: u8 = 0x42;
    pub const TIMETICKS: u8 = 0x43;
    pub const OPAQUE: u8 = 0x44;
    pub const COUNTER64: u8 = 0x46;
    /// The v2 exceptions in a varbind's value (RFC 3416 §3).
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    pub const END_OF_MIB_VIEW: u8 = 0x82;
    /// PDU tags (RFC 3416 §3, context-specific constructed).
    pub const GET_REQUEST: u8 = 0xa0;
    pub const GET_NEXT_REQUEST: u8 = 0xa1;
    pub const RESPONSE: u8 = 0xa2;
    pub const SET_REQUEST: u8 = 0xa3;
    pub const TRAP_V1: u8 = 0xa4;
    pub const REPORT: u8 = 0xa8;
}

/// Reads one TLV from the start of `buf`: its tag, its value, and what follows
/// it. `None` for a high tag number (low five bits all set, X.690 §8.1.2.4),
/// an indefinite length (0x80, §8.1.3.6), a length of more than four octets or
/// over [`MAX_LENGTH`], or a value longer than what is left.
pub fn read_tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0x00..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let bytes = rest.get(..n)?;
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest.get(n..)?)
        }
        _ => return None,
    };
    if len > MAX_LENGTH {
        return None;
    }
    let value = rest.get(..len)?;
    Some((tag, value, rest.get(len..)?))
}

/// Reads a TLV that must carry `expected` as its tag.
pub fn expect_tlv(buf: &[u8], expected: u8) -> Option<(&[u8], &[u8])> {
    let (tag, value, rest) = read_tlv(buf)?;
    (tag == expected).then_some((value, rest))
}

/// A two's-complement INTEGER of one to eight octets (X.690 §8.3).
pub fn decode_integer(value: &[u8]) -> Option<i64> {
    if value.is_empty() || value.len() > 8 {
        return None;
    }
    let first = *value.first()?;
    let init: i64 = if first & 0x80 != 0 { -1 } else { 0 };
    Some(value.iter().fold(init, |acc, &b| (acc << 8) | i64::from(b)))
}

/// An unsigned application integer (Counter32, Gauge32, TimeTicks, Counter64):
/// BER writes them as INTEGER contents, so a value with the top bit set gets a
/// leading zero octet, up to nine octets for a Counter64.
pub fn decode_unsigned(value: &[u8]) -> Option<u64> {
    let value = match value {
        [0, rest @ ..] if rest.len() == 8 => rest,
        _ => value,
    };
    if value.is_empty() || value.len() > 8 {
        return None;
    }
    Some(value.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// An OBJECT IDENTIFIER (X.690 §8.19): the first octet-group holds the first
/// two arcs as `40 * first + second`, each later arc is base-128 with the high
/// bit marking continuation. `None` for an empty value, an arc over 32 bits,
/// an arc cut off at the end, or more than [`MAX_OID_ARCS`] arcs.
pub fn decode_oid(value: &[u8]) -> Option<Vec<u32>> {
    if value.is_empty() {
        return None;
    }
    let mut arcs = Vec::with_capacity(value.len().min(MAX_OID_ARCS) + 1);
    let mut current: u64 = 0;
    let mut in_arc = false;
    for &byte in value {
        current = (current << 7) | u64::from(byte & 0x7f);
        if current > u64::from(u32::MAX) {
            return None;
        }
        in_arc = byte & 0x80 != 0;
        if !in_arc {
            if arcs.is_empty() {
                let (first, second) = match current {
                    0..=39 => (0, current),
                    40..=79 => (1, current - 40),
                    _ => (2, current - 80),
                };
                arcs.push(first);
                arcs.push(u32::try_from(second).ok()?);
            } else {
                arcs.push(u32::try_from(current).ok()?);
            }
            if arcs.len() > MAX_OID_ARCS {
                return None;
            }
            current = 0;
        }
    }
    (!in_arc).then_some(arcs)
}

/// An OID as dotted text.
pub fn oid_text(arcs: &[u32]) -> String {
    arcs.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Appends a TLV with a minimal definite length (X.690 §8.1.3.3-5).
pub fn encode_tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(value);
}

/// The contents of an INTEGER in the fewest octets (X.690 §8.3.2).
pub fn encode_integer(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    // Drop a leading octet while the next one carries the same sign.
    while start < 7 {
        let (Some(&this), Some(&next)) = (bytes.get(start), bytes.get(start + 1)) else {
            break;
        };
        if (this == 0x00 && next & 0x80 == 0) || (this == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes.get(start..).unwrap_or_default().to_vec()
}

/// The contents of an OID (X.690 §8.19). `None` when there are fewer than two
/// arcs, the first is over 2, or the second is 40 or more under a first of 0
/// or 1.
pub fn encode_oid(arcs: &[u32]) -> Option<Vec<u8>> {
    let (&first, rest) = arcs.split_first()?;
    let (&second, rest) = rest.split_first()?;
    if first > 2 || (first < 2 && second >= 40) {
        return None;
    }
    let mut out = Vec::with_capacity(arcs.len() * 2);
    let head = u64::from(first) * 40 + u64::from(second);
    for arc in std::iter::once(head).chain(rest.iter().map(|&a| u64::from(a))) {
        let mut groups = [0u8; 10];
        let mut n = 0;
        let mut left = arc;
        loop {
            if let Some(slot) = groups.get_mut(n) {
                *slot = (left & 0x7f) as u8;
            }
            n += 1;
            left >>= 7;
            if left == 0 {
                break;
            }
        }
        for idx in (0..n).rev() {
            let group = groups.get(idx).copied().unwrap_or_default();
            out.push(if idx == 0 { group } else { group | 0x80 });
        }
    }
    Some(out)
}

/// A decoded TLV, for checking encodings and for fuzzing the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Primitive { tag: u8, value: Vec<u8> },
    Constructed { tag: u8, children: Vec<Node> },
}

/// Decodes every TLV in `buf` as a tree, constructed tags (bit 0x20) recursed
/// into, at most [`MAX_DEPTH`] deep and [`MAX_NODES`] in all. `None` when any
/// TLV does not read, the depth or count cap is passed, or bytes are left over.
pub fn decode_tree(buf: &[u8]) -> Option<Vec<Node>> {
    let mut n_nodes = 0;
    decode_level(buf, 0, &mut n_nodes)
}

fn decode_level(mut buf: &[u8], depth: usize, n_nodes: &mut usize) -> Option<Vec<Node>> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let mut nodes = Vec::new();
    while !buf.is_empty() {
        let (tag, value, rest) = read_tlv(buf)?;
        *n_nodes += 1;
        if *n_nodes > MAX_NODES {
            return None;
        }
        nodes.push(if tag & 0x20 != 0 {
            Node::Constructed {
                tag,
                children: decode_level(value, depth + 1, n_nodes)?,
            }
        } else {
            Node::Primitive {
                tag,
                value: value.to_vec(),
            }
        });
        buf = rest;
    }
    Some(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_in_minimal_form() {
        for (value, bytes) in [
            (0i64, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x00, 0x80]),
            (256, &[0x01, 0x00]),
            (-1, &[0xff]),
            (-128, &[0x80]),
            (-129, &[0xff, 0x7f]),
            (i64::MAX, &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            (i64::MIN, &[0x80, 0, 0, 0, 0, 0, 0, 0]),
        ] {
            assert_eq!(encode_integer(value), bytes, "{value}");
            assert_eq!(decode_integer(bytes), Some(value), "{value}");
        }
        assert_eq!(decode_integer(&[]), None);
        assert_eq!(decode_integer(&[1; 9]), None);
        assert_eq!(
            decode_unsigned(&[0x00, 0xff, 0xff, 0xff, 0xff]),
            Some(0xffff_ffff)
        );
        assert_eq!(
            decode_unsigned(&[0, 0xff, 0, 0, 0, 0, 0, 0, 1]),
            Some(0xff00_0000_0000_0001)
        );
        assert_eq!(decode_unsigned(&[1; 9]), None);
    }

    #[test]
    fn oids_round_trip() {
        let sys_descr = [1, 3, 6, 1, 2, 1, 1, 1, 0];
        let encoded = encode_oid(&sys_descr);
        assert_eq!(
            encoded.as_deref(),
            Some(&[0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00][..])
        );
        assert_eq!(
            decode_oid(&encoded.unwrap_or_default()),
            Some(sys_descr.to_vec())
        );
        // Multi-octet arcs, and the 2.x arc that absorbs more than 40.
        let big = [2, 999, 4_294_967_295, 128];
        let encoded = encode_oid(&big).unwrap_or_default();
        assert_eq!(decode_oid(&encoded), Some(big.to_vec()));
        assert_eq!(oid_text(&big), "2.999.4294967295.128");
        assert_eq!(encode_oid(&[3, 1]), None);
        assert_eq!(encode_oid(&[1, 40]), None);
        assert_eq!(encode_oid(&[1]), None);
        // An arc cut off, an arc past 32 bits, too many arcs.
        assert_eq!(decode_oid(&[0x2b, 0x86]), None);
        assert_eq!(decode_oid(&[0x2b, 0x90, 0x80, 0x80, 0x80, 0x00]), None);
        assert_eq!(decode_oid(&[0x2b; MAX_OID_ARCS + 1]), None);
    }

    #[test]
    fn lengths_are_definite_capped_and_checked() {
        let mut out = Vec::new();
        encode_tlv(tag::OCTET_STRING, &[7; 200], &mut out);
        assert_eq!(out.get(..3), Some(&[0x04, 0x81, 200][..]));
        assert_eq!(
            read_tlv(&out).map(|(t, v, r)| (t, v.len(), r.len())),
            Some((4, 200, 0))
        );
        let mut out = Vec::new();
        encode_tlv(tag::OCTET_STRING, &[7; 300], &mut out);
        assert_eq!(out.get(..4), Some(&[0x04, 0x82, 0x01, 0x2c][..]));
        // Indefinite, too many length octets, longer than the buffer, high tag.
        assert_eq!(read_tlv(&[0x30, 0x80, 0, 0]), None);
        assert_eq!(read_tlv(&[0x04, 0x85, 0, 0, 0, 0, 1, 0]), None);
        assert_eq!(read_tlv(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(read_tlv(&[0x04, 0x05, 1, 2]), None);
        assert_eq!(read_tlv(&[0x1f, 0x01, 0x00]), None);
    }

    #[test]
    fn trees_are_depth_and_count_capped() {
        let mut nested = vec![0x05, 0x00];
        for _ in 0..MAX_DEPTH - 1 {
            let mut outer = Vec::new();
            encode_tlv(tag::SEQUENCE, &nested, &mut outer);
            nested = outer;
        }
        assert!(decode_tree(&nested).is_some());
        let mut outer = Vec::new();
        encode_tlv(tag::SEQUENCE, &nested, &mut outer);
        assert_eq!(decode_tree(&outer), None);
        let many = [0x05, 0x00].repeat(MAX_NODES + 1);
        assert_eq!(decode_tree(&many), None);
        assert_eq!(decode_tree(&[0x05, 0x00, 0x05]), None);
    }
}
