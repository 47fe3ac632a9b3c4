//! The change rules over sequences of runs: new, seen again, escalated,
//! flapping, resolved after `close_after` runs, not covered, expected,
//! acknowledged.

use expect_test::{Expect, expect};
use time::macros::datetime;

use super::*;

fn port(address: &str, port: u16, expected: bool) -> Condition {
    Condition {
        key: format!("port {address}:{port}/tcp"),
        kind: ChangeKind::PortOpened,
        severity: Severity::Medium,
        subject: format!("{address}:{port}"),
        message: format!("{address}:{port} answers"),
        evidence: vec!["open (syn-ack)".into()],
        remedy: "close it or approve it".into(),
        expected,
    }
}

fn finding(subject: &str, severity: Severity) -> Condition {
    Condition {
        key: format!("finding exposed.redis-no-auth {subject}"),
        kind: ChangeKind::FindingNew,
        severity,
        subject: subject.into(),
        message: "Redis answers without a password".into(),
        evidence: vec![],
        remedy: "requirepass".into(),
        expected: false,
    }
}

/// Runs `runs` in order (each the conditions it saw), covering everything,
/// and renders the changes of each run.
fn check(runs: &[Vec<Condition>], close_after: u32, expect: Expect) {
    let mut stored: Vec<StoredCondition> = Vec::new();
    let mut text = String::new();
    for (idx, conditions) in runs.iter().enumerate() {
        let now = datetime!(2026-12-02 00:00 UTC) + time::Duration::hours(idx as i64);
        let judgement = judge(
            &stored,
            &Observation {
                conditions: conditions.clone(),
                events: vec![],
            },
            |_| true,
            close_after,
            now,
        );
        text.push_str(&format!("run {}:", idx + 1));
        if judgement.changes.is_empty() {
            text.push_str(" nothing\n");
        } else {
            text.push('\n');
        }
        for change in &judgement.changes {
            text.push_str(&format!(
                "  {} {} {} {}\n",
                change.state.as_str(),
                change.kind.as_str(),
                change.severity,
                change.subject
            ));
        }
        stored = judgement.conditions;
    }
    expect.assert_eq(&text);
}

#[test]
fn a_new_port_alerts_once_and_closes_after_two_runs() {
    let open = || vec![port("198.18.0.7", 6379, false)];
    check(
        &[open(), open(), vec![], vec![], vec![]],
        2,
        expect![[r#"
            run 1:
              new port-opened medium 198.18.0.7:6379
            run 2: nothing
            run 3: nothing
            run 4:
              resolved port-closed medium 198.18.0.7:6379
            run 5: nothing
        "#]],
    );
}

#[test]
fn a_flapping_port_alerts_once() {
    let open = || vec![port("198.18.0.7", 8080, false)];
    check(
        &[open(), vec![], open(), vec![], open(), vec![], open()],
        2,
        expect![[r#"
            run 1:
              new port-opened medium 198.18.0.7:8080
            run 2: nothing
            run 3: nothing
            run 4: nothing
            run 5: nothing
            run 6: nothing
            run 7: nothing
        "#]],
    );
}

#[test]
fn an_expected_port_is_quiet_until_it_closes_or_stops_being_expected() {
    check(
        &[
            vec![port("198.18.10.5", 443, true)],
            vec![port("198.18.10.5", 443, true)],
            vec![port("198.18.10.5", 443, false)],
            vec![],
        ],
        1,
        expect![[r#"
            run 1: nothing
            run 2: nothing
            run 3:
              new port-opened medium 198.18.10.5:443
            run 4:
              resolved port-closed medium 198.18.10.5:443
        "#]],
    );
    check(
        &[vec![port("198.18.10.5", 443, true)], vec![]],
        1,
        expect![[r#"
            run 1: nothing
            run 2:
              resolved port-closed low 198.18.10.5:443
        "#]],
    );
}

#[test]
fn an_approval_silences_an_open_problem_without_a_message() {
    check(
        &[
            vec![port("198.18.0.7", 9000, false)],
            vec![port("198.18.0.7", 9000, true)],
            vec![port("198.18.0.7", 9000, true)],
        ],
        2,
        expect![[r#"
            run 1:
              new port-opened medium 198.18.0.7:9000
            run 2: nothing
            run 3: nothing
        "#]],
    );
}

#[test]
fn a_rising_severity_is_sent_again_and_falling_back_is_not() {
    let subject = "198.18.0.7:6379";
    check(
        &[
            vec![finding(subject, Severity::Medium)],
            vec![finding(subject, Severity::Medium)],
            vec![finding(subject, Severity::Critical)],
            vec![finding(subject, Severity::Medium)],
            vec![finding(subject, Severity::Critical)],
        ],
        2,
        expect![[r#"
            run 1:
              new finding-new medium 198.18.0.7:6379
            run 2: nothing
            run 3:
              escalated severity-raised critical 198.18.0.7:6379
            run 4: nothing
            run 5: nothing
        "#]],
    );
}

#[test]
fn what_a_run_did_not_cover_never_closes() {
    let stored = judge(
        &[],
        &Observation {
            conditions: vec![port("198.18.0.7", 22, false)],
            events: vec![],
        },
        |_| true,
        1,
        datetime!(2026-12-02 00:00 UTC),
    )
    .conditions;
    // The next run scanned other ports only.
    let judgement = judge(
        &stored,
        &Observation::default(),
        |_| false,
        1,
        datetime!(2026-12-02 01:00 UTC),
    );
    assert!(judgement.changes.is_empty());
    assert_eq!(judgement.conditions, stored);
}

#[test]
fn an_acknowledged_condition_does_not_escalate_until_the_ack_ends() {
    let t0 = datetime!(2026-12-02 00:00 UTC);
    let mut stored = judge(
        &[],
        &Observation {
            conditions: vec![finding("198.18.0.7:6379", Severity::Medium)],
            events: vec![],
        },
        |_| true,
        2,
        t0,
    )
    .conditions;
    stored[0].acked_until = Some(datetime!(2026-12-09 00:00 UTC));
    let high = Observation {
        conditions: vec![finding("198.18.0.7:6379", Severity::High)],
        events: vec![],
    };
    let during = judge(&stored, &high, |_| true, 2, datetime!(2026-12-03 00:00 UTC));
    assert!(during.changes.is_empty(), "{:?}", during.changes);
    let after = judge(&stored, &high, |_| true, 2, datetime!(2026-12-10 00:00 UTC));
    assert_eq!(after.changes.len(), 1);
    assert_eq!(after.changes[0].state, ChangeState::Escalated);
    assert_eq!(
        after.conditions[0].acked_until, None,
        "an ended ack is dropped"
    );
}

#[test]
fn events_are_told_once_beside_the_conditions() {
    let event = AlertChange::new(
        ChangeKind::AuthChanged,
        Severity::Critical,
        ChangeState::New,
        "198.18.0.7:6379",
        "Redis now answers without a password",
    );
    let judgement = judge(
        &[],
        &Observation {
            conditions: vec![],
            events: vec![event.clone()],
        },
        |_| true,
        2,
        datetime!(2026-12-02 00:00 UTC),
    );
    assert_eq!(judgement.changes, vec![event]);
    assert!(judgement.conditions.is_empty());
}
