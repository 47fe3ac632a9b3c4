//! Executable rules: one judgement of an executable, shared by `perimeter
//! audit` and `perimeter watch`, and the audit's findings from it
//! (`exec.unpackaged`, `exec.deleted`, `exec.world-writable`).
//!
//! [`judge`] is the one place that decides what makes an executable
//! suspicious ([`ExecFlag`]): the audit turns the flags into findings here,
//! the watch prints them with each exec. Both collect the facts their own way
//! (the audit from its /proc walk and one stat per directory, the watch from
//! each exec as it happens) and hand them over as [`ExecFacts`]; neither
//! decides anything itself, so the two commands cannot disagree about the
//! same binary.
//!
//! Audit findings group processes by executable, so forty pre-forked workers
//! of one deleted binary make one finding that lists their pids.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use perimeter_model::{Finding, HostSnapshot, Ownership, Process, Severity};

use crate::in_audited_namespace;
use crate::rules::{EXEC_DELETED, EXEC_UNPACKAGED, EXEC_WORLD_WRITABLE};

/// Why an executable is suspicious. The order of the variants is the order
/// [`judge`] gives them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExecFlag {
    /// No package installed the executable.
    Unpackaged,
    /// The executable lives in (or below) a directory anyone may write to.
    WorldWritable,
    /// The executable was deleted or replaced after the exec.
    Deleted,
    /// The executable is an anonymous memory file: it never was on disk.
    Memfd,
}

impl ExecFlag {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecFlag::Unpackaged => "unpackaged",
            ExecFlag::WorldWritable => "world-writable",
            ExecFlag::Deleted => "deleted",
            ExecFlag::Memfd => "memfd",
        }
    }
}

/// What a collector knows about the executable of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecFacts<'a> {
    /// The resolved executable, without the ` (deleted)` suffix; `None` when
    /// it could not be read.
    pub exe: Option<&'a Path>,
    /// The kernel marked the `exe` link ` (deleted)`.
    pub deleted: bool,
    pub ownership: &'a Ownership,
    /// The nearest directory above `exe` that anyone may write to, as
    /// [`world_writable_dir`] found it.
    pub world_writable_dir: Option<&'a Path>,
}

/// The flags that make an executable suspicious, in [`ExecFlag`] order; empty
/// for an executable with nothing against it.
///
/// Ownership that could not be decided (`Unknown`, `NotChecked`) is not held
/// against the executable: not being permitted to look is not evidence. An
/// anonymous memory file is never `Unpackaged`, whatever a package lookup of
/// its `/memfd:NAME` path said: there is no file a package could have
/// installed, and `Memfd` says the stronger thing.
pub fn judge(facts: &ExecFacts<'_>) -> Vec<ExecFlag> {
    let memfd = facts.exe.is_some_and(is_memfd);
    let mut flags = Vec::new();
    if *facts.ownership == Ownership::Unpackaged && !memfd {
        flags.push(ExecFlag::Unpackaged);
    }
    if facts.world_writable_dir.is_some() {
        flags.push(ExecFlag::WorldWritable);
    }
    if facts.deleted {
        flags.push(ExecFlag::Deleted);
    }
    if memfd {
        flags.push(ExecFlag::Memfd);
    }
    flags
}

/// `/memfd:NAME`: the kernel's name for an executable in an anonymous memory
/// file (`memfd_create` + `fexecve`), the favourite of fileless malware.
pub fn is_memfd(exe: &Path) -> bool {
    exe.as_os_str().as_bytes().starts_with(b"/memfd:")
}

/// Whether a directory's mode lets anyone create files in it: the
/// other-write bit, with or without the sticky bit. The sticky bit (/tmp's
/// 1777) only stops users from removing or renaming each other's files; any
/// local user can still drop a new executable there, which is what the rule
/// is about. A fixed list (/tmp, /var/tmp, /dev/shm) would miss a 0777
/// directory under /srv and flag a /tmp an administrator has closed, so the
/// mode decides, wherever the directory is.
pub fn is_world_writable(mode: u32) -> bool {
    mode & 0o002 != 0
}

