//! The `[monitor]` parser: a full example, every kind of error with its
//! place, and the secrets policy.

use std::path::Path;

use expect_test::{Expect, expect};
use perimeter_checks::environments::parse_environments;

use super::*;

const ENVIRONMENTS: &str = r#"
[[environment]]
name = "prod"
kind = "prod"
ranges = ["198.18.10.0/24"]
public_ports = [443]

[[environment]]
name = "dev"
kind = "dev"
ranges = ["198.18.20.0/24"]
allow_from = ["198.18.99.0/24"]
"#;

/// Lines of `ENVIRONMENTS` and the blank line after it, before the
/// `[monitor]` text a test gives.
const PREFIX_LINES: usize = 13;

fn parse_with(monitor: &str, readable_by_others: bool) -> Result<Option<MonitorConfig>, String> {
    let text = format!("{ENVIRONMENTS}\n{monitor}");
    let path = Path::new("perimeter.toml");
    let environments = parse_environments(&text, path).map_err(|e| e.to_string())?;
    parse(
        &text,
        path,
        ParseContext {
            environments: &environments,
            readable_by_others,
        },
    )
    .map_err(|e| e.to_string())
}

/// The error, its line made relative to the `[monitor]` text given.
fn error(monitor: &str, expect: Expect) {
    let message = parse_with(monitor, false).expect_err("refused");
    let rest = message.strip_prefix("perimeter.toml:").expect("a place");
    let (line, rest) = rest.split_once(':').expect("line");
    let line: usize = line.parse().expect("number");
    expect.assert_eq(&format!("line {}:{rest}", line - PREFIX_LINES));
}

const FULL: &str = r#"[monitor]
metrics = "127.0.0.1:19464"
close_after = 3
min_severity = "high"

[[monitor.scan]]
name = "outside"
targets = ["env:prod", "env:dev", "198.18.30.0/28"]
exclude = ["198.18.30.1"]
ports = "top:100"
every = "6h"
jitter = "10m"
spread = "5h"

[[monitor.scan]]
name = "nightly-full"
targets = ["198.18.10.0/24"]
ports = "1-65535"
profile = "normal"
syn = true
cron = "0 3 * * *"

[monitor.audit]
every = "1h"

[monitor.verify]
cron = "30 */4 * * *"
also = ["198.18.0.0/16"]

[[monitor.channel]]
name = "ops-hook"
kind = "webhook"
url = { env = "PERIMETER_WEBHOOK_URL" }
signing_key = { file = "/etc/perimeter/webhook.key" }
min_severity = "medium"

[[monitor.channel]]
name = "mail"
kind = "email"
server = "mail.lab.example"
from = "perimeter <perimeter@lab.example>"
to = ["ops@lab.example"]
username = "perimeter"
password = { file = "/etc/perimeter/smtp.pass" }
kinds = ["port-opened", "auth-changed"]

[[monitor.channel]]
name = "log"
kind = "syslog"
target = "udp://127.0.0.1:514"
facility = "local3"

[[monitor.channel]]
name = "pager"
kind = "command"
argv = ["/usr/local/bin/page", "--team", "ops"]
timeout = "10s"
"#;

#[test]
fn a_full_configuration_parses() {
    let config = parse_with(FULL, false)
        .expect("parses")
        .expect("a [monitor]");
    assert_eq!(
        config.job_names(),
        ["outside", "nightly-full", "audit", "verify"]
    );
    assert_eq!(config.metrics, "127.0.0.1:19464".parse().ok());
    assert_eq!(config.close_after, 3);
    assert_eq!(config.min_severity, Severity::High);
    let outside = &config.scans[0];
    assert_eq!(
        outside.targets,
        [
            JobTarget::Environment("prod".into()),
            JobTarget::Environment("dev".into()),
            JobTarget::Target("198.18.30.0/28".into()),
        ]
    );
    assert_eq!(outside.profile, Profile::Stealth, "stealth unless told");
    assert_eq!(outside.ports.len(), 100);
    assert_eq!(outside.schedule.describe(), "every 6h");
    assert_eq!(outside.jitter, Duration::from_secs(600));
    assert_eq!(outside.spread, Some(Duration::from_secs(5 * 3600)));
    let nightly = &config.scans[1];
    assert!(nightly.syn);
    assert_eq!(nightly.ports.len(), 65535);
    assert_eq!(nightly.schedule.describe(), "cron 0 3 * * *");
    assert_eq!(config.channels.len(), 4);
    assert_eq!(config.channels[0].filter.min_severity, Severity::Medium);
    assert_eq!(
        config.channels[1]
            .filter
            .kinds
            .as_ref()
            .map(|kinds| kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>()),
        Some(vec!["port-opened", "auth-changed"])
    );
    assert!(matches!(
        config.channels[2].kind,
        ChannelKind::Syslog {
            target: SyslogTarget::Udp(_),
            facility: Facility::Local3
        }
    ));
}

