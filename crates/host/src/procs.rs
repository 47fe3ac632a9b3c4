//! One walk of /proc: every process's facts (parent, names, uid, executable,
//! working directory, cgroup, systemd unit, container hint, network namespace)
//! and every socket descriptor it holds, so listening sockets can be traced to
//! the processes holding them.
//!
//! The walk is the expensive half of `perimeter audit` on a busy host (one
//! `getdents` entry and one `readlink` per descriptor, both kernel work), so it
//! works relative to directory descriptors, reads directories and links into
//! reused buffers, keeps only socket descriptors, and spreads the processes
//! over a few threads, since procfs serves different processes in parallel.
//! Processes that exit mid-walk are skipped and counted; what privileges hide
//! (other users' descriptors and links) is counted and reported once, naming
//! the missing capability, instead of once per process.

use std::collections::BTreeMap;
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

use crate::netns::parse_ns_link;

/// What the kernel requires to list another user's `/proc/PID/fd`: the directory
/// is mode 0500 and owned by the process's user, so listing it is a DAC check
/// (`CAP_DAC_OVERRIDE` passes it too). Verified on Linux 6.18 with
/// `setpriv --bounding-set=-dac_read_search,-dac_override`.
pub const FD_DIR_CAPABILITY: &str = "CAP_DAC_READ_SEARCH";

/// What the kernel requires to read another user's `/proc/PID/fd/N`, `exe`, `cwd`
/// and `ns/net` links: a ptrace read-access check (`PTRACE_MODE_READ_FSCREDS`),
/// not a DAC one. Verified on Linux 6.18 with `setpriv --bounding-set=-sys_ptrace`.
pub const PROC_LINK_CAPABILITY: &str = "CAP_SYS_PTRACE";

/// Capability bit numbers (linux/capability.h).
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;

/// A longer command line is cut here; real ones can reach megabytes (Java class
/// paths) and nothing downstream needs more.
const MAX_CMDLINE: u64 = 64 * 1024;
/// `status` is about 1.5 KiB; `cgroup` a few lines, one per v1 hierarchy.
const MAX_SMALL_FILE: u64 = 64 * 1024;

/// Everything one walk of /proc saw.
#[derive(Debug, Clone, Default)]
pub struct ProcessWalk {
    /// Every process seen, by pid, `ownership` = `Ownership::NotChecked` and
    /// `account` unresolved (`users` fills it).
    pub processes: BTreeMap<u32, Process>,
    /// Every socket descriptor seen, as (socket inode, owner), sorted.
    pub socket_fds: Vec<(u64, SocketOwner)>,
    /// Processes that exited between being listed and being read.
    pub n_vanished: usize,
    /// Processes whose descriptor directory could not be listed (`EACCES`).
    pub n_fd_dirs_denied: usize,
    /// Processes with at least one descriptor, exe, cwd or ns link refused.
    pub n_links_denied: usize,
    /// The walker's effective capability set (`CapEff:` of its own status),
    /// to tell a missing capability from a refusal despite holding it.
    pub effective_capabilities: Option<u64>,
    pub problems: Vec<Problem>,
}

