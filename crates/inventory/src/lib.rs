//! `perimeter inventory`'s facts: what the package manager says is on the
//! host, and everything on it that is not the package manager's. Installed
//! packages (dpkg's `status`, rpm where present) with the repository each
//! version can be fetched from again; executables in the PATH directories,
//! /usr/local, /opt and /srv that no package owns; running processes whose
//! executable no package owns; systemd units no package ships; conffiles
//! changed from what their package shipped; and, with `verify`, every package
//! file whose md5 no longer matches the `md5sums` its package shipped.
//!
//! Everything is read under a root (`/` for this host), so an image or a
//! fixture database is inventoried the same way; only the process walk is the
//! live host's and is off for any other root. Facts only: which of them are
//! findings, and how bad, is `perimeter-checks`' `pkg` module.

#[expect(
    unsafe_code,
    reason = "AVX-512 MD5 over 16 files at once; no crate hashes several streams in lock-step (see the module docs)"
)]
mod md5x16;
pub mod origin;
pub mod sweep;
pub mod units;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use perimeter_model::{Area, FileChange, Ownership, PackageRef, Problem, UnitKind};
use sha2::{Digest, Sha256};

pub use md5x16::Backend;
pub use md5x16::Calibration;
pub use sweep::SweepStats;
pub use units::UnitEntry;
pub use verify::{CheckFailure, CheckList, VerifyOutcome};

use perimeter_host::packages::{InstalledPackage, PackageDb, PackageIndex};
use perimeter_host::procs::{ProcessWalk, walk_processes};
use verify::RootDir;

/// What to collect.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// The system to inventory (`/` for this host).
    pub root: PathBuf,
    /// Check every package file against its package's md5sums (reads every
    /// file). Conffiles are always checked.
    pub verify: bool,
    /// Checksum workers; see [`verify::default_workers`].
    pub workers: usize,
    /// The MD5 backend to hash with; `None` measures which is fastest here
    /// ([`Backend::detect`]). A forced one must run on this CPU
    /// ([`Backend::is_supported`]).
    pub md5_backend: Option<Backend>,
    /// Compute the sha256 of every unowned file, unit and changed file (for
    /// the rebuild manifest).
    pub hash_files: bool,
    /// Walk the live host's processes (only meaningful for root `/`).
    pub processes: bool,
    pub proc_root: PathBuf,
    /// Look up each package's origin in apt's package indexes.
    pub origins: bool,
    /// Check the conffiles and files of these packages only (by name);
    /// `None` checks every package.
    pub only_packages: Option<BTreeSet<String>>,
}

impl InventoryOptions {
    /// Defaults for `root`: processes only when it is this host.
    pub fn for_root(root: &Path) -> Self {
        InventoryOptions {
            root: root.to_owned(),
            verify: false,
            workers: verify::default_workers(),
            md5_backend: None,
            hash_files: false,
            processes: root == Path::new("/"),
            proc_root: PathBuf::from("/proc"),
            origins: true,
            only_packages: None,
        }
    }
}

/// A system seen through a root directory: paths inside it are absolute
/// (`/usr/bin/x`), paths on disk are under the root.
#[derive(Debug, Clone)]
pub struct Image {
    root: PathBuf,
    canonical_root: PathBuf,
    /// For a root other than `/`: the root directory, to resolve symlinks
    /// inside it (`RESOLVE_IN_ROOT`), so `/usr/bin/editor ->
    /// /etc/alternatives/editor` in an image leads to the image's file.
    dir: Option<Arc<RootDir>>,
}

