//! Which package installed an executable: dpkg's database under
//! `<root>/var/lib/dpkg` (honouring `dpkg-divert` and merged-/usr aliases), and
//! rpm's where `rpm` is on PATH and its database is present under the root
//! (asked through `rpm --root`, so an image's packages are the image's).
//!
//! The audit asks about a handful of executables, so the lookup is query-driven:
//! [`PackageDb::owners`] first works out every path under which each executable
//! could be listed (the path itself, its merged-/usr aliases, its real path, and
//! the symlinks beside it that resolve to it), then streams every `info/*.list`
//! once, line by line, keeping only those paths. Nothing else is held in memory.
//! [`PackageDb::index`] builds the full path → package table for commands that
//! want the whole inventory; both answer through the same ownership rules.
//!
//! Ownership rules, as dpkg installs files:
//! - a file is owned by the packages whose `.list` names its path;
//! - `dpkg-divert` moves a file: when package P lists `A` and `A` is diverted to
//!   `B` by package D, P's file is installed at `B`, so the file at `B` belongs to
//!   P, and the file at `A` belongs to D (if D ships it). A local diversion (made
//!   by the administrator, `:` in the database) owns nothing;
//! - a symlink is its own dpkg object: `/usr/bin/redis-server` (redis-server) is a
//!   symlink to `/usr/bin/redis-check-rdb` (redis-tools), so a process running it
//!   has redis-tools' file as its executable. The symlinks are reported beside the
//!   owner, never in its place: a packaged symlink to an unpackaged file does not
//!   make the file packaged.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use perimeter_model::{Ownership, PackageRef, Problem};

/// The directory pairs merged-/usr joins: on a merged system each top-level
/// directory is a symlink to its `/usr` twin, so both names reach the same files
/// while dpkg still lists whichever name the package shipped.
const USR_MERGE_PAIRS: [(&str, &str); 6] = [
    ("/bin", "/usr/bin"),
    ("/sbin", "/usr/sbin"),
    ("/lib", "/usr/lib"),
    ("/lib64", "/usr/lib64"),
    ("/lib32", "/usr/lib32"),
    ("/libx32", "/usr/libx32"),
];

/// Directories whose symlinks are examined for packaged names of an executable,
/// besides the executable's own directory: a binary in /usr/bin is often started
/// through a link in /usr/sbin and the other way round.
const BIN_DIRS: [&str; 2] = ["/usr/bin", "/usr/sbin"];

/// A single line of a dpkg file list (or of the diversions file) longer than
/// this is not a path: Linux caps paths at 4096 bytes.
const MAX_PATH_LINE: usize = 4096;

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

/// The merged-/usr twins of `path` that are the same file on this host: for
/// `/usr/bin/bash`, `/bin/bash` when `/bin` is a symlink to `usr/bin`.
fn usr_merge_aliases(path: &Path, merged: &[(&'static str, &'static str)]) -> Vec<PathBuf> {
    let mut aliases = Vec::new();
    for &(top, usr) in merged {
        if let Ok(rest) = path.strip_prefix(usr) {
            aliases.push(Path::new(top).join(rest));
        } else if let Ok(rest) = path.strip_prefix(top) {
            aliases.push(Path::new(usr).join(rest));
        }
    }
    aliases
}

fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

/// Where a host keeps its package databases, and how its directories are laid
/// out. Opening reads only the diversions; the file lists are read by each
/// query.
#[derive(Debug, Clone)]
pub struct PackageDb {
    root: PathBuf,
    /// `<root>/var/lib/dpkg/info`, when it exists.
    dpkg_info: Option<PathBuf>,
    diversions: Vec<Diversion>,
    /// The merged-/usr pairs in effect on this host (top-level directory is a
    /// symlink to the `/usr` one).
    merged: Vec<(&'static str, &'static str)>,
    /// The rpm database directory as a path inside the root (given to `rpm
    /// --dbpath`), when `rpm` is on PATH and that directory is not empty.
    rpm_dbpath: Option<PathBuf>,
}

