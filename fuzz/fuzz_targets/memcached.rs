#![no_main]
//! memcached answers and the memcached probe.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::memcached;

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>, bool)| {
    let (bytes, answers, timed_out) = input;
    let _ = memcached::parse_answer(&bytes);
    perimeter_fuzz::drive(&mut memcached::MemcachedProbe::new(), &answers, timed_out);
});