/// The nearest directory above `exe` that anyone may write to, asking
/// `mode_of` for the permission bits of each (`None`: could not be read, so
/// not counted). Every directory on the path counts, not only the one that
/// holds the file: below a directory anyone can write to, anyone could have
/// made what lies beneath it (a subdirectory with tidy modes included), so
/// the path no longer says who put the executable there. The root itself is
/// never asked about (a world-writable / is a different, host-wide problem
/// that would flag every process), and neither is a relative path's empty
/// ancestor.
pub fn world_writable_dir(
    exe: &Path,
    mut mode_of: impl FnMut(&Path) -> Option<u32>,
) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take_while(|dir| !dir.as_os_str().is_empty() && *dir != Path::new("/"))
        .find(|dir| mode_of(dir).is_some_and(is_world_writable))
        .map(Path::to_path_buf)
}

/// The judgement of a process in an audit: its executable's facts from the
/// snapshot, with the directory that made it world-writable.
fn judge_process(snapshot: &HostSnapshot, process: &Process) -> (Vec<ExecFlag>, Option<PathBuf>) {
    let dir = process
        .exe
        .as_deref()
        .and_then(|exe| world_writable_dir(exe, |dir| snapshot.exe_dir_modes.get(dir).copied()));
    let flags = judge(&ExecFacts {
        exe: process.exe.as_deref(),
        deleted: process.exe_deleted,
        ownership: &process.ownership,
        world_writable_dir: dir.as_deref(),
    });
    (flags, dir)
}

fn flagged(snapshot: &HostSnapshot, process: &Process, flag: ExecFlag) -> bool {
    judge_process(snapshot, process).0.contains(&flag)
}

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

