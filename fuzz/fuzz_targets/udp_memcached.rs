#![no_main]
//! memcached's UDP frame header and the first datagram's text.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::udp::memcached;

fuzz_target!(|input: (u16, &[u8])| {
    let (id, bytes) = input;
    if let Some(frame) = memcached::parse_frame(bytes) {
        assert!(frame.sequence < frame.total);
        let _ = memcached::parse_body(frame.body);
    }
    perimeter_fuzz::check(&memcached::identify(id, bytes));
    let _ = memcached::looks_like_reply(bytes);
});
