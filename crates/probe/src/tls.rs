//! TLS for probes, sans I/O: [`Tls`] wraps any probe and runs it over rustls's
//! `ClientConnection` (`read_tls` / `process_new_packets` / `write_tls`), so the
//! driver still only moves bytes. Also the certificate reading ([`tls_info`]).
//!
//! The certificate verifier accepts every certificate and records the one the
//! server presented. That is deliberate: a scanner's job is to report what is
//! there, including self-signed, expired and wrong-name certificates, which are
//! exactly the ones worth seeing; nothing is sent over these connections that
//! needs the server's identity to be proven. Handshake signatures are still
//! checked, so the peer did hold the key of the certificate we report.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use perimeter_model::{AuthState, ServiceInfo, TlsInfo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::{Identified, Next, Probe, sniff_not_http as sniff, text};

/// The most subject alternative names kept from one certificate.
const MAX_SANS: usize = 64;
/// Room for the handshake (certificate chains run to several KiB) on top of
/// what the wrapped probe reads.
const HANDSHAKE_ROOM: usize = 48 * 1024;

/// Accepts any certificate and keeps the server's (see the module docs).
#[derive(Debug)]
struct RecordingVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    presented: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut slot) = self.presented.lock() {
            *slot = Some(end_entity.clone().into_owned());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Reads subject, issuer, expiry and subject alternative names from a DER
/// certificate. `None` when it does not parse.
pub fn tls_info(der: &[u8]) -> Option<TlsInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut subject_alt_names = Vec::new();
    if let Ok(Some(sans)) = cert.subject_alternative_name() {
        for name in sans.value.general_names.iter().take(MAX_SANS) {
            use x509_parser::extensions::GeneralName;
            let shown = match name {
                GeneralName::DNSName(dns) => format!("DNS:{}", text::value(dns)),
                GeneralName::RFC822Name(mail) => format!("email:{}", text::value(mail)),
                GeneralName::URI(uri) => format!("URI:{}", text::value(uri)),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => {
                        let octets: [u8; 4] = (*bytes).try_into().ok()?;
                        format!("IP:{}", IpAddr::from(octets))
                    }
                    16 => {
                        let octets: [u8; 16] = (*bytes).try_into().ok()?;
                        format!("IP:{}", IpAddr::from(octets))
                    }
                    _ => continue,
                },
                _ => continue,
            };
            subject_alt_names.push(shown);
        }
    }
    Some(TlsInfo {
        subject: text::escape(
            cert.subject().to_string().as_bytes(),
            text::MAX_BANNER_CHARS,
        ),
        issuer: text::escape(cert.issuer().to_string().as_bytes(), text::MAX_BANNER_CHARS),
        not_after: Some(cert.validity().not_after.to_datetime()),
        subject_alt_names,
    })
}

/// Moves decrypted plaintext into `plain`, keeping at most `cap` bytes (the
/// rest is read and dropped so rustls's buffer never fills). Returns whether any
/// arrived.
fn drain_plaintext(conn: &mut ClientConnection, plain: &mut Vec<u8>, cap: usize) -> bool {
    let mut chunk = [0u8; 4096];
    let mut got = false;
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) | Err(_) => return got,
            Ok(n) => {
                got = true;
                let room = cap.saturating_sub(plain.len());
                plain.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
            }
        }
    }
}

/// Runs the wrapped probe over TLS. The wrapped probe sees plaintext only; its
/// identification comes back with `tls` filled, `http` renamed `https`, and the
/// negotiated version and cipher suite in `extra`. A handshake that succeeds
/// under a probe that recognises nothing still identifies `ssl` with the
/// certificate.
#[derive(Debug)]
pub struct Tls<P: Probe> {
    name: &'static str,
    inner: P,
    server_name: ServerName<'static>,
    conn: Option<ClientConnection>,
    presented: Arc<Mutex<Option<CertificateDer<'static>>>>,
    /// How much of the driver's buffer (since our last `Send`) was fed to rustls.
    consumed: usize,
    /// Plaintext since the wrapped probe's last `Send`, capped at its
    /// `max_response`.
    plain: Vec<u8>,
    inner_started: bool,
    handshake_done: bool,
}

