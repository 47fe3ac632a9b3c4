//! VNC's RFB handshake (RFC 6143) up to the security types: the server sends
//! `RFB 003.008\n`, the client answers with the version it speaks, and the server
//! lists the security types it accepts (3.7 and later) or picks one (3.3). The
//! probe stops there: it never selects a type, so it never opens a session.

use perimeter_model::{AuthState, ServiceInfo};

use crate::{Identified, rules, text};

/// The most security types a 3.7+ server can list is 255; the most reason text
/// kept when it lists none.
const MAX_REASON: usize = 1024;

/// A server's protocol version, `RFB xxx.yyy\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfbVersion {
    pub major: u16,
    pub minor: u16,
}

impl RfbVersion {
    /// The version a client answers with: the highest it speaks (3.8) not above
    /// the server's. Apple's 3.889 and RealVNC's 4.x/5.x speak 3.8 to clients.
    pub fn client_reply(self) -> RfbVersion {
        match (self.major, self.minor) {
            (3, 0..=6) => RfbVersion { major: 3, minor: 3 },
            (3, 7) => RfbVersion { major: 3, minor: 7 },
            _ => RfbVersion { major: 3, minor: 8 },
        }
    }

    pub fn encode(self) -> Vec<u8> {
        format!("RFB {:03}.{:03}\n", self.major, self.minor).into_bytes()
    }
}

/// Parses the 12-byte version message. `Ok(None)`: fewer than 12 bytes that
/// could still become one.
#[expect(
    clippy::result_unit_err,
    reason = "the only failure is \"not this protocol\"; there is nothing to say"
)]
pub fn parse_version(buf: &[u8]) -> Result<Option<RfbVersion>, ()> {
    let template = b"RFB 000.000\n";
    let head = buf.get(..12).unwrap_or(buf);
    let shape_ok = head.iter().zip(template).all(|(&byte, &want)| match want {
        b'0' => byte.is_ascii_digit(),
        _ => byte == want,
    });
    if !shape_ok {
        return Err(());
    }
    if head.len() < 12 {
        return Ok(None);
    }
    let number = |range: std::ops::Range<usize>| {
        head.get(range)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse::<u16>().ok())
            .ok_or(())
    };
    Ok(Some(RfbVersion {
        major: number(4..7)?,
        minor: number(8..11)?,
    }))
}

/// What the server said after our version message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// The types the server accepts (3.7+), or the one it chose (3.3).
    Types(Vec<u8>),
    /// The server refused the connection, with its reason.
    Refused(String),
}

