#![no_main]
//! How the audit reads a Redis instance's answer to an unauthenticated PING
//! (`host::redis::conversation::classify_ping`) on whatever reply the RESP parser makes of
//! the bytes: what it quotes of an unexpected answer is cut short.

use libfuzzer_sys::fuzz_target;
use perimeter_host::redis::conversation::classify_ping;
use perimeter_model::RedisAuth;
use perimeter_probe::redis;

/// "PING answered -" and the 80 characters kept of the answer.
const MAX_QUOTE_CHARS: usize = 15 + 80;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Some((reply, _))) = redis::parse_reply(bytes)
        && let RedisAuth::NotRedis(quote) = classify_ping(&reply)
    {
        assert!(quote.chars().count() <= MAX_QUOTE_CHARS, "{quote}");
    }
});
