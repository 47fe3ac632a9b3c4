#![no_main]
//! The DNS-format family: DNS messages (names with compression, every record
//! type read), the recursion and version identifications, mDNS and NetBIOS
//! node status, all over the same datagram.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::udp::{dns, mdns, netbios};

fuzz_target!(|input: (u16, u16, &[u8])| {
    let (id, port, bytes) = input;
    if let Some(message) = dns::parse_message(bytes) {
        assert!(message.records.len() <= dns::MAX_RECORDS);
        assert!(message.questions.len() <= dns::MAX_QUESTIONS);
        assert!(message.end <= bytes.len());
        // A message read to its end reads the same again from its own bytes.
        if message.complete {
            assert_eq!(dns::parse_message(&bytes[..message.end]), Some(message.clone()));
        }
        let _ = dns::recursion_outcome(&message);
    }
    if let Some((_, end)) = dns::read_name(bytes, 0) {
        assert!(end <= bytes.len());
    }
    perimeter_fuzz::check(&dns::identify_recursion(id, bytes));
    perimeter_fuzz::check(&dns::identify_version(id, bytes));
    perimeter_fuzz::check(&mdns::identify(id, port, bytes));
    perimeter_fuzz::check(&netbios::identify(id, bytes));
});
