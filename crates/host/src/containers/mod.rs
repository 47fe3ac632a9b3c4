//! The containers this host's runtimes know, each from the runtime's own
//! state on disk, read-only: Docker's (docker.rs: its data root's
//! `containers/<id>/` directories), Podman's (podman.rs:
//! containers/storage's `containers.json` and `images.json`, each
//! container's `userdata`, and the conmon that monitors it) and
//! containerd's, Kubernetes' among them (containerd.rs: each running task's
//! bundle, its OCI spec and first process, and the image from containerd's
//! metadata database, a bbolt file bolt.rs reads) and LXC's (lxc.rs: each
//! container's monitor, configuration and own package database).
//!
//! The runtimes' API sockets would give the same facts, but asking one means
//! speaking to a root daemon that can also start containers (or, for Podman,
//! running `podman`, which takes the store's locks and may write to it); the
//! files need no more than read access and cannot change anything. Every file
//! is untrusted input: sizes are capped, and a file that does not parse is a
//! problem of its own, not the end of the audit.

mod bolt;
mod containerd;
mod docker;
mod lxc;
mod podman;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perimeter_model::{Container, Problem, Process};

pub use bolt::{Bolt, BoltError};
pub use containerd::{
    containerd_containers, image_from_metadata, overlay_upper_dir, parse_containerd_config_root,
    parse_containerd_config_state,
};
pub use docker::docker_containers;
pub use lxc::{
    LxcConfig, lxc_containers, parse_lxc_conf_lxcpath, parse_lxc_config, parse_monitor_title,
    rootfs_dir,
};
pub use podman::{
    parse_fib_trie_local, parse_if_inet6_global, parse_storage_conf, podman_containers,
};

/// The largest state file read (a container's or its host configuration).
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// The most containers read from one data root or store.
const MAX_CONTAINERS: usize = 10_000;

/// Every runtime's containers: Docker's, then Podman's, then containerd's
/// (outside Docker's namespace), then LXC's; containerd's name their
/// processes (whose cgroups do not), which is the one change made to
/// `processes`.
pub fn containers(
    processes: &mut BTreeMap<u32, Process>,
    fs_root: &Path,
    proc_root: &Path,
) -> (Vec<Container>, Vec<Problem>) {
    let (mut containers, mut problems) = docker_containers(processes, fs_root);
    let (podman, podman_problems) = podman_containers(processes, fs_root, proc_root);
    containers.extend(podman);
    problems.extend(podman_problems);
    let (containerd, containerd_problems) = containerd_containers(processes, fs_root, proc_root);
    containers.extend(containerd);
    problems.extend(containerd_problems);
    let (lxc, lxc_problems) = lxc_containers(processes, fs_root, proc_root);
    containers.extend(lxc);
    problems.extend(lxc_problems);
    containerd::claim_processes(processes, &containers);
    (containers, problems)
}

/// The value of `--flag VALUE` or `--flag=VALUE` in a command line.
fn flag_value<'a>(cmdline: &'a [String], names: &[&str]) -> Option<&'a str> {
    let mut args = cmdline.iter();
    while let Some(arg) = args.next() {
        if let Some((name, value)) = arg.split_once('=')
            && names.contains(&name)
        {
            return Some(value);
        }
        if names.contains(&arg.as_str()) {
            return args.next().map(String::as_str);
        }
    }
    None
}

/// `path` under `fs_root` (an image or a mounted root; `/` normally).
fn rooted(fs_root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix("/") {
        Ok(relative) => fs_root.join(relative),
        Err(_) => fs_root.join(path),
    }
}

/// Container runtimes name containers (and containers/storage its layers
/// and images) by 64 hex characters.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The parts of the OCI runtime spec a runtime hands runc that say what a
/// container may do: Podman's `userdata/config.json`, a containerd task's
/// bundle.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciSpec {
    process: OciProcess,
    annotations: BTreeMap<String, String>,
    mounts: Vec<OciMount>,
    linux: OciLinux,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciProcess {
    capabilities: OciCapabilities,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciCapabilities {
    bounding: Vec<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciMount {
    source: String,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciLinux {
    namespaces: Vec<OciNamespace>,
    #[serde(rename = "maskedPaths")]
    masked_paths: Vec<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OciNamespace {
    #[serde(rename = "type")]
    kind: String,
}

impl OciSpec {
    /// No network namespace of its own: the host's network, or its
    /// runtime's.
    fn host_network(&self) -> bool {
        !self.linux.namespaces.iter().any(|ns| ns.kind == "network")
    }
}

/// A container runtime's API socket, by the name each runtime gives it:
/// mounted into a container, it hands the container its host.
fn is_runtime_socket(path: &str) -> bool {
    ["docker.sock", "podman.sock", "containerd.sock", "crio.sock"]
        .iter()
        .any(|socket| {
            path.strip_suffix(socket)
                .is_some_and(|dir| dir.ends_with('/'))
        })
}

/// The entries of a runtime's state directory (none when it does not
/// exist), or the problem of listing it (`what`: `Podman's storage`).
fn list_dir(dir: &Path, what: &str, problems: &mut Vec<Problem>) -> Vec<std::fs::DirEntry> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            problems.push(
                Problem::new(
                    dir.display().to_string(),
                    format!("cannot list {what}: {err}"),
                )
                .with_hint("run as root to see which container holds a port"),
            );
            Vec::new()
        }
    }
}

/// A JSON state file, or the type's default when the file does not exist.
fn read_json<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    what: &'static str,
) -> Result<T, String> {
    read_json_capped(path, what, MAX_STATE_BYTES)
}

fn read_json_capped<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    what: &'static str,
    cap: u64,
) -> Result<T, String> {
    if !path.exists() {
        return Ok(T::default());
    }
    let bytes = perimeter_files::read_bytes(path, what, cap).map_err(|err| err.to_string())?;
    serde_json::from_slice(&bytes)
        .map_err(|err| format!("{}: {what} does not parse: {err}", path.display()))
}

/// A root process of `/usr/bin/COMM`, child of init, in network namespace
/// 4026532000, for the runtimes' tests.
#[cfg(test)]
fn test_process(pid: u32, comm: &str, cmdline: &str) -> Process {
    Process {
        pid,
        ppid: 1,
        comm: comm.into(),
        cmdline: cmdline.split_whitespace().map(str::to_owned).collect(),
        uid: 0,
        account: None,
        exe: Some(PathBuf::from(format!("/usr/bin/{comm}"))),
        exe_deleted: false,
        cwd: None,
        cgroup: None,
        unit: None,
        container: None,
        netns_inode: Some(4026532000),
        ownership: perimeter_model::Ownership::NotChecked,
    }
}
