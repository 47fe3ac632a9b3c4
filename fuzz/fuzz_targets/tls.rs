#![no_main]
//! Certificate reading and the TLS adapter fed hostile records.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::{HttpProbe, Tls, tls};

fuzz_target!(|input: (Vec<u8>, Vec<Vec<u8>>, bool)| {
    let (der, answers, timed_out) = input;
    let _ = tls::tls_info(&der);
    let mut probe = Tls::new("https", HttpProbe::new(), None);
    perimeter_fuzz::drive(&mut probe, &answers, timed_out);
});
