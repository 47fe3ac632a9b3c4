//! Checks files against the md5 dpkg recorded for them (the `md5sums` each
//! package ships, the `Conffiles:` hashes in `status`), the way `dpkg --verify`
//! does, but with every core and every lane busy.
//!
//! Shape: a fixed pool of workers (one per core by default) pulls checks from
//! a shared list ([`CheckList`]: every path in one buffer), largest file first
//! so no big file starts last and runs alone, and the paths that need only
//! exist (directories, symlinks, files without a checksum) last, where they
//! fill the tail. Each worker keeps sixteen files open at once, one per MD5
//! lane (`md5x16`), reads each in 32 KiB chunks into its own slot of a 512
//! KiB arena, and compresses all sixteen lanes together; a lane whose file
//! ends gets the next file. So memory is bounded by the pool (about 512 KiB a
//! worker plus one result per failed check), whatever the size of the files,
//! and no file is ever read whole into memory.
//!
//! Where the time goes, warm page cache, on the Xeon measured
//! (BENCHMARKS.md): two thirds in the kernel copying each file out of the
//! page cache (bound by memory: about 3 GB/s a core), a quarter in the MD5
//! kernel (about 8.7 GB/s a core with AVX-512), the rest in the four system
//! calls a file costs (`openat2`, `fstat`, `read`, `close`) and the `stat` of
//! the size ordering. None of those calls is duplicated: the read stops at
//! the size `fstat` gave.
//!
//! Every path is opened under the root with `openat2(RESOLVE_IN_ROOT)`, so an
//! absolute symlink in an image mounted at `--root` resolves inside the image,
//! never on the live host (kernels before 5.6 lack it and resolve normally).
//! Non-regular files (a FIFO or device put where a package file was) are
//! reported, never read: opening is non-blocking and checked with `fstat`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::md5x16::{self, BLOCK, Backend, LANES, LaneState};

/// Bytes read into a lane at a time. A multiple of the MD5 block; each lane's
/// slot has one block more for the padding. Sixteen slots of 32 KiB (512 KiB
/// a worker) stay in a 1 MiB L2 cache (AMD's Zen 4) with room for what the
/// kernel copies from; on the Xeon measured, 16 to 64 KiB cost the same
/// (the copy out of the page cache is bound by memory, whatever the size)
/// and 4 KiB more (four times the reads).
const CHUNK: usize = 32 * 1024;
/// Below this many files the size-ordering pass costs more than the tail it
/// avoids (conffiles alone are a few hundred small files).
const ORDER_BY_SIZE_FROM: usize = 2048;
/// No more workers than this, whatever is asked: past a few per core they only
/// add contention.
pub const MAX_WORKERS: usize = 64;
/// Alignment of each worker's lane slots: a cache line.
const ARENA_ALIGN: usize = 64;

/// The files to check, compactly: every path in one buffer, and for each
/// check where its path ends there and the md5 dpkg recorded for it (`None`:
/// a listed directory, symlink or file without a checksum, which need only
/// be there). A check costs 25 bytes plus its path, where a `PathBuf` apiece
/// cost three times as much.
#[derive(Debug, Clone, Default)]
pub struct CheckList {
    paths: Vec<u8>,
    /// Where each check's path ends in `paths`; it starts where the one
    /// before ends.
    path_ends: Vec<usize>,
    expected: Vec<Option<[u8; 16]>>,
}

impl CheckList {
    pub fn new() -> CheckList {
        CheckList::default()
    }

    /// Adds a file whose content must hash to `expected`; returns its index.
    pub fn push_md5(&mut self, path: &Path, expected: [u8; 16]) -> usize {
        self.push(path, Some(expected))
    }

    /// Adds a path that must only exist (a final symlink is not followed);
    /// returns its index.
    pub fn push_presence(&mut self, path: &Path) -> usize {
        self.push(path, None)
    }

    fn push(&mut self, path: &Path, expected: Option<[u8; 16]>) -> usize {
        self.paths.extend_from_slice(path.as_os_str().as_bytes());
        self.path_ends.push(self.paths.len());
        self.expected.push(expected);
        self.path_ends.len() - 1
    }

    pub fn len(&self) -> usize {
        self.path_ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.path_ends.is_empty()
    }

