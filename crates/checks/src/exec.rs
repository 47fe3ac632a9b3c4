//! Executable rules: `exec.unpackaged`, `exec.deleted`, `exec.world-writable`.
//! Findings group processes by executable, so forty pre-forked workers of one
//! deleted binary make one finding that lists their pids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perimeter_model::{Finding, HostSnapshot, Ownership, Process, Severity};

use crate::in_audited_namespace;
use crate::rules::{EXEC_DELETED, EXEC_UNPACKAGED, EXEC_WORLD_WRITABLE};

/// Directories anyone can write to on every Linux host; an executable below them
/// can have been dropped there by any local user.
const WORLD_WRITABLE_ROOTS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// Processes per executable path, in path order.
fn by_exe<'a>(
    processes: impl Iterator<Item = &'a Process>,
) -> BTreeMap<&'a Path, Vec<&'a Process>> {
    let mut groups: BTreeMap<&Path, Vec<&Process>> = BTreeMap::new();
    for process in processes {
        if let Some(exe) = process.exe.as_deref() {
            groups.entry(exe).or_default().push(process);
        }
    }
    groups
}

fn pids(processes: &[&Process]) -> String {
    let pids: Vec<String> = processes
        .iter()
        .take(8)
        .map(|p| p.pid.to_string())
        .collect();
    let more = processes.len().saturating_sub(8);
    if more > 0 {
        format!("{} and {more} more", pids.join(", "))
    } else {
        pids.join(", ")
    }
}

fn exe_subject(exe: &Path, processes: &[&Process]) -> String {
    let label = if processes.len() == 1 { "pid" } else { "pids" };
    format!("{} ({label} {})", exe.display(), pids(processes))
}

/// The endpoints each pid listens on.
fn endpoints_by_pid(snapshot: &HostSnapshot) -> BTreeMap<u32, Vec<(String, bool)>> {
    let mut map: BTreeMap<u32, Vec<(String, bool)>> = BTreeMap::new();
    for listener in &snapshot.listeners {
        for pid in listener.pids() {
            map.entry(pid)
                .or_default()
                .push((listener.endpoint(), listener.scope.is_exposed()));
        }
    }
    map
}

/// Listening processes whose executable no package owns.
pub(crate) fn unpackaged(snapshot: &HostSnapshot) -> Vec<Finding> {
    let endpoints = endpoints_by_pid(snapshot);
    let listening = snapshot
        .processes
        .values()
        .filter(|p| endpoints.contains_key(&p.pid) && p.ownership == Ownership::Unpackaged);
    let mut findings = Vec::new();
    for (exe, processes) in by_exe(listening) {
        let mut listens: Vec<&(String, bool)> = processes
            .iter()
            .filter_map(|p| endpoints.get(&p.pid))
            .flatten()
            .collect();
        listens.sort();
        listens.dedup();
        let exposed = listens.iter().any(|(_, exposed)| *exposed);
        let severity = if exposed {
            Severity::High
        } else {
            Severity::Medium
        };
        let mut finding = Finding::new(
            EXEC_UNPACKAGED,
            severity,
            exe_subject(exe, &processes),
            format!(
                "{} listens but no package installed {}",
                processes[0].name(),
                exe.display()
            ),
        );
        for (endpoint, _) in listens.iter().take(6) {
            finding = finding.with_evidence(format!("listens on {endpoint}"));
        }
        finding = finding.with_evidence(format!("runs as {}", processes[0].user_name()));
        findings.push(finding.with_remedy(
            "find out who installed it (a tarball? a forgotten build?); remove it, or replace it with the distribution's package",
        ));
    }
    findings
}

fn in_world_writable(snapshot: &HostSnapshot, exe: &Path) -> Option<PathBuf> {
    if let Some(dir) = snapshot.writable_exe_dirs.get(exe) {
        return Some(dir.clone());
    }
    WORLD_WRITABLE_ROOTS
        .iter()
        .map(Path::new)
        .find(|root| exe.starts_with(root))
        .map(Path::to_path_buf)
}

