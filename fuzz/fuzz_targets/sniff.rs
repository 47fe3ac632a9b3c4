#![no_main]
//! `sniff` on any answer.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let found = perimeter_probe::sniff(bytes);
    if let Some(found) = &found {
        assert!(found.findings.is_empty());
    }
    perimeter_fuzz::check(&found);
});
