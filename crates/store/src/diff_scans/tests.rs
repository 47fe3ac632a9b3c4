use std::collections::BTreeMap;

use perimeter_model::{ServiceInfo, TlsInfo};
use proptest::prelude::*;
use time::macros::datetime;

use super::*;

fn result(endpoint: &str, state: PortState) -> PortResult {
    let (address, port) = endpoint.rsplit_once(':').expect("test endpoint has a port");
    let address = address.trim_start_matches('[').trim_end_matches(']');
    PortResult {
        address: address.parse().expect("test address"),
        port: port.parse().expect("test port"),
        protocol: Protocol::Tcp,
        state,
        service: None,
        findings: vec![],
    }
}

fn open(endpoint: &str) -> PortResult {
    result(endpoint, PortState::Open)
}

fn with_service(
    mut result: PortResult,
    name: &str,
    product: Option<&str>,
    version: Option<&str>,
) -> PortResult {
    let mut service = ServiceInfo::named(name);
    service.product = product.map(str::to_owned);
    service.version = version.map(str::to_owned);
    result.service = Some(service);
    result
}

fn with_auth(mut result: PortResult, auth: AuthState) -> PortResult {
    if let Some(service) = result.service.as_mut() {
        service.auth = auth;
    }
    result
}

fn with_finding(mut result: PortResult, rule: &str, severity: Severity) -> PortResult {
    result.findings.push(Finding::new(
        rule,
        severity,
        "subject",
        format!("{rule} fired"),
    ));
    result
}

fn redis(endpoint: &str, auth: AuthState) -> PortResult {
    with_auth(
        with_service(open(endpoint), "redis", None, Some("7.0.15")),
        auth,
    )
}

/// Renders changes as `kind severity message`, one a line.
fn render(changes: &[Change]) -> String {
    changes
        .iter()
        .map(|change| {
            format!(
                "{} {} {}\n",
                change.kind.as_str(),
                change.severity,
                change.message
            )
        })
        .collect()
}

fn check(before: &[PortResult], after: &[PortResult], expect: &str) {
    let expect: String = expect
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(render(&diff_scans(before, after)), expect);
}

#[test]
fn redis_that_started_answering_without_a_password_is_high() {
    check(
        &[redis("198.18.0.7:6379", AuthState::Required)],
        &[with_finding(
            redis("198.18.0.7:6379", AuthState::None),
            "redis.no-auth",
            Severity::Critical,
        )],
        "
        auth-changed high tcp 198.18.0.7:6379 now answers without authentication (was required) (redis (7.0.15))
        finding-appeared critical tcp 198.18.0.7:6379: new finding redis.no-auth (critical): redis.no-auth fired
        ",
    );
    // From unknown (a scan that could not tell, or did not identify the service)
    // it is the same alert.
    check(
        &[open("198.18.0.7:6379")],
        &[redis("198.18.0.7:6379", AuthState::None)],
        "auth-changed high tcp 198.18.0.7:6379 now answers without authentication (was unknown) (redis (7.0.15))",
    );
    let changes = diff_scans(
        &[redis("198.18.0.7:6379", AuthState::Unknown)],
        &[redis("198.18.0.7:6379", AuthState::None)],
    );
    let change = changes.first().expect("one change");
    assert_eq!(
        (change.kind, change.severity),
        (ChangeKind::AuthChanged, Severity::High)
    );
    assert_eq!(
        change.before.as_ref().map(|b| b.auth),
        Some(AuthState::Unknown)
    );
    assert_eq!(change.after.as_ref().map(|a| a.auth), Some(AuthState::None));
}

#[test]
fn authentication_coming_back_is_info_and_becoming_unknown_is_nothing() {
    check(
        &[redis("198.18.0.7:6379", AuthState::None)],
        &[redis("198.18.0.7:6379", AuthState::Required)],
        "auth-changed info tcp 198.18.0.7:6379 now requires authentication (redis (7.0.15))",
    );
    check(
        &[redis("198.18.0.7:6379", AuthState::Required)],
        &[redis("198.18.0.7:6379", AuthState::Unknown)],
        "",
    );
}

