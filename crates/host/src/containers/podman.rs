//! The containers Podman keeps, from containers/storage and the container's
//! own files, read-only; no `podman` command is run (it would take the
//! store's locks, and may migrate or clean what it finds).
//!
//! A store is a graph root (`/var/lib/containers/storage` unless
//! `storage.conf` or `podman --root` says otherwise) and a run root
//! (`/run/containers/storage`). Each running container has a conmon whose
//! command line names the container (`-c ID`, `-n NAME`) and its
//! directories (`-b <graphroot>/<driver>-containers/<id>/userdata`, `-p
//! <runroot>/<driver>-containers/<id>/userdata/pidfile`, and `podman --root
//! ... --runroot ...` again as its exit command's arguments), so every
//! store with a running container is found whatever it was given; the
//! configured default store is read too, for containers that run no longer.
//!
//! From the store: `<driver>-containers/containers.json` (id, names, image
//! id, writable layer, the image's name as asked for),
//! `<driver>-images/images.json` (the image's names and manifest digest),
//! each container's `userdata/config.json` (the OCI spec Podman handed the
//! runtime: annotations saying privileged, mounts, namespaces) and, in the
//! run root, `userdata/pidfile` (its first process). Addresses come from the
//! container's own network namespace as /proc shows it
//! (`/proc/PID/net/fib_trie` and `if_inet6`), which serves CNI and
//! netavark alike. Published ports are not on disk outside Podman's
//! database, but conmon holds each of them as a socket: they are listeners,
//! traced through conmon's `-c`. A container another manager keeps in the
//! same store (CRI-O, whose spec says `io.container.manager: cri-o`) is left
//! out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use perimeter_model::{Container, Problem, Process};
use serde::Deserialize;

use super::{
    MAX_CONTAINERS, OciSpec, flag_value, is_container_id, is_runtime_socket, list_dir, read_json,
    read_json_capped, rooted,
};

/// The largest of containers/storage's lists read (`containers.json`,
/// `images.json`): each entry is a few hundred bytes.
const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;
/// The largest /proc/PID/net file read for a container's addresses.
const MAX_NET_BYTES: u64 = 1024 * 1024;
/// The most `<driver>-containers` directories looked at in one graph root.
const MAX_DRIVERS: usize = 16;
/// The most stores read (one per distinct graph root).
const MAX_STORES: usize = 256;
/// Podman's rootful graph root and run root when nothing else is configured.
const DEFAULT_GRAPH_ROOT: &str = "/var/lib/containers/storage";
const DEFAULT_RUN_ROOT: &str = "/run/containers/storage";
/// containers/storage's configuration of the default store.
const STORAGE_CONF: &str = "/etc/containers/storage.conf";

/// One entry of `<driver>-containers/containers.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoredContainer {
    id: String,
    names: Vec<String>,
    /// The image's id (64 hex characters, no `sha256:`).
    image: String,
    /// The container's own read-write layer.
    layer: String,
    /// A JSON document of Podman's, as a string: `image-name` is the image
    /// as it was asked for.
    metadata: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerMetadata {
    #[serde(rename = "image-name")]
    image_name: String,
    name: String,
}

/// One entry of `<driver>-images/images.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoredImage {
    id: String,
    digest: String,
    names: Vec<String>,
}

/// Where a store lives, and the network namespace of a conmon running one
/// of its containers (where Podman wrote the published ports' DNATs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Store {
    run_root: Option<PathBuf>,
    netns: Option<u64>,
}

