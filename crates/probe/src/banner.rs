//! [`BannerProbe`]: the first probe on every open port. It sends nothing and
//! waits for services that speak first (SSH, SMTP, FTP, MySQL, VNC, POP3,
//! IMAP, ...), then does the one follow-up some of them need: `EHLO` to an SMTP
//! server (or to a `220` greeting that does not say what it is), the version
//! echo a VNC server needs before it lists its security types.
//!
//! A silent service costs one short wait: the driver times out, `on_end` gets no
//! bytes and returns `None`, and the driver moves on to the probes that speak
//! first. A greeting nothing here recognises is still reported, as `unknown`
//! with its banner, since no later probe would do better with a server that
//! talks before it is asked.

use perimeter_model::ServiceInfo;

use crate::greeting::{self, CodeReply, Kind};
use crate::vnc::{self, RfbVersion};
use crate::{Identified, Next, Probe, mysql, sniff, ssh, text};

/// The most bytes of a greeting kept for the banner after a follow-up.
const MAX_KEPT_GREETING: usize = 1024;

#[derive(Debug)]
enum Stage {
    Greeting,
    Ehlo {
        kind: Kind,
        greeting: CodeReply,
        raw: Vec<u8>,
    },
    VncSecurity {
        version: RfbVersion,
        line: Vec<u8>,
    },
}

/// Waits for a greeting and identifies the service by it.
#[derive(Debug)]
pub struct BannerProbe {
    stage: Stage,
}

impl BannerProbe {
    pub fn new() -> Self {
        BannerProbe {
            stage: Stage::Greeting,
        }
    }

    fn on_greeting(&mut self, received: &[u8], at_end: bool) -> Next {
        if received.is_empty() {
            return if at_end {
                Next::Done(None)
            } else {
                Next::Receive
            };
        }
        let mut maybe_incomplete = false;

        if let Some(banner) = ssh::parse_banner(received, at_end) {
            return Next::Done(Some(Identified::service_only(banner.service())));
        }
        maybe_incomplete |= received.starts_with(b"SSH-") || b"SSH-".starts_with(received);

        match vnc::parse_version(received) {
            Ok(Some(version)) => {
                let reply = version.client_reply();
                let line = received.get(..12).unwrap_or(received).to_vec();
                self.stage = Stage::VncSecurity {
                    version: reply,
                    line,
                };
                return Next::Send(reply.encode());
            }
            Ok(None) => maybe_incomplete = true,
            Err(()) => {}
        }

        match mysql::parse_greeting(received) {
            Ok(Some(greeting)) => {
                return Next::Done(Some(Identified::service_only(mysql::service(
                    &greeting, received,
                ))));
            }
            Ok(None) => maybe_incomplete = true,
            Err(()) => {}
        }

        if let Some(reply) = greeting::parse_code_reply(received) {
            let kind = greeting::classify(&reply);
            let raw = received
                .get(..MAX_KEPT_GREETING)
                .unwrap_or(received)
                .to_vec();
            return match kind {
                Kind::Ftp => Next::Done(Some(Identified::service_only(greeting::service(
                    kind, &reply, &raw, None,
                )))),
                Kind::Smtp | Kind::Unclear => {
                    self.stage = Stage::Ehlo {
                        kind,
                        greeting: reply,
                        raw,
                    };
                    Next::Send(greeting::EHLO.to_vec())
                }
            };
        }
        maybe_incomplete |= greeting::looks_like_code_reply(received);
        if maybe_incomplete && !at_end {
            return Next::Receive;
        }

        if let Some(found) = sniff(received) {
            return Next::Done(Some(found));
        }
        if !at_end && !received.contains(&b'\n') {
            return Next::Receive;
        }
        let mut service = ServiceInfo::named("unknown");
        service.banner = Some(text::banner(received));
        Next::Done(Some(Identified::service_only(service)))
    }
}

impl Default for BannerProbe {
    fn default() -> Self {
        BannerProbe::new()
    }
}

