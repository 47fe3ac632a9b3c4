#![no_main]
//! RESP parsing (re-parsed from the bytes it consumed: same answer), INFO
//! parsing, and the Redis probe's conversation.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::redis;

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>, bool)| {
    let (bytes, answers, timed_out) = input;
    if let Ok(Some((reply, used))) = redis::parse_reply(&bytes) {
        assert!(used <= bytes.len());
        assert_eq!(redis::parse_reply(&bytes[..used]), Ok(Some((reply, used))));
    }
    let _ = redis::parse_info(&String::from_utf8_lossy(&bytes));
    perimeter_fuzz::drive(&mut redis::RedisProbe::new(), &answers, timed_out);
});
