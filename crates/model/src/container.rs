//! Containers as their runtime keeps them, and how a listener is traced to
//! one: a process inside the container holds the socket (the cgroup names the
//! container), Docker's userland proxy holds the host's published port and
//! forwards to the container's address, or the runtime holds the published
//! port for the container while the kernel's DNAT forwards (dockerd without
//! its proxy; Podman's conmon, which names its container on its command
//! line).

use std::net::IpAddr;

/// A container a runtime on the host knows, read from the runtime's own
/// state (Docker: `<data-root>/containers/<id>/config.v2.json` and
/// `hostconfig.json`; Podman: containers/storage's `containers.json` and
/// `images.json`, and the container's OCI `config.json`; containerd: each
/// running task's bundle, the OCI `config.json` and `init.pid`), read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// `docker`, `podman`, `containerd` or `lxc`.
    pub runtime: String,
    /// The full id (64 hex characters for Docker, Podman and the CRI;
    /// whatever `ctr run` was given for a plain containerd container; the
    /// name for LXC, which has no other).
    pub id: String,
    /// containerd's namespace (`default`, `k8s.io`, ...): ids are unique
    /// only within one. `None` for the runtimes that have none.
    pub namespace: Option<String>,
    /// The Kubernetes pod the container belongs to, when the CRI made it
    /// for the kubelet (from its `io.kubernetes.cri.*` annotations).
    pub pod: Option<Pod>,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// The image as it was asked for (`redis:7`;
    /// `docker.io/library/redis:7` as Podman records it).
    pub image: String,
    /// The image's id (`sha256:...`).
    pub image_id: String,
    /// The digest of the image's manifest (`sha256:...`), when the runtime's
    /// state records it (Podman's `images.json`).
    pub image_digest: Option<String>,
    pub running: bool,
    /// Its first process, as the host sees it.
    pub pid: Option<u32>,
    /// Its addresses on the runtime's networks.
    pub addresses: Vec<IpAddr>,
    pub privileged: bool,
    /// Docker: `bridge`, `host`, `none`, `container:<id>` or a network's name;
    /// Podman: `host`, or `private` for a network namespace of its own; empty
    /// when the runtime's state did not say.
    pub network_mode: String,
    /// The runtime's API socket is mounted into it (`docker.sock`): whoever
    /// controls the container controls the host.
    pub runtime_socket_mounted: bool,
    /// Its writable layer on the host (overlay2's `diff` directory): what was
    /// written inside the container after it started. `None` when the
    /// storage driver keeps no separate layer or it could not be found.
    pub writable_layer: Option<std::path::PathBuf>,
    /// Its processes running an executable that is not the image's: one
    /// written into the writable layer after the container started, or one
    /// deleted since it was started (pid, executable as the container sees
    /// it); for LXC, whose system containers have no image, one that no
    /// package in the container's own package database owns (listed by the
    /// LXC reader). Filled by the collector.
    pub drift: Vec<(u32, std::path::PathBuf)>,
    /// The host ports it publishes (`-p`), as the runtime recorded them.
    /// Empty for Podman, whose state on disk keeps them only in its
    /// database: its conmon holds each published host port as a socket, so
    /// they are listeners, traced by [`conmon_container_id`].
    pub published: Vec<Binding>,
    /// The network namespace of the daemon (Podman: the conmon) that runs
    /// it: where its published ports' DNAT rules are.
    pub daemon_netns: Option<u64>,
}

/// The Kubernetes pod of a container the CRI made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's name (`io.kubernetes.cri.sandbox-name`).
    pub name: String,
    /// Its Kubernetes namespace (`io.kubernetes.cri.sandbox-namespace`).
    pub namespace: String,
    /// The container's name in the pod spec
    /// (`io.kubernetes.cri.container-name`); `None` for the sandbox.
    pub container: Option<String>,
    /// The pod's sandbox (the pause container that holds its namespaces),
    /// not one of its containers (`io.kubernetes.cri.container-type`).
    pub sandbox: bool,
}

/// One published port: the host's address and port, and the container's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub protocol: crate::Protocol,
    /// `0.0.0.0` or `::` for every address.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl Container {
    /// The 12 characters `docker ps` shows; an LXC container's whole name,
    /// which is its id.
    pub fn short_id(&self) -> &str {
        if self.runtime == "lxc" {
            return &self.id;
        }
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// Whether a process's container hint (`runtime:id`, split) names this
    /// container: Docker's and Podman's name a prefix of the id; a
    /// containerd hint names the namespace too (`containerd:NS/ID`), ids
    /// being unique only within one; the cgroup of a Kubernetes container
    /// (`kubernetes:ID`) names a prefix of the CRI's id; an LXC hint
    /// (`lxc:NAME`) names the whole name.
    pub fn answers_to_hint(&self, runtime: &str, id: &str) -> bool {
        if id.is_empty() {
            return false;
        }
        match (runtime, &self.namespace) {
            ("kubernetes", _) => self.pod.is_some() && self.id.starts_with(id),
            (_, Some(namespace)) => {
                self.runtime == runtime
                    && id.split_once('/') == Some((namespace.as_str(), self.id.as_str()))
            }
            // An LXC container's id is its name, which the cgroup gives
            // whole: `web` must not answer for `web2`.
            ("lxc", None) => self.runtime == runtime && self.id == id,
            (_, None) => self.runtime == runtime && self.id.starts_with(id),
        }
    }
}