impl Image {
    pub fn new(root: &Path) -> io::Result<Image> {
        let canonical_root = fs::canonicalize(root)?;
        let dir = if canonical_root == Path::new("/") {
            None
        } else {
            Some(Arc::new(RootDir::open(root)?))
        };
        Ok(Image {
            root: root.to_owned(),
            canonical_root,
            dir,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a path inside the image is on disk.
    pub fn on_disk(&self, path: &Path) -> PathBuf {
        self.root.join(relative(path))
    }

    /// The symlink-free path of `path`, as a path inside the image. Absolute
    /// symlinks resolve inside the image; a dangling one is an error.
    pub fn canonical(&self, path: &Path) -> io::Result<PathBuf> {
        let real = match &self.dir {
            Some(dir) => dir.resolve(path)?,
            None => fs::canonicalize(path)?,
        };
        match real.strip_prefix(&self.canonical_root) {
            Ok(inside) => Ok(Path::new("/").join(inside)),
            // Only possible without RESOLVE_IN_ROOT (kernels before 5.6).
            Err(_) => Err(io::Error::other("symlink leads outside the root")),
        }
    }
}

/// Mode and ownership of a file, as a rebuild needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    /// Permission bits with setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

impl FileMeta {
    pub fn from_metadata(meta: &fs::Metadata) -> FileMeta {
        FileMeta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
        }
    }

    /// Writable by users other than its owner and group.
    pub fn world_writable(&self) -> bool {
        self.mode & 0o002 != 0
    }
}

/// A package on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// `dpkg` or `rpm`.
    pub manager: &'static str,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// The repository this exact version is published in (`Debian
    /// bookworm/main`), else the package's own `Origin:`/vendor field;
    /// `None` when neither says (installed from a file, or from a repository
    /// no longer configured).
    pub origin: Option<String>,
    /// dpkg's status word (`installed`, `half-configured`, ...); `installed`
    /// for rpm.
    pub status: String,
}

/// An executable no package owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnownedFile {
    pub path: PathBuf,
    pub area: Area,
    pub in_path: bool,
    /// Symlinks in the swept places that lead to it.
    pub links: Vec<PathBuf>,
    pub meta: FileMeta,
    /// Processes running it now.
    pub pids: Vec<u32>,
    pub sha256: Option<[u8; 32]>,
}

/// A conffile or package file that no longer matches its recorded md5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedFile {
    /// Where the file is (after dpkg-divert).
    pub path: PathBuf,
    /// Where the package lists it, when a diversion moved it.
    pub listed_as: Option<PathBuf>,
    pub package: PackageRef,
    pub change: FileChange,
    pub meta: Option<FileMeta>,
    /// An ELF object, or a file with an execute bit: code, not data.
    pub executable: bool,
    pub sha256: Option<[u8; 32]>,
}

/// Why a running process's executable counts as not the package manager's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessOwnership {
    /// The file it runs is on disk and no package owns it.
    Unpackaged,
    /// Cannot be decided; the text says why (deleted, another mount
    /// namespace, replaced on disk).
    Unknown(String),
}

/// A running process whose executable no package owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnownedProcess {
    pub pid: u32,
    pub comm: String,
    pub exe: PathBuf,
    pub uid: u32,
    pub user: Option<String>,
    pub unit: Option<String>,
    pub ownership: ProcessOwnership,
}

/// Counts and timings, for the record and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryStats {
    pub n_index_paths: usize,
    pub sweep: SweepStats,
    pub n_conffiles_checked: usize,
    pub n_files_verified: usize,
    pub n_bytes_hashed: u64,
    /// Packages that ship no md5sums: nothing to verify their files against.
    pub n_packages_without_md5sums: usize,
    pub checksum_backend: Option<&'static str>,
    /// What the backend was chosen on: each candidate's measured speed in
    /// bytes per second on one core (empty when forced or the only one).
    pub checksum_calibration: Vec<(Backend, u64)>,
    pub n_workers: usize,
    /// Of the checksum phase, the time spent ordering files by size.
    pub order_time: Duration,
    /// Wall-clock time of each phase, in order.
    pub phases: Vec<(&'static str, Duration)>,
}

/// Everything `perimeter inventory` collected.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub hostname: String,
    pub root: PathBuf,
    /// dpkg's then rpm's, each by name.
    pub packages: Vec<Package>,
    pub unowned_files: Vec<UnownedFile>,
    pub processes: Vec<UnownedProcess>,
    /// Unpackaged entries of the unit directories (units, drop-ins, linked
    /// units, masks, enablement links).
    pub units: Vec<UnitEntry>,
    /// Conffiles changed from what their package shipped.
    pub conffiles: Vec<ChangedFile>,
    /// Package files that no longer match; `None` unless verified.
    pub modified_files: Option<Vec<ChangedFile>>,
    /// Names of the uids and gids that appear above, from the image's
    /// /etc/passwd and /etc/group.
    pub user_names: BTreeMap<u32, String>,
    pub group_names: BTreeMap<u32, String>,
    pub verified: bool,
    pub stats: InventoryStats,
    pub problems: Vec<Problem>,
}

