//! Docker's published ports past ufw, end to end (issue 12): a real dockerd
//! (Debian's docker.io) in a lab namespace publishes a container's port with
//! `-p ADDR:6379:6379` behind ufw's `default deny incoming`; a real connection
//! from another lab namespace is the oracle (it opens: Docker's DNAT in nat
//! PREROUTING sends it through FORWARD, never INPUT), and `perimeter audit` in
//! the Docker host's namespace must agree: the port reachable, and
//! `firewall.bypassed` naming the DNAT and the container's address.
//!
//! Network safety: dockerd runs only under `ip netns exec` of the lab
//! namespace, with its own data root, exec root, pid file and socket in a
//! temporary directory, its bridge in 198.18.0.0/15 (`--bip`,
//! `--default-address-pool`), so every rule it writes is in that namespace's
//! tables; the lab has no route out. The image is built here (`docker
//! import` of a static busybox): no registry is asked.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{containers, private_ufw_config, stdout, ufw};
use perimeter_testlab::{Daemon, Lab, Ns, Requirement, require};

const DOCKER_HOST_ADDR: &str = "198.18.92.5";
const CLIENT_ADDR: &str = "198.18.92.9";
const PORT: u16 = 6379;
const CONTAINER: &str = "perimeter-published";

fn require_docker_lab() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("dockerd"))
        && require(Requirement::Tool("docker"))
        && require(Requirement::Tool("containerd"))
        && require(Requirement::Tool("runc"))
        && require(Requirement::Tool("ufw"))
        && require(Requirement::Tool("nft"))
        && require(Requirement::Tool("iptables-nft-save"))
        && require(Requirement::Tool("unshare"))
        && containers::require_busybox()
}

