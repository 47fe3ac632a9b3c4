//! Package-authority rules (`perimeter inventory`): `pkg.unowned-file`,
//! `pkg.unowned-unit`, `pkg.modified-conffile`, `pkg.modified-file`. The
//! package database is the source of truth for what a host runs; these rules
//! say where the host departs from it, and how much that matters.
//!
//! Severity policy, and why:
//! - `pkg.unowned-file`: an executable no package installed. In a PATH
//!   directory the package manager owns (/usr/bin, /usr/sbin, /bin, /sbin)
//!   it is **medium**: only packages should write there, so the file came from
//!   `make install --prefix=/usr`, a copied binary or an intruder, and a rebuild
//!   from packages loses it. In /usr/local, /opt or /srv it is **low**: that
//!   is where the FHS puts locally installed software, so it is expected, but
//!   the rebuild manifest must carry it. Found only because a process runs it
//!   (anywhere else, /root/bin, /home, /var/lib) it is **medium**. One level
//!   higher when it is running now (it is not a leftover), and **high**
//!   whenever the file is writable by everyone (any local user can change what
//!   runs). Outside the PATH directories, one finding covers an application
//!   directory (`/opt/app`, `/usr/local/lib/node_modules`) with its files as
//!   evidence, so a vendor tree of 300 binaries is one finding, not 300.
//! - `pkg.unowned-unit`: a unit file, drop-in or linked unit no package
//!   ships. **Low** in /etc/systemd/system and /usr/local/lib/systemd/system,
//!   the administrator's directories; **medium** in /lib/systemd/system or
//!   /usr/lib/systemd/system, which belong to the package manager. Masks and
//!   enablement links are state, not code, and make no finding.
//! - `pkg.modified-conffile`: **info**. Debian ships conffiles to be edited;
//!   a changed one is normal, and listed so the rebuild manifest carries it.
//! - `pkg.modified-file`: a package file whose md5 no longer matches. **High**
//!   for code (an ELF binary or library, or a file with an execute bit): a
//!   replaced binary in a package directory is how rootkits persist and how
//!   a botched hand-patch hides. **Medium** for other content (data, scripts
//!   read by interpreters, documentation) and for a file replaced by a
//!   directory, FIFO or device. **Low** when the file is missing: nothing runs
//!   from a missing file, but the host no longer equals its packages (path
//!   exclusions in dpkg.cfg.d do this on purpose).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perimeter_model::{Finding, Severity};
// The facts are the model's own types, which perimeter-inventory finds; the
// rules keep their names for them.
pub use perimeter_model::{Area as FileArea, FileChange as Change, UnitKind as UnitFileKind};

use crate::rules::{PKG_MODIFIED_CONFFILE, PKG_MODIFIED_FILE, PKG_UNOWNED_FILE, PKG_UNOWNED_UNIT};

/// Files named in one grouped finding's evidence; the rest are counted.
const MAX_FILES_IN_EVIDENCE: usize = 10;

/// An executable no package owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnownedExecutable<'a> {
    pub path: &'a Path,
    pub area: FileArea,
    /// Its directory is on the system PATH.
    pub in_path: bool,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Processes running it now.
    pub pids: &'a [u32],
    /// Symlinks that lead to it from the swept directories.
    pub links: &'a [PathBuf],
}

/// A unit file, drop-in or linked unit no package ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnownedUnit<'a> {
    pub path: &'a Path,
    /// Masks and enablement links are state, not code: they make no finding.
    pub kind: UnitFileKind,
    /// In /lib/systemd/system or /usr/lib/systemd/system.
    pub in_package_dir: bool,
    /// `*.wants` (and similar) directories that pull it in.
    pub enabled_by: &'a [String],
}

/// A conffile or package file that no longer matches its recorded md5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedPackageFile<'a> {
    pub path: &'a Path,
    /// Where the package lists it, when a dpkg diversion moved it.
    pub listed_as: Option<&'a Path>,
    /// `name` or `name:arch`.
    pub package: &'a str,
    pub change: Change,
    /// An ELF object or a file with an execute bit.
    pub executable: bool,
}

