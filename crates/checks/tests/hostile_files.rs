//! No file of arbitrary bytes panics the approvals or environments parser:
//! each is read from a real file through the same path the CLI uses
//! (`load`), from raw bytes and from TOML-shaped noise that reaches deeper
//! into the parsers than random bytes do.

use std::io::Write;

use perimeter_checks::{approvals, environments};
use proptest::prelude::*;

/// TOML-ish text: keys the parsers know, tables, values of every type.
fn tomlish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("version = 1".to_owned()),
        Just("example = true".to_owned()),
        Just("[[listener]]".to_owned()),
        Just("[[environment]]".to_owned()),
        Just("[monitor]".to_owned()),
        "(protocol|address|scope|port|exe|package|user|unowned|approved_by|approved_at|reason|expires|netns|name|kind|ranges|hosts|public_ports|allow_from|owner) = (\"[a-z0-9:./%-]{0,12}\"|[0-9]{1,6}|-1|true|2026-1[0-2]-[0-3][0-9]|\\[\"[0-9./:a-f]{0,20}\"\\]|\\{\\}|\\[\\])".prop_map(|s| s),
        "[ -~]{0,40}",
    ];
    proptest::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

fn load_both(bytes: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write");
    let _ = approvals::load(file.path(), false);
    let _ = environments::load(file.path(), false);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = approvals::parse_approvals(text, file.path());
        let _ = environments::parse_environments(text, file.path());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        load_both(&bytes);
    }

    #[test]
    fn toml_shaped_noise_never_panics(text in tomlish()) {
        load_both(text.as_bytes());
        // With a byte-order mark and CRLF endings too.
        let crlf = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        load_both(crlf.as_bytes());
    }
}