impl PackageDb {
    /// Opens the package databases of the system mounted at `root` (`/` for this
    /// host). A missing dpkg directory is not a problem (an rpm host has none);
    /// a missing database of both kinds makes every answer `Unknown`.
    pub fn open(root: &Path) -> (PackageDb, Vec<Problem>) {
        let mut problems = Vec::new();
        let dpkg_dir = root.join("var/lib/dpkg");
        let info = dpkg_dir.join("info");
        let dpkg_info = info.is_dir().then_some(info);
        let mut diversions = Vec::new();
        if dpkg_info.is_some() {
            let file = dpkg_dir.join("diversions");
            match fs::read(&file) {
                Ok(text) => {
                    let (found, errors) = parse_diversions(&text, &file);
                    diversions = found;
                    problems.extend(errors.iter().map(dpkg_problem));
                }
                // No diversions file just means nothing was ever diverted.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => problems.push(dpkg_problem(&DpkgError::Read { file, source })),
            }
        }
        let merged = USR_MERGE_PAIRS
            .iter()
            .copied()
            .filter(|&(top, usr)| is_merged(root, top, usr))
            .collect();
        let rpm_dbpath = find_rpm_db(root);
        let db = PackageDb {
            root: root.to_owned(),
            dpkg_info,
            diversions,
            merged,
            rpm_dbpath,
        };
        (db, problems)
    }

    /// Overrides the merged-/usr detection, for a database copied without its
    /// file system (tests, offline inspection of an image).
    pub fn with_merged_usr(mut self, merged: bool) -> Self {
        self.merged = if merged {
            USR_MERGE_PAIRS.to_vec()
        } else {
            Vec::new()
        };
        self
    }

    /// Whether any package database was found.
    pub fn has_database(&self) -> bool {
        self.dpkg_info.is_some() || self.rpm_dbpath.is_some()
    }

    pub fn diversions(&self) -> &[Diversion] {
        &self.diversions
    }

    /// The package that installed each executable, keyed by the path as given.
    /// One pass over the database serves the whole slice.
    pub fn owners(&self, exes: &[PathBuf]) -> (HashMap<PathBuf, Ownership>, Vec<Problem>) {
        let (details, problems) = self.lookup(exes);
        let owners = details
            .into_iter()
            .map(|(exe, detail)| (exe, detail.ownership))
            .collect();
        (owners, problems)
    }

    /// Like [`PackageDb::owners`], with the paths that were matched and the
    /// packaged symlinks that lead to each executable.
    pub fn lookup(&self, exes: &[PathBuf]) -> (HashMap<PathBuf, ExeOwnership>, Vec<Problem>) {
        let mut problems = Vec::new();
        if !self.has_database() {
            let reason = format!(
                "no package database: {} does not exist and no rpm database was found",
                self.root.join("var/lib/dpkg/info").display()
            );
            let answers = exes
                .iter()
                .map(|exe| (exe.clone(), ExeOwnership::unknown(reason.clone())))
                .collect();
            return (answers, problems);
        }

        let mut symlink_dirs = SymlinkDirs::default();
        let queries: Vec<ExeQuery> = exes
            .iter()
            .map(|exe| self.query_for(exe, &mut symlink_dirs))
            .collect();

        let mut wanted: HashSet<Vec<u8>> = HashSet::new();
        for query in &queries {
            for path in query
                .file_names
                .iter()
                .chain(query.symlinks.iter().flatten())
            {
                wanted.insert(path.as_os_str().as_bytes().to_vec());
                // A diverted file is listed under its original name.
                if let Some(diversion) = self.diversion_to(path) {
                    wanted.insert(diversion.from.as_os_str().as_bytes().to_vec());
                }
            }
        }

        let mut listing = Listing::default();
        if let Some(info) = &self.dpkg_info {
            problems.extend(stream_lists(
                info,
                |path| wanted.contains(path),
                &mut listing,
            ));
        }

        let mut answers: Vec<(ExeQuery, ExeOwnership)> = queries
            .into_iter()
            .map(|query| {
                let answer = self.decide(&query, &listing);
                (query, answer)
            })
            .collect();

        // rpm is asked once, for every executable dpkg did not know.
        if self.rpm_dbpath.is_some() {
            let paths: BTreeSet<PathBuf> = answers
                .iter()
                .filter(|(_, answer)| !matches!(answer.ownership, Ownership::Package(_)))
                .flat_map(|(query, _)| query.file_names.iter().cloned())
                .collect();
            if !paths.is_empty() {
                match self.run_rpm_query(&paths) {
                    Ok(found) => {
                        for (query, answer) in &mut answers {
                            if matches!(answer.ownership, Ownership::Package(_)) {
                                continue;
                            }
                            if let Some((path, pkg)) = query
                                .file_names
                                .iter()
                                .find_map(|path| found.get(path).map(|pkg| (path, pkg)))
                            {
                                answer.ownership = Ownership::Package(pkg.clone());
                                answer.matched = Some(path.clone());
                            }
                        }
                    }
                    Err(problem) => problems.push(problem),
                }
            }
        }

        let answers = answers
            .into_iter()
            .map(|(query, answer)| (query.exe, answer))
            .collect();
        (answers, problems)
    }

