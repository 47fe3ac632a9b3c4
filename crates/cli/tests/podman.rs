//! Podman's containers, end to end (issue 12): a real rootful Podman
//! (Debian's podman, with conmon, runc and the CNI plugins) in a lab
//! namespace publishes a container's port with `-p ADDR:6379:6379`; a real
//! connection from another lab namespace is the oracle, and `perimeter
//! audit` must name the container (from Podman's own state: containers/
//! storage's lists, the container's userdata and its conmon) for the port
//! conmon holds, call it `firewall.bypassed` behind an input chain that
//! drops (the CNI portmap plugin's DNAT sends it through FORWARD), naming
//! the container by its address, judge an executable copied into the
//! running container as
//! drift (it is in the container's writable layer, not its image), and not
//! judge the image's own binaries by the host's packages.
//!
//! With firewalld (`firewalld_and_podman_reachability_agrees_with_real_connections`):
//! Debian's real firewalld runs in the same namespace, on a private D-Bus
//! and a private copy of /etc/firewalld, its public zone judging the host's
//! own ports; a client with three source addresses connects to every port,
//! and the audit's reachability must agree with each connection. The
//! published port answers every source (firewalld's forward chain accepts
//! what a DNAT translated, before any zone), a source in the drop zone
//! included: `firewall.bypassed`.
//!
//! Isolation: every podman command runs through `nsenter` into one holder
//! process, started with `ip netns exec` in the lab namespace, that has
//! mounted tmpfs over /run and /var/lib in its private mount namespace: the
//! network namespaces Podman makes (/run/netns), runc's state (/run/runc) and
//! the CNI plugins' cache and address leases (/var/lib/cni) all stay in it
//! and go with it, as do the containers' overlay mounts. The store (`--root`,
//! `--runroot`), the engine's temporary directory and the network
//! configuration are in a temporary directory (CONTAINERS_CONF and
//! CONTAINERS_STORAGE_CONF name private files, so /etc/containers is not
//! read), the container network is 198.18.94.0/24, and every rule the CNI
//! plugins write is in the lab namespace's tables; the lab has no route out.
//! The image is imported from a tarball of a static busybox: no registry is
//! asked.
//!
//! Two settings this machine needs: cgroupfs as the cgroup manager and the
//! file events logger (no systemd as PID 1), and nofile/nproc limits no
//! higher than the test's own (rootful Podman asks the runtime for more,
//! which needs CAP_SYS_RESOURCE).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containers::{self, Holder};
use common::stdout;
use perimeter_testlab::{Daemon, Lab, Ns, Requirement, require, require_that};

const PODMAN_HOST_ADDR: &str = "198.18.93.5";
const CLIENT_ADDR: &str = "198.18.93.9";
/// The source addresses of the firewalld test's client.
const CLIENT_SOURCES: [&str; 3] = [CLIENT_ADDR, "198.18.93.10", "198.18.93.11"];
const CONTAINER_SUBNET: &str = "198.18.94.0/24";
const PORT: u16 = 6379;
const CONTAINER: &str = "perimeter-podman";
const IMAGE: &str = "localhost/perimeter-lab/busybox:1";

fn require_podman_lab() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("podman"))
        && require(Requirement::Tool("conmon"))
        && require(Requirement::Tool("nsenter"))
        && require(Requirement::Tool("iptables-nft-save"))
        && require_that(
            "an OCI runtime for Podman (runc or crun)",
            if Path::new("/usr/sbin/runc").exists()
                || Path::new("/usr/bin/runc").exists()
                || Path::new("/usr/bin/crun").exists()
            {
                Ok(())
            } else {
                Err("neither runc nor crun is installed".to_owned())
            },
        )
        && require_that(
            "the CNI plugins Podman's cni backend runs (containernetworking-plugins)",
            if Path::new("/usr/lib/cni/bridge").exists() {
                Ok(())
            } else {
                Err("/usr/lib/cni/bridge is missing".to_owned())
            },
        )
        && containers::require_busybox()
}

/// A limit for the container no higher than the test's own hard limit.
fn limit(resource: nix::sys::resource::Resource, wanted: u64) -> u64 {
    nix::sys::resource::getrlimit(resource).map_or(wanted, |(_, hard)| hard.min(wanted))
}

