//! LXC's system containers, from the monitors that run them and each
//! container's own configuration, read-only; no `lxc-*` command is run (each
//! one talks to the container's monitor over its command socket, and some
//! take the container's locks).
//!
//! A running container has a monitor, a process whose title LXC sets to
//! `[lxc monitor] LXCPATH NAME` (its `comm` stays the launcher's,
//! `lxc-start`), in cgroups of its own (`lxc.monitor.NAME`); its init is the
//! monitor's child, and every process of the container lives under the
//! payload cgroup `lxc.payload.NAME` (`/lxc/NAME` before LXC 4), which the
//! cgroup parser turns into the hint `lxc:NAME`. A container whose monitor
//! cannot be seen is still found by that hint, its configuration looked for
//! under the configured lxcpath (`lxc.lxcpath` in /etc/lxc/lxc.conf, else
//! /var/lib/lxc).
//!
//! From `LXCPATH/NAME/config` (and the files it includes): the template
//! `lxc-create` used (the comment lines it writes) as the image, the root
//! file system, `lxc.idmap` (none: a privileged container), the network
//! types and the bind mounts. A system container has no image to compare
//! its executables with: its own package database is the authority, so an
//! executable no package of the container owns is drift (see
//! [`lxc_containers`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use perimeter_model::{Container, Ownership, Problem, Process};

use super::{MAX_CONTAINERS, is_runtime_socket, rooted};
use crate::packages::PackageDb;

pub(super) const RUNTIME: &str = "lxc";
/// Where LXC keeps containers when nothing else is configured.
const DEFAULT_LXCPATH: &str = "/var/lib/lxc";
/// LXC's system-wide configuration, which may move the lxcpath.
const LXC_CONF: &str = "/etc/lxc/lxc.conf";
/// The largest configuration file read: a real one is a few kilobytes.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// How deep `lxc.include` is followed, and how many files one container's
/// configuration may gather in all: includes may name directories and each
/// other.
const MAX_INCLUDE_DEPTH: usize = 3;
const MAX_CONFIG_FILES: usize = 32;
/// The title LXC gives a container's monitor process.
const MONITOR_TITLE: &str = "[lxc monitor] ";

/// What a container's configuration says that matters here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LxcConfig {
    /// `# Template used to create this container: PATH`, written by
    /// `lxc-create`.
    pub template: Option<String>,
    /// `# Parameters passed to the template: ...`.
    pub template_parameters: Option<String>,
    /// `lxc.rootfs.path`, as written (`dir:/var/lib/lxc/web/rootfs`,
    /// `/srv/web`, `btrfs:...`).
    pub rootfs: Option<String>,
    /// Whether any `lxc.idmap` maps the container's ids to others of the
    /// host.
    pub idmap: bool,
    /// Each `lxc.net.N.type`, by N.
    pub net_types: BTreeMap<u32, String>,
    /// The source of each `lxc.mount.entry` (its first field).
    pub mount_sources: Vec<String>,
    /// Each `lxc.include`, in order.
    pub includes: Vec<String>,
}

impl LxcConfig {
    /// What the container was made from: the template and its parameters
    /// (`lxc-download -d debian -r bookworm -a amd64`), else its root file
    /// system.
    pub fn image(&self) -> String {
        match &self.template {
            Some(template) => {
                let name = Path::new(template)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_else(|| template.clone());
                match self.template_parameters.as_deref().map(str::trim) {
                    Some(parameters) if !parameters.is_empty() => format!("{name} {parameters}"),
                    _ => name,
                }
            }
            None => self
                .rootfs
                .as_deref()
                .map(|rootfs| rootfs.strip_prefix("dir:").unwrap_or(rootfs).to_owned())
                .unwrap_or_default(),
        }
    }

