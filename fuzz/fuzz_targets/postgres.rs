#![no_main]
//! PostgreSQL backend messages and the startup probe (clear and over TLS).

use libfuzzer_sys::fuzz_target;
use perimeter_probe::postgres;

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>, bool)| {
    let (bytes, answers, timed_out) = input;
    if let Ok((messages, complete)) = postgres::parse_backend(&bytes) {
        let _ = postgres::identify(&messages, complete);
    }
    perimeter_fuzz::drive(&mut postgres::PostgresProbe::new(), &answers, timed_out);
});
