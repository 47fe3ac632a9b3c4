//! Which certificate authorities a channel trusts, and the rustls client
//! configuration (on ring) the HTTP channels use.
//!
//! By default the system's store (`/etc/ssl/certs` through
//! rustls-native-certs). A configured CA file replaces it rather than adding
//! to it: a channel pointed at a private CA (an internal mail relay, a
//! receiver with a self-signed certificate, the tests) then trusts that CA
//! alone, and no public CA can impersonate the receiver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The largest CA file read: a bundle of every public root is about 200 KiB.
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// The certificate authorities a channel trusts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsRoots {
    /// The system's CA store.
    #[default]
    System,
    /// Only the PEM certificates in this file.
    CaFile(PathBuf),
}

/// Why the trusted certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] perimeter_files::FileError),
    #[error("{}: no PEM certificate in the CA file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: a certificate in the CA file does not parse: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("no usable CA certificate in the system store ({reason})")]
    NoSystemRoots { reason: String },
    #[error("cannot set up TLS: {0}")]
    Config(String),
}

impl TlsRoots {
    /// The certificates of a CA file, in DER, checked to parse.
    pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = perimeter_files::read_bytes(path, "a CA file", MAX_CA_FILE_BYTES)?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| TlsError::BadCertificate {
                path: path.to_owned(),
                reason: err.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        Ok(certs)
    }

    /// The trust anchors as a rustls root store.
    fn root_store(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        match self {
            TlsRoots::System => {
                let loaded = rustls_native_certs::load_native_certs();
                let (n_added, _n_ignored) = store.add_parsable_certificates(loaded.certs);
                if n_added == 0 {
                    let reason = loaded
                        .errors
                        .first()
                        .map_or_else(|| "the store is empty".to_owned(), ToString::to_string);
                    return Err(TlsError::NoSystemRoots { reason });
                }
            }
            TlsRoots::CaFile(path) => {
                for cert in TlsRoots::read_ca_file(path)? {
                    store.add(cert).map_err(|err| TlsError::BadCertificate {
                        path: path.clone(),
                        reason: err.to_string(),
                    })?;
                }
            }
        }
        Ok(store)
    }

    /// A rustls client configuration on ring trusting these roots, speaking
    /// HTTP/1.1 (the only HTTP the webhook client speaks).
    pub(crate) fn http_client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Config(err.to_string()))?
            .with_root_certificates(self.root_store()?)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}
