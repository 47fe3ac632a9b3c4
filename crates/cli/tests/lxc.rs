//! LXC's system containers, end to end (issue 12): Debian's LXC runs a
//! container made here (a directory holding a static busybox, a dpkg
//! database in which one package owns it, and a configuration) with
//! `lxc-start`, on a veth to a bridge in a lab namespace. `perimeter audit
//! --all-netns` must trace the container's listener (busybox httpd on its
//! 198.18.120.2) to runtime lxc and the container's name, from LXC's monitor
//! and the container's configuration; a copy of busybox its package does not
//! own, run from the container's root, is `container.drift`; the packaged
//! busybox is not, and neither is judged by the host's packages.
//!
//! Isolation: LXC runs through `nsenter` in a holder process (see
//! common/containers.rs) in the lab namespace, whose private mount
//! namespace has the cgroups mounted again and tmpfs over /run (LXC's locks
//! and command sockets) and /var/lib. The container's lxcpath, root file
//! system and log are in a temporary directory; its network is a veth whose
//! host end is on the lab namespace's bridge, its address in
//! 198.18.0.0/15. Nothing is downloaded (no template is run) and nothing
//! touches the root namespace's network.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::containers::{self, Holder};
use perimeter_testlab::{Ns, Requirement, require, unique_suffix};

const BRIDGE_ADDRESS: &str = "198.18.120.1/24";
const CONTAINER_ADDRESS: &str = "198.18.120.2";
const PORT: u16 = 18090;

fn require_lxc_lab() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("lxc-start"))
        && require(Requirement::Tool("lxc-stop"))
        && require(Requirement::Tool("lxc-info"))
        && require(Requirement::Tool("nsenter"))
        && containers::require_busybox()
}

/// One LXC container in a lab namespace, started by a holder; on drop it is
/// stopped (killed), its cgroups and LXC's pivot cgroup (when empty)
/// removed, and the holder stopped.
struct Lxc {
    dir: tempfile::TempDir,
    /// The container's name: unique to the run, since it names cgroups
    /// outside the lab (`lxc.payload.NAME`, `lxc.monitor.NAME`).
    name: String,
    holder: Holder,
}