#[test]
fn no_monitor_part_is_no_monitor() {
    assert!(parse_with("", false).expect("parses").is_none());
    let config = parse_with("[monitor]\n", false)
        .expect("parses")
        .expect("empty");
    assert!(config.job_names().is_empty());
    assert_eq!(config.metrics, DEFAULT_METRICS.parse().ok());
    assert_eq!(config.close_after, 2);
}

#[test]
fn a_fleet_job_parses_and_its_name_is_reserved() {
    let config = parse_with("[monitor.fleet]\nevery = \"5m\"\n", false)
        .expect("parses")
        .expect("a [monitor]");
    assert_eq!(config.job_names(), ["fleet"]);
    let fleet = config.fleet.as_ref().expect("the fleet job");
    assert_eq!(fleet.schedule.describe(), "every 5m");
    assert_eq!(fleet.silent_after, Duration::from_secs(1800));
    let config = parse_with(
        "[monitor.fleet]\nevery = \"5m\"\nsilent_after = \"2h\"\n",
        false,
    )
    .expect("parses")
    .expect("a [monitor]");
    assert_eq!(
        config.fleet.as_ref().map(|f| f.silent_after),
        Some(Duration::from_secs(7200))
    );
    error(
        "[[monitor.scan]]\nname = \"fleet\"\ntargets = [\"198.18.0.1\"]\nevery = \"1h\"\n",
        expect![[
            r#"line 2:8: `fleet` is the name of the monitor's fleet job; name this scan job otherwise"#
        ]],
    );
    error(
        "[monitor.fleet]\nevery = \"5m\"\nsilent_after = \"soon\"\n",
        expect![[r#"line 3:16: silent_after `soon` is not a duration like 90s, 15m, 6h, 1d"#]],
    );
}

#[test]
fn errors_say_where() {
    error(
        "[monitor]\nbogus = 1\n",
        expect![[
            r#"line 2:1: unknown field `bogus`, expected one of `metrics`, `close_after`, `tls_expiry_days`, `min_severity`, `vantage`, `scan`, `audit`, `fleet`, `verify`, `channel`"#
        ]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"env:staging\"]\nevery = \"1h\"\n",
        expect![[r#"line 3:12: no environment `staging` (this file defines: prod, dev)"#]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.0/33\"]\nevery = \"1h\"\n",
        expect![[r#"line 3:12: invalid target `198.18.0.0/33`: the prefix length is too long"#]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\ncron = \"0 3 * *\"\n",
        expect![[
            r#"line 4:8: `0 3 * *` has 4 fields; a cron expression has five (minute hour day-of-month month day-of-week), like `0 3 * * *`"#
        ]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\ncron = \"61 3 * * *\"\n",
        expect![
            "line 4:8: `61 3 * * *` is not a cron expression: Component error: Number out of bounds."
        ],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\n",
        expect![[r#"line 1:3: job `a` needs a schedule: `every = "6h"` or `cron = "0 3 * * *"`"#]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\nevery = \"6h\"\ncron = \"0 3 * * *\"\n",
        expect![[r#"line 5:8: job `a`: give `every` or `cron`, not both"#]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\nevery = \"often\"\n",
        expect![[r#"line 4:9: every `often` is not a duration like 90s, 15m, 6h, 1d"#]],
    );
    error(
        "[[monitor.scan]]\nname = \"audit\"\ntargets = [\"198.18.0.1\"]\nevery = \"1h\"\n",
        expect![[
            r#"line 2:8: `audit` is the name of the monitor's audit job; name this scan job otherwise"#
        ]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\nevery = \"1h\"\n[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.2\"]\nevery = \"1h\"\n",
        expect![[r#"line 6:8: job `a` is defined twice"#]],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\nevery = \"1h\"\nports = \"0-10\"\n",
        expect!["line 5:9: invalid port `0-10` in `0-10`: port 0 cannot be scanned"],
    );
    error(
        "[[monitor.scan]]\nname = \"a\"\ntargets = [\"198.18.0.1\"]\nevery = \"1h\"\nprofile = \"turbo\"\n",
        expect!["line 5:11: unknown scan profile `turbo` (expected fast, normal or stealth)"],
    );
    error(
        "[monitor.verify]\nevery = \"1h\"\nonly = [\"qa\"]\n",
        expect![[r#"line 3:9: no environment `qa` (this file defines: prod, dev)"#]],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"pigeon\"\n",
        expect![[
            r#"line 3:8: channel kind `pigeon` is not one of webhook, slack, email, syslog, command"#
        ]],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"syslog\"\nserver = \"mail\"\n",
        expect![[r#"line 4:10: `server` is not a setting of a syslog channel"#]],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"webhook\"\nurl = { env = \"U\" }\n",
        expect!["line 1:1: a webhook channel needs `signing_key`"],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://hooks.example/abc\"\nsigning_key = { env = \"K\" }\n",
        expect![[
            r#"line 4:7: a URL over plain http sends alerts in clear; use https (http only to a receiver on this host)"#
        ]],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"syslog\"\nkinds = [\"port-opened\", \"port-exploded\"]\n",
        expect![
            "line 4:25: `port-exploded` is not a change kind (one of: port-opened, port-closed, service-changed, auth-changed, tls-changed, tls-expiring, finding-new, finding-resolved, severity-raised, listener-unapproved, unknown-host, experiment-expired, channel-failing, suspicious-exec)"
        ],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"syslog\"\ntarget = \"loghost:514\"\n",
        expect![[
            r#"line 4:10: `loghost:514` is not a syslog target: a socket path (/dev/log), udp://HOST:PORT or tcp://HOST:PORT"#
        ]],
    );
    error(
        "[[monitor.channel]]\nname = \"x\"\nkind = \"email\"\nserver = \"m\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nusername = \"u\"\n",
        expect!["line 1:1: an email channel takes `username` and `password` together"],
    );
    error(
        "[monitor]\nclose_after = 0\n",
        expect![[r#"line 2:15: close_after must be a whole number of at least 1"#]],
    );
}

#[test]
fn an_inline_secret_is_refused_in_a_file_others_can_read() {
    let monitor = "[[monitor.channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://hooks.example/T0/B0/s3cr3t\"\nsigning_key = \"hunter2\"\n";
    let message = parse_with(monitor, true).expect_err("refused");
    assert!(
        message.contains("url is written here, in a file others can read"),
        "{message}"
    );
    assert!(
        !message.contains("s3cr3t") && !message.contains("hunter2"),
        "{message}"
    );
    // In a file only its owner reads, it is accepted, and never printed.
    let config = parse_with(monitor, false)
        .expect("parses")
        .expect("monitor");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cr3t") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn secret_files_readable_by_others_are_refused_when_channels_are_built() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("webhook.key");
    std::fs::write(&key, "hunter2\n").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let monitor = format!(
        "[[monitor.channel]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"https://127.0.0.1:1/x\"\nsigning_key = {{ file = \"{}\" }}\n",
        key.display()
    );
    let config = parse_with(&monitor, false)
        .expect("parses")
        .expect("monitor");
    let err = build_channels(&config, |_| None)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("may be read by others (mode 0644)"), "{err}");
    assert!(!err.contains("hunter2"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let channels = build_channels(&config, |_| None).expect("built");
    assert_eq!(channels.len(), 1);
    // A secret from a variable that is not set says which.
    let monitor = "[[monitor.channel]]\nname = \"hook\"\nkind = \"slack\"\nurl = { env = \"PERIMETER_TEST_NO_SUCH_VAR\" }\n";
    let config = parse_with(monitor, false)
        .expect("parses")
        .expect("monitor");
    let err = build_channels(&config, |_| None)
        .expect_err("unset")
        .to_string();
    assert!(
        err.ends_with("channel `hook`: the environment variable PERIMETER_TEST_NO_SUCH_VAR that should hold a secret is not set"),
        "{err}"
    );
}

/// `perimeter init`'s example, its commented [monitor] part uncommented as
/// a user would: it parses, with the jobs and channels it shows.
#[test]
fn the_init_example_uncommented_parses() {
    let example = perimeter_checks::environments::EXAMPLE;
    let start = example
        .find("# [monitor]")
        .expect("the example has a [monitor] part");
    let (head, monitor) = example.split_at(start);
    let uncommented: String = monitor
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| !line.starts_with("# "))
        .map(|line| format!("{line}\n"))
        .collect();
    let text = format!("{head}{uncommented}");
    let path = Path::new("perimeter.toml");
    let environments = parse_environments(&text, path).expect("environments parse");
    let config = parse(
        &text,
        path,
        ParseContext {
            environments: &environments,
            readable_by_others: true,
        },
    )
    .unwrap_or_else(|err| panic!("{err}\n{uncommented}"))
    .expect("a [monitor] part");
    assert_eq!(config.job_names(), ["outside", "audit", "verify", "fleet"]);
    let channels: Vec<&str> = config.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(channels, ["ops", "mail"]);
    // Commented out, the part is not there.
    assert!(
        parse(
            example,
            path,
            ParseContext {
                environments: &environments,
                readable_by_others: true,
            },
        )
        .expect("parses")
        .is_none()
    );
}
