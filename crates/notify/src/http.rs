//! The HTTP POST the webhook and Slack channels share: one client per
//! channel, a bounded read of the answer, and the answer judged delivered,
//! transient or permanent.
//!
//! The client follows no redirect (a redirect would carry the signed alert
//! to a host nobody configured), uses no proxy from the environment, keeps no
//! idle connection (alerts are minutes apart; a stale pooled connection
//! would only fail the next one), and speaks HTTP/1.1 over rustls.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::tls::TlsRoots;
use crate::{
    ConfigError, Delivery, Failure, MAX_ANSWER_BYTES, Secret, Timeouts, clean_answer, error_chain,
    seconds,
};

/// The longest wait a `Retry-After` can ask for; a longer one is taken as
/// this, so a hostile answer cannot park a channel for years.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How much of an answer's body goes into a receipt or an error message.
const ANSWER_IN_MESSAGE: usize = 200;

/// A URL from a secret, checked: it parses, is http or https, has a host.
/// Errors never repeat the URL.
pub(crate) fn parse_url(what: &'static str, url: &Secret) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url.expose()).map_err(|err| ConfigError::Url {
        what,
        reason: format!("does not parse ({err})"),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::Url {
            what,
            reason: format!("must be http or https, not {}", parsed.scheme()),
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::Url {
            what,
            reason: "has no host".to_owned(),
        });
    }
    Ok(parsed)
}

/// The HTTP client of one channel.
pub(crate) fn build_client(
    roots: &TlsRoots,
    timeouts: Timeouts,
) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(roots.http_client_config()?)
        .http1_only()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.overall)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .user_agent(concat!("perimeter/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| ConfigError::HttpClient(error_chain(&err.without_url())))
}

/// What a receiver answered: the status, the delay it asked for, and the
/// first [`MAX_ANSWER_BYTES`] of its body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
    /// Bytes of the body read, those kept and the rest of the last chunk.
    pub(crate) bytes_read: u64,
    /// Why the body was not read to its end, when it was not.
    pub(crate) body_cut: Option<String>,
}

/// POST `body` to `url` and read at most [`MAX_ANSWER_BYTES`] of the answer.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &Url,
    headers: HeaderMap,
    body: Vec<u8>,
    timeouts: Timeouts,
) -> Result<Answer, Failure> {
    let mut response = client
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|err| send_failure(err, url, timeouts))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, OffsetDateTime::now_utc()));
    let mut answer = Answer {
        status,
        retry_after,
        body: Vec::new(),
        bytes_read: 0,
        body_cut: None,
    };
    // Chunk by chunk, so that a huge or endless body is never held: hyper
    // hands over what one read of its bounded buffer brought, we keep the
    // first MAX_ANSWER_BYTES and drop the response (closing the connection)
    // once we have them.
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                answer.bytes_read += chunk.len() as u64;
                let room = MAX_ANSWER_BYTES.saturating_sub(answer.body.len());
                answer
                    .body
                    .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
                if answer.body.len() >= MAX_ANSWER_BYTES {
                    answer.body_cut = Some(format!(
                        "stopped reading the answer after {} bytes",
                        answer.bytes_read
                    ));
                    break;
                }
            }
            Ok(None) => break,
            // The status line came, so the receiver has decided; a body that
            // breaks off or stalls changes nothing about that.
            Err(err) => {
                answer.body_cut = Some(scrub(&error_chain(&err.without_url()), url));
                break;
            }
        }
    }
    Ok(answer)
}

/// Judge an answer: 2xx delivered; 408, 429 and 5xx transient; anything
/// else (a redirect, another 4xx) permanent.
pub(crate) fn judge(answer: Answer) -> Result<Delivery, Failure> {
    let status = answer.status;
    let mut said = format!("HTTP {status}");
    let body = clean_answer(&answer.body, ANSWER_IN_MESSAGE);
    if !body.is_empty() {
        said.push_str(": ");
        said.push_str(&body);
    }
    if let Some(cut) = &answer.body_cut {
        said.push_str(&format!(" ({cut})"));
    }
    if status.is_success() {
        return Ok(Delivery {
            receipt: said,
            answer_bytes_read: answer.bytes_read,
        });
    }
    if status.is_redirection() {
        return Err(Failure::permanent(format!(
            "the receiver answered {said}; redirects are not followed, configure the final URL"
        )));
    }
    let transient = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || status.is_informational();
    if transient {
        Err(Failure::transient_after(
            format!("the receiver answered {said}"),
            answer.retry_after,
        ))
    } else {
        Err(Failure::permanent(format!(
            "the receiver refused the alert: {said}"
        )))
    }
}

