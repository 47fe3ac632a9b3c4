//! Turning hostile bytes into short printable text: banners, product names,
//! versions and other values a probe puts into a `ServiceInfo`. Also the small
//! bounded byte-scanning helpers every protocol module shares.
//!
//! Nothing a peer sends reaches a report unescaped or uncapped: control bytes and
//! non-ASCII are written as escapes, so a banner cannot smuggle terminal escape
//! sequences or megabytes of text into a table.

/// The most characters a banner keeps (`ServiceInfo::banner`).
pub const MAX_BANNER_CHARS: usize = 256;

/// The most characters any other value (product, version, extra) keeps.
pub const MAX_VALUE_CHARS: usize = 128;

/// A banner: printable ASCII kept, `\r`, `\n` and `\t` written as those escapes,
/// any other byte as `\xNN`, capped at [`MAX_BANNER_CHARS`] characters.
pub fn banner(bytes: &[u8]) -> String {
    escape(bytes, MAX_BANNER_CHARS)
}

/// A value for a product, version or extra field: surrounding whitespace
/// trimmed, then escaped and capped like a banner at [`MAX_VALUE_CHARS`].
pub fn value(text: &str) -> String {
    escape(text.trim().as_bytes(), MAX_VALUE_CHARS)
}

/// Like [`value`], for bytes that may not be UTF-8.
pub fn value_bytes(bytes: &[u8]) -> String {
    escape(bytes.trim_ascii(), MAX_VALUE_CHARS)
}

/// Escapes `bytes` into printable ASCII of at most `max_chars` characters. An
/// escape is never cut in half: the output stops before one that would not fit.
pub fn escape(bytes: &[u8], max_chars: usize) -> String {
    let mut out = String::with_capacity(max_chars.min(bytes.len().saturating_mul(4)));
    for &byte in bytes {
        let piece: std::borrow::Cow<'static, str> = match byte {
            b'\r' => "\\r".into(),
            b'\n' => "\\n".into(),
            b'\t' => "\\t".into(),
            b'\\' => "\\\\".into(),
            0x20..=0x7e => char::from(byte).to_string().into(),
            _ => format!("\\x{byte:02x}").into(),
        };
        if out.len() + piece.len() > max_chars {
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// The position of `needle` in `haystack`, if any.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Like [`find`], ignoring ASCII case.
pub fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

/// Whether `haystack` starts with `prefix`, ignoring ASCII case.
pub fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Splits `bytes` into complete lines (ending in `\n`, with a `\r` before it
/// dropped), at most `max_lines` of them. The unterminated rest is not returned.
pub fn complete_lines(bytes: &[u8], max_lines: usize) -> Vec<&[u8]> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|line| line.ends_with(b"\n"))
        .take(max_lines)
        .map(|line| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            line.strip_suffix(b"\r").unwrap_or(line)
        })
        .collect()
}

/// The first line of `bytes` (up to `\r` or `\n`), whether or not it is complete.
pub fn first_line(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(bytes)
}

/// Splits `product/version` (or `product_version`) at the first separator.
pub fn split_product_version(token: &str, separator: char) -> (String, Option<String>) {
    match token.split_once(separator) {
        Some((product, version)) if !version.is_empty() => (value(product), Some(value(version))),
        _ => (value(token), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_escape_control_bytes_and_cap() {
        assert_eq!(banner(b"SSH-2.0-x\r\n"), "SSH-2.0-x\\r\\n");
        assert_eq!(banner(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(banner("caf\u{e9}".as_bytes()), "caf\\xc3\\xa9");
        let long = vec![b'a'; 1000];
        assert_eq!(banner(&long).len(), MAX_BANNER_CHARS);
        // An escape that does not fit is dropped whole, never cut.
        let mut near = vec![b'a'; MAX_BANNER_CHARS - 2];
        near.push(0xff);
        assert_eq!(banner(&near), "a".repeat(MAX_BANNER_CHARS - 2));
    }

    #[test]
    fn lines_and_search() {
        assert_eq!(complete_lines(b"a\r\nb\nc", 10), vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(complete_lines(b"a\nb\nc\n", 2).len(), 2);
        assert_eq!(first_line(b"220 hi\r\n250"), b"220 hi");
        assert_eq!(find(b"hello", b"ll"), Some(2));
        assert_eq!(find_ignore_case(b"<TITLE>", b"<title"), Some(0));
        assert!(starts_with_ignore_case(b"Http/1.1", b"HTTP/"));
        assert!(!starts_with_ignore_case(b"HT", b"HTTP/"));
        assert_eq!(
            split_product_version("nginx/1.22.1", '/'),
            ("nginx".to_string(), Some("1.22.1".to_string()))
        );
        assert_eq!(
            split_product_version("nginx", '/'),
            ("nginx".to_string(), None)
        );
    }
}
