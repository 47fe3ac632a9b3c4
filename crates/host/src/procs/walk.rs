//! The walk: /proc listed once, each process read relative to its directory
//! descriptor into buffers reused from one process to the next, keeping only
//! socket descriptors, on a few threads that each take the next unread pid.
//! A process that exits mid-walk is counted, not reported; a refusal is
//! counted for [`ProcessWalk`] to explain once.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use perimeter_model::{Ownership, Problem, Process, SocketOwner};
use rustix::fs::{Mode, OFlags, RawDir};
use rustix::io::Errno;

use super::ProcessWalk;
use super::cgroup::{CgroupFacts, parse_cgroup};
use super::parse::{
    parse_cmdline, parse_effective_capabilities, parse_exe_link, parse_socket_link, parse_status,
};
use crate::netns::parse_ns_link;

/// A longer command line is cut here; real ones can reach megabytes (Java class
/// paths) and nothing downstream needs more.
const MAX_CMDLINE: u64 = 64 * 1024;

/// `status` is about 1.5 KiB; `cgroup` a few lines, one per v1 hierarchy.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// Walks `proc_root` (normally `/proc`) once. Never fails: an unreadable root
/// is a [`Problem`] and an empty walk.
pub fn walk_processes(proc_root: &Path) -> ProcessWalk {
    let n_cores = std::thread::available_parallelism().map_or(1, usize::from);
    walk_with(proc_root, n_cores)
}

/// [`walk_processes`] on at most `n_cores` threads.
fn walk_with(proc_root: &Path, n_cores: usize) -> ProcessWalk {
    let mut walk = ProcessWalk::default();
    let root = match open_dir(None, proc_root.as_os_str()) {
        Ok(root) => root,
        Err(errno) => {
            walk.problems.push(Problem::new(
                proc_root.display().to_string(),
                format!("cannot list processes: {}", std::io::Error::from(errno)),
            ));
            return walk;
        }
    };
    let pids = match list_pids(&root) {
        Ok(pids) => pids,
        Err(errno) => {
            walk.problems.push(Problem::new(
                proc_root.display().to_string(),
                format!("cannot list processes: {}", std::io::Error::from(errno)),
            ));
            return walk;
        }
    };

    let mut scratch = Scratch::default();
    walk.effective_capabilities = read_file_at(
        &root,
        "thread-self/status",
        &mut scratch.file,
        MAX_SMALL_FILE,
    )
    .ok()
    .and_then(|()| parse_effective_capabilities(&String::from_utf8_lossy(&scratch.file)));
    let mut problems = Vec::new();
    let n_walkers = walker_count(pids.len(), n_cores);
    for part in walk_in_parallel(&root, &pids, scratch, n_walkers) {
        walk.processes.extend(part.processes);
        walk.socket_fds.extend(part.socket_fds);
        walk.n_vanished += part.n_vanished;
        walk.n_fd_dirs_denied += part.n_fd_dirs_denied;
        walk.n_links_denied += part.n_links_denied;
        problems.extend(part.problems);
    }
    // Workers take processes in no fixed order; problems are put back in the
    // order of /proc's listing (ascending pid), each process's in the order
    // found (the sort is stable), so a report does not vary with scheduling.
    problems.sort_by_key(|(pid, _)| *pid);
    walk.problems
        .extend(problems.into_iter().map(|(_, problem)| problem));
    walk.socket_fds.sort_unstable();

    if walk.n_fd_dirs_denied > 0 || walk.n_links_denied > 0 {
        let mut parts = Vec::new();
        if walk.n_fd_dirs_denied > 0 {
            parts.push(format!(
                "the descriptors of {} processes could not be listed",
                walk.n_fd_dirs_denied
            ));
        }
        if walk.n_links_denied > 0 {
            parts.push(format!(
                "the descriptor, exe, cwd or namespace links of {} processes could not be read",
                walk.n_links_denied
            ));
        }
        let message = format!("{} ({})", parts.join(" and "), walk.denial_reason());
        let hint = walk.denial_hint();
        walk.problems
            .push(Problem::new(proc_root.display().to_string(), message).with_hint(hint));
    }
    walk
}

/// Buffers reused from one process to the next.
struct Scratch {
    file: Vec<u8>,
    dir: Vec<MaybeUninit<u8>>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            file: Vec::with_capacity(8 * 1024),
            dir: vec![MaybeUninit::uninit(); 16 * 1024],
        }
    }
}

/// The process exited while being read.
struct ProcessGone;

