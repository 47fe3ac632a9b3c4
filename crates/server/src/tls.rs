//! The server's certificate: from PEM files, or with `--dev-self-signed` one
//! generated at start (rcgen) whose SHA-256 fingerprint the server prints, for
//! clients to pin (`--fingerprint`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated at start for these names (DNS names or addresses); never
    /// written to disk, so every start has a new fingerprint.
    DevSelfSigned {
        names: Vec<String>,
    },
}

/// The server's TLS setup, and the fingerprint of its certificate.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] perimeter_files::FileError),
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

impl TlsSource {
    pub fn load(&self) -> Result<ServerTls, TlsError> {
        let (chain, key) = match self {
            TlsSource::Files { cert, key } => {
                let pem = perimeter_files::read_bytes(cert, "a certificate file", MAX_PEM_BYTES)?;
                let chain = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|err| TlsError::Pem {
                        path: cert.display().to_string(),
                        message: err.to_string(),
                    })?;
                if chain.is_empty() {
                    return Err(TlsError::Pem {
                        path: cert.display().to_string(),
                        message: "no PEM certificate".into(),
                    });
                }
                let pem = perimeter_files::read_bytes(key, "a private key file", MAX_PEM_BYTES)?;
                let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| TlsError::Pem {
                    path: key.display().to_string(),
                    message: format!("no usable private key: {err}"),
                })?;
                (chain, key_der)
            }
            TlsSource::DevSelfSigned { names } => {
                let generated = rcgen::generate_simple_self_signed(names.clone())
                    .map_err(|err| TlsError::Generate(err.to_string()))?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    generated.signing_key.serialize_der(),
                ));
                (vec![generated.cert.der().clone()], key)
            }
        };
        let fingerprint = chain
            .first()
            .map(|cert| perimeter_api::client::fingerprint(cert.as_ref()))
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Config(err.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|err| TlsError::Config(err.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
        })
    }
}
