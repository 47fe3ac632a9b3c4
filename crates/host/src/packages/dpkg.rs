//! dpkg's own database under `<root>/var/lib/dpkg`: the `info/*.list` file
//! lists (streamed, keeping only the paths asked about), the `diversions`
//! file, and `dpkg-divert`'s rules for who owns a moved file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use perimeter_model::{PackageRef, Problem};

use super::{InstalledPackage, PackageDb};

/// A single line of a dpkg file list (or of the diversions file) longer than
/// this is not a path: Linux caps paths at 4096 bytes.
pub(super) const MAX_PATH_LINE: usize = 4096;

/// What went wrong reading dpkg's database.
#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    #[error("{file}: line {line}: not an absolute path")]
    NotAPath { file: PathBuf, line: usize },
    #[error("{file}: line {line}: line longer than {MAX_PATH_LINE} bytes")]
    LineTooLong { file: PathBuf, line: usize },
    #[error("{file}: {n_lines} lines is not a whole number of (from, to, package) triples")]
    IncompleteDiversion { file: PathBuf, n_lines: usize },
    #[error("{file}: {source}")]
    Read { file: PathBuf, source: io::Error },
    #[error("{file}: the file name is not `PACKAGE.list` or `PACKAGE:ARCH.list`")]
    BadListName { file: PathBuf },
}

/// One `dpkg-divert` entry: the file a package would install at `from` is
/// installed at `to` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diversion {
    pub from: PathBuf,
    pub to: PathBuf,
    /// The diverting package; `None` for a local diversion made by the
    /// administrator.
    pub by: Option<String>,
}

/// The paths of one `info/PACKAGE.list`, one absolute path per line, in order.
///
/// Paths are bytes, as dpkg stores them: a file name that is not UTF-8 is legal
/// on Linux and in dpkg, so it is not an error here. `file` only names the list in
/// errors. Blank lines are skipped; any other line that does not start with `/` (a
/// truncated or foreign file) is an error naming the line.
pub fn parse_dpkg_list<'a>(text: &'a [u8], file: &Path) -> Result<Vec<&'a [u8]>, DpkgError> {
    let mut paths = Vec::new();
    for (line_idx, raw) in text.split(|&b| b == b'\n').enumerate() {
        if let Some(path) = list_line(raw, file, line_idx + 1)? {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// One line of a file list, checked: `Ok(None)` for a blank line.
fn list_line<'a>(raw: &'a [u8], file: &Path, line: usize) -> Result<Option<&'a [u8]>, DpkgError> {
    let path = raw.strip_suffix(b"\r").unwrap_or(raw);
    if path.is_empty() {
        return Ok(None);
    }
    if path.len() > MAX_PATH_LINE {
        return Err(DpkgError::LineTooLong {
            file: file.to_owned(),
            line,
        });
    }
    if path.first() != Some(&b'/') || path.contains(&0) {
        return Err(DpkgError::NotAPath {
            file: file.to_owned(),
            line,
        });
    }
    Ok(Some(path))
}

/// The `diversions` file: triples of lines `from`, `to`, diverting package (`:`
/// for a local diversion). Returns every complete, well-formed triple, and the
/// errors for the rest, so one bad entry does not hide the others.
pub fn parse_diversions(text: &[u8], file: &Path) -> (Vec<Diversion>, Vec<DpkgError>) {
    let mut diversions = Vec::new();
    let mut errors = Vec::new();
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    // A file that ends with a newline yields one empty piece after it.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let n_lines = lines.len();
    for (triple_idx, triple) in lines.chunks(3).enumerate() {
        let [from, to, by] = triple else {
            errors.push(DpkgError::IncompleteDiversion {
                file: file.to_owned(),
                n_lines,
            });
            break;
        };
        let first_line = triple_idx * 3 + 1;
        let checked_from = list_line(from, file, first_line);
        let checked_to = list_line(to, file, first_line + 1);
        match (checked_from, checked_to) {
            (Ok(Some(from)), Ok(Some(to))) => {
                let by = by.strip_suffix(b"\r").unwrap_or(by);
                let by = match by {
                    b":" => None,
                    name => Some(String::from_utf8_lossy(name).into_owned()),
                };
                diversions.push(Diversion {
                    from: bytes_to_path(from),
                    to: bytes_to_path(to),
                    by,
                });
            }
            (Err(err), _) | (_, Err(err)) => errors.push(err),
            (Ok(None), _) => errors.push(DpkgError::NotAPath {
                file: file.to_owned(),
                line: first_line,
            }),
            (_, Ok(None)) => errors.push(DpkgError::NotAPath {
                file: file.to_owned(),
                line: first_line + 1,
            }),
        }
    }
    (diversions, errors)
}

