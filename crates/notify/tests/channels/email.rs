//! The email channel against aiosmtpd (`receivers/smtp_receiver.py`):
//! plain, STARTTLS and implicit TLS with a CA the test made, AUTH PLAIN and
//! LOGIN, and servers that refuse.

use std::path::PathBuf;
use std::time::Duration;

use perimeter_notify::{
    DeliveryError, Destination, Email, EmailConfig, Secret, SmtpCredentials, SmtpSecurity,
    Timeouts, TlsRoots,
};
use serde_json::Value;

use crate::common::{
    Receiver, alert, arg, channel, closed_port, make_certificates, require_python, start_receiver,
};

const PASSWORD: &str = "correct horse battery staple";

struct Smtp {
    receiver: Receiver,
    dir: tempfile::TempDir,
    maildir: PathBuf,
}

impl Smtp {
    fn start(mode: &str) -> Smtp {
        let dir = tempfile::tempdir().expect("tempdir");
        let maildir = dir.path().join("mail");
        std::fs::create_dir(&maildir).expect("maildir");
        let (_, cert, key) = make_certificates(dir.path());
        let receiver = start_receiver(
            "smtp_receiver.py",
            &[
                "--mode",
                mode,
                "--maildir",
                arg(&maildir),
                "--cert",
                arg(&cert),
                "--key",
                arg(&key),
                "--user",
                "perimeter",
                "--password",
                PASSWORD,
            ],
        );
        Smtp {
            receiver,
            dir,
            maildir,
        }
    }

    fn config(&self, security: SmtpSecurity) -> EmailConfig {
        EmailConfig {
            host: "127.0.0.1".to_owned(),
            port: Some(self.receiver.port),
            security,
            tls_roots: TlsRoots::CaFile(self.dir.path().join("ca.pem")),
            credentials: None,
            from: "perimeter <perimeter@scanner-1.example>".to_owned(),
            to: vec![
                "ops@example.com".to_owned(),
                "oncall@example.com".to_owned(),
            ],
            hello_name: Some("scanner-1.example".to_owned()),
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                overall: Duration::from_secs(5),
            },
        }
    }

    /// The stored messages: (raw message, envelope facts), in arrival order.
    fn messages(&self) -> Vec<(String, Value)> {
        let mut messages = Vec::new();
        for n in 1.. {
            let facts = self.maildir.join(format!("{n}.json"));
            let Ok(facts) = std::fs::read_to_string(facts) else {
                break;
            };
            let raw = std::fs::read_to_string(self.maildir.join(format!("{n}.eml"))).expect("eml");
            messages.push((raw, serde_json::from_str(&facts).expect("facts")));
        }
        messages
    }
}

fn email(config: EmailConfig) -> Destination {
    Destination::Email(Email::new(config).expect("email"))
}

fn login(password: &str) -> Option<SmtpCredentials> {
    Some(SmtpCredentials {
        username: "perimeter".to_owned(),
        password: Secret::new(password),
    })
}

/// The headers of a message (unfolded) and its body.
fn split(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers and body");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("a folded line follows a header");
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("name: value");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(found.len(), 1, "one {name} header: {headers:?}");
    found[0]
}

