//! Snapshots of every alert rendering from fixed inputs, one of them hostile.

use expect_test::{Expect, expect};
use perimeter_model::{Alert, AlertChange, ChangeKind, ChangeState, IdempotencyKey, Severity};
use time::macros::datetime;

use super::*;

/// A subject the network could have chosen: HTML, a CRLF to start a new
/// header or log line, Slack mention and link syntax, a terminal escape that
/// clears the screen, a right-to-left override, and syslog's SD specials.
const HOSTILE: &str = "<script>alert(1)</script>\r\nX-Injected: yes <!channel> <@U0123|boss> \
                       <https://evil.example|click> & \u{1b}[2J\u{202e}txt.exe \"] \\";

fn fixture() -> Alert {
    Alert::new(
        IdempotencyKey::for_delivery("nightly", "42", "ops"),
        "nightly",
        "42",
        datetime!(2026-11-25 12:07:16 UTC),
        "scanner-1",
        vec![
            AlertChange::new(
                ChangeKind::PortClosed,
                Severity::Info,
                ChangeState::Resolved,
                "198.51.100.4:21",
                "ftp is no longer reachable",
            ),
            AlertChange::new(
                ChangeKind::AuthChanged,
                Severity::Critical,
                ChangeState::New,
                "198.51.100.7:6379",
                "redis now answers without a password",
            )
            .with_evidence("PING answered +PONG without AUTH")
            .with_evidence("redis_version:7.0.15 (INFO server)")
            .with_remedy(
                "Set requirepass (or an ACL user) in /etc/redis/redis.conf and restart \
                 redis, or bind it to 127.0.0.1 if no other host needs it.",
            ),
            AlertChange::new(
                ChangeKind::UnknownHost,
                Severity::High,
                ChangeState::New,
                HOSTILE,
                "a host that is in no environment answered",
            )
            .with_evidence(HOSTILE)
            .with_remedy("Find out whose it is."),
        ],
    )
}

fn check(actual: &str, expect: Expect) {
    expect.assert_eq(actual);
}

/// Pretty JSON, with the right-to-left override shown as `<U+202E>`: rustc
/// refuses the raw character in the snapshot's source.
fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value)
        .expect("json")
        .replace('\u{202e}', "<U+202E>")
}