/// How a listener was traced to its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerVia {
    /// A process of the container holds the socket.
    Process,
    /// `docker-proxy` holds the host's port and forwards to the container.
    Proxy,
    /// The runtime's daemon holds the host's port for the container's
    /// published binding (Docker without its userland proxy reserves it so)
    /// while the kernel's DNAT forwards the connections.
    Daemon,
    /// The container's monitor holds the host's port: Podman reserves each
    /// published port with a socket it hands to the container's conmon,
    /// while the kernel's DNAT forwards the connections.
    Monitor,
    /// Nothing on the host holds the port: a DNAT in nat prerouting sends
    /// it to the container's address (Docker without its userland proxy, a
    /// Kubernetes hostPort).
    Nat,
}

impl ContainerVia {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerVia::Process => "process",
            ContainerVia::Proxy => "docker-proxy",
            ContainerVia::Daemon => "daemon",
            ContainerVia::Monitor => "conmon",
            ContainerVia::Nat => "dnat",
        }
    }
}

/// The container address `docker-proxy` forwards to, from its command line
/// (`-container-ip 172.17.0.2`, or `-container-ip=...`).
pub fn proxy_target(cmdline: &[String]) -> Option<IpAddr> {
    let mut args = cmdline.iter();
    while let Some(arg) = args.next() {
        let value = match arg.split_once('=') {
            Some(("-container-ip" | "--container-ip", value)) => Some(value),
            None if arg == "-container-ip" || arg == "--container-ip" => {
                args.next().map(String::as_str)
            }
            _ => None,
        };
        if let Some(value) = value {
            return value.parse().ok();
        }
    }
    None
}

/// The container a conmon monitors, from its command line (`-c ID`,
/// `--cid ID` or `--cid=ID`): the 64 hex characters of a container id, or
/// nothing.
pub fn conmon_container_id(cmdline: &[String]) -> Option<&str> {
    let mut args = cmdline.iter();
    while let Some(arg) = args.next() {
        let value = match arg.split_once('=') {
            Some(("--cid", value)) => Some(value),
            None if arg == "-c" || arg == "--cid" => args.next().map(String::as_str),
            _ => None,
        };
        if let Some(value) = value {
            return (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
                .then_some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_proxy_names_its_container_address() {
        assert_eq!(
            proxy_target(&args(
                "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 6379 \
                 -container-ip 172.17.0.2 -container-port 6379"
            )),
            Some("172.17.0.2".parse().expect("address"))
        );
        assert_eq!(
            proxy_target(&args(
                "docker-proxy -container-ip=fd00::2 -container-port=80"
            )),
            Some("fd00::2".parse().expect("address"))
        );
        assert_eq!(proxy_target(&args("docker-proxy -container-ip")), None);
        assert_eq!(
            proxy_target(&args("docker-proxy -container-ip not-an-ip")),
            None
        );
        assert_eq!(proxy_target(&args("redis-server *:6379")), None);
    }

    #[test]
    fn an_lxc_hint_names_the_whole_container_name() {
        let container = |runtime: &str, id: &str| Container {
            runtime: runtime.into(),
            id: id.into(),
            namespace: None,
            pod: None,
            name: id.into(),
            image: String::new(),
            image_id: String::new(),
            image_digest: None,
            running: true,
            pid: None,
            addresses: Vec::new(),
            privileged: false,
            network_mode: String::new(),
            runtime_socket_mounted: false,
            writable_layer: None,
            drift: Vec::new(),
            published: Vec::new(),
            daemon_netns: None,
        };
        let web2 = container("lxc", "web2");
        assert!(web2.answers_to_hint("lxc", "web2"));
        assert!(!web2.answers_to_hint("lxc", "web"));
        assert!(!web2.answers_to_hint("docker", "web2"));
        assert_eq!(
            container("lxc", "a-long-container-name").short_id(),
            "a-long-container-name"
        );
        // Docker's hint is a prefix of the id, as before.
        let docker = container("docker", "4f9a0d2c6b1e77");
        assert!(docker.answers_to_hint("docker", "4f9a0d2c6b1e"));
        assert_eq!(docker.short_id(), "4f9a0d2c6b1e");
    }

    #[test]
    fn conmon_names_the_container_it_monitors() {
        let id = "465f3b0d3a0ced7b52d26c20478c743e953ea4e9eb7578ba6857af9f8c9bfea3";
        assert_eq!(
            conmon_container_id(&args(&format!(
                "/usr/bin/conmon --api-version 1 -c {id} -u {id} -r /usr/bin/runc -n web"
            ))),
            Some(id)
        );
        assert_eq!(
            conmon_container_id(&args(&format!("conmon --cid={id}"))),
            Some(id)
        );
        assert_eq!(conmon_container_id(&args("conmon -c")), None);
        assert_eq!(conmon_container_id(&args("conmon -c not-an-id")), None);
        assert_eq!(conmon_container_id(&args("conmon --api-version 1")), None);
    }
}
