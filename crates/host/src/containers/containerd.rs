//! The containers containerd runs, from the bundles its runtime v2 shims
//! keep, read-only; no `ctr` or `crictl` is run (each speaks to a root
//! daemon that can also start containers).
//!
//! A running containerd keeps each running task's bundle under its state
//! directory (`/run/containerd` unless `--state`, or `state` in the
//! configuration `--config` names, says otherwise), at
//! `io.containerd.runtime.v2.task/<namespace>/<id>/`: `config.json`, the
//! OCI runtime spec handed to runc (annotations, mounts, capabilities,
//! namespaces), and `init.pid`, the container's first process. The state
//! directories are found from each running containerd's flags and
//! configuration, from each shim's working directory (a shim runs in its
//! task's bundle) and the default one. Kubernetes' containers are
//! containerd's too: the CRI plugin annotates their specs with the pod
//! (`io.kubernetes.cri.sandbox-name`, `-namespace`), the container's name
//! and type and the image. Docker's containers run in containerd's `moby`
//! namespace and are read from Docker's own state instead.
//!
//! The image of a container whose spec does not name it (a plain `ctr run`
//! container) is in containerd's metadata database, a bbolt file under its
//! root directory (`/var/lib/containerd` unless `--root`, or `root` in the
//! configuration, says otherwise) at `io.containerd.metadata.v1.bolt/meta.db`:
//! `v1/<namespace>/containers/<id>/image` names the image, and
//! `v1/<namespace>/images/<image>/target/digest` is its manifest's digest.
//! The file is read whole, without containerd's lock, by bolt.rs; the meta
//! pages are read again afterwards, and a copy taken while a transaction
//! committed is read again (see `read_meta_db`). A container's writable
//! layer is found from the mount table of its first process (overlay's
//! `upperdir`), not from the snapshots in that database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use perimeter_model::{Container, Pod, Problem, Process};

use super::bolt::{Bolt, BoltError};
use super::{MAX_CONTAINERS, OciSpec, flag_value, is_runtime_socket, list_dir, read_json, rooted};

/// containerd's state directory when it is given none.
const DEFAULT_STATE: &str = "/run/containerd";
/// containerd's root directory when it is given none.
const DEFAULT_ROOT: &str = "/var/lib/containerd";
/// containerd's metadata database, under its root directory.
const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
/// The largest metadata database read: a host with thousands of images and
/// containers keeps a few tens of MiB.
const MAX_META_DB_BYTES: u64 = 256 * 1024 * 1024;
/// How often a metadata database that changed while it was read is read
/// again.
const META_DB_READS: usize = 3;
/// The longest image name or digest taken from the metadata database.
const MAX_IMAGE_NAME: usize = 4096;
/// The configuration containerd reads when it is given none.
const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
/// Where the runtime v2 shims keep their bundles, under the state directory.
const TASK_DIR: &str = "io.containerd.runtime.v2.task";
/// The namespace dockerd runs its containers in: read from Docker's state.
const DOCKER_NAMESPACE: &str = "moby";
/// The runtime name containerd's containers are reported under.
const RUNTIME: &str = "containerd";
/// The largest containerd configuration read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The largest mount table read for a container's writable layer.
const MAX_MOUNTINFO_BYTES: u64 = 4 * 1024 * 1024;
/// The most state directories read.
const MAX_STATE_DIRS: usize = 64;
/// The most namespaces read in one state directory.
const MAX_NAMESPACES: usize = 1024;
/// How far up its parents a process is followed to its container's first
/// process.
const MAX_ANCESTRY: usize = 64;

/// The top-level keys of containerd's TOML configuration that say where
/// its directories are.
#[derive(Default, serde::Deserialize)]
struct ConfigDirs {
    state: Option<String>,
    root: Option<String>,
}

fn parse_config_dirs(text: &str) -> ConfigDirs {
    toml::from_str(text).unwrap_or_default()
}

fn absolute(path: Option<String>) -> Option<PathBuf> {
    path.filter(|path| path.starts_with('/')).map(PathBuf::from)
}

/// The state directory containerd's TOML configuration sets (`state =
/// "..."`, a top-level key), when it is an absolute path. A file the `toml`
/// crate cannot read leaves the default.
pub fn parse_containerd_config_state(text: &str) -> Option<PathBuf> {
    absolute(parse_config_dirs(text).state)
}

/// The root directory containerd's TOML configuration sets (`root =
/// "..."`, a top-level key), when it is an absolute path.
pub fn parse_containerd_config_root(text: &str) -> Option<PathBuf> {
    absolute(parse_config_dirs(text).root)
}

/// containerd's identifiers (namespaces and container ids): alphanumeric
/// runs joined by single `.`, `_` or `-`, at most 76 characters. Anything
/// else found in a state directory is not containerd's, and never becomes
/// part of a path.
fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 76
        && text
            .split(['.', '_', '-'])
            .all(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The state directory a shim's bundle (its working directory) lies in:
/// `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`.
fn state_of_bundle(bundle: &Path) -> Option<PathBuf> {
    let namespace_dir = bundle.parent()?;
    let task_dir = namespace_dir.parent()?;
    let is_bundle = bundle.file_name()?.to_str().is_some_and(is_identifier)
        && namespace_dir
            .file_name()?
            .to_str()
            .is_some_and(is_identifier)
        && task_dir.file_name()? == TASK_DIR;
    is_bundle.then(|| task_dir.parent().map(Path::to_path_buf))?
}

/// A running containerd's state and root directories: its flags, else its
/// configuration's keys, else the defaults.
fn daemon_dirs(process: &Process, fs_root: &Path) -> (PathBuf, PathBuf) {
    let state = flag_value(&process.cmdline, &["--state"]).map(PathBuf::from);
    let root = flag_value(&process.cmdline, &["--root"]).map(PathBuf::from);
    let configured = if state.is_some() && root.is_some() {
        ConfigDirs::default()
    } else {
        let config = flag_value(&process.cmdline, &["--config", "-c"]).unwrap_or(DEFAULT_CONFIG);
        perimeter_files::read_text(
            &rooted(fs_root, Path::new(config)),
            "containerd's configuration",
            MAX_CONFIG_BYTES,
        )
        .map(|text| parse_config_dirs(&text))
        .unwrap_or_default()
    };
    (
        state
            .or_else(|| absolute(configured.state))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE)),
        root.or_else(|| absolute(configured.root))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
    )
}