#[test]
fn opened_ports_take_the_worst_of_medium_their_findings_and_open_auth() {
    check(
        &[result("198.18.0.1:22", PortState::Closed)],
        &[
            with_service(open("198.18.0.1:22"), "ssh", Some("OpenSSH"), Some("9.2p1")),
            with_finding(open("198.18.0.1:23"), "telnet.cleartext", Severity::High),
            redis("198.18.0.1:6379", AuthState::None),
            with_finding(open("198.18.0.1:8080"), "http.info", Severity::Info),
        ],
        "
        opened medium tcp 198.18.0.1:22 opened (ssh (OpenSSH 9.2p1))
        opened high tcp 198.18.0.1:23 opened (findings: telnet.cleartext)
        opened high tcp 198.18.0.1:6379 opened (redis (7.0.15); answers without authentication)
        opened medium tcp 198.18.0.1:8080 opened (findings: http.info)
        ",
    );
}

#[test]
fn closed_filtered_and_missing_are_all_not_open() {
    check(
        &[
            with_service(open("198.18.0.1:22"), "ssh", None, None),
            open("198.18.0.1:80"),
            open("198.18.0.1:443"),
            result("198.18.0.1:8080", PortState::Closed),
        ],
        &[
            result("198.18.0.1:22", PortState::Closed),
            result("198.18.0.1:80", PortState::Filtered),
            result("198.18.0.1:8080", PortState::Filtered),
        ],
        "
        closed low tcp 198.18.0.1:22 is no longer open (now closed) (ssh)
        closed low tcp 198.18.0.1:80 is no longer open (now filtered)
        closed low tcp 198.18.0.1:443 is no longer open (no result this time)
        ",
    );
}

#[test]
fn service_and_version_changes() {
    check(
        &[
            with_service(open("198.18.0.1:22"), "ssh", Some("OpenSSH"), Some("9.2p1")),
            with_service(open("198.18.0.1:80"), "http", Some("nginx"), None),
            with_service(open("198.18.0.1:8000"), "http", None, None),
            with_service(open("198.18.0.1:9000"), "http", Some("nginx"), Some("1.22")),
        ],
        &[
            with_service(open("198.18.0.1:22"), "ssh", Some("OpenSSH"), Some("9.6p1")),
            with_service(open("198.18.0.1:80"), "ssh", Some("OpenSSH"), None),
            // A version now known, or no longer known, is the probe's luck.
            with_service(open("198.18.0.1:8000"), "http", Some("nginx"), Some("1.22")),
            with_service(open("198.18.0.1:9000"), "http", Some("nginx"), None),
        ],
        "
        version-changed low tcp 198.18.0.1:22 ssh changed from OpenSSH 9.2p1 to OpenSSH 9.6p1
        service-changed medium tcp 198.18.0.1:80 now answers as ssh (OpenSSH) (was http (nginx))
        ",
    );
    // A later scan without service detection changes nothing.
    check(
        &[with_service(
            open("198.18.0.1:22"),
            "ssh",
            Some("OpenSSH"),
            Some("9.2p1"),
        )],
        &[open("198.18.0.1:22")],
        "",
    );
}

#[test]
fn certificate_changes() {
    let https = |subject: &str, not_after| {
        let mut result = with_service(open("198.18.0.1:443"), "https", None, None);
        if let Some(service) = result.service.as_mut() {
            service.tls = Some(TlsInfo {
                subject: subject.to_owned(),
                issuer: "CN=Lab CA".to_owned(),
                not_after: Some(not_after),
                subject_alt_names: vec!["lab.example".to_owned()],
            });
        }
        result
    };
    check(
        &[https("CN=lab.example", datetime!(2025-01-01 0:00 UTC))],
        &[https("CN=lab.example", datetime!(2025-04-01 0:00 UTC))],
        "certificate-changed low tcp 198.18.0.1:443 presents a different certificate: \
         subject CN=lab.example, issuer CN=Lab CA, expires 2025-04-01 \
         (was subject CN=lab.example, issuer CN=Lab CA, expires 2025-01-01)",
    );
    check(
        &[https("CN=lab.example", datetime!(2025-01-01 0:00 UTC))],
        &[https("CN=lab.example", datetime!(2025-01-01 0:00 UTC))],
        "",
    );
}

