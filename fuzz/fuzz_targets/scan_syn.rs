#![no_main]
//! The SYN scan's readers of raw-socket bytes: TCP answers (IPv4 datagrams
//! and bare segments) and ICMP errors quoting a SYN. What parses carries the
//! ports found at their places in the bytes; nothing panics.

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use perimeter_scan::syn::codec::{
    Answer, parse_icmpv4_unreachable, parse_icmpv6_unreachable, parse_ipv4_reply, parse_tcp_reply,
};

fuzz_target!(|bytes: &[u8]| {
    if let Some(reply) = parse_ipv4_reply(bytes) {
        let header_len = usize::from(bytes[0] & 0x0f) * 4;
        assert_eq!(
            reply.port,
            u16::from_be_bytes([bytes[header_len], bytes[header_len + 1]])
        );
        assert_ne!(reply.answer, Answer::Unreachable);
    }
    if let Some(reply) = parse_tcp_reply(IpAddr::V4(Ipv4Addr::LOCALHOST), bytes) {
        assert_eq!(reply.to_port, u16::from_be_bytes([bytes[2], bytes[3]]));
    }
    for reply in [
        parse_icmpv4_unreachable(bytes),
        parse_icmpv6_unreachable(bytes),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(reply.answer, Answer::Unreachable);
    }
});