    /// The path of check `idx`.
    pub fn path(&self, idx: usize) -> Option<&Path> {
        let end = *self.path_ends.get(idx)?;
        let start = match idx.checked_sub(1) {
            Some(before) => *self.path_ends.get(before)?,
            None => 0,
        };
        let bytes = self.paths.get(start..end)?;
        Some(Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }

    /// The md5 check `idx` expects; `None` for a presence check.
    pub fn expected(&self, idx: usize) -> Option<[u8; 16]> {
        self.expected.get(idx).copied().flatten()
    }

    /// Checks with an md5 (the rest only need to exist).
    pub fn n_md5(&self) -> usize {
        self.expected.iter().filter(|e| e.is_some()).count()
    }
}

/// Why a file did not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// The content's md5 differs from the recorded one.
    Mismatch,
    /// Nothing is at the path (or a path component is not a directory).
    Missing,
    /// Something other than a regular file is at the path (`kind` says what).
    NotRegular { kind: &'static str },
    /// The file could not be opened or read; the text says why.
    Unreadable(String),
}

/// What a verification pass found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOutcome {
    /// Failed checks, as (index into the checks given, why), sorted by index.
    pub failures: Vec<(usize, CheckFailure)>,
    pub n_files: usize,
    /// Bytes hashed.
    pub n_bytes: u64,
    pub backend: Backend,
    pub n_workers: usize,
    /// Time spent finding each file's size to order them, before any read.
    pub order_time: Duration,
}

/// The root directory every checked path is resolved under.
#[derive(Debug)]
pub(crate) struct RootDir {
    fd: OwnedFd,
    /// `openat2(RESOLVE_IN_ROOT)` works here (Linux 5.6 and later).
    in_root: bool,
}

impl RootDir {
    pub(crate) fn open(root: &Path) -> io::Result<RootDir> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let probe = rustix::fs::openat2(
            &fd,
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        );
        let in_root = !matches!(probe, Err(Errno::NOSYS));
        Ok(RootDir { fd, in_root })
    }

    /// Opens `path` (absolute, inside the root) with `flags`, resolved inside
    /// the root where the kernel can (`openat2` with `RESOLVE_IN_ROOT`).
    fn open_at(&self, path: &Path, flags: OFlags) -> Result<OwnedFd, Errno> {
        let relative = relative(path);
        if self.in_root {
            rustix::fs::openat2(
                &self.fd,
                relative,
                flags,
                Mode::empty(),
                ResolveFlags::IN_ROOT,
            )
        } else {
            rustix::fs::openat(&self.fd, relative, flags, Mode::empty())
        }
    }

    /// Opens `path` (absolute, inside the root) for reading, refusing anything
    /// but a regular file. Returns the file and its size.
    pub(crate) fn open_regular(&self, path: &Path) -> Result<(File, u64), CheckFailure> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let opened = self.open_at(path, flags);
        let fd = opened.map_err(|errno| match errno {
            Errno::NOENT | Errno::NOTDIR => CheckFailure::Missing,
            errno => CheckFailure::Unreadable(io::Error::from(errno).to_string()),
        })?;
        let stat = rustix::fs::fstat(&fd)
            .map_err(|errno| CheckFailure::Unreadable(io::Error::from(errno).to_string()))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile => Ok((File::from(fd), u64::try_from(stat.st_size).unwrap_or(0))),
            other => Err(CheckFailure::NotRegular {
                kind: file_type_name(other),
            }),
        }
    }

    /// The real path on this host of what `path` (inside the root) leads
    /// to, every symlink followed inside the root: the kernel resolves it
    /// (`openat2` with `O_PATH`) and `/proc/self/fd` names the result.
    pub(crate) fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        let fd = self.open_at(path, OFlags::PATH | OFlags::CLOEXEC)?;
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    /// Whether anything (a file, directory, symlink, dangling or not) is at
    /// `path`, resolved inside the root without following a final symlink.
    pub(crate) fn exists(&self, path: &Path) -> Result<bool, Errno> {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let opened = self.open_at(path, flags);
        match opened {
            Ok(_) => Ok(true),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
            Err(errno) => Err(errno),
        }
    }

    /// The size of the file at `path`, for ordering only: follows symlinks
    /// without `RESOLVE_IN_ROOT` (stat has no such flag), which can only
    /// change the order files are read in, never a verdict.
    fn size_hint(&self, path: &Path) -> u64 {
        rustix::fs::statat(&self.fd, relative(path), AtFlags::empty())
            .map_or(0, |stat| u64::try_from(stat.st_size).unwrap_or(0))
    }
}

