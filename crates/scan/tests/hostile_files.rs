//! No targets file of arbitrary bytes, and no port list, panics its parser.

use std::io::Write;

use perimeter_scan::{PortSet, read_target_file};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_targets_file_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&bytes).expect("write");
        let _ = read_target_file(file.path());
    }

    #[test]
    fn target_shaped_lines_never_panic(lines in proptest::collection::vec("([0-9a-f:.%/-]{0,45}|[a-z0-9.-]{0,30}|# .{0,10})", 0..30)) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(lines.join("\n").as_bytes()).expect("write");
        let _ = read_target_file(file.path());
    }

    #[test]
    fn port_lists_never_panic(text in "[0-9,\\- a-z]{0,60}") {
        let _ = PortSet::parse(&text);
    }
}
