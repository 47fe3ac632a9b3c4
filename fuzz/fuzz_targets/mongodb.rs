#![no_main]
//! BSON decoding, MongoDB reply framing, and both MongoDB probes.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::{bson, mongodb};

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>, bool)| {
    let (bytes, answers, timed_out) = input;
    if let Ok((_, used)) = bson::decode(&bytes) {
        assert!(used <= bytes.len());
    }
    let _ = mongodb::parse_reply(&bytes, 64 * 1024);
    perimeter_fuzz::drive(&mut mongodb::MongoProbe::new(), &answers, timed_out);
    perimeter_fuzz::drive(&mut mongodb::MongoProbe::legacy(), &answers, timed_out);
});
