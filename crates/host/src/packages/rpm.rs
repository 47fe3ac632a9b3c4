//! rpm's database, asked through `rpm` itself (`--root` under another root,
//! `--dbpath` always): `rpm -qf` for who owns given paths, `rpm -qa` for the
//! package list. The database is looked for only where `rpm` is on PATH.
//!
//! rpm runs through [`run_bounded`], with a timeout and an output cap fitted
//! to each query: a hung rpm (one waiting for a lock, say) or one that prints
//! without end becomes a [`Problem`], like any other rpm failure.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use perimeter_model::{PackageRef, Problem};

use super::PackageDb;
use crate::command::run_bounded;

/// Where rpm keeps its database, in the order looked at: the traditional place
/// first, then the one Fedora and openSUSE moved it to (where /var/lib/rpm is
/// often a relative symlink to it).
const RPM_DB_DIRS: [&str; 2] = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"];

/// How long one `rpm -qf` may take. Each path is one index lookup, but on an
/// rpm host the inventory asks about every executable on PATH at once, and
/// rpm waits while a transaction holds its database lock. Two minutes is far
/// beyond a healthy query, even on a cold cache, and still ends a wait that
/// would not end by itself.
const RPM_QUERY_TIMEOUT: Duration = Duration::from_secs(120);

/// The most of `rpm -qf`'s answer kept. [`RPM_QUERY_FORMAT`] prints every
/// file of each owning package, once per path asked about, so the thousands
/// of executables of an rpm host can come to tens of MiB; 256 MiB is well
/// past that and still a bound.
const MAX_RPM_QUERY_OUTPUT: usize = 256 * 1024 * 1024;

/// How long `rpm -qa` may take: it reads every package header, a second or
/// two for thousands of packages; the margin is for a cold cache or a lock,
/// as for `rpm -qf`.
const RPM_LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// The most of `rpm -qa`'s listing kept: [`RPM_QA_FORMAT`] is one line of
/// about 100 bytes per package, so 16 MiB holds over a hundred thousand
/// packages, ten times the largest real host.
const MAX_RPM_LIST_OUTPUT: usize = 16 * 1024 * 1024;

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
        run_rpm_list(
            self.rpm_command(dbpath),
            RPM_LIST_TIMEOUT,
            MAX_RPM_LIST_OUTPUT,
        )
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
        run_rpm_query(
            self.rpm_command(dbpath),
            paths,
            RPM_QUERY_TIMEOUT,
            MAX_RPM_QUERY_OUTPUT,
        )
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

