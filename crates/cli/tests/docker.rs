//! Docker's published ports past ufw, end to end (issue 12): a real dockerd
//! (Debian's docker.io) in a lab namespace publishes a container's port with
//! `-p ADDR:6379:6379` behind ufw's `default deny incoming`; a real connection
//! from another lab namespace is the oracle (it opens: Docker's DNAT in nat
//! PREROUTING sends it through FORWARD, never INPUT), and `perimeter audit` in
//! the Docker host's namespace must agree: the port reachable, and
//! `firewall.bypassed` naming the DNAT and the container's address. The
//! oracle test (`ufw_and_docker_reachability_agrees_with_real_connections`)
//! compares every (source, port) pair of a client with three addresses:
//! `-p 6379:6379` reached by all, `-p 127.0.0.1:6380:6379` by none and
//! quiet, then a DOCKER-USER rule dropping one source, then one that names
//! the one allowed source with `-s` (it drops the container's replies:
//! nobody connects), then the rule the finding's remedy gives (all sources
//! but one dropped, by conntrack's original source).
//!
//! Network safety: dockerd runs only under `ip netns exec` of the lab
//! namespace, with its own data root, exec root, pid file and socket in a
//! temporary directory, its bridge in 198.18.0.0/15 (`--bip`,
//! `--default-address-pool`), so every rule it writes is in that namespace's
//! tables; the lab has no route out. The image is built here (`docker
//! import` of a static busybox): no registry is asked.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{containers, private_ufw_config, stdout, ufw};
use perimeter_testlab::{Daemon, Lab, Ns, Requirement, require};

const DOCKER_HOST_ADDR: &str = "198.18.92.5";
const CLIENT_ADDR: &str = "198.18.92.9";
/// The client's source addresses: `CLIENT_ADDR` first (its own), then the
/// ones a DOCKER-USER rule tells apart.
const CLIENT_SOURCES: [&str; 3] = [CLIENT_ADDR, "198.18.92.10", "198.18.92.11"];
const PORT: u16 = 6379;
/// The host port `-p 127.0.0.1:LOOPBACK_PORT:6379` publishes on loopback.
const LOOPBACK_PORT: u16 = 6380;
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

/// The lab of the tests: dockerd (with `extra` flags) in a host namespace
/// behind ufw's `default deny incoming` (and `allow 22`), a busybox
/// container serving port 6379 published as `publish` says (`-p` values),
/// and a client, with the addresses `CLIENT_SOURCES`, that reaches it on
/// the host's address anyway.
struct Published {
    host: std::sync::Arc<Ns>,
    client: std::sync::Arc<Ns>,
    dockerd: Dockerd,
    image: &'static str,
    container_ip: String,
    ufw_dir: tempfile::TempDir,
    // Last: the namespaces go after dockerd has stopped.
    lab: Lab,
}