/// Every state directory to read, each with the root directory of the
/// containerd that keeps it, when known: each running containerd's, each
/// shim's (whose daemon may not be seen: no root then), and the default one
/// when it exists (with the default root when no running containerd claims
/// it).
fn state_dirs(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
) -> BTreeMap<PathBuf, Option<PathBuf>> {
    let mut dirs = BTreeMap::new();
    for process in processes.values() {
        let name = process.name();
        let (dir, root) = if name == "containerd" {
            let (state, root) = daemon_dirs(process, fs_root);
            (Some(state), Some(root).filter(|root| root.is_absolute()))
        } else if name.starts_with("containerd-shim") {
            (process.cwd.as_deref().and_then(state_of_bundle), None)
        } else {
            (None, None)
        };
        if let Some(dir) = dir.filter(|dir| dir.is_absolute())
            && (dirs.len() < MAX_STATE_DIRS || dirs.contains_key(&dir))
        {
            let known: &mut Option<PathBuf> = dirs.entry(dir).or_default();
            if known.is_none() {
                *known = root;
            }
        }
    }
    if rooted(fs_root, Path::new(DEFAULT_STATE))
        .join(TASK_DIR)
        .is_dir()
    {
        let known = dirs.entry(PathBuf::from(DEFAULT_STATE)).or_default();
        if known.is_none() {
            *known = Some(PathBuf::from(DEFAULT_ROOT));
        }
    }
    dirs
}

/// The sorted identifiers among a directory's subdirectories (none when it
/// does not exist), or the problem of listing it.
fn list_identifiers(dir: &Path, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut names: Vec<String> = list_dir(dir, "containerd's tasks", problems)
        .into_iter()
        // Directories only, and not through a link: a bundle elsewhere is
        // not containerd's.
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| is_identifier(name))
        .collect();
    names.sort();
    names
}

/// The writable layer of a container's root file system from its first
/// process's mount table: the `upperdir` of the overlay mounted on `/`.
/// A path with mountinfo's escapes (a space, a newline) is not guessed at.
pub fn overlay_upper_dir(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if mount.split(' ').nth(4)? != "/" {
            return None;
        }
        let mut fs = fs.split(' ');
        if fs.next()? != "overlay" {
            return None;
        }
        let options = fs.nth(1)?;
        options
            .split(',')
            .find_map(|option| option.strip_prefix("upperdir="))
            .filter(|dir| dir.starts_with('/') && !dir.contains('\\'))
            .map(PathBuf::from)
    })
}

/// A CRI annotation's value, when it is there and not empty.
fn annotation<'a>(spec: &'a OciSpec, key: &str) -> Option<&'a str> {
    spec.annotations
        .get(key)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// The pod a CRI container belongs to.
fn pod_of(spec: &OciSpec) -> Option<Pod> {
    let name = annotation(spec, "io.kubernetes.cri.sandbox-name")?;
    let namespace = annotation(spec, "io.kubernetes.cri.sandbox-namespace").unwrap_or_default();
    let sandbox = annotation(spec, "io.kubernetes.cri.container-type") == Some("sandbox");
    Some(Pod {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        container: annotation(spec, "io.kubernetes.cri.container-name")
            .filter(|_| !sandbox)
            .map(str::to_owned),
        sandbox,
    })
}

/// Where one task's bundle is, as the host sees it and as the shim does.
struct Bundle<'a> {
    state: &'a Path,
    namespace: &'a str,
    id: &'a str,
}

impl Bundle<'_> {
    fn path(&self) -> PathBuf {
        self.state.join(TASK_DIR).join(self.namespace).join(self.id)
    }
}

/// The task's first process from `init.pid`, when a process of that pid
/// runs and is the container's: its parent, the shim, works in the bundle,
/// or its cgroup names the container (a reused pid is neither).
fn init_process<'a>(
    processes: &'a BTreeMap<u32, Process>,
    dir: &Path,
    bundle: &Bundle<'_>,
) -> Option<&'a Process> {
    let pid = perimeter_files::read_text(&dir.join("init.pid"), "a task's pid file", 64)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()?;
    let process = processes.get(&pid)?;
    let shim_in_bundle = processes
        .get(&process.ppid)
        .and_then(|shim| shim.cwd.as_deref())
        .map(|cwd| cwd == bundle.path());
    let cgroup_names_it = process
        .cgroup
        .as_deref()
        .map(|cgroup| cgroup.contains(bundle.id));
    match (shim_in_bundle, cgroup_names_it) {
        (None, None) => Some(process),
        (shim, cgroup) => (shim == Some(true) || cgroup == Some(true)).then_some(process),
    }
}