/// What conmon's command line says about its container's store: the graph
/// root and run root, from `podman --root X --runroot Y` in its exit command,
/// else from the bundle (`<graphroot>/<driver>-containers/<id>/userdata`)
/// and pid file (`<runroot>/<driver>-containers/<id>/userdata/pidfile`).
fn conmon_store(cmdline: &[String]) -> Option<(PathBuf, Option<PathBuf>)> {
    let mut exit_args = Vec::new();
    let mut args = cmdline.iter();
    while let Some(arg) = args.next() {
        if arg == "--exit-command-arg" {
            if let Some(value) = args.next() {
                exit_args.push(value.clone());
            }
        } else if let Some(value) = arg.strip_prefix("--exit-command-arg=") {
            exit_args.push(value.to_owned());
        }
    }
    // `<root>/<driver>-containers/<id>/userdata`, `below` components above
    // the path given: the root.
    let from_userdata = |path: &str, below: usize| -> Option<PathBuf> {
        let userdata = Path::new(path).ancestors().nth(below)?;
        let id = userdata.parent()?;
        let driver_dir = id.parent()?;
        let is_store = userdata.file_name()? == "userdata"
            && id.file_name()?.to_str().is_some_and(is_container_id)
            && driver_dir.file_name()?.to_str()?.ends_with("-containers");
        if !is_store {
            return None;
        }
        driver_dir.parent().map(Path::to_path_buf)
    };
    let graph_root = flag_value(&exit_args, &["--root"])
        .map(PathBuf::from)
        .or_else(|| from_userdata(flag_value(cmdline, &["-b", "--bundle"])?, 0))?;
    let run_root = flag_value(&exit_args, &["--runroot"])
        .map(PathBuf::from)
        .or_else(|| from_userdata(flag_value(cmdline, &["-p", "--container-pidfile"])?, 1));
    Some((graph_root, run_root))
}

/// The graph root and run root `storage.conf` sets for the default store
/// (`graphroot` and `runroot` in its `[storage]` table), each when it is an
/// absolute path. A file the `toml` crate cannot read leaves the defaults.
pub fn parse_storage_conf(text: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    #[derive(serde::Deserialize, Default)]
    struct Conf {
        #[serde(default)]
        storage: Storage,
    }
    #[derive(serde::Deserialize, Default)]
    struct Storage {
        graphroot: Option<String>,
        runroot: Option<String>,
    }
    let storage = toml::from_str::<Conf>(text).unwrap_or_default().storage;
    let absolute =
        |path: Option<String>| path.filter(|path| path.starts_with('/')).map(PathBuf::from);
    (absolute(storage.graphroot), absolute(storage.runroot))
}

/// Every store to read: each one a conmon names, and the default one when
/// it holds containers.
fn stores(processes: &BTreeMap<u32, Process>, fs_root: &Path) -> BTreeMap<PathBuf, Store> {
    let mut stores: BTreeMap<PathBuf, Store> = BTreeMap::new();
    for process in processes.values().filter(|p| p.name() == "conmon") {
        let Some((graph_root, run_root)) = conmon_store(&process.cmdline) else {
            continue;
        };
        if stores.len() >= MAX_STORES && !stores.contains_key(&graph_root) {
            continue;
        }
        let store = stores.entry(graph_root).or_default();
        if store.run_root.is_none() {
            store.run_root = run_root;
        }
        if store.netns.is_none() {
            store.netns = process.netns_inode;
        }
    }
    let conf = rooted(fs_root, Path::new(STORAGE_CONF));
    let (graph_root, run_root) =
        match perimeter_files::read_text(&conf, "containers/storage's configuration", 1 << 20) {
            Ok(text) => parse_storage_conf(&text),
            Err(_) => (None, None),
        };
    let graph_root = graph_root.unwrap_or_else(|| PathBuf::from(DEFAULT_GRAPH_ROOT));
    if !stores.contains_key(&graph_root) && rooted(fs_root, &graph_root).is_dir() {
        stores.insert(
            graph_root,
            Store {
                run_root: Some(run_root.unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_ROOT))),
                netns: None,
            },
        );
    }
    stores
}

/// The local addresses of a network namespace from its `fib_trie` (each
/// `|-- ADDRESS` leaf whose entry says `host LOCAL`), loopback left out.
pub fn parse_fib_trie_local(text: &str) -> Vec<IpAddr> {
    let mut addresses = BTreeSet::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            leaf = address.trim().parse().ok();
        } else if line.starts_with('/') && line.contains(" host LOCAL") {
            if let Some(address) = leaf.filter(|a| !a.is_loopback()) {
                addresses.insert(IpAddr::V4(address));
            }
        } else if !line.starts_with('/') {
            leaf = None;
        }
    }
    addresses.into_iter().collect()
}

/// The global IPv6 addresses of a network namespace from its `if_inet6`
/// (`ADDRESS IFINDEX PREFIX SCOPE FLAGS NAME`, the address in 32 hex
/// digits; scope 0 is global).
pub fn parse_if_inet6_global(text: &str) -> Vec<IpAddr> {
    let mut addresses = BTreeSet::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(_), Some(_), Some(scope)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if hex.len() != 32 || scope != "00" {
            continue;
        }
        if let Ok(bits) = u128::from_str_radix(hex, 16) {
            addresses.insert(IpAddr::V6(Ipv6Addr::from(bits)));
        }
    }
    addresses.into_iter().collect()
}