/// Listening processes whose executable [`judge`] calls unpackaged.
pub(crate) fn unpackaged(snapshot: &HostSnapshot) -> Vec<Finding> {
    let endpoints = endpoints_by_pid(snapshot);
    let listening = snapshot
        .processes
        .values()
        .filter(|p| endpoints.contains_key(&p.pid) && flagged(snapshot, p, ExecFlag::Unpackaged));
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

/// Processes running an executable that was deleted or replaced, or that
/// never was on disk (an anonymous memory file's link always reads deleted).
pub(crate) fn deleted(snapshot: &HostSnapshot) -> Vec<Finding> {
    let endpoints = endpoints_by_pid(snapshot);
    let deleted = snapshot.processes.values().filter(|p| {
        in_audited_namespace(snapshot, p)
            && judge_process(snapshot, p)
                .0
                .iter()
                .any(|flag| matches!(flag, ExecFlag::Deleted | ExecFlag::Memfd))
    });
    let mut findings = Vec::new();
    for (exe, processes) in by_exe(deleted) {
        let listens = processes.iter().any(|p| endpoints.contains_key(&p.pid));
        let packaged = processes
            .iter()
            .any(|p| matches!(p.ownership, Ownership::Package(_)));
        let flags: Vec<ExecFlag> = processes
            .iter()
            .flat_map(|p| judge_process(snapshot, p).0)
            .collect();
        let suspicious = listens
            || !packaged
            || flags.contains(&ExecFlag::WorldWritable)
            || flags.contains(&ExecFlag::Memfd);
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
        // Every process of one path has the same directories above it.
        let Some(dir) = processes
            .iter()
            .find_map(|p| match judge_process(snapshot, p) {
                (flags, dir) if flags.contains(&ExecFlag::WorldWritable) => dir,
                _ => None,
            })
        else {
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
    fn world_writable_wherever_the_mode_says_so() {
        let tmp = process(11, 1, "/var/tmp/x", 1000, "dev");
        let shm = process(12, 1, "/dev/shm/y", 1000, "dev");
        let odd = process(13, 1, "/srv/drop/z", 1000, "dev");
        let fine = process(14, 1, "/usr/bin/fine", 0, "root");
        let tmpish = process(15, 1, "/tmpfoo/bin", 0, "root");
        let mut snap = snapshot(
            vec![listener("tcp", "0.0.0.0", 4444, &[12])],
            vec![tmp, shm, odd, fine, tmpish],
        );
        // A 0777 directory under /srv, not sticky: as open as /tmp.
        snap.exe_dir_modes.insert(PathBuf::from("/srv/drop"), 0o777);
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

    #[test]
    fn a_closed_tmp_is_not_world_writable_and_a_memfd_is_not_unpackaged() {
        // An administrator closed /var/tmp (0755): nobody else can drop a
        // file there, so nothing runs "from a world-writable directory".
        let closed = process(30, 1, "/var/tmp/tool", 0, "root");
        // Fileless: the lookup of /memfd:payload found no package, but there
        // is no file a package could own; the deleted rule says it all.
        let mut memfd = process(31, 1, "/memfd:payload", 0, "root");
        memfd.exe_deleted = true;
        memfd.ownership = Ownership::Unpackaged;
        let mut snap = snapshot(
            vec![listener("tcp", "0.0.0.0", 8888, &[31])],
            vec![closed, memfd],
        );
        snap.exe_dir_modes.insert(PathBuf::from("/var/tmp"), 0o755);
        check(
            &snap,
            expect![[r#"
            high exec.deleted /memfd:payload (pid 31)
              memfd:payload runs from /memfd:payload which no longer exists on disk
              | /proc/31/exe -> /memfd:payload (deleted)
              | runs as root
        "#]],
        );
    }

    /// What [`judge`] makes of each executable, given the directory modes a
    /// collector read: `exe [deleted] ownership -> flags (directory)`.
    fn check_judgements(
        cases: &[(Option<&str>, bool, Ownership)],
        modes: &[(&str, u32)],
        expect: Expect,
    ) {
        let modes: BTreeMap<PathBuf, u32> = crate::fixtures::STOCK_DIR_MODES
            .iter()
            .chain(modes)
            .map(|(dir, mode)| (PathBuf::from(dir), *mode))
            .collect();
        let mut text = String::new();
        for (exe, deleted, ownership) in cases {
            let exe = exe.map(Path::new);
            let dir = exe.and_then(|exe| world_writable_dir(exe, |d| modes.get(d).copied()));
            let flags = judge(&ExecFacts {
                exe,
                deleted: *deleted,
                ownership,
                world_writable_dir: dir.as_deref(),
            });
            let flags: Vec<&str> = flags.iter().map(|flag| flag.as_str()).collect();
            text.push_str(&format!(
                "{}{} {} -> {}{}\n",
                exe.map_or_else(|| "(unreadable)".to_owned(), |e| e.display().to_string()),
                if *deleted { " deleted" } else { "" },
                match ownership {
                    Ownership::Package(package) => format!("package {package}"),
                    Ownership::Unpackaged => "unpackaged".to_owned(),
                    Ownership::Unknown(_) => "unknown".to_owned(),
                    Ownership::NotChecked => "not-checked".to_owned(),
                },
                if flags.is_empty() {
                    "-".to_owned()
                } else {
                    flags.join(", ")
                },
                dir.map(|d| format!(" ({})", d.display()))
                    .unwrap_or_default(),
            ));
        }
        expect.assert_eq(&text);
    }

    #[test]
    fn the_judgement_of_an_executable() {
        let package = packaged(process(1, 1, "/usr/bin/sleep", 0, "root"), "coreutils").ownership;
        let unknown = Ownership::Unknown("not permitted".into());
        check_judgements(
            &[
                (Some("/usr/bin/sleep"), false, package.clone()),
                (Some("/usr/bin/sleep"), true, package),
                (Some("/usr/bin/x"), false, unknown.clone()),
                (Some("/usr/bin/x"), false, Ownership::NotChecked),
                (Some("/opt/app/bin/app"), false, Ownership::Unpackaged),
                (Some("/tmp/.x/miner"), true, Ownership::Unpackaged),
                (Some("/var/tmp/x"), false, unknown.clone()),
                (Some("/dev/shm/y"), false, Ownership::NotChecked),
                (Some("/srv/drop/bin/z"), false, Ownership::Unpackaged),
                (Some("/srv/sticky/z"), false, Ownership::NotChecked),
                (Some("/srv/team/z"), false, Ownership::NotChecked),
                (Some("/tmpfoo/bin"), false, Ownership::NotChecked),
                (Some("/memfd:payload"), true, Ownership::Unpackaged),
                (Some("/memfd:payload"), true, unknown.clone()),
                (None, false, unknown),
            ],
            &[
                ("/srv/drop", 0o777),
                ("/srv/drop/bin", 0o755),
                ("/srv/sticky", 0o1777),
                // Group-writable is not world-writable.
                ("/srv/team", 0o775),
            ],
            expect![[r#"
                /usr/bin/sleep package coreutils -> -
                /usr/bin/sleep deleted package coreutils -> deleted
                /usr/bin/x unknown -> -
                /usr/bin/x not-checked -> -
                /opt/app/bin/app unpackaged -> unpackaged
                /tmp/.x/miner deleted unpackaged -> unpackaged, world-writable, deleted (/tmp)
                /var/tmp/x unknown -> world-writable (/var/tmp)
                /dev/shm/y not-checked -> world-writable (/dev/shm)
                /srv/drop/bin/z unpackaged -> unpackaged, world-writable (/srv/drop)
                /srv/sticky/z not-checked -> world-writable (/srv/sticky)
                /srv/team/z not-checked -> -
                /tmpfoo/bin not-checked -> -
                /memfd:payload deleted unpackaged -> deleted, memfd
                /memfd:payload deleted unknown -> deleted, memfd
                (unreadable) unknown -> -
            "#]],
        );
    }

    #[test]
    fn world_writable_dir_asks_every_directory_but_the_root() {
        let mut asked = Vec::new();
        let found = world_writable_dir(Path::new("/a/b/c/exe"), |dir| {
            asked.push(dir.to_path_buf());
            (dir == Path::new("/a/b")).then_some(0o1777)
        });
        // Nearest first, and it stops at the first writable one.
        assert_eq!(found, Some(PathBuf::from("/a/b")));
        assert_eq!(asked, [PathBuf::from("/a/b/c"), PathBuf::from("/a/b")]);
        asked.clear();
        assert_eq!(
            world_writable_dir(Path::new("/a/b"), |dir| {
                asked.push(dir.to_path_buf());
                None
            }),
            None
        );
        // The root itself is never asked about, nor an empty ancestor.
        assert_eq!(asked, [PathBuf::from("/a")]);
        assert_eq!(
            world_writable_dir(Path::new("relative"), |_| Some(0o777)),
            None
        );
        assert_eq!(
            world_writable_dir(Path::new("/memfd:x"), |_| Some(0o777)),
            None
        );
    }

    #[test]
    fn memfd_executables() {
        assert!(is_memfd(Path::new("/memfd:payload")));
        // memfd_create with an empty name.
        assert!(is_memfd(Path::new("/memfd:")));
        assert!(!is_memfd(Path::new("/usr/bin/memfd:x")));
    }

    #[test]
    fn flags_have_stable_names() {
        let all = [
            ExecFlag::Unpackaged,
            ExecFlag::WorldWritable,
            ExecFlag::Deleted,
            ExecFlag::Memfd,
        ];
        assert!(all.is_sorted());
        assert_eq!(
            all.map(ExecFlag::as_str),
            ["unpackaged", "world-writable", "deleted", "memfd"]
        );
    }
}
