//! The "three-digit code" line protocols that greet first: SMTP (RFC 5321) and
//! FTP (RFC 959). Both send `220 text`, possibly over several `220-` lines, so one
//! reply parser serves both, and the greeting's words say which it is. When they
//! do not, an `EHLO` tells: an SMTP server answers `250`, an FTP server refuses
//! the unknown command. `EHLO` only introduces the client; nothing is sent
//! that changes the server.

use perimeter_model::{AuthState, ServiceInfo};

use crate::text;

/// The most lines kept from one multi-line reply.
const MAX_REPLY_LINES: usize = 64;

/// The `EHLO` sent to SMTP servers (and to ambiguous greeters). The name is in
/// the reserved `.invalid` domain so it can never be mistaken for a real host.
pub const EHLO: &[u8] = b"EHLO perimeter.invalid\r\n";

/// A complete reply: its code and the text of every line, sanitised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl CodeReply {
    fn joined(&self) -> String {
        self.lines.join(" ")
    }
}

/// Parses one reply: `NNN-text` lines up to the `NNN text` (or bare `NNN`) line
/// that ends it. `None`: incomplete, or not such a reply.
pub fn parse_code_reply(buf: &[u8]) -> Option<CodeReply> {
    let mut lines = Vec::new();
    let mut code = None;
    for line in text::complete_lines(buf, MAX_REPLY_LINES) {
        let digits = line.get(..3)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            // RFC 959 lets FTP multi-line replies carry lines without the code;
            // keep them as text.
            if code.is_some() {
                lines.push(text::value_bytes(line));
                continue;
            }
            return None;
        }
        let this_code = std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?;
        if *code.get_or_insert(this_code) != this_code {
            return None;
        }
        let rest = line.get(4..).unwrap_or_default();
        lines.push(text::value_bytes(rest));
        match line.get(3) {
            None | Some(b' ') => {
                return Some(CodeReply {
                    code: this_code,
                    lines,
                });
            }
            Some(b'-') => {}
            Some(_) => return None,
        }
    }
    None
}

/// Whether `buf` starts like a code reply (three digits then space, dash or
/// end): worth waiting for the rest.
pub fn looks_like_code_reply(buf: &[u8]) -> bool {
    let head = buf.get(..buf.len().min(4)).unwrap_or_default();
    head.iter().enumerate().all(|(idx, byte)| match idx {
        0..=2 => byte.is_ascii_digit(),
        _ => matches!(byte, b' ' | b'-' | b'\r' | b'\n'),
    })
}

/// What a greeting says the server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Smtp,
    Ftp,
    /// A code greeting that names neither.
    Unclear,
}

/// Classifies a greeting by its words.
pub fn classify(greeting: &CodeReply) -> Kind {
    let joined = greeting.joined().to_ascii_lowercase();
    let smtp_words = [
        "smtp",
        "postfix",
        "exim",
        "sendmail",
        "mail service",
        "opensmtpd",
        "qmail",
    ];
    let ftp_words = ["ftp", "filezilla"];
    if smtp_words.iter().any(|w| joined.contains(w)) {
        Kind::Smtp
    } else if ftp_words.iter().any(|w| joined.contains(w)) {
        Kind::Ftp
    } else {
        Kind::Unclear
    }
}

