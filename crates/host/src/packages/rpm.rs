//! rpm's database, asked through `rpm` itself (`--root` under another root,
//! `--dbpath` always): `rpm -qf` for who owns given paths, `rpm -qa` for the
//! package list. The database is looked for only where `rpm` is on PATH.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use perimeter_model::{PackageRef, Problem};

use super::PackageDb;

/// Where rpm keeps its database, in the order looked at: the traditional place
/// first, then the one Fedora and openSUSE moved it to (where /var/lib/rpm is
/// often a relative symlink to it).
const RPM_DB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// The rpm database of the system at `root`, as a path inside it, when `rpm`
/// is on PATH and one of [`RPM_DB_DIRS`] is a directory with something in it.
///
/// Under another root the directory must resolve inside that root: rpm opens
/// `<root>/<dbpath>` with the live host's symlink resolution, so an image's
/// absolute symlink would lead rpm to the host's database.
pub(super) fn find_rpm_db(root: &Path) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("rpm").is_file()));
    if !on_path {
        return None;
    }
    let not_empty =
        |dir: &Path| fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if root == Path::new("/") {
        return RPM_DB_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| not_empty(dir));
    }
    let real_root = fs::canonicalize(root).ok()?;
    RPM_DB_DIRS.iter().find_map(|dir| {
        let on_disk = fs::canonicalize(root.join(dir.trim_start_matches('/'))).ok()?;
        let inside = on_disk.strip_prefix(&real_root).ok()?;
        not_empty(&on_disk).then(|| Path::new("/").join(inside))
    })
}

impl PackageDb {
    /// Whether `rpm` and a database under the root were found.
    pub fn has_rpm(&self) -> bool {
        self.rpm_dbpath.is_some()
    }

    /// Which of `paths` rpm says a package owns (one `rpm -qf` for all of
    /// them). Empty without rpm.
    pub fn rpm_owners(
        &self,
        paths: &BTreeSet<PathBuf>,
    ) -> Result<HashMap<PathBuf, PackageRef>, Problem> {
        if paths.is_empty() {
            return Ok(HashMap::new());
        }
        self.run_rpm_query(paths)
    }

    /// The packages rpm knows, when `rpm` and a database under the root are
    /// present.
    pub fn rpm_installed(&self) -> (Vec<RpmPackage>, Vec<Problem>) {
        let Some(dbpath) = &self.rpm_dbpath else {
            return (Vec::new(), Vec::new());
        };
        let output = self
            .rpm_command(dbpath)
            .arg("-qa")
            .arg("--qf")
            .arg(RPM_QA_FORMAT)
            .output();
        match output {
            Ok(output) if output.status.success() => (
                parse_rpm_qa(&String::from_utf8_lossy(&output.stdout)),
                Vec::new(),
            ),
            Ok(output) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                (
                    Vec::new(),
                    vec![Problem::new(
                        "rpm -qa",
                        format!("rpm failed: {}", first.trim()),
                    )],
                )
            }
            Err(err) => (
                Vec::new(),
                vec![Problem::new("rpm -qa", format!("could not run rpm: {err}"))],
            ),
        }
    }

    /// `rpm`, pointed at this root's database: `--root` under another root,
    /// and always `--dbpath` with the database found: the rpm binary's own
    /// configuration need not name it (Debian's rpm looks in ~/.rpmdb, and
    /// an image's layout need not match the host's).
    fn rpm_command(&self, dbpath: &Path) -> Command {
        let mut command = Command::new("rpm");
        if self.root != Path::new("/") {
            command.arg("--root").arg(&self.root);
        }
        command.arg("--dbpath").arg(dbpath);
        command.stdin(Stdio::null());
        command
    }

    /// One `rpm -qf` for all of `paths` (paths inside the root).
    pub(super) fn run_rpm_query(
        &self,
        paths: &BTreeSet<PathBuf>,
    ) -> Result<HashMap<PathBuf, PackageRef>, Problem> {
        let Some(dbpath) = &self.rpm_dbpath else {
            return Ok(HashMap::new());
        };
        run_rpm_query(self.rpm_command(dbpath), paths)
    }
}

/// The first line of rpm's standard error that says rpm itself failed, if
/// any. Lines about one queried file are answers, not failures: `file ... is
/// not owned by any package`, and `error: file ...: No such file or
/// directory`, which rpm prints for an unowned path it does not find on the
/// live host (it looks there even under `--root`).
fn rpm_failure(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("file ") && !line.starts_with("error: file "))
        .find(|line| line.contains("error"))
}

/// The query format asks rpm for each owning package's file names beside its
/// name and architecture. With several paths on one command line and a path
/// owned by more than one package, `%{NAME}` alone could not say which answer
/// belongs to which path; the file names can.
const RPM_QUERY_FORMAT: &str = "[%{FILENAMES}\\t%{NAME}\\t%{ARCH}\\n]";