/// Rootful Podman in a lab namespace, inside a holder's private mount
/// namespace; its containers removed and the holder stopped on drop.
struct Podman {
    holder: Holder,
    dir: tempfile::TempDir,
    /// The D-Bus system bus Podman's commands (and the CNI plugins they run)
    /// are given, where a test runs firewalld on a private one.
    system_bus: Option<String>,
}

impl Podman {
    fn start(ns: &Ns) -> Podman {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        for sub in ["root", "runroot", "tmp", "net"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let nofile = limit(nix::sys::resource::Resource::RLIMIT_NOFILE, 1024);
        let nproc = limit(nix::sys::resource::Resource::RLIMIT_NPROC, 4096);
        std::fs::write(
            dir.path().join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 network_config_dir = \"{}\"\n\
                 default_subnet = \"{CONTAINER_SUBNET}\"\n",
                path("tmp"),
                path("net"),
            ),
        )
        .expect("containers.conf");
        std::fs::write(
            dir.path().join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                path("root"),
                path("runroot"),
            ),
        )
        .expect("storage.conf");
        // The host's /run and /var/lib hidden from everything Podman
        // starts.
        let holder = Holder::start(ns, dir.path());
        Podman {
            holder,
            dir,
            system_bus: None,
        }
    }

    fn podman(&self, args: &[&str]) -> std::process::Output {
        let path = |name: &str| self.dir.path().join(name).to_string_lossy().into_owned();
        self.holder
            .command("podman")
            .args(["--root", &path("root"), "--runroot", &path("runroot")])
            .args(args)
            .env("CONTAINERS_CONF", path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", path("storage.conf"))
            .envs(
                self.system_bus
                    .iter()
                    .map(|bus| ("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())),
            )
            .stdin(Stdio::null())
            .output()
            .expect("podman runs")
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let output = self.podman(args);
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The test's container, from the busybox image, publishing its port
    /// 6379 as `publish` says (a `-p` value) and answering `+PONG` on it to
    /// every connection, one after another or at once (`-ll`: nc forks one
    /// `echo` per connection and keeps listening).
    fn run_published(&self, publish: &str) {
        self.podman_ok(&[
            "run",
            "-d",
            "--name",
            CONTAINER,
            "-p",
            publish,
            IMAGE,
            "sh",
            "-c",
            "exec busybox nc -ll -p 6379 -e /bin/busybox echo +PONG",
        ]);
    }

    /// An image holding only a static busybox, imported from a tarball.
    fn busybox_image(&self) {
        let tarball = containers::busybox_tarball(self.dir.path());
        self.podman_ok(&["import", &tarball.to_string_lossy(), IMAGE]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // The containers first (their conmons and processes outlive any
        // podman command), taking down their CNI networks; then the holder,
        // the last process of the mount namespace that holds every mount
        // and state file Podman made outside the temporary directory.
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        self.holder.stop();
    }
}

#[test]
fn a_podman_containers_published_port_and_drift_are_the_containers() {
    if !require_podman_lab() {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let host = lab
        .add_host("pdm", &[&format!("{PODMAN_HOST_ADDR}/24")])
        .expect("podman host");
    let client = lab
        .add_host("pcl", &[&format!("{CLIENT_ADDR}/24")])
        .expect("client");

    let podman = Podman::start(&host);
    podman.busybox_image();
    podman.run_published(&format!("{PODMAN_HOST_ADDR}:{PORT}:{PORT}"));
    let container_id = podman.podman_ok(&["inspect", "-f", "{{.Id}}", CONTAINER]);
    let saved = host
        .exec("iptables-nft-save", &[])
        .expect("iptables-nft-save");
    assert!(
        saved.contains("CNI-HOSTPORT-DNAT") && saved.contains("198.18.94."),
        "the CNI portmap plugin's DNAT is in the lab namespace's tables:\n{saved}"
    );

    // The oracle: a client in another namespace reaches the container.
    let address = SocketAddr::new(PODMAN_HOST_ADDR.parse().expect("address"), PORT);
    let reply = common::await_pong(&client, address);
    assert_eq!(
        reply.as_deref().map(str::trim),
        Some("+PONG"),
        "a client reaches the container's published port"
    );

    let approvals = podman.dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    // conmon holds the host's port (Podman reserves it so) while the DNAT
    // forwards: the port is the container's, named from Podman's state.
    let listener = common::listener(&doc, PORT);
    assert_eq!(listener["process"], "conmon", "{listener:#}");
    let reference = &listener["container_ref"];
    assert_eq!(reference["via"], "conmon", "{listener:#}");
    assert_eq!(reference["runtime"], "podman", "{listener:#}");
    assert_eq!(reference["name"], CONTAINER, "{listener:#}");
    assert_eq!(reference["image"], IMAGE, "{listener:#}");
    assert_eq!(reference["id"], container_id.as_str(), "{listener:#}");
    for field in ["image_id", "image_digest"] {
        assert!(
            reference[field]
                .as_str()
                .is_some_and(|id| id.starts_with("sha256:")),
            "{field}: {listener:#}"
        );
    }
    // It runs as the host's root: its own finding.
    assert!(
        common::finding(&doc, "container.root", CONTAINER).is_some(),
        "container.root about {CONTAINER} in {doc:#}"
    );
    // Behind an input chain that drops everything new, the port still
    // answers (the CNI portmap plugin's DNAT sends it through FORWARD):
    // firewall.bypassed, naming the container by the address its network
    // namespace has.
    host.nft(
        "table inet lab {\n\
           chain input {\n\
             type filter hook input priority 0; policy drop;\n\
             iif lo accept\n\
             ct state established,related accept\n\
           }\n\
         }\n",
    )
    .expect("an input chain that drops");
    assert_eq!(
        common::answer(&client, address).as_deref().map(str::trim),
        Some("+PONG"),
        "the input chain's drop does not stop the published port"
    );
    let (_, denied) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
    let needle = format!("{PODMAN_HOST_ADDR}:{PORT}");
    let finding = common::finding(&denied, "firewall.bypassed", &needle)
        .unwrap_or_else(|| panic!("firewall.bypassed about {needle} in {denied:#}"));
    assert!(
        finding
            .to_string()
            .contains(&format!("it reaches container {CONTAINER} ({IMAGE}, ")),
        "{finding:#}"
    );
    // The table names the container, not conmon's package.
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
        stdout(&text).contains(&format!("container {CONTAINER} ({IMAGE})")),
        "the table names the container: {}",
        stdout(&text)
    );

    // A binary dropped into the running container, as a miner would be, and
    // not in a scratch directory: only the writable layer gives it away.
    podman.podman_ok(&[
        "exec",
        "-d",
        CONTAINER,
        "sh",
        "-c",
        // busybox runs the applet its argv[0] names: a link named sleep.
        "busybox mkdir -p /opt && busybox cp /bin/busybox /opt/xminer && \
         busybox ln -s xminer /opt/sleep && exec /opt/sleep 300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let everything = loop {
        let (_, doc) = common::audit_json(
            Some(&host),
            &approvals,
            &["--no-service-probes", "--all-netns"],
        );
        if common::finding(&doc, "container.drift", "/opt/xminer").is_some() {
            break doc;
        }
        assert!(
            Instant::now() < deadline,
            "no container.drift about /opt/xminer: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let drift =
        common::finding(&everything, "container.drift", "/opt/xminer").expect("the drift finding");
    assert_eq!(drift["severity"], "high", "{drift:#}");
    assert!(
        drift["subject"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("container {CONTAINER} ({IMAGE}, "))),
        "{drift:#}"
    );
    // The image's own busybox (the nc the container serves with) is neither
    // drift nor unpackaged.
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
    // With every namespace, the container's own socket is traced to it by
    // its process's cgroup.
    let inside = everything["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["port"] == PORT && l["container_ref"]["via"] == "process")
        .unwrap_or_else(|| {
            panic!("the container's own listener, traced by its process: {everything:#}")
        });
    assert_eq!(inside["container_ref"]["name"], CONTAINER, "{inside:#}");
    assert_eq!(inside["container_ref"]["runtime"], "podman", "{inside:#}");
    assert!(inside["package"].is_null(), "{inside:#}");
    drop(podman);
    drop(lab);
}

/// firewalld in a lab namespace, on a D-Bus system bus of its own (a
/// dbus-daemon on a socket in a temporary directory, which firewall-cmd
/// and Podman's CNI plugins are pointed at), with a private copy of
/// /etc/firewalld bound over it and a tmpfs over /run in a private mount
/// namespace: the host's firewall, bus and configuration are never touched.
/// Both daemons are stopped on drop.
struct Firewalld {
    firewalld: Daemon,
    bus: Daemon,
    dir: tempfile::TempDir,
}

impl Firewalld {
    fn start(ns: &Ns) -> Firewalld {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("cp")
            .arg("-a")
            .arg("/etc/firewalld")
            .arg(dir.path().join("etc"))
            .status()
            .expect("cp runs");
        assert!(status.success(), "copy /etc/firewalld");
        let socket = dir.path().join("bus");
        // Root may own and call anything. Without the eavesdrop allowances
        // Debian 12's firewalld (1.3.3, on dbus 1.14) ends its start with
        // a D-Bus NoReply error and exits; with them it runs.
        std::fs::write(
            dir.path().join("bus.conf"),
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n\
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig>\n\
                   <type>system</type>\n\
                   <listen>unix:path={}</listen>\n\
                   <auth>EXTERNAL</auth>\n\
                   <policy context=\"default\">\n\
                     <allow user=\"root\"/>\n\
                     <allow own=\"*\"/>\n\
                     <allow send_destination=\"*\" eavesdrop=\"true\"/>\n\
                     <allow eavesdrop=\"true\"/>\n\
                   </policy>\n\
                 </busconfig>\n",
                socket.display()
            ),
        )
        .expect("bus.conf");
        let conf = dir.path().join("bus.conf").to_string_lossy().into_owned();
        let mut bus = ns
            .spawn(
                "dbus-daemon",
                &["--config-file", &conf, "--nofork", "--nopidfile"],
            )
            .expect("dbus-daemon starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            bus.ensure_running().expect("dbus-daemon");
            assert!(Instant::now() < deadline, "no bus socket in 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let start = dir.path().join("start");
        std::fs::write(
            &start,
            "#!/bin/sh\nset -e\n\
             mount -t tmpfs -o mode=755 tmpfs /run\n\
             mount --bind \"$1/etc\" /etc/firewalld\n\
             export DBUS_SYSTEM_BUS_ADDRESS=\"unix:path=$1/bus\"\n\
             exec firewalld --nofork --nopid --log-target file --log-file \"$1/firewalld.log\"\n",
        )
        .expect("write");
        std::fs::set_permissions(&start, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let dir_text = dir.path().to_string_lossy().into_owned();
        let firewalld = ns
            .spawn(
                "unshare",
                &[
                    "-m",
                    "--propagation",
                    "private",
                    &start.to_string_lossy(),
                    &dir_text,
                ],
            )
            .expect("firewalld starts");
        let mut firewalld = Firewalld {
            firewalld,
            bus,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = firewalld.firewall_cmd(&["--state"]);
            if state.status.success() {
                break;
            }
            if let Err(err) = firewalld.firewalld.ensure_running() {
                let log = std::fs::read_to_string(firewalld.dir.path().join("firewalld.log"));
                panic!("firewalld: {err:#}\n{}", log.unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "firewalld was not running in 60 s: {}",
                String::from_utf8_lossy(&state.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        firewalld
    }

    fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }

    fn firewall_cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("firewall-cmd")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .stdin(Stdio::null())
            .output()
            .expect("firewall-cmd runs")
    }
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        self.firewalld.stop();
        self.bus.stop();
    }
}

/// firewalld's zones and a real rootful Podman on one host, a client with
/// three source addresses: for every source and port, what perimeter's
/// audit says reaches the host must be what a real connection does. The
/// public zone lets 22 in and rejects 8080 (the host's own listeners); the
/// port Podman publishes with `-p 6379:6379` answers every source anyway
/// (firewalld's forward chain accepts what a DNAT translated, `ct status
/// dnat accept`, before any zone): `firewall.bypassed`, naming the
/// container. A source put in the drop zone loses 22 and keeps 6379.
#[test]
fn firewalld_and_podman_reachability_agrees_with_real_connections() {
    if !require_podman_lab()
        || !require(Requirement::Tool("firewalld"))
        || !require(Requirement::Tool("firewall-cmd"))
        || !require(Requirement::Tool("dbus-daemon"))
    {
        return;
    }
    let mut lab = Lab::new().expect("lab");
    let host = lab
        .add_host("pfw", &[&format!("{PODMAN_HOST_ADDR}/24")])
        .expect("podman host");
    let client_addresses: Vec<String> = CLIENT_SOURCES.iter().map(|a| format!("{a}/24")).collect();
    let client_refs: Vec<&str> = client_addresses.iter().map(String::as_str).collect();
    let client = lab.add_host("pfc", &client_refs).expect("client");
    host.ip(&["link", "set", "lo", "up"]).expect("lo up");
    let firewalld = Firewalld::start(&host);
    // The host's own listeners (ufw or firewalld judges them on INPUT).
    let _host_listeners = host
        .listen_tcp(PODMAN_HOST_ADDR.parse().expect("address"), &[22, 8080])
        .expect("listen on the host");

    let mut podman = Podman::start(&host);
    podman.system_bus = Some(firewalld.bus_address());
    podman.busybox_image();
    podman.run_published(&format!("{PORT}:{PORT}"));
    let address = SocketAddr::new(PODMAN_HOST_ADDR.parse().expect("address"), PORT);
    assert_eq!(
        common::await_pong(&client, address)
            .as_deref()
            .map(str::trim),
        Some("+PONG"),
        "a client reaches the container's published port"
    );
    let saved = host.exec("nft", &["list", "ruleset"]).expect("nft");
    assert!(
        saved.contains("table inet firewalld") && saved.contains("CNI-HOSTPORT-DNAT"),
        "firewalld's table and the CNI portmap plugin's DNAT in the lab namespace:\n{saved}"
    );
    let approvals = podman.dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");

    let drop_zone = format!("--add-source={}", CLIENT_SOURCES[1]);
    let cases: [(&str, Vec<&str>, &[&str]); 2] = [
        ("firewalld's public zone", vec![], &CLIENT_SOURCES),
        (
            "a source in the drop zone",
            vec!["--zone=drop", &drop_zone],
            &[CLIENT_SOURCES[0], CLIENT_SOURCES[2]],
        ),
    ];
    for (name, command, reach_ssh) in cases {
        if !command.is_empty() {
            let output = firewalld.firewall_cmd(&command);
            assert!(
                output.status.success(),
                "{name}: firewall-cmd {command:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let ports = [22, PORT, 8080];
        let connected = client
            .enter(move || {
                perimeter_testlab::connect_all(&CLIENT_SOURCES, PODMAN_HOST_ADDR, &ports)
            })
            .expect("enter the client's namespace");
        let meant: Vec<((std::net::IpAddr, u16), bool)> = connected
            .iter()
            .map(|&((source, port), _)| {
                let listed = |list: &[&str]| {
                    list.iter()
                        .any(|s| s.parse::<std::net::IpAddr>().ok() == Some(source))
                };
                let reaches = (port == 22 && listed(reach_ssh)) || port == PORT;
                ((source, port), reaches)
            })
            .collect();
        assert_eq!(connected, meant, "{name}: the lab did not connect as meant");

        let (_, doc) = common::audit_json(Some(&host), &approvals, &["--no-service-probes"]);
        let mismatches = common::disagreements(&doc, PODMAN_HOST_ADDR, &connected);
        assert!(mismatches.is_empty(), "{name}: {mismatches:#?}\n{doc:#}");
        let finding = common::finding(&doc, "firewall.bypassed", &format!(":{PORT}"))
            .unwrap_or_else(|| panic!("{name}: no firewall.bypassed about {PORT} in {doc:#}"));
        assert!(
            finding
                .to_string()
                .contains(&format!("it reaches container {CONTAINER} ({IMAGE}, ")),
            "{name}: {finding:#}"
        );
    }
    drop(podman);
    drop(firewalld);
    drop(lab);
}