/// One task's container, from its bundle directory.
fn read_bundle(
    bundle: &Bundle<'_>,
    fs_root: &Path,
    proc_root: &Path,
    processes: &BTreeMap<u32, Process>,
    problems: &mut Vec<Problem>,
) -> Container {
    let dir = rooted(fs_root, &bundle.path());
    let spec = match read_json::<Option<OciSpec>>(
        &dir.join("config.json"),
        "a containerd task's runtime configuration",
    ) {
        Ok(spec) => spec,
        Err(message) => {
            problems.push(Problem::new(
                format!("containerd container {}/{}", bundle.namespace, bundle.id),
                message,
            ));
            None
        }
    };
    let init = init_process(processes, &dir, bundle);
    let shim = init.and_then(|init| processes.get(&init.ppid));
    let pid = init.map(|init| init.pid);
    // A network namespace joined by path may be the runtime's own (the
    // host's): a container sharing its shim's network is on the host's.
    let shares_shims_network = match (init, shim) {
        (Some(init), Some(shim)) => {
            init.netns_inode.is_some() && init.netns_inode == shim.netns_inode
        }
        _ => false,
    };
    let network_mode = match &spec {
        None => "",
        Some(spec) if spec.host_network() => "host",
        Some(_) if shares_shims_network => "host",
        Some(_) => "private",
    };
    let addresses = match pid {
        Some(pid) if network_mode == "private" => super::podman::netns_addresses(proc_root, pid),
        _ => Vec::new(),
    };
    let writable_layer = pid
        .and_then(|pid| {
            perimeter_files::read_text(
                &proc_root.join(pid.to_string()).join("mountinfo"),
                "a container's mount table",
                MAX_MOUNTINFO_BYTES,
            )
            .ok()
        })
        .and_then(|text| overlay_upper_dir(&text))
        .map(|dir| rooted(fs_root, &dir))
        .filter(|dir| dir.is_dir());
    let spec = spec.unwrap_or_default();
    let pod = pod_of(&spec);
    let name = match &pod {
        Some(pod) if pod.sandbox => Some(pod.name.clone()),
        Some(pod) => pod.container.clone(),
        None => None,
    }
    .unwrap_or_else(|| bundle.id.to_owned());
    Container {
        runtime: RUNTIME.to_owned(),
        id: bundle.id.to_owned(),
        namespace: Some(bundle.namespace.to_owned()),
        name,
        image: annotation(&spec, "io.kubernetes.cri.image-name")
            .unwrap_or_default()
            .to_owned(),
        image_id: String::new(),
        image_digest: None,
        running: pid.is_some(),
        pid,
        addresses,
        // What `--privileged` gives (Docker's, the CRI's, `ctr run
        // --privileged`): every capability, CAP_SYS_ADMIN among them, and
        // none of /proc's sensitive files masked.
        privileged: spec
            .process
            .capabilities
            .bounding
            .iter()
            .any(|cap| cap == "CAP_SYS_ADMIN")
            && spec.linux.masked_paths.is_empty(),
        pod,
        network_mode: network_mode.to_owned(),
        runtime_socket_mounted: spec.mounts.iter().any(|m| is_runtime_socket(&m.source)),
        writable_layer,
        drift: Vec::new(),
        published: Vec::new(),
        daemon_netns: shim.and_then(|shim| shim.netns_inode),
    }
}

/// Text from the metadata database fit to print and compare: UTF-8, not
/// empty, not too long, without control characters.
fn metadata_text(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    (!text.is_empty() && text.len() <= MAX_IMAGE_NAME && !text.chars().any(char::is_control))
        .then(|| text.to_owned())
}

/// An OCI digest (`sha256:...`): an algorithm of lowercase letters, digits
/// and `+._-`, a colon, and an encoded part of letters, digits and `=_-`.
fn is_digest(text: &str) -> bool {
    text.split_once(':').is_some_and(|(algorithm, encoded)| {
        !algorithm.is_empty()
            && !encoded.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    })
}

/// The image container `id` of `namespace` was made from, as containerd's
/// metadata database records it (`v1/NAMESPACE/containers/ID/image`), and
/// its manifest's digest (`v1/NAMESPACE/images/IMAGE/target/digest`) when
/// the image is still there. `None` when the container has no image (made
/// from a directory with `--rootfs`) or is not in the database.
pub fn image_from_metadata(
    bolt: &Bolt<'_>,
    namespace: &str,
    id: &str,
) -> Result<Option<(String, Option<String>)>, BoltError> {
    let container = [
        &b"v1"[..],
        namespace.as_bytes(),
        b"containers",
        id.as_bytes(),
    ];
    let Some(image) = bolt.get(&container, b"image")?.and_then(metadata_text) else {
        return Ok(None);
    };
    let target = [
        &b"v1"[..],
        namespace.as_bytes(),
        b"images",
        image.as_bytes(),
        b"target",
    ];
    let digest = bolt
        .get(&target, b"digest")?
        .and_then(metadata_text)
        .filter(|digest| is_digest(digest));
    Ok(Some((image, digest)))
}