    /// `host` when a network of type `none` shares the network namespace
    /// LXC was started in, else `private`: the container has a namespace of
    /// its own (`empty`, `veth`, `macvlan`, `phys`, ..., and no network at
    /// all, which since LXC 3 is an empty namespace).
    pub fn network_mode(&self) -> &'static str {
        if self.net_types.values().any(|kind| kind == "none") {
            "host"
        } else {
            "private"
        }
    }

    /// Whether a bind mount hands the container a runtime's API socket:
    /// Docker's, Podman's, containerd's, CRI-O's, or LXD's and Incus's
    /// (`unix.socket` in their state directories), which start and
    /// reconfigure containers, this one among them.
    pub fn runtime_socket_mounted(&self) -> bool {
        self.mount_sources.iter().any(|source| {
            is_runtime_socket(source)
                || ["lxd/unix.socket", "incus/unix.socket"]
                    .iter()
                    .any(|socket| source.ends_with(socket))
        })
    }

    /// Another file's settings (an included one) added to these: its
    /// network types only where these set none of their own.
    fn merge(&mut self, other: LxcConfig) {
        self.idmap |= other.idmap;
        for (idx, kind) in other.net_types {
            self.net_types.entry(idx).or_insert(kind);
        }
        self.mount_sources.extend(other.mount_sources);
        if self.rootfs.is_none() {
            self.rootfs = other.rootfs;
        }
    }
}

/// Parses a container's configuration (`key = value` lines, `#` comments,
/// the two comment lines `lxc-create` writes about the template).
pub fn parse_lxc_config(text: &str) -> LxcConfig {
    let mut config = LxcConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(template) = comment.strip_prefix("Template used to create this container:")
            {
                let template = template.trim();
                if !template.is_empty() {
                    config.template = Some(template.to_owned());
                }
            } else if let Some(parameters) =
                comment.strip_prefix("Parameters passed to the template:")
            {
                config.template_parameters = Some(parameters.trim().to_owned());
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "lxc.rootfs.path" if !value.is_empty() => config.rootfs = Some(value.to_owned()),
            "lxc.idmap" if !value.is_empty() => config.idmap = true,
            // An empty `lxc.idmap` or `lxc.net` clears what came before.
            "lxc.idmap" => config.idmap = false,
            "lxc.net" => config.net_types.clear(),
            "lxc.mount.entry" => {
                if let Some(source) = value.split_whitespace().next() {
                    config.mount_sources.push(source.to_owned());
                }
            }
            "lxc.include" if !value.is_empty() => config.includes.push(value.to_owned()),
            _ => {
                if let Some(idx) = key
                    .strip_prefix("lxc.net.")
                    .and_then(|rest| rest.strip_suffix(".type"))
                    .and_then(|idx| idx.parse::<u32>().ok())
                {
                    config.net_types.insert(idx, value.to_owned());
                }
            }
        }
    }
    config
}

/// The lxcpath and name a monitor's title gives (`[lxc monitor]
/// /var/lib/lxc web`). A name never holds a space or a `/`; a path may hold
/// spaces, so the name is the last word.
pub fn parse_monitor_title(title: &str) -> Option<(PathBuf, String)> {
    let rest = title.strip_prefix(MONITOR_TITLE)?.trim_end_matches('\0');
    let (lxcpath, name) = rest.trim_end().rsplit_once(' ')?;
    if !lxcpath.starts_with('/') || !is_container_name(name) {
        return None;
    }
    Some((PathBuf::from(lxcpath), name.to_owned()))
}

/// `lxc.lxcpath` in LXC's system-wide configuration, when it is an absolute
/// path.
pub fn parse_lxc_conf_lxcpath(text: &str) -> Option<PathBuf> {
    text.lines().rev().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        let value = value.trim();
        (key.trim() == "lxc.lxcpath" && value.starts_with('/')).then(|| PathBuf::from(value))
    })
}

/// A name that is safe as one path component: LXC refuses `/` in names, and
/// a name from a cgroup or a title must not climb out of the lxcpath.
fn is_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0', ' '])
}

/// The root file system on the host from `lxc.rootfs.path`: a directory
/// (`dir:PATH`, or a plain absolute path). Every other backend (`btrfs:`,
/// `zfs:`, `lvm:`, `loop:`, `overlay:`, `rbd:`, `nbd:`) is mounted only
/// inside the container's mount namespace, or holds more than the
/// container's files: its name, as an error.
pub fn rootfs_dir(rootfs: &str) -> Result<PathBuf, String> {
    let path = rootfs.strip_prefix("dir:").unwrap_or(rootfs);
    if path.starts_with('/') {
        return Ok(PathBuf::from(path));
    }
    Err(rootfs
        .split_once(':')
        .map_or(rootfs, |(backend, _)| backend)
        .to_owned())
}

