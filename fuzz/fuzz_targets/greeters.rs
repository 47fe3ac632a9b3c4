#![no_main]
//! Services that speak first: SSH, SMTP/FTP, MySQL, VNC parsers and the banner
//! probe.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::{BannerProbe, greeting, mysql, ssh, vnc};

fuzz_target!(|input: (Vec<u8>, bool, Vec<Vec<u8>>)| {
    let (bytes, at_end, answers) = input;
    if let Some(banner) = ssh::parse_banner(&bytes, at_end) {
        let _ = banner.service();
    }
    if let Some(reply) = greeting::parse_code_reply(&bytes) {
        let _ = greeting::service(greeting::classify(&reply), &reply, &bytes, None);
    }
    if let Ok(Some(found)) = mysql::parse_greeting(&bytes) {
        let _ = mysql::service(&found, &bytes);
    }
    if let Ok(Some(version)) = vnc::parse_version(&bytes) {
        let _ = vnc::parse_security(bytes.get(12..).unwrap_or_default(), version.client_reply());
    }
    perimeter_fuzz::drive(&mut BannerProbe::new(), &answers, at_end);
});