/// Processes running an executable that was deleted or replaced.
pub(crate) fn deleted(snapshot: &HostSnapshot) -> Vec<Finding> {
    let endpoints = endpoints_by_pid(snapshot);
    let deleted = snapshot
        .processes
        .values()
        .filter(|p| p.exe_deleted && in_audited_namespace(snapshot, p));
    let mut findings = Vec::new();
    for (exe, processes) in by_exe(deleted) {
        let listens = processes.iter().any(|p| endpoints.contains_key(&p.pid));
        let packaged = processes
            .iter()
            .any(|p| matches!(p.ownership, Ownership::Package(_)));
        let suspicious = listens || in_world_writable(snapshot, exe).is_some() || !packaged;
        let (severity, message) = if suspicious {
            (
                Severity::High,
                format!(
                    "{} runs from {} which no longer exists on disk",
                    processes[0].name(),
                    exe.display()
                ),
            )
        } else {
            (
                Severity::Medium,
                format!(
                    "{} runs an old copy of {} (replaced since it started, typically by an upgrade)",
                    processes[0].name(),
                    exe.display()
                ),
            )
        };
        let mut finding = Finding::new(
            EXEC_DELETED,
            severity,
            exe_subject(exe, &processes),
            message,
        )
        .with_evidence(format!(
            "/proc/{}/exe -> {} (deleted)",
            processes[0].pid,
            exe.display()
        ))
        .with_evidence(format!("runs as {}", processes[0].user_name()));
        if let Some(package) = processes.iter().find_map(|p| p.ownership.package()) {
            finding = finding.with_evidence(format!("path belongs to package {package}"));
        }
        findings.push(finding.with_remedy(if suspicious {
            "a program that deletes itself after starting is hiding: copy /proc/PID/exe for analysis, then stop it and find how it got there"
        } else {
            "restart the service so it runs the installed executable"
        }));
    }
    findings
}

