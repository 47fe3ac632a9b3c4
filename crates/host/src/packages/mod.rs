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
//!
//! The parts, each over one source of answers: `names.rs` works out the names
//! an executable may be listed under (merged-/usr aliases, symlinks beside
//! it); `dpkg.rs` reads dpkg's file lists and diversions and applies the
//! ownership rules above; `status.rs` parses dpkg's `status` and `md5sums`
//! files for the inventory; `rpm.rs` asks `rpm` (through
//! [`crate::command::run_bounded`]). This file joins them: [`PackageDb`],
//! [`PackageIndex`] and the answer for one executable, [`ExeOwnership`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use perimeter_model::{Ownership, PackageRef, Problem};

mod dpkg;
mod names;
mod rpm;
mod status;

pub use dpkg::{Diversion, DpkgError, package_of_list_name, parse_diversions, parse_dpkg_list};
pub use rpm::{RPM_QA_FORMAT, RpmPackage, parse_rpm_qa, parse_rpm_qf};
pub use status::{
    Conffile, InstalledPackage, StatusError, parse_dpkg_status, parse_md5_hex, parse_md5sums,
};

use dpkg::{Listing, PathOwners, dpkg_problem, stream_lists};
use names::{ExeQuery, SymlinkDirs, USR_MERGE_PAIRS, is_merged, usr_merge_aliases};
use rpm::find_rpm_db;

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

    /// The root of the system this database describes (`/` for this host).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/var/lib/dpkg/info`, when dpkg's database exists.
    pub fn dpkg_info(&self) -> Option<&Path> {
        self.dpkg_info.as_deref()
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

        // Most of the 100,000-odd lines of the lists have a length no
        // wanted path has: a table of lengths turns them away before a hash
        // is computed (the lookup runs for every new executable the watch
        // sees, so its cost is the watch's on a host that runs many).
        let mut wanted_lengths = Vec::new();
        for path in &wanted {
            if wanted_lengths.len() <= path.len() {
                wanted_lengths.resize(path.len() + 1, false);
            }
            if let Some(slot) = wanted_lengths.get_mut(path.len()) {
                *slot = true;
            }
        }
        let mut listing = Listing::default();
        if let Some(info) = &self.dpkg_info {
            problems.extend(stream_lists(
                info,
                |path| {
                    wanted_lengths.get(path.len()).copied().unwrap_or(false)
                        && wanted.contains(path)
                },
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
