//! HTML text made safe, and the frame every page shares.
//!
//! Everything a page shows that came from an agent (hostnames, process names,
//! executables, findings) or from a person (reasons, user names) goes through
//! [`Esc`] (or [`escape`]): the five characters that mean something in HTML
//! text and in quoted attributes become entities, and characters that would
//! deceive a reader (C0 and C1 controls, bidirectional overrides, zero-width
//! marks) are shown as `\u{..}` escapes instead of acting. Pages build their
//! HTML with `write!` into a `String`, so there is no template language whose
//! escaping rules a reader must know.

use std::fmt::{self, Write as _};

use time::OffsetDateTime;

/// Text that is escaped as it is written: `write!(out, "<td>{}</td>", Esc(name))`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Esc<'a>(pub(crate) &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(index) = rest.find(needs_escape) {
            let (plain, tail) = rest.split_at(index);
            f.write_str(plain)?;
            let mut chars = tail.chars();
            let Some(c) = chars.next() else { break };
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                other => write!(f, "\\u{{{:x}}}", u32::from(other))?,
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

/// Whether `c` is written otherwise than as itself. Newlines and tabs stay:
/// evidence has several lines, and `<pre>` shows them.
fn needs_escape(c: char) -> bool {
    matches!(c, '&' | '<' | '>' | '"' | '\'')
        || (c.is_control() && c != '\n' && c != '\t')
        // Bidirectional embeddings, overrides and isolates (the "Trojan
        // Source" characters), zero-width marks and the BOM: they change what
        // a reader sees without being seen.
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text`, escaped.
#[cfg(test)]
pub(crate) fn escape(text: &str) -> String {
    Esc(text).to_string()
}

/// A value for a URL's query string or path segment: everything but
/// unreserved characters percent-encoded.
pub(crate) fn url_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A time as the page shows it: UTC, to the minute, inside `<time>` with its
/// RFC 3339 form, which app.js turns into the reader's time zone.
pub(crate) fn time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let machine = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    format!(
        "<time datetime=\"{}\">{:04}-{:02}-{:02} {:02}:{:02} UTC</time>",
        Esc(&machine),
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

/// How long ago, in words a person reads at a glance.
pub(crate) fn age(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (now - at).whole_seconds();
    match seconds {
        ..=-60 => "in the future".to_owned(),
        -59..=59 => "just now".to_owned(),
        60..=3_599 => format!("{} min ago", seconds / 60),
        3_600..=172_799 => format!("{} h ago", seconds / 3_600),
        _ => format!("{} days ago", seconds / 86_400),
    }
}

/// Who is reading, for the frame: their name, role and the session's CSRF
/// token (the logout form needs it).
pub(crate) struct Reader<'a> {
    pub(crate) user: &'a str,
    pub(crate) role: &'a str,
    pub(crate) csrf: &'a str,
}

/// The page around `body`: the header with the navigation and the reader,
/// the stylesheet and the script (both from /static, as the CSP requires).
pub(crate) fn page(title: &str, current: &str, reader: Option<&Reader<'_>>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · perimeter</title>\
         <link rel=\"stylesheet\" href=\"/static/style.css\">\
         <link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\">\
         <script src=\"/static/app.js\" defer></script></head><body>",
        Esc(title)
    );
    out.push_str("<header class=\"top\"><a class=\"brand\" href=\"/\">perimeter</a>");
    if let Some(reader) = reader {
        out.push_str("<nav>");
        for (href, label) in [
            ("/", "Overview"),
            ("/approvals", "Approvals"),
            ("/exposure", "Exposure"),
            ("/alerts", "Alerts"),
            ("/changes", "Changes"),
            ("/trends", "Trends"),
        ] {
            let here = if href == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{here}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><form class=\"who\" method=\"post\" action=\"/logout\">\
             <span>{} <small>({})</small></span>\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            Esc(reader.user),
            Esc(reader.role),
            Esc(reader.csrf)
        );
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        let cases = [
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            (
                "\"><img src=x onerror=alert(1)>",
                "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
            ),
            ("' onmouseover='x", "&#39; onmouseover=&#39;x"),
            ("a & b &amp;", "a &amp; b &amp;amp;"),
            (
                "bell\u{7}esc\u{1b}[31mnul\u{0}",
                "bell\\u{7}esc\\u{1b}[31mnul\\u{0}",
            ),
            ("c1\u{85}del\u{7f}", "c1\\u{85}del\\u{7f}"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("line one\nline\ttwo", "line one\nline\ttwo"),
            ("plain /usr/sbin/sshd é 世界", "plain /usr/sbin/sshd é 世界"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(escape(input), expected, "escaping {input:?}");
            let escaped = escape(input);
            assert!(!escaped.contains(['<', '>', '"', '\'']), "{escaped}");
        }
    }

    #[test]
    fn url_components_are_percent_encoded() {
        assert_eq!(url_component("ag_0a1b"), "ag_0a1b");
        assert_eq!(url_component("a b&c=<d>/é"), "a%20b%26c%3D%3Cd%3E%2F%C3%A9");
        assert_eq!(url_component("\"'"), "%22%27");
    }

    #[test]
    fn the_frame_escapes_the_title_and_the_reader() {
        let reader = Reader {
            user: "<b>mallory</b>",
            role: "viewer",
            csrf: "\"x",
        };
        let html = page("<i>t</i>", "/", Some(&reader), "<p>body</p>");
        assert!(html.contains("<title>&lt;i&gt;t&lt;/i&gt; · perimeter</title>"));
        assert!(html.contains("&lt;b&gt;mallory&lt;/b&gt;"));
        assert!(html.contains("value=\"&quot;x\""));
        assert!(!html.contains("<b>mallory"));
        assert!(html.contains("<p>body</p>"));
        // No inline script: the CSP allows scripts from /static only.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script src=\"/static/app.js\" defer></script>"));
    }

    #[test]
    fn times_and_ages() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        assert_eq!(
            time(at),
            "<time datetime=\"2023-11-14T22:13:20Z\">2023-11-14 22:13 UTC</time>"
        );
        let now = at + time::Duration::minutes(5);
        assert_eq!(age(at, now), "5 min ago");
        assert_eq!(age(at, at), "just now");
        assert_eq!(age(at, at + time::Duration::days(3)), "3 days ago");
        assert_eq!(age(at + time::Duration::hours(1), at), "in the future");
    }
}
