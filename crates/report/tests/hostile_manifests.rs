//! No text panics the manifest parser: arbitrary strings, and JSON shaped
//! like a manifest with hostile values.

use perimeter_report::inventory::manifest::parse_manifest;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,2000}") {
        let _ = parse_manifest(&text);
    }

    #[test]
    fn manifest_shaped_json_never_panics(
        schema in "perimeter\\.manifest/[0-9]{0,3}",
        name in ".{0,20}",
        version in ".{0,10}",
        n in 0usize..5,
    ) {
        let package = serde_json::json!({
            "manager": "dpkg", "name": name, "version": version,
            "arch": null, "origin": null, "status": "installed"
        });
        let doc = serde_json::json!({
            "schema": schema, "hostname": "h", "created_at": "x", "perimeter_version": "0",
            "root": "/", "verified": false, "packages": vec![package; n],
            "conffiles": [], "unowned_files": [], "units": []
        });
        if let Ok(manifest) = parse_manifest(&doc.to_string()) {
            let _ = manifest.duplicate_packages();
        }
    }
}