    /// The whole path → packages table of dpkg's database, for inventory-style
    /// commands. Costs memory in proportion to the database (about 8 MB for
    /// 120 000 paths); the audit uses [`PackageDb::owners`] instead.
    pub fn index(&self) -> (PackageIndex, Vec<Problem>) {
        let mut listing = Listing::default();
        let problems = match &self.dpkg_info {
            Some(info) => stream_lists(info, |_| true, &mut listing),
            None => Vec::new(),
        };
        let index = PackageIndex {
            db: self.clone(),
            listing,
        };
        (index, problems)
    }

    /// Every path under which `exe`'s file could be listed, and the symlinks
    /// that lead to it.
    fn query_for(&self, exe: &Path, symlink_dirs: &mut SymlinkDirs) -> ExeQuery {
        let resolved = self.canonical(exe);
        let (real, unresolved) = match resolved {
            Ok(real) => (real, None),
            Err(err) => (
                exe.to_owned(),
                Some(format!("could not resolve {}: {err}", exe.display())),
            ),
        };
        let mut file_names = vec![real.clone()];
        file_names.extend(usr_merge_aliases(&real, &self.merged));

        let mut symlinks = Vec::new();
        if unresolved.is_none() {
            let mut dirs: BTreeSet<PathBuf> = BIN_DIRS.iter().map(PathBuf::from).collect();
            if let Some(parent) = real.parent() {
                dirs.insert(parent.to_owned());
            }
            for dir in dirs {
                for (link, target) in symlink_dirs.links_in(self, &dir) {
                    if *target == real {
                        let mut names = vec![link.clone()];
                        names.extend(usr_merge_aliases(link, &self.merged));
                        symlinks.push(names);
                    }
                }
            }
            // The path as given, when it is itself a symlink (a caller passing
            // argv[0] rather than /proc/PID/exe), leads to the file too.
            if exe != real && !symlinks.iter().any(|names| names.iter().any(|n| n == exe)) {
                let mut names = vec![exe.to_owned()];
                names.extend(usr_merge_aliases(exe, &self.merged));
                symlinks.push(names);
            }
        }
        ExeQuery {
            exe: exe.to_owned(),
            file_names,
            symlinks,
            unresolved,
        }
    }

    /// The symlink-free path of `path` on the system under `root`, as a path
    /// inside that system.
    fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        let on_disk = self.on_disk(path);
        let real = fs::canonicalize(&on_disk)?;
        if self.root == Path::new("/") {
            return Ok(real);
        }
        let root = fs::canonicalize(&self.root)?;
        match real.strip_prefix(&root) {
            Ok(inside) => Ok(Path::new("/").join(inside)),
            // A symlink that leaves the image resolves on the live host, which
            // says nothing about the image.
            Err(_) => Err(io::Error::other("symlink leads outside the root")),
        }
    }

    fn on_disk(&self, path: &Path) -> PathBuf {
        let relative: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.root.join(relative)
    }

    fn diversion_to(&self, path: &Path) -> Option<&Diversion> {
        self.diversions.iter().find(|d| d.to == path)
    }

    fn diversion_from(&self, path: &Path) -> Option<&Diversion> {
        self.diversions.iter().find(|d| d.from == path)
    }

    /// Who owns the file found at `path`, under dpkg-divert's rules.
    fn owner_of_file(&self, path: &Path, listing: &dyn PathOwners) -> Option<PackageRef> {
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

    fn decide(&self, query: &ExeQuery, listing: &dyn PathOwners) -> ExeOwnership {
        let found = query
            .file_names
            .iter()
            .find_map(|name| self.owner_of_file(name, listing).map(|pkg| (name, pkg)));
        let symlinks = query
            .symlinks
            .iter()
            .filter_map(|names| {
                names.iter().find_map(|name| {
                    self.owner_of_file(name, listing)
                        .map(|pkg| (names.first().cloned().unwrap_or_else(|| name.clone()), pkg))
                })
            })
            .collect();
        let (ownership, matched) = match (found, &query.unresolved) {
            (Some((name, pkg)), _) => (Ownership::Package(pkg), Some(name.clone())),
            (None, Some(reason)) => (Ownership::Unknown(reason.clone()), None),
            (None, None) => (Ownership::Unpackaged, None),
        };
        ExeOwnership {
            ownership,
            matched,
            symlinks,
            candidates: query.file_names.clone(),
        }
    }
}