/// dockerd in a lab namespace, its containers removed and the daemon stopped
/// (and waited for) on drop.
struct Dockerd {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// dockerd with `extra` flags (`--userland-proxy=false`).
    fn start(ns: &Ns, extra: &[&str]) -> Dockerd {
        let dir = tempfile::tempdir().expect("tempdir");
        // `ip netns exec` gives dockerd a private mount namespace with a fresh
        // sysfs and none of the cgroup mounts: mount them again, then exec
        // it, its chatty log in a file (a pipe nobody reads would fill and
        // stop it).
        let start = dir.path().join("start");
        std::fs::write(
            &start,
            format!(
                "#!/bin/sh\nset -e\n{}exec \"$@\" >\"$0.log\" 2>&1\n",
                containers::REMOUNT_CGROUPS
            ),
        )
        .expect("write");
        std::fs::set_permissions(&start, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let host = format!("unix://{}", path("docker.sock"));
        let daemon = ns
            .spawn(
                &start.to_string_lossy(),
                &[
                    "dockerd",
                    "--data-root",
                    &path("root"),
                    "--exec-root",
                    &path("exec"),
                    "--pidfile",
                    &path("dockerd.pid"),
                    "--host",
                    &host,
                    "--bip",
                    "198.18.90.1/24",
                    "--default-address-pool",
                    "base=198.18.96.0/20,size=24",
                    "--ip6tables=false",
                ]
                .into_iter()
                .chain(extra.iter().copied())
                .collect::<Vec<_>>(),
            )
            .expect("dockerd starts");
        let mut dockerd = Dockerd { daemon, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dockerd.docker(&["info"]).status.success() {
            if let Err(err) = dockerd.daemon.ensure_running() {
                let log = std::fs::read_to_string(dockerd.dir.path().join("start.log"));
                panic!("dockerd: {err:#}\n{}", log.unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "dockerd did not answer in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        dockerd
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("docker.sock").display()),
            )
            .stdin(Stdio::null())
            .output()
            .expect("docker runs")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let output = self.docker(args);
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// An image holding only a static busybox, imported from a tarball.
    fn busybox_image(&self) -> &'static str {
        let tarball = containers::busybox_tarball(self.dir.path());
        let image = "perimeter-lab/busybox:1";
        self.docker_ok(&["import", &tarball.to_string_lossy(), image]);
        image
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first: their shims outlive a stopped dockerd. Then
        // dockerd, given time to stop its containerd (a zombie once it has
        // exited; `Daemon::stop` reaps it).
        let _ = self.docker(&["rm", "-f", CONTAINER]);
        let pid = self.daemon.pid();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let stat = format!("/proc/{pid}/stat");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match std::fs::read_to_string(&stat) {
                Ok(text) if !text.contains(") Z ") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => break,
            }
        }
        self.daemon.stop();
    }
}

/// What a client in `client` reads from `address` within two seconds, if it
/// connects.
fn answer(client: &Ns, address: SocketAddr) -> Option<String> {
    client
        .enter(move || {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            Some(text)
        })
        .expect("enter the client's namespace")
}

/// The lab of both tests: dockerd (with `extra` flags) in a host namespace
/// behind ufw's `default deny incoming`, a busybox container publishing
/// port 6379 on the host's address, and a client that reaches it anyway.
struct Published {
    host: std::sync::Arc<Ns>,
    dockerd: Dockerd,
    image: &'static str,
    container_ip: String,
    ufw_dir: tempfile::TempDir,
    // Last: the namespaces go after dockerd has stopped.
    lab: Lab,
}

fn published_behind_ufw(extra: &[&str]) -> Published {
    let mut lab = Lab::new().expect("lab");
    let host = lab
        .add_host("dkr", &[&format!("{DOCKER_HOST_ADDR}/24")])
        .expect("docker host");
    let client = lab
        .add_host("cli", &[&format!("{CLIENT_ADDR}/24")])
        .expect("client");
    host.ip(&["link", "set", "lo", "up"]).expect("lo up");

    let dockerd = Dockerd::start(&host, extra);
    let image = dockerd.busybox_image();
    let publish = format!("{DOCKER_HOST_ADDR}:{PORT}:{PORT}");
    dockerd.docker_ok(&[
        "run",
        "-d",
        "--name",
        CONTAINER,
        "-p",
        &publish,
        image,
        "sh",
        "-c",
        "while true; do echo +PONG | busybox nc -l -p 6379; done",
    ]);
    let container_ip =
        dockerd.docker_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", CONTAINER]);
    assert!(
        container_ip.starts_with("198.18.90."),
        "the container is on the lab bridge: {container_ip}"
    );

    let ufw_dir = tempfile::tempdir().expect("tempdir");
    private_ufw_config(ufw_dir.path());
    ufw(&host, ufw_dir.path(), &["default", "deny", "incoming"]);
    ufw(&host, ufw_dir.path(), &["allow", "22"]);
    ufw(&host, ufw_dir.path(), &["--force", "enable"]);
    let saved = host
        .exec("iptables-nft-save", &[])
        .expect("iptables-nft-save");
    assert!(
        saved.contains(":ufw-user-input") && saved.contains("-j DNAT --to-destination"),
        "ufw and Docker both in the namespace's tables:\n{saved}"
    );

    // The oracle: ufw denies 6379 on INPUT, and the connection opens anyway.
    let address = SocketAddr::new(DOCKER_HOST_ADDR.parse().expect("address"), PORT);
    let mut reply = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        reply = answer(&client, address);
        if reply.as_deref().is_some_and(|r| r.contains("+PONG")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        reply.as_deref().map(str::trim),
        Some("+PONG"),
        "a client reaches the container through ufw's deny"
    );

    Published {
        host,
        dockerd,
        image,
        container_ip,
        ufw_dir,
        lab,
    }
}

#[test]
fn published_port_behind_ufw_is_firewall_bypassed() {
    if !require_docker_lab() {
        return;
    }
    let Published {
        host,
        dockerd,
        image,
        container_ip,
        ufw_dir,
        lab,
    } = published_behind_ufw(&[]);
    let approvals = ufw_dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    let needle = format!("{DOCKER_HOST_ADDR}:{PORT}");
    let finding = common::finding(&doc, "firewall.bypassed", &needle)
        .unwrap_or_else(|| panic!("firewall.bypassed about {needle} in {doc:#}"));
    let text = finding.to_string();
    assert!(
        text.contains(&format!("{container_ip}:{PORT}"))
            && text.contains("-j DNAT --to-destination")
            && text.contains(&format!("it reaches container {CONTAINER} ({image}, "))
            && finding["severity"] == "high",
        "{finding:#}"
    );
    // The listener (docker-proxy holding the host port) says the truth too.
    let listener = common::listener(&doc, PORT);
    let allowed = listener["reachable_from"]["allowed"].to_string();
    assert!(allowed.contains("0.0.0.0/0"), "{listener:#}");
    // ...and is the container's port, named from Docker's own state, not
    // the package docker.io listening.
    let container_id = dockerd.docker_ok(&["inspect", "-f", "{{.Id}}", CONTAINER]);
    let reference = &listener["container_ref"];
    assert_eq!(reference["via"], "docker-proxy", "{listener:#}");
    assert_eq!(reference["runtime"], "docker", "{listener:#}");
    assert_eq!(reference["name"], CONTAINER, "{listener:#}");
    assert_eq!(reference["image"], image, "{listener:#}");
    assert_eq!(reference["id"], container_id.trim(), "{listener:#}");
    assert!(
        reference["image_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("sha256:")),
        "{listener:#}"
    );
    // It runs as the host's root: its own finding.
    assert!(
        common::finding(&doc, "container.root", CONTAINER).is_some(),
        "container.root about {CONTAINER} in {doc:#}"
    );
    // A binary dropped into the running container, as a miner would be.
    dockerd.docker_ok(&[
        "exec",
        "-d",
        CONTAINER,
        "sh",
        "-c",
        // busybox runs the applet its argv[0] names: a link named sleep.
        "busybox mkdir -p /tmp && busybox cp /bin/busybox /tmp/xminer && \
         busybox ln -s xminer /tmp/sleep && exec /tmp/sleep 300",
    ]);
    // With every namespace, the container's own socket is traced to it by
    // its process's cgroup, and the dropped binary is drift.
    let deadline = Instant::now() + Duration::from_secs(20);
    let everything = loop {
        let (_, doc) = common::audit_json(
            Some(&host),
            &approvals,
            &["--no-service-probes", "--all-netns"],
        );
        if common::finding(&doc, "container.drift", "/tmp/xminer").is_some() {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "no container.drift about /tmp/xminer: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let drift =
        common::finding(&everything, "container.drift", "/tmp/xminer").expect("the drift finding");
    assert_eq!(drift["severity"], "high", "{drift:#}");
    assert!(
        drift["subject"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("container {CONTAINER} ({image}, "))),
        "{drift:#}"
    );
    // The image's own busybox (the nc the container serves with) is neither
    // drift nor unpackaged, and the host's busybox-static package, which
    // owns the same path on the host, is not claimed for it.
    let drifts: Vec<&serde_json::Value> = everything["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["rule"] == "container.drift")
        .collect();
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    assert!(
        common::finding(&everything, "exec.unpackaged", "/bin/busybox").is_none(),
        "the image's binaries are not judged by the host's packages: {:#}",
        everything["findings"]
    );
    let inside = everything["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["port"] == PORT && l["container_ref"]["via"] == "process")
        .unwrap_or_else(|| {
            panic!("the container's own listener, traced by its process: {everything:#}")
        });
    assert_eq!(inside["container_ref"]["name"], CONTAINER, "{inside:#}");
    assert!(inside["package"].is_null(), "{inside:#}");
    let text = common::run(
        Some(&host),
        &[
            "audit",
            "--no-store",
            "--no-service-probes",
            "--approvals",
            &approvals.to_string_lossy(),
        ],
    );
    assert!(
        stdout(&text).contains(&format!("container {CONTAINER} ({image})")),
        "the table names the container: {}",
        stdout(&text)
    );
    drop(dockerd);
    drop(lab);
}

#[test]
fn a_port_published_without_the_userland_proxy_is_firewall_bypassed_too() {
    if !require_docker_lab() {
        return;
    }
    let Published {
        host,
        dockerd,
        image,
        container_ip,
        ufw_dir,
        lab,
    } = published_behind_ufw(&["--userland-proxy=false"]);
    let approvals = ufw_dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    // No proxy: dockerd itself holds the host's port (to reserve it) while
    // the kernel's DNAT forwards; the port is still the container's.
    let listener = common::listener(&doc, PORT);
    assert_eq!(listener["process"], "dockerd", "{listener:#}");
    assert_eq!(listener["container_ref"]["via"], "daemon", "{listener:#}");
    assert_eq!(listener["container_ref"]["name"], CONTAINER, "{listener:#}");
    let needle = format!("{DOCKER_HOST_ADDR}:{PORT}");
    let finding = common::finding(&doc, "firewall.bypassed", &needle)
        .unwrap_or_else(|| panic!("firewall.bypassed about {needle} in {doc:#}"));
    let text = finding.to_string();
    assert!(
        text.contains(&format!("{container_ip}:{PORT}"))
            && text.contains(&format!("it reaches container {CONTAINER} ({image}, "))
            && finding["severity"] == "high",
        "{finding:#}"
    );
    drop(dockerd);
    drop(lab);
}
