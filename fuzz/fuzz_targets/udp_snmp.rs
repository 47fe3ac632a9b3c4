#![no_main]
//! BER and SNMP: the TLV reader as a tree (re-encoded and re-decoded: same
//! tree), OIDs and integers (re-encoded: same value), and v1/v2c messages.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::udp::{ber, snmp};

fn encode(nodes: &[ber::Node], out: &mut Vec<u8>) {
    for node in nodes {
        match node {
            ber::Node::Primitive { tag, value } => ber::encode_tlv(*tag, value, out),
            ber::Node::Constructed { tag, children } => {
                let mut inner = Vec::new();
                encode(children, &mut inner);
                ber::encode_tlv(*tag, &inner, out);
            }
        }
    }
}

fuzz_target!(|input: (u16, &[u8])| {
    let (id, bytes) = input;
    if let Some(tree) = ber::decode_tree(bytes) {
        let mut again = Vec::new();
        encode(&tree, &mut again);
        assert_eq!(ber::decode_tree(&again), Some(tree));
    }
    if let Some(arcs) = ber::decode_oid(bytes) {
        assert!(arcs.len() <= ber::MAX_OID_ARCS);
        if let Some(encoded) = ber::encode_oid(&arcs) {
            assert_eq!(ber::decode_oid(&encoded), Some(arcs));
        }
    }
    if let Some(value) = ber::decode_integer(bytes) {
        assert_eq!(ber::decode_integer(&ber::encode_integer(value)), Some(value));
    }
    if let Some(response) = snmp::parse_message(bytes) {
        assert!(response.varbinds.len() <= snmp::MAX_VARBINDS);
        assert!(response.community.len() <= snmp::MAX_COMMUNITY);
    }
    perimeter_fuzz::check(&snmp::identify(snmp::Version::V1, id, bytes));
    perimeter_fuzz::check(&snmp::identify(snmp::Version::V2c, id, bytes));
    let _ = snmp::looks_like_reply(bytes);
});
