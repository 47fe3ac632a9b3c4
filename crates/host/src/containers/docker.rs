//! The containers Docker keeps, from its own state directory, read-only:
//! `<data-root>/containers/<id>/config.v2.json` (name, image, state, network
//! addresses, mounts) and `hostconfig.json` (privileged, network mode, binds).
//! The data root is the one each running `dockerd` was given
//! (`--data-root`, or `data-root` in its daemon.json), else Docker's default
//! `/var/lib/docker`. An image's manifest digest is in Docker's reference
//! store, `<data-root>/image/<storage driver>/repositories.json`, for the
//! images pulled from or pushed to a registry (a locally built one has
//! none).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use perimeter_model::{Container, Problem, Process};
use serde::Deserialize;

use super::{MAX_CONTAINERS, MAX_STATE_BYTES, flag_value, is_container_id, read_json, rooted};

/// Docker's data root when its daemon is given none.
const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";
/// Docker's daemon configuration when its daemon is given none.
const DEFAULT_DAEMON_JSON: &str = "/etc/docker/daemon.json";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ConfigV2 {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Image")]
    image_id: String,
    #[serde(rename = "Config")]
    config: ContainerConfig,
    #[serde(rename = "State")]
    state: State,
    #[serde(rename = "NetworkSettings")]
    network_settings: NetworkSettings,
    #[serde(rename = "MountPoints")]
    mount_points: BTreeMap<String, MountPoint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerConfig {
    #[serde(rename = "Image")]
    image: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct State {
    #[serde(rename = "Running")]
    running: bool,
    #[serde(rename = "Pid")]
    pid: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NetworkSettings {
    #[serde(rename = "Networks")]
    networks: BTreeMap<String, Endpoint>,
    /// `"6379/tcp": [{"HostIp": "0.0.0.0", "HostPort": "6379"}]`; null for
    /// an exposed port not published.
    #[serde(rename = "Ports")]
    ports: BTreeMap<String, Option<Vec<PortBinding>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PortBinding {
    #[serde(rename = "HostIp")]
    host_ip: String,
    #[serde(rename = "HostPort")]
    host_port: String,
}

/// The bindings of `"6379/tcp"`; what does not parse is left out.
fn bindings(key: &str, published: &[PortBinding]) -> Vec<perimeter_model::Binding> {
    let Some((port, protocol)) = key.split_once('/') else {
        return Vec::new();
    };
    let (Ok(container_port), Some(protocol)) = (
        port.parse::<u16>(),
        perimeter_model::Protocol::parse(protocol),
    ) else {
        return Vec::new();
    };
    published
        .iter()
        .filter_map(|b| {
            let host_ip = if b.host_ip.is_empty() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                b.host_ip.parse().ok()?
            };
            Some(perimeter_model::Binding {
                protocol,
                host_ip,
                host_port: b.host_port.parse().ok()?,
                container_port,
            })
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Endpoint {
    #[serde(rename = "IPAddress")]
    ip_address: String,
    #[serde(rename = "GlobalIPv6Address")]
    global_ipv6_address: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MountPoint {
    #[serde(rename = "Source")]
    source: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct HostConfig {
    #[serde(rename = "Privileged")]
    privileged: bool,
    #[serde(rename = "NetworkMode")]
    network_mode: String,
    #[serde(rename = "Binds")]
    binds: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DaemonJson {
    #[serde(rename = "data-root")]
    data_root: Option<String>,
}

/// Where each running dockerd keeps its state; Docker's default when none
/// runs but the default directory exists (containers stopped with it still
/// tell what was published).
fn data_roots(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
    problems: &mut Vec<Problem>,
) -> BTreeMap<PathBuf, Option<u64>> {
    let mut roots = BTreeMap::new();
    for process in processes.values().filter(|p| p.name() == "dockerd") {
        let root = match flag_value(&process.cmdline, &["--data-root", "-g", "--graph"]) {
            Some(root) => Some(PathBuf::from(root)),
            None => {
                let config = flag_value(&process.cmdline, &["--config-file"])
                    .map_or_else(|| PathBuf::from(DEFAULT_DAEMON_JSON), PathBuf::from);
                daemon_json_root(&rooted(fs_root, &config), problems)
            }
        };
        roots.insert(
            root.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT)),
            process.netns_inode,
        );
    }
    if roots.is_empty()
        && rooted(fs_root, Path::new(DEFAULT_DATA_ROOT))
            .join("containers")
            .is_dir()
    {
        roots.insert(PathBuf::from(DEFAULT_DATA_ROOT), None);
    }
    roots
}

fn daemon_json_root(path: &Path, problems: &mut Vec<Problem>) -> Option<PathBuf> {
    if !path.exists() {
        return None;
    }
    match perimeter_files::read_bytes(path, "Docker's daemon configuration", MAX_STATE_BYTES) {
        Ok(bytes) => match serde_json::from_slice::<DaemonJson>(&bytes) {
            Ok(doc) => doc.data_root.map(PathBuf::from),
            Err(err) => {
                problems.push(Problem::new(
                    path.display().to_string(),
                    format!("Docker's daemon.json does not parse: {err}"),
                ));
                None
            }
        },
        Err(err) => {
            problems.push(Problem::new(path.display().to_string(), err.to_string()));
            None
        }
    }
}

/// The container's writable layer under overlay2: the layer store names its
/// mount, and the mount's `diff` directory holds what the container wrote.
fn writable_layer(data_root: &Path, id: &str) -> Option<PathBuf> {
    let mount_file = data_root
        .join("image/overlay2/layerdb/mounts")
        .join(id)
        .join("mount-id");
    let text = perimeter_files::read_text(&mount_file, "a Docker layer's mount id", 4096).ok()?;
    let mount_id = text.trim();
    // A name of one path component, as Docker writes it, and nothing else.
    if mount_id.is_empty()
        || mount_id.len() > 128
        || !mount_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let diff = data_root.join("overlay2").join(mount_id).join("diff");
    diff.is_dir().then_some(diff)
}

/// Docker's reference store: per repository, each reference (`redis:7`,
/// `redis@sha256:...`) and the image id it names.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReferenceStore {
    #[serde(rename = "Repositories")]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

/// How many storage drivers' directories under `image/` are looked at: one
/// in practice, more only after a change of driver.
const MAX_IMAGE_DRIVERS: usize = 8;

/// Image id -> the manifest digest a digest reference (`name@sha256:...`)
/// gives it, from every storage driver's reference store under `data_root`.
/// An image with several digests (pushed to two registries) gets the first
/// in order; one with none (built here) is absent.
fn repo_digests(data_root: &Path, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(data_root.join("image")) else {
        return digests;
    };
    let mut drivers: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("repositories.json"))
        .collect();
    drivers.sort();
    drivers.truncate(MAX_IMAGE_DRIVERS);
    for path in drivers {
        let store: ReferenceStore = match read_json(&path, "Docker's image references") {
            Ok(store) => store,
            Err(message) => {
                problems.push(Problem::new(path.display().to_string(), message));
                continue;
            }
        };
        digests.extend(parse_reference_store(store));
    }
    digests
}

/// The digest references of a reference store, by image id.
fn parse_reference_store(store: ReferenceStore) -> BTreeMap<String, String> {
    let mut digests = BTreeMap::new();
    for references in store.repositories.into_values() {
        for (reference, image_id) in references {
            let Some((_, digest)) = reference.rsplit_once('@') else {
                continue;
            };
            if is_digest(digest) && is_digest(&image_id) {
                digests.entry(image_id).or_insert_with(|| digest.to_owned());
            }
        }
    }
    digests
}

/// `sha256:` and 64 hex digits.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One container's state directory.
fn read_container(data_root: &Path, id: &str) -> Result<Container, String> {
    let dir = data_root.join("containers").join(id);
    let dir = dir.as_path();
    let config: ConfigV2 = read_json(&dir.join("config.v2.json"), "a Docker container's state")?;
    let host: HostConfig = read_json(
        &dir.join("hostconfig.json"),
        "a Docker container's host configuration",
    )?;
    if !config.id.is_empty() && config.id != id {
        return Err(format!(
            "{}: names container {} in the directory of {id}",
            dir.display(),
            config.id
        ));
    }
    let mut addresses: Vec<IpAddr> = config
        .network_settings
        .networks
        .values()
        .flat_map(|e| [e.ip_address.as_str(), e.global_ipv6_address.as_str()])
        .filter_map(|text| text.parse().ok())
        .collect();
    addresses.sort();
    addresses.dedup();
    let socket = super::is_runtime_socket;
    let runtime_socket_mounted = config.mount_points.values().any(|m| socket(&m.source))
        || host
            .binds
            .iter()
            .flatten()
            .any(|bind| bind.split(':').next().is_some_and(socket));
    Ok(Container {
        runtime: "docker".to_owned(),
        id: id.to_owned(),
        namespace: None,
        pod: None,
        name: config.name.trim_start_matches('/').to_owned(),
        image: config.config.image,
        image_id: config.image_id,
        image_digest: None,
        running: config.state.running,
        pid: u32::try_from(config.state.pid).ok().filter(|pid| *pid > 0),
        addresses,
        privileged: host.privileged,
        network_mode: host.network_mode,
        runtime_socket_mounted,
        writable_layer: writable_layer(data_root, id),
        drift: Vec::new(),
        published: config
            .network_settings
            .ports
            .iter()
            .flat_map(|(key, published)| bindings(key, published.as_deref().unwrap_or(&[])))
            .collect(),
        daemon_netns: None,
    })
}

/// Docker's containers, and what could not be read.
pub fn docker_containers(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
) -> (Vec<Container>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    for (root, daemon_netns) in data_roots(processes, fs_root, &mut problems) {
        let data_root = rooted(fs_root, &root);
        let dir = data_root.join("containers");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                problems.push(
                    Problem::new(
                        dir.display().to_string(),
                        format!("cannot list Docker's containers: {err}"),
                    )
                    .with_hint("run as root to see which container holds a published port"),
                );
                continue;
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| is_container_id(name))
            .collect();
        ids.sort();
        let digests = repo_digests(&data_root, &mut problems);
        if ids.len() > MAX_CONTAINERS {
            problems.push(Problem::new(
                dir.display().to_string(),
                format!(
                    "{} containers; only the first {MAX_CONTAINERS} were read",
                    ids.len()
                ),
            ));
            ids.truncate(MAX_CONTAINERS);
        }
        for id in ids {
            match read_container(&data_root, &id) {
                Ok(mut container) => {
                    container.daemon_netns = daemon_netns;
                    container.image_digest = digests.get(&container.image_id).cloned();
                    containers.push(container);
                }
                Err(message) => {
                    problems.push(Problem::new(format!("container {}", &id[..12]), message))
                }
            }
        }
    }
    (containers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f9a0d2c6b1e8f3a5d7c9e0b2a4f6d8c1e3b5a7f9d0c2e4b6a8f0d1c3e5b7a9f";

    fn write_container(root: &Path, id: &str, config: &str, host: &str) {
        let dir = root.join("containers").join(id);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("config.v2.json"), config).expect("config");
        std::fs::write(dir.join("hostconfig.json"), host).expect("host");
    }

    fn dockerd(args: &str) -> BTreeMap<u32, Process> {
        let process = Process {
            pid: 10,
            ppid: 1,
            comm: "dockerd".into(),
            cmdline: args.split_whitespace().map(str::to_owned).collect(),
            uid: 0,
            account: None,
            exe: Some(PathBuf::from("/usr/sbin/dockerd")),
            exe_deleted: false,
            cwd: None,
            cgroup: None,
            unit: None,
            container: None,
            netns_inode: None,
            ownership: perimeter_model::Ownership::NotChecked,
        };
        BTreeMap::from([(10, process)])
    }

    #[test]
    fn a_containers_name_image_addresses_and_risks_are_read_from_its_state() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("docker-data");
        write_container(
            &root,
            ID,
            &format!(
                r#"{{"ID":"{ID}","Name":"/cache","Image":"sha256:abc","Config":{{"Image":"redis:7","Env":["X=1"]}},
                "State":{{"Running":true,"Pid":4242}},
                "NetworkSettings":{{"Ports":{{"6379/tcp":[{{"HostIp":"0.0.0.0","HostPort":"6379"}},{{"HostIp":"::","HostPort":"6379"}}],"80/tcp":null}},"Networks":{{"bridge":{{"IPAddress":"172.17.0.2","GlobalIPv6Address":""}},
                "lab":{{"IPAddress":"198.18.90.2","GlobalIPv6Address":"fd00::2"}}}}}},
                "MountPoints":{{"/var/run/docker.sock":{{"Source":"/run/docker.sock"}}}},
                "SomethingNew":[1,2,3]}}"#
            ),
            r#"{"Privileged":true,"NetworkMode":"bridge","Binds":null}"#,
        );
        // A directory that is not a container, and a container whose state
        // does not parse: a problem, the rest still read.
        std::fs::create_dir_all(root.join("containers/not-a-container")).expect("dir");
        let broken = "0".repeat(64);
        write_container(&root, &broken, "{not json", "{}");
        let (containers, problems) = docker_containers(
            &dockerd(&format!("/usr/sbin/dockerd --data-root {}", root.display())),
            Path::new("/"),
        );
        assert_eq!(containers.len(), 1, "{containers:?}");
        let c = &containers[0];
        assert_eq!(
            (
                c.name.as_str(),
                c.image.as_str(),
                c.image_id.as_str(),
                c.short_id()
            ),
            ("cache", "redis:7", "sha256:abc", "4f9a0d2c6b1e")
        );
        assert!(c.running && c.privileged && c.runtime_socket_mounted);
        assert_eq!(c.pid, Some(4242));
        assert_eq!(c.network_mode, "bridge");
        let addresses: Vec<String> = c.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(addresses, ["172.17.0.2", "198.18.90.2", "fd00::2"]);
        let published: Vec<String> = c
            .published
            .iter()
            .map(|b| {
                format!(
                    "{} {} {}->{}",
                    b.protocol.as_str(),
                    b.host_ip,
                    b.host_port,
                    b.container_port
                )
            })
            .collect();
        assert_eq!(published, ["tcp 0.0.0.0 6379->6379", "tcp :: 6379->6379"]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("does not parse"),
            "{problems:?}"
        );
        // A locally built image has no digest.
        assert_eq!(c.image_digest, None);
    }

    /// The reference store of a Docker host that pulled redis:7 and pushed
    /// it to a registry of its own: two digest references name the image;
    /// a tag, a malformed digest and another image's digest do not count.
    #[test]
    fn an_images_digest_comes_from_the_reference_store() {
        let image = format!("sha256:{}", "a".repeat(64));
        let pulled = format!("sha256:{}", "1".repeat(64));
        let pushed = format!("sha256:{}", "2".repeat(64));
        let other = format!("sha256:{}", "b".repeat(64));
        let store: ReferenceStore = serde_json::from_str(&format!(
            r#"{{"Repositories":{{
                "redis":{{"redis:7":"{image}","redis@{pulled}":"{image}"}},
                "registry.lab:5000/redis":{{"registry.lab:5000/redis@{pushed}":"{image}","registry.lab:5000/redis:7":"{image}"}},
                "bad":{{"bad@sha256:xyz":"{other}","bad@{pulled}":"not-an-id"}},
                "other":{{"other@{pushed}":"{other}"}}
            }}}}"#
        ))
        .expect("parses");
        let digests = parse_reference_store(store);
        assert_eq!(digests.get(&image), Some(&pulled));
        assert_eq!(digests.get(&other), Some(&pushed));
        assert_eq!(digests.len(), 2);

        // Read from the data root's storage driver directory.
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("image/overlay2")).expect("dir");
        std::fs::write(
            root.join("image/overlay2/repositories.json"),
            format!(r#"{{"Repositories":{{"redis":{{"redis@{pulled}":"{image}"}}}}}}"#),
        )
        .expect("write");
        std::fs::create_dir_all(root.join("image/vfs")).expect("dir");
        std::fs::write(root.join("image/vfs/repositories.json"), "{not json").expect("write");
        let mut problems = Vec::new();
        let digests = repo_digests(root, &mut problems);
        assert_eq!(digests.get(&image), Some(&pulled));
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn the_data_root_comes_from_the_flag_or_daemon_json_or_the_default() {
        let mut problems = Vec::new();
        let flagged = data_roots(
            &dockerd("dockerd --data-root=/srv/docker"),
            Path::new("/"),
            &mut problems,
        );
        assert_eq!(
            flagged,
            BTreeMap::from([(PathBuf::from("/srv/docker"), None)])
        );
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("daemon.json");
        std::fs::write(
            &config,
            r#"{"data-root": "/data/docker", "log-level": "warn"}"#,
        )
        .expect("json");
        let configured = data_roots(
            &dockerd(&format!("dockerd --config-file {}", config.display())),
            Path::new("/"),
            &mut problems,
        );
        assert_eq!(
            configured,
            BTreeMap::from([(PathBuf::from("/data/docker"), None)])
        );
        let bare = data_roots(&dockerd("dockerd"), dir.path(), &mut problems);
        assert_eq!(
            bare,
            BTreeMap::from([(PathBuf::from(DEFAULT_DATA_ROOT), None)])
        );
        assert!(problems.is_empty(), "{problems:?}");
        // No dockerd and no default directory under this root: nothing.
        assert!(data_roots(&BTreeMap::new(), dir.path(), &mut problems).is_empty());
    }
}
