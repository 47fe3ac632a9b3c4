//! Listener rules: `listener.unapproved`, `service.root`, `service.login-shell`.

use perimeter_model::{Finding, HostSnapshot, Listener, Process, Scope, Severity};

use crate::approvals::{Approvals, Verdict};
use crate::rules::{LISTENER_UNAPPROVED, SERVICE_LOGIN_SHELL, SERVICE_ROOT};
use crate::{CheckConfig, listener_subject};

fn exposed(snapshot: &HostSnapshot) -> impl Iterator<Item = &Listener> {
    snapshot.listeners.iter().filter(|l| l.scope.is_exposed())
}

/// Every listener beyond loopback that the approvals do not cover.
pub(crate) fn unapproved(
    snapshot: &HostSnapshot,
    approvals: &Approvals,
    config: &CheckConfig,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for listener in exposed(snapshot) {
        let owners: Vec<&Process> = snapshot.owners_of(listener).collect();
        let verdict = approvals.verdict(listener, &owners, config.today);
        let subject = listener_subject(snapshot, listener);
        let mut finding = match verdict {
            Verdict::Approved(_) => continue,
            Verdict::Expired(entry) => Finding::new(
                LISTENER_UNAPPROVED,
                Severity::High,
                &subject,
                format!(
                    "the approval for {subject} expired on {}",
                    entry.expires.map(|d| d.to_string()).unwrap_or_default()
                ),
            )
            .with_evidence(format!(
                "approval at line {} by {}: {}",
                entry.line, entry.approved_by, entry.reason
            )),
            Verdict::Unapproved => Finding::new(
                LISTENER_UNAPPROVED,
                Severity::High,
                &subject,
                format!(
                    "{} listener on {} is not in the approvals file",
                    listener.scope,
                    listener.endpoint()
                ),
            ),
        };
        finding = finding.with_evidence(format!("scope {}", listener.scope));
        match owners.first() {
            Some(process) => {
                finding = finding.with_evidence(format!(
                    "exe {} as {}",
                    process
                        .exe
                        .as_deref()
                        .map_or_else(|| "(unknown)".into(), |p| p.display().to_string()),
                    process.user_name()
                ));
            }
            None if listener.owners.is_empty() => {
                finding = match snapshot.published_port(listener) {
                    Some(port) => finding.with_evidence(format!(
                        "no process listens on it: a DNAT in nat prerouting forwards it to {}",
                        port.to
                    )),
                    None => finding
                        .with_evidence("no process holds the socket that perimeter could see"),
                };
            }
            None => {}
        }
        if approvals.path.is_none() {
            finding = finding.with_evidence("no approvals file was found");
        }
        findings.push(finding.with_remedy(
            "confirm the listener with `perimeter approve` (and commit the approvals file), or stop it / bind it to 127.0.0.1",
        ));
    }
    findings
}

fn is_privsep_daemon(process: &Process, config: &CheckConfig) -> bool {
    let name = process.name();
    config
        .privsep_daemons
        .iter()
        .any(|daemon| *daemon == name || *daemon == process.comm)
}

/// Root processes serving beyond loopback, one finding per listener.
pub(crate) fn root_services(snapshot: &HostSnapshot, config: &CheckConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    for listener in exposed(snapshot) {
        let owners: Vec<&Process> = snapshot.owners_of(listener).collect();
        // Only when every process holding the socket runs as root: a root master
        // with unprivileged workers serving the connections is privilege
        // separation already.
        if owners.is_empty() || owners.iter().any(|p| p.uid != 0) {
            continue;
        }
        if owners.iter().any(|p| is_privsep_daemon(p, config)) {
            continue;
        }
        let severity = match listener.scope {
            Scope::Public | Scope::Wildcard => Severity::High,
            _ => Severity::Medium,
        };
        let process = owners[0];
        findings.push(
            Finding::new(
                SERVICE_ROOT,
                severity,
                listener_subject(snapshot, listener),
                format!(
                    "{} serves {} as root",
                    process.name(),
                    listener.endpoint()
                ),
            )
            .with_evidence(format!("uid 0 (pids {:?})", listener.pids()))
            .with_evidence(format!(
                "exe {}",
                process
                    .exe
                    .as_deref()
                    .map_or_else(|| "(unknown)".into(), |p| p.display().to_string())
            ))
            .with_remedy("run the service as a dedicated unprivileged user with no login shell (User= in its systemd unit)"),
        );
    }
    findings
}

