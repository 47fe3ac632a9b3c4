//! The generic webhook: an HTTP(S) POST of the `perimeter.alert/1` document,
//! signed so that the receiver can tell it came from us and is fresh.
//!
//! # The signature
//!
//! The scheme is Stripe's and Slack's. Each attempt sends
//!
//! ```text
//! X-Perimeter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>
//! ```
//!
//! where `<t>` is the time of sending in decimal and `<body>` the exact bytes
//! of the request body. A receiver recomputes the HMAC over the timestamp as
//! it appears in the header, a `.`, and the raw body (before any JSON
//! parsing), compares it with each `v1` in constant time, and refuses a
//! timestamp further than a few minutes from its clock: a captured request
//! replayed later then fails, and the timestamp cannot be changed without
//! the key. [`verify_signature`] does exactly this, with no dependence on
//! the rest of perimeter; in Python:
//!
//! ```python
//! parts = dict(p.split("=", 1) for p in header.split(","))
//! expected = hmac.new(key, parts["t"].encode() + b"." + body, "sha256").hexdigest()
//! ok = hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) <= 300
//! ```
//!
//! The body is the same on every attempt; the timestamp, and so the
//! signature, is new each time. Receivers deduplicate on the
//! `X-Perimeter-Idempotency-Key` header (also in the body).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use perimeter_model::Alert;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::tls::TlsRoots;
use crate::{ConfigError, Delivery, Failure, IDEMPOTENCY_HEADER, Redacted, Secret, Timeouts, http};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Perimeter-Signature";

/// The longest signature header [`verify_signature`] looks at.
const MAX_SIGNATURE_HEADER: usize = 4096;

/// The most `v1` signatures one header may carry (several during a key
/// rotation, never many).
const MAX_V1_SIGNATURES: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// A webhook channel's configuration.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where to POST; a secret, since webhook URLs often carry a token.
    pub url: Secret,
    /// The HMAC-SHA256 key shared with the receiver.
    pub signing_key: Secret,
    pub tls_roots: TlsRoots,
    pub timeouts: Timeouts,
}

/// A webhook channel, ready to deliver.
pub struct Webhook {
    client: reqwest::Client,
    url: Url,
    signing_key: Secret,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &Redacted)
            .field("signing_key", &Redacted)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// Check the URL, load the TLS roots and build the client.
    pub fn new(config: WebhookConfig) -> Result<Webhook, ConfigError> {
        let url = http::parse_url("webhook", &config.url)?;
        let client = http::build_client(&config.tls_roots, config.timeouts)?;
        Ok(Webhook {
            client,
            url,
            signing_key: config.signing_key,
            timeouts: config.timeouts,
        })
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<Delivery, Failure> {
        let body = perimeter_report::alert::to_json_bytes(alert);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let signature = signature_header(self.signing_key.expose().as_bytes(), now, &body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("x-perimeter-signature"),
            HeaderValue::from_str(&signature)
                .map_err(|_| Failure::permanent("the signature is not a header value"))?,
        );
        headers.insert(
            HeaderName::from_static("x-perimeter-idempotency-key"),
            // The key's alphabet (model::IdempotencyKey) is header-safe.
            HeaderValue::from_str(alert.idempotency_key.as_str()).map_err(|_| {
                Failure::permanent(format!("the {IDEMPOTENCY_HEADER} is not a header value"))
            })?,
        );
        let answer = http::post(&self.client, &self.url, headers, body, self.timeouts).await?;
        http::judge(answer)
    }
}

/// The hex HMAC-SHA256 of `"<timestamp>.<body>"` under `key`.
pub fn sign(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = new_mac(key);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The [`SIGNATURE_HEADER`] value: `t=<timestamp>,v1=<sign(key, timestamp, body)>`.
pub fn signature_header(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(key, timestamp, body))
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (a long one is hashed first), so
    // `new_from_slice` cannot fail; the fallback is never taken.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<64 hex digits>[,v1=...]`.
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    /// The signature is right but the timestamp is too far from now: a
    /// replay, or a clock that is off.
    #[error("signature timestamp is {age_secs}s away from now, more than {tolerance_secs}s")]
    Stale { age_secs: u64, tolerance_secs: u64 },
    /// No `v1` matches: a wrong key, or a body or timestamp that changed.
    #[error("signature does not match")]
    Mismatch,
}

