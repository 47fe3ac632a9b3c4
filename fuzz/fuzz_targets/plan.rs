#![no_main]
//! The whole identification plan for a port, every probe fed the same answers.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, Vec<Vec<u8>>, bool)| {
    let (port, answers, timed_out) = input;
    for mut probe in perimeter_probe::probes_for(port) {
        perimeter_fuzz::drive(probe.as_mut(), &answers, timed_out);
    }
});
