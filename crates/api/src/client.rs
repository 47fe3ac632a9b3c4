//! The HTTPS client of the API, for the agent and the CLI (`check --server`,
//! `approvals`): rustls on ring, HTTP/1.1, bounded in time and in what it
//! reads, and trusting the server by one of three means:
//!
//! - the system's CA store (a server with a certificate from a public or
//!   company CA);
//! - a CA file, which replaces the system store;
//! - the SHA-256 fingerprint of the server's certificate, as
//!   `perimeter server --dev-self-signed` prints it (the certificate is pinned:
//!   any other one is refused, whatever signed it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::ErrorDoc;
use crate::sign::AgentKey;

/// The largest answer read from the server.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// The largest CA file read.
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// How the client knows it talks to the right server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    System,
    CaFile(PathBuf),
    /// SHA-256 of the server certificate's DER.
    Fingerprint([u8; 32]),
}

impl Trust {
    /// Parses a fingerprint as printed by the server: 64 hex digits, with or
    /// without colons, optionally prefixed `sha256:`.
    pub fn parse_fingerprint(text: &str) -> Option<Trust> {
        let text = text.trim();
        let text = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text);
        let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(hex_digits).ok()?;
        Some(Trust::Fingerprint(bytes.try_into().ok()?))
    }
}

/// The fingerprint of a certificate, as the server prints it and
/// [`Trust::parse_fingerprint`] reads it.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// How the client authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// An API token (`Authorization: Bearer`).
    Token(String),
    /// An enrolled agent's key: every request signed.
    Agent(Arc<AgentKey>),
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    /// The server could not be reached or did not answer in time: worth
    /// retrying later.
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    /// The server answered with an error document.
    #[error("{url}: the server refused: {} ({})", .doc.message, .doc.error)]
    Refused {
        url: String,
        status: u16,
        doc: ErrorDoc,
    },
    /// The server answered something that is not the API.
    #[error("{url}: unexpected answer: {message}")]
    BadAnswer { url: String, message: String },
}

impl ClientError {
    /// The API's error code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { doc, .. } => Some(&doc.error),
            _ => None,
        }
    }
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
    auth: Auth,
}

impl ApiClient {
    /// `base` is the server's URL (`https://host:port`), without the API prefix.
    pub fn new(base: &str, trust: &Trust, auth: Auth) -> Result<ApiClient, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("https://") {
            return Err(ClientError::Config(format!(
                "{base}: the server URL must start with https://"
            )));
        }
        let tls = client_config(trust)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .http1_only()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("perimeter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ClientError::Config(format!("cannot set up the HTTP client: {err}")))?;
        Ok(ApiClient { base, http, auth })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(Method::GET, path, Vec::new()).await?;
        self.decode(path, &body)
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let body = self.request(Method::GET, path, Vec::new()).await?;
        String::from_utf8(body).map_err(|_| ClientError::BadAnswer {
            url: self.url(path),
            message: "the answer is not UTF-8".into(),
        })
    }

    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|err| ClientError::Config(format!("cannot encode the request: {err}")))?;
        let answer = self.request(Method::POST, path, bytes).await?;
        self.decode(path, &answer)
    }

    /// [`ApiClient::post_json`] where the server may answer `204 No
    /// Content` (a node asking for work when there is none): `None` then.
    pub async fn post_json_or_none<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|err| ClientError::Config(format!("cannot encode the request: {err}")))?;
        let answer = self.request(Method::POST, path, bytes).await?;
        if answer.is_empty() {
            return Ok(None);
        }
        self.decode(path, &answer).map(Some)
    }

    /// Posts bytes already encoded (a queued report is resent byte for byte,
    /// so the server sees the same digest and knows it for a duplicate).
    pub async fn post_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let answer = self.request(Method::POST, path, body).await?;
        self.decode(path, &answer)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|err| ClientError::BadAnswer {
            url: self.url(path),
            message: format!("not the document expected: {err}"),
        })
    }

    /// Sends one request and reads the answer's body (at most
    /// [`MAX_ANSWER_BYTES`]); a non-2xx answer is an error.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        let mut request = self.http.request(method.clone(), &url);
        match &self.auth {
            Auth::None => {}
            Auth::Token(token) => request = request.bearer_auth(token),
            Auth::Agent(key) => {
                for (name, value) in
                    key.sign_request(method.as_str(), path, &body, OffsetDateTime::now_utc())
                {
                    request = request.header(name, value);
                }
            }
        }
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|err| ClientError::Unreachable {
                url: url.clone(),
                message: error_chain(&err.without_url()),
            })?;
        let status = response.status();
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                        return Err(ClientError::BadAnswer {
                            url,
                            message: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
                        });
                    }
                    answer.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => {
                    return Err(ClientError::Unreachable {
                        url,
                        message: error_chain(&err.without_url()),
                    });
                }
            }
        }
        if status.is_success() {
            return Ok(answer);
        }
        match serde_json::from_slice::<ErrorDoc>(&answer) {
            Ok(doc) => Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                doc,
            }),
            Err(_) if status == StatusCode::BAD_GATEWAY || status.is_server_error() => {
                Err(ClientError::Unreachable {
                    url,
                    message: format!("HTTP {status}"),
                })
            }
            Err(_) => Err(ClientError::BadAnswer {
                url,
                message: format!("HTTP {status} without an error document"),
            }),
        }
    }
}

/// The error and its causes on one line (reqwest's own message says only
/// "error sending request").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The rustls configuration of a client with this trust (HTTP/1.1 only).
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| ClientError::Config(format!("cannot set up TLS: {err}")))?;
    let mut config = match trust {
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
        Trust::System | Trust::CaFile(_) => {
            let mut roots = rustls::RootCertStore::empty();
            match trust {
                Trust::CaFile(path) => {
                    let pem = perimeter_files::read_bytes(path, "a CA file", MAX_CA_FILE_BYTES)
                        .map_err(|err| ClientError::Config(err.to_string()))?;
                    let certs = CertificateDer::pem_slice_iter(&pem)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|err| ClientError::Config(format!("{}: {err}", path.display())))?;
                    if certs.is_empty() {
                        return Err(ClientError::Config(format!(
                            "{}: no PEM certificate in the CA file",
                            path.display()
                        )));
                    }
                    for cert in certs {
                        roots.add(cert).map_err(|err| {
                            ClientError::Config(format!("{}: {err}", path.display()))
                        })?;
                    }
                }
                _ => {
                    let loaded = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(loaded.certs);
                    if roots.is_empty() {
                        return Err(ClientError::Config(
                            "no usable CA certificate in the system store; give --ca or --fingerprint"
                                .into(),
                        ));
                    }
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Trusts exactly one certificate, by its SHA-256; the handshake's signatures
/// are still checked, so the server must hold that certificate's key.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if actual == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is {}, not the pinned one",
                fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_as_printed() {
        let printed = fingerprint(b"certificate");
        let Some(Trust::Fingerprint(pin)) = Trust::parse_fingerprint(&printed) else {
            panic!("{printed} does not parse");
        };
        assert_eq!(
            Trust::parse_fingerprint(&hex::encode(pin).to_uppercase()),
            Some(Trust::Fingerprint(pin))
        );
        assert_eq!(Trust::parse_fingerprint("sha256:abcd"), None);
        assert_eq!(Trust::parse_fingerprint("zz"), None);
    }
}
