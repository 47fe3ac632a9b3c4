//! How an agent proves who it is: an ed25519 key pair generated on the host at
//! enrolment (never derived from the hostname, the machine id or a cloud
//! UUID), an id derived from the public key, and a signature over every request
//! it sends.
//!
//! The signed message binds the method, the path (with its query), the time
//! the agent sent it and the SHA-256 of the body, so a captured request cannot
//! be replayed later (the server refuses a date too far from its clock) or
//! altered (any changed byte breaks the signature). Reports carry their own
//! sequence number besides, so a replay within the clock window is a
//! duplicate, never a second report.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The header naming the agent.
pub const AGENT_HEADER: &str = "perimeter-agent";
/// The header with the request's time, RFC 3339.
pub const DATE_HEADER: &str = "perimeter-date";
/// The header with the signature, base64.
pub const SIGNATURE_HEADER: &str = "perimeter-signature";

/// Why a key or a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the public key is not base64 of 32 bytes")]
    BadPublicKey,
    #[error("the public key is not a valid ed25519 point")]
    InvalidPublicKey,
    #[error("the signature is not base64 of 64 bytes")]
    BadSignature,
    #[error("the signature does not verify")]
    Mismatch,
    #[error("the date is not RFC 3339")]
    BadDate,
    #[error("the key file does not hold a key (base64 of 32 bytes)")]
    BadKeyFile,
}

/// An agent's private key.
pub struct AgentKey {
    key: SigningKey,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret half.
        f.debug_struct("AgentKey")
            .field("id", &self.agent_id())
            .finish_non_exhaustive()
    }
}

impl AgentKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> AgentKey {
        let seed: [u8; 32] = rand::random();
        AgentKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The key as its file holds it: base64 of the 32-byte seed, one line.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", STANDARD.encode(self.key.to_bytes()))
    }

    pub fn from_file_text(text: &str) -> Result<AgentKey, SignError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SignError::BadKeyFile)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| SignError::BadKeyFile)?;
        Ok(AgentKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public half, base64.
    pub fn public_key_base64(&self) -> String {
        STANDARD.encode(self.key.verifying_key().to_bytes())
    }

    pub fn agent_id(&self) -> String {
        agent_id(&self.key.verifying_key().to_bytes())
    }

    /// The three headers of a signed request: (name, value).
    pub fn sign_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now: OffsetDateTime,
    ) -> [(&'static str, String); 3] {
        let date = now.format(&Rfc3339).unwrap_or_default();
        let message = signed_message(method, path_and_query, &date, body);
        let signature = self.key.sign(&message);
        [
            (AGENT_HEADER, self.agent_id()),
            (DATE_HEADER, date),
            (SIGNATURE_HEADER, STANDARD.encode(signature.to_bytes())),
        ]
    }
}

/// An agent's id: `ag_` and the first 24 hex digits of the SHA-256 of its
/// public key.
pub fn agent_id(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    format!("ag_{}", &hex::encode(digest)[..24])
}

/// Decodes a base64 public key, checking it is a usable ed25519 key.
pub fn decode_public_key(text: &str) -> Result<[u8; 32], SignError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| SignError::BadPublicKey)?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| SignError::BadPublicKey)?;
    VerifyingKey::from_bytes(&key).map_err(|_| SignError::InvalidPublicKey)?;
    Ok(key)
}

/// What is signed.
pub fn signed_message(method: &str, path_and_query: &str, date: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "{}\n{}\n{}\n{}\n{}",
        crate::SCHEMA,
        method.to_ascii_uppercase(),
        path_and_query,
        date,
        hex::encode(Sha256::digest(body))
    )
    .into_bytes()
}

/// Checks a request's signature against the agent's stored public key and
/// returns the date it claims (the caller checks it against its clock).
pub fn verify_request(
    public_key: &[u8],
    method: &str,
    path_and_query: &str,
    date: &str,
    signature: &str,
    body: &[u8],
) -> Result<OffsetDateTime, SignError> {
    let key: [u8; 32] = public_key.try_into().map_err(|_| SignError::BadPublicKey)?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SignError::InvalidPublicKey)?;
    let signature = STANDARD
        .decode(signature.trim())
        .map_err(|_| SignError::BadSignature)?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| SignError::BadSignature)?;
    let signature = Signature::from_bytes(&signature);
    let message = signed_message(method, path_and_query, date, body);
    key.verify(&message, &signature)
        .map_err(|_| SignError::Mismatch)?;
    OffsetDateTime::parse(date, &Rfc3339).map_err(|_| SignError::BadDate)
}

/// SHA-256 of a body, hex: a report's digest.
pub fn body_digest(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let key = AgentKey::generate();
        let now = OffsetDateTime::now_utc();
        let [(_, id), (_, date), (_, sig)] =
            key.sign_request("post", "/api/v1/reports", b"{\"a\":1}", now);
        assert_eq!(id, key.agent_id());
        let public = decode_public_key(&key.public_key_base64()).expect("own key");
        assert_eq!(agent_id(&public), id);
        let at = verify_request(
            &public,
            "POST",
            "/api/v1/reports",
            &date,
            &sig,
            b"{\"a\":1}",
        )
        .expect("verifies");
        assert_eq!(at.unix_timestamp(), now.unix_timestamp());
        for (method, path, date2, body) in [
            ("POST", "/api/v1/reports", date.as_str(), &b"{\"a\":2}"[..]),
            ("PUT", "/api/v1/reports", date.as_str(), &b"{\"a\":1}"[..]),
            ("POST", "/api/v1/enrol", date.as_str(), &b"{\"a\":1}"[..]),
            (
                "POST",
                "/api/v1/reports",
                "2000-01-01T00:00:00Z",
                &b"{\"a\":1}"[..],
            ),
        ] {
            assert_eq!(
                verify_request(&public, method, path, date2, &sig, body),
                Err(SignError::Mismatch)
            );
        }
        let other = AgentKey::generate();
        let other_public = decode_public_key(&other.public_key_base64()).expect("key");
        assert_eq!(
            verify_request(
                &other_public,
                "POST",
                "/api/v1/reports",
                &date,
                &sig,
                b"{\"a\":1}"
            ),
            Err(SignError::Mismatch)
        );
    }

    #[test]
    fn the_key_file_round_trips_and_garbage_is_refused() {
        let key = AgentKey::generate();
        let again = AgentKey::from_file_text(&key.to_file_text()).expect("round trip");
        assert_eq!(again.agent_id(), key.agent_id());
        assert_eq!(
            AgentKey::from_file_text("not base64!").map(|k| k.agent_id()),
            Err(SignError::BadKeyFile)
        );
        assert!(!format!("{key:?}").contains(&key.to_file_text().trim().to_owned()));
    }
}