/// The answer for one executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExeOwnership {
    /// Who installed the file the path resolves to.
    pub ownership: Ownership,
    /// The name under which the database lists the file (`/bin/bash` for
    /// `/usr/bin/bash` on a merged-/usr host).
    pub matched: Option<PathBuf>,
    /// Packaged symlinks that resolve to the file, with their owners:
    /// `/usr/bin/redis-server` (redis-server) for redis-tools' `redis-check-rdb`.
    pub symlinks: Vec<(PathBuf, PackageRef)>,
    /// The names the file was looked up under, for evidence.
    pub candidates: Vec<PathBuf>,
}

impl ExeOwnership {
    fn unknown(reason: String) -> Self {
        ExeOwnership {
            ownership: Ownership::Unknown(reason),
            matched: None,
            symlinks: Vec::new(),
            candidates: Vec::new(),
        }
    }
}

/// The full dpkg table: every listed path and the packages listing it.
#[derive(Debug, Clone)]
pub struct PackageIndex {
    db: PackageDb,
    listing: Listing,
}

impl PackageIndex {
    /// Who owns the file at `path` (already canonical), under the same rules as
    /// [`PackageDb::owners`] but without touching the file system.
    pub fn owner_of(&self, path: &Path) -> Ownership {
        let mut names = vec![path.to_owned()];
        names.extend(usr_merge_aliases(path, &self.db.merged));
        names
            .iter()
            .find_map(|name| self.db.owner_of_file(name, &self.listing))
            .map_or(Ownership::Unpackaged, Ownership::Package)
    }

    pub fn n_paths(&self) -> usize {
        self.listing.by_path.len()
    }

    pub fn n_packages(&self) -> usize {
        self.listing.packages.len()
    }
}

/// Answers "which packages list this exact path", sorted by name so that a
/// path listed by several packages always gets the same answer.
trait PathOwners {
    fn listed(&self, path: &[u8]) -> Vec<&PackageRef>;
}