impl Lxc {
    /// The container made and started: a root file system of busybox with a
    /// dpkg database in which `busybox-static` owns `/bin/busybox`, a copy
    /// at `/opt/busybox` nothing owns, and an init that serves on the
    /// container's address and runs the copy.
    fn start(ns: &Ns) -> Lxc {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("perimeter-{}", unique_suffix());
        let lxcpath = dir.path().join("lxc");
        let container = lxcpath.join(&name);
        let rootfs = containers::busybox_rootfs(&container);
        for sub in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "www",
            "opt",
            "var/lib/dpkg/info",
        ] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir");
        }
        std::fs::write(rootfs.join("www/index.html"), "lxc\n").expect("index");
        std::fs::copy(rootfs.join("bin/busybox"), rootfs.join("opt/busybox")).expect("copy");
        std::fs::write(
            rootfs.join("var/lib/dpkg/info/busybox-static.list"),
            "/.\n/bin\n/bin/busybox\n",
        )
        .expect("list");
        std::fs::write(
            rootfs.join("var/lib/dpkg/status"),
            "Package: busybox-static\nStatus: install ok installed\nPriority: optional\n\
             Version: 1:1.35.0-4\nArchitecture: amd64\nDescription: busybox\n\n",
        )
        .expect("status");
        let init = rootfs.join("init.sh");
        std::fs::write(
            &init,
            format!(
                "#!/bin/sh\n\
                 /bin/busybox httpd -f -p {CONTAINER_ADDRESS}:{PORT} -h /www &\n\
                 /opt/busybox sleep 100000 &\n\
                 exec /bin/busybox sleep 100000\n"
            ),
        )
        .expect("init");
        std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        std::fs::write(
            container.join("config"),
            format!(
                "lxc.uts.name = {name}\n\
                 lxc.rootfs.path = dir:{rootfs}\n\
                 lxc.net.0.type = veth\n\
                 lxc.net.0.link = br0\n\
                 lxc.net.0.flags = up\n\
                 lxc.net.0.ipv4.address = {CONTAINER_ADDRESS}/24\n\
                 lxc.autodev = 1\n\
                 lxc.mount.auto = proc:mixed sys:ro\n\
                 lxc.apparmor.profile = unconfined\n\
                 lxc.init.cmd = /init.sh\n\
                 lxc.log.file = {log}\n\
                 lxc.log.level = INFO\n",
                rootfs = rootfs.display(),
                log = dir.path().join("lxc.log").display(),
            ),
        )
        .expect("config");
        ns.ip(&["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        ns.ip(&["addr", "add", BRIDGE_ADDRESS, "dev", "br0"])
            .expect("address");
        ns.ip(&["link", "set", "br0", "up"]).expect("up");
        let holder = Holder::start(ns, dir.path());
        let lxc = Lxc { dir, name, holder };
        let output = lxc.lxc("lxc-start", &[]);
        assert!(
            output.status.success(),
            "lxc-start: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            lxc.log()
        );
        lxc
    }

    fn lxcpath(&self) -> PathBuf {
        self.dir.path().join("lxc")
    }

    fn rootfs(&self) -> PathBuf {
        self.lxcpath().join(&self.name).join("rootfs")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lxc.log")).unwrap_or_default()
    }

    /// An `lxc-*` tool on this container, in the holder's namespaces.
    fn lxc(&self, tool: &str, args: &[&str]) -> Output {
        self.holder
            .command(tool)
            .arg("-P")
            .arg(self.lxcpath())
            .args(["-n", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("lxc runs")
    }

    /// The container's init, as `lxc-info -p` gives it.
    fn init_pid(&self) -> u32 {
        let output = self.lxc("lxc-info", &["-p", "-H"]);
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("lxc-info -p: {output:?}\n{}", self.log()))
    }
}

impl Drop for Lxc {
    fn drop(&mut self) {
        // Killed, not shut down: busybox sleep as init ignores SIGPWR (and
        // lxc-stop refuses a timeout with -k). Then whatever still runs in
        // the cgroups LXC made for this container (nothing, unless lxc-stop
        // failed) is killed, and the cgroups removed (lxc-stop removes
        // them; an interrupted one may not), with LXC's pivot cgroup when
        // no other container uses it: seen from the holder, which mounted
        // them.
        let stopped = self.lxc("lxc-stop", &["-k"]);
        if !stopped.status.success() {
            eprintln!(
                "lxc-stop: {}",
                String::from_utf8_lossy(&stopped.stderr).trim()
            );
        }
        let _ = self
            .holder
            .command("sh")
            .args([
                "-c",
                "set -- /sys/fs/cgroup/*/lxc.payload.\"$1\" /sys/fs/cgroup/*/lxc.monitor.\"$1\" \
                        /sys/fs/cgroup/lxc.payload.\"$1\" /sys/fs/cgroup/lxc.monitor.\"$1\"; \
                 for d in \"$@\"; do \
                   [ -f \"$d/cgroup.procs\" ] && kill -9 $(cat \"$d/cgroup.procs\") 2>/dev/null; \
                 done; sleep 0.2; \
                 for d in \"$@\" /sys/fs/cgroup/*/lxc.pivot /sys/fs/cgroup/lxc.pivot; do \
                   [ -d \"$d\" ] && rmdir \"$d\" 2>/dev/null; \
                 done; true",
                "sh",
                &self.name,
            ])
            .stdin(Stdio::null())
            .status();
        self.holder.stop();
    }
}

/// The audit of every namespace, once `check` finds what it waits for in
/// it: the container's processes may not all run yet when lxc-start
/// returns.
fn audit_until(
    ns: &Ns,
    approvals: &Path,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, doc) =
            common::audit_json(Some(ns), approvals, &["--no-service-probes", "--all-netns"]);
        if check(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "no {what}: {doc:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_lxc_containers_listener_is_its_own_and_its_unpackaged_executable_is_drift() {
    if !require_lxc_lab() {
        return;
    }
    let ns = Ns::new("lxc").expect("namespace");
    let lxc = Lxc::start(&ns);
    // The oracle: the container's httpd answers on its address, from the
    // lab namespace over the bridge.
    ns.wait_tcp(
        format!("{CONTAINER_ADDRESS}:{PORT}")
            .parse()
            .expect("address"),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|err| panic!("the container does not listen: {err:#}\n{}", lxc.log()));
    let init = lxc.init_pid();

    let approvals = lxc.dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let doc = audit_until(&ns, &approvals, "listener of the container", |doc| {
        doc["listeners"].as_array().is_some_and(|listeners| {
            listeners
                .iter()
                .any(|l| l["port"] == PORT && l["protocol"] == "tcp")
        })
    });
    let listener = doc["listeners"]
        .as_array()
        .and_then(|listeners| {
            listeners
                .iter()
                .find(|l| l["port"] == PORT && l["protocol"] == "tcp")
        })
        .expect("the listener");
    assert_eq!(listener["address"], CONTAINER_ADDRESS, "{listener:#}");
    let reference = &listener["container_ref"];
    assert_eq!(reference["runtime"], "lxc", "{listener:#}");
    assert_eq!(reference["id"], lxc.name.as_str(), "{listener:#}");
    assert_eq!(reference["name"], lxc.name.as_str(), "{listener:#}");
    assert_eq!(reference["via"], "process", "{listener:#}");
    // No template made it: the image is its root file system.
    assert_eq!(
        reference["image"],
        lxc.rootfs().to_string_lossy().as_ref(),
        "{listener:#}"
    );
    assert_eq!(
        listener["container"],
        format!("lxc:{}", lxc.name).as_str(),
        "{listener:#}"
    );
    // httpd is the init's child, in the container's cgroup.
    assert!(
        listener["pids"]
            .as_array()
            .is_some_and(|pids| !pids.is_empty() && !pids.contains(&init.into())),
        "httpd, not the init ({init}), holds it: {listener:#}"
    );

    // The copy nothing in the container's package database owns is drift;
    // the packaged busybox (init and httpd) is not, and neither is judged
    // by the host's packages.
    let subject = format!("container {} (", lxc.name);
    let doc = audit_until(
        &ns,
        &approvals,
        "container.drift about /opt/busybox",
        |doc| common::finding(doc, "container.drift", "/opt/busybox").is_some(),
    );
    let drift = common::finding(&doc, "container.drift", "/opt/busybox").expect("drift");
    assert_eq!(drift["severity"], "high", "{drift:#}");
    assert!(
        drift["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with(&subject)),
        "{drift:#}"
    );
    assert!(
        drift["message"]
            .as_str()
            .is_some_and(|r| r.contains("no package in the container's own package database owns")),
        "{drift:#}"
    );
    for exe in ["/bin/busybox", "/opt/busybox"] {
        assert!(
            common::finding(&doc, "exec.unpackaged", exe).is_none(),
            "{exe}: {:#}",
            doc["findings"]
        );
    }
    assert!(
        common::finding(&doc, "container.drift", "/bin/busybox").is_none(),
        "{:#}",
        doc["findings"]
    );
    // No lxc.idmap: privileged, its init the host's root; a network
    // namespace of its own.
    let privileged = common::finding(&doc, "container.privileged", &subject)
        .unwrap_or_else(|| panic!("container.privileged: {:#}", doc["findings"]));
    assert!(
        privileged["message"]
            .as_str()
            .is_some_and(|r| r.contains("no lxc.idmap")),
        "{privileged:#}"
    );
    assert!(
        common::finding(&doc, "container.root", &subject).is_some(),
        "{:#}",
        doc["findings"]
    );
    assert!(
        common::finding(&doc, "container.host-network", &subject).is_none(),
        "{:#}",
        doc["findings"]
    );
    drop(lxc);
    drop(ns);
}