/// SMTP product and version from the greeting: `ESMTP Postfix (Debian/GNU)`,
/// `ESMTP Exim 4.96`, `ESMTP Sendmail 8.15.2/8.15.2;`.
pub fn smtp_product(greeting: &CodeReply) -> (Option<String>, Option<String>, Option<String>) {
    let joined = greeting.joined();
    let words: Vec<&str> = joined.split_whitespace().collect();
    let known = [
        ("postfix", "Postfix"),
        ("exim", "Exim"),
        ("sendmail", "Sendmail"),
        ("opensmtpd", "OpenSMTPD"),
        ("qmail", "qmail"),
        ("haraka", "Haraka"),
    ];
    let os = os_hint(&joined);
    for (idx, word) in words.iter().enumerate() {
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        if let Some((_, product)) = known.iter().find(|(key, _)| bare.eq_ignore_ascii_case(key)) {
            let version = words
                .get(idx + 1)
                .map(|next| next.trim_end_matches([';', ',']))
                .filter(|next| next.starts_with(|c: char| c.is_ascii_digit()))
                .map(|next| text::value(next.split('/').next().unwrap_or(next)));
            return (Some((*product).to_string()), version, os);
        }
    }
    if joined.contains("Microsoft ESMTP") {
        let version = joined
            .split("Version: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(text::value);
        return (
            Some("Microsoft ESMTP".into()),
            version,
            Some("Windows".into()),
        );
    }
    (None, None, os)
}

/// FTP product and version from the greeting.
pub fn ftp_product(greeting: &CodeReply) -> (Option<String>, Option<String>, Option<String>) {
    let joined = greeting.joined();
    let words: Vec<&str> = joined.split_whitespace().collect();
    let os = os_hint(&joined);
    let version_after = |idx: usize| {
        words
            .get(idx + 1)
            .map(|next| next.trim_end_matches([')', ';', ',']))
            .filter(|next| next.starts_with(|c: char| c.is_ascii_digit()))
            .map(text::value)
    };
    for (idx, word) in words.iter().enumerate() {
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
        let product = match bare.to_ascii_lowercase().as_str() {
            "vsftpd" => "vsftpd",
            "proftpd" => "ProFTPD",
            "pure-ftpd" => "Pure-FTPd",
            "filezilla" => "FileZilla Server",
            _ => continue,
        };
        let version = version_after(idx).or_else(|| {
            // `FileZilla Server 1.7.0`
            words
                .get(idx + 1)
                .filter(|w| w.eq_ignore_ascii_case("server"))
                .and_then(|_| version_after(idx + 1))
        });
        return (Some(product.to_string()), version, os);
    }
    if joined.contains("Microsoft FTP Service") {
        return (Some("Microsoft ftpd".into()), None, Some("Windows".into()));
    }
    (None, None, os)
}

fn os_hint(text: &str) -> Option<String> {
    [
        "Debian", "Ubuntu", "CentOS", "Red Hat", "FreeBSD", "Windows",
    ]
    .iter()
    .find(|os| text.contains(*os))
    .map(|os| (*os).to_string())
}

/// A `ServiceInfo` for a greeter, from its greeting (and `EHLO` answer, if any).
pub fn service(
    kind: Kind,
    greeting: &CodeReply,
    raw: &[u8],
    ehlo: Option<&CodeReply>,
) -> ServiceInfo {
    let (name, (product, version, os)) = match kind {
        Kind::Smtp => ("smtp", smtp_product(greeting)),
        Kind::Ftp => ("ftp", ftp_product(greeting)),
        Kind::Unclear => ("unknown", (None, None, None)),
    };
    let mut service = ServiceInfo::named(name);
    service.product = product;
    service.version = version;
    service.banner = Some(text::banner(raw));
    service.auth = AuthState::Unknown;
    if let Some(os) = os {
        service.extra.insert("os".into(), os);
    }
    if greeting.code != 220 {
        service
            .extra
            .insert("greeting_code".into(), greeting.code.to_string());
    }
    if let Some(ehlo) = ehlo.filter(|e| e.code == 250) {
        // The first line is the server's name; the rest are extensions.
        let extensions: Vec<&str> = ehlo.lines.iter().skip(1).map(String::as_str).collect();
        if !extensions.is_empty() {
            service
                .extra
                .insert("extensions".into(), text::value(&extensions.join(", ")));
        }
        if extensions
            .iter()
            .any(|e| e.eq_ignore_ascii_case("STARTTLS"))
        {
            service.extra.insert("starttls".into(), "yes".into());
        }
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &[u8]) -> CodeReply {
        match parse_code_reply(bytes) {
            Some(reply) => reply,
            None => panic!("reply parses: {}", text::banner(bytes)),
        }
    }

    #[test]
    fn multi_line_replies_complete_on_the_last_line() {
        let pure = b"220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------\r\n220-You are user number 1 of 50 allowed.\r\n220 This is a private system - No anonymous login\r\n";
        assert_eq!(parse_code_reply(&pure[..60]), None);
        let parsed = reply(pure);
        assert_eq!(parsed.code, 220);
        assert_eq!(parsed.lines.len(), 3);
        assert_eq!(classify(&parsed), Kind::Ftp);
        assert_eq!(ftp_product(&parsed).0.as_deref(), Some("Pure-FTPd"));
        assert_eq!(parse_code_reply(b"220-a\r\n250 b\r\n"), None);
        assert_eq!(parse_code_reply(b"SSH-2.0-x\r\n"), None);
        assert!(looks_like_code_reply(b"22"));
        assert!(looks_like_code_reply(b"220-"));
        assert!(!looks_like_code_reply(b"2x0"));
    }

    #[test]
    fn smtp_products() {
        let postfix = reply(b"220 mail.example.test ESMTP Postfix (Debian/GNU)\r\n");
        assert_eq!(classify(&postfix), Kind::Smtp);
        assert_eq!(
            smtp_product(&postfix),
            (Some("Postfix".into()), None, Some("Debian".into()))
        );
        let exim = reply(b"220 host ESMTP Exim 4.96 Wed, 25 Nov 2026 12:00:00 +0000\r\n");
        assert_eq!(
            smtp_product(&exim),
            (Some("Exim".into()), Some("4.96".into()), None)
        );
        let sendmail = reply(b"220 host ESMTP Sendmail 8.15.2/8.15.2; Wed, 25 Nov 2026\r\n");
        assert_eq!(smtp_product(&sendmail).1.as_deref(), Some("8.15.2"));
        let ehlo = reply(
            b"250-host\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
        );
        let service = service(Kind::Smtp, &exim, b"220 host", Some(&ehlo));
        assert_eq!(service.name, "smtp");
        assert_eq!(
            service.extra.get("starttls").map(String::as_str),
            Some("yes")
        );
        assert_eq!(
            service.extra.get("extensions").map(String::as_str),
            Some("PIPELINING, SIZE 10240000, STARTTLS, 8BITMIME")
        );
    }

    #[test]
    fn ftp_products() {
        let vsftpd = reply(b"220 (vsFTPd 3.0.3)\r\n");
        assert_eq!(classify(&vsftpd), Kind::Ftp);
        assert_eq!(
            ftp_product(&vsftpd),
            (Some("vsftpd".into()), Some("3.0.3".into()), None)
        );
        let proftpd = reply(b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:127.0.0.1]\r\n");
        assert_eq!(
            ftp_product(&proftpd),
            (
                Some("ProFTPD".into()),
                Some("1.3.8".into()),
                Some("Debian".into())
            )
        );
        let hidden = reply(b"220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n");
        assert_eq!(ftp_product(&hidden).1, None);
        let filezilla = reply(
            b"220-FileZilla Server 1.7.0\r\n220 Please visit https://filezilla-project.org/\r\n",
        );
        assert_eq!(
            ftp_product(&filezilla),
            (Some("FileZilla Server".into()), Some("1.7.0".into()), None)
        );
        assert_eq!(classify(&reply(b"220 ready\r\n")), Kind::Unclear);
    }
}