/// The facts the `pkg.*` rules read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PkgFacts<'a> {
    pub unowned_files: Vec<UnownedExecutable<'a>>,
    pub units: Vec<UnownedUnit<'a>>,
    pub conffiles: Vec<ChangedPackageFile<'a>>,
    /// Empty unless the files were verified.
    pub modified_files: Vec<ChangedPackageFile<'a>>,
}

/// Every `pkg.*` finding, worst first.
pub fn check(facts: &PkgFacts<'_>) -> Vec<Finding> {
    let mut findings = unowned_files(&facts.unowned_files);
    findings.extend(
        facts
            .units
            .iter()
            .filter(|unit| unit.kind.is_unit())
            .map(unowned_unit),
    );
    findings.extend(facts.conffiles.iter().map(modified_conffile));
    findings.extend(facts.modified_files.iter().map(modified_file));
    crate::sort_findings(&mut findings);
    findings
}

/// The severity of one unowned executable under the policy above.
pub fn unowned_file_severity(file: &UnownedExecutable<'_>) -> Severity {
    if file.mode & 0o002 != 0 {
        return Severity::High;
    }
    let base = match file.area {
        FileArea::System | FileArea::Elsewhere => Severity::Medium,
        FileArea::UsrLocal | FileArea::Opt | FileArea::Srv => Severity::Low,
    };
    if file.pids.is_empty() {
        base
    } else {
        raise(base)
    }
}

fn raise(severity: Severity) -> Severity {
    match severity {
        Severity::Info => Severity::Low,
        Severity::Low => Severity::Medium,
        Severity::Medium | Severity::High | Severity::Critical => Severity::High,
    }
}

/// The application directory a file outside the PATH directories is grouped
/// under: `/opt/APP`, `/srv/SITE`, `/usr/local/SUB/NAME`. `None` for files
/// that get a finding of their own (on the PATH, found elsewhere, or right at
/// the top of a tree).
fn group_of(file: &UnownedExecutable<'_>) -> Option<PathBuf> {
    if file.in_path {
        return None;
    }
    let (tree, depth) = match file.area {
        FileArea::Opt => ("/opt", 1),
        FileArea::Srv => ("/srv", 1),
        FileArea::UsrLocal => ("/usr/local", 2),
        FileArea::System | FileArea::Elsewhere => return None,
    };
    let rest = file.path.strip_prefix(tree).ok()?;
    let parts: Vec<_> = rest.components().collect();
    // The group must be a directory above the file.
    if parts.len() <= depth {
        return None;
    }
    let mut group = PathBuf::from(tree);
    group.extend(parts.iter().take(depth));
    Some(group)
}