#[test]
fn json_document() {
    let alert = fixture();
    // The value and the bytes a webhook signs are one document.
    let sent: serde_json::Value =
        serde_json::from_slice(&to_json_bytes(&alert)).expect("valid json");
    assert_eq!(sent, to_json(&alert));
    // The snapshot keeps the fields in their declared order, as they are
    // sent (a `serde_json::Value` would sort them).
    check(
        &pretty(&document(&alert)),
        expect![[r#"
            {
              "schema": "perimeter.alert/1",
              "idempotency_key": "nightly:42:ops",
              "job": "nightly",
              "run_id": "42",
              "host": "scanner-1",
              "created_at": "2026-11-25T12:07:16Z",
              "severity": "critical",
              "changes": [
                {
                  "kind": "auth-changed",
                  "severity": "critical",
                  "state": "new",
                  "subject": "198.51.100.7:6379",
                  "message": "redis now answers without a password",
                  "evidence": [
                    "PING answered +PONG without AUTH",
                    "redis_version:7.0.15 (INFO server)"
                  ],
                  "remedy": "Set requirepass (or an ACL user) in /etc/redis/redis.conf and restart redis, or bind it to 127.0.0.1 if no other host needs it."
                },
                {
                  "kind": "unknown-host",
                  "severity": "high",
                  "state": "new",
                  "subject": "<script>alert(1)</script>\r\nX-Injected: yes <!channel> <@U0123|boss> <https://evil.example|click> & \u001b[2J<U+202E>txt.exe \"] \\",
                  "message": "a host that is in no environment answered",
                  "evidence": [
                    "<script>alert(1)</script>\r\nX-Injected: yes <!channel> <@U0123|boss> <https://evil.example|click> & \u001b[2J<U+202E>txt.exe \"] \\"
                  ],
                  "remedy": "Find out whose it is."
                },
                {
                  "kind": "port-closed",
                  "severity": "info",
                  "state": "resolved",
                  "subject": "198.51.100.4:21",
                  "message": "ftp is no longer reachable",
                  "evidence": [],
                  "remedy": ""
                }
              ]
            }"#]],
    );
}

#[test]
fn slack_payload_escapes_mentions_and_links() {
    let payload = slack_payload(&fixture());
    let text = pretty(&payload);
    // Nothing of the hostile subject survives as Slack syntax.
    for forbidden in [
        "<!channel>",
        "<@U0123",
        "<https://",
        "<script>",
        "\\r\\n",
        "\\u001b",
    ] {
        assert!(!text.contains(forbidden), "{forbidden} in {text}");
    }
    check(
        &text,
        expect![[r#"
            {
              "blocks": [
                {
                  "text": {
                    "emoji": false,
                    "text": "perimeter: 3 changes, highest CRITICAL",
                    "type": "plain_text"
                  },
                  "type": "header"
                },
                {
                  "elements": [
                    {
                      "text": "job *nightly* · run 42 · host scanner-1 · 2026-11-25T12:07:16Z · key `nightly:42:ops`",
                      "type": "mrkdwn"
                    }
                  ],
                  "type": "context"
                },
                {
                  "text": {
                    "text": "*CRITICAL* auth-changed (new) 198.51.100.7:6379\nredis now answers without a password\n• PING answered +PONG without AUTH\n• redis_version:7.0.15 (INFO server)\n*Remedy:* Set requirepass (or an ACL user) in /etc/redis/redis.conf and restart redis, or bind it to 127.0.0.1 if no other host needs it.",
                    "type": "mrkdwn"
                  },
                  "type": "section"
                },
                {
                  "text": {
                    "text": "*HIGH* unknown-host (new) &lt;script&gt;alert(1)&lt;/script&gt;\\r\\nX-Injected: yes &lt;!channel&gt; &lt;@U0123|boss&gt; &lt;https://evil.example|click&gt; &amp; \\u{1b}[2J\\u{202e}txt.exe \"] \\\na host that is in no environment answered\n• &lt;script&gt;alert(1)&lt;/script&gt;\\r\\nX-Injected: yes &lt;!channel&gt; &lt;@U0123|boss&gt; &lt;https://evil.example|click&gt; &amp; \\u{1b}[2J\\u{202e}txt.exe \"] \\\n*Remedy:* Find out whose it is.",
                    "type": "mrkdwn"
                  },
                  "type": "section"
                },
                {
                  "text": {
                    "text": "*INFO* port-closed (resolved) 198.51.100.4:21\nftp is no longer reachable",
                    "type": "mrkdwn"
                  },
                  "type": "section"
                }
              ],
              "text": "perimeter: 3 changes on scanner-1, highest CRITICAL"
            }"#]],
    );
}

fn many_changes(n: usize) -> Alert {
    let changes = (0..n)
        .map(|idx| {
            AlertChange::new(
                ChangeKind::PortOpened,
                Severity::Medium,
                ChangeState::New,
                format!("198.51.100.{idx}:8080"),
                "a port opened",
            )
        })
        .collect();
    Alert::new(
        IdempotencyKey::for_delivery("nightly", "43", "chat"),
        "nightly",
        "43",
        datetime!(2026-11-25 12:07:16 UTC),
        "scanner-1",
        changes,
    )
}

#[test]
fn slack_blocks_are_capped_at_fifty_with_a_count_of_the_rest() {
    let fits = slack_payload(&many_changes(48));
    let blocks = fits["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), SLACK_MAX_BLOCKS);
    assert!(!pretty(&fits).contains("more, not shown"));

    let payload = slack_payload(&many_changes(60));
    let blocks = payload["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), SLACK_MAX_BLOCKS);
    // 47 changes are shown, the 50th block counts the other 13.
    assert_eq!(
        blocks[48]["text"]["text"].as_str(),
        Some("*MEDIUM* port-opened (new) 198.51.100.46:8080\na port opened")
    );
    check(
        blocks[49]["text"]["text"].as_str().expect("text"),
        expect![[
            r#"…and 13 more changes, not shown here: Slack takes 50 blocks per message. The email and webhook channels and `perimeter monitor` carry all of them."#
        ]],
    );
}

#[test]
fn slack_sections_are_cut_without_splitting_an_entity() {
    let long = format!("{}&", "a".repeat(2998));
    let cut = truncate_escaped(&slack_escape(&long), SLACK_MAX_SECTION_TEXT);
    assert_eq!(cut.chars().count(), 2999);
    assert!(cut.ends_with("a…"), "{}", &cut[cut.len() - 10..]);
    let change = AlertChange::new(
        ChangeKind::FindingNew,
        Severity::Low,
        ChangeState::New,
        "x",
        "<".repeat(5000),
    );
    let section = section(&slack_change(&change));
    let text = section["text"]["text"].as_str().expect("text");
    assert!(text.chars().count() <= SLACK_MAX_SECTION_TEXT);
    assert!(text.ends_with("&lt;…"), "{}", &text[text.len() - 20..]);

    // A long job or host name is cut in the context line and the fallback.
    let mut alert = many_changes(1);
    alert.job = "j".repeat(5000);
    alert.host = "<".repeat(5000);
    let payload = slack_payload(&alert);
    let context = payload["blocks"][1]["elements"][0]["text"]
        .as_str()
        .expect("context");
    assert!(context.chars().count() <= SLACK_MAX_SECTION_TEXT);
    let fallback = payload["text"].as_str().expect("text");
    assert!(fallback.chars().count() < 300, "{fallback}");
}

#[test]
fn email_subject_and_body() {
    let alert = fixture();
    check(
        &email_subject(&alert),
        expect!["[perimeter] CRITICAL: 3 changes on scanner-1 (nightly)"],
    );
    let only = Alert::new(
        alert.idempotency_key.clone(),
        "nightly",
        "42",
        alert.created_at,
        "scanner-1",
        vec![alert.changes[2].clone()],
    );
    // The hostile subject cannot fold into a second header.
    check(
        &email_subject(&only),
        expect![[
            r#"[perimeter] HIGH: unknown-host <script>alert(1)</script>\r\nX-Injected: yes <!channel> <@U01… on scanner-1"#
        ]],
    );
    let body = email_body(&alert);
    for line in body.lines() {
        assert!(line.chars().count() <= EMAIL_WIDTH, "too wide: {line:?}");
        assert!(
            !line.starts_with('.') && !line.starts_with("From "),
            "{line:?}"
        );
    }
    assert!(!body.contains('\u{1b}') && !body.contains('\r') && !body.contains('\u{202e}'));
    check(
        &body,
        expect![[r#"
            perimeter monitor saw 3 changes on scanner-1.

              Job:      nightly
              Run:      42
              Host:     scanner-1
              Time:     2026-11-25T12:07:16Z
              Highest:  CRITICAL
              Key:      nightly:42:ops

            [1/3] CRITICAL auth-changed (new)
                198.51.100.7:6379
                redis now answers without a password
                Evidence:
                  - PING answered +PONG without AUTH
                  - redis_version:7.0.15 (INFO server)
                Remedy:
                  Set requirepass (or an ACL user) in /etc/redis/redis.conf and
                  restart redis, or bind it to 127.0.0.1 if no other host needs it.

            [2/3] HIGH unknown-host (new)
                <script>alert(1)</script>\r\nX-Injected: yes <!channel>
                <@U0123|boss> <https://evil.example|click> &
                \u{1b}[2J\u{202e}txt.exe "] \
                a host that is in no environment answered
                Evidence:
                  - <script>alert(1)</script>\r\nX-Injected: yes <!channel>
                    <@U0123|boss> <https://evil.example|click> &
                    \u{1b}[2J\u{202e}txt.exe "] \
                Remedy:
                  Find out whose it is.

            [3/3] INFO port-closed (resolved)
                198.51.100.4:21
                ftp is no longer reachable

            -- 
            Sent by perimeter monitor. A redelivered copy carries the same key (and
            the same X-Perimeter-Idempotency-Key header).
        "#]],
    );
}

#[test]
fn email_wraps_long_words_and_counts_what_it_leaves_out() {
    let mut out = String::new();
    wrap(&mut out, &"x".repeat(150), "- ", "  ");
    check(
        &out,
        expect![[r#"
            - xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
              xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx
              xxxxxxxxxx
        "#]],
    );
    let body = email_body(&many_changes(EMAIL_MAX_CHANGES + 3));
    assert!(body.contains(&format!("[{EMAIL_MAX_CHANGES}/{}]", EMAIL_MAX_CHANGES + 3)));
    assert!(
        body.contains("...and 3 more changes, not listed here;"),
        "{body}"
    );
}

#[test]
fn syslog_messages_one_per_change() {
    let options = SyslogOptions {
        facility: Facility::Daemon,
        procid: Some(4242),
    };
    let messages = syslog_messages(&fixture(), options);
    for message in &messages {
        assert!(!message.contains(['\n', '\r', '\u{1b}']), "{message:?}");
        assert!(message.len() <= SYSLOG_MAX_MESSAGE);
    }
    check(
        &messages.join("\n"),
        expect![[r#"
            <26>1 2026-11-25T12:07:16Z scanner-1 perimeter 4242 alert [perimeter@32473 key="nightly:42:ops" job="nightly" run="42" change="1" changes="3" kind="auth-changed" state="new" severity="critical" subject="198.51.100.7:6379"] CRITICAL auth-changed (new) 198.51.100.7:6379: redis now answers without a password; evidence: PING answered +PONG without AUTH | redis_version:7.0.15 (INFO server); remedy: Set requirepass (or an ACL user) in /etc/redis/redis.conf and restart redis, or bind it to 127.0.0.1 if no other host needs it.
            <27>1 2026-11-25T12:07:16Z scanner-1 perimeter 4242 alert [perimeter@32473 key="nightly:42:ops" job="nightly" run="42" change="2" changes="3" kind="unknown-host" state="new" severity="high" subject="<script>alert(1)</script>\\r\\nX-Injected: yes <!channel> <@U0123|boss> <https://evil.example|click> & \\u{1b}[2J\\u{202e}txt.exe \"\] \\"] HIGH unknown-host (new) <script>alert(1)</script>\r\nX-Injected: yes <!channel> <@U0123|boss> <https://evil.example|click> & \u{1b}[2J\u{202e}txt.exe "] \: a host that is in no environment answered; evidence: <script>alert(1)</script>\r\nX-Injected: yes <!channel> <@U0123|boss> <https://evil.example|click> & \u{1b}[2J\u{202e}txt.exe "] \; remedy: Find out whose it is.
            <30>1 2026-11-25T12:07:16Z scanner-1 perimeter 4242 alert [perimeter@32473 key="nightly:42:ops" job="nightly" run="42" change="3" changes="3" kind="port-closed" state="resolved" severity="info" subject="198.51.100.4:21"] INFO port-closed (resolved) 198.51.100.4:21: ftp is no longer reachable"#]],
    );
}

#[test]
fn syslog_facility_nil_procid_bom_and_size_cap() {
    let mut alert = many_changes(1);
    alert.host = "scan host é".to_owned();
    alert.changes[0].message = format!("naïve {}", "m".repeat(5000));
    let options = SyslogOptions {
        facility: Facility::Local7,
        procid: None,
    };
    let messages = syslog_messages(&alert, options);
    let [message] = messages.as_slice() else {
        panic!("one change, one message: {messages:?}");
    };
    // local7 (23) * 8 + warning (4).
    assert!(
        message.starts_with(
            "<188>1 2026-11-25T12:07:16Z scan_host__ perimeter - alert [perimeter@32473 "
        ),
        "{message}"
    );
    assert!(
        message.contains("] \u{feff}MEDIUM port-opened"),
        "{message}"
    );
    assert_eq!(message.len(), SYSLOG_MAX_MESSAGE);
    assert!(message.ends_with("mmm..."));

    let empty = Alert::new(
        alert.idempotency_key.clone(),
        "nightly",
        "43",
        alert.created_at,
        "",
        Vec::new(),
    );
    check(
        &syslog_messages(&empty, SyslogOptions::default()).join("\n"),
        expect![[
            r#"<30>1 2026-11-25T12:07:16Z - perimeter - alert [perimeter@32473 key="nightly:43:chat" job="nightly" run="43"] perimeter: no changes on "#
        ]],
    );
}

#[test]
fn facilities_have_their_rfc_5424_codes_and_names() {
    assert_eq!(Facility::Kern.code(), 0);
    assert_eq!(Facility::Daemon.code(), 3);
    assert_eq!(Facility::Local0.code(), 16);
    assert_eq!(Facility::Local7.code(), 23);
    assert_eq!("LOCAL3".parse::<Facility>(), Ok(Facility::Local3));
    assert_eq!(
        "daemons".parse::<Facility>().map_err(|e| e.to_string()),
        Err("unknown syslog facility `daemons` (expected daemon, user, auth, authpriv, local0 ... local7 or another RFC 5424 name)".to_owned())
    );
}

#[test]
fn one_line_makes_controls_visible() {
    check(
        &one_line("a\nb\rc\td\u{0}e\u{7f}f\u{85}g\u{2028}h\u{202e}i\u{2066}j é 日本"),
        expect![[r#"a\nb\rc\td\u{0}e\u{7f}f\u{85}g\u{2028}h\u{202e}i\u{2066}j é 日本"#]],
    );
}

#[test]
fn a_stored_document_reads_back_to_the_same_bytes() {
    let alert = fixture();
    let bytes = to_json_bytes(&alert);
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let back = from_json(&text).expect("reads back");
    assert_eq!(to_json_bytes(&back), bytes);
    assert!(matches!(
        from_json(
            "{\"schema\":\"perimeter.scan/1\",\"idempotency_key\":\"a\",\"job\":\"j\",\"run_id\":\"1\",\"host\":\"h\",\"created_at\":\"2026-12-02T00:00:00Z\",\"changes\":[]}"
        ),
        Err(AlertParseError::Schema(_))
    ));
    assert!(from_json("not json").is_err());
}