/// `COMMAND -qf --qf RPM_QUERY_FORMAT -- PATHS`, `command` being rpm pointed
/// at a database. A failure, a timeout or an answer past `max_output` is a
/// problem: an answer cut short cannot say the paths it did not reach are
/// unowned.
fn run_rpm_query(
    mut command: Command,
    paths: &BTreeSet<PathBuf>,
    timeout: Duration,
    max_output: usize,
) -> Result<HashMap<PathBuf, PackageRef>, Problem> {
    command
        .arg("-qf")
        .arg("--qf")
        .arg(RPM_QUERY_FORMAT)
        .arg("--")
        .args(paths);
    let output = run_bounded(command, timeout, max_output)
        .map_err(|err| Problem::new("rpm -qf", err.to_string()))?;
    if output.truncated {
        return Err(Problem::new(
            "rpm -qf",
            format!(
                "rpm printed more than {} MiB; which package owns each path was not decided",
                max_output / (1024 * 1024)
            ),
        ));
    }
    // rpm exits non-zero when any path is unowned, which is an answer, not a
    // failure; only an answer with nothing parseable and an error is reported.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let found = parse_rpm_qf(&stdout, paths);
    if found.is_empty() && !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // rpm ends every message with a newline; a last line without one was
        // cut by the runner's cap on standard error and says nothing whole.
        let stderr = match stderr.rfind('\n') {
            Some(end) => stderr.get(..=end).unwrap_or_default(),
            None => "",
        };
        if let Some(line) = rpm_failure(stderr) {
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

/// `COMMAND -qa --qf RPM_QA_FORMAT`, `command` being rpm pointed at a
/// database. A listing past `max_output` keeps its complete lines, with a
/// problem saying the list stops there; a failure or a timeout is a problem
/// and no packages.
fn run_rpm_list(
    mut command: Command,
    timeout: Duration,
    max_output: usize,
) -> (Vec<RpmPackage>, Vec<Problem>) {
    command.arg("-qa").arg("--qf").arg(RPM_QA_FORMAT);
    match run_bounded(command, timeout, max_output) {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout);
            if !output.truncated {
                return (parse_rpm_qa(&text), Vec::new());
            }
            // The cap cuts a line in two; its first half could still read as
            // a package with a cut vendor, so only complete lines count.
            let complete = match text.rfind('\n') {
                Some(end) => text.get(..=end).unwrap_or_default(),
                None => "",
            };
            let problem = Problem::new(
                "rpm -qa",
                format!(
                    "rpm printed more than {} MiB; the package list stops there",
                    max_output / (1024 * 1024)
                ),
            );
            (parse_rpm_qa(complete), vec![problem])
        }
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
        Err(err) => (Vec::new(), vec![Problem::new("rpm -qa", err.to_string())]),
    }
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

    /// A shell script standing in for rpm: `sh -c SCRIPT rpm ARGS...`, so
    /// the arguments the runners add land in the script's `$@`.
    fn fake_rpm(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).arg("rpm");
        command
    }

    #[test]
    fn a_hung_rpm_is_killed_at_the_timeout_and_is_a_problem() {
        let paths: BTreeSet<PathBuf> = [p("/usr/sbin/sshd")].into();
        let started = std::time::Instant::now();
        let answer = run_rpm_query(
            fake_rpm("exec sleep 60"),
            &paths,
            Duration::from_secs(1),
            1024 * 1024,
        );
        let Err(problem) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(problem.subject, "rpm -qf");
        assert_eq!(problem.message, "sh did not finish within 1 seconds");

        let (packages, problems) = run_rpm_list(
            fake_rpm("exec sleep 60"),
            Duration::from_secs(1),
            1024 * 1024,
        );
        assert!(packages.is_empty());
        let problems: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.subject.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            problems,
            vec![("rpm -qa", "sh did not finish within 1 seconds")]
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn rpm_failures_and_floods_are_problems_not_panics() {
        let paths: BTreeSet<PathBuf> = [p("/usr/sbin/sshd")].into();
        let timeout = Duration::from_secs(30);
        let failing = "echo 'error: cannot open Packages index using db5' >&2; exit 1";
        let answer = run_rpm_query(fake_rpm(failing), &paths, timeout, 1024 * 1024);
        assert_eq!(
            answer.map_err(|p| p.message),
            Err("rpm failed: error: cannot open Packages index using db5".to_owned())
        );
        let (packages, problems) = run_rpm_list(fake_rpm(failing), timeout, 1024 * 1024);
        assert!(packages.is_empty());
        assert_eq!(
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>(),
            vec!["rpm failed: error: cannot open Packages index using db5"]
        );

        // The query's arguments reach rpm: it answers for the path it is
        // asked about.
        let answering = "for last; do :; done; printf '%s\\topenssh-server\\tx86_64\\n' \"$last\"";
        let answer = run_rpm_query(fake_rpm(answering), &paths, timeout, 1024 * 1024);
        assert_eq!(
            answer.map(|found| found.into_keys().collect::<Vec<_>>()),
            Ok(vec![p("/usr/sbin/sshd")])
        );

        // Two MiB against a one MiB cap.
        let flood = "yes \"$(printf 'bash\\t(none)\\t5.2.26-3\\tx86_64\\tFedora Project')\" | head -c 2097152";
        let answer = run_rpm_query(fake_rpm(flood), &paths, timeout, 1024 * 1024);
        assert_eq!(
            answer.map_err(|p| p.message),
            Err(
                "rpm printed more than 1 MiB; which package owns each path was not decided"
                    .to_owned()
            )
        );
        let (packages, problems) = run_rpm_list(fake_rpm(flood), timeout, 1024 * 1024);
        assert_eq!(
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>(),
            vec!["rpm printed more than 1 MiB; the package list stops there"]
        );
        assert!(!packages.is_empty());
        // The line the cap cut in two is not a package with a cut vendor.
        assert!(
            packages
                .iter()
                .all(|p| p.vendor.as_deref() == Some("Fedora Project")),
            "{:?}",
            packages.last()
        );
    }
}