/// rpm's answer to [`RPM_QUERY_FORMAT`]: `path\tname\tarch` lines, keeping the
/// paths in `wanted`. Lines of another shape (rpm's "file ... is not owned by any
/// package") are skipped. When several packages own a path, the first by name
/// is kept, as for dpkg.
pub fn parse_rpm_qf(text: &str, wanted: &BTreeSet<PathBuf>) -> HashMap<PathBuf, PackageRef> {
    let mut found: HashMap<PathBuf, PackageRef> = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        let (Some(path), Some(name), Some(arch), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = PathBuf::from(path);
        if !wanted.contains(&path) || name.is_empty() {
            continue;
        }
        let pkg = PackageRef {
            manager: "rpm".to_owned(),
            name: name.to_owned(),
            // rpm prints `(none)` for packages without an architecture
            // (gpg-pubkey).
            arch: (!arch.is_empty() && arch != "(none)").then(|| arch.to_owned()),
        };
        match found.get(&path) {
            Some(existing) if existing.name <= pkg.name => {}
            _ => {
                found.insert(path, pkg);
            }
        }
    }
    found
}

fn run_rpm_query(
    mut command: Command,
    paths: &BTreeSet<PathBuf>,
) -> Result<HashMap<PathBuf, PackageRef>, Problem> {
    let output = command
        .arg("-qf")
        .arg("--qf")
        .arg(RPM_QUERY_FORMAT)
        .arg("--")
        .args(paths)
        .output()
        .map_err(|err| Problem::new("rpm -qf", format!("could not run rpm: {err}")))?;
    // rpm exits non-zero when any path is unowned, which is an answer, not a
    // failure; only an answer with nothing parseable and an error is reported.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let found = parse_rpm_qf(&stdout, paths);
    if found.is_empty() && !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(line) = rpm_failure(&stderr) {
            return Err(Problem::new("rpm -qf", format!("rpm failed: {line}")));
        }
    }
    Ok(found)
}

/// One package from `rpm -qa` with [`RPM_QA_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    /// `EPOCH:VERSION-RELEASE`, epoch left out when rpm has none.
    pub version: String,
    pub arch: Option<String>,
    pub vendor: Option<String>,
}

/// `rpm -qa --qf RPM_QA_FORMAT`: one tab-separated line per package.
pub const RPM_QA_FORMAT: &str =
    "%{NAME}\\t%{EPOCH}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\t%{VENDOR}\\n";

/// rpm's answer to [`RPM_QA_FORMAT`]. Lines of another shape are skipped;
/// rpm prints `(none)` for absent tags.
pub fn parse_rpm_qa(text: &str) -> Vec<RpmPackage> {
    let none = |value: &str| (!value.is_empty() && value != "(none)").then(|| value.to_owned());
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (Some(name), Some(epoch), Some(version), Some(arch), Some(vendor), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return None;
            };
            if name.is_empty() {
                return None;
            }
            let version = match none(epoch) {
                Some(epoch) => format!("{epoch}:{version}"),
                None => version.to_owned(),
            };
            Some(RpmPackage {
                name: name.to_owned(),
                version,
                arch: none(arch),
                vendor: none(vendor),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PathBuf {
        PathBuf::from(text)
    }

    #[test]
    fn rpm_package_list() {
        let text = "bash\t(none)\t5.2.26-3.fc40\tx86_64\tFedora Project\n\
                    gpg-pubkey\t(none)\ta15b79cc-63d04c2c\t(none)\t(none)\n\
                    kernel-core\t1\t6.8.5-301.fc40\tx86_64\tFedora Project\n\
                    garbage line\n";
        let packages = parse_rpm_qa(text);
        assert_eq!(
            packages,
            vec![
                RpmPackage {
                    name: "bash".into(),
                    version: "5.2.26-3.fc40".into(),
                    arch: Some("x86_64".into()),
                    vendor: Some("Fedora Project".into()),
                },
                RpmPackage {
                    name: "gpg-pubkey".into(),
                    version: "a15b79cc-63d04c2c".into(),
                    arch: None,
                    vendor: None,
                },
                RpmPackage {
                    name: "kernel-core".into(),
                    version: "1:6.8.5-301.fc40".into(),
                    arch: Some("x86_64".into()),
                    vendor: Some("Fedora Project".into()),
                },
            ]
        );
    }

    #[test]
    fn rpm_failures_are_not_answers_about_one_file() {
        // Under --root rpm looks for an unowned path on the live host.
        let answers = "file /etc/passwd is not owned by any package\n\
                       error: file /usr/local/bin/mine: No such file or directory\n";
        assert_eq!(rpm_failure(answers), None);
        let failed = "error: cannot open Packages database in /srv/image/var/lib/rpm\n\
                      file /opt/x is not owned by any package\n";
        assert_eq!(
            rpm_failure(failed),
            Some("error: cannot open Packages database in /srv/image/var/lib/rpm")
        );
    }

    #[test]
    fn rpm_answers_keep_only_wanted_paths() {
        let text = "/usr/sbin/sshd\topenssh-server\tx86_64\n/usr/share/man/man8/sshd.8.gz\topenssh-server\tx86_64\n\
                    file /opt/x is not owned by any package\n/usr/bin/gpg\tgnupg2\t(none)\n";
        let wanted: BTreeSet<PathBuf> =
            [p("/usr/sbin/sshd"), p("/usr/bin/gpg"), p("/opt/x")].into();
        let found = parse_rpm_qf(text, &wanted);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found.get(Path::new("/usr/sbin/sshd")),
            Some(&PackageRef {
                manager: "rpm".into(),
                name: "openssh-server".into(),
                arch: Some("x86_64".into())
            })
        );
        assert_eq!(
            found
                .get(Path::new("/usr/bin/gpg"))
                .and_then(|p| p.arch.clone()),
            None
        );
    }
}