fn is_gone(errno: Errno) -> bool {
    errno == Errno::NOENT || errno == Errno::SRCH
}

fn is_denied(errno: Errno) -> bool {
    errno == Errno::ACCESS || errno == Errno::PERM
}

fn open_dir(at: Option<&OwnedFd>, path: &OsStr) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match at {
        Some(dir) => rustix::fs::openat(dir, path, flags, Mode::empty()),
        None => rustix::fs::open(path, flags, Mode::empty()),
    }
}

/// The numeric entries of /proc: processes, not threads (threads live under
/// /proc/PID/task and share their process's descriptors).
fn list_pids(root: &OwnedFd) -> Result<Vec<u32>, Errno> {
    let mut buffer = vec![MaybeUninit::uninit(); 16 * 1024];
    let mut entries = RawDir::new(root, &mut buffer);
    let mut pids = Vec::new();
    while let Some(entry) = entries.next() {
        if let Some(pid) = parse_decimal(entry?.file_name().to_bytes()) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

fn parse_decimal(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Reads a whole (small) file relative to `dir` into `buffer`, up to `cap` bytes.
fn read_file_at(dir: &OwnedFd, name: &str, buffer: &mut Vec<u8>, cap: u64) -> Result<(), Errno> {
    buffer.clear();
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    File::from(fd)
        .take(cap)
        .read_to_end(buffer)
        .map_err(|err| Errno::from_io_error(&err).unwrap_or(Errno::IO))?;
    Ok(())
}

fn read_link_at(dir: &OwnedFd, name: &str) -> Result<Vec<u8>, Errno> {
    rustix::fs::readlinkat(dir, name, Vec::new()).map(|link| link.into_bytes())
}

/// At most this many threads walk /proc. The walk is system calls into procfs
/// (a `readlink` per descriptor), which scale with cores until the kernel's
/// dentry locks start to contend; four keeps a big host's audit short without
/// taking over the machine.
const MAX_WALKERS: usize = 4;

/// Below this many processes per thread another thread costs more than it saves
/// (spawning is tens of microseconds, a process with a few descriptors about as
/// much).
const MIN_PROCESSES_PER_WALKER: usize = 64;

/// What one walker thread saw: [`ProcessWalk`]'s fields, with each problem
/// tagged by pid so the merge can put them in a stable order.
#[derive(Default)]
struct WalkPart {
    processes: Vec<(u32, Process)>,
    socket_fds: Vec<(u64, SocketOwner)>,
    n_vanished: usize,
    n_fd_dirs_denied: usize,
    n_links_denied: usize,
    problems: Vec<(u32, Problem)>,
}

/// How many threads to walk `n_processes` with, given the cores available.
fn walker_count(n_processes: usize, n_cores: usize) -> usize {
    (n_processes / MIN_PROCESSES_PER_WALKER)
        .min(n_cores)
        .clamp(1, MAX_WALKERS)
}

/// Reads every process in `pids` on `n_walkers` threads, the calling thread
/// and helpers, each taking the next unread pid, so a few processes with
/// thousands of descriptors do not leave one thread with all the work. A
/// helper that cannot be started leaves its share to the others.
fn walk_in_parallel(
    root: &OwnedFd,
    pids: &[u32],
    scratch: Scratch,
    n_walkers: usize,
) -> Vec<WalkPart> {
    let next = AtomicUsize::new(0);
    let walker = |mut scratch: Scratch| {
        let mut part = WalkPart::default();
        while let Some(&pid) = pids.get(next.fetch_add(1, Ordering::Relaxed)) {
            match read_process(root, pid, &mut scratch, &mut part) {
                Ok(process) => part.processes.push((pid, process)),
                Err(ProcessGone) => part.n_vanished += 1,
            }
        }
        part
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..n_walkers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("proc-walk".to_owned())
                    .spawn_scoped(scope, || walker(Scratch::default()))
                    .ok()
            })
            .collect();
        let mut parts = vec![walker(scratch)];
        for helper in helpers {
            match helper.join() {
                Ok(part) => parts.push(part),
                // The walk has no panicking paths; should one appear, it is a
                // bug to surface, as it would be in a sequential walk.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        parts
    })
}

fn read_process(
    root: &OwnedFd,
    pid: u32,
    scratch: &mut Scratch,
    walk: &mut WalkPart,
) -> Result<Process, ProcessGone> {
    let pid_name = pid.to_string();
    let dir = open_dir(Some(root), OsStr::new(&pid_name)).map_err(|_| ProcessGone)?;

    // status is world-readable; failing to read it means the process is gone.
    read_file_at(&dir, "status", &mut scratch.file, MAX_SMALL_FILE).map_err(|_| ProcessGone)?;
    let status = match parse_status(&String::from_utf8_lossy(&scratch.file)) {
        Ok(status) => status,
        Err(err) => {
            walk.problems.push((
                pid,
                Problem::new(format!("/proc/{pid}/status"), err.to_string()),
            ));
            return Err(ProcessGone);
        }
    };

    let cmdline = match read_file_at(&dir, "cmdline", &mut scratch.file, MAX_CMDLINE) {
        Ok(()) => parse_cmdline(&scratch.file),
        Err(_) => Vec::new(),
    };
    let cgroup = match read_file_at(&dir, "cgroup", &mut scratch.file, MAX_SMALL_FILE) {
        Ok(()) => parse_cgroup(&String::from_utf8_lossy(&scratch.file)),
        Err(_) => CgroupFacts::default(),
    };

    // exe, cwd and ns/net need ptrace read access. Kernel threads and zombies
    // have no exe (ENOENT); that is not a permission problem.
    let mut links_denied = false;
    let mut link = |name: &str| match read_link_at(&dir, name) {
        Ok(link) => Some(link),
        Err(errno) => {
            links_denied |= is_denied(errno);
            None
        }
    };
    let (exe, exe_deleted) = match link("exe") {
        Some(target) => {
            let (path, deleted) = parse_exe_link(&target);
            (Some(path), deleted)
        }
        None => (None, false),
    };
    let cwd = link("cwd").map(|target| PathBuf::from(OsStr::from_bytes(&target)));
    let netns_inode =
        link("ns/net").and_then(|target| parse_ns_link(&String::from_utf8_lossy(&target)));

    match read_socket_fds(&dir, pid, &mut scratch.dir, &mut walk.socket_fds) {
        Ok(FdRead {
            links_denied: denied,
        }) => links_denied |= denied,
        Err(errno) if is_denied(errno) => walk.n_fd_dirs_denied += 1,
        // Gone between status and fd: keep what was read, the process existed.
        Err(errno) if is_gone(errno) => {}
        Err(errno) => walk.problems.push((
            pid,
            Problem::new(
                format!("/proc/{pid}/fd"),
                format!("cannot list descriptors: {}", std::io::Error::from(errno)),
            ),
        )),
    }
    if links_denied {
        walk.n_links_denied += 1;
    }

    Ok(Process {
        pid,
        ppid: status.ppid,
        comm: status.name,
        cmdline,
        uid: status.euid,
        account: None,
        exe,
        exe_deleted,
        cwd,
        cgroup: cgroup.path,
        unit: cgroup.unit,
        container: cgroup.container,
        netns_inode,
        ownership: Ownership::NotChecked,
    })
}

struct FdRead {
    links_denied: bool,
}

/// Appends (inode, owner) for every socket descriptor of the process. Links are
/// read into a stack buffer: `socket:[4294967295]` is 20 bytes, so anything
/// longer than the buffer is not a socket and its truncation does not matter.
fn read_socket_fds(
    pid_dir: &OwnedFd,
    pid: u32,
    dir_buffer: &mut [MaybeUninit<u8>],
    out: &mut Vec<(u64, SocketOwner)>,
) -> Result<FdRead, Errno> {
    let fd_dir = open_dir(Some(pid_dir), OsStr::new("fd"))?;
    let mut entries = RawDir::new(fd_dir.as_fd(), dir_buffer);
    let mut links_denied = false;
    let mut link = [0u8; 64];
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        let Some(fd) = parse_decimal(name.to_bytes()) else {
            continue;
        };
        match rustix::fs::readlinkat_raw(&fd_dir, name, &mut link[..]) {
            Ok(len) => {
                if let Some(inode) = link.get(..len).and_then(parse_socket_link) {
                    out.push((inode, SocketOwner { pid, fd }));
                }
            }
            Err(errno) if is_denied(errno) => links_denied = true,
            // Closed since the directory was read.
            Err(_) => {}
        }
    }
    Ok(FdRead { links_denied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_sees_this_process_and_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let inode = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&listener)
        ))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("stat own socket");
        let walk = walk_processes(Path::new("/proc"));
        let me = std::process::id();
        let process = walk.processes.get(&me).expect("own process is listed");
        assert_eq!(process.exe, std::env::current_exe().ok());
        assert_eq!(process.uid, rustix::process::geteuid().as_raw());
        assert_eq!(
            process.ppid,
            rustix::process::getppid().map_or(0, |p| p.as_raw_pid() as u32)
        );
        assert!(process.netns_inode.is_some());
        let owners: Vec<_> = walk.owners_of(inode).collect();
        assert_eq!(
            owners,
            vec![SocketOwner {
                pid: me,
                fd: std::os::fd::AsRawFd::as_raw_fd(&listener) as u32,
            }]
        );
    }

    #[test]
    fn walkers_scale_with_processes_and_cores() {
        assert_eq!(walker_count(0, 8), 1);
        assert_eq!(walker_count(MIN_PROCESSES_PER_WALKER - 1, 8), 1);
        assert_eq!(walker_count(300, 2), 2);
        assert_eq!(walker_count(300, 1), 1);
        assert_eq!(walker_count(300, 0), 1);
        assert_eq!(walker_count(300, 64), 4);
        assert_eq!(walker_count(100_000, 64), MAX_WALKERS);
    }

    /// A /proc of `n_processes` fake processes, pids 1 to `n_processes`: each
    /// holds socket inode `10 * pid` on descriptor 3 and /dev/null on 4; each
    /// pid divisible by 7 has a status without `Uid:`, which is a problem.
    fn fake_proc(n_processes: u32) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for pid in 1..=n_processes {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir_all(dir.join("fd")).expect("mkdir");
            let status = if pid % 7 == 0 {
                "Name:\tbroken\nPPid:\t1\n".to_owned()
            } else {
                format!("Name:\tworker\nPPid:\t1\nUid:\t{pid}\t{pid}\t{pid}\t{pid}\n")
            };
            std::fs::write(dir.join("status"), status).expect("write status");
            std::fs::write(dir.join("cmdline"), b"worker\0--id\0").expect("write cmdline");
            std::fs::write(dir.join("cgroup"), "0::/system.slice/worker.service\n")
                .expect("write cgroup");
            std::os::unix::fs::symlink(format!("socket:[{}]", pid * 10), dir.join("fd/3"))
                .expect("fd link");
            std::os::unix::fs::symlink("/dev/null", dir.join("fd/4")).expect("fd link");
        }
        root
    }

    #[test]
    fn a_walk_on_several_threads_sees_what_one_thread_sees() {
        let n_processes = 300;
        let proc_root = fake_proc(n_processes);
        let sequential = walk_with(proc_root.path(), 1);
        let parallel = walk_with(proc_root.path(), 4);

        let n_broken = (1..=n_processes).filter(|pid| pid % 7 == 0).count();
        assert_eq!(sequential.processes.len(), n_processes as usize - n_broken);
        assert_eq!(sequential.n_vanished, n_broken);
        let worker = sequential.processes.get(&12).expect("pid 12 is listed");
        assert_eq!(worker.uid, 12);
        assert_eq!(worker.cmdline, vec!["worker", "--id"]);
        assert_eq!(worker.unit.as_deref(), Some("worker.service"));
        assert_eq!(
            sequential.owners_of(120).collect::<Vec<_>>(),
            vec![SocketOwner { pid: 12, fd: 3 }]
        );

        assert_eq!(parallel.processes, sequential.processes);
        assert_eq!(parallel.socket_fds, sequential.socket_fds);
        assert_eq!(parallel.n_vanished, sequential.n_vanished);
        assert_eq!(parallel.n_fd_dirs_denied, 0);
        assert_eq!(parallel.n_links_denied, 0);
        // Problems come in pid order, whichever thread found them.
        let subjects: Vec<String> = (1..=n_processes)
            .filter(|pid| pid % 7 == 0)
            .map(|pid| format!("/proc/{pid}/status"))
            .collect();
        let seen = |walk: &ProcessWalk| -> Vec<String> {
            walk.problems.iter().map(|p| p.subject.clone()).collect()
        };
        assert_eq!(seen(&sequential), subjects);
        assert_eq!(seen(&parallel), subjects);
        assert_eq!(parallel.problems, sequential.problems);
    }

    #[test]
    fn missing_proc_root_is_a_problem_not_a_panic() {
        let walk = walk_processes(Path::new("/nonexistent/proc"));
        assert!(walk.processes.is_empty());
        assert_eq!(walk.problems.len(), 1);
        assert!(
            walk.problems[0]
                .message
                .starts_with("cannot list processes")
        );
    }
}