/// A request that got no answer: always transient, since the receiver never
/// said no.
fn send_failure(err: reqwest::Error, url: &Url, timeouts: Timeouts) -> Failure {
    let (is_timeout, is_connect, is_builder) =
        (err.is_timeout(), err.is_connect(), err.is_builder());
    let chain = scrub(&error_chain(&err.without_url()), url);
    if is_timeout {
        Failure::transient(format!(
            "no answer within {} ({chain})",
            seconds(timeouts.overall)
        ))
    } else if is_connect {
        Failure::transient(format!("cannot connect: {chain}"))
    } else if is_builder {
        Failure::permanent(format!("cannot make the request: {chain}"))
    } else {
        Failure::transient(chain)
    }
}

/// `text` with the URL's path and query taken out, should a library ever
/// quote them: they carry the receiver's token.
fn scrub(text: &str, url: &Url) -> String {
    let mut text = text.replace(url.as_str(), "[url]");
    if url.path().len() > 1 {
        text = text.replace(url.path(), "[path]");
    }
    if let Some(query) = url.query().filter(|query| !query.is_empty()) {
        text = text.replace(query, "[query]");
    }
    text
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3),
/// at most [`MAX_RETRY_AFTER`]; a date in the past is no delay.
pub(crate) fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = OffsetDateTime::parse(value, &Rfc2822).ok()?;
    let wait = at - now;
    Some(
        Duration::try_from(wait)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = datetime!(2026-11-25 12:00:00 UTC);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    fn answer(status: u16, body: &[u8]) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            retry_after: None,
            body: body.to_vec(),
            bytes_read: body.len() as u64,
            body_cut: None,
        }
    }

    #[test]
    fn answers_are_judged_by_status() {
        assert_eq!(
            judge(answer(204, b"")),
            Ok(Delivery {
                receipt: "HTTP 204 No Content".to_owned(),
                answer_bytes_read: 0
            })
        );
        for status in [408, 429, 500, 502, 503, 504] {
            let failure = judge(answer(status, b"busy")).expect_err("not delivered");
            assert!(
                matches!(failure.retry, crate::Retry::Transient { .. }),
                "{status}"
            );
        }
        for status in [301, 400, 401, 403, 404, 410, 413, 422] {
            let failure = judge(answer(status, b"no")).expect_err("not delivered");
            assert_eq!(failure.retry, crate::Retry::Permanent, "{status}");
        }
        let failure = judge(answer(404, b"no_such\r\nchannel\x1b[2J")).expect_err("404");
        assert_eq!(
            failure.reason,
            "the receiver refused the alert: HTTP 404 Not Found: no_such\\r\\nchannel\\u{1b}[2J"
        );
    }

    #[test]
    fn urls_are_checked_and_never_quoted() {
        let url = |text: &str| parse_url("webhook", &Secret::new(text)).map_err(|e| e.to_string());
        assert!(url("https://hooks.example.com/services/T0/B0/s3cr3t").is_ok());
        assert_eq!(
            url("ftp://hooks.example.com/s3cr3t"),
            Err("the webhook URL must be http or https, not ftp".to_owned())
        );
        let err = url("hooks.example.com/s3cr3t").expect_err("no scheme");
        assert!(!err.contains("s3cr3t"), "{err}");
        let parsed = Url::parse("https://h.example/services/T0/s3cr3t?token=abc").expect("url");
        assert_eq!(
            scrub(
                "error for https://h.example/services/T0/s3cr3t?token=abc and /services/T0/s3cr3t token=abc",
                &parsed
            ),
            "error for [url] and [path] [query]"
        );
    }
}