/// A container's configuration with its includes, or why it could not be
/// read.
fn read_config(fs_root: &Path, path: &Path) -> Result<LxcConfig, String> {
    let text = perimeter_files::read_text(
        &rooted(fs_root, path),
        "an LXC container's configuration",
        MAX_CONFIG_BYTES,
    )
    .map_err(|err| err.to_string())?;
    let mut config = parse_lxc_config(&text);
    let mut n_files = 1;
    let mut pending: Vec<(String, usize)> =
        config.includes.iter().map(|i| (i.clone(), 1)).collect();
    // Breadth first, bounded: a missing or unreadable include is what LXC
    // itself would refuse to start with, so it is skipped here, not
    // reported.
    while let Some((include, depth)) = pending.pop() {
        if depth > MAX_INCLUDE_DEPTH || n_files >= MAX_CONFIG_FILES || !include.starts_with('/') {
            continue;
        }
        let include = rooted(fs_root, Path::new(&include));
        let files = if include.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&include)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|entry| entry.path())
                        .filter(|path| path.extension().is_some_and(|ext| ext == "conf"))
                        .take(MAX_CONFIG_FILES)
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            files
        } else {
            vec![include]
        };
        for file in files {
            if n_files >= MAX_CONFIG_FILES {
                break;
            }
            n_files += 1;
            let Ok(text) = perimeter_files::read_text(
                &file,
                "an LXC container's configuration",
                MAX_CONFIG_BYTES,
            ) else {
                continue;
            };
            let included = parse_lxc_config(&text);
            pending.extend(included.includes.iter().map(|i| (i.clone(), depth + 1)));
            config.merge(included);
        }
    }
    Ok(config)
}

/// The running containers' names, each with its lxcpath and monitor (from
/// the monitors' titles and the processes' cgroup hints).
fn running_containers(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
) -> BTreeMap<String, (PathBuf, Option<u32>)> {
    let mut running: BTreeMap<String, (PathBuf, Option<u32>)> = BTreeMap::new();
    for process in processes.values() {
        let title = process.cmdline.join(" ");
        if let Some((lxcpath, name)) = parse_monitor_title(&title)
            && (running.len() < MAX_CONTAINERS || running.contains_key(&name))
        {
            running.insert(name, (lxcpath, Some(process.pid)));
        }
    }
    let hinted: BTreeSet<&str> = processes
        .values()
        .filter_map(|p| p.container.as_deref()?.strip_prefix("lxc:"))
        .filter(|name| is_container_name(name))
        .collect();
    if hinted.iter().any(|name| !running.contains_key(*name)) {
        let lxcpath = perimeter_files::read_text(
            &rooted(fs_root, Path::new(LXC_CONF)),
            "LXC's configuration",
            MAX_CONFIG_BYTES,
        )
        .ok()
        .and_then(|text| parse_lxc_conf_lxcpath(&text))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_LXCPATH));
        for name in hinted {
            if running.len() >= MAX_CONTAINERS {
                break;
            }
            running
                .entry(name.to_owned())
                .or_insert_with(|| (lxcpath.clone(), None));
        }
    }
    running
}

/// A container's init: the monitor's child in the container's cgroup, else
/// the process of that cgroup whose parent is outside it.
fn init_process(
    processes: &BTreeMap<u32, Process>,
    members: &[u32],
    monitor: Option<u32>,
) -> Option<u32> {
    let member = |pid: u32| members.binary_search(&pid).is_ok();
    monitor
        .and_then(|monitor| {
            members
                .iter()
                .copied()
                .find(|pid| processes.get(pid).is_some_and(|p| p.ppid == monitor))
        })
        .or_else(|| {
            members
                .iter()
                .copied()
                .find(|pid| processes.get(pid).is_some_and(|p| !member(p.ppid)))
        })
}