fn after_ehlo(
    kind: Kind,
    greeting: &CodeReply,
    raw: &[u8],
    ehlo: Option<&CodeReply>,
) -> Identified {
    let kind = match (kind, ehlo) {
        (Kind::Unclear, Some(reply)) if reply.code == 250 => Kind::Smtp,
        // FTP servers refuse the unknown command, vsftpd with `530 Please login
        // with USER and PASS`.
        (Kind::Unclear, Some(reply))
            if reply.code == 500
                || reply.code == 502
                || reply.code == 530 && reply.lines.iter().any(|l| l.contains("USER")) =>
        {
            Kind::Ftp
        }
        (kind, _) => kind,
    };
    Identified::service_only(greeting::service(kind, greeting, raw, ehlo))
}

impl Probe for BannerProbe {
    fn name(&self) -> &'static str {
        "banner"
    }

    fn start(&mut self) -> Next {
        self.stage = Stage::Greeting;
        Next::Receive
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        let at_cap = received.len() >= self.max_response();
        match &self.stage {
            Stage::Greeting => self.on_greeting(received, at_cap),
            Stage::Ehlo {
                kind,
                greeting,
                raw,
            } => match greeting::parse_code_reply(received) {
                Some(reply) => Next::Done(Some(after_ehlo(*kind, greeting, raw, Some(&reply)))),
                None if at_cap || !greeting::looks_like_code_reply(received) => {
                    Next::Done(Some(after_ehlo(*kind, greeting, raw, None)))
                }
                None => Next::Receive,
            },
            Stage::VncSecurity { version, line } => match vnc::parse_security(received, *version) {
                Ok(Some(security)) => Next::Done(Some(vnc::identify(*version, line, &security))),
                Ok(None) if !at_cap => Next::Receive,
                _ => Next::Done(Some(vnc_without_security(*version, line))),
            },
        }
    }

    fn waits_for_greeting(&self) -> bool {
        true
    }

    fn on_end(&mut self, received: &[u8], _timed_out: bool) -> Option<Identified> {
        match &self.stage {
            Stage::Greeting => match self.on_greeting(received, true) {
                Next::Done(found) => found,
                // A VNC version or SMTP greeting arrived as the connection ended:
                // what it said still identifies the service.
                Next::Send(_) | Next::Receive => match &self.stage {
                    Stage::VncSecurity { version, line } => {
                        Some(vnc_without_security(*version, line))
                    }
                    Stage::Ehlo {
                        kind,
                        greeting,
                        raw,
                    } => Some(after_ehlo(*kind, greeting, raw, None)),
                    Stage::Greeting => None,
                },
            },
            Stage::Ehlo {
                kind,
                greeting,
                raw,
            } => Some(after_ehlo(
                *kind,
                greeting,
                raw,
                greeting::parse_code_reply(received).as_ref(),
            )),
            Stage::VncSecurity { version, line } => {
                Some(match vnc::parse_security(received, *version) {
                    Ok(Some(security)) => vnc::identify(*version, line, &security),
                    _ => vnc_without_security(*version, line),
                })
            }
        }
    }
}