/// The first `len` bytes of a file (fewer when it is shorter).
fn read_prefix(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut prefix = Vec::new();
    std::fs::File::open(path)?
        .take(u64::try_from(len).unwrap_or(u64::MAX))
        .read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// containerd's metadata database, whole, as of one committed transaction;
/// `None` when there is none. containerd writes it while it runs, and its
/// lock is not taken: the file is read whole, then its meta pages again.
/// When they did not change, no transaction committed meanwhile, and the
/// pages the copy's latest meta reaches were not reused (bbolt reuses a
/// page only two commits after the one that freed it); when they did, the
/// file is read again, a few times at most.
fn read_meta_db(path: &Path) -> Result<Option<Vec<u8>>, String> {
    for _ in 0..META_DB_READS {
        let bytes = match perimeter_files::read_bytes(
            path,
            "containerd's metadata database",
            MAX_META_DB_BYTES,
        ) {
            Ok(bytes) => bytes,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(err.to_string()),
        };
        let bolt = Bolt::parse(&bytes)
            .map_err(|err| format!("containerd's metadata database does not read: {err}"))?;
        let again = read_prefix(path, bolt.metas_len())
            .map_err(|err| format!("{}: {err}", path.display()))?;
        if bolt.same_metas(&again) {
            return Ok(Some(bytes));
        }
    }
    Err(format!(
        "containerd's metadata database changed each of the {META_DB_READS} times it was read"
    ))
}

/// The metadata databases read so far, by containerd root: each is read
/// once, and one that cannot be read is one problem.
#[derive(Default)]
struct MetaDbs {
    by_root: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl MetaDbs {
    /// Fills in the image of a container whose bundle does not name it, and
    /// the digest of its image, from the metadata database of its
    /// containerd's root.
    fn fill_image(
        &mut self,
        container: &mut Container,
        root: &Path,
        fs_root: &Path,
        problems: &mut Vec<Problem>,
    ) {
        let path = rooted(fs_root, root).join(META_DB);
        let bytes =
            self.by_root
                .entry(root.to_owned())
                .or_insert_with(|| match read_meta_db(&path) {
                    Ok(bytes) => bytes,
                    Err(message) => {
                        problems.push(Problem::new(path.display().to_string(), message));
                        None
                    }
                });
        let Some(bytes) = bytes.as_deref() else {
            return;
        };
        let namespace = container.namespace.as_deref().unwrap_or_default();
        let found = Bolt::parse(bytes)
            .and_then(|bolt| image_from_metadata(&bolt, namespace, &container.id));
        match found {
            Ok(Some((image, digest))) => {
                // The bundle's own word (a pod's annotation) stands; the
                // digest is of the image containerd made the container from.
                if container.image.is_empty() {
                    container.image = image;
                }
                if container.image_digest.is_none() {
                    container.image_digest = digest;
                }
            }
            Ok(None) => {}
            Err(err) => {
                problems.push(Problem::new(
                    path.display().to_string(),
                    format!("containerd's metadata database does not read: {err}"),
                ));
                // One problem for the file: its other containers are not
                // looked up.
                self.by_root.insert(root.to_owned(), None);
            }
        }
    }
}

/// containerd's running containers outside Docker's namespace, and what
/// could not be read.
pub fn containerd_containers(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
    proc_root: &Path,
) -> (Vec<Container>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    let mut meta_dbs = MetaDbs::default();
    for (state, root) in state_dirs(processes, fs_root) {
        let tasks = rooted(fs_root, &state).join(TASK_DIR);
        let mut namespaces = list_identifiers(&tasks, &mut problems);
        namespaces.retain(|namespace| namespace != DOCKER_NAMESPACE);
        namespaces.truncate(MAX_NAMESPACES);
        for namespace in namespaces {
            for id in list_identifiers(&tasks.join(&namespace), &mut problems) {
                if containers.len() >= MAX_CONTAINERS {
                    problems.push(Problem::new(
                        tasks.display().to_string(),
                        format!(
                            "more than {MAX_CONTAINERS} containerd tasks; the rest were not read"
                        ),
                    ));
                    return (containers, problems);
                }
                let bundle = Bundle {
                    state: &state,
                    namespace: &namespace,
                    id: &id,
                };
                let mut container =
                    read_bundle(&bundle, fs_root, proc_root, processes, &mut problems);
                // The database also gives the digest a Kubernetes
                // container's annotations do not.
                if let Some(root) = &root
                    && (container.image.is_empty() || container.image_digest.is_none())
                {
                    meta_dbs.fill_image(&mut container, root, fs_root, &mut problems);
                }
                containers.push(container);
            }
        }
    }
    (containers, problems)
}

/// The hint (`containerd:NAMESPACE/ID`) that ties a process to a
/// containerd container: containerd's cgroups (`/<namespace>/<id>` by
/// default) are not recognisable from their names alone, so its processes
/// are named from the containers' first processes instead. A process is a
/// container's when it is its first process, shares its cgroup (whose path
/// names the container: not a cgroup the container was merely put in), or
/// descends from it; failing those, when it lives in the container's own
/// network namespace (a pod's containers share their sandbox's, which is
/// then preferred). A process another runtime's state already names
/// (Docker's, Podman's) is left to it.
pub(super) fn claim_processes(processes: &mut BTreeMap<u32, Process>, containers: &[Container]) {
    let hint = |c: &Container| {
        format!(
            "{RUNTIME}:{}/{}",
            c.namespace.as_deref().unwrap_or_default(),
            c.id
        )
    };
    let mut by_init: BTreeMap<u32, String> = BTreeMap::new();
    let mut by_cgroup: BTreeMap<&str, String> = BTreeMap::new();
    let mut by_netns: BTreeMap<u64, (bool, String)> = BTreeMap::new();
    for container in containers.iter().filter(|c| c.runtime == RUNTIME) {
        let Some(init) = container.pid.and_then(|pid| processes.get(&pid)) else {
            continue;
        };
        by_init.insert(init.pid, hint(container));
        if let Some(cgroup) = init.cgroup.as_deref()
            && cgroup
                .rsplit('/')
                .next()
                .is_some_and(|leaf| leaf.contains(container.id.as_str()))
        {
            by_cgroup.insert(cgroup, hint(container));
        }
        if container.network_mode == "private"
            && let Some(netns) = init.netns_inode
        {
            let sandbox = container.pod.as_ref().is_some_and(|pod| pod.sandbox);
            let entry = by_netns.entry(netns).or_insert((sandbox, hint(container)));
            if sandbox && !entry.0 {
                *entry = (true, hint(container));
            }
        }
    }
    if by_init.is_empty() {
        return;
    }
    let others_claim = |process: &Process| {
        process
            .container
            .as_deref()
            .and_then(|hint| hint.split_once(':'))
            .is_some_and(|(runtime, id)| {
                containers
                    .iter()
                    .any(|c| c.runtime != RUNTIME && c.answers_to_hint(runtime, id))
            })
    };
    let mut claims = Vec::new();
    for process in processes.values() {
        if others_claim(process) {
            continue;
        }
        let mut ancestor = Some(process);
        let mut by_ancestry = None;
        for _ in 0..MAX_ANCESTRY {
            let Some(current) = ancestor else { break };
            if let Some(hint) = by_init.get(&current.pid) {
                by_ancestry = Some(hint);
                break;
            }
            if current.ppid <= 1 || current.ppid == current.pid {
                break;
            }
            ancestor = processes.get(&current.ppid);
        }
        let claim = process
            .cgroup
            .as_deref()
            .and_then(|cgroup| by_cgroup.get(cgroup))
            .or(by_ancestry)
            .or_else(|| {
                process
                    .netns_inode
                    .and_then(|netns| by_netns.get(&netns))
                    .map(|(_, hint)| hint)
            });
        if let Some(hint) = claim {
            claims.push((process.pid, hint.clone()));
        }
    }
    for (pid, hint) in claims {
        if let Some(process) = processes.get_mut(&pid) {
            process.container = Some(hint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRI_ID: &str = "9c6c1f0a55e7b35c4d8f60d2e1b6a8f3c0b1a2d3e4f5061728394a5b6c7d8e9f";
    const SANDBOX_ID: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";

    /// A process of the host's network namespace.
    fn process(pid: u32, ppid: u32, comm: &str, cmdline: &str) -> Process {
        Process {
            ppid,
            netns_inode: Some(4026531840),
            ..super::super::test_process(pid, comm, cmdline)
        }
    }

    /// A CRI-shaped spec, as containerd's CRI plugin writes it for a pod's
    /// container (trimmed to what is read, plus some of what is not).
    fn cri_spec(kind: &str, name: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2-dev",
              "process":{{"user":{{"uid":0,"gid":0}},"args":["/pause"],
                "capabilities":{{"bounding":["CAP_CHOWN","CAP_NET_BIND_SERVICE"]}}}},
              "root":{{"path":"rootfs"}},
              "mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},
                        {{"destination":"/var/run/docker.sock","type":"bind","source":"/var/run/docker.sock"}}],
              "annotations":{{
                "io.kubernetes.cri.container-type":"{kind}",
                "io.kubernetes.cri.container-name":"{name}",
                "io.kubernetes.cri.image-name":"registry.example/web:1.2",
                "io.kubernetes.cri.sandbox-id":"{SANDBOX_ID}",
                "io.kubernetes.cri.sandbox-name":"web-7d9f8-abcde",
                "io.kubernetes.cri.sandbox-namespace":"shop"}},
              "linux":{{"namespaces":[{{"type":"pid"}},{{"type":"ipc","path":"/proc/4100/ns/ipc"}},
                {{"type":"network","path":"/var/run/netns/cni-1234"}}],
                "maskedPaths":["/proc/kcore"]}}}}"#
        )
    }

    /// What `ctr run --net-host --privileged` writes: no network namespace,
    /// every capability, nothing masked.
    const CTR_SPEC: &str = r#"{"ociVersion":"1.0.2-dev",
        "process":{"args":["/bin/busybox","httpd","-f","-p","8080"],
          "capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_ADMIN","CAP_NET_ADMIN"]}},
        "mounts":[{"destination":"/run/containerd/containerd.sock","source":"/run/containerd/containerd.sock"}],
        "linux":{"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}]}}"#;

    /// The tests' file system root, where `/state` is a containerd's state
    /// directory (so that the host's own /run/containerd is never read).
    const STATE: &str = "/state";

    fn write_bundle(root: &Path, namespace: &str, id: &str, config: &[u8], pid: Option<u32>) {
        let dir = rooted(root, Path::new(STATE))
            .join(TASK_DIR)
            .join(namespace)
            .join(id);
        std::fs::create_dir_all(&dir).expect("bundle");
        std::fs::write(dir.join("config.json"), config).expect("config.json");
        if let Some(pid) = pid {
            std::fs::write(dir.join("init.pid"), pid.to_string()).expect("init.pid");
        }
    }

    #[test]
    fn containerds_configuration_names_its_state_directory() {
        let text = "version = 2\n# state = \"/not/this\"\nroot = \"/srv/ctrd\"\n\
                    state = \"/run/ctrd-lab\" # moved\n[grpc]\n  address = \"/x.sock\"\n";
        assert_eq!(
            parse_containerd_config_state(text),
            Some(PathBuf::from("/run/ctrd-lab"))
        );
        assert_eq!(
            parse_containerd_config_state("[plugins]\nstate = \"/inside/a/table\"\n"),
            None
        );
        assert_eq!(
            parse_containerd_config_state("state = \"relative\"\n"),
            None
        );
        assert_eq!(
            parse_containerd_config_state("state = \"unterminated\n"),
            None
        );
    }

    #[test]
    fn only_containerds_identifiers_name_namespaces_and_ids() {
        for good in ["default", "k8s.io", "perimeter-test", CRI_ID, "a_b.c-d"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in [
            "",
            "..",
            "../etc",
            "a/b",
            "a..b",
            "-a",
            "a-",
            "é",
            &"a".repeat(77),
        ] {
            assert!(!is_identifier(bad), "{bad}");
        }
        assert_eq!(
            state_of_bundle(Path::new(
                "/run/ctrd/io.containerd.runtime.v2.task/default/web"
            )),
            Some(PathBuf::from("/run/ctrd"))
        );
        assert_eq!(
            state_of_bundle(Path::new("/run/ctrd/tasks/default/web")),
            None
        );
        assert_eq!(state_of_bundle(Path::new("/web")), None);
    }

    #[test]
    fn the_writable_layer_is_the_upper_directory_of_the_root_overlay() {
        let mountinfo = "\
1510 1422 0:155 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs,upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs,workdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/7/work
1511 1510 0:157 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
";
        assert_eq!(
            overlay_upper_dir(mountinfo),
            Some(PathBuf::from(
                "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/7/fs"
            ))
        );
        // A bind-mounted root (`ctr run --rootfs`), an escaped path and
        // garbage give nothing.
        assert_eq!(
            overlay_upper_dir("1 0 8:1 /srv/rootfs / rw - ext4 /dev/sda1 rw\n"),
            None
        );
        assert_eq!(
            overlay_upper_dir("1 0 0:1 / / rw - overlay overlay rw,upperdir=/a\\040b\n"),
            None
        );
        assert_eq!(overlay_upper_dir(" - - \n\n - overlay\n/ / / / / -"), None);
    }

    #[test]
    fn a_kubernetes_pods_containers_are_read_from_their_bundles() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let proc_root = root.join("proc");
        write_bundle(
            root,
            "k8s.io",
            CRI_ID,
            cri_spec("container", "web").as_bytes(),
            Some(4242),
        );
        write_bundle(
            root,
            "k8s.io",
            SANDBOX_ID,
            cri_spec("sandbox", "").as_bytes(),
            Some(4100),
        );
        // Docker's own tasks, and entries that are not containerd's.
        write_bundle(root, DOCKER_NAMESPACE, CRI_ID, b"{}", Some(4242));
        let tasks = root.join("state").join(TASK_DIR);
        std::fs::create_dir_all(tasks.join("k8s.io/not..an-id")).expect("dir");
        std::fs::write(tasks.join("k8s.io/stray-file"), "x").expect("file");

        // The shim works in its bundle, as the host sees it: that is how
        // this state directory is found.
        let bundle_of = |id: &str| Path::new(STATE).join(TASK_DIR).join("k8s.io").join(id);
        let mut processes = BTreeMap::from([
            (
                4000,
                Process {
                    cwd: Some(bundle_of(SANDBOX_ID)),
                    ..process(
                        4000,
                        1,
                        "containerd-shim",
                        "containerd-shim-runc-v2 -namespace k8s.io",
                    )
                },
            ),
            (
                4100,
                Process {
                    netns_inode: Some(4026532500),
                    cgroup: Some(format!("/kubepods/besteffort/pod1/{SANDBOX_ID}")),
                    container: Some(format!("kubernetes:{}", &SANDBOX_ID[..12])),
                    ..process(4100, 4000, "pause", "/pause")
                },
            ),
            (
                4242,
                Process {
                    netns_inode: Some(4026532500),
                    cgroup: Some(format!("/kubepods/besteffort/pod1/{CRI_ID}")),
                    container: Some(format!("kubernetes:{}", &CRI_ID[..12])),
                    ..process(4242, 4000, "nginx", "nginx: master process")
                },
            ),
            // A worker of the container's first process.
            (4243, process(4243, 4242, "nginx", "nginx: worker process")),
            // Something else in the pod's network namespace.
            (
                4300,
                Process {
                    netns_inode: Some(4026532500),
                    ..process(4300, 1, "sh", "sh")
                },
            ),
            // A host process.
            (900, process(900, 1, "sshd", "sshd")),
        ]);
        let (containers, problems) = containerd_containers(&processes, root, &proc_root);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(containers.len(), 2, "{containers:?}");
        let web = containers.iter().find(|c| c.id == CRI_ID).expect("web");
        assert_eq!(
            (
                web.runtime.as_str(),
                web.namespace.as_deref(),
                web.name.as_str(),
                web.image.as_str(),
                web.pid,
                web.network_mode.as_str(),
            ),
            (
                "containerd",
                Some("k8s.io"),
                "web",
                "registry.example/web:1.2",
                Some(4242),
                "private"
            )
        );
        assert_eq!(
            web.pod,
            Some(Pod {
                name: "web-7d9f8-abcde".into(),
                namespace: "shop".into(),
                container: Some("web".into()),
                sandbox: false,
            })
        );
        assert!(web.running && web.runtime_socket_mounted && !web.privileged);
        assert_eq!(web.daemon_netns, Some(4026531840));
        let sandbox = containers
            .iter()
            .find(|c| c.id == SANDBOX_ID)
            .expect("sandbox");
        assert_eq!(sandbox.name, "web-7d9f8-abcde");
        assert!(
            sandbox
                .pod
                .as_ref()
                .is_some_and(|pod| pod.sandbox && pod.container.is_none())
        );

        claim_processes(&mut processes, &containers);
        let hint = |pid: u32| processes.get(&pid).and_then(|p| p.container.clone());
        let web_hint = format!("containerd:k8s.io/{CRI_ID}");
        let sandbox_hint = format!("containerd:k8s.io/{SANDBOX_ID}");
        assert_eq!(hint(4242).as_deref(), Some(web_hint.as_str()));
        assert_eq!(
            hint(4243).as_deref(),
            Some(web_hint.as_str()),
            "by ancestry"
        );
        assert_eq!(hint(4100).as_deref(), Some(sandbox_hint.as_str()));
        assert_eq!(
            hint(4300).as_deref(),
            Some(sandbox_hint.as_str()),
            "by the pod's network"
        );
        assert_eq!(hint(900), None);
        assert_eq!(hint(4000), None, "the shim is the host's");
        let snapshot = perimeter_model::HostSnapshot {
            processes: processes.clone(),
            containers: containers.clone(),
            ..Default::default()
        };
        let worker = processes.get(&4243).expect("worker");
        assert_eq!(
            snapshot.container_of_process(worker).map(|c| c.id.as_str()),
            Some(CRI_ID)
        );
    }

    #[test]
    fn a_plain_ctr_run_container_is_read_and_its_host_network_is_not_claimed() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        std::fs::write(
            root.join("config.toml"),
            format!("version = 2\nstate = \"{STATE}\"\n"),
        )
        .expect("config");
        write_bundle(
            root,
            "perimeter-test",
            "web",
            CTR_SPEC.as_bytes(),
            Some(5100),
        );
        let mut processes = BTreeMap::from([
            (
                4900,
                process(
                    4900,
                    1,
                    "containerd",
                    "/usr/bin/containerd --config /config.toml",
                ),
            ),
            (
                5000,
                Process {
                    cwd: Some(Path::new(STATE).join(TASK_DIR).join("perimeter-test/web")),
                    ..process(
                        5000,
                        1,
                        "containerd-shim",
                        "containerd-shim-runc-v2 -id web",
                    )
                },
            ),
            (
                5100,
                Process {
                    cgroup: Some("/perimeter-test/web".into()),
                    ..process(5100, 5000, "busybox", "/bin/busybox httpd -f -p 8080")
                },
            ),
            (900, process(900, 1, "sshd", "sshd")),
        ]);
        let (containers, problems) = containerd_containers(&processes, root, &root.join("proc"));
        assert!(problems.is_empty(), "{problems:?}");
        let [web] = containers.as_slice() else {
            panic!("one container: {containers:?}");
        };
        assert_eq!(
            (
                web.id.as_str(),
                web.namespace.as_deref(),
                web.name.as_str(),
                web.image.as_str()
            ),
            ("web", Some("perimeter-test"), "web", "")
        );
        assert!(web.running && web.privileged && web.runtime_socket_mounted && web.pod.is_none());
        assert_eq!(web.network_mode, "host");
        claim_processes(&mut processes, &containers);
        assert_eq!(
            processes.get(&5100).and_then(|p| p.container.as_deref()),
            Some("containerd:perimeter-test/web")
        );
        // Sharing the host's network is no claim on the host's processes.
        assert_eq!(
            processes.get(&900).and_then(|p| p.container.as_deref()),
            None
        );
    }

    #[test]
    fn hostile_bundles_are_problems_and_reused_pids_are_not_the_containers() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        write_bundle(
            root,
            "default",
            "garbled",
            b"{\"annotations\": [1, 2",
            Some(7000),
        );
        write_bundle(
            root,
            "default",
            "wrong-types",
            br#"{"annotations":{"a":1},"mounts":"x"}"#,
            None,
        );
        let huge = vec![b' '; (super::super::MAX_STATE_BYTES + 1) as usize];
        write_bundle(root, "default", "huge", &huge, None);
        // A pid file naming an unrelated process (the pid was reused), and
        // one that is not a number.
        write_bundle(root, "default", "reused", CTR_SPEC.as_bytes(), Some(900));
        let not_a_pid = root.join("state").join(TASK_DIR).join("default/reused2");
        write_bundle(root, "default", "reused2", CTR_SPEC.as_bytes(), None);
        std::fs::write(not_a_pid.join("init.pid"), "-1\n\u{0}").expect("init.pid");
        let processes = BTreeMap::from([
            (
                800,
                process(800, 1, "containerd", "containerd --state /state"),
            ),
            (
                900,
                Process {
                    cwd: Some(PathBuf::from("/root")),
                    cgroup: Some("/system.slice/sshd.service".into()),
                    ..process(900, 1, "sshd", "sshd")
                },
            ),
        ]);
        let (containers, problems) = containerd_containers(&processes, root, &root.join("proc"));
        let ids: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["garbled", "huge", "reused", "reused2", "wrong-types"]);
        assert!(
            containers.iter().all(|c| !c.running && c.pid.is_none()),
            "{containers:?}"
        );
        let unreadable: Vec<&Container> = containers
            .iter()
            .filter(|c| c.network_mode.is_empty())
            .collect();
        assert_eq!(
            unreadable.len(),
            3,
            "nothing is claimed from a spec not read"
        );
        assert!(
            unreadable
                .iter()
                .all(|c| !c.privileged && !c.runtime_socket_mounted)
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.subject == "containerd container default/huge"),
            "{problems:?}"
        );
    }

    /// A metadata database like containerd's: container `web` of namespace
    /// `perimeter-test` made from an image that is still there, `gone` from
    /// one since removed, `dir` from a directory (no image).
    fn meta_db() -> Vec<u8> {
        use super::super::bolt::build::{bucket, file, inline, plain};
        file(vec![bucket(
            "v1",
            vec![
                plain("version", "\u{3}"),
                bucket(
                    "perimeter-test",
                    vec![
                        bucket(
                            "containers",
                            vec![
                                bucket(
                                    "web",
                                    vec![
                                        plain("image", "perimeter-lab/busybox:1"),
                                        plain("snapshotter", "overlayfs"),
                                        inline(
                                            "runtime",
                                            vec![plain("name", "io.containerd.runc.v2")],
                                        ),
                                    ],
                                ),
                                inline("gone", vec![plain("image", "lab/old:1")]),
                                inline("dir", vec![plain("snapshotKey", "dir")]),
                            ],
                        ),
                        bucket(
                            "images",
                            vec![bucket(
                                "perimeter-lab/busybox:1",
                                vec![inline(
                                    "target",
                                    vec![
                                        plain("digest", "sha256:5f2e"),
                                        plain(
                                            "mediatype",
                                            "application/vnd.oci.image.index.v1+json",
                                        ),
                                    ],
                                )],
                            )],
                        ),
                    ],
                ),
            ],
        )])
    }

    #[test]
    fn containerds_configuration_names_its_root_directory() {
        let text = "version = 2\nroot = \"/srv/ctrd\"\nstate = \"/run/ctrd\"\n";
        assert_eq!(
            parse_containerd_config_root(text),
            Some(PathBuf::from("/srv/ctrd"))
        );
        assert_eq!(parse_containerd_config_root("root = \"srv\"\n"), None);
        assert_eq!(parse_containerd_config_root("[x]\nroot = \"/a\"\n"), None);
        let daemon = |cmdline: &str| {
            daemon_dirs(
                &process(1, 0, "containerd", cmdline),
                Path::new("/nonexistent"),
            )
        };
        assert_eq!(
            daemon("containerd --root /srv/r --state=/run/s"),
            (PathBuf::from("/run/s"), PathBuf::from("/srv/r"))
        );
        assert_eq!(
            daemon("containerd"),
            (PathBuf::from(DEFAULT_STATE), PathBuf::from(DEFAULT_ROOT))
        );
    }

    #[test]
    fn a_plain_containers_image_is_read_from_the_metadata_database() {
        let bolt_bytes = meta_db();
        let bolt = super::super::bolt::Bolt::parse(&bolt_bytes).expect("parses");
        assert_eq!(
            image_from_metadata(&bolt, "perimeter-test", "web"),
            Ok(Some((
                "perimeter-lab/busybox:1".to_owned(),
                Some("sha256:5f2e".to_owned())
            )))
        );
        assert_eq!(
            image_from_metadata(&bolt, "perimeter-test", "gone"),
            Ok(Some(("lab/old:1".to_owned(), None)))
        );
        assert_eq!(
            image_from_metadata(&bolt, "perimeter-test", "dir"),
            Ok(None)
        );
        assert_eq!(image_from_metadata(&bolt, "default", "web"), Ok(None));
        assert!(is_digest("sha256:0123abc") && is_digest("sha512+b64u:a-b_c="));
        assert!(
            !is_digest("sha256:")
                && !is_digest(":ab")
                && !is_digest("SHA256:ab")
                && !is_digest("a:b c")
        );

        // End to end: the daemon's configuration gives its root, whose
        // database names the image of each container whose spec does not.
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        std::fs::write(
            root.join("config.toml"),
            format!("version = 2\nstate = \"{STATE}\"\nroot = \"/ctrd-root\"\n"),
        )
        .expect("config");
        let db = root.join("ctrd-root").join(META_DB);
        std::fs::create_dir_all(db.parent().expect("parent")).expect("dir");
        std::fs::write(&db, &bolt_bytes).expect("meta.db");
        write_bundle(root, "perimeter-test", "web", CTR_SPEC.as_bytes(), None);
        write_bundle(root, "perimeter-test", "dir", CTR_SPEC.as_bytes(), None);
        let processes = BTreeMap::from([(
            4900,
            process(
                4900,
                1,
                "containerd",
                "/usr/bin/containerd --config /config.toml",
            ),
        )]);
        let (containers, problems) = containerd_containers(&processes, root, &root.join("proc"));
        assert!(problems.is_empty(), "{problems:?}");
        let images: Vec<(&str, &str, Option<&str>)> = containers
            .iter()
            .map(|c| (c.id.as_str(), c.image.as_str(), c.image_digest.as_deref()))
            .collect();
        assert_eq!(
            images,
            [
                ("dir", "", None),
                ("web", "perimeter-lab/busybox:1", Some("sha256:5f2e"))
            ]
        );
        // A Kubernetes container's spec names its image; the database still
        // gives the digest.
        write_bundle(
            root,
            "perimeter-test",
            "web",
            cri_spec("container", "web").as_bytes(),
            None,
        );
        let (containers, problems) = containerd_containers(&processes, root, &root.join("proc"));
        assert!(problems.is_empty(), "{problems:?}");
        let web = containers.iter().find(|c| c.id == "web").expect("web");
        assert_eq!(
            (web.image.as_str(), web.image_digest.as_deref()),
            ("registry.example/web:1.2", Some("sha256:5f2e"))
        );
        write_bundle(root, "perimeter-test", "web", CTR_SPEC.as_bytes(), None);

        // A database that does not read is one problem naming it; the
        // containers stay named by their runtime.
        let mut torn = bolt_bytes.clone();
        torn[20] ^= 0xff;
        torn[4096 + 20] ^= 0xff;
        std::fs::write(&db, &torn).expect("meta.db");
        let (containers, problems) = containerd_containers(&processes, root, &root.join("proc"));
        assert!(
            containers.iter().all(|c| c.image.is_empty()),
            "{containers:?}"
        );
        let [problem] = problems.as_slice() else {
            panic!("one problem: {problems:?}");
        };
        assert_eq!(problem.subject, db.display().to_string());
        assert!(
            problem.message.contains("no valid meta page"),
            "{problem:?}"
        );
    }
}