/// `pkg.unowned-file` findings: one per file on the PATH or elsewhere, one per
/// application directory in /usr/local, /opt and /srv.
pub fn unowned_files(files: &[UnownedExecutable<'_>]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut groups: BTreeMap<PathBuf, Vec<&UnownedExecutable<'_>>> = BTreeMap::new();
    for file in files {
        match group_of(file) {
            Some(group) => groups.entry(group).or_default().push(file),
            None => findings.push(unowned_file(file)),
        }
    }
    for (dir, members) in groups {
        if let [only] = members.as_slice() {
            findings.push(unowned_file(only));
            continue;
        }
        let severity = members
            .iter()
            .map(|f| unowned_file_severity(f))
            .max()
            .unwrap_or(Severity::Low);
        let n_running = members.iter().filter(|f| !f.pids.is_empty()).count();
        let mut message = format!(
            "{} executables under {} belong to no package",
            members.len(),
            dir.display()
        );
        if n_running > 0 {
            message.push_str(&format!("; {n_running} of them running now"));
        }
        let mut finding = Finding::new(
            PKG_UNOWNED_FILE,
            severity,
            dir.display().to_string(),
            message,
        );
        for file in members.iter().take(MAX_FILES_IN_EVIDENCE) {
            finding = finding.with_evidence(describe_file(file));
        }
        if members.len() > MAX_FILES_IN_EVIDENCE {
            finding = finding.with_evidence(format!(
                "and {} more (see the inventory's unowned_files)",
                members.len() - MAX_FILES_IN_EVIDENCE
            ));
        }
        findings.push(finding.with_remedy(UNOWNED_FILE_REMEDY));
    }
    findings
}

const UNOWNED_FILE_REMEDY: &str = "if it is software you installed, package it or keep it in the rebuild manifest (`perimeter inventory export`); if nobody knows it, find out where it came from (owner, mtime, shell history) before removing it";

fn describe_file(file: &UnownedExecutable<'_>) -> String {
    let mut text = format!("{} mode {:04o}", file.path.display(), file.mode);
    if !file.pids.is_empty() {
        let pids: Vec<String> = file.pids.iter().take(8).map(u32::to_string).collect();
        text.push_str(&format!(", running as pid {}", pids.join(", ")));
    }
    text
}

/// One `pkg.unowned-file` finding for one executable.
pub fn unowned_file(file: &UnownedExecutable<'_>) -> Finding {
    let place = match file.area {
        FileArea::System => "in a PATH directory that belongs to the package manager",
        FileArea::UsrLocal => "in /usr/local",
        FileArea::Opt => "in /opt",
        FileArea::Srv => "in /srv",
        FileArea::Elsewhere => "outside PATH, /usr/local, /opt and /srv",
    };
    let mut message = format!("executable {place} that no package installed");
    if !file.pids.is_empty() {
        message.push_str(", running now");
    }
    let mut finding = Finding::new(
        PKG_UNOWNED_FILE,
        unowned_file_severity(file),
        file.path.display().to_string(),
        message,
    )
    .with_evidence(describe_file(file));
    if file.mode & 0o002 != 0 {
        finding = finding.with_evidence("writable by every user");
    }
    for link in file.links {
        finding = finding.with_evidence(format!("reached through symlink {}", link.display()));
    }
    finding.with_remedy(UNOWNED_FILE_REMEDY)
}

/// One `pkg.unowned-unit` finding.
pub fn unowned_unit(unit: &UnownedUnit<'_>) -> Finding {
    let severity = if unit.in_package_dir {
        Severity::Medium
    } else {
        Severity::Low
    };
    let what = match &unit.kind {
        UnitFileKind::Unit => "systemd unit".to_owned(),
        UnitFileKind::DropIn => "systemd drop-in".to_owned(),
        UnitFileKind::Linked { target } => format!("linked systemd unit ({})", target.display()),
        // `check` never asks about these; said plainly if a caller does.
        UnitFileKind::Masked => "systemd mask".to_owned(),
        UnitFileKind::Enablement { .. } => "systemd enablement link".to_owned(),
    };
    let place = if unit.in_package_dir {
        "in a directory that belongs to the package manager"
    } else {
        "in the administrator's unit directory"
    };
    let mut finding = Finding::new(
        PKG_UNOWNED_UNIT,
        severity,
        unit.path.display().to_string(),
        format!("{what} {place} that no package ships"),
    );
    if unit.enabled_by.is_empty() {
        finding = finding.with_evidence("not enabled through a .wants/.requires link");
    } else {
        finding = finding.with_evidence(format!("enabled by {}", unit.enabled_by.join(", ")));
    }
    finding.with_remedy(
        "ship it in a package or keep it in configuration management and the rebuild manifest; if nobody knows it, read it (`systemctl cat`) and disable it",
    )
}

/// One `pkg.modified-conffile` finding.
pub fn modified_conffile(file: &ChangedPackageFile<'_>) -> Finding {
    let message = match file.change {
        Change::Modified => format!(
            "conffile of {} changed from what the package shipped",
            file.package
        ),
        Change::Missing => format!("conffile of {} was removed", file.package),
        Change::Replaced { kind } => {
            format!("conffile of {} was replaced by a {kind}", file.package)
        }
    };
    let mut finding = Finding::new(
        PKG_MODIFIED_CONFFILE,
        Severity::Info,
        file.path.display().to_string(),
        message,
    )
    .with_evidence(format!(
        "md5 differs from Conffiles: in dpkg's status ({})",
        file.change_word()
    ));
    if let Some(listed) = file.listed_as {
        finding = finding.with_evidence(format!("listed as {} (diverted)", listed.display()));
    }
    finding.with_remedy(format!(
        "expected for configuration you edited: keep it in the rebuild manifest (`perimeter inventory export`); `dpkg --verify {}` and a diff against the packaged copy show what changed",
        file.package
    ))
}

/// One `pkg.modified-file` finding.
pub fn modified_file(file: &ChangedPackageFile<'_>) -> Finding {
    let (severity, message) = match file.change {
        Change::Modified if file.executable => (
            Severity::High,
            format!(
                "executable code of {} no longer matches the package",
                file.package
            ),
        ),
        Change::Modified => (
            Severity::Medium,
            format!("file of {} no longer matches the package", file.package),
        ),
        Change::Replaced { kind } => (
            Severity::Medium,
            format!("file of {} was replaced by a {kind}", file.package),
        ),
        Change::Missing => (
            Severity::Low,
            format!("file of {} is missing", file.package),
        ),
    };
    let mut finding = Finding::new(
        PKG_MODIFIED_FILE,
        severity,
        file.path.display().to_string(),
        message,
    )
    .with_evidence(format!(
        "md5 differs from the package's md5sums ({})",
        file.change_word()
    ));
    if let Some(listed) = file.listed_as {
        finding = finding.with_evidence(format!("listed as {} (diverted)", listed.display()));
    }
    finding.with_remedy(format!(
        "find out who changed it and why, then reinstall the package (`apt-get install --reinstall {}`)",
        file.package
    ))
}

impl ChangedPackageFile<'_> {
    fn change_word(&self) -> &'static str {
        self.change.as_str()
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::rules::{AUDIT_RULES, PKG_RULES};

    /// The `pkg.*` findings for `facts`, worst first.
    fn check(facts: &PkgFacts<'_>, expect: Expect) {
        expect.assert_eq(&crate::fixtures::render(&super::check(facts)));
    }

    fn exe<'a>(
        path: &'a str,
        area: FileArea,
        in_path: bool,
        mode: u32,
        pids: &'a [u32],
    ) -> UnownedExecutable<'a> {
        UnownedExecutable {
            path: Path::new(path),
            area,
            in_path,
            mode,
            pids,
            links: &[],
        }
    }

    fn unowned(files: Vec<UnownedExecutable<'_>>) -> PkgFacts<'_> {
        PkgFacts {
            unowned_files: files,
            ..PkgFacts::default()
        }
    }

    #[test]
    fn unowned_file_severity_policy() {
        // Each file on its own (none shares an application directory), so
        // each finding's severity is the policy's for that file.
        check(
            &unowned(vec![
                exe("/usr/bin/x", FileArea::System, true, 0o755, &[]),
                exe("/usr/bin/x", FileArea::System, true, 0o755, &[42]),
                exe("/usr/local/bin/x", FileArea::UsrLocal, true, 0o755, &[]),
                exe("/usr/local/bin/x", FileArea::UsrLocal, true, 0o755, &[7]),
                exe("/opt/a/x", FileArea::Opt, false, 0o755, &[]),
                exe("/srv/x", FileArea::Srv, false, 0o700, &[]),
                exe("/root/x", FileArea::Elsewhere, false, 0o755, &[9]),
                exe("/usr/local/bin/x", FileArea::UsrLocal, true, 0o777, &[]),
            ]),
            expect![[r#"
                high pkg.unowned-file /root/x
                  executable outside PATH, /usr/local, /opt and /srv that no package installed, running now
                  | /root/x mode 0755, running as pid 9
                high pkg.unowned-file /usr/bin/x
                  executable in a PATH directory that belongs to the package manager that no package installed, running now
                  | /usr/bin/x mode 0755, running as pid 42
                high pkg.unowned-file /usr/local/bin/x
                  executable in /usr/local that no package installed
                  | /usr/local/bin/x mode 0777
                  | writable by every user
                medium pkg.unowned-file /usr/bin/x
                  executable in a PATH directory that belongs to the package manager that no package installed
                  | /usr/bin/x mode 0755
                medium pkg.unowned-file /usr/local/bin/x
                  executable in /usr/local that no package installed, running now
                  | /usr/local/bin/x mode 0755, running as pid 7
                low pkg.unowned-file /opt/a/x
                  executable in /opt that no package installed
                  | /opt/a/x mode 0755
                low pkg.unowned-file /srv/x
                  executable in /srv that no package installed
                  | /srv/x mode 0700
                low pkg.unowned-file /usr/local/bin/x
                  executable in /usr/local that no package installed
                  | /usr/local/bin/x mode 0755
            "#]],
        );
    }

    #[test]
    fn vendor_trees_group_path_files_do_not() {
        let pids = [31];
        check(
            &unowned(vec![
                exe("/usr/local/bin/tool", FileArea::UsrLocal, true, 0o755, &[]),
                exe("/opt/vendor/bin/a", FileArea::Opt, false, 0o755, &[]),
                exe("/opt/vendor/bin/b", FileArea::Opt, false, 0o755, &pids),
                exe("/opt/vendor/lib/c.so", FileArea::Opt, false, 0o755, &[]),
                exe("/opt/lonely/run", FileArea::Opt, false, 0o755, &[]),
                exe("/opt/top-level-script", FileArea::Opt, false, 0o755, &[]),
            ]),
            expect![[r#"
                medium pkg.unowned-file /opt/vendor
                  3 executables under /opt/vendor belong to no package; 1 of them running now
                  | /opt/vendor/bin/a mode 0755
                  | /opt/vendor/bin/b mode 0755, running as pid 31
                  | /opt/vendor/lib/c.so mode 0755
                low pkg.unowned-file /opt/lonely/run
                  executable in /opt that no package installed
                  | /opt/lonely/run mode 0755
                low pkg.unowned-file /opt/top-level-script
                  executable in /opt that no package installed
                  | /opt/top-level-script mode 0755
                low pkg.unowned-file /usr/local/bin/tool
                  executable in /usr/local that no package installed
                  | /usr/local/bin/tool mode 0755
            "#]],
        );
    }

    #[test]
    fn a_big_tree_is_one_finding_with_its_files_counted() {
        let paths: Vec<String> = (0..12)
            .map(|n| format!("/usr/local/lib/node_modules/bin/tool{n:02}"))
            .collect();
        let links = [PathBuf::from("/usr/local/bin/tool00")];
        let mut files: Vec<UnownedExecutable<'_>> = paths
            .iter()
            .map(|path| exe(path, FileArea::UsrLocal, false, 0o755, &[]))
            .collect();
        files.push(UnownedExecutable {
            links: &links,
            ..exe("/usr/bin/linked", FileArea::System, true, 0o755, &[])
        });
        check(
            &unowned(files),
            expect![[r#"
            medium pkg.unowned-file /usr/bin/linked
              executable in a PATH directory that belongs to the package manager that no package installed
              | /usr/bin/linked mode 0755
              | reached through symlink /usr/local/bin/tool00
            low pkg.unowned-file /usr/local/lib/node_modules
              12 executables under /usr/local/lib/node_modules belong to no package
              | /usr/local/lib/node_modules/bin/tool00 mode 0755
              | /usr/local/lib/node_modules/bin/tool01 mode 0755
              | /usr/local/lib/node_modules/bin/tool02 mode 0755
              | /usr/local/lib/node_modules/bin/tool03 mode 0755
              | /usr/local/lib/node_modules/bin/tool04 mode 0755
              | /usr/local/lib/node_modules/bin/tool05 mode 0755
              | /usr/local/lib/node_modules/bin/tool06 mode 0755
              | /usr/local/lib/node_modules/bin/tool07 mode 0755
              | /usr/local/lib/node_modules/bin/tool08 mode 0755
              | /usr/local/lib/node_modules/bin/tool09 mode 0755
              | and 2 more (see the inventory's unowned_files)
        "#]],
        );
    }

    #[test]
    fn units_conffiles_and_files() {
        let enabled = vec!["multi-user.target.wants".to_owned()];
        let facts = PkgFacts {
            unowned_files: vec![],
            units: vec![
                UnownedUnit {
                    path: Path::new("/etc/systemd/system/miner.service"),
                    kind: UnitFileKind::Unit,
                    in_package_dir: false,
                    enabled_by: &enabled,
                },
                UnownedUnit {
                    path: Path::new("/lib/systemd/system/ssh.service.d/override.conf"),
                    kind: UnitFileKind::DropIn,
                    in_package_dir: true,
                    enabled_by: &[],
                },
            ],
            conffiles: vec![ChangedPackageFile {
                path: Path::new("/etc/ssh/sshd_config"),
                listed_as: None,
                package: "openssh-server",
                change: Change::Modified,
                executable: false,
            }],
            modified_files: vec![
                ChangedPackageFile {
                    path: Path::new("/usr/sbin/sshd"),
                    listed_as: None,
                    package: "openssh-server",
                    change: Change::Modified,
                    executable: true,
                },
                ChangedPackageFile {
                    path: Path::new("/usr/share/doc/x/README"),
                    listed_as: None,
                    package: "x",
                    change: Change::Modified,
                    executable: false,
                },
                ChangedPackageFile {
                    path: Path::new("/usr/share/man/man1/x.1.gz"),
                    listed_as: None,
                    package: "x",
                    change: Change::Missing,
                    executable: false,
                },
            ],
        };
        check(
            &facts,
            expect![[r#"
            high pkg.modified-file /usr/sbin/sshd
              executable code of openssh-server no longer matches the package
              | md5 differs from the package's md5sums (modified)
            medium pkg.modified-file /usr/share/doc/x/README
              file of x no longer matches the package
              | md5 differs from the package's md5sums (modified)
            medium pkg.unowned-unit /lib/systemd/system/ssh.service.d/override.conf
              systemd drop-in in a directory that belongs to the package manager that no package ships
              | not enabled through a .wants/.requires link
            low pkg.modified-file /usr/share/man/man1/x.1.gz
              file of x is missing
              | md5 differs from the package's md5sums (missing)
            low pkg.unowned-unit /etc/systemd/system/miner.service
              systemd unit in the administrator's unit directory that no package ships
              | enabled by multi-user.target.wants
            info pkg.modified-conffile /etc/ssh/sshd_config
              conffile of openssh-server changed from what the package shipped
              | md5 differs from Conffiles: in dpkg's status (modified)
        "#]],
        );
    }

    #[test]
    fn linked_units_diversions_and_replaced_files() {
        let facts = PkgFacts {
            unowned_files: vec![],
            units: vec![UnownedUnit {
                path: Path::new("/etc/systemd/system/app.service"),
                kind: UnitFileKind::Linked {
                    target: "/opt/app/app.service".into(),
                },
                in_package_dir: false,
                enabled_by: &[],
            }],
            conffiles: vec![ChangedPackageFile {
                path: Path::new("/etc/default/app"),
                listed_as: None,
                package: "app",
                change: Change::Missing,
                executable: false,
            }],
            modified_files: vec![ChangedPackageFile {
                path: Path::new("/usr/bin/tool.distrib"),
                listed_as: Some(Path::new("/usr/bin/tool")),
                package: "tool:amd64",
                change: Change::Replaced { kind: "directory" },
                executable: false,
            }],
        };
        check(
            &facts,
            expect![[r#"
            medium pkg.modified-file /usr/bin/tool.distrib
              file of tool:amd64 was replaced by a directory
              | md5 differs from the package's md5sums (replaced)
              | listed as /usr/bin/tool (diverted)
            low pkg.unowned-unit /etc/systemd/system/app.service
              linked systemd unit (/opt/app/app.service) in the administrator's unit directory that no package ships
              | not enabled through a .wants/.requires link
            info pkg.modified-conffile /etc/default/app
              conffile of app was removed
              | md5 differs from Conffiles: in dpkg's status (missing)
        "#]],
        );
    }

    #[test]
    fn pkg_rules_are_catalogued_once() {
        let mut ids: Vec<&str> = AUDIT_RULES.iter().chain(PKG_RULES).map(|r| r.id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "duplicate rule id");
        let pkg: Vec<&str> = PKG_RULES.iter().map(|r| r.id).collect();
        assert_eq!(
            pkg,
            vec![
                PKG_UNOWNED_FILE,
                PKG_UNOWNED_UNIT,
                PKG_MODIFIED_CONFFILE,
                PKG_MODIFIED_FILE
            ]
        );
        assert!(pkg.iter().all(|id| id.starts_with("pkg.")));
    }
}