/// Collects the inventory. Never fails: what cannot be read is a problem.
pub fn collect(opts: &InventoryOptions) -> Inventory {
    let mut inventory = Inventory {
        root: opts.root.clone(),
        verified: opts.verify,
        ..Inventory::default()
    };
    let image = match Image::new(&opts.root) {
        Ok(image) => image,
        Err(err) => {
            inventory.problems.push(Problem::new(
                opts.root.display().to_string(),
                format!("cannot open the root: {err}"),
            ));
            return inventory;
        }
    };
    let mut clock = Clock::start();
    inventory.hostname = hostname(&image);

    let (db, problems) = PackageDb::open(&opts.root);
    inventory.problems.extend(problems);
    let (installed, problems) = db.installed();
    inventory.problems.extend(problems);
    // The checksums need only the package list and dpkg's info files, so
    // they run beside what needs neither the pool's list nor the package
    // index: the origins from apt's indexes and the walk of the processes.
    // The index is built once the checks are done and their list is freed,
    // so the two largest things a run holds are never in memory together.
    let walk = std::thread::scope(|scope| {
        // The list is built here, not in the checking thread: memory a
        // thread allocates stays with that thread's malloc arena once freed,
        // where the index could not reuse it.
        let checking = db.has_database().then(|| {
            let mut checked = package_checks(&db, &installed, opts);
            std::thread::Builder::new()
                .name("verify".to_owned())
                .spawn_scoped(scope, move || {
                    run_checks(opts, &mut checked);
                    checked
                })
        });
        inventory.packages = packages(&db, &installed, opts, &mut inventory.problems);
        clock.lap("packages", &mut inventory.stats);
        let walk = (opts.processes && db.has_database()).then(|| {
            let walk = walk_processes(&opts.proc_root);
            clock.lap("processes", &mut inventory.stats);
            walk
        });
        let checked = match checking {
            None => return walk,
            Some(Ok(handle)) => match handle.join() {
                Ok(checked) => checked,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            // Without the thread the checks run here, after the rest.
            Some(Err(_)) => {
                let mut checked = package_checks(&db, &installed, opts);
                run_checks(opts, &mut checked);
                checked
            }
        };
        // Its own time, from its start beside the phases above.
        let phase = if opts.verify { "verify" } else { "conffiles" };
        inventory.stats.phases.push((phase, checked.took));
        record_checks(&installed, opts, checked, &mut inventory);
        clock.restart();
        walk
    });
    if !collect_facts(&image, &db, opts, walk, &mut clock, &mut inventory) {
        return inventory;
    }

    if opts.hash_files {
        hash_files(&opts.root, opts.workers, &mut inventory);
        clock.lap("sha256", &mut inventory.stats);
    }
    name_accounts(&image, &mut inventory);
    inventory
}

/// What no package owns, from the package index: the sweeps, units, and the
/// processes `walk` saw. Without a package database, only a problem saying
/// so, and `false`.
fn collect_facts(
    image: &Image,
    db: &PackageDb,
    opts: &InventoryOptions,
    walk: Option<ProcessWalk>,
    clock: &mut Clock,
    inventory: &mut Inventory,
) -> bool {
    if !db.has_database() {
        // Without a package database everything would be "unowned", which
        // says nothing; the report says why it is empty instead.
        inventory.problems.push(
            Problem::new(
                opts.root.join("var/lib/dpkg").display().to_string(),
                "no package database (neither dpkg's nor rpm's): nothing can be checked against one",
            )
            .with_hint("perimeter inventory reads dpkg (Debian, Ubuntu) and rpm databases"),
        );
        return false;
    }
    let (index, problems) = db.index();
    inventory.problems.extend(problems);
    inventory.stats.n_index_paths = index.n_paths();
    clock.lap("index", &mut inventory.stats);

    let path_dirs = match fs::read_to_string(image.on_disk(Path::new("/etc/login.defs"))) {
        Ok(text) => Some(sweep::parse_login_defs_path(&text)).filter(|dirs| !dirs.is_empty()),
        Err(_) => None,
    }
    .unwrap_or_else(|| sweep::DEFAULT_PATH.iter().map(PathBuf::from).collect());
    let trees: Vec<PathBuf> = sweep::TREES.iter().map(PathBuf::from).collect();
    let (swept, sweep_stats, problems) = sweep::sweep(image, &index, &path_dirs, &trees);
    inventory.problems.extend(problems);
    inventory.stats.sweep = sweep_stats;
    let mut unowned: BTreeMap<PathBuf, UnownedFile> = swept
        .into_values()
        .map(|file| {
            (
                file.path.clone(),
                UnownedFile {
                    path: file.path,
                    area: file.area,
                    in_path: file.in_path,
                    links: file.links,
                    meta: file.meta,
                    pids: Vec::new(),
                    sha256: None,
                },
            )
        })
        .collect();
    clock.lap("sweep", &mut inventory.stats);

    let (units, problems) = units::sweep_units(image, &index);
    inventory.units = units;
    inventory.problems.extend(problems);
    clock.lap("units", &mut inventory.stats);

    if let Some(walk) = walk {
        inventory.processes = unowned_processes(
            opts,
            walk,
            image,
            &index,
            &path_dirs,
            &mut unowned,
            &mut inventory.problems,
        );
        clock.lap("process owners", &mut inventory.stats);
    }
    // Every question to the index has been asked: its hundred thousand paths
    // need not stay in memory beside the checksum pool's.
    drop(index);
    // The index is dpkg's; on a host with rpm too, rpm is asked once about
    // everything dpkg does not own.
    if db.has_rpm() {
        drop_rpm_owned(
            db,
            &mut unowned,
            &mut inventory.units,
            &mut inventory.problems,
        );
        inventory.processes.retain(|process| {
            process.ownership != ProcessOwnership::Unpackaged || unowned.contains_key(&process.exe)
        });
        if opts.verify {
            inventory.problems.push(
                Problem::new("rpm", "rpm packages' files are not verified")
                    .with_hint("`rpm -Va` checks them"),
            );
        }
    }
    inventory.unowned_files = unowned.into_values().collect();
    true
}

/// Phase timings.
struct Clock {
    last: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            last: Instant::now(),
        }
    }

    /// Starts the next phase now: what ran since was timed on its own.
    fn restart(&mut self) {
        self.last = Instant::now();
    }

    fn lap(&mut self, phase: &'static str, stats: &mut InventoryStats) {
        let now = Instant::now();
        stats.phases.push((phase, now - self.last));
        self.last = now;
    }
}