/// The executables of a container's processes that no package of the
/// container owns, judged against the package database in its root file
/// system (pid, executable as the container sees it); the problems of
/// reading it. Processes whose executable was deleted are left to the
/// audit, which calls every such process drift.
///
/// The database is read through the host's view of the container's root:
/// a container's root could plant symlinks there (`var/lib/dpkg` to the
/// host's), so the answer is the container's word about itself, which is
/// what a system container's package database always is.
fn unpackaged(
    name: &str,
    rootfs: &Path,
    processes: &BTreeMap<u32, Process>,
    members: &[u32],
    problems: &mut Vec<Problem>,
) -> Vec<(u32, PathBuf)> {
    let judged: Vec<(u32, PathBuf)> = members
        .iter()
        .filter_map(|pid| processes.get(pid))
        .filter(|p| !p.exe_deleted)
        .filter_map(|p| Some((p.pid, p.exe.clone()?)))
        .collect();
    if judged.is_empty() {
        return Vec::new();
    }
    let (db, db_problems) = PackageDb::open(rootfs);
    problems.extend(db_problems);
    if !db.has_database() {
        problems.push(
            Problem::new(
                format!("lxc container {name}"),
                format!(
                    "no package database in its root file system {}: its executables are not judged",
                    rootfs.display()
                ),
            )
            .with_hint("a system container's packages are the authority for what it runs"),
        );
        return Vec::new();
    }
    let mut exes: Vec<PathBuf> = judged.iter().map(|(_, exe)| exe.clone()).collect();
    exes.sort();
    exes.dedup();
    let (owners, owner_problems) = db.owners(&exes);
    problems.extend(owner_problems);
    judged
        .into_iter()
        .filter(|(_, exe)| owners.get(exe) == Some(&Ownership::Unpackaged))
        .collect()
}