/// Processes whose executable lives in a world-writable directory.
pub(crate) fn world_writable(snapshot: &HostSnapshot) -> Vec<Finding> {
    let endpoints = endpoints_by_pid(snapshot);
    let mut findings = Vec::new();
    let audited = snapshot
        .processes
        .values()
        .filter(|p| in_audited_namespace(snapshot, p));
    for (exe, processes) in by_exe(audited) {
        let Some(dir) = in_world_writable(snapshot, exe) else {
            continue;
        };
        let exposed = processes
            .iter()
            .filter_map(|p| endpoints.get(&p.pid))
            .flatten()
            .any(|(_, exposed)| *exposed);
        let severity = if exposed {
            Severity::Critical
        } else {
            Severity::High
        };
        findings.push(
            Finding::new(
                EXEC_WORLD_WRITABLE,
                severity,
                exe_subject(exe, &processes),
                format!(
                    "{} runs from {}, a directory any user can write to",
                    processes[0].name(),
                    dir.display()
                ),
            )
            .with_evidence(format!("exe {}", exe.display()))
            .with_evidence(format!("runs as {}", processes[0].user_name()))
            .with_remedy("stop it and find out how it got there; install services from packages into root-owned directories"),
        );
    }
    findings
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::fixtures::{listener, packaged, process, render, snapshot};

    /// The exec family's findings about `snapshot`, worst first.
    fn check(snapshot: &HostSnapshot, expect: Expect) {
        let mut findings = unpackaged(snapshot);
        findings.extend(deleted(snapshot));
        findings.extend(world_writable(snapshot));
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    #[test]
    fn unpackaged_listeners_grouped_by_exe() {
        let mut redis = process(3, 1, "/opt/redis/bin/redis-server", 0, "root");
        redis.ownership = Ownership::Unpackaged;
        let mut local = process(4, 1, "/usr/local/bin/devtool", 1000, "dev");
        local.ownership = Ownership::Unpackaged;
        let mut idle = process(5, 1, "/usr/local/bin/idle", 1000, "dev");
        idle.ownership = Ownership::Unpackaged;
        let sshd = packaged(process(2, 1, "/usr/sbin/sshd", 0, "root"), "openssh-server");
        let mut unknown = process(6, 1, "/usr/bin/x", 0, "root");
        unknown.ownership = Ownership::Unknown("no package database".into());
        let snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 6379, &[3]),
                listener("tcp", "::", 6379, &[3]),
                listener("tcp", "127.0.0.1", 8000, &[4]),
                listener("tcp", "0.0.0.0", 22, &[2]),
                listener("tcp", "0.0.0.0", 99, &[6]),
            ],
            vec![redis, local, idle, sshd, unknown],
        );
        check(
            &snap,
            expect![[r#"
            high exec.unpackaged /opt/redis/bin/redis-server (pid 3)
              redis-server listens but no package installed /opt/redis/bin/redis-server
              | listens on tcp 0.0.0.0:6379
              | listens on tcp [::]:6379
              | runs as root
            medium exec.unpackaged /usr/local/bin/devtool (pid 4)
              devtool listens but no package installed /usr/local/bin/devtool
              | listens on tcp 127.0.0.1:8000
              | runs as dev
        "#]],
        );
    }

    #[test]
    fn deleted_upgrade_is_medium_hidden_is_high() {
        let mut upgraded = packaged(process(7, 1, "/usr/sbin/cron", 0, "root"), "cron");
        upgraded.exe_deleted = true;
        let mut miner = process(8, 1, "/tmp/.x/kworker", 1000, "dev");
        miner.exe_deleted = true;
        miner.ownership = Ownership::Unpackaged;
        let mut worker = miner.clone();
        worker.pid = 9;
        let fine = process(10, 1, "/usr/bin/ok", 0, "root");
        let snap = snapshot(vec![], vec![upgraded, miner, worker, fine]);
        check(
            &snap,
            expect![[r#"
            high exec.deleted /tmp/.x/kworker (pids 8, 9)
              kworker runs from /tmp/.x/kworker which no longer exists on disk
              | /proc/8/exe -> /tmp/.x/kworker (deleted)
              | runs as dev
            high exec.world-writable /tmp/.x/kworker (pids 8, 9)
              kworker runs from /tmp, a directory any user can write to
              | exe /tmp/.x/kworker
              | runs as dev
            medium exec.deleted /usr/sbin/cron (pid 7)
              cron runs an old copy of /usr/sbin/cron (replaced since it started, typically by an upgrade)
              | /proc/7/exe -> /usr/sbin/cron (deleted)
              | runs as root
              | path belongs to package cron
        "#]],
        );
    }

    #[test]
    fn world_writable_from_roots_and_collected_dirs() {
        let tmp = process(11, 1, "/var/tmp/x", 1000, "dev");
        let shm = process(12, 1, "/dev/shm/y", 1000, "dev");
        let odd = process(13, 1, "/srv/drop/z", 1000, "dev");
        let fine = process(14, 1, "/usr/bin/fine", 0, "root");
        let tmpish = process(15, 1, "/tmpfoo/bin", 0, "root");
        let mut snap = snapshot(
            vec![listener("tcp", "0.0.0.0", 4444, &[12])],
            vec![tmp, shm, odd, fine, tmpish],
        );
        snap.writable_exe_dirs
            .insert(PathBuf::from("/srv/drop/z"), PathBuf::from("/srv/drop"));
        check(
            &snap,
            expect![[r#"
            critical exec.world-writable /dev/shm/y (pid 12)
              y runs from /dev/shm, a directory any user can write to
              | exe /dev/shm/y
              | runs as dev
            high exec.world-writable /srv/drop/z (pid 13)
              z runs from /srv/drop, a directory any user can write to
              | exe /srv/drop/z
              | runs as dev
            high exec.world-writable /var/tmp/x (pid 11)
              x runs from /var/tmp, a directory any user can write to
              | exe /var/tmp/x
              | runs as dev
        "#]],
        );
    }

    #[test]
    fn process_rules_cover_the_audited_namespaces_only() {
        use perimeter_model::{FirewallVerdict, Netns, NetnsFacts};
        let mut here = process(20, 1, "/tmp/a", 0, "root");
        here.exe_deleted = true;
        let mut elsewhere = process(21, 1, "/tmp/b", 0, "root");
        elsewhere.exe_deleted = true;
        elsewhere.netns_inode = Some(99);
        let mut unknown = process(22, 1, "/tmp/c", 0, "root");
        unknown.netns_inode = None;
        let mut snap = snapshot(vec![], vec![here, elsewhere, unknown]);
        snap.namespaces.push(NetnsFacts {
            netns: Netns {
                inode: 1,
                name: "host".into(),
            },
            interfaces: vec![],
            firewall: FirewallVerdict::Unknown("not read".into()),
        });
        check(
            &snap,
            expect![[r#"
            high exec.deleted /tmp/a (pid 20)
              a runs from /tmp/a which no longer exists on disk
              | /proc/20/exe -> /tmp/a (deleted)
              | runs as root
            high exec.world-writable /tmp/a (pid 20)
              a runs from /tmp, a directory any user can write to
              | exe /tmp/a
              | runs as root
            high exec.world-writable /tmp/c (pid 22)
              c runs from /tmp, a directory any user can write to
              | exe /tmp/c
              | runs as root
        "#]],
        );
    }
}