impl ProcessWalk {
    /// The processes holding the socket with this inode, sorted by pid and fd.
    pub fn owners_of(&self, inode: u64) -> impl Iterator<Item = SocketOwner> + '_ {
        let start = self
            .socket_fds
            .partition_point(|(fd_inode, _)| *fd_inode < inode);
        self.socket_fds
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(move |(fd_inode, _)| *fd_inode == inode)
            .map(|(_, owner)| *owner)
    }

    /// Whether permissions hid anything: some descriptors or links could not be read.
    pub fn fully_privileged(&self) -> bool {
        self.n_fd_dirs_denied == 0 && self.n_links_denied == 0
    }

    /// Why /proc hid things, naming the missing capability, or saying that the
    /// kernel refused although it is held (a Linux security module such as
    /// Landlock, SELinux or AppArmor, or a process in another user namespace).
    pub fn denial_reason(&self) -> String {
        let mut reasons = Vec::new();
        if self.n_fd_dirs_denied > 0 {
            let held = self.holds(CAP_DAC_READ_SEARCH) || self.holds(CAP_DAC_OVERRIDE);
            reasons.push(capability_reason(FD_DIR_CAPABILITY, held));
        }
        if self.n_links_denied > 0 {
            reasons.push(capability_reason(
                PROC_LINK_CAPABILITY,
                self.holds(CAP_SYS_PTRACE),
            ));
        }
        reasons.join("; ")
    }

    /// What would let the walk see everything.
    pub fn denial_hint(&self) -> &'static str {
        let fd_dirs_explained = self.n_fd_dirs_denied == 0
            || !(self.holds(CAP_DAC_READ_SEARCH) || self.holds(CAP_DAC_OVERRIDE));
        let links_explained = self.n_links_denied == 0 || !self.holds(CAP_SYS_PTRACE);
        if fd_dirs_explained && links_explained {
            "run as root, or grant CAP_DAC_READ_SEARCH (to list other users' /proc/PID/fd) and CAP_SYS_PTRACE (to read their descriptor, exe, cwd and namespace links)"
        } else {
            "run outside the sandbox that confines perimeter (a Landlock, SELinux or AppArmor policy, or a user namespace), or audit from the host's initial namespaces"
        }
    }

    fn holds(&self, capability: u32) -> bool {
        self.effective_capabilities
            .is_some_and(|caps| caps & (1u64 << capability) != 0)
    }
}

fn capability_reason(capability: &str, held: bool) -> String {
    if held {
        format!("refused although {capability} is held")
    } else {
        format!("needs {capability}")
    }
}

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

/// The effective capability set from a status file's `CapEff:` line (hex).
pub fn parse_effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
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

/// `socket:[26452]` → 26452; any other descriptor target → `None`.
pub fn parse_socket_link(link: &[u8]) -> Option<u64> {
    let inode = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    if inode.is_empty() || !inode.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inode).ok()?.parse().ok()
}

/// The `exe` link target, without the ` (deleted)` the kernel appends when the
/// file was removed or replaced after the process started.
pub fn parse_exe_link(link: &[u8]) -> (PathBuf, bool) {
    match link.strip_suffix(b" (deleted)") {
        Some(path) => (PathBuf::from(OsStr::from_bytes(path)), true),
        None => (PathBuf::from(OsStr::from_bytes(link)), false),
    }
}

/// The fields of /proc/PID/status the audit uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFacts {
    /// `Name:`, the kernel's `comm`, unescaped.
    pub name: String,
    pub ppid: u32,
    /// The effective uid: the second field of `Uid:`.
    pub euid: u32,
}

/// /proc/PID/status lacked a field or held one that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("missing `{0}:` line")]
    Missing(&'static str),
    #[error("bad `{field}:` value `{value}`")]
    Bad { field: &'static str, value: String },
}

/// Parses /proc/PID/status for the name, parent pid and effective uid.
pub fn parse_status(text: &str) -> Result<StatusFacts, StatusError> {
    let mut name = None;
    let mut ppid = None;
    let mut euid = None;
    // Lines end in `\n` alone: `Name:` may end in a carriage return the
    // kernel does not escape, which `str::lines` would drop with the newline.
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        // The value is tab-separated from the key; Name keeps inner spaces.
        let value = value.strip_prefix('\t').unwrap_or(value);
        match key {
            "Name" => name = Some(unescape_status_name(value)),
            "PPid" => {
                let bad = || StatusError::Bad {
                    field: "PPid",
                    value: value.to_owned(),
                };
                ppid = Some(value.trim().parse().map_err(|_| bad())?);
            }
            "Uid" => {
                let bad = || StatusError::Bad {
                    field: "Uid",
                    value: value.to_owned(),
                };
                let effective = value.split_ascii_whitespace().nth(1).ok_or_else(bad)?;
                euid = Some(effective.parse().map_err(|_| bad())?);
            }
            _ => {}
        }
        if name.is_some() && ppid.is_some() && euid.is_some() {
            break;
        }
    }
    Ok(StatusFacts {
        name: name.ok_or(StatusError::Missing("Name"))?,
        ppid: ppid.ok_or(StatusError::Missing("PPid"))?,
        euid: euid.ok_or(StatusError::Missing("Uid"))?,
    })
}