/// LXC's running containers, each with the executables its own packages do
/// not own as drift, and what could not be read.
pub fn lxc_containers(
    processes: &BTreeMap<u32, Process>,
    fs_root: &Path,
    proc_root: &Path,
) -> (Vec<Container>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut containers = Vec::new();
    for (name, (lxcpath, monitor)) in running_containers(processes, fs_root) {
        let hint = format!("{RUNTIME}:{name}");
        let members: Vec<u32> = processes
            .values()
            .filter(|p| p.container.as_deref() == Some(hint.as_str()))
            .map(|p| p.pid)
            .collect();
        let pid = init_process(processes, &members, monitor);
        let config_path = lxcpath.join(&name).join("config");
        let config = match read_config(fs_root, &config_path) {
            Ok(config) => Some(config),
            Err(message) => {
                problems.push(
                    Problem::new(
                        format!("lxc container {name}"),
                        format!("its configuration could not be read: {message}"),
                    )
                    .with_hint("run as root to see what an LXC container may do"),
                );
                None
            }
        };
        let read = config.is_some();
        let config = config.unwrap_or_default();
        let host_network = read && config.network_mode() == "host";
        let addresses = match pid {
            Some(pid) if !host_network => super::podman::netns_addresses(proc_root, pid),
            _ => Vec::new(),
        };
        let drift = match config.rootfs.as_deref().map(rootfs_dir) {
            Some(Ok(rootfs)) => unpackaged(
                &name,
                &rooted(fs_root, &rootfs),
                processes,
                &members,
                &mut problems,
            ),
            Some(Err(backend)) => {
                problems.push(Problem::new(
                    format!("lxc container {name}"),
                    format!(
                        "its root file system is on LXC's {backend} backend, which is not read: its executables are not judged against its packages"
                    ),
                ));
                Vec::new()
            }
            // No configuration, or one without a root file system (which
            // LXC would refuse to start): the problem is said above, or
            // there is nothing to judge against.
            None => Vec::new(),
        };
        containers.push(Container {
            runtime: RUNTIME.to_owned(),
            id: name.clone(),
            name,
            namespace: None,
            pod: None,
            image: config.image(),
            image_id: String::new(),
            image_digest: None,
            running: true,
            pid,
            addresses,
            // Without `lxc.idmap` the container has no user namespace: its
            // root is the host's root, with whatever capabilities LXC did
            // not drop, and an escape is a root shell on the host.
            // A configuration that could not be read claims nothing.
            privileged: read && !config.idmap,
            network_mode: if read {
                config.network_mode().to_owned()
            } else {
                String::new()
            },
            runtime_socket_mounted: config.runtime_socket_mounted(),
            writable_layer: None,
            drift,
            published: Vec::new(),
            daemon_netns: monitor.and_then(|pid| processes.get(&pid)?.netns_inode),
        });
    }
    (containers, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# Template used to create this container: /usr/share/lxc/templates/lxc-download
# Parameters passed to the template: -d debian -r bookworm -a amd64
# For additional config options, please look at lxc.container.conf(5)

# Uncomment the following line to support nesting containers:
#lxc.include = /usr/share/lxc/config/nesting.conf
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = linux64

# Container specific configuration
lxc.rootfs.path = dir:/var/lib/lxc/web/rootfs
lxc.uts.name = web

# Network configuration
lxc.net.0.type = veth
lxc.net.0.link = lxcbr0
lxc.net.0.flags = up
lxc.mount.entry = /var/run/docker.sock var/run/docker.sock none bind,create=file 0 0
lxc.mount.entry = /srv/data srv/data none bind 0 0
";

    #[test]
    fn a_configuration_says_what_the_container_is_and_may_do() {
        let config = parse_lxc_config(CONFIG);
        assert_eq!(
            config.image(),
            "lxc-download -d debian -r bookworm -a amd64"
        );
        assert_eq!(
            config.rootfs.as_deref(),
            Some("dir:/var/lib/lxc/web/rootfs")
        );
        assert!(!config.idmap);
        assert_eq!(config.network_mode(), "private");
        assert!(config.runtime_socket_mounted());
        assert_eq!(config.includes, ["/usr/share/lxc/config/common.conf"]);

        let unprivileged = parse_lxc_config(
            "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n\
             lxc.net.0.type = none\nlxc.rootfs.path = /srv/c/rootfs\n\
             lxc.mount.entry = /var/snap/lxd/common/lxd/unix.socket dev/lxd/sock none bind 0 0\n",
        );
        assert!(unprivileged.idmap);
        assert_eq!(unprivileged.network_mode(), "host");
        assert_eq!(
            unprivileged.image(),
            "/srv/c/rootfs",
            "no template: the rootfs"
        );
        assert!(unprivileged.runtime_socket_mounted(), "LXD's socket");

        // An empty `lxc.net` clears the networks before it.
        let cleared =
            parse_lxc_config("lxc.net.0.type = none\nlxc.net =\nlxc.net.1.type = empty\n");
        assert_eq!(cleared.network_mode(), "private");
        // Empty template parameters leave the template's name alone.
        let busybox = parse_lxc_config(
            "# Template used to create this container: /usr/share/lxc/templates/lxc-busybox\n\
             # Parameters passed to the template:\n",
        );
        assert_eq!(busybox.image(), "lxc-busybox");
    }

    #[test]
    fn hostile_configurations_give_nothing_and_never_panic() {
        for text in [
            "",
            "=",
            "==\n= =\n",
            "lxc.net..type = none\nlxc.net.-1.type = none\nlxc.net.99999999999.type = none\n",
            "lxc.mount.entry =\nlxc.mount.entry =    \n",
            "# Template used to create this container:\n",
            "\u{0}\u{fffd}lxc.idmap\n",
            "lxc.rootfs.path =\n",
        ] {
            let config = parse_lxc_config(text);
            assert_eq!(config.network_mode(), "private", "{text:?}");
            assert!(
                !config.idmap && !config.runtime_socket_mounted(),
                "{text:?}"
            );
            assert_eq!(config.rootfs, None, "{text:?}");
            assert_eq!(config.image(), "", "{text:?}");
        }
    }

    #[test]
    fn a_monitor_names_its_container_and_lxcpath() {
        assert_eq!(
            parse_monitor_title("[lxc monitor] /var/lib/lxc web"),
            Some((PathBuf::from("/var/lib/lxc"), "web".to_owned()))
        );
        assert_eq!(
            parse_monitor_title("[lxc monitor] /srv/my containers web\0"),
            Some((PathBuf::from("/srv/my containers"), "web".to_owned()))
        );
        for title in [
            "[lxc monitor]",
            "[lxc monitor] ",
            "[lxc monitor] web",
            "[lxc monitor] relative web",
            "[lxc monitor] /var/lib/lxc ..",
            "lxc-start -n web",
            "[lxc monitor] /var/lib/lxc ",
        ] {
            assert_eq!(parse_monitor_title(title), None, "{title:?}");
        }
    }

    #[test]
    fn the_lxcpath_and_root_file_system_are_read_as_lxc_writes_them() {
        assert_eq!(
            parse_lxc_conf_lxcpath("lxc.lxcpath = /srv/lxc\nlxc.bdev.lvm.vg = lxc\n"),
            Some(PathBuf::from("/srv/lxc"))
        );
        assert_eq!(parse_lxc_conf_lxcpath("lxc.lxcpath = relative\n"), None);
        assert_eq!(parse_lxc_conf_lxcpath("garbage"), None);
        assert_eq!(
            rootfs_dir("dir:/var/lib/lxc/web/rootfs"),
            Ok(PathBuf::from("/var/lib/lxc/web/rootfs"))
        );
        assert_eq!(rootfs_dir("/srv/web"), Ok(PathBuf::from("/srv/web")));
        assert_eq!(rootfs_dir("zfs:tank/lxc/web"), Err("zfs".to_owned()));
        assert_eq!(rootfs_dir("overlay:/a:/b"), Err("overlay".to_owned()));
        assert_eq!(rootfs_dir("dir:relative"), Err("dir".to_owned()));
    }

    fn process(pid: u32, ppid: u32, exe: &str, cmdline: &str, container: Option<&str>) -> Process {
        Process {
            ppid,
            exe: Some(PathBuf::from(exe)),
            container: container.map(str::to_owned),
            cmdline: vec![cmdline.to_owned()],
            ..super::super::test_process(pid, "x", "")
        }
    }

    #[test]
    fn a_running_container_is_read_and_judged_by_its_own_packages() {
        let dir = tempfile::tempdir().expect("dir");
        let lxcpath = dir.path().join("lxc");
        let rootfs = lxcpath.join("web/rootfs");
        let info = rootfs.join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).expect("dir");
        // The executables as they are in the root file system: the lookup
        // follows them under it.
        std::fs::create_dir_all(rootfs.join("bin")).expect("dir");
        std::fs::create_dir_all(rootfs.join("opt")).expect("dir");
        std::fs::write(rootfs.join("bin/busybox"), "ELF").expect("busybox");
        std::fs::write(rootfs.join("opt/busybox"), "ELF").expect("copy");
        std::fs::write(info.join("busybox-static.list"), "/.\n/bin\n/bin/busybox\n").expect("list");
        std::fs::write(
            rootfs.join("var/lib/dpkg/status"),
            "Package: busybox-static\nStatus: install ok installed\nVersion: 1:1.35.0-4\nArchitecture: amd64\n\n",
        )
        .expect("status");
        let include = dir.path().join("common.conf");
        std::fs::write(
            &include,
            "lxc.net.1.type = empty\nlxc.include = /nonexistent\n",
        )
        .expect("include");
        std::fs::write(
            lxcpath.join("web/config"),
            format!(
                "# Template used to create this container: /usr/share/lxc/templates/lxc-busybox\n\
                 lxc.include = {}\nlxc.rootfs.path = dir:{}\nlxc.net.0.type = veth\n",
                include.display(),
                rootfs.display()
            ),
        )
        .expect("config");
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(proc_root.join("501/net")).expect("dir");
        std::fs::write(
            proc_root.join("501/net/fib_trie"),
            "Local:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 198.18.7.2\n        /32 host LOCAL\n",
        )
        .expect("fib_trie");
        let monitor = format!("[lxc monitor] {} web", lxcpath.display());
        let processes = BTreeMap::from([
            (500, process(500, 1, "/usr/bin/lxc-start", &monitor, None)),
            (
                501,
                process(501, 500, "/bin/busybox", "init", Some("lxc:web")),
            ),
            (
                502,
                process(502, 501, "/bin/busybox", "httpd", Some("lxc:web")),
            ),
            (
                503,
                process(503, 501, "/opt/busybox", "sleep", Some("lxc:web")),
            ),
            // Another container's process, whose name starts the same.
            (600, process(600, 1, "/tmp/x", "x", Some("lxc:web2"))),
        ]);
        let (containers, problems) = lxc_containers(&processes, Path::new("/"), &proc_root);
        let web = containers.iter().find(|c| c.id == "web").expect("web");
        assert_eq!(
            (web.runtime.as_str(), web.name.as_str(), web.image.as_str()),
            ("lxc", "web", "lxc-busybox")
        );
        assert_eq!(web.pid, Some(501));
        assert!(web.running && web.privileged && !web.runtime_socket_mounted);
        assert_eq!(web.network_mode, "private");
        assert_eq!(web.daemon_netns, Some(4026532000));
        let addresses: Vec<String> = web.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(addresses, ["198.18.7.2"]);
        assert_eq!(web.drift, [(503, PathBuf::from("/opt/busybox"))]);
        // web2 has no monitor and no configuration under the default
        // lxcpath: found by its hint, with the problem said.
        let web2 = containers.iter().find(|c| c.id == "web2").expect("web2");
        assert_eq!(web2.pid, Some(600));
        assert!(web2.drift.is_empty() && web2.network_mode.is_empty() && !web2.privileged);
        assert!(
            problems
                .iter()
                .any(|p| p.subject == "lxc container web2" && p.message.contains("configuration")),
            "{problems:?}"
        );
    }
}