/// The package a list file belongs to, from its name: `bash.list` is `bash`,
/// `libc6:amd64.list` is `libc6` for `amd64` (multi-arch "same" packages carry the
/// architecture in the name; others do not, and dpkg names them without one).
pub fn package_of_list_name(file_name: &str) -> Option<PackageRef> {
    let stem = file_name.strip_suffix(".list")?;
    let (name, arch) = match stem.split_once(':') {
        Some((name, arch)) => (name, Some(arch.to_owned())),
        None => (stem, None),
    };
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    let valid_arch = arch
        .as_deref()
        .is_none_or(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    (valid_name && valid_arch).then(|| PackageRef {
        manager: "dpkg".to_owned(),
        name: name.to_owned(),
        arch,
    })
}

pub(super) fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

impl PackageDb {
    pub(super) fn diversion_to(&self, path: &Path) -> Option<&Diversion> {
        self.diversions.iter().find(|d| d.to == path)
    }

    fn diversion_from(&self, path: &Path) -> Option<&Diversion> {
        self.diversions.iter().find(|d| d.from == path)
    }

    /// Who owns the file found at `path`, under dpkg-divert's rules.
    pub(super) fn owner_of_file(
        &self,
        path: &Path,
        listing: &dyn PathOwners,
    ) -> Option<PackageRef> {
        if let Some(diversion) = self.diversion_to(path) {
            // Whatever package lists the original name had its file moved here;
            // the diverter's own copy stays at the original name.
            let moved = listing
                .listed(diversion.from.as_os_str().as_bytes())
                .into_iter()
                .find(|pkg| Some(&pkg.name) != diversion.by.as_ref())
                .cloned();
            if moved.is_some() {
                return moved;
            }
        } else if let Some(diversion) = self.diversion_from(path) {
            // Only the diverting package's own file is installed at the original
            // name; a local diversion leaves whatever the administrator put there.
            let by = diversion.by.as_ref()?;
            return listing
                .listed(path.as_os_str().as_bytes())
                .into_iter()
                .find(|pkg| &pkg.name == by)
                .cloned();
        }
        listing
            .listed(path.as_os_str().as_bytes())
            .first()
            .map(|pkg| (*pkg).clone())
    }

    /// The `info/*.md5sums` file of a package, under the name dpkg gives it
    /// (`NAME:ARCH.md5sums` for multi-arch "same" packages). `None` when the
    /// package ships no checksums (a few do not) or there is no dpkg database.
    pub fn md5sums_file(&self, package: &InstalledPackage) -> Option<PathBuf> {
        let info = self.dpkg_info.as_ref()?;
        let qualified = info.join(format!("{}:{}.md5sums", package.name, package.arch));
        let bare = info.join(format!("{}.md5sums", package.name));
        [qualified, bare].into_iter().find(|file| file.is_file())
    }

    /// The paths a package's `info/*.list` names (files, directories and
    /// symlinks alike), under the name dpkg gives the list.
    pub fn listed_paths(&self, package: &InstalledPackage) -> Result<Vec<PathBuf>, DpkgError> {
        let Some(info) = self.dpkg_info.as_ref() else {
            return Ok(Vec::new());
        };
        let qualified = info.join(format!("{}:{}.list", package.name, package.arch));
        let file = if qualified.is_file() {
            qualified
        } else {
            info.join(format!("{}.list", package.name))
        };
        let text = fs::read(&file).map_err(|source| DpkgError::Read {
            file: file.clone(),
            source,
        })?;
        Ok(parse_dpkg_list(&text, &file)?
            .into_iter()
            .map(bytes_to_path)
            .collect())
    }

    /// Where the file a package lists at `path` is installed, under
    /// dpkg-divert's rules: another package's (or the administrator's)
    /// diversion of `path` moves it; the diverting package's own file stays.
    pub fn installed_path<'a>(&'a self, package: &str, path: &'a Path) -> &'a Path {
        match self.diversion_from(path) {
            Some(diversion) if diversion.by.as_deref() != Some(package) => &diversion.to,
            _ => path,
        }
    }
}

/// Answers "which packages list this exact path", sorted by name so that a
/// path listed by several packages always gets the same answer.
pub(super) trait PathOwners {
    fn listed(&self, path: &[u8]) -> Vec<&PackageRef>;
}

/// Paths kept from a pass over the file lists, each with the packages listing
/// it. Packages are interned so a path costs one small vector of indices.
#[derive(Debug, Clone, Default)]
pub(super) struct Listing {
    pub(super) packages: Vec<PackageRef>,
    pub(super) by_path: HashMap<Box<[u8]>, Vec<u32>>,
}

impl Listing {
    fn add_package(&mut self, pkg: PackageRef) -> u32 {
        self.packages.push(pkg);
        u32::try_from(self.packages.len() - 1).unwrap_or(u32::MAX)
    }

    fn add_path(&mut self, path: &[u8], pkg_idx: u32) {
        match self.by_path.get_mut(path) {
            Some(idxs) if !idxs.contains(&pkg_idx) => idxs.push(pkg_idx),
            Some(_) => {}
            None => {
                self.by_path.insert(path.into(), vec![pkg_idx]);
            }
        }
    }
}

impl PathOwners for Listing {
    fn listed(&self, path: &[u8]) -> Vec<&PackageRef> {
        let mut pkgs: Vec<&PackageRef> = self
            .by_path
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(|&idx| self.packages.get(idx as usize))
            .collect();
        pkgs.sort();
        pkgs
    }
}

/// Streams every `*.list` under `info`, keeping the paths `keep` accepts.
/// Unreadable or malformed lists become problems; the paths read before the bad
/// line of a list are kept.
pub(super) fn stream_lists(
    info: &Path,
    keep: impl Fn(&[u8]) -> bool,
    listing: &mut Listing,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let entries = match fs::read_dir(info) {
        Ok(entries) => entries,
        Err(source) => {
            problems.push(dpkg_problem(&DpkgError::Read {
                file: info.to_owned(),
                source,
            }));
            return problems;
        }
    };
    let mut line = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(source) => {
                problems.push(dpkg_problem(&DpkgError::Read {
                    file: info.to_owned(),
                    source,
                }));
                continue;
            }
        };
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if !name.ends_with(".list") {
            continue;
        }
        let file = entry.path();
        let Some(pkg) = package_of_list_name(name) else {
            problems.push(dpkg_problem(&DpkgError::BadListName { file }));
            continue;
        };
        let reader = match File::open(&file) {
            Ok(f) => BufReader::new(f),
            Err(source) => {
                problems.push(dpkg_problem(&DpkgError::Read { file, source }));
                continue;
            }
        };
        let pkg_idx = listing.add_package(pkg);
        if let Err(err) = scan_list(reader, &file, &keep, &mut line, |path| {
            listing.add_path(path, pkg_idx)
        }) {
            problems.push(dpkg_problem(&err));
        }
    }
    problems
}