/// Paths kept from a pass over the file lists, each with the packages listing
/// it. Packages are interned so a path costs one small vector of indices.
#[derive(Debug, Clone, Default)]
struct Listing {
    packages: Vec<PackageRef>,
    by_path: HashMap<Box<[u8]>, Vec<u32>>,
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
fn stream_lists(info: &Path, keep: impl Fn(&[u8]) -> bool, listing: &mut Listing) -> Vec<Problem> {
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

fn dpkg_problem(err: &DpkgError) -> Problem {
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

fn is_merged(root: &Path, top: &str, usr: &str) -> bool {
    let top_dir = root.join(top.trim_start_matches('/'));
    let usr_dir = root.join(usr.trim_start_matches('/'));
    let is_link = fs::symlink_metadata(&top_dir).is_ok_and(|m| m.file_type().is_symlink());
    is_link
        && match (fs::canonicalize(&top_dir), fs::canonicalize(&usr_dir)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// What one executable is looked up under.
#[derive(Debug)]
struct ExeQuery {
    exe: PathBuf,
    /// Names of the file itself: its real path, then its merged-/usr aliases.
    file_names: Vec<PathBuf>,
    /// Symlinks that resolve to the file, each with its own aliases (first is
    /// the name found on disk).
    symlinks: Vec<Vec<PathBuf>>,
    /// Why the path could not be resolved, if it could not.
    unresolved: Option<String>,
}

/// Symlinks per directory and the files they resolve to, read once per
/// directory per query batch.
#[derive(Debug, Default)]
struct SymlinkDirs {
    dirs: HashMap<PathBuf, Vec<(PathBuf, PathBuf)>>,
}

impl SymlinkDirs {
    fn links_in(&mut self, db: &PackageDb, dir: &Path) -> &[(PathBuf, PathBuf)] {
        self.dirs
            .entry(dir.to_owned())
            .or_insert_with(|| read_symlinks(db, dir))
    }
}

fn read_symlinks(db: &PackageDb, dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(db.on_disk(dir)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|entry| {
            let link = dir.join(entry.file_name());
            let target = db.canonical(&link).ok()?;
            Some((link, target))
        })
        .collect()
}

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
fn find_rpm_db(root: &Path) -> Option<PathBuf> {
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

impl PackageDb {
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
    fn run_rpm_query(
        &self,
        paths: &BTreeSet<PathBuf>,
    ) -> Result<HashMap<PathBuf, PackageRef>, Problem> {
        let Some(dbpath) = &self.rpm_dbpath else {
            return Ok(HashMap::new());
        };
        run_rpm_query(self.rpm_command(dbpath), paths)
    }
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

/// dpkg's `status` file, the `Conffiles:` of each package and the `md5sums`
/// each package ships: what `perimeter inventory` lists and verifies.
///
/// A `status` paragraph longer than this is not dpkg's: the longest real
/// paragraphs (long Descriptions, hundreds of conffiles) are tens of KiB.
const MAX_STATUS_PARAGRAPH: usize = 4 * 1024 * 1024;

/// What went wrong in dpkg's `status` file or a `.md5sums` file. Each names
/// the file and line, so a reader can open the database at the spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("{file}: line {line}: continuation line outside a field")]
    OrphanContinuation { file: PathBuf, line: usize },
    #[error("{file}: line {line}: not a `Field: value` line")]
    NotAField { file: PathBuf, line: usize },
    #[error("{file}: line {line}: paragraph has no Package field")]
    NoPackage { file: PathBuf, line: usize },
    #[error("{file}: line {line}: package {package} has no {field} field")]
    MissingField {
        file: PathBuf,
        line: usize,
        package: String,
        field: &'static str,
    },
    #[error("{file}: line {line}: Conffiles entry is not `/path md5 [flags]`")]
    BadConffile { file: PathBuf, line: usize },
    #[error("{file}: line {line}: paragraph longer than {MAX_STATUS_PARAGRAPH} bytes")]
    ParagraphTooLong { file: PathBuf, line: usize },
    #[error("{file}: line {line}: not `MD5  path` (32 hex digits, two spaces, a relative path)")]
    BadMd5sumsLine { file: PathBuf, line: usize },
}

/// One package in dpkg's `status` file that is on the system: unpacked or
/// further (`installed`, `half-configured`, `unpacked`, `half-installed`,
/// `triggers-awaited`, `triggers-pending`). `not-installed` and `config-files`
/// paragraphs are not packages on the system and are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    /// `amd64`, `all`, ...
    pub arch: String,
    /// The third word of `Status:` (`installed`, `half-configured`, ...).
    pub status: String,
    /// `Multi-Arch: same`: dpkg names the package's info files `NAME:ARCH.*`.
    pub multi_arch_same: bool,
    /// The package's own `Origin:` field (the vendor that built it), rarely set.
    pub origin_field: Option<String>,
    pub conffiles: Vec<Conffile>,
}

impl InstalledPackage {
    /// The package as findings and ownership name it (`libc6:amd64` for a
    /// multi-arch "same" package, else the bare name).
    pub fn package_ref(&self) -> PackageRef {
        PackageRef {
            manager: "dpkg".to_owned(),
            name: self.name.clone(),
            arch: self.multi_arch_same.then(|| self.arch.clone()),
        }
    }
}

/// One `Conffiles:` entry: a configuration file dpkg shipped, with the md5 of
/// the version it shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    pub path: PathBuf,
    /// `None` while dpkg has not recorded a hash yet (`newconffile`).
    pub md5: Option<[u8; 16]>,
    /// No longer shipped by the current version of the package; dpkg keeps
    /// the file but no longer manages it.
    pub obsolete: bool,
    /// Removed by dpkg on the next upgrade.
    pub remove_on_upgrade: bool,
}

/// Status words of packages whose files are on disk.
const ON_DISK_STATUSES: [&str; 6] = [
    "installed",
    "half-configured",
    "unpacked",
    "half-installed",
    "triggers-awaited",
    "triggers-pending",
];

/// Parses dpkg's `status` file (deb822 paragraphs) into the packages on the
/// system. A malformed paragraph is an error naming its line and is skipped;
/// the others are kept, so one bad entry does not hide the database.
pub fn parse_dpkg_status(text: &str, file: &Path) -> (Vec<InstalledPackage>, Vec<StatusError>) {
    let mut packages = Vec::new();
    let mut errors = Vec::new();
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    let mut paragraph_bytes = 0usize;
    let mut too_long = false;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((line_idx, line)) = lines.next() {
        let blank = line.trim().is_empty();
        if !blank {
            paragraph_bytes += line.len() + 1;
            if paragraph_bytes > MAX_STATUS_PARAGRAPH {
                if !too_long {
                    errors.push(StatusError::ParagraphTooLong {
                        file: file.to_owned(),
                        line: line_idx + 1,
                    });
                }
                too_long = true;
            } else {
                paragraph.push((line_idx + 1, line));
            }
        }
        if blank || lines.peek().is_none() {
            if !paragraph.is_empty() && !too_long {
                match parse_status_paragraph(&paragraph, file) {
                    Ok(Some(package)) => packages.push(package),
                    Ok(None) => {}
                    Err(err) => errors.push(err),
                }
            }
            paragraph.clear();
            paragraph_bytes = 0;
            too_long = false;
        }
    }
    (packages, errors)
}

/// A field of a paragraph: name, value on the field's line, and continuation
/// lines with their line numbers.
type StatusField<'a> = (&'a str, &'a str, Vec<(usize, &'a str)>);

/// One paragraph: `Ok(None)` for a package that is not on the system.
fn parse_status_paragraph(
    lines: &[(usize, &str)],
    file: &Path,
) -> Result<Option<InstalledPackage>, StatusError> {
    let first_line = lines.first().map_or(0, |(line, _)| *line);
    // Fields with their continuation lines; only the fields we read are kept.
    let mut fields: Vec<StatusField<'_>> = Vec::new();
    for &(line_no, line) in lines {
        if line.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some((_, _, continuation)) => continuation.push((line_no, line)),
                None => {
                    return Err(StatusError::OrphanContinuation {
                        file: file.to_owned(),
                        line: line_no,
                    });
                }
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(StatusError::NotAField {
                file: file.to_owned(),
                line: line_no,
            });
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(StatusError::NotAField {
                file: file.to_owned(),
                line: line_no,
            });
        }
        fields.push((name, value.trim(), Vec::new()));
    }
    let field = |wanted: &str| {
        fields
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(wanted))
    };
    let Some((_, name, _)) = field("Package") else {
        return Err(StatusError::NoPackage {
            file: file.to_owned(),
            line: first_line,
        });
    };
    let name = (*name).to_owned();
    let missing = |field: &'static str| StatusError::MissingField {
        file: file.to_owned(),
        line: first_line,
        package: name.clone(),
        field,
    };
    let (_, status, _) = field("Status").ok_or_else(|| missing("Status"))?;
    let status = status.split_whitespace().nth(2).unwrap_or("").to_owned();
    if !ON_DISK_STATUSES.contains(&status.as_str()) {
        return Ok(None);
    }
    let (_, version, _) = field("Version").ok_or_else(|| missing("Version"))?;
    let (_, arch, _) = field("Architecture").ok_or_else(|| missing("Architecture"))?;
    let multi_arch_same = field("Multi-Arch").is_some_and(|(_, value, _)| *value == "same");
    let origin_field = field("Origin")
        .map(|(_, value, _)| (*value).to_owned())
        .filter(|value| !value.is_empty());
    let mut conffiles = Vec::new();
    if let Some((_, _, entries)) = field("Conffiles") {
        for &(line_no, entry) in entries {
            conffiles.push(parse_conffile_entry(entry).ok_or_else(|| {
                StatusError::BadConffile {
                    file: file.to_owned(),
                    line: line_no,
                }
            })?);
        }
    }
    Ok(Some(InstalledPackage {
        name,
        version: (*version).to_owned(),
        arch: (*arch).to_owned(),
        status,
        multi_arch_same,
        origin_field,
        conffiles,
    }))
}

