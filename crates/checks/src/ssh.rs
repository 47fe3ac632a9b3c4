//! SSH rules: `ssh.root-login`, `ssh.password-auth`, on the running sshd's
//! effective configuration per class of source address.

use perimeter_model::{Finding, HostSnapshot, Severity, SshdEvaluation, SshdFacts};

use crate::rules::{SSH_PASSWORD_AUTH, SSH_ROOT_LOGIN};

fn subject(sshd: &SshdFacts) -> String {
    format!("sshd (pid {}) {}", sshd.pid, sshd.config_file.display())
}

/// Whether any of the daemon's listening sockets reaches beyond loopback.
/// Unknown (no listener attributed) counts as exposed: better a finding too
/// many than a root login missed.
fn exposed(snapshot: &HostSnapshot, sshd: &SshdFacts) -> bool {
    let mut listeners = snapshot
        .listeners
        .iter()
        .filter(|l| l.pids().contains(&sshd.pid))
        .peekable();
    if listeners.peek().is_none() {
        return true;
    }
    listeners.any(|l| l.scope.is_exposed())
}

fn root_severity(value: &str) -> Severity {
    match value {
        "yes" => Severity::High,
        "forced-commands-only" => Severity::Low,
        // prohibit-password and its old spelling: root with a key.
        _ => Severity::Medium,
    }
}

fn lower(severity: Severity) -> Severity {
    match severity {
        Severity::Critical => Severity::High,
        Severity::High => Severity::Medium,
        Severity::Medium => Severity::Low,
        Severity::Low | Severity::Info => Severity::Info,
    }
}