/// Non-root accounts with a login shell running listeners beyond loopback.
pub(crate) fn login_shells(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for listener in exposed(snapshot) {
        let Some(process) = snapshot
            .owners_of(listener)
            .find(|p| p.uid != 0 && p.account.as_ref().is_some_and(|a| a.has_login_shell()))
        else {
            continue;
        };
        let shell = process
            .account
            .as_ref()
            .and_then(|a| a.shell.clone())
            .unwrap_or_default();
        findings.push(
            Finding::new(
                SERVICE_LOGIN_SHELL,
                Severity::Medium,
                listener_subject(snapshot, listener),
                format!(
                    "account {} runs {} and has the login shell {shell}",
                    process.user_name(),
                    listener.endpoint()
                ),
            )
            .with_evidence(format!("uid {} shell {shell}", process.uid))
            .with_remedy(format!(
                "give the service account no shell: usermod -s /usr/sbin/nologin {}",
                process.user_name()
            )),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use perimeter_model::Account;

    use super::*;
    use crate::approvals::parse_approvals;
    use crate::fixtures::{listener, packaged, process, render, snapshot};

    fn config() -> CheckConfig {
        CheckConfig::new(time::macros::date!(2026 - 11 - 25))
    }

    /// The listener family's findings about `snapshot` under `approvals`,
    /// worst first.
    fn check(snapshot: &HostSnapshot, approvals: &Approvals, expect: Expect) {
        let config = config();
        let mut findings = unapproved(snapshot, approvals, &config);
        findings.extend(root_services(snapshot, &config));
        findings.extend(login_shells(snapshot));
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    #[test]
    fn loopback_listeners_need_no_approval() {
        let snap = snapshot(
            vec![
                listener("tcp", "127.0.0.1", 6379, &[5]),
                listener("tcp", "::1", 6379, &[5]),
                listener("tcp", "0.0.0.0", 6380, &[5]),
                listener("udp", "198.51.100.7", 53, &[]),
            ],
            vec![process(5, 1, "/opt/redis/redis-server", 0, "root")],
        );
        check(
            &snap,
            &Approvals::default(),
            expect![[r#"
            high listener.unapproved tcp 0.0.0.0:6380 redis-server (pid 5)
              wildcard listener on tcp 0.0.0.0:6380 is not in the approvals file
              | scope wildcard
              | exe /opt/redis/redis-server as root
              | no approvals file was found
            high listener.unapproved udp 198.51.100.7:53 (owner unknown)
              public listener on udp 198.51.100.7:53 is not in the approvals file
              | scope public
              | no process holds the socket that perimeter could see
              | no approvals file was found
            high service.root tcp 0.0.0.0:6380 redis-server (pid 5)
              redis-server serves tcp 0.0.0.0:6380 as root
              | uid 0 (pids [5])
              | exe /opt/redis/redis-server
        "#]],
        );
    }

    #[test]
    fn approved_listeners_are_quiet_until_the_approval_expires() {
        let approvals = parse_approvals(
            r#"version = 1

[[listener]]
protocol = "tcp"
address = "0.0.0.0"
port = 22
exe = "/usr/sbin/sshd"
user = "root"
approved_by = "alice"
approved_at = 2026-11-01
reason = "bastion ssh"

[[listener]]
protocol = "udp"
scope = "wildcard"
port = 51820
unowned = true
approved_by = "bob"
approved_at = 2026-11-02
reason = "wireguard"
expires = 2026-11-20
"#,
            std::path::Path::new("approvals.toml"),
        )
        .expect("approvals");
        let snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 22, &[2]),
                listener("udp", "0.0.0.0", 51820, &[]),
                // Same port as the approved sshd, another executable.
                listener("tcp", "0.0.0.0", 2222, &[3]),
            ],
            vec![
                packaged(process(2, 1, "/usr/sbin/sshd", 0, "root"), "openssh-server"),
                process(3, 1, "/usr/local/sbin/sshd", 0, "root"),
            ],
        );
        check(
            &snap,
            &approvals,
            expect![[r#"
            high listener.unapproved tcp 0.0.0.0:2222 sshd (pid 3)
              wildcard listener on tcp 0.0.0.0:2222 is not in the approvals file
              | scope wildcard
              | exe /usr/local/sbin/sshd as root
            high listener.unapproved udp 0.0.0.0:51820 (owner unknown)
              the approval for udp 0.0.0.0:51820 (owner unknown) expired on 2026-11-20
              | approval at line 13 by bob: wireguard
              | scope wildcard
              | no process holds the socket that perimeter could see
        "#]],
        );
    }

    #[test]
    fn root_services_exempt_privsep_daemons_and_unprivileged_workers() {
        let snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 22, &[2]),
                listener("tcp", "0.0.0.0", 6379, &[3]),
                listener("tcp", "10.0.0.5", 80, &[4, 40]),
                listener("tcp", "10.0.0.5", 8080, &[6]),
                listener("tcp", "127.0.0.1", 9000, &[7]),
            ],
            vec![
                packaged(process(2, 1, "/usr/sbin/sshd", 0, "root"), "openssh-server"),
                process(3, 1, "/tmp/redis-server", 0, "root"),
                process(4, 1, "/usr/local/bin/web", 0, "root"),
                process(40, 4, "/usr/local/bin/web", 33, "www-data"),
                process(6, 1, "/usr/local/bin/admin", 0, "root"),
                process(7, 1, "/usr/local/bin/local", 0, "root"),
            ],
        );
        check(
            &snap,
            &Approvals::default(),
            expect![[r#"
            high listener.unapproved tcp 0.0.0.0:22 sshd (pid 2)
              wildcard listener on tcp 0.0.0.0:22 is not in the approvals file
              | scope wildcard
              | exe /usr/sbin/sshd as root
              | no approvals file was found
            high listener.unapproved tcp 0.0.0.0:6379 redis-server (pid 3)
              wildcard listener on tcp 0.0.0.0:6379 is not in the approvals file
              | scope wildcard
              | exe /tmp/redis-server as root
              | no approvals file was found
            high listener.unapproved tcp 10.0.0.5:80 web (pid 4)
              private listener on tcp 10.0.0.5:80 is not in the approvals file
              | scope private
              | exe /usr/local/bin/web as root
              | no approvals file was found
            high listener.unapproved tcp 10.0.0.5:8080 admin (pid 6)
              private listener on tcp 10.0.0.5:8080 is not in the approvals file
              | scope private
              | exe /usr/local/bin/admin as root
              | no approvals file was found
            high service.root tcp 0.0.0.0:6379 redis-server (pid 3)
              redis-server serves tcp 0.0.0.0:6379 as root
              | uid 0 (pids [3])
              | exe /tmp/redis-server
            medium service.root tcp 10.0.0.5:8080 admin (pid 6)
              admin serves tcp 10.0.0.5:8080 as root
              | uid 0 (pids [6])
              | exe /usr/local/bin/admin
        "#]],
        );
    }

    #[test]
    fn login_shell_only_for_non_root_exposed() {
        let mut dev = process(8, 1, "/home/dev/app", 1000, "dev");
        dev.account = Some(Account {
            name: "dev".into(),
            uid: 1000,
            shell: Some("/bin/bash".into()),
            home: Some("/home/dev".into()),
        });
        let mut local = dev.clone();
        local.pid = 9;
        let mut rooty = dev.clone();
        rooty.pid = 10;
        rooty.uid = 0;
        let snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 3000, &[8]),
                listener("tcp", "127.0.0.1", 3001, &[9]),
                listener("tcp", "0.0.0.0", 3002, &[10]),
            ],
            vec![dev, local, rooty],
        );
        check(
            &snap,
            &Approvals::default(),
            expect![[r#"
            high listener.unapproved tcp 0.0.0.0:3000 app (pid 8)
              wildcard listener on tcp 0.0.0.0:3000 is not in the approvals file
              | scope wildcard
              | exe /home/dev/app as dev
              | no approvals file was found
            high listener.unapproved tcp 0.0.0.0:3002 app (pid 10)
              wildcard listener on tcp 0.0.0.0:3002 is not in the approvals file
              | scope wildcard
              | exe /home/dev/app as dev
              | no approvals file was found
            high service.root tcp 0.0.0.0:3002 app (pid 10)
              app serves tcp 0.0.0.0:3002 as root
              | uid 0 (pids [10])
              | exe /home/dev/app
            medium service.login-shell tcp 0.0.0.0:3000 app (pid 8)
              account dev runs tcp 0.0.0.0:3000 and has the login shell /bin/bash
              | uid 1000 shell /bin/bash
        "#]],
        );
    }
}