/// `path` without its leading slashes, as a path relative to the root
/// directory descriptor (`.` for the root itself).
fn relative(path: &Path) -> &Path {
    let bytes = path.as_os_str().as_bytes();
    let start = bytes.iter().take_while(|&&b| b == b'/').count();
    match bytes.get(start..) {
        Some(rest) if !rest.is_empty() => Path::new(std::ffi::OsStr::from_bytes(rest)),
        _ => Path::new("."),
    }
}

pub(crate) fn file_type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "unknown file type",
    }
}

/// The default pool: one worker per core. Measured on two cores, twice as many
/// workers as cores gains a little with a warm page cache (a worker blocked in
/// `read` leaves its core to the other) and nothing cold, so the default stays
/// at one per core and `--workers` can raise it.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Checks every entry of `checks` under `root` with `n_workers` workers (at
/// least one, at most [`MAX_WORKERS`]), hashing with `backend` (which must
/// run on this CPU: [`Backend::is_supported`]). Fails only when the root
/// itself cannot be opened; every file's own trouble is a [`CheckFailure`].
pub fn verify(
    root: &Path,
    checks: &CheckList,
    n_workers: usize,
    backend: Backend,
) -> io::Result<VerifyOutcome> {
    let root_dir = RootDir::open(root)?;
    let n_workers = n_workers.clamp(1, MAX_WORKERS).min(checks.len().max(1));
    let order_start = Instant::now();
    let order = read_order(&root_dir, checks, n_workers);
    let order_time = order_start.elapsed();
    let next = AtomicUsize::new(0);
    let queue = Queue {
        checks,
        order: &order,
        next: &next,
    };

    let mut results: Vec<(Vec<(usize, CheckFailure)>, u64)> = Vec::with_capacity(n_workers);
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for worker_idx in 1..n_workers {
            let builder = std::thread::Builder::new().name(format!("verify-{worker_idx}"));
            // A worker that cannot be started only makes the pool smaller.
            if let Ok(handle) =
                builder.spawn_scoped(scope, || run_worker(&root_dir, backend, &queue))
            {
                handles.push(handle);
            }
        }
        results.push(run_worker(&root_dir, backend, &queue));
        for handle in handles {
            match handle.join() {
                Ok(result) => results.push(result),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });

    let mut failures: Vec<(usize, CheckFailure)> = Vec::new();
    let mut n_bytes = 0;
    for (worker_failures, worker_bytes) in results {
        failures.extend(worker_failures);
        n_bytes += worker_bytes;
    }
    failures.sort_by_key(|(idx, _)| *idx);
    Ok(VerifyOutcome {
        failures,
        n_files: checks.len(),
        n_bytes,
        backend,
        n_workers,
        order_time,
    })
}

/// The order files are handed out in: largest first when there are many, so
/// the last files to start are small and every lane stays busy to the end;
/// the presence checks, which read nothing, come last of all and fill the
/// lanes' tail.
fn read_order(root: &RootDir, checks: &CheckList, n_workers: usize) -> Vec<u32> {
    let n_checks = u32::try_from(checks.len()).unwrap_or(u32::MAX);
    if checks.len() < ORDER_BY_SIZE_FROM {
        return (0..n_checks).collect();
    }
    let mut sizes = vec![0u64; checks.len()];
    let chunk_len = checks.len().div_ceil(n_workers);
    std::thread::scope(|scope| {
        for (chunk_idx, sizes) in sizes.chunks_mut(chunk_len).enumerate() {
            let first = chunk_idx * chunk_len;
            let stat_all = move || {
                for (idx, size) in (first..).zip(sizes.iter_mut()) {
                    if checks.expected(idx).is_some()
                        && let Some(path) = checks.path(idx)
                    {
                        // Presence checks stay at 0 and sort last.
                        *size = root.size_hint(path).saturating_add(1);
                    }
                }
            };
            if std::thread::Builder::new()
                .name("verify-stat".to_owned())
                .spawn_scoped(scope, stat_all)
                .is_err()
            {
                // Without the thread the order is only less good; sizes stay 0.
            }
        }
    });
    let mut order: Vec<u32> = (0..n_checks).collect();
    order.sort_by_key(|&idx| std::cmp::Reverse(sizes.get(idx as usize).copied().unwrap_or(0)));
    order
}