/// Parses the security message for the version we answered with. `Ok(None)`:
/// incomplete.
#[expect(
    clippy::result_unit_err,
    reason = "the only failure is \"not this protocol\"; there is nothing to say"
)]
pub fn parse_security(buf: &[u8], version: RfbVersion) -> Result<Option<Security>, ()> {
    let u32_at = |at: usize| {
        buf.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let reason = |at: usize| -> Option<Security> {
        let len = usize::try_from(u32_at(at)?).ok()?;
        let wanted = len.min(MAX_REASON);
        let bytes = buf.get(at + 4..at + 4 + wanted)?;
        Some(Security::Refused(text::value_bytes(bytes)))
    };
    if version.minor <= 3 {
        return match u32_at(0) {
            None => Ok(None),
            Some(0) => Ok(reason(4)),
            Some(kind @ 1..=255) => Ok(Some(Security::Types(vec![kind as u8]))),
            Some(_) => Err(()),
        };
    }
    match buf.first() {
        None => Ok(None),
        Some(0) => Ok(reason(1)),
        Some(&n) => Ok(buf
            .get(1..1 + usize::from(n))
            .map(|types| Security::Types(types.to_vec()))),
    }
}

/// The RFB security type names, from IANA's registry.
pub fn security_type_name(kind: u8) -> String {
    match kind {
        1 => "None".into(),
        2 => "VNC Authentication".into(),
        5 => "RA2".into(),
        6 => "RA2ne".into(),
        16 => "Tight".into(),
        17 => "Ultra".into(),
        18 => "TLS".into(),
        19 => "VeNCrypt".into(),
        20 => "SASL".into(),
        22 => "xvp".into(),
        30 => "Apple Remote Desktop".into(),
        other => format!("type {other}"),
    }
}

/// The identification once the security message arrived.
pub fn identify(version: RfbVersion, version_line: &[u8], security: &Security) -> Identified {
    let mut service = ServiceInfo::named("vnc");
    service.banner = Some(text::banner(version_line));
    service.version = Some(format!("{}.{}", version.major, version.minor));
    service.extra.insert(
        "protocol".into(),
        format!("{}.{}", version.major, version.minor),
    );
    let mut findings = Vec::new();
    match security {
        Security::Types(types) => {
            let names: Vec<String> = types.iter().map(|&t| security_type_name(t)).collect();
            service
                .extra
                .insert("security_types".into(), text::value(&names.join(", ")));
            if types.contains(&1) {
                service.auth = AuthState::None;
                let evidence = if version.minor <= 3 {
                    "RFB 3.3 server chose security type 1 (None)".to_string()
                } else {
                    format!(
                        "security types offered: {}",
                        text::escape(names.join(", ").as_bytes(), text::MAX_BANNER_CHARS)
                    )
                };
                findings.push(rules::vnc_noauth(vec![evidence]));
            } else {
                service.auth = AuthState::Required;
            }
        }
        Security::Refused(reason) => {
            service.extra.insert("refused".into(), reason.clone());
        }
    }
    if version.minor == 889 {
        service.product = Some("Apple remote desktop vnc".into());
    }
    Identified { service, findings }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-version.bin");
    const TYPES_NONE: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-types-none.bin");
    const TYPES_VNCAUTH: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-types-vncauth.bin");
    const RFB33_VNCAUTH: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-rfb33-vncauth.bin");

    const V38: RfbVersion = RfbVersion { major: 3, minor: 8 };
    const V33: RfbVersion = RfbVersion { major: 3, minor: 3 };

    #[test]
    fn versions_and_replies() {
        assert_eq!(parse_version(VERSION), Ok(Some(V38)));
        assert_eq!(parse_version(b"RFB 003"), Ok(None));
        assert_eq!(parse_version(b"RFB 0x3"), Err(()));
        assert_eq!(parse_version(b"SSH-2.0"), Err(()));
        let apple = RfbVersion {
            major: 3,
            minor: 889,
        };
        assert_eq!(apple.client_reply().encode(), b"RFB 003.008\n");
        assert_eq!(RfbVersion { major: 3, minor: 5 }.client_reply(), V33);
        assert_eq!(V38.encode(), VERSION);
    }

    #[test]
    fn captured_security_types() {
        assert_eq!(
            parse_security(TYPES_NONE, V38),
            Ok(Some(Security::Types(vec![1])))
        );
        assert_eq!(
            parse_security(TYPES_VNCAUTH, V38),
            Ok(Some(Security::Types(vec![2])))
        );
        assert_eq!(
            parse_security(RFB33_VNCAUTH, V33),
            Ok(Some(Security::Types(vec![2])))
        );
        assert_eq!(parse_security(&[3, 1], V38), Ok(None));
        assert_eq!(
            parse_security(b"\x00\x00\x00\x00\x05Too many", V38),
            Ok(Some(Security::Refused("Too m".into())))
        );
        assert_eq!(parse_security(b"\x00\x00\x01\x00", V33), Err(()));
    }

    #[test]
    fn none_is_critical_vncauth_is_not() {
        let found = identify(V38, VERSION, &Security::Types(vec![1]));
        assert_eq!(found.service.name, "vnc");
        assert_eq!(found.service.auth, AuthState::None);
        assert_eq!(found.findings.len(), 1);
        assert_eq!(
            found.findings.first().map(|f| f.rule.as_str()),
            Some(rules::VNC_NOAUTH)
        );
        assert_eq!(
            found.findings.first().map(|f| f.evidence.clone()),
            Some(vec!["security types offered: None".to_string()])
        );
        let found = identify(V38, VERSION, &Security::Types(vec![2, 19]));
        assert_eq!(found.service.auth, AuthState::Required);
        assert!(found.findings.is_empty());
        assert_eq!(
            found
                .service
                .extra
                .get("security_types")
                .map(String::as_str),
            Some("VNC Authentication, VeNCrypt")
        );
    }
}