#[tokio::test]
async fn a_plain_mail_arrives_with_its_headers_and_body() {
    if !require_python(true) {
        return;
    }
    let smtp = Smtp::start("plain");
    let alert = alert("mail");
    let mail = channel("mail", email(smtp.config(SmtpSecurity::None)));
    let delivery = mail.deliver(&alert).await.expect("delivered");
    assert_eq!(delivery.receipt, "250 2.0.0 OK: queued as 1");
    // A retry sends the same message: the same Message-ID and Date.
    mail.deliver(&alert).await.expect("delivered again");

    let messages = smtp.messages();
    let [(first, facts), (second, _)] = messages.as_slice() else {
        panic!("two messages: {messages:?}");
    };
    assert_eq!(facts["mail_from"], "perimeter@scanner-1.example");
    assert_eq!(
        facts["rcpt_tos"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(facts["tls"], false);

    let (headers, body) = split(first);
    let (headers_again, _) = split(second);
    assert_eq!(
        header(&headers, "subject"),
        "[perimeter] CRITICAL: 3 changes on scanner-1 (nightly)"
    );
    assert_eq!(
        header(&headers, "from"),
        "perimeter <perimeter@scanner-1.example>"
    );
    assert_eq!(
        header(&headers, "to"),
        "ops@example.com, oncall@example.com"
    );
    assert_eq!(
        header(&headers, "x-perimeter-idempotency-key"),
        "nightly:42:mail"
    );
    assert_eq!(header(&headers, "auto-submitted"), "auto-generated");
    assert_eq!(header(&headers, "date"), "Wed, 25 Nov 2026 12:07:16 +0000");
    let message_id = header(&headers, "message-id");
    assert!(
        message_id.starts_with('<') && message_id.ends_with(".perimeter@scanner-1.example>"),
        "{message_id}"
    );
    assert_eq!(message_id, header(&headers_again, "message-id"));
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    // No header came from the hostile subject.
    assert!(
        !headers.iter().any(|(name, _)| name == "x-injected"),
        "{headers:?}"
    );
    assert_eq!(header(&headers, "content-transfer-encoding"), "7bit");
    // The body as rendered, with CRLF line ends (and the line end before
    // SMTP's final dot, which the server keeps).
    assert_eq!(
        body.replace("\r\n", "\n").trim_end(),
        perimeter_report::alert::email_body(&alert).trim_end()
    );
}

#[tokio::test]
async fn starttls_with_the_configured_ca() {
    if !require_python(true) {
        return;
    }
    let smtp = Smtp::start("starttls");
    let mail = channel("mail", email(smtp.config(SmtpSecurity::StartTlsRequired)));
    mail.deliver(&alert("mail")).await.expect("delivered");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1["tls"], true);

    // The system's CAs do not vouch for the test CA's certificate: no mail,
    // and transient (the server's certificate may be fixed).
    let doubting = channel(
        "mail",
        email(EmailConfig {
            tls_roots: TlsRoots::System,
            ..smtp.config(SmtpSecurity::StartTlsRequired)
        }),
    );
    let err = doubting.deliver(&alert("mail")).await.expect_err("refused");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn implicit_tls() {
    if !require_python(true) {
        return;
    }
    let smtp = Smtp::start("smtps");
    let mail = channel("mail", email(smtp.config(SmtpSecurity::ImplicitTls)));
    mail.deliver(&alert("mail")).await.expect("delivered");
    assert_eq!(smtp.messages().len(), 1);
}

#[tokio::test]
async fn required_starttls_never_falls_back_to_plain_text() {
    if !require_python(true) {
        return;
    }
    let smtp = Smtp::start("plain");
    let mail = channel("mail", email(smtp.config(SmtpSecurity::StartTlsRequired)));
    let err = mail
        .deliver(&alert("mail"))
        .await
        .expect_err("no STARTTLS offered");
    assert!(err.is_transient(), "{err}");
    assert!(smtp.messages().is_empty(), "a mail went out in clear");
}

#[tokio::test]
async fn auth_plain_and_login_over_starttls() {
    if !require_python(true) {
        return;
    }
    for (mode, mechanism) in [("auth", "PLAIN"), ("auth-login", "LOGIN")] {
        let smtp = Smtp::start(mode);
        let mail = channel(
            "mail",
            email(EmailConfig {
                credentials: login(PASSWORD),
                ..smtp.config(SmtpSecurity::StartTlsRequired)
            }),
        );
        mail.deliver(&alert("mail")).await.expect("delivered");
        let messages = smtp.messages();
        let facts = &messages[0].1;
        assert_eq!(facts["authenticated"], true, "{mode}");
        assert_eq!(facts["login"], "perimeter", "{mode}");
        assert_eq!(facts["mechanism"], mechanism, "{mode}");
        assert_eq!(facts["tls"], true, "{mode}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_permanent_and_never_shown() {
    if !require_python(true) {
        return;
    }
    let smtp = Smtp::start("auth");
    let mail = channel(
        "mail",
        email(EmailConfig {
            credentials: login("wrong password"),
            ..smtp.config(SmtpSecurity::StartTlsRequired)
        }),
    );
    let err = mail.deliver(&alert("mail")).await.expect_err("refused");
    assert!(!err.is_transient(), "{err}");
    let text = format!("{err} {err:?} {mail:?}");
    assert!(text.contains("535"), "{text}");
    assert!(!text.contains("wrong password"), "{text}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn a_5xx_is_permanent_and_a_4xx_transient() {
    if !require_python(true) {
        return;
    }
    let refusing = Smtp::start("refuse5");
    let mail = channel("mail", email(refusing.config(SmtpSecurity::None)));
    let err = mail.deliver(&alert("mail")).await.expect_err("refused");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "channel mail: the mail server 127.0.0.1:{} refused the alert: permanent error \
             (550): 5.1.1 no such mailbox\\u{{1b}}[2J",
            refusing.receiver.port
        )
    );

    let deferring = Smtp::start("refuse4");
    let mail = channel("mail", email(deferring.config(SmtpSecurity::None)));
    let err: DeliveryError = mail.deliver(&alert("mail")).await.expect_err("deferred");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("(451)"), "{err}");
}

#[tokio::test]
async fn a_mail_server_that_is_down_is_transient() {
    let config = EmailConfig {
        host: "127.0.0.1".to_owned(),
        port: Some(closed_port()),
        security: SmtpSecurity::None,
        tls_roots: TlsRoots::System,
        credentials: None,
        from: "perimeter@scanner-1.example".to_owned(),
        to: vec!["ops@example.com".to_owned()],
        hello_name: None,
        timeouts: Timeouts::default(),
    };
    let mail = channel("mail", email(config));
    let err = mail.deliver(&alert("mail")).await.expect_err("down");
    assert!(err.is_transient(), "{err}");
}