impl<P: Probe> Tls<P> {
    /// Wraps `inner`. `host` is the name to send as SNI; `None` or an IP
    /// address literal sends no SNI (RFC 6066 forbids addresses there).
    pub fn new(name: &'static str, inner: P, host: Option<&str>) -> Self {
        let server_name = host
            .and_then(|host| ServerName::try_from(host.to_string()).ok())
            .unwrap_or(ServerName::IpAddress(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED).into(),
            ));
        Tls {
            name,
            inner,
            server_name,
            conn: None,
            presented: Arc::new(Mutex::new(None)),
            consumed: 0,
            plain: Vec::new(),
            inner_started: false,
            handshake_done: false,
        }
    }

    fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        let provider: CryptoProvider = rustls::crypto::ring::default_provider();
        let verifier = RecordingVerifier {
            algorithms: provider.signature_verification_algorithms,
            presented: Arc::clone(&self.presented),
        };
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        ClientConnection::new(Arc::new(config), self.server_name.clone())
    }

    /// Feeds new TLS bytes to rustls and collects the plaintext they carry.
    /// Returns whether any new plaintext arrived.
    fn feed(&mut self, mut incoming: &[u8]) -> Result<bool, rustls::Error> {
        let cap = self.inner.max_response();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        let mut got_plain = false;
        // Each round moves at least one record or stops; the bound only guards
        // against a rustls that neither takes bytes nor fails.
        for _ in 0..4096 {
            let taken = conn.read_tls(&mut incoming);
            conn.process_new_packets()?;
            got_plain |= drain_plaintext(conn, &mut self.plain, cap);
            match taken {
                Ok(0) => break,
                Ok(_) | Err(_) if incoming.is_empty() => break,
                Ok(_) | Err(_) => {}
            }
        }
        if !conn.is_handshaking() {
            self.handshake_done = true;
        }
        Ok(got_plain)
    }

    fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(conn) = self.conn.as_mut() {
            while conn.wants_write() {
                match conn.write_tls(&mut out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        out
    }

    fn send_plain(&mut self, bytes: &[u8]) {
        if let Some(conn) = self.conn.as_mut() {
            // The plaintext buffer is unbounded by default and the requests
            // are small, so this write takes everything.
            let _ = conn.writer().write_all(bytes);
        }
        self.plain.clear();
    }

    fn next_after(&mut self, got_plain: bool) -> Next {
        if self.handshake_done {
            let step = if !self.inner_started {
                self.inner_started = true;
                Some(self.inner.start())
            } else if got_plain {
                Some(self.inner.on_data(&self.plain.clone()))
            } else {
                None
            };
            match step {
                Some(Next::Send(bytes)) => self.send_plain(&bytes),
                Some(Next::Done(found)) => return Next::Done(self.finish(found)),
                Some(Next::Receive) | None => {}
            }
        }
        let out = self.flush();
        if out.is_empty() {
            Next::Receive
        } else {
            self.consumed = 0;
            Next::Send(out)
        }
    }

    fn session_facts(&self, service: &mut ServiceInfo) {
        if let Ok(slot) = self.presented.lock()
            && let Some(der) = slot.as_ref()
        {
            service.tls = tls_info(der);
        }
        if let Some(conn) = &self.conn {
            if let Some(version) = conn.protocol_version() {
                service
                    .extra
                    .insert("tls_version".into(), text::value(&format!("{version:?}")));
            }
            if let Some(suite) = conn.negotiated_cipher_suite() {
                service.extra.insert(
                    "tls_cipher".into(),
                    text::value(&format!("{:?}", suite.suite())),
                );
            }
        }
    }

    fn finish(&mut self, found: Option<Identified>) -> Option<Identified> {
        match found {
            Some(mut found) => {
                if found.service.name == "http" {
                    found.service.name = "https".into();
                }
                self.session_facts(&mut found.service);
                Some(found)
            }
            None if self.handshake_done => {
                let mut service = ServiceInfo::named("ssl");
                self.session_facts(&mut service);
                Some(Identified {
                    service,
                    findings: Vec::new(),
                })
            }
            None => None,
        }
    }

    /// The handshake or the session failed. A certificate seen still identifies
    /// TLS; a server that demanded a client certificate requires authentication.
    /// Without either, the raw answer may be another protocol's (a plaintext
    /// server answering our ClientHello).
    fn failed(&mut self, error: &rustls::Error, raw: &[u8]) -> Option<Identified> {
        let has_cert = self.presented.lock().is_ok_and(|slot| slot.is_some());
        if !has_cert {
            return sniff(raw);
        }
        let mut service = ServiceInfo::named("ssl");
        self.session_facts(&mut service);
        service
            .extra
            .insert("tls_error".into(), text::value(&error.to_string()));
        // `certificate_required` (TLS 1.3) says it outright; after a completed
        // handshake, a bad-certificate or handshake-failure alert can only be
        // about the client certificate we did not send.
        let demanded_cert = match error {
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => true,
            rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::HandshakeFailure,
            ) => self.handshake_done,
            _ => false,
        };
        if demanded_cert {
            service.auth = AuthState::Required;
            service
                .extra
                .insert("auth".into(), "client-certificate".into());
        }
        Some(Identified {
            service,
            findings: Vec::new(),
        })
    }
}

