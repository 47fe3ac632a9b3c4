#![no_main]
//! NTP: mode 4 server replies, mode 6 control messages and their variable
//! text, mode 7 private replies, and the three identifications.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::udp::ntp;

fuzz_target!(|input: (u16, &[u8])| {
    let (id, bytes) = input;
    let _ = ntp::parse_server_reply(bytes);
    if let Some(control) = ntp::parse_control(bytes) {
        assert!(control.data.len() <= ntp::MAX_CONTROL_DATA);
        assert!(ntp::parse_variables(&control.data).len() <= ntp::MAX_VARIABLES);
    }
    let _ = ntp::parse_private(bytes);
    perimeter_fuzz::check(&ntp::identify_client(id, bytes));
    perimeter_fuzz::check(&ntp::identify_readvar(id, bytes));
    perimeter_fuzz::check(&ntp::identify_monlist(bytes));
    let _ = ntp::looks_like_reply(bytes);
});