/// The kernel escapes only newline and backslash in `Name:` (`seq_escape_str`
/// with the set "\n\\"), as `\n` and `\\`.
fn unescape_status_name(value: &str) -> String {
    if !value.contains('\\') {
        return value.to_owned();
    }
    let mut name = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            name.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => name.push('\n'),
            Some('\\') => name.push('\\'),
            Some(other) => {
                name.push('\\');
                name.push(other);
            }
            None => name.push('\\'),
        }
    }
    name
}

/// /proc/PID/cmdline: arguments separated by NUL. A process that rewrote its
/// title (nginx, postgres, sshd, redis) may leave one argument holding spaces,
/// padded with NULs to the length of the original arguments; trailing NULs are
/// dropped so the padding does not become empty arguments, and an argument
/// with spaces is kept whole since argv[0] may legitimately contain them.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |idx| idx + 1);
    let Some(bytes) = bytes.get(..end) else {
        return Vec::new();
    };
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// What /proc/PID/cgroup says about where a process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFacts {
    /// The cgroup v2 path (`0::/path`), or on cgroup v1 the `name=systemd`
    /// hierarchy's path.
    pub path: Option<String>,
    /// The innermost systemd `.service` or `.scope` in the path.
    pub unit: Option<String>,
    /// `runtime:id` when a container runtime's cgroup naming is recognised in
    /// any hierarchy: `docker:0123456789ab`, `podman:…`, `lxc:NAME`,
    /// `kubernetes:…` (container ids cut to the 12 characters `docker ps` shows).
    pub container: Option<String>,
}

/// Parses /proc/PID/cgroup (`hierarchy-id:controllers:path` per line).
///
/// The v2 line wins, unless it is just `/` while the v1 `name=systemd` line is
/// more specific (a hybrid host where systemd still uses v1 for tracking).
pub fn parse_cgroup(text: &str) -> CgroupFacts {
    let mut unified = None;
    let mut systemd_v1 = None;
    let mut container = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if controllers == "name=systemd" {
            systemd_v1 = Some(path);
        }
        if container.is_none() {
            container = container_hint(path);
        }
    }
    let path = match (unified, systemd_v1) {
        (Some("/"), Some(v1)) if v1 != "/" => Some(v1),
        (Some(v2), _) => Some(v2),
        (None, v1) => v1,
    };
    CgroupFacts {
        path: path.map(str::to_owned),
        unit: path.and_then(unit_from_cgroup),
        container,
    }
}

/// The systemd unit a cgroup path belongs to: its innermost `.service` or
/// `.scope` component. `/system.slice/redis-server.service` →
/// `redis-server.service`; `/user.slice/user-1000.slice/user@1000.service/app.slice/
/// syncthing.service` → `syncthing.service`.
pub fn unit_from_cgroup(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|component| component.ends_with(".service") || component.ends_with(".scope"))
        .map(str::to_owned)
}