#[test]
fn findings_appear_and_resolve_on_ports_open_in_both() {
    let ssh = || with_service(open("198.18.0.1:22"), "ssh", None, None);
    check(
        &[with_finding(ssh(), "ssh.weak-kex", Severity::Medium)],
        &[with_finding(ssh(), "ssh.password-auth", Severity::Low)],
        "
        finding-appeared low tcp 198.18.0.1:22: new finding ssh.password-auth (low): ssh.password-auth fired
        finding-resolved info tcp 198.18.0.1:22: finding ssh.weak-kex resolved (was: ssh.weak-kex fired)
        ",
    );
    // No service identified this time: the missing finding is not a resolution.
    check(
        &[with_finding(ssh(), "ssh.weak-kex", Severity::Medium)],
        &[open("198.18.0.1:22")],
        "",
    );
    // The same rule twice on a port is one finding.
    check(
        &[with_finding(
            with_finding(ssh(), "ssh.weak-kex", Severity::Low),
            "ssh.weak-kex",
            Severity::High,
        )],
        &[with_finding(ssh(), "ssh.weak-kex", Severity::Medium)],
        "",
    );
}

#[test]
fn duplicate_results_prefer_open() {
    check(
        &[],
        &[
            result("198.18.0.1:22", PortState::Closed),
            open("198.18.0.1:22"),
        ],
        "opened medium tcp 198.18.0.1:22 opened",
    );
}

#[test]
fn addresses_only_one_scan_covered_are_left_out() {
    let before = [open("198.18.0.1:22"), open("198.18.0.200:22")];
    let after = [open("198.18.0.1:22"), open("198.18.0.1:80")];
    let changes = diff_scans_within(&before, &after, |address, _| {
        address != "198.18.0.200".parse::<IpAddr>().expect("test address")
    });
    assert_eq!(render(&changes), "opened medium tcp 198.18.0.1:80 opened\n");
}

fn scan_info(targets: &[&str], excluded: &[&str], ports: &str) -> ScanInfo {
    ScanInfo {
        id: 0,
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        resolved: vec![],
        excluded: excluded.iter().map(|t| (*t).to_owned()).collect(),
        ports: ports.to_owned(),
        profile: "default".to_owned(),
        seed: 7,
        options: BTreeMap::new(),
        started: datetime!(2024-01-01 0:00 UTC),
        finished: Some(datetime!(2024-01-01 0:10 UTC)),
        complete: true,
        n_probes: 0,
    }
}

