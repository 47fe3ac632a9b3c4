//! Slack (and Slack-compatible: Mattermost, Rocket.Chat) incoming webhooks:
//! a POST of the Block Kit payload `perimeter-report` renders.
//!
//! Slack answers `200 ok`, or an error code in the body (`400
//! invalid_payload`, `403 action_prohibited`, `404 channel_not_found`, `410
//! channel_is_archived`), or `429` with `Retry-After`; the body goes into the
//! error message, cleaned. The incoming-webhook URL is the credential, so it
//! is a [`Secret`].

use perimeter_model::Alert;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::tls::TlsRoots;
use crate::{ConfigError, Delivery, Failure, Redacted, Secret, Timeouts, http};

/// A Slack channel's configuration.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// The incoming-webhook URL (`https://hooks.slack.com/services/...`).
    pub url: Secret,
    pub tls_roots: TlsRoots,
    pub timeouts: Timeouts,
}

/// A Slack channel, ready to deliver.
pub struct Slack {
    client: reqwest::Client,
    url: Url,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("url", &Redacted)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Slack {
    pub fn new(config: SlackConfig) -> Result<Slack, ConfigError> {
        Ok(Slack {
            client: http::build_client(&config.tls_roots, config.timeouts)?,
            url: http::parse_url("Slack webhook", &config.url)?,
            timeouts: config.timeouts,
        })
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<Delivery, Failure> {
        let payload = perimeter_report::alert::slack_payload(alert);
        let body = serde_json::to_vec(&payload)
            .map_err(|err| Failure::permanent(format!("cannot encode the payload: {err}")))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Slack ignores it; a Slack-compatible receiver or a proxy in between
        // may deduplicate on it. The key is also in the message's context line.
        if let Ok(key) = HeaderValue::from_str(alert.idempotency_key.as_str()) {
            headers.insert(HeaderName::from_static("x-perimeter-idempotency-key"), key);
        }
        let answer = http::post(&self.client, &self.url, headers, body, self.timeouts).await?;
        http::judge(answer)
    }
}