/// Reads one list line by line into `line` (reused between files so the pass
/// allocates once), handing kept paths to `found`. A line is read at most
/// `MAX_PATH_LINE + 2` bytes at a time, so a list without newlines cannot make
/// the buffer grow without bound.
fn scan_list(
    mut reader: impl BufRead,
    file: &Path,
    keep: &impl Fn(&[u8]) -> bool,
    line: &mut Vec<u8>,
    mut found: impl FnMut(&[u8]),
) -> Result<(), DpkgError> {
    let cap = (MAX_PATH_LINE + 2) as u64;
    let mut line_no = 0;
    loop {
        line.clear();
        line_no += 1;
        let n = io::Read::take(&mut reader, cap)
            .read_until(b'\n', line)
            .map_err(|source| DpkgError::Read {
                file: file.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        let raw = line.strip_suffix(b"\n").unwrap_or(line);
        if let Some(path) = list_line(raw, file, line_no)?
            && keep(path)
        {
            found(path);
        }
    }
}

pub(super) fn dpkg_problem(err: &DpkgError) -> Problem {
    let subject = match err {
        DpkgError::NotAPath { file, .. }
        | DpkgError::LineTooLong { file, .. }
        | DpkgError::IncompleteDiversion { file, .. }
        | DpkgError::Read { file, .. }
        | DpkgError::BadListName { file } => file.display().to_string(),
    };
    let problem = Problem::new(subject, err.to_string());
    match err {
        DpkgError::Read { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
            problem.with_hint("run as root to read the whole package database")
        }
        _ => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PathBuf {
        PathBuf::from(text)
    }

    #[test]
    fn list_paths_in_order_with_blank_lines_skipped() {
        let text = b"/.\n/usr\n/usr/bin\n/usr/bin/redis-check-rdb\n\n/usr/share/doc/redis-tools\n";
        let paths = parse_dpkg_list(text, Path::new("redis-tools.list")).map_err(|e| e.to_string());
        let expected: Vec<&[u8]> = vec![
            b"/.",
            b"/usr",
            b"/usr/bin",
            b"/usr/bin/redis-check-rdb",
            b"/usr/share/doc/redis-tools",
        ];
        assert_eq!(paths, Ok(expected));
    }

    #[test]
    fn non_utf8_file_names_are_paths() {
        let text = b"/.\n/usr/share/caf\xe9\n";
        let paths = parse_dpkg_list(text, Path::new("x.list")).map_err(|e| e.to_string());
        assert_eq!(paths, Ok(vec![&b"/."[..], &b"/usr/share/caf\xe9"[..]]));
    }

    #[test]
    fn a_list_that_is_not_paths_names_file_and_line() {
        let text = b"/.\n/usr\nPackage: bash\n";
        let err = parse_dpkg_list(text, Path::new("/var/lib/dpkg/info/bash.list")).map(|_| ());
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("/var/lib/dpkg/info/bash.list: line 3: not an absolute path".to_owned())
        );
    }

    #[test]
    fn overlong_line_is_an_error_not_an_allocation() {
        let mut text = b"/".to_vec();
        text.extend(std::iter::repeat_n(b'a', MAX_PATH_LINE + 10));
        let err = parse_dpkg_list(&text, Path::new("x.list")).map(|_| ());
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err(format!(
                "x.list: line 1: line longer than {MAX_PATH_LINE} bytes"
            ))
        );
        // The streaming reader reads at most one capped line at a time.
        let mut buffer = Vec::new();
        let result = scan_list(
            &text[..],
            Path::new("x.list"),
            &|_: &[u8]| true,
            &mut buffer,
            |_| {},
        );
        assert!(matches!(
            result,
            Err(DpkgError::LineTooLong { line: 1, .. })
        ));
        assert!(buffer.len() <= MAX_PATH_LINE + 2);
    }

    #[test]
    fn diversions_triples_and_local_diversions() {
        let text = b"/bin/sh\n/bin/sh.distrib\ndash\n/usr/bin/pg_config\n/usr/bin/pg_config.libpq-dev\npostgresql-common\n/etc/issue\n/etc/issue.orig\n:\n";
        let (diversions, errors) = parse_diversions(text, Path::new("diversions"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            diversions,
            vec![
                Diversion {
                    from: p("/bin/sh"),
                    to: p("/bin/sh.distrib"),
                    by: Some("dash".into())
                },
                Diversion {
                    from: p("/usr/bin/pg_config"),
                    to: p("/usr/bin/pg_config.libpq-dev"),
                    by: Some("postgresql-common".into())
                },
                Diversion {
                    from: p("/etc/issue"),
                    to: p("/etc/issue.orig"),
                    by: None
                },
            ]
        );
    }

    #[test]
    fn truncated_diversions_keep_the_complete_triples() {
        let text = b"/bin/sh\n/bin/sh.distrib\ndash\n/usr/bin/perf\n/usr/bin/perf.wrapper\n";
        let (diversions, errors) = parse_diversions(text, Path::new("diversions"));
        assert_eq!(diversions.len(), 1);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec!["diversions: 5 lines is not a whole number of (from, to, package) triples"]
        );
    }

    #[test]
    fn list_names() {
        let bash = package_of_list_name("bash.list");
        assert_eq!(bash.map(|p| p.to_string()), Some("bash".to_owned()));
        let libc = package_of_list_name("libc6:amd64.list");
        assert_eq!(libc.as_ref().map(|p| p.name.as_str()), Some("libc6"));
        assert_eq!(libc.and_then(|p| p.arch), Some("amd64".to_owned()));
        assert_eq!(package_of_list_name("bash.md5sums"), None);
        assert_eq!(package_of_list_name("Bad Name.list"), None);
        assert_eq!(package_of_list_name(".list"), None);
    }
}
