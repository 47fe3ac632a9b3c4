#![no_main]
//! HTTP responses (heads, chunked and framed bodies, titles) and the HTTP
//! probe's follow-up conversations.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::http;

fuzz_target!(|input: (Vec<u8>, bool, Vec<Vec<u8>>, u16)| {
    let (bytes, at_end, answers, port) = input;
    if let Ok(Some(response)) = http::parse_response(&bytes, at_end) {
        assert!(response.headers.len() <= http::MAX_HEADERS);
        assert!(response.body.len() <= http::MAX_BODY);
        let _ = http::service(&response, &bytes);
    }
    let _ = http::html_title(&bytes);
    let mut probe = http::HttpProbe::new().with_port_hint(port);
    perimeter_fuzz::drive(&mut probe, &answers, at_end);
});