#[test]
fn scan_runs_diff_only_what_both_covered() {
    let before = [
        open("198.18.0.1:22"),
        open("198.18.0.200:22"),
        open("198.18.0.1:443"),
    ];
    let after = [open("198.18.0.1:80")];
    // The later scan covered half the block and fewer ports: .200 and 443 were
    // not looked at, so they are not closed.
    let changes = diff_scan_runs(
        &scan_info(&["198.18.0.0/24"], &[], "22,80,443"),
        &before,
        &scan_info(&["198.18.0.0/25"], &[], "1-100"),
        &after,
    );
    assert_eq!(
        render(&changes),
        "closed low tcp 198.18.0.1:22 is no longer open (no result this time)\n\
         opened medium tcp 198.18.0.1:80 opened\n"
    );

    // An exclude added later removes the address from the comparison.
    let changes = diff_scan_runs(
        &scan_info(&["198.18.0.0/24"], &[], "22"),
        &[open("198.18.0.9:22")],
        &scan_info(&["198.18.0.0/24"], &["198.18.0.9"], "22"),
        &[],
    );
    assert_eq!(changes, vec![]);

    // Same targets in a syntax the store does not read: everything is compared.
    let changes = diff_scan_runs(
        &scan_info(&["198.18.0.*"], &[], "top:100"),
        &[open("198.18.0.9:22")],
        &scan_info(&["198.18.0.*"], &[], "top:100"),
        &[],
    );
    assert_eq!(changes.len(), 1);

    // Different targets in that syntax: only addresses with results in both.
    let changes = diff_scan_runs(
        &scan_info(&["198.18.0.*"], &[], "22"),
        &[open("198.18.0.9:22"), open("198.18.0.1:22")],
        &scan_info(&["198.18.0.1-5"], &[], "22"),
        &[result("198.18.0.1:22", PortState::Closed)],
    );
    assert_eq!(
        render(&changes),
        "closed low tcp 198.18.0.1:22 is no longer open (now closed)\n"
    );
}

#[test]
fn an_interrupted_scan_covers_only_what_it_reached() {
    let covered = scan_info(&["198.18.0.0/24"], &[], "1-1000");
    let interrupted = ScanInfo {
        complete: false,
        ..covered.clone()
    };
    let before = [
        open("198.18.0.2:21"),
        open("198.18.0.2:22"),
        open("198.18.0.2:80"),
        result("198.18.0.2:443", PortState::Closed),
    ];
    // Ctrl-C after three results: 21 was never reached, so it is not closed;
    // 22 was reached and found closed; 443 was reached and found open.
    let after = [
        result("198.18.0.2:22", PortState::Closed),
        open("198.18.0.2:80"),
        open("198.18.0.2:443"),
    ];
    let changes = diff_scan_runs(&covered, &before, &interrupted, &after);
    assert_eq!(
        render(&changes),
        "closed low tcp 198.18.0.2:22 is no longer open (now closed)\n\
         opened medium tcp 198.18.0.2:443 opened\n"
    );
    // The same results from a complete scan: 21 is closed.
    let changes = diff_scan_runs(&covered, &before, &covered, &after);
    assert_eq!(changes.len(), 3);
    assert!(render(&changes).contains("198.18.0.2:21 is no longer open (no result this time)"));

    // An interrupted earlier scan: a port open now that it never reached did
    // not open.
    let changes = diff_scan_runs(
        &interrupted,
        &[open("198.18.0.2:22")],
        &covered,
        &[open("198.18.0.2:22"), open("198.18.0.2:8")],
    );
    assert_eq!(changes, vec![]);
}

fn sample_results() -> Vec<PortResult> {
    vec![
        redis("198.18.0.7:6379", AuthState::None),
        with_service(open("198.18.0.1:22"), "ssh", Some("OpenSSH"), Some("9.6p1")),
        with_finding(open("198.18.0.1:23"), "telnet.cleartext", Severity::High),
        result("198.18.0.1:80", PortState::Closed),
        open("[2001:db8::1]:443"),
        result("198.18.0.2:22", PortState::Filtered),
        open("198.18.0.2:22"),
    ]
}

fn sample_before() -> Vec<PortResult> {
    vec![
        redis("198.18.0.7:6379", AuthState::Required),
        with_service(open("198.18.0.1:22"), "ssh", Some("OpenSSH"), Some("9.2p1")),
        open("198.18.0.1:80"),
        open("[2001:db8::1]:8443"),
    ]
}

proptest! {
    #[test]
    fn diff_does_not_depend_on_input_order(
        before in Just(sample_before()).prop_shuffle(),
        after in Just(sample_results()).prop_shuffle(),
    ) {
        let expected = diff_scans(&sample_before(), &sample_results());
        prop_assert_eq!(expected.len(), 7);
        prop_assert_eq!(diff_scans(&before, &after), expected);
    }
}