fn describe(evaluations: &[&SshdEvaluation], value: impl Fn(&SshdEvaluation) -> String) -> String {
    evaluations
        .iter()
        .map(|e| format!("{} from {}", value(e), e.sources))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn check(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for sshd in &snapshot.sshd {
        let exposed = exposed(snapshot, sshd);
        let adjust = |severity| if exposed { severity } else { lower(severity) };

        // PermitRootLogin only matters for connections as root: judge it on the
        // evaluations made for user=root (all of them when none names a user).
        let for_root: Vec<&SshdEvaluation> = sshd
            .evaluations
            .iter()
            .filter(|e| criteria_user(&e.criteria) == Some("root"))
            .collect();
        let candidates = if for_root.is_empty() {
            sshd.evaluations.iter().collect()
        } else {
            for_root
        };
        let root = distinct_sources(
            candidates
                .into_iter()
                .filter(|e| e.permit_root_login != "no")
                .collect(),
        );
        if let Some(worst) = root
            .iter()
            .map(|e| root_severity(&e.permit_root_login))
            .max()
        {
            let mut finding = Finding::new(
                SSH_ROOT_LOGIN,
                adjust(worst),
                subject(sshd),
                format!(
                    "root may log in: PermitRootLogin {}",
                    describe(&root, |e| e.permit_root_login.clone())
                ),
            );
            for e in &root {
                finding = finding.with_evidence(format!(
                    "{}: permitrootlogin {} ({})",
                    e.sources, e.permit_root_login, e.criteria
                ));
            }
            findings.push(
                finding
                    .with_evidence(format!("evaluated with {}", sshd.method))
                    .with_remedy(
                        "set `PermitRootLogin no`, and if root must log in from an admin network, allow it only in a `Match Address` block for that network",
                    ),
            );
        }

        let passwords = distinct_sources(
            sshd.evaluations
                .iter()
                .filter(|e| e.password_authentication || e.kbd_interactive_authentication)
                .collect(),
        );
        if !passwords.is_empty() {
            let empty = passwords.iter().any(|e| e.permit_empty_passwords);
            let severity = if empty {
                Severity::Critical
            } else {
                Severity::Medium
            };
            let mut finding = Finding::new(
                SSH_PASSWORD_AUTH,
                adjust(severity),
                subject(sshd),
                format!(
                    "sshd accepts passwords: {}",
                    describe(&passwords, |e| {
                        let mut methods = Vec::new();
                        if e.password_authentication {
                            methods.push("password");
                        }
                        if e.kbd_interactive_authentication {
                            methods.push("keyboard-interactive");
                        }
                        methods.join(" and ")
                    })
                ),
            );
            for e in &passwords {
                finding = finding.with_evidence(format!(
                    "{}: passwordauthentication {} kbdinteractiveauthentication {}{} ({})",
                    e.sources,
                    yes_no(e.password_authentication),
                    yes_no(e.kbd_interactive_authentication),
                    if e.permit_empty_passwords {
                        " permitemptypasswords yes"
                    } else {
                        ""
                    },
                    e.criteria
                ));
            }
            findings.push(
                finding
                    .with_evidence(format!("evaluated with {}", sshd.method))
                    .with_remedy("set `PasswordAuthentication no` and `KbdInteractiveAuthentication no`; use keys"),
            );
        }
    }
    findings
}

/// The `user=` value of an `sshd -T -C` criteria string.
fn criteria_user(criteria: &str) -> Option<&str> {
    criteria
        .split(',')
        .find_map(|part| part.strip_prefix("user="))
}

/// One evaluation per class of source addresses (the first, in evaluation
/// order), so a class evaluated for several users or listeners is said once.
fn distinct_sources(evaluations: Vec<&SshdEvaluation>) -> Vec<&SshdEvaluation> {
    let mut seen = std::collections::BTreeSet::new();
    evaluations
        .into_iter()
        .filter(|e| seen.insert(e.sources.as_str()))
        .collect()
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::fixtures::{listener, process, render, snapshot};

    /// The SSH family's findings about `snapshot`, worst first.
    fn check(snapshot: &HostSnapshot, expect: Expect) {
        let mut findings = super::check(snapshot);
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    fn evaluation(sources: &str, root: &str, password: bool) -> SshdEvaluation {
        SshdEvaluation {
            sources: sources.into(),
            criteria: format!("user=root,addr={sources}"),
            permit_root_login: root.into(),
            password_authentication: password,
            kbd_interactive_authentication: false,
            permit_empty_passwords: false,
        }
    }

    fn sshd(evaluations: Vec<SshdEvaluation>) -> SshdFacts {
        SshdFacts {
            pid: 2,
            exe: Some("/usr/sbin/sshd".into()),
            config_file: "/etc/ssh/sshd_config".into(),
            method: "sshd -T".into(),
            evaluations,
        }
    }

    #[test]
    fn says_for_which_sources_root_may_log_in() {
        let mut snap = snapshot(
            vec![listener("tcp", "0.0.0.0", 22, &[2])],
            vec![process(2, 1, "/usr/sbin/sshd", 0, "root")],
        );
        snap.sshd.push(sshd(vec![
            evaluation("198.51.100.0/24", "yes", false),
            evaluation("any other address", "no", false),
        ]));
        check(
            &snap,
            expect![[r#"
            high ssh.root-login sshd (pid 2) /etc/ssh/sshd_config
              root may log in: PermitRootLogin yes from 198.51.100.0/24
              | 198.51.100.0/24: permitrootlogin yes (user=root,addr=198.51.100.0/24)
              | evaluated with sshd -T
        "#]],
        );
    }

    #[test]
    fn hardened_sshd_is_clean_and_loopback_is_lowered() {
        let mut snap = snapshot(
            vec![listener("tcp", "127.0.0.1", 22, &[2])],
            vec![process(2, 1, "/usr/sbin/sshd", 0, "root")],
        );
        snap.sshd
            .push(sshd(vec![evaluation("any other address", "no", false)]));
        check(
            &snap,
            expect![[r#"
            no findings
        "#]],
        );
        snap.sshd[0]
            .evaluations
            .push(evaluation("198.51.100.0/24", "prohibit-password", true));
        check(
            &snap,
            expect![[r#"
            low ssh.password-auth sshd (pid 2) /etc/ssh/sshd_config
              sshd accepts passwords: password from 198.51.100.0/24
              | 198.51.100.0/24: passwordauthentication yes kbdinteractiveauthentication no (user=root,addr=198.51.100.0/24)
              | evaluated with sshd -T
            low ssh.root-login sshd (pid 2) /etc/ssh/sshd_config
              root may log in: PermitRootLogin prohibit-password from 198.51.100.0/24
              | 198.51.100.0/24: permitrootlogin prohibit-password (user=root,addr=198.51.100.0/24)
              | evaluated with sshd -T
        "#]],
        );
    }

    #[test]
    fn root_login_is_judged_for_root_and_each_class_said_once() {
        let mut snap = snapshot(
            vec![listener("tcp", "0.0.0.0", 22, &[2])],
            vec![process(2, 1, "/usr/sbin/sshd", 0, "root")],
        );
        let mut other_user = evaluation("any other address", "yes", false);
        other_user.criteria = "user=alice,addr=203.0.113.9".into();
        let mut twice = evaluation("198.51.100.0/24", "yes", false);
        twice.criteria = "user=root,addr=198.51.100.1,laddr=10.0.0.1".into();
        snap.sshd.push(sshd(vec![
            evaluation("198.51.100.0/24", "yes", false),
            twice,
            evaluation("any other address", "no", false),
            other_user,
        ]));
        check(
            &snap,
            expect![[r#"
            high ssh.root-login sshd (pid 2) /etc/ssh/sshd_config
              root may log in: PermitRootLogin yes from 198.51.100.0/24
              | 198.51.100.0/24: permitrootlogin yes (user=root,addr=198.51.100.0/24)
              | evaluated with sshd -T
        "#]],
        );
    }

    #[test]
    fn empty_passwords_are_critical_and_an_unattributed_sshd_counts_as_exposed() {
        // No listener names pid 2: better a finding too many than one missed.
        let mut snap = snapshot(vec![], vec![process(2, 1, "/usr/sbin/sshd", 0, "root")]);
        let mut empty = evaluation("any address", "forced-commands-only", true);
        empty.kbd_interactive_authentication = true;
        empty.permit_empty_passwords = true;
        snap.sshd.push(sshd(vec![empty]));
        check(
            &snap,
            expect![[r#"
            critical ssh.password-auth sshd (pid 2) /etc/ssh/sshd_config
              sshd accepts passwords: password and keyboard-interactive from any address
              | any address: passwordauthentication yes kbdinteractiveauthentication yes permitemptypasswords yes (user=root,addr=any address)
              | evaluated with sshd -T
            low ssh.root-login sshd (pid 2) /etc/ssh/sshd_config
              root may log in: PermitRootLogin forced-commands-only from any address
              | any address: permitrootlogin forced-commands-only (user=root,addr=any address)
              | evaluated with sshd -T
        "#]],
        );
    }
}