/// Check a [`SIGNATURE_HEADER`] as a receiver should: some `v1` is the
/// HMAC-SHA256 under `key` of the header's `t`, a `.` and `body` (compared in
/// constant time), and `t` is within `tolerance` of `now` either way. Parts
/// other than `t` and `v1` are ignored, for schemes to come. Pure: copy it.
pub fn verify_signature(
    key: &[u8],
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    if header.len() > MAX_SIGNATURE_HEADER {
        return Err(SignatureError::Malformed("longer than 4096 bytes"));
    }
    let mut timestamp: Option<&str> = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((name, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed("a part is not name=value"));
        };
        match name {
            "t" if timestamp.is_some() => {
                return Err(SignatureError::Malformed("more than one timestamp"));
            }
            "t" => timestamp = Some(value),
            "v1" if candidates.len() == MAX_V1_SIGNATURES => {
                return Err(SignatureError::Malformed("too many v1 signatures"));
            }
            "v1" => candidates.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed("the timestamp is not a number"));
    }
    let seconds: u64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Malformed("the timestamp is not a number"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    let mut mac = new_mac(key);
    // Over the timestamp as sent, so that `t=007` is checked as `007`.
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = candidates.iter().any(|candidate| {
        let Ok(bytes) = hex::decode(candidate) else {
            return false;
        };
        // `verify_slice` compares in constant time and refuses a wrong length.
        mac.clone().verify_slice(&bytes).is_ok()
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let age_secs = now.abs_diff(seconds);
    if age_secs > tolerance.as_secs() {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"whsec_test_key";
    const BODY: &[u8] = br#"{"schema":"perimeter.alert/1"}"#;
    const T: u64 = 1_795_000_000;
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231, through the same MAC the signature uses.
        let mut mac = new_mac(b"Jefe");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_verifies() {
        let header = signature_header(KEY, T, BODY);
        assert!(header.starts_with(&format!("t={T},v1=")));
        assert_eq!(header.len(), format!("t={T},v1=").len() + 64);
        assert_eq!(
            verify_signature(KEY, &header, BODY, at(T), FIVE_MINUTES),
            Ok(())
        );
        // Within the tolerance either way (clocks differ).
        assert_eq!(
            verify_signature(KEY, &header, BODY, at(T + 300), FIVE_MINUTES),
            Ok(())
        );
        assert_eq!(
            verify_signature(KEY, &header, BODY, at(T - 300), FIVE_MINUTES),
            Ok(())
        );
        // Spaces after commas, unknown schemes and a rotated-out key's v1 are fine.
        let rotated = format!(
            "t={T}, v0=abc, v1={}, v1={}",
            "00".repeat(32),
            sign(KEY, T, BODY)
        );
        assert_eq!(
            verify_signature(KEY, &rotated, BODY, at(T), FIVE_MINUTES),
            Ok(())
        );
    }

    #[test]
    fn tampering_and_replays_are_refused() {
        let header = signature_header(KEY, T, BODY);
        let verify = |key: &[u8], header: &str, body: &[u8], now: u64| {
            verify_signature(key, header, body, at(now), FIVE_MINUTES)
        };
        assert_eq!(
            verify(b"other key", &header, BODY, T),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(KEY, &header, b"{}", T),
            Err(SignatureError::Mismatch)
        );
        // A new timestamp on an old signature.
        let moved = header.replace(&format!("t={T}"), &format!("t={}", T + 1000));
        assert_eq!(
            verify(KEY, &moved, BODY, T + 1000),
            Err(SignatureError::Mismatch)
        );
        // The genuine request, replayed an hour later.
        assert_eq!(
            verify(KEY, &header, BODY, T + 3600),
            Err(SignatureError::Stale {
                age_secs: 3600,
                tolerance_secs: 300
            })
        );
        for (bad, why) in [
            ("", "a part is not name=value"),
            ("v1=00", "no timestamp"),
            (&format!("t={T}"), "no v1 signature"),
            (&format!("t={T},t={T},v1=00"), "more than one timestamp"),
            ("t=-5,v1=00", "the timestamp is not a number"),
            (
                "t=99999999999999999999999,v1=00",
                "the timestamp is not a number",
            ),
            ("t=1 2,v1=00", "the timestamp is not a number"),
        ] {
            assert_eq!(
                verify(KEY, bad, BODY, T),
                Err(SignatureError::Malformed(why)),
                "{bad}"
            );
        }
        let many = format!("t={T}{}", ",v1=00".repeat(9));
        assert_eq!(
            verify(KEY, &many, BODY, T),
            Err(SignatureError::Malformed("too many v1 signatures"))
        );
        let huge = format!("t={T},v1={}", "0".repeat(5000));
        assert_eq!(
            verify(KEY, &huge, BODY, T),
            Err(SignatureError::Malformed("longer than 4096 bytes"))
        );
        // Not hex, or a truncated MAC, never match.
        let short = format!("t={T},v1={}", &sign(KEY, T, BODY)[..32]);
        assert_eq!(verify(KEY, &short, BODY, T), Err(SignatureError::Mismatch));
        let not_hex = format!("t={T},v1={}", "zz".repeat(32));
        assert_eq!(
            verify(KEY, &not_hex, BODY, T),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_webhook_never_shows_its_url_or_key() {
        let webhook = Webhook::new(WebhookConfig {
            url: Secret::new("https://hooks.example.com/T000/s3cr3t-token"),
            signing_key: Secret::new("k3y"),
            tls_roots: TlsRoots::System,
            timeouts: Timeouts::default(),
        });
        let text = format!("{webhook:?}");
        assert!(!text.contains("s3cr3t") && !text.contains("k3y"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