/// The addresses of the network namespace a process lives in, as /proc
/// shows it to a reader outside.
pub(super) fn netns_addresses(proc_root: &Path, pid: u32) -> Vec<IpAddr> {
    let net = proc_root.join(pid.to_string()).join("net");
    let read = |name: &str| {
        perimeter_files::read_text(&net.join(name), "a namespace's addresses", MAX_NET_BYTES)
            .unwrap_or_default()
    };
    let mut addresses = parse_fib_trie_local(&read("fib_trie"));
    addresses.extend(parse_if_inet6_global(&read("if_inet6")));
    addresses
}

/// The running container's first process: the pid file's, when that process
/// runs in the container's cgroup, else the first process whose cgroup names
/// the container.
fn first_process(
    processes: &BTreeMap<u32, Process>,
    pid_file: Option<&Path>,
    id: &str,
) -> Option<u32> {
    let in_container = |process: &Process| {
        process
            .container
            .as_deref()
            .and_then(|hint| hint.strip_prefix("podman:"))
            .is_some_and(|short| !short.is_empty() && id.starts_with(short))
    };
    let from_file = pid_file
        .and_then(|path| perimeter_files::read_text(path, "a container's pid file", 64).ok())
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|pid| processes.get(pid).is_some_and(in_container));
    from_file.or_else(|| processes.values().find(|p| in_container(p)).map(|p| p.pid))
}

