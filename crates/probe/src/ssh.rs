//! SSH identification strings (RFC 4253 §4.2): `SSH-protoversion-softwareversion
//! SP comments CRLF`, which a server sends before anything else. Only the line is
//! read; key exchange is left to tools that audit SSH in depth.

use perimeter_model::ServiceInfo;

use crate::text;

/// RFC 4253 caps the identification line at 255 bytes including CRLF; servers
/// may send other lines before it, which we skip up to this many.
const MAX_PRE_BANNER_LINES: usize = 16;

/// A parsed identification string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshBanner {
    /// `2.0` (or `1.99` for servers that also speak SSH-1).
    pub protocol: String,
    /// `OpenSSH_9.2p1`, as sent.
    pub software: String,
    /// `Debian-2+deb12u3`, when present.
    pub comments: Option<String>,
    /// The full line, sanitised.
    pub line: String,
}

impl SshBanner {
    /// The product and version: `OpenSSH_9.2p1` gives `OpenSSH`, `9.2p1`.
    pub fn product_version(&self) -> (String, Option<String>) {
        let (product, version) = text::split_product_version(&self.software, '_');
        let product = match product.as_str() {
            "dropbear" => "Dropbear sshd".to_string(),
            _ => product,
        };
        (product, version)
    }

    /// The operating system the comments name (`Debian-2+deb12u3` gives `Debian`,
    /// `Ubuntu-3ubuntu0.10` gives `Ubuntu`).
    pub fn os_hint(&self) -> Option<String> {
        let comments = self.comments.as_deref()?;
        let first = comments.split(['-', ' ']).next()?;
        let known = [
            "Debian", "Ubuntu", "Raspbian", "FreeBSD", "NetBSD", "OpenBSD",
        ];
        known
            .iter()
            .find(|os| os.eq_ignore_ascii_case(first))
            .map(|os| (*os).to_string())
    }

    pub fn service(&self) -> ServiceInfo {
        let mut service = ServiceInfo::named("ssh");
        let (product, version) = self.product_version();
        service.product = Some(product);
        service.version = version;
        service.banner = Some(text::banner(self.line.as_bytes()));
        service
            .extra
            .insert("protocol".into(), self.protocol.clone());
        if let Some(os) = self.os_hint() {
            service.extra.insert("os".into(), os);
        }
        if let Some(comments) = &self.comments {
            service.extra.insert("comments".into(), comments.clone());
        }
        service
    }
}

/// Parses the identification line out of what a server sent first. `None`: no
/// complete `SSH-` line among the first lines. With `at_end`, an unterminated
/// last line counts too (a server that sends no CRLF, or a capped read).
pub fn parse_banner(buf: &[u8], at_end: bool) -> Option<SshBanner> {
    let mut lines = text::complete_lines(buf, MAX_PRE_BANNER_LINES);
    if at_end && lines.len() < MAX_PRE_BANNER_LINES {
        let consumed: usize = buf
            .split_inclusive(|&b| b == b'\n')
            .take(lines.len())
            .map(<[u8]>::len)
            .sum();
        if let Some(rest) = buf.get(consumed..).filter(|rest| !rest.is_empty()) {
            lines.push(rest);
        }
    }
    let line = lines.into_iter().find(|line| line.starts_with(b"SSH-"))?;
    let line = line.get(..255).unwrap_or(line);
    let line = String::from_utf8_lossy(line);
    let rest = line.strip_prefix("SSH-")?;
    let (protocol, rest) = rest.split_once('-')?;
    let (software, comments) = match rest.split_once(' ') {
        Some((software, comments)) => (software, Some(text::value(comments))),
        None => (rest, None),
    };
    Some(SshBanner {
        protocol: text::value(protocol),
        software: text::value(software),
        comments: comments.filter(|c| !c.is_empty()),
        line: text::banner(line.trim_end().as_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENSSH: &[u8] = include_bytes!("../tests/fixtures/ssh-openssh-debian.bin");

    #[test]
    fn parses_captured_openssh_banner() {
        let Some(banner) = parse_banner(OPENSSH, false) else {
            panic!("banner parses");
        };
        assert_eq!(banner.protocol, "2.0");
        assert_eq!(banner.software, "OpenSSH_9.2p1");
        assert_eq!(banner.comments.as_deref(), Some("Debian-2+deb12u10"));
        assert_eq!(banner.os_hint().as_deref(), Some("Debian"));
        let service = banner.service();
        assert_eq!(service.name, "ssh");
        assert_eq!(service.product.as_deref(), Some("OpenSSH"));
        assert_eq!(service.version.as_deref(), Some("9.2p1"));
        assert_eq!(service.extra.get("os").map(String::as_str), Some("Debian"));
        assert_eq!(
            service.banner.as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10")
        );
    }

    #[test]
    fn other_servers_and_pre_banner_lines() {
        let Some(banner) = parse_banner(b"Welcome\r\nSSH-2.0-dropbear_2022.83\r\n", false) else {
            panic!("dropbear parses");
        };
        assert_eq!(
            banner.product_version(),
            ("Dropbear sshd".to_string(), Some("2022.83".to_string()))
        );
        assert_eq!(banner.os_hint(), None);
        let Some(banner) = parse_banner(b"SSH-1.99-Cisco-1.25\r\n", false) else {
            panic!("cisco parses");
        };
        assert_eq!(banner.protocol, "1.99");
        assert_eq!(banner.product_version(), ("Cisco-1.25".to_string(), None));
        assert_eq!(parse_banner(b"SSH-2.0-OpenSSH_9.6", false), None);
        assert!(parse_banner(b"SSH-2.0-OpenSSH_9.6", true).is_some());
        assert_eq!(parse_banner(b"220 smtp ready\r\n", true), None);
    }
}