/// Recognises the cgroup naming of docker, podman, lxc and kubernetes.
pub fn container_hint(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let scope_id = |component: &str, prefix: &str| {
        component
            .strip_prefix(prefix)?
            .strip_suffix(".scope")
            .filter(|id| is_container_id(id))
            .map(short)
    };

    if components.iter().any(|c| c.starts_with("kubepods")) {
        // The container's own cgroup, under the pod's: cri-containerd-ID.scope,
        // crio-ID.scope, docker-ID.scope (systemd driver) or a bare ID (cgroupfs).
        let id = components.iter().rev().find_map(|c| {
            scope_id(c, "cri-containerd-")
                .or_else(|| scope_id(c, "crio-"))
                .or_else(|| scope_id(c, "docker-"))
                .or_else(|| is_container_id(c).then(|| short(c)))
        });
        return Some(match id {
            Some(id) => format!("kubernetes:{id}"),
            None => "kubernetes".to_owned(),
        });
    }
    for (idx, component) in components.iter().enumerate() {
        if let Some(id) = scope_id(component, "docker-") {
            return Some(format!("docker:{id}"));
        }
        // libpod-conmon-ID.scope is podman's monitor, which runs outside the
        // container; is_container_id rejects the "conmon-" prefix.
        if let Some(id) = scope_id(component, "libpod-") {
            return Some(format!("podman:{id}"));
        }
        let next = components.get(idx + 1).copied();
        match (*component, next) {
            ("docker", Some(id)) if is_container_id(id) => {
                return Some(format!("docker:{}", short(id)));
            }
            ("libpod_parent", Some(next)) => {
                if let Some(id) = next
                    .strip_prefix("libpod-")
                    .filter(|id| is_container_id(id))
                {
                    return Some(format!("podman:{}", short(id)));
                }
            }
            ("lxc", Some(name)) => return Some(format!("lxc:{name}")),
            _ => {}
        }
        if let Some(name) = component.strip_prefix("lxc.payload.") {
            return Some(format!("lxc:{name}"));
        }
    }
    None
}