/// Reads one store: every `<driver>-containers/containers.json` in it.
fn read_store(
    graph_root: &Path,
    store: &Store,
    fs_root: &Path,
    proc_root: &Path,
    processes: &BTreeMap<u32, Process>,
    problems: &mut Vec<Problem>,
) -> Vec<Container> {
    let dir = rooted(fs_root, graph_root);
    let mut drivers: Vec<String> = list_dir(&dir, "Podman's storage", problems)
        .into_iter()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix("-containers").map(str::to_owned))
        .filter(|driver| {
            !driver.is_empty()
                && driver
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .collect();
    drivers.sort();
    drivers.truncate(MAX_DRIVERS);
    // The conmon of each running container, by the id it names.
    let monitors: BTreeMap<&str, &Process> = processes
        .values()
        .filter(|p| p.name() == "conmon")
        .filter_map(|p| Some((perimeter_model::conmon_container_id(&p.cmdline)?, p)))
        .collect();
    let mut containers = Vec::new();
    for driver in drivers {
        let list_path = dir.join(format!("{driver}-containers/containers.json"));
        let mut stored: Vec<StoredContainer> =
            match read_json_capped(&list_path, "Podman's container list", MAX_LIST_BYTES) {
                Ok(stored) => stored,
                Err(message) => {
                    problems.push(Problem::new(list_path.display().to_string(), message));
                    continue;
                }
            };
        if stored.len() > MAX_CONTAINERS {
            problems.push(Problem::new(
                list_path.display().to_string(),
                format!(
                    "{} containers; only the first {MAX_CONTAINERS} were read",
                    stored.len()
                ),
            ));
            stored.truncate(MAX_CONTAINERS);
        }
        let images_path = dir.join(format!("{driver}-images/images.json"));
        let images: BTreeMap<String, StoredImage> = match read_json_capped::<Vec<StoredImage>>(
            &images_path,
            "Podman's image list",
            MAX_LIST_BYTES,
        ) {
            Ok(images) => images.into_iter().map(|i| (i.id.clone(), i)).collect(),
            Err(message) => {
                problems.push(Problem::new(images_path.display().to_string(), message));
                BTreeMap::new()
            }
        };
        for entry in stored {
            if !is_container_id(&entry.id) {
                continue;
            }
            let id = entry.id.clone();
            let userdata = dir
                .join(format!("{driver}-containers"))
                .join(&id)
                .join("userdata");
            // No spec (a container never started keeps none), or one that
            // does not parse: nothing is claimed from it.
            let spec_path = userdata.join("config.json");
            let spec: Option<OciSpec> = if spec_path.exists() {
                match read_json(&spec_path, "a Podman container's runtime configuration") {
                    Ok(spec) => Some(spec),
                    Err(message) => {
                        problems.push(Problem::new(format!("container {}", &id[..12]), message));
                        None
                    }
                }
            } else {
                None
            };
            // containers/storage is shared: CRI-O (whose conmons look like
            // Podman's) and Buildah keep containers in the same lists. Podman
            // marks the spec it writes as libpod's; another manager's
            // container is not Podman's to report.
            let manager = spec
                .as_ref()
                .and_then(|spec| spec.annotations.get("io.container.manager"));
            if manager.is_some_and(|manager| manager != "libpod") {
                continue;
            }
            let monitor = monitors.get(id.as_str()).copied();
            let pid_file = store.run_root.as_ref().map(|run_root| {
                rooted(fs_root, run_root)
                    .join(format!("{driver}-containers"))
                    .join(&id)
                    .join("userdata/pidfile")
            });
            let pid = first_process(processes, pid_file.as_deref(), &id);
            let running = monitor.is_some() || pid.is_some();
            let host_network = spec.as_ref().is_some_and(OciSpec::host_network);
            let addresses = match pid {
                Some(pid) if running && !host_network => netns_addresses(proc_root, pid),
                _ => Vec::new(),
            };
            let metadata: ContainerMetadata =
                serde_json::from_str(&entry.metadata).unwrap_or_default();
            let image = images.get(&entry.image);
            let image_name = if !metadata.image_name.is_empty() {
                metadata.image_name
            } else {
                image
                    .and_then(|i| i.names.first().cloned())
                    .unwrap_or_else(|| entry.image.clone())
            };
            let name = entry
                .names
                .first()
                .cloned()
                .filter(|name| !name.is_empty())
                .unwrap_or(metadata.name);
            // Only overlay keeps the container's writes apart from its
            // image (in the layer's `diff`); vfs copies the whole tree.
            let writable_layer = (driver == "overlay" && is_container_id(&entry.layer))
                .then(|| dir.join("overlay").join(&entry.layer).join("diff"))
                .filter(|diff| diff.is_dir());
            containers.push(Container {
                runtime: "podman".to_owned(),
                id,
                name,
                namespace: None,
                pod: None,
                image: image_name,
                image_id: if is_container_id(&entry.image) {
                    format!("sha256:{}", entry.image)
                } else {
                    entry.image.clone()
                },
                image_digest: image
                    .map(|i| i.digest.clone())
                    .filter(|digest| !digest.is_empty()),
                running,
                pid,
                addresses,
                privileged: spec.as_ref().is_some_and(|spec| {
                    spec.annotations
                        .get("io.podman.annotations.privileged")
                        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
                }),
                network_mode: match &spec {
                    Some(_) if host_network => "host",
                    Some(_) => "private",
                    None => "",
                }
                .to_owned(),
                runtime_socket_mounted: spec
                    .as_ref()
                    .is_some_and(|spec| spec.mounts.iter().any(|m| is_runtime_socket(&m.source))),
                writable_layer,
                drift: Vec::new(),
                published: Vec::new(),
                daemon_netns: monitor.and_then(|m| m.netns_inode).or(store.netns),
            });
        }
    }
    containers
}

/// Podman's containers, and what could not be read.
pub fn podman_containers(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
    proc_root: &Path,
) -> (Vec<Container>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    for (graph_root, store) in stores(processes, fs_root) {
        containers.extend(read_store(
            &graph_root,
            &store,
            fs_root,
            proc_root,
            processes,
            &mut problems,
        ));
    }
    (containers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "465f3b0d3a0ced7b52d26c20478c743e953ea4e9eb7578ba6857af9f8c9bfea3";
    const IMAGE: &str = "1852097b07f1a398bcb9e48d065388d6dbae4e5ca0b6fb0598c365d94b3fa733";
    const LAYER: &str = "df35e678d8fbe758e731bc4d2815d0f38cfc0d15c96d2cefbbb8422b69f09e35";
    const STOPPED: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    const CRIO: &str = "0000000000000000000000000000000000000000000000000000000000000002";

    fn process(pid: u32, comm: &str, cmdline: &str, container: Option<&str>) -> Process {
        Process {
            container: container.map(str::to_owned),
            ..super::super::test_process(pid, comm, cmdline)
        }
    }

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 198.18.94.0/24 2 0 2
        +-- 198.18.94.0/28 2 0 2
           |-- 198.18.94.0
              /24 link UNICAST
           |-- 198.18.94.5
              /32 host LOCAL
        |-- 198.18.94.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 198.18.94.5
              /32 host LOCAL
";

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000a8abb6fffe145501 02 40 20 80     eth0
fd000198001800940000000000000005 02 40 00 80     eth0
";

    #[test]
    fn a_namespaces_own_addresses_are_read_from_proc() {
        assert_eq!(
            parse_fib_trie_local(FIB_TRIE),
            vec!["198.18.94.5".parse::<IpAddr>().expect("address")]
        );
        assert_eq!(
            parse_if_inet6_global(IF_INET6),
            vec!["fd00:198:18:94::5".parse::<IpAddr>().expect("address")]
        );
        // Hostile text gives nothing, never a panic.
        assert!(parse_fib_trie_local("|-- 999.1.1.1\n/32 host LOCAL\n/").is_empty());
        assert!(parse_if_inet6_global("zz 01 02 00\nfe80 1 2 00\n").is_empty());
    }

    #[test]
    fn storage_conf_names_the_default_store() {
        let text = "# comment\n[storage]\ndriver = \"overlay\"\nrunroot = \"/run/c\"\n\
                    graphroot = '/srv/containers' # moved\n[storage.options]\n\
                    graphroot = \"/not/this\"\n";
        assert_eq!(
            parse_storage_conf(text),
            (
                Some(PathBuf::from("/srv/containers")),
                Some(PathBuf::from("/run/c"))
            )
        );
        assert_eq!(
            parse_storage_conf("[storage]\ngraphroot = \"relative\"\n"),
            (None, None)
        );
    }

    #[test]
    fn conmon_names_its_store_by_the_exit_command_or_its_paths() {
        let cmd =
            |text: &str| -> Vec<String> { text.split_whitespace().map(str::to_owned).collect() };
        assert_eq!(
            conmon_store(&cmd(&format!(
                "conmon -c {ID} -b /g/overlay-containers/{ID}/userdata \
                 --exit-command /usr/bin/podman --exit-command-arg --root \
                 --exit-command-arg /srv/g --exit-command-arg --runroot --exit-command-arg /run/g"
            ))),
            Some((PathBuf::from("/srv/g"), Some(PathBuf::from("/run/g"))))
        );
        assert_eq!(
            conmon_store(&cmd(&format!(
                "conmon -c {ID} -b /g/overlay-containers/{ID}/userdata \
                 -p /r/overlay-containers/{ID}/userdata/pidfile"
            ))),
            Some((PathBuf::from("/g"), Some(PathBuf::from("/r"))))
        );
        // A bundle that is not a store's layout names no store.
        assert_eq!(conmon_store(&cmd("conmon -c x -b /tmp/bundle")), None);
    }

    #[test]
    fn a_podman_containers_name_image_layer_and_risks_are_read_from_its_store() {
        let dir = tempfile::tempdir().expect("dir");
        let graph = dir.path().join("graph");
        let run = dir.path().join("run");
        let proc_root = dir.path().join("proc");
        let userdata = graph.join(format!("overlay-containers/{ID}/userdata"));
        std::fs::create_dir_all(&userdata).expect("dir");
        std::fs::create_dir_all(graph.join(format!("overlay/{LAYER}/diff"))).expect("dir");
        std::fs::create_dir_all(graph.join("overlay-images")).expect("dir");
        std::fs::create_dir_all(graph.join(format!("overlay-containers/{STOPPED}/userdata")))
            .expect("dir");
        let metadata = r#"{\"image-name\":\"localhost/lab/busybox:1\",\"name\":\"web\"}"#;
        std::fs::write(
            graph.join("overlay-containers/containers.json"),
            format!(
                r#"[{{"id":"{ID}","names":["web"],"image":"{IMAGE}","layer":"{LAYER}","metadata":"{metadata}","created":"2026-12-02T19:25:16Z","flags":{{}}}},
                   {{"id":"{STOPPED}","names":["old"],"image":"{IMAGE}","layer":"../../etc","metadata":"not json"}},
                   {{"id":"{CRIO}","names":["k8s_pod"],"image":"{IMAGE}","layer":"{LAYER}"}},
                   {{"id":"../../etc","names":["evil"]}}]"#
            ),
        )
        .expect("containers.json");
        std::fs::write(
            graph.join("overlay-images/images.json"),
            format!(
                r#"[{{"id":"{IMAGE}","digest":"sha256:1c5c","names":["localhost/lab/busybox:1"],"layer":"79a2"}}]"#
            ),
        )
        .expect("images.json");
        std::fs::write(
            userdata.join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0}},
               "mounts":[{"destination":"/proc","source":"proc"},{"destination":"/run/podman/podman.sock","source":"/run/podman/podman.sock"}],
               "annotations":{"io.container.manager":"libpod","io.podman.annotations.privileged":"TRUE"},
               "linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/run/netns/netns-1"}]}}"#,
        )
        .expect("config.json");
        // The stopped container's configuration does not parse: a problem,
        // the container still listed.
        std::fs::write(
            graph.join(format!("overlay-containers/{STOPPED}/userdata/config.json")),
            "{not json",
        )
        .expect("config.json");
        // CRI-O's container in the same store: not Podman's.
        let crio = graph.join(format!("overlay-containers/{CRIO}/userdata"));
        std::fs::create_dir_all(&crio).expect("dir");
        std::fs::write(
            crio.join("config.json"),
            r#"{"annotations":{"io.container.manager":"cri-o"},"linux":{"namespaces":[]}}"#,
        )
        .expect("config.json");
        let run_userdata = run.join(format!("overlay-containers/{ID}/userdata"));
        std::fs::create_dir_all(&run_userdata).expect("dir");
        std::fs::write(run_userdata.join("pidfile"), "4242\n").expect("pidfile");
        std::fs::create_dir_all(proc_root.join("4242/net")).expect("dir");
        std::fs::write(proc_root.join("4242/net/fib_trie"), FIB_TRIE).expect("fib_trie");
        std::fs::write(proc_root.join("4242/net/if_inet6"), IF_INET6).expect("if_inet6");

        let conmon = format!(
            "/usr/bin/conmon --api-version 1 -c {ID} -u {ID} -r /usr/bin/runc -b {}/overlay-containers/{ID}/userdata -p {}/pidfile -n web --exit-command /usr/bin/podman --exit-command-arg --root --exit-command-arg {} --exit-command-arg --runroot --exit-command-arg {}",
            graph.display(),
            run_userdata.display(),
            graph.display(),
            run.display()
        );
        let processes = BTreeMap::from([
            (4200, process(4200, "conmon", &conmon, None)),
            (
                4242,
                process(
                    4242,
                    "sh",
                    "sh -c serve",
                    Some(&format!("podman:{}", &ID[..12])),
                ),
            ),
        ]);
        let (containers, problems) = podman_containers(&processes, Path::new("/"), &proc_root);
        assert_eq!(containers.len(), 2, "{containers:?}");
        let web = containers.iter().find(|c| c.id == ID).expect("web");
        assert_eq!(
            (
                web.runtime.as_str(),
                web.name.as_str(),
                web.image.as_str(),
                web.image_id.as_str(),
                web.image_digest.as_deref()
            ),
            (
                "podman",
                "web",
                "localhost/lab/busybox:1",
                format!("sha256:{IMAGE}").as_str(),
                Some("sha256:1c5c")
            )
        );
        assert!(web.running && web.privileged && web.runtime_socket_mounted);
        assert_eq!(web.pid, Some(4242));
        assert_eq!(web.network_mode, "private");
        assert_eq!(web.daemon_netns, Some(4026532000));
        assert_eq!(
            web.writable_layer,
            Some(graph.join(format!("overlay/{LAYER}/diff")))
        );
        let addresses: Vec<String> = web.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(addresses, ["198.18.94.5", "fd00:198:18:94::5"]);
        let old = containers.iter().find(|c| c.id == STOPPED).expect("old");
        assert!(!old.running && old.pid.is_none() && old.writable_layer.is_none());
        assert_eq!(old.image, "localhost/lab/busybox:1", "from images.json");
        // Its spec could not be read: nothing is claimed from it.
        assert!(!old.privileged && !old.runtime_socket_mounted);
        assert_eq!(old.network_mode, "");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("does not parse"),
            "{problems:?}"
        );
    }
}
