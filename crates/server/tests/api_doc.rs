//! docs/api.md is the API's one page: every route the server serves under
//! /api/v1 is documented there, and every error code it answers is in the
//! page's table. Read from the sources, so a new endpoint or code without a
//! word in the page fails here.

use std::path::Path;

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn every_route_is_documented() {
    let routes = read("src/routes.rs");
    let doc = read("../../docs/api.md");
    let mut n = 0;
    for line in routes.lines() {
        let Some(rest) = line.trim().strip_prefix(".route(\"") else {
            continue;
        };
        let Some((path, _)) = rest.split_once('"') else {
            continue;
        };
        n += 1;
        let documented = format!("/api/v1{path}");
        assert!(
            doc.contains(&documented),
            "docs/api.md does not document {documented}"
        );
    }
    assert!(n >= 12, "only {n} routes found in routes.rs");
}

#[test]
fn every_error_code_is_documented() {
    let doc = read("../../docs/api.md");
    let mut codes = Vec::new();
    for source in [
        "src/routes.rs",
        "src/error.rs",
        "src/alerts.rs",
        "src/scan_jobs.rs",
    ] {
        let text = read(source);
        // ApiError::new(status, "code", ...) and ApiError::conflict("code", ...)
        for piece in text.split("ApiError::").skip(1) {
            let quoted = piece.split('"').nth(1);
            let is_code = piece.starts_with("new(") || piece.starts_with("conflict(");
            if let (true, Some(code)) = (is_code, quoted)
                && code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                codes.push(code.to_owned());
            }
        }
        for code in [
            "unauthenticated",
            "forbidden",
            "bad_request",
            "not_found",
            "internal",
            "unavailable",
        ] {
            if text.contains(&format!("\"{code}\"")) {
                codes.push(code.to_owned());
            }
        }
    }
    codes.sort();
    codes.dedup();
    assert!(codes.len() >= 10, "{codes:?}");
    for code in codes {
        assert!(
            doc.contains(&format!("| `{code}` |")),
            "docs/api.md's error table lacks `{code}`"
        );
    }
}