/// Container runtimes name containers by 64 hex characters.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS_PID1: &str = include_str!("../tests/fixtures/procs/status-pid1");
    const STATUS_CP: &str = include_str!("../tests/fixtures/procs/status-cp");

    #[test]
    fn status_of_real_processes() {
        let status = parse_status(STATUS_PID1).expect("pid 1 status parses");
        assert_eq!(
            status,
            StatusFacts {
                name: "process_api".to_owned(),
                ppid: 0,
                euid: 0,
            }
        );
        let status = parse_status(STATUS_CP).expect("cp status parses");
        assert_eq!(status.name, "cp");
        assert_eq!(status.euid, 0);
        assert!(status.ppid > 1);
    }

    #[test]
    fn status_takes_the_effective_uid_and_unescapes_the_name() {
        let text = "Name:\tmy\\\\tool\\nx y\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\nPid:\t812\nPPid:\t1\nUid:\t1000\t113\t113\t113\nGid:\t1000\t1000\t1000\t1000\n";
        let status = parse_status(text).expect("parses");
        assert_eq!(status.name, "my\\tool\nx y");
        assert_eq!(status.ppid, 1);
        assert_eq!(status.euid, 113);
    }

    #[test]
    fn status_keeps_a_carriage_return_ending_the_name() {
        // Caught by the host_proc fuzz target's round trip: the kernel escapes
        // only newline and backslash, so a comm of `foo\r` is printed as
        // `Name:\tfoo\r\n`.
        let status = parse_status("Name:\tfoo\r\nPPid:\t1\nUid:\t0\t7\t0\t0\n").expect("parses");
        assert_eq!(status.name, "foo\r");
        assert_eq!(status.euid, 7);
    }

    #[test]
    fn status_errors_name_the_field() {
        assert_eq!(
            parse_status("Name:\tx\nPPid:\t1\n"),
            Err(StatusError::Missing("Uid"))
        );
        assert_eq!(
            parse_status("Name:\tx\nPPid:\tone\nUid:\t0\t0\t0\t0\n").map_err(|e| e.to_string()),
            Err("bad `PPid:` value `one`".to_owned())
        );
        assert!(matches!(
            parse_status("Name:\tx\nPPid:\t1\nUid:\t0\n"),
            Err(StatusError::Bad { field: "Uid", .. })
        ));
    }

    #[test]
    fn cmdline_splits_on_nul_and_keeps_rewritten_titles() {
        assert_eq!(
            parse_cmdline(b"/usr/bin/redis-server\x00127.0.0.1:6379\0"),
            vec!["/usr/bin/redis-server", "127.0.0.1:6379"]
        );
        // nginx rewrites argv into one title padded with NULs.
        assert_eq!(
            parse_cmdline(b"nginx: master process /usr/sbin/nginx -g daemon off;\0\0\0\0\0\0"),
            vec!["nginx: master process /usr/sbin/nginx -g daemon off;"]
        );
        // A title without a terminating NUL.
        assert_eq!(
            parse_cmdline(b"postgres: checkpointer "),
            vec!["postgres: checkpointer "]
        );
        // An empty argument in the middle is a real argument.
        assert_eq!(parse_cmdline(b"sh\0-c\0\0x\0"), vec!["sh", "-c", "", "x"]);
        // Kernel threads have an empty cmdline.
        assert_eq!(parse_cmdline(b""), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"\0\0"), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"a\xffb\0"), vec!["a\u{fffd}b"]);
    }

    #[test]
    fn cgroup_v2_systemd_service() {
        let facts = parse_cgroup("0::/system.slice/redis-server.service\n");
        assert_eq!(
            facts.path.as_deref(),
            Some("/system.slice/redis-server.service")
        );
        assert_eq!(facts.unit.as_deref(), Some("redis-server.service"));
        assert_eq!(facts.container, None);
    }

    #[test]
    fn cgroup_v2_user_units() {
        let facts = parse_cgroup(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service\n",
        );
        assert_eq!(facts.unit.as_deref(), Some("syncthing.service"));
        let facts = parse_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(facts.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(
            parse_cgroup("0::/init.scope\n").unit.as_deref(),
            Some("init.scope")
        );
        assert_eq!(parse_cgroup("0::/\n").unit, None);
    }

    #[test]
    fn cgroup_v1_uses_the_systemd_hierarchy() {
        // Debian 10-era host on cgroup v1 (trimmed).
        let text = "12:pids:/system.slice/ssh.service\n\
                    11:memory:/system.slice/ssh.service\n\
                    4:cpu,cpuacct:/system.slice/ssh.service\n\
                    1:name=systemd:/system.slice/ssh.service\n";
        let facts = parse_cgroup(text);
        assert_eq!(facts.path.as_deref(), Some("/system.slice/ssh.service"));
        assert_eq!(facts.unit.as_deref(), Some("ssh.service"));
    }

    #[test]
    fn cgroup_hybrid_prefers_the_specific_hierarchy() {
        // This machine's own /proc/self/cgroup: v1 controllers plus an empty v2.
        let text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/f767e7e2e849f4784f772519d4147e08\n0::/\n";
        let facts = parse_cgroup(text);
        assert_eq!(facts.path.as_deref(), Some("/"));
        assert_eq!(facts.unit, None);
        let text = "1:name=systemd:/system.slice/cron.service\n0::/\n";
        assert_eq!(parse_cgroup(text).unit.as_deref(), Some("cron.service"));
        let text = "1:name=systemd:/system.slice/cron.service\n0::/system.slice/cron.service\n";
        assert_eq!(
            parse_cgroup(text).path.as_deref(),
            Some("/system.slice/cron.service")
        );
    }

    const ID: &str = "4f1e0ec9a5d2b3c74e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d";

    #[test]
    fn containers_are_recognised() {
        let facts = parse_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(facts.container.as_deref(), Some("docker:4f1e0ec9a5d2"));
        assert_eq!(facts.unit, Some(format!("docker-{ID}.scope")));

        let v1 = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(
            parse_cgroup(&v1).container.as_deref(),
            Some("docker:4f1e0ec9a5d2")
        );

        let podman = format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(
            parse_cgroup(&podman).container.as_deref(),
            Some("podman:4f1e0ec9a5d2")
        );
        let conmon = format!("0::/machine.slice/libpod-conmon-{ID}.scope\n");
        assert_eq!(parse_cgroup(&conmon).container, None);
        let cgroupfs_podman = format!("0::/libpod_parent/libpod-{ID}\n");
        assert_eq!(
            parse_cgroup(&cgroupfs_podman).container.as_deref(),
            Some("podman:4f1e0ec9a5d2")
        );

        assert_eq!(
            parse_cgroup("0::/lxc.payload.web1/system.slice/nginx.service\n")
                .container
                .as_deref(),
            Some("lxc:web1")
        );
        assert_eq!(
            parse_cgroup("0::/lxc.payload.web1/system.slice/nginx.service\n")
                .unit
                .as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            parse_cgroup("4:memory:/lxc/web1\n").container.as_deref(),
            Some("lxc:web1")
        );
        // The lxc monitor runs on the host side.
        assert_eq!(parse_cgroup("0::/lxc.monitor.web1\n").container, None);

        let k8s = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f7a.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            parse_cgroup(&k8s).container.as_deref(),
            Some("kubernetes:4f1e0ec9a5d2")
        );
        let k8s_v1 = format!("11:memory:/kubepods/besteffort/pod0f7a/{ID}\n");
        assert_eq!(
            parse_cgroup(&k8s_v1).container.as_deref(),
            Some("kubernetes:4f1e0ec9a5d2")
        );
        assert_eq!(
            parse_cgroup("0::/kubepods.slice\n").container.as_deref(),
            Some("kubernetes")
        );

        assert_eq!(
            parse_cgroup("0::/system.slice/docker.service\n").container,
            None
        );
        assert_eq!(
            parse_cgroup("0::/system.slice/docker-notanid.scope\n").container,
            None
        );
    }

    #[test]
    fn descriptor_and_exe_links() {
        assert_eq!(parse_socket_link(b"socket:[26452]"), Some(26452));
        assert_eq!(parse_socket_link(b"socket:[]"), None);
        assert_eq!(parse_socket_link(b"socket:[12"), None);
        assert_eq!(parse_socket_link(b"pipe:[26452]"), None);
        assert_eq!(parse_socket_link(b"/dev/null"), None);
        assert_eq!(parse_socket_link(b"socket:[99999999999999999999999]"), None);
        assert_eq!(
            parse_exe_link(b"/usr/bin/redis-server (deleted)"),
            (PathBuf::from("/usr/bin/redis-server"), true)
        );
        assert_eq!(
            parse_exe_link(b"/usr/bin/python3.11"),
            (PathBuf::from("/usr/bin/python3.11"), false)
        );
    }

    #[test]
    fn owners_are_found_by_inode() {
        let owner = |pid, fd| SocketOwner { pid, fd };
        let walk = ProcessWalk {
            socket_fds: vec![
                (5, owner(10, 3)),
                (7, owner(10, 4)),
                (7, owner(11, 4)),
                (7, owner(12, 4)),
                (9, owner(12, 5)),
            ],
            ..ProcessWalk::default()
        };
        assert_eq!(
            walk.owners_of(7).collect::<Vec<_>>(),
            vec![owner(10, 4), owner(11, 4), owner(12, 4)]
        );
        assert_eq!(walk.owners_of(8).count(), 0);
        assert_eq!(walk.owners_of(100).count(), 0);
        assert!(walk.fully_privileged());
    }

    #[test]
    fn denials_name_the_missing_capability_or_the_sandbox() {
        let status = include_str!("../tests/fixtures/procs/status-cp");
        // This machine's root session lacks only CAP_SYS_RESOURCE (bit 24).
        assert_eq!(
            parse_effective_capabilities(status),
            Some(0x0000_01ff_feff_ffff)
        );
        assert_eq!(parse_effective_capabilities("Name:\tx\n"), None);

        let unprivileged = ProcessWalk {
            n_fd_dirs_denied: 3,
            n_links_denied: 5,
            effective_capabilities: Some(0),
            ..ProcessWalk::default()
        };
        assert_eq!(
            unprivileged.denial_reason(),
            "needs CAP_DAC_READ_SEARCH; needs CAP_SYS_PTRACE"
        );
        assert!(unprivileged.denial_hint().starts_with("run as root"));

        // Root confined by a security module: links refused despite CAP_SYS_PTRACE.
        let sandboxed = ProcessWalk {
            n_links_denied: 1,
            effective_capabilities: parse_effective_capabilities(status),
            ..ProcessWalk::default()
        };
        assert_eq!(
            sandboxed.denial_reason(),
            "refused although CAP_SYS_PTRACE is held"
        );
        assert!(
            sandboxed
                .denial_hint()
                .starts_with("run outside the sandbox")
        );
        assert!(!sandboxed.fully_privileged());
    }

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
