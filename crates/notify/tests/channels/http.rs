//! The webhook and Slack channels against `receivers/http_receiver.py`,
//! which verifies the signature with Python's hmac module.

use std::time::{Duration, Instant};

use perimeter_notify::{
    DeliveryError, Destination, MAX_ANSWER_BYTES, Secret, Slack, SlackConfig, Timeouts, TlsRoots,
    Webhook, WebhookConfig,
};
use serde_json::Value;

use crate::common::{
    HOSTILE, Receiver, alert, arg, channel, closed_port, make_certificates, require_python,
    start_receiver,
};

const KEY: &str = "whsec_perimeter_test";

/// A path and query such as real webhook URLs carry their tokens in; no
/// error message may show them.
const SECRET_PATH: &str = "/hooks/T0001/s3cr3t-path?token=s3cr3t-query";

struct Http {
    receiver: Receiver,
    dir: tempfile::TempDir,
}

impl Http {
    /// The receiver in `mode`, over TLS when `tls`.
    fn start(mode: &str, tls: bool) -> Http {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, KEY).expect("key file");
        let record = dir.path().join("record.jsonl");
        let mut args = vec![
            "--mode".to_owned(),
            mode.to_owned(),
            "--record".to_owned(),
            arg(&record).to_owned(),
            "--key-file".to_owned(),
            arg(&key_file).to_owned(),
        ];
        if tls {
            let (_, cert, key) = make_certificates(dir.path());
            args.extend([
                "--tls-cert".to_owned(),
                arg(&cert).to_owned(),
                "--tls-key".to_owned(),
                arg(&key).to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let receiver = start_receiver("http_receiver.py", &args);
        Http { receiver, dir }
    }

    fn url(&self, scheme: &str) -> Secret {
        Secret::new(format!(
            "{scheme}://127.0.0.1:{}{SECRET_PATH}",
            self.receiver.port
        ))
    }

    fn ca_file(&self) -> TlsRoots {
        TlsRoots::CaFile(self.dir.path().join("ca.pem"))
    }

    /// What the receiver recorded, one value per line.
    fn records(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("record.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("record line"))
            .collect()
    }
}

fn webhook(url: Secret, roots: TlsRoots, timeouts: Timeouts) -> Destination {
    Destination::Webhook(
        Webhook::new(WebhookConfig {
            url,
            signing_key: Secret::new(KEY),
            tls_roots: roots,
            timeouts,
        })
        .expect("webhook"),
    )
}

fn quick() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        overall: Duration::from_secs(3),
    }
}

/// The error, checked not to show the URL's secret path or query.
fn failed(result: Result<perimeter_notify::Delivery, DeliveryError>) -> DeliveryError {
    let err = result.expect_err("the delivery should fail");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cr3t"), "the URL leaked: {text}");
    err
}

#[tokio::test]
async fn a_signed_webhook_is_delivered_and_verified_by_the_receiver() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("ok", false);
    let alert = alert("hooks");
    let channel = channel(
        "hooks",
        webhook(http.url("http"), TlsRoots::System, quick()),
    );
    let delivery = channel.deliver(&alert).await.expect("delivered");
    assert_eq!(delivery.receipt, "HTTP 200 OK: ok");

    let records = http.records();
    let [request] = records.as_slice() else {
        panic!("one request: {records:?}");
    };
    assert_eq!(request["signature_valid"], true, "{request}");
    assert_eq!(request["path"], SECRET_PATH);
    let headers = &request["headers"];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-perimeter-idempotency-key"], "nightly:42:hooks");
    let body: Value = serde_json::from_str(request["body"].as_str().expect("body")).expect("json");
    assert_eq!(body["schema"], "perimeter.alert/1");
    assert_eq!(body["idempotency_key"], "nightly:42:hooks");
    // Worst first; the hostile subject arrives as data, byte for byte.
    assert_eq!(body["changes"][0]["kind"], "auth-changed");
    assert_eq!(body["changes"][1]["subject"], HOSTILE);
    assert_eq!(
        request["body"].as_str().map(str::as_bytes),
        Some(perimeter_report::alert::to_json_bytes(&alert).as_slice())
    );
}

#[tokio::test]
async fn a_webhook_over_https_trusts_only_the_configured_ca() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("ok", true);
    let alert = alert("hooks");
    let trusting = channel("hooks", webhook(http.url("https"), http.ca_file(), quick()));
    trusting.deliver(&alert).await.expect("delivered over TLS");
    assert_eq!(http.records()[0]["signature_valid"], true);

    // The system's CAs never issued the test CA's certificate: refused, and
    // transient (whoever runs the receiver may fix it without us).
    let doubting = channel(
        "hooks",
        webhook(http.url("https"), TlsRoots::System, quick()),
    );
    let err = failed(doubting.deliver(&alert).await);
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(http.records().len(), 1, "nothing reached the receiver");
}

#[tokio::test]
async fn a_500_is_transient() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("status:500", false);
    let hook = channel(
        "hooks",
        webhook(http.url("http"), TlsRoots::System, quick()),
    );
    let err = failed(hook.deliver(&alert("hooks")).await);
    assert!(err.is_transient(), "{err}");
    // The receiver's hostile body is cleaned.
    assert_eq!(
        err.to_string(),
        "channel hooks: the receiver answered HTTP 500 Internal Server Error: \
         no_such_hook\\r\\nX-Evil: \\u{1b}[2J"
    );
}

