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
//!
//! `walk.rs` is the walk itself (directory descriptors, reused buffers, the
//! walker threads); `parse.rs` and `cgroup.rs` are pure parsers of what it
//! reads: `status`, `cmdline` and the descriptor and `exe` links, and
//! `cgroup` with the systemd unit and container runtime it names. This file
//! holds the walk's result, [`ProcessWalk`], and what its refusals mean.

use std::collections::BTreeMap;

use perimeter_model::{Problem, Process, SocketOwner};

mod cgroup;
mod parse;
mod walk;

pub use cgroup::{CgroupFacts, container_hint, parse_cgroup, unit_from_cgroup};
pub use parse::{
    StatusError, StatusFacts, parse_cmdline, parse_effective_capabilities, parse_exe_link,
    parse_socket_link, parse_status,
};
pub use walk::walk_processes;

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let status = include_str!("../../tests/fixtures/procs/status-cp");
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
}