impl<P: Probe> Probe for Tls<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn start(&mut self) -> Next {
        match self.connect() {
            Ok(conn) => self.conn = Some(conn),
            Err(_) => return Next::Done(None),
        }
        self.consumed = 0;
        self.plain.clear();
        self.inner_started = false;
        self.handshake_done = false;
        let hello = self.flush();
        Next::Send(hello)
    }

    fn on_data(&mut self, received: &[u8]) -> Next {
        let incoming = received.get(self.consumed..).unwrap_or_default();
        self.consumed = received.len();
        match self.feed(incoming) {
            Ok(got_plain) => {
                let next = self.next_after(got_plain);
                // A capped driver buffer will not grow: decide with what we have.
                if next == Next::Receive && received.len() >= self.max_response() {
                    return Next::Done(self.on_end(&[], false));
                }
                next
            }
            Err(error) => Next::Done(self.failed(&error, received)),
        }
    }

    fn on_end(&mut self, received: &[u8], timed_out: bool) -> Option<Identified> {
        let incoming = received.get(self.consumed..).unwrap_or_default();
        self.consumed = received.len();
        if let Err(error) = self.feed(incoming) {
            return self.failed(&error, received);
        }
        if self.inner_started {
            let found = self.inner.on_end(&self.plain.clone(), timed_out);
            self.finish(found)
        } else {
            self.finish(None)
        }
    }

    fn max_response(&self) -> usize {
        self.inner.max_response().saturating_add(HANDSHAKE_ROOM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB_CERT: &[u8] = include_bytes!("../tests/fixtures/lab-cert.der");

    #[test]
    fn reads_the_lab_certificate() {
        let Some(info) = tls_info(LAB_CERT) else {
            panic!("certificate parses");
        };
        assert_eq!(info.subject, "CN=lab.perimeter.test, O=Perimeter Lab");
        assert_eq!(info.issuer, info.subject);
        assert_eq!(
            info.subject_alt_names,
            vec!["DNS:lab.perimeter.test".to_string(), "IP:127.0.0.1".into()]
        );
        assert_eq!(info.not_after.map(|t| t.year()), Some(2036));
        assert_eq!(tls_info(b"not a certificate"), None);
    }

    #[test]
    fn client_hello_carries_no_sni_for_addresses() {
        #[derive(Debug)]
        struct Silent;
        impl Probe for Silent {
            fn name(&self) -> &'static str {
                "silent"
            }
            fn start(&mut self) -> Next {
                Next::Receive
            }
            fn on_data(&mut self, _: &[u8]) -> Next {
                Next::Receive
            }
            fn on_end(&mut self, _: &[u8], _: bool) -> Option<Identified> {
                None
            }
        }
        let Next::Send(hello) = Tls::new("tls", Silent, None).start() else {
            panic!("starts with a ClientHello");
        };
        assert_eq!(hello.first(), Some(&0x16), "a handshake record");
        assert_eq!(text::find(&hello, b"lab.perimeter.test"), None);
        let Next::Send(hello) = Tls::new("tls", Silent, Some("lab.perimeter.test")).start() else {
            panic!("starts with a ClientHello");
        };
        assert!(
            text::find(&hello, b"lab.perimeter.test").is_some(),
            "SNI sent for a name"
        );
        let Next::Send(hello) = Tls::new("tls", Silent, Some("127.0.0.1")).start() else {
            panic!("starts with a ClientHello");
        };
        assert_eq!(text::find(&hello, b"127.0.0.1"), None);
        // A plaintext answer to the ClientHello is another protocol's.
        let mut probe = Tls::new("tls", Silent, None);
        probe.start();
        let Next::Done(Some(found)) = probe.on_data(b"SSH-2.0-OpenSSH_9.2p1\r\n") else {
            panic!("ssh sniffed");
        };
        assert_eq!(found.service.name, "ssh");
    }
}