#[tokio::test]
async fn a_429_is_transient_and_says_when_to_retry() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("status:429", false);
    let hook = channel(
        "hooks",
        webhook(http.url("http"), TlsRoots::System, quick()),
    );
    let err = failed(hook.deliver(&alert("hooks")).await);
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn a_404_is_permanent() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("status:404", false);
    let hook = channel(
        "hooks",
        webhook(http.url("http"), TlsRoots::System, quick()),
    );
    let err = failed(hook.deliver(&alert("hooks")).await);
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .starts_with("channel hooks: the receiver refused the alert: HTTP 404")
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("hang", false);
    let hook = channel(
        "hooks",
        webhook(http.url("http"), TlsRoots::System, quick()),
    );
    let started = Instant::now();
    let err = failed(hook.deliver(&alert("hooks")).await);
    let took = started.elapsed();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("no answer within 3s"), "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // The request did arrive: the receiver held it and said nothing.
    assert_eq!(http.records().len(), 1);
}

#[tokio::test]
async fn a_huge_answer_is_not_read() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("huge", false);
    let hook = channel(
        "hooks",
        webhook(http.url("http"), TlsRoots::System, quick()),
    );
    let peak_before = peak_rss_kib();
    let delivery = hook
        .deliver(&alert("hooks"))
        .await
        .expect("a 200 is a delivery");
    let peak_after = peak_rss_kib();
    // hyper hands the body over in reads of its bounded buffer; the client
    // keeps MAX_ANSWER_BYTES and stops after the chunk that reached them.
    eprintln!(
        "read {} of 104857600 bytes; peak RSS {peak_before} KiB -> {peak_after} KiB",
        delivery.answer_bytes_read
    );
    assert!(delivery.answer_bytes_read >= MAX_ANSWER_BYTES as u64);
    assert!(delivery.answer_bytes_read <= 1024 * 1024, "{delivery:?}");
    assert!(
        delivery.receipt.starts_with("HTTP 200 OK: xxxx")
            && delivery
                .receipt
                .contains("(stopped reading the answer after "),
        "{}",
        delivery.receipt
    );
    assert!(
        peak_after - peak_before < 32 * 1024,
        "{peak_before} -> {peak_after} KiB"
    );
    // The receiver could not push the 100 MB: the client hung up.
    let written = wait_for_record(&http, "huge_bytes_written").await;
    eprintln!("the receiver got {written} bytes out before the client hung up");
    assert!(
        written < 100 * 1024 * 1024,
        "the receiver wrote {written} bytes"
    );
}

/// The value the receiver recorded under `field`, once it has. Async: the
/// client's connection task must run to close the connection.
async fn wait_for_record(http: &Http, field: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = http
            .records()
            .iter()
            .find_map(|record| record[field].as_u64())
        {
            return value;
        }
        assert!(Instant::now() < deadline, "no {field} recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This process's peak resident set size (VmHWM), in KiB.
fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    let url = Secret::new(format!("http://127.0.0.1:{}{SECRET_PATH}", closed_port()));
    let hook = channel("hooks", webhook(url, TlsRoots::System, quick()));
    let err = failed(hook.deliver(&alert("hooks")).await);
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .starts_with("channel hooks: cannot connect: "),
        "{err}"
    );
}

fn slack(url: Secret) -> Destination {
    Destination::Slack(
        Slack::new(SlackConfig {
            url,
            tls_roots: TlsRoots::System,
            timeouts: quick(),
        })
        .expect("slack"),
    )
}

#[tokio::test]
async fn slack_gets_block_kit_with_the_hostile_text_escaped() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("ok", false);
    let chat = channel("chat", slack(http.url("http")));
    chat.deliver(&alert("chat")).await.expect("delivered");
    let records = http.records();
    let body: Value =
        serde_json::from_str(records[0]["body"].as_str().expect("body")).expect("json");
    let blocks = body["blocks"].as_array().expect("blocks");
    assert_eq!(
        blocks.len(),
        2 + 3,
        "header, context, one section per change"
    );
    assert_eq!(blocks[0]["type"], "header");
    let hostile = blocks[3]["text"]["text"].as_str().expect("section text");
    assert!(
        hostile.starts_with(
            "*HIGH* unknown-host (new) &lt;script&gt;x&lt;/script&gt;\\r\\nX-Injected: yes &lt;!channel&gt;"
        ),
        "{hostile}"
    );
    assert!(
        !records[0]["body"]
            .as_str()
            .unwrap_or("")
            .contains("<!channel>")
    );
}

#[tokio::test]
async fn slack_refusing_the_payload_is_permanent() {
    if !require_python(false) {
        return;
    }
    let http = Http::start("status:400", false);
    let chat = channel("chat", slack(http.url("http")));
    let err = failed(chat.deliver(&alert("chat")).await);
    assert!(!err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains("HTTP 400 Bad Request: no_such_hook"),
        "{err}"
    );
}