fn vnc_without_security(version: RfbVersion, line: &[u8]) -> Identified {
    let mut service = ServiceInfo::named("vnc");
    service.banner = Some(text::banner(line));
    service.version = Some(format!("{}.{}", version.major, version.minor));
    Identified::service_only(service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use perimeter_model::AuthState;

    const SSH: &[u8] = include_bytes!("../tests/fixtures/ssh-openssh-debian.bin");
    const VSFTPD: &[u8] = include_bytes!("../tests/fixtures/ftp-vsftpd-greeting.bin");
    const VSFTPD_EHLO: &[u8] = include_bytes!("../tests/fixtures/ftp-vsftpd-ehlo.bin");
    const EXIM: &[u8] = include_bytes!("../tests/fixtures/smtp-exim-greeting.bin");
    const EXIM_EHLO: &[u8] = include_bytes!("../tests/fixtures/smtp-exim-ehlo.bin");
    const MARIADB: &[u8] = include_bytes!("../tests/fixtures/mysql-mariadb-handshake.bin");
    const VNC_VERSION: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-version.bin");
    const VNC_NONE: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-types-none.bin");
    const VNC_AUTH: &[u8] = include_bytes!("../tests/fixtures/vnc-tigervnc-types-vncauth.bin");

    /// Plays a conversation: each answer goes to `on_data` after the probe asked
    /// to receive or sent something.
    fn converse(answers: &[&[u8]]) -> Option<Identified> {
        let mut probe = BannerProbe::new();
        assert_eq!(probe.start(), Next::Receive);
        for answer in answers {
            if let Next::Done(found) = probe.on_data(answer) {
                return found;
            }
        }
        probe.on_end(b"", true)
    }

    fn found(answers: &[&[u8]]) -> ServiceInfo {
        match converse(answers) {
            Some(found) => found.service,
            None => panic!("identified"),
        }
    }

    #[test]
    fn silence_is_cheap() {
        let mut probe = BannerProbe::new();
        probe.start();
        assert_eq!(probe.on_end(b"", true), None);
    }

    #[test]
    fn ssh_and_partial_lines() {
        let mut probe = BannerProbe::new();
        probe.start();
        assert_eq!(probe.on_data(&SSH[..10]), Next::Receive);
        let Next::Done(Some(found)) = probe.on_data(SSH) else {
            panic!("ssh");
        };
        assert_eq!(found.service.product.as_deref(), Some("OpenSSH"));
    }

    #[test]
    fn ftp_greeting_is_enough() {
        let service = found(&[VSFTPD]);
        assert_eq!(service.name, "ftp");
        assert_eq!(service.product.as_deref(), Some("vsftpd"));
        assert_eq!(service.version.as_deref(), Some("3.0.3"));
    }

    #[test]
    fn smtp_gets_ehlo() {
        let mut probe = BannerProbe::new();
        probe.start();
        assert_eq!(probe.on_data(EXIM), Next::Send(greeting::EHLO.to_vec()));
        let Next::Done(Some(found)) = probe.on_data(EXIM_EHLO) else {
            panic!("smtp");
        };
        assert_eq!(found.service.name, "smtp");
        assert_eq!(found.service.product.as_deref(), Some("Exim"));
        assert_eq!(found.service.version.as_deref(), Some("4.96"));
        assert_eq!(
            found.service.extra.get("starttls").map(String::as_str),
            Some("yes")
        );
    }

    #[test]
    fn unclear_greeting_decided_by_ehlo() {
        assert_eq!(found(&[b"220 ready\r\n", VSFTPD_EHLO]).name, "ftp");
        assert_eq!(found(&[b"220 ready\r\n", b"250 hello\r\n"]).name, "smtp");
        assert_eq!(found(&[b"220 ready\r\n"]).name, "unknown");
    }

    #[test]
    fn mysql_handshake() {
        let service = found(&[MARIADB]);
        assert_eq!(service.name, "mysql");
        assert_eq!(service.product.as_deref(), Some("MariaDB"));
    }

    #[test]
    fn vnc_security_types() {
        let mut probe = BannerProbe::new();
        probe.start();
        assert_eq!(
            probe.on_data(VNC_VERSION),
            Next::Send(b"RFB 003.008\n".to_vec())
        );
        let Next::Done(Some(found)) = probe.on_data(VNC_NONE) else {
            panic!("vnc");
        };
        assert_eq!(found.service.name, "vnc");
        assert_eq!(found.service.auth, AuthState::None);
        assert_eq!(found.findings.len(), 1);
        let service = found_vnc(VNC_AUTH);
        assert_eq!(service.auth, AuthState::Required);
    }

    fn found_vnc(types: &[u8]) -> ServiceInfo {
        found(&[VNC_VERSION, types])
    }

    #[test]
    fn unknown_greetings_keep_their_banner() {
        let service = found(&[b"\x1b[2Jwelcome to the matrix\n"]);
        assert_eq!(service.name, "unknown");
        assert_eq!(
            service.banner.as_deref(),
            Some("\\x1b[2Jwelcome to the matrix\\n")
        );
        assert_eq!(found(&[b"+OK Dovecot ready.\r\n"]).name, "pop3");
        assert_eq!(
            found(&[b"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n"]).name,
            "imap"
        );
    }
}