fn published_behind_ufw(extra: &[&str], publish: &[String]) -> Published {
    let mut lab = Lab::new().expect("lab");
    let host = lab
        .add_host("dkr", &[&format!("{DOCKER_HOST_ADDR}/24")])
        .expect("docker host");
    let client_addresses: Vec<String> = CLIENT_SOURCES.iter().map(|a| format!("{a}/24")).collect();
    let client_refs: Vec<&str> = client_addresses.iter().map(String::as_str).collect();
    let client = lab.add_host("cli", &client_refs).expect("client");
    host.ip(&["link", "set", "lo", "up"]).expect("lo up");

    let dockerd = Dockerd::start(&host, extra);
    let image = dockerd.busybox_image();
    let mut run = vec!["run", "-d", "--name", CONTAINER];
    for value in publish {
        run.extend(["-p", value.as_str()]);
    }
    run.extend([
        image,
        "sh",
        "-c",
        // A server that answers connections at once as well as one after
        // another (`-ll`: nc forks one `echo` per connection and keeps
        // listening), so a connection the firewall lets through always
        // finds it.
        "exec busybox nc -ll -p 6379 -e /bin/busybox echo +PONG",
    ]);
    dockerd.docker_ok(&run);
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
    let reply = common::await_pong(&client, address);
    assert_eq!(
        reply.as_deref().map(str::trim),
        Some("+PONG"),
        "a client reaches the container through ufw's deny"
    );

    Published {
        host,
        client,
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
        ..
    } = published_behind_ufw(&[], &[format!("{DOCKER_HOST_ADDR}:{PORT}:{PORT}")]);
    let approvals = ufw_dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    bypassed_finding(
        &doc,
        &format!("{DOCKER_HOST_ADDR}:{PORT}"),
        &container_ip,
        image,
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

/// dockerd without its userland proxy: the port is still the container's,
/// and `firewall.bypassed`; the image, once pushed to a registry, is named
/// with its manifest digest.
#[test]
fn a_port_published_without_the_userland_proxy_is_firewall_bypassed_too() {
    if !require_docker_lab() || !require(Requirement::Tool("docker-registry")) {
        return;
    }
    let Published {
        host,
        dockerd,
        image,
        container_ip,
        ufw_dir,
        lab,
        ..
    } = published_behind_ufw(
        &["--userland-proxy=false"],
        &[format!("{DOCKER_HOST_ADDR}:{PORT}:{PORT}")],
    );
    let approvals = ufw_dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    // No proxy: dockerd itself holds the host's port (to reserve it) while
    // the kernel's DNAT forwards; the port is still the container's.
    let listener = common::listener(&doc, PORT);
    assert_eq!(listener["process"], "dockerd", "{listener:#}");
    assert_eq!(listener["container_ref"]["via"], "daemon", "{listener:#}");
    assert_eq!(listener["container_ref"]["name"], CONTAINER, "{listener:#}");
    bypassed_finding(
        &doc,
        &format!("{DOCKER_HOST_ADDR}:{PORT}"),
        &container_ip,
        image,
    );
    // The image was built here: it has no manifest digest.
    assert!(
        listener["container_ref"]["image_digest"].is_null(),
        "{listener:#}"
    );

    // Pushed to a registry (Debian's docker-registry, on the lab host's
    // loopback), the image gets the digest the registry stored, and the
    // container running it is named with it, from Docker's reference store.
    let registry_dir = tempfile::tempdir().expect("tempdir");
    let config = registry_dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {:?}\nhttp:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n",
            registry_dir.path().join("data")
        ),
    )
    .expect("registry config");
    let _registry = host
        .spawn("docker-registry", &["serve", &config.to_string_lossy()])
        .expect("docker-registry starts");
    let pushed = format!("127.0.0.1:{REGISTRY_PORT}/perimeter-lab/redis:1");
    dockerd.docker_ok(&["tag", image, &pushed]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dockerd.docker(&["push", &pushed]).status.success() {
        assert!(
            Instant::now() < deadline,
            "docker push to the lab registry did not succeed in 30 s"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let repo_digest = dockerd.docker_ok(&["inspect", "-f", "{{index .RepoDigests 0}}", image]);
    let (_, registry_name_digest) = repo_digest
        .rsplit_once('@')
        .unwrap_or_else(|| panic!("a digest reference: {repo_digest}"));
    let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    let listener = common::listener(&doc, PORT);
    assert_eq!(
        listener["container_ref"]["image_digest"], registry_name_digest,
        "{listener:#}"
    );
    assert!(registry_name_digest.starts_with("sha256:"));
    drop(dockerd);
    drop(lab);
}

/// The lab registry's port, on the Docker host namespace's loopback: Docker
/// pushes to a loopback registry without TLS.
const REGISTRY_PORT: u16 = 5000;

/// Ports of the Docker host the oracle connects to: one ufw allows and one it
/// denies (each with a listener of the host's own), the container's port
/// published on every address, and the one published on loopback only.
const ORACLE_PORTS: [u16; 4] = [22, PORT, LOOPBACK_PORT, 8080];

/// ufw's `default deny incoming` and a real dockerd on one host, a client
/// with three source addresses on the lab bridge: for every source and port,
/// what perimeter's audit says reaches the host must be what a real
/// connection does. The port published with `-p 6379:6379` answers every
/// source though ufw denies it (`firewall.bypassed`, naming the container
/// and the DNAT), the one published with `-p 127.0.0.1:6380:6379` answers
/// none (and is no finding), and a DOCKER-USER rule that drops one source
/// is honoured by both.
#[test]
fn ufw_and_docker_reachability_agrees_with_real_connections() {
    if !require_docker_lab() || !require(Requirement::Tool("iptables")) {
        return;
    }
    let Published {
        host,
        client,
        dockerd,
        image,
        container_ip,
        ufw_dir,
        lab,
    } = published_behind_ufw(
        &[],
        &[
            format!("{PORT}:{PORT}"),
            format!("127.0.0.1:{LOOPBACK_PORT}:{PORT}"),
        ],
    );
    // The host's own listeners (ufw or firewalld judges them on INPUT).
    let _host_listeners = host
        .listen_tcp(DOCKER_HOST_ADDR.parse().expect("address"), &[22, 8080])
        .expect("listen on the host");
    let approvals = ufw_dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");

    let dropped = CLIENT_SOURCES[1];
    let drop_one = ["DOCKER-USER", "-s", dropped, "-j", "DROP"];
    // DOCKER-USER's restriction of the published port to one source, the
    // client named `by` conntrack's original source (as the finding's
    // remedy says), or by `-s`, which matches the container's replies too
    // and stops every connection.
    let restrict = |by| {
        [
            "DOCKER-USER",
            "-p",
            "tcp",
            "-m",
            "conntrack",
            "--ctorigdstport",
            "6379",
            "!",
            by,
            CLIENT_SOURCES[0],
            "-j",
            "DROP",
        ]
    };
    let only_first = restrict("--ctorigsrc");
    let replies_dropped = restrict("-s");
    // Each case: the iptables commands that make it (an action, `-I` or
    // `-D`, and a rule), and the sources that then reach the published port.
    // Every source reaches 22 (ufw allows it), none 6380 or 8080.
    struct Case<'a> {
        name: &'a str,
        iptables: Vec<(&'a str, &'a [&'a str])>,
        reach_published: &'a [&'a str],
    }
    let cases = [
        Case {
            name: "ufw denies 6379, Docker publishes it",
            iptables: vec![],
            reach_published: &CLIENT_SOURCES,
        },
        Case {
            name: "DOCKER-USER drops one source",
            iptables: vec![("-I", &drop_one)],
            reach_published: &[CLIENT_SOURCES[0], CLIENT_SOURCES[2]],
        },
        Case {
            name: "DOCKER-USER drops the published port's replies to all but one source",
            iptables: vec![("-D", &drop_one), ("-I", &replies_dropped)],
            reach_published: &[],
        },
        Case {
            name: "DOCKER-USER drops all but one source to the published port",
            iptables: vec![("-D", &replies_dropped), ("-I", &only_first)],
            reach_published: &[CLIENT_SOURCES[0]],
        },
    ];
    for case in cases {
        let name = case.name;
        for (action, rule) in case.iptables {
            let args: Vec<&str> = std::iter::once(action)
                .chain(rule.iter().copied())
                .collect();
            host.exec("iptables", &args)
                .unwrap_or_else(|err| panic!("{name}: iptables {args:?}: {err:#}"));
        }
        let connected = client
            .enter(|| {
                perimeter_testlab::connect_all(&CLIENT_SOURCES, DOCKER_HOST_ADDR, &ORACLE_PORTS)
            })
            .expect("enter the client's namespace");
        // The oracle is what the case meant.
        let meant: Vec<((std::net::IpAddr, u16), bool)> = connected
            .iter()
            .map(|&((source, port), _)| {
                let reaches = port == 22
                    || (port == PORT
                        && case
                            .reach_published
                            .iter()
                            .any(|s| s.parse::<std::net::IpAddr>().ok() == Some(source)));
                ((source, port), reaches)
            })
            .collect();
        assert_eq!(connected, meant, "{name}: the lab did not connect as meant");

        let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
        let mismatches = common::disagreements(&doc, DOCKER_HOST_ADDR, &connected);
        assert!(mismatches.is_empty(), "{name}: {mismatches:#?}\n{doc:#}");

        // The published port is bypassed while some source gets through,
        // the finding naming the DNAT and the container; when the forward
        // path lets nobody through, nothing is bypassed.
        let bypassed = common::finding(&doc, "firewall.bypassed", &format!("0.0.0.0:{PORT}"));
        if case.reach_published.is_empty() {
            assert!(bypassed.is_none(), "{name}: {bypassed:#?}");
        } else {
            let finding = bypassed_finding(&doc, &format!("0.0.0.0:{PORT}"), &container_ip, image);
            // Its remedy is the rule the last case runs (the allowed
            // source in place of ALLOWED): the oracle shows that it works.
            let remedy = std::iter::once("iptables -I")
                .chain(only_first)
                .collect::<Vec<_>>()
                .join(" ")
                .replace(CLIENT_SOURCES[0], "ALLOWED");
            assert!(
                finding["remedy"]
                    .as_str()
                    .is_some_and(|text| text.contains(&remedy)),
                "{name}: the remedy is not `{remedy}`: {finding:#}"
            );
        }
        // The port published on loopback only is the container's, and no
        // finding: nothing beyond the host reaches it.
        let loopback = common::listener(&doc, LOOPBACK_PORT);
        assert_eq!(loopback["address"], "127.0.0.1", "{name}: {loopback:#}");
        assert_eq!(
            loopback["container_ref"]["name"], CONTAINER,
            "{name}: {loopback:#}"
        );
        let about = common::rules_about(&doc, &[&format!(":{LOOPBACK_PORT}")]);
        assert!(about.is_empty(), "{name}: {about:?}");
    }
    drop(dockerd);
    drop(lab);
}

/// The `firewall.bypassed` finding about `endpoint` in `doc`, high, naming
/// Docker's DNAT, the container's address and the container.
fn bypassed_finding<'a>(
    doc: &'a serde_json::Value,
    endpoint: &str,
    container_ip: &str,
    image: &str,
) -> &'a serde_json::Value {
    let finding = common::finding(doc, "firewall.bypassed", endpoint)
        .unwrap_or_else(|| panic!("no firewall.bypassed about {endpoint} in {doc:#}"));
    let text = finding.to_string();
    assert!(
        text.contains(&format!("{container_ip}:{PORT}"))
            && text.contains("-j DNAT --to-destination")
            && text.contains(&format!("it reaches container {CONTAINER} ({image}, "))
            && finding["severity"] == "high",
        "{finding:#}"
    );
    finding
}
