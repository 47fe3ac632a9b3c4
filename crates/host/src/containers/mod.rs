//! The containers this host's runtimes know, each from the runtime's own
//! state on disk, read-only: Docker's (docker.rs: its data root's
//! `containers/<id>/` directories), Podman's (podman.rs:
//! containers/storage's `containers.json` and `images.json`, each
//! container's `userdata`, and the conmon that monitors it) and
//! containerd's, Kubernetes' among them (containerd.rs: each running task's
//! bundle, its OCI spec and first process).
//!
//! The runtimes' API sockets would give the same facts, but asking one means
//! speaking to a root daemon that can also start containers (or, for Podman,
//! running `podman`, which takes the store's locks and may write to it); the
//! files need no more than read access and cannot change anything. Every file
//! is untrusted input: sizes are capped, and a file that does not parse is a
//! problem of its own, not the end of the audit.

mod containerd;
mod docker;
mod podman;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perimeter_model::{Container, Problem, Process};

pub use containerd::containerd_containers;
pub use docker::docker_containers;
pub use podman::{parse_fib_trie_local, parse_if_inet6_global, podman_containers};

/// The largest state file read (a container's or its host configuration).
const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;
/// The most containers read from one data root or store.
const MAX_CONTAINERS: usize = 10_000;

/// Every runtime's containers: Docker's, then Podman's, then containerd's
/// (outside Docker's namespace); containerd's name their processes (whose
/// cgroups do not), which is the one change made to `processes`.
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