/// The shared list of files, handed out one at a time.
#[derive(Debug)]
struct Queue<'a> {
    checks: &'a CheckList,
    order: &'a [u32],
    next: &'a AtomicUsize,
}

/// One entry taken from the queue.
struct Job<'a> {
    check_idx: usize,
    path: &'a Path,
    expected: Option<[u8; 16]>,
}

impl<'a> Queue<'a> {
    fn take(&self) -> Option<Job<'a>> {
        let position = self.next.fetch_add(1, Ordering::Relaxed);
        let check_idx = *self.order.get(position)? as usize;
        Some(Job {
            check_idx,
            path: self.checks.path(check_idx)?,
            expected: self.checks.expected(check_idx),
        })
    }
}

/// A file being hashed in a lane.
#[derive(Debug)]
struct OpenFile {
    check_idx: usize,
    expected: [u8; 16],
    file: File,
    /// The size `fstat` gave when the file was opened: reading stops there,
    /// which saves the read that would only confirm the end.
    size: u64,
    n_read: u64,
    /// The last chunk, with its padding, is in the lane.
    padded: bool,
}

#[derive(Debug, Default)]
struct Lane {
    file: Option<OpenFile>,
    /// Next block of the lane's slot to compress, and how many it holds.
    pos: usize,
    n_blocks: usize,
}

/// One worker: sixteen lanes over its own arena until the queue is empty.
/// Returns its failures and the bytes it hashed.
fn run_worker(
    root: &RootDir,
    backend: Backend,
    queue: &Queue<'_>,
) -> (Vec<(usize, CheckFailure)>, u64) {
    let lane_stride = CHUNK + BLOCK;
    // Every slot starts on a cache line, so the vector loads out of it never
    // split one (malloc's large blocks start 16 bytes into a page). The Xeon
    // measured does not care (within 2 %); it costs nothing on those that do.
    let mut arena = vec![0u8; LANES * lane_stride + ARENA_ALIGN];
    let arena_start = arena.as_ptr().align_offset(ARENA_ALIGN).min(ARENA_ALIGN);
    let mut lanes: [Lane; LANES] = std::array::from_fn(|_| Lane::default());
    let mut state: LaneState = [[0; LANES]; 4];
    let mut failures = Vec::new();
    let mut n_bytes = 0u64;
    let mut queue_empty = false;
    loop {
        let mut active: u16 = 0;
        for (lane_idx, lane) in lanes.iter_mut().enumerate() {
            if lane.pos < lane.n_blocks && lane.file.is_some() {
                active |= 1 << lane_idx;
                continue;
            }
            if let Some(file) = lane.file.take_if(|file| file.padded)
                && md5x16::lane_digest(&state, lane_idx) != file.expected
            {
                failures.push((file.check_idx, CheckFailure::Mismatch));
            }
            let slot_start = arena_start + lane_idx * lane_stride;
            let Some(slot) = arena.get_mut(slot_start..slot_start + lane_stride) else {
                continue;
            };
            while !(queue_empty && lane.file.is_none()) {
                if lane.file.is_none() {
                    let Some(job) = queue.take() else {
                        queue_empty = true;
                        break;
                    };
                    let Some(expected) = job.expected else {
                        // Only presence: nothing to read, the lane stays free.
                        match root.exists(job.path) {
                            Ok(true) => {}
                            Ok(false) => failures.push((job.check_idx, CheckFailure::Missing)),
                            Err(errno) => failures.push((
                                job.check_idx,
                                CheckFailure::Unreadable(io::Error::from(errno).to_string()),
                            )),
                        }
                        continue;
                    };
                    match root.open_regular(job.path) {
                        Ok((file, size)) => {
                            md5x16::reset_lane(&mut state, lane_idx);
                            lane.file = Some(OpenFile {
                                check_idx: job.check_idx,
                                expected,
                                file,
                                size,
                                n_read: 0,
                                padded: false,
                            });
                        }
                        Err(failure) => {
                            failures.push((job.check_idx, failure));
                            continue;
                        }
                    }
                }
                let Some(file) = lane.file.as_mut() else {
                    break;
                };
                match fill(slot, file) {
                    Ok((n_blocks, n_read)) => {
                        n_bytes += n_read as u64;
                        lane.pos = 0;
                        lane.n_blocks = n_blocks;
                        break;
                    }
                    Err(err) => {
                        failures.push((file.check_idx, CheckFailure::Unreadable(err.to_string())));
                        lane.file = None;
                    }
                }
            }
            if lane.file.is_some() {
                active |= 1 << lane_idx;
            } else {
                lane.pos = 0;
                lane.n_blocks = 0;
            }
        }
        if active == 0 {
            break;
        }
        let n_blocks = lanes
            .iter()
            .filter(|lane| lane.file.is_some())
            .map(|lane| lane.n_blocks - lane.pos)
            .min()
            .unwrap_or(0);
        let offsets: [usize; LANES] = std::array::from_fn(|lane_idx| {
            let pos = lanes.get(lane_idx).map_or(0, |lane| lane.pos);
            arena_start + lane_idx * lane_stride + pos * BLOCK
        });
        md5x16::compress_lanes(backend, &mut state, &arena, &offsets, active, n_blocks);
        for lane in lanes.iter_mut().filter(|lane| lane.file.is_some()) {
            lane.pos += n_blocks;
        }
    }
    (failures, n_bytes)
}