/// ` /etc/ssh/sshd_config 4d4a... [obsolete] [remove-on-upgrade]`. Conffile
/// paths cannot contain spaces in dpkg's format, so splitting on whitespace is
/// how dpkg itself reads the field.
fn parse_conffile_entry(entry: &str) -> Option<Conffile> {
    let mut words = entry.split_whitespace();
    let path = words.next().filter(|p| p.starts_with('/'))?;
    let hash = words.next()?;
    let md5 = match hash {
        "newconffile" => None,
        hex => Some(parse_md5_hex(hex.as_bytes())?),
    };
    let mut conffile = Conffile {
        path: PathBuf::from(path),
        md5,
        obsolete: false,
        remove_on_upgrade: false,
    };
    for flag in words {
        match flag {
            "obsolete" => conffile.obsolete = true,
            "remove-on-upgrade" => conffile.remove_on_upgrade = true,
            _ => return None,
        }
    }
    Some(conffile)
}

/// 32 hex digits into 16 bytes.
pub fn parse_md5_hex(hex: &[u8]) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        let (Some(high), Some(low)) = (
            pair.first().copied().and_then(digit),
            pair.get(1).copied().and_then(digit),
        ) else {
            return None;
        };
        *byte = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

/// One `info/PACKAGE.md5sums`: `MD5  relative/path` lines, as dpkg-deb writes
/// them (32 lower-case hex digits, two spaces, the path without its leading
/// `/`). Paths are bytes, as in the file lists. A malformed line is an error
/// naming it and is skipped.
pub fn parse_md5sums(text: &[u8], file: &Path) -> (Vec<(PathBuf, [u8; 16])>, Vec<StatusError>) {
    let mut sums = Vec::new();
    let mut errors = Vec::new();
    for (line_idx, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .split_at_checked(32)
            .and_then(|(hex, rest)| Some((parse_md5_hex(hex)?, rest.strip_prefix(b"  ")?)))
            .filter(|(_, path)| {
                !path.is_empty() && path.len() < MAX_PATH_LINE && !path.contains(&0)
            });
        match parsed {
            Some((md5, path)) => {
                // dpkg-deb writes relative paths; some old packages wrote `/`-rooted
                // ones, which dpkg accepts too.
                let path = path.strip_prefix(b"/").unwrap_or(path);
                let mut absolute = Vec::with_capacity(path.len() + 1);
                absolute.push(b'/');
                absolute.extend_from_slice(path);
                sums.push((bytes_to_path(&absolute), md5));
            }
            None => errors.push(StatusError::BadMd5sumsLine {
                file: file.to_owned(),
                line: line_idx + 1,
            }),
        }
    }
    (sums, errors)
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

impl PackageDb {
    /// The root of the system this database describes (`/` for this host).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/var/lib/dpkg/info`, when dpkg's database exists.
    pub fn dpkg_info(&self) -> Option<&Path> {
        self.dpkg_info.as_deref()
    }

    /// Whether `rpm` and a database under the root were found.
    pub fn has_rpm(&self) -> bool {
        self.rpm_dbpath.is_some()
    }

    /// The packages dpkg has on the system, from `<root>/var/lib/dpkg/status`.
    /// Without a dpkg database the list is empty and nothing is a problem.
    pub fn installed(&self) -> (Vec<InstalledPackage>, Vec<Problem>) {
        if self.dpkg_info.is_none() {
            return (Vec::new(), Vec::new());
        }
        let file = self.root.join("var/lib/dpkg/status");
        match fs::read(&file) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let (packages, errors) = parse_dpkg_status(&text, &file);
                let problems = errors
                    .iter()
                    .map(|err| Problem::new(file.display().to_string(), err.to_string()))
                    .collect();
                (packages, problems)
            }
            Err(source) => (
                Vec::new(),
                vec![dpkg_problem(&DpkgError::Read { file, source })],
            ),
        }
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

    #[test]
    fn usr_merge_aliases_go_both_ways_only_for_merged_pairs() {
        let merged = USR_MERGE_PAIRS.to_vec();
        assert_eq!(
            usr_merge_aliases(Path::new("/usr/bin/bash"), &merged),
            vec![p("/bin/bash")]
        );
        assert_eq!(
            usr_merge_aliases(Path::new("/sbin/ip"), &merged),
            vec![p("/usr/sbin/ip")]
        );
        assert_eq!(
            usr_merge_aliases(Path::new("/lib64/ld-linux-x86-64.so.2"), &merged),
            vec![p("/usr/lib64/ld-linux-x86-64.so.2")]
        );
        // `/libexec` is not `/lib` followed by something.
        assert!(usr_merge_aliases(Path::new("/libexec/x"), &merged).is_empty());
        assert!(usr_merge_aliases(Path::new("/usr/local/bin/x"), &merged).is_empty());
        assert!(usr_merge_aliases(Path::new("/usr/bin/bash"), &[]).is_empty());
    }

    const STATUS: &str = "\
Package: openssh-server
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: foreign
Version: 1:9.2p1-2+deb12u3
Conffiles:
 /etc/default/ssh 500e3cf069fe9a7b9936108eb9d9c035
 /etc/init.d/ssh 3649a6fe8c18ad1d5245fd91737de507
 /etc/ssh/moduli 7ef1d7ae3ae1ee9ed4a4b1ed8f5d1a6a obsolete
Description: secure shell (SSH) server
 This is the portable version of OpenSSH.
 .
 More text.

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4

Package: old-thing
Status: deinstall ok config-files
Architecture: all
Version: 1.0
Conffiles:
 /etc/old-thing.conf 0123456789abcdef0123456789abcdef

Package: pkgconf
Status: install ok half-configured
Architecture: amd64
Version: 1.8.1-1
Origin: Example
Conffiles:
 /etc/dpkg/dpkg.cfg.d/pkgconf-hook-config newconffile remove-on-upgrade
";

    #[test]
    fn status_packages_with_conffiles() {
        let (packages, errors) = parse_dpkg_status(STATUS, Path::new("status"));
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<(&str, &str, &str)> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.status.as_str()))
            .collect();
        // config-files is not on the system.
        assert_eq!(
            names,
            vec![
                ("openssh-server", "1:9.2p1-2+deb12u3", "installed"),
                ("libc6", "2.36-9+deb12u4", "installed"),
                ("pkgconf", "1.8.1-1", "half-configured"),
            ]
        );
        let ssh = &packages[0];
        assert_eq!(ssh.package_ref().to_string(), "openssh-server");
        assert_eq!(packages[1].package_ref().to_string(), "libc6:amd64");
        assert_eq!(
            ssh.conffiles,
            vec![
                Conffile {
                    path: p("/etc/default/ssh"),
                    md5: parse_md5_hex(b"500e3cf069fe9a7b9936108eb9d9c035"),
                    obsolete: false,
                    remove_on_upgrade: false,
                },
                Conffile {
                    path: p("/etc/init.d/ssh"),
                    md5: parse_md5_hex(b"3649a6fe8c18ad1d5245fd91737de507"),
                    obsolete: false,
                    remove_on_upgrade: false,
                },
                Conffile {
                    path: p("/etc/ssh/moduli"),
                    md5: parse_md5_hex(b"7ef1d7ae3ae1ee9ed4a4b1ed8f5d1a6a"),
                    obsolete: true,
                    remove_on_upgrade: false,
                },
            ]
        );
        let pkgconf = &packages[2];
        assert_eq!(pkgconf.origin_field.as_deref(), Some("Example"));
        assert_eq!(
            pkgconf.conffiles,
            vec![Conffile {
                path: p("/etc/dpkg/dpkg.cfg.d/pkgconf-hook-config"),
                md5: None,
                obsolete: false,
                remove_on_upgrade: true,
            }]
        );
    }

    #[test]
    fn bad_status_paragraphs_are_named_and_skipped() {
        let text = "Package: a\nStatus: install ok installed\nArchitecture: all\n\n\
                    Package: b\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n\n\
                    Version: 2\n\n\
                    Package: c\nStatus: install ok installed\nArchitecture: all\nVersion: 1\nConffiles:\n etc/relative 0123\n\n\
                    \x20leading continuation\n\n\
                    Package: d\nnonsense line\n";
        let (packages, errors) = parse_dpkg_status(text, Path::new("/var/lib/dpkg/status"));
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["b"]);
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "/var/lib/dpkg/status: line 1: package a has no Version field",
                "/var/lib/dpkg/status: line 10: paragraph has no Package field",
                "/var/lib/dpkg/status: line 17: Conffiles entry is not `/path md5 [flags]`",
                "/var/lib/dpkg/status: line 19: continuation line outside a field",
                "/var/lib/dpkg/status: line 22: not a `Field: value` line",
            ]
        );
    }

    #[test]
    fn md5sums_lines() {
        let text = b"7210080490f9fd139c1b44fa0f730988  bin/bash\n\
                     12c7981c8fed81743552e47dd4b1483e  usr/share/doc/with space/x\n\
                     51d96ce5874f0434a095f7932ed7f319 usr/bin/one-space\n\
                     zz10080490f9fd139c1b44fa0f730988  usr/bin/not-hex\n\
                     d41d8cd98f00b204e9800998ecf8427e  /usr/bin/rooted\n";
        let (sums, errors) = parse_md5sums(text, Path::new("bash.md5sums"));
        let paths: Vec<&Path> = sums.iter().map(|(path, _)| path.as_path()).collect();
        assert_eq!(
            paths,
            vec![
                Path::new("/bin/bash"),
                Path::new("/usr/share/doc/with space/x"),
                Path::new("/usr/bin/rooted"),
            ]
        );
        assert_eq!(
            sums[0].1,
            [
                0x72, 0x10, 0x08, 0x04, 0x90, 0xf9, 0xfd, 0x13, 0x9c, 0x1b, 0x44, 0xfa, 0x0f, 0x73,
                0x09, 0x88
            ]
        );
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            vec![
                "bash.md5sums: line 3: not `MD5  path` (32 hex digits, two spaces, a relative path)",
                "bash.md5sums: line 4: not `MD5  path` (32 hex digits, two spaces, a relative path)",
            ]
        );
    }

    #[test]
    fn md5_hex() {
        assert_eq!(
            parse_md5_hex(b"d41d8cd98f00b204e9800998ecf8427E").map(|d| d[15]),
            Some(0x7e)
        );
        assert_eq!(parse_md5_hex(b"d41d8cd98f00b204e9800998ecf8427"), None);
        assert_eq!(parse_md5_hex(b"g41d8cd98f00b204e9800998ecf8427e"), None);
        assert_eq!(
            parse_md5_hex("é1d8cd98f00b204e9800998ecf8427e".as_bytes()),
            None
        );
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