fn hostname(image: &Image) -> String {
    if image.root() == Path::new("/") {
        return nix::unistd::gethostname()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
    }
    fs::read_to_string(image.on_disk(Path::new("/etc/hostname")))
        .ok()
        .and_then(|text| text.lines().next().map(|l| l.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn packages(
    db: &PackageDb,
    installed: &[InstalledPackage],
    opts: &InventoryOptions,
    problems: &mut Vec<Problem>,
) -> Vec<Package> {
    let origins = if opts.origins {
        let (origins, origin_problems) = origin::read_origins(&opts.root, installed);
        problems.extend(origin_problems);
        origins
    } else {
        Default::default()
    };
    let mut packages: Vec<Package> = installed
        .iter()
        .enumerate()
        .map(|(idx, package)| Package {
            manager: "dpkg",
            name: package.name.clone(),
            version: package.version.clone(),
            arch: Some(package.arch.clone()),
            origin: origins
                .get(&idx)
                .cloned()
                .or_else(|| package.origin_field.clone()),
            status: package.status.clone(),
        })
        .collect();
    packages.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    let (rpm, rpm_problems) = db.rpm_installed();
    problems.extend(rpm_problems);
    let mut rpm: Vec<Package> = rpm
        .into_iter()
        .map(|package| Package {
            manager: "rpm",
            name: package.name,
            version: package.version,
            arch: package.arch,
            origin: package.vendor,
            status: "installed".to_owned(),
        })
        .collect();
    rpm.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    packages.extend(rpm);
    packages
}

/// Running processes whose executable no package owns; their executables
/// join the unowned files (with their pids) wherever they are.
fn unowned_processes(
    opts: &InventoryOptions,
    walk: ProcessWalk,
    image: &Image,
    index: &PackageIndex,
    path_dirs: &[PathBuf],
    unowned: &mut BTreeMap<PathBuf, UnownedFile>,
    problems: &mut Vec<Problem>,
) -> Vec<UnownedProcess> {
    problems.extend(walk.problems);
    let mut accounts = perimeter_host::users::AccountCache::new();
    let mut out = Vec::new();
    let own_pid = std::process::id();
    for process in walk.processes.values() {
        // perimeter does not report itself (run from a build tree it would).
        if process.pid == own_pid {
            continue;
        }
        let Some(exe) = &process.exe else {
            // Kernel threads have no executable.
            continue;
        };
        // A string prefix: `Path::starts_with` compares whole components.
        let ownership = if exe.as_os_str().as_bytes().starts_with(b"/memfd:") {
            // What runc and some loaders do on purpose, and fileless malware
            // too: nothing on disk to own.
            ProcessOwnership::Unknown(
                "runs from an anonymous memory file (memfd), not from a file on disk".to_owned(),
            )
        } else if process.exe_deleted {
            ProcessOwnership::Unknown(
                "the executable was deleted or replaced after the process started".to_owned(),
            )
        } else if !same_file(&opts.proc_root, process.pid, &image.on_disk(exe)) {
            ProcessOwnership::Unknown(
                "the executable is not the file at that path on this host (another mount namespace, or replaced)"
                    .to_owned(),
            )
        } else {
            match index.owner_of(exe) {
                Ownership::Package(_) => continue,
                _ => ProcessOwnership::Unpackaged,
            }
        };
        if ownership == ProcessOwnership::Unpackaged {
            let entry = unowned.entry(exe.clone()).or_insert_with(|| {
                let meta = fs::metadata(image.on_disk(exe))
                    .map(|m| FileMeta::from_metadata(&m))
                    .unwrap_or(FileMeta {
                        mode: 0,
                        uid: 0,
                        gid: 0,
                        size: 0,
                    });
                let area = Area::of(exe, path_dirs);
                UnownedFile {
                    path: exe.clone(),
                    area,
                    in_path: exe
                        .parent()
                        .is_some_and(|d| path_dirs.iter().any(|p| p == d)),
                    links: Vec::new(),
                    meta,
                    pids: Vec::new(),
                    sha256: None,
                }
            });
            entry.pids.push(process.pid);
        }
        let user = accounts
            .lookup(process.uid)
            .ok()
            .flatten()
            .map(|account| account.name);
        out.push(UnownedProcess {
            pid: process.pid,
            comm: process.comm.clone(),
            exe: exe.clone(),
            uid: process.uid,
            user,
            unit: process.unit.clone(),
            ownership,
        });
    }
    out
}

/// Removes the files and unit entries rpm owns.
fn drop_rpm_owned(
    db: &PackageDb,
    unowned: &mut BTreeMap<PathBuf, UnownedFile>,
    units: &mut Vec<UnitEntry>,
    problems: &mut Vec<Problem>,
) {
    let paths: BTreeSet<PathBuf> = unowned
        .keys()
        .cloned()
        .chain(units.iter().map(|u| u.path.clone()))
        .collect();
    match db.rpm_owners(&paths) {
        Ok(owned) => {
            unowned.retain(|path, _| !owned.contains_key(path));
            units.retain(|unit| !owned.contains_key(&unit.path));
        }
        Err(problem) => problems.push(problem),
    }
}

/// Whether `/proc/PID/exe` (the file the process runs, whatever its mount
/// namespace) is the file at `path` on this host.
fn same_file(proc_root: &Path, pid: u32, path: &Path) -> bool {
    let running = fs::metadata(proc_root.join(pid.to_string()).join("exe"));
    let on_disk = fs::metadata(path);
    match (running, on_disk) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The checksums a package shipped; none (and a count, or a problem) when it
/// shipped none or they cannot be read.
fn read_md5sums(
    db: &PackageDb,
    package: &InstalledPackage,
    checked: &mut CheckedFiles,
) -> Vec<(PathBuf, [u8; 16])> {
    let Some(file) = db.md5sums_file(package) else {
        checked.n_packages_without_md5sums += 1;
        return Vec::new();
    };
    let text = match fs::read(&file) {
        Ok(text) => text,
        Err(err) => {
            checked.problems.push(Problem::new(
                file.display().to_string(),
                format!("cannot read md5sums: {err}"),
            ));
            return Vec::new();
        }
    };
    let (sums, errors) = perimeter_host::packages::parse_md5sums(&text, &file);
    checked.problems.extend(
        errors
            .iter()
            .map(|err| Problem::new(file.display().to_string(), err.to_string())),
    );
    sums
}

/// What each check is, to turn failures back into files. Eight bytes a
/// check: the few paths a diversion moved are kept apart.
#[derive(Clone, Copy)]
struct CheckSource {
    package_idx: u32,
    kind: CheckKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckKind {
    Conffile,
    /// A file with a checksum in its package's md5sums.
    File,
    /// A listed directory, symlink or file without a checksum: it must exist.
    Presence,
}

/// The checks of one run, what came of them, and how to turn their failures
/// back into files.
struct CheckedFiles {
    checks: CheckList,
    sources: Vec<CheckSource>,
    /// Check index -> where its package lists it, for the diverted ones.
    diverted: HashMap<usize, PathBuf>,
    outcome: Option<VerifyOutcome>,
    calibration: Vec<(Backend, u64)>,
    n_packages_without_md5sums: usize,
    problems: Vec<Problem>,
    /// Wall-clock time of all of it: building the list, then the pool.
    took: Duration,
}

/// What to check: conffiles against `status`, and with `verify` every file
/// against its package's md5sums and every other listed path for presence.
fn package_checks(
    db: &PackageDb,
    installed: &[InstalledPackage],
    opts: &InventoryOptions,
) -> CheckedFiles {
    let start = Instant::now();
    let mut checked = CheckedFiles {
        checks: CheckList::new(),
        sources: Vec::new(),
        diverted: HashMap::new(),
        outcome: None,
        calibration: Vec::new(),
        n_packages_without_md5sums: 0,
        problems: Vec::new(),
        took: Duration::ZERO,
    };
    let add = |checked: &mut CheckedFiles,
               package: &InstalledPackage,
               package_idx: usize,
               listed: &Path,
               expected: Option<[u8; 16]>,
               kind: CheckKind| {
        let path = db.installed_path(&package.name, listed);
        let check_idx = match expected {
            Some(md5) => checked.checks.push_md5(path, md5),
            None => checked.checks.push_presence(path),
        };
        if path != listed {
            checked.diverted.insert(check_idx, listed.to_owned());
        }
        checked.sources.push(CheckSource {
            package_idx: u32::try_from(package_idx).unwrap_or(u32::MAX),
            kind,
        });
    };
    for (package_idx, package) in installed.iter().enumerate() {
        if opts
            .only_packages
            .as_ref()
            .is_some_and(|only| !only.contains(&package.name))
        {
            continue;
        }
        let mut conffile_paths: HashSet<&Path> = HashSet::new();
        for conffile in &package.conffiles {
            conffile_paths.insert(&conffile.path);
            // dpkg no longer manages obsolete conffiles, and has no hash
            // yet for new ones.
            let Some(md5) = conffile.md5.filter(|_| !conffile.obsolete) else {
                continue;
            };
            add(
                &mut checked,
                package,
                package_idx,
                &conffile.path,
                Some(md5),
                CheckKind::Conffile,
            );
        }
        if !opts.verify {
            continue;
        }
        let sums = read_md5sums(db, package, &mut checked);
        let with_md5: HashSet<&Path> = sums.iter().map(|(path, _)| path.as_path()).collect();
        for (path, md5) in &sums {
            // A conffile listed in md5sums too is checked against `status`,
            // as dpkg does: that hash is the one dpkg keeps current.
            if !conffile_paths.contains(path.as_path()) {
                add(
                    &mut checked,
                    package,
                    package_idx,
                    path,
                    Some(*md5),
                    CheckKind::File,
                );
            }
        }
        // Like `dpkg --verify`, every other listed path (directories,
        // symlinks, files without a checksum) must at least exist.
        match db.listed_paths(package) {
            Ok(paths) => {
                for path in paths {
                    if !with_md5.contains(path.as_path())
                        && !conffile_paths.contains(path.as_path())
                    {
                        add(
                            &mut checked,
                            package,
                            package_idx,
                            &path,
                            None,
                            CheckKind::Presence,
                        );
                    }
                }
            }
            Err(err) => checked
                .problems
                .push(Problem::new(package.name.clone(), err.to_string())),
        }
    }

    checked.took = start.elapsed();
    checked
}

/// Every check, in one pass of the checksum pool. Touches nothing but its own
/// result, so it can run beside the rest of the collection.
fn run_checks(opts: &InventoryOptions, checked: &mut CheckedFiles) {
    let start = Instant::now();
    let backend = opts.md5_backend.unwrap_or_else(|| {
        let calibration = Backend::detect();
        checked.calibration = calibration.measured;
        calibration.chosen
    });
    match verify::verify(&opts.root, &checked.checks, opts.workers, backend) {
        Ok(outcome) => checked.outcome = Some(outcome),
        Err(err) => checked.problems.push(Problem::new(
            opts.root.display().to_string(),
            format!("cannot open the root to check files: {err}"),
        )),
    }
    checked.took += start.elapsed();
}

/// The checks' counts, and their failures as changed conffiles and files
/// (or problems, for what could not be read).
fn record_checks(
    installed: &[InstalledPackage],
    opts: &InventoryOptions,
    checked: CheckedFiles,
    inventory: &mut Inventory,
) {
    let CheckedFiles {
        checks,
        sources,
        diverted,
        outcome,
        calibration,
        n_packages_without_md5sums,
        problems,
        took: _,
    } = checked;
    inventory.problems.extend(problems);
    inventory.stats.n_packages_without_md5sums = n_packages_without_md5sums;
    inventory.stats.n_conffiles_checked = sources
        .iter()
        .filter(|s| s.kind == CheckKind::Conffile)
        .count();
    inventory.stats.n_files_verified = sources.iter().filter(|s| s.kind == CheckKind::File).count();
    let Some(outcome) = outcome else {
        return;
    };
    inventory.stats.n_bytes_hashed = outcome.n_bytes;
    inventory.stats.checksum_backend = Some(outcome.backend.as_str());
    inventory.stats.checksum_calibration = calibration;
    inventory.stats.n_workers = outcome.n_workers;
    inventory.stats.order_time = outcome.order_time;

    let root = RootDir::open(&opts.root).ok();
    let mut conffiles = Vec::new();
    let mut modified = Vec::new();
    for (check_idx, failure) in outcome.failures {
        let (Some(path), Some(source)) = (checks.path(check_idx), sources.get(check_idx)) else {
            continue;
        };
        let Some(package) = installed.get(source.package_idx as usize) else {
            continue;
        };
        let change = match failure {
            CheckFailure::Mismatch => FileChange::Modified,
            CheckFailure::Missing => FileChange::Missing,
            CheckFailure::NotRegular { kind } => FileChange::Replaced { kind },
            CheckFailure::Unreadable(reason) => {
                inventory.problems.push(
                    Problem::new(
                        path.display().to_string(),
                        format!("cannot check: {reason}"),
                    )
                    .with_hint("run as root to read every package file"),
                );
                continue;
            }
        };
        let meta = match source.kind {
            CheckKind::Presence => None,
            CheckKind::Conffile | CheckKind::File => {
                fs::symlink_metadata(opts.root.join(relative(path)))
                    .ok()
                    .map(|m| FileMeta::from_metadata(&m))
            }
        };
        let executable = change == FileChange::Modified
            && (meta.is_some_and(|m| m.mode & 0o111 != 0)
                || root.as_ref().is_some_and(|root| is_elf(root, path)));
        let changed = ChangedFile {
            path: path.to_owned(),
            listed_as: diverted.get(&check_idx).cloned(),
            package: package.package_ref(),
            change,
            meta,
            executable,
            sha256: None,
        };
        if source.kind == CheckKind::Conffile {
            conffiles.push(changed);
        } else {
            modified.push(changed);
        }
    }
    conffiles.sort_by(|a, b| a.path.cmp(&b.path));
    modified.sort_by(|a, b| a.path.cmp(&b.path));
    inventory.conffiles = conffiles;
    inventory.modified_files = opts.verify.then_some(modified);
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

/// Whether the file starts with the ELF magic (binaries, shared libraries).
fn is_elf(root: &RootDir, path: &Path) -> bool {
    let Ok((file, _)) = root.open_regular(path) else {
        return false;
    };
    let mut magic = [0u8; 4];
    file.take(4).read_exact(&mut magic).is_ok() && magic == *b"\x7fELF"
}

/// sha256 of every unowned file, unit file, drop-in and changed file.
fn hash_files(root: &Path, workers: usize, inventory: &mut Inventory) {
    let Ok(root_dir) = RootDir::open(root) else {
        return;
    };
    // What to hash, in list order; the digests come back in the same order.
    let mut targets: Vec<PathBuf> = Vec::new();
    targets.extend(inventory.unowned_files.iter().map(|f| f.path.clone()));
    for unit in &inventory.units {
        match &unit.kind {
            UnitKind::Unit | UnitKind::DropIn => targets.push(unit.path.clone()),
            UnitKind::Linked { target } => targets.push(target.clone()),
            UnitKind::Masked | UnitKind::Enablement { .. } => {}
        }
    }
    let changed = inventory
        .conffiles
        .iter()
        .chain(inventory.modified_files.iter().flatten())
        .filter(|f| f.change == FileChange::Modified);
    targets.extend(changed.map(|f| f.path.clone()));

    let mut digests: VecDeque<Option<[u8; 32]>> = VecDeque::with_capacity(targets.len());
    for (path, digest) in targets.iter().zip(sha256_all(&root_dir, &targets, workers)) {
        digests.push_back(match digest {
            Ok(digest) => Some(digest),
            Err(reason) => {
                inventory.problems.push(Problem::new(
                    path.display().to_string(),
                    format!("cannot hash: {reason}"),
                ));
                None
            }
        });
    }
    for file in &mut inventory.unowned_files {
        file.sha256 = digests.pop_front().flatten();
    }
    for unit in &mut inventory.units {
        if !matches!(unit.kind, UnitKind::Masked | UnitKind::Enablement { .. }) {
            unit.sha256 = digests.pop_front().flatten();
        }
    }
    for file in inventory
        .conffiles
        .iter_mut()
        .chain(inventory.modified_files.iter_mut().flatten())
        .filter(|f| f.change == FileChange::Modified)
    {
        file.sha256 = digests.pop_front().flatten();
    }
}

/// sha256 of each path, `workers` files at a time (unowned files can be
/// large: vendor binaries of hundreds of MB).
fn sha256_all(root: &RootDir, paths: &[PathBuf], workers: usize) -> Vec<Result<[u8; 32], String>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let n_workers = workers
        .clamp(1, verify::MAX_WORKERS)
        .min(paths.len().max(1));
    let mut results: Vec<(usize, Result<[u8; 32], String>)> = Vec::with_capacity(paths.len());
    let work = || {
        let mut done = Vec::new();
        loop {
            let idx = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(path) = paths.get(idx) else {
                break;
            };
            done.push((idx, sha256_file(root, path)));
        }
        done
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..n_workers)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        results.extend(work());
        for handle in handles {
            match handle.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results.sort_by_key(|(idx, _)| *idx);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Streams a file through sha256 in 64 KiB reads.
pub(crate) fn sha256_file(root: &RootDir, path: &Path) -> Result<[u8; 32], String> {
    let (mut file, _) = root.open_regular(path).map_err(|failure| match failure {
        CheckFailure::Missing => "no such file".to_owned(),
        CheckFailure::NotRegular { kind } => format!("not a regular file ({kind})"),
        CheckFailure::Unreadable(reason) => reason,
        CheckFailure::Mismatch => "mismatch".to_owned(),
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(buffer.get(..n).unwrap_or_default()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    Ok(hasher.finalize().into())
}

/// `name:x:uid:...` lines of /etc/passwd or /etc/group: id → name.
pub fn parse_id_names(text: &str) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(id) = id.parse::<u32>()
            && !name.is_empty()
        {
            // The first entry for an id is the one NSS's files backend returns.
            names.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    names
}

/// Names for the uids and gids in the inventory, from the image's files.
fn name_accounts(image: &Image, inventory: &mut Inventory) {
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let metas = inventory
        .unowned_files
        .iter()
        .map(|f| Some(f.meta))
        .chain(inventory.units.iter().map(|u| u.meta))
        .chain(inventory.conffiles.iter().map(|c| c.meta))
        .chain(inventory.modified_files.iter().flatten().map(|c| c.meta));
    for meta in metas.flatten() {
        uids.insert(meta.uid);
        gids.insert(meta.gid);
    }
    let read = |file: &str| {
        fs::read_to_string(image.on_disk(Path::new(file)))
            .map(|text| parse_id_names(&text))
            .unwrap_or_default()
    };
    let users = read("/etc/passwd");
    let groups = read("/etc/group");
    inventory.user_names = uids
        .into_iter()
        .filter_map(|uid| Some((uid, users.get(&uid)?.clone())))
        .collect();
    inventory.group_names = gids
        .into_iter()
        .filter_map(|gid| Some((gid, groups.get(&gid)?.clone())))
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_and_group_names() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nredis:x:105:107::/var/lib/redis:/usr/sbin/nologin\n\
                      # comment\nbroken\ntoor:x:0:0::/:/bin/sh\n";
        let names = parse_id_names(passwd);
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&105).map(String::as_str), Some("redis"));
        assert_eq!(names.len(), 2);
        let groups = parse_id_names("root:x:0:\nstaff:x:50:alice,bob\n");
        assert_eq!(groups.get(&50).map(String::as_str), Some("staff"));
    }
}