/// Reads the next chunk of `file` into its lane slot, padding it when the file
/// ends. Returns the blocks ready in the slot and the bytes read.
fn fill(slot: &mut [u8], file: &mut OpenFile) -> io::Result<(usize, usize)> {
    let mut filled = 0;
    while filled < CHUNK && file.n_read < file.size {
        let Some(buffer) = slot.get_mut(filled..CHUNK) else {
            break;
        };
        match file.file.read(buffer) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                file.n_read += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    if filled == CHUNK && file.n_read < file.size {
        return Ok((CHUNK / BLOCK, filled));
    }
    // The end: 0x80, zeros, and the length in bits, to a whole block (RFC
    // 1321, 3.1 and 3.2). The slot has one spare block for this.
    let end = (filled + 9).div_ceil(BLOCK) * BLOCK;
    let bit_length = file.n_read.wrapping_mul(8).to_le_bytes();
    if let Some(padding) = slot.get_mut(filled..end) {
        padding.fill(0);
        if let Some(first) = padding.first_mut() {
            *first = 0x80;
        }
    }
    if let Some(length) = slot.get_mut(end - 8..end) {
        length.copy_from_slice(&bit_length);
    }
    file.padded = true;
    Ok((end / BLOCK, filled))
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};

    use super::*;

    fn md5_of(bytes: &[u8]) -> [u8; 16] {
        Md5::digest(bytes).into()
    }

    fn supported_backends() -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|backend| backend.is_supported())
            .collect()
    }

    #[test]
    fn check_list_paths() {
        let mut checks = CheckList::new();
        assert!(checks.is_empty());
        assert_eq!(checks.push_md5(Path::new("/usr/bin/a"), [1; 16]), 0);
        assert_eq!(checks.push_presence(Path::new("/usr/share/doc")), 1);
        assert_eq!(checks.push_md5(Path::new("/b"), [2; 16]), 2);
        assert_eq!(checks.len(), 3);
        assert_eq!(checks.n_md5(), 2);
        assert_eq!(checks.path(0), Some(Path::new("/usr/bin/a")));
        assert_eq!(checks.path(1), Some(Path::new("/usr/share/doc")));
        assert_eq!(checks.path(2), Some(Path::new("/b")));
        assert_eq!(checks.path(3), None);
        assert_eq!(checks.expected(0), Some([1; 16]));
        assert_eq!(checks.expected(1), None);
    }

    /// Files of many sizes (empty, around block and chunk edges, several
    /// chunks) under a temporary root; a few altered, one missing, one a
    /// directory, one a FIFO. Every verdict is checked, through 1 and 3
    /// workers.
    #[test]
    fn verdicts_for_every_size_and_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        let sizes = [
            0usize,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            120,
            4095,
            CHUNK - 9,
            CHUNK - 8,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            3 * CHUNK + 17,
            70_000,
            300_001,
        ];
        let mut checks = CheckList::new();
        let mut expected_failures = Vec::new();
        for (idx, &size) in sizes.iter().enumerate() {
            let content: Vec<u8> = (0..size).map(|i| (i * 7 + idx) as u8).collect();
            let path = PathBuf::from(format!("/usr/bin/f{idx}"));
            std::fs::write(root.join(format!("usr/bin/f{idx}")), &content).expect("write");
            let mut expected = md5_of(&content);
            if idx % 5 == 2 {
                // Recorded md5 of other content: the file "was modified".
                expected[0] ^= 1;
                expected_failures.push((checks.len(), CheckFailure::Mismatch));
            }
            checks.push_md5(&path, expected);
        }
        expected_failures.push((checks.len(), CheckFailure::Missing));
        checks.push_md5(Path::new("/usr/bin/gone"), md5_of(b""));
        expected_failures.push((checks.len(), CheckFailure::Missing));
        checks.push_md5(Path::new("/usr/bin/f0/not-a-dir"), md5_of(b""));
        expected_failures.push((checks.len(), CheckFailure::NotRegular { kind: "directory" }));
        checks.push_md5(Path::new("/usr"), md5_of(b""));
        nix::unistd::mkfifo(&root.join("usr/bin/pipe"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        expected_failures.push((checks.len(), CheckFailure::NotRegular { kind: "fifo" }));
        checks.push_md5(Path::new("/usr/bin/pipe"), md5_of(b""));
        let total: u64 = sizes.iter().map(|&s| s as u64).sum();
        // Presence only: a directory, a dangling symlink (there, though it
        // leads nowhere), and a path with nothing at it.
        std::os::unix::fs::symlink("/nowhere", root.join("usr/bin/dangling")).expect("symlink");
        checks.push_presence(Path::new("/usr/bin"));
        checks.push_presence(Path::new("/usr/bin/dangling"));
        expected_failures.push((checks.len(), CheckFailure::Missing));
        checks.push_presence(Path::new("/usr/lib/gone"));
        for backend in supported_backends() {
            for workers in [1, 3] {
                let outcome = verify(root, &checks, workers, backend).expect("root opens");
                assert_eq!(
                    outcome.failures, expected_failures,
                    "{backend:?}, {workers} workers"
                );
                assert_eq!(outcome.n_bytes, total);
                assert_eq!(outcome.n_files, checks.len());
            }
        }
    }

    /// More files than the size-ordering threshold, so the ordered path runs:
    /// one in 97 altered, and exactly those fail.
    #[test]
    fn many_files_in_size_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut checks = CheckList::new();
        let mut altered = Vec::new();
        for idx in 0..(ORDER_BY_SIZE_FROM + 300) {
            let content = vec![(idx % 251) as u8; (idx * 37) % 9000];
            std::fs::write(dir.path().join(format!("f{idx}")), &content).expect("write");
            let mut expected = md5_of(&content);
            if idx % 97 == 0 {
                expected[15] ^= 0x80;
                altered.push(idx);
            }
            checks.push_md5(Path::new(&format!("/f{idx}")), expected);
        }
        let outcome = verify(dir.path(), &checks, 2, Backend::detect().chosen).expect("root opens");
        let failed: Vec<usize> = outcome.failures.iter().map(|(idx, _)| *idx).collect();
        assert_eq!(failed, altered);
        assert!(
            outcome
                .failures
                .iter()
                .all(|(_, failure)| *failure == CheckFailure::Mismatch)
        );
    }

    /// An absolute symlink inside the root resolves inside the root: the
    /// image's `/etc/passwd`, not the host's.
    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/passwd"), b"image\n").expect("write");
        std::fs::create_dir_all(root.join("usr/share")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", root.join("usr/share/link")).expect("symlink");
        let mut checks = CheckList::new();
        checks.push_md5(Path::new("/usr/share/link"), md5_of(b"image\n"));
        let outcome = verify(root, &checks, 1, Backend::Portable).expect("root opens");
        assert_eq!(outcome.failures, vec![]);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/usr/bin/x")), Path::new("usr/bin/x"));
        assert_eq!(relative(Path::new("//etc")), Path::new("etc"));
        assert_eq!(relative(Path::new("/")), Path::new("."));
    }
}
