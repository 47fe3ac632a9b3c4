#![no_main]
//! SSDP search responses (HTTPU headers) and the SERVER product split.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::udp::ssdp;

fuzz_target!(|bytes: &[u8]| {
    if let Some(response) = ssdp::parse_response(bytes) {
        assert!(response.headers.len() <= ssdp::MAX_HEADERS);
    }
    let _ = ssdp::server_product(&String::from_utf8_lossy(bytes));
    perimeter_fuzz::check(&ssdp::identify(bytes));
    let _ = ssdp::looks_like_reply(bytes);
});
