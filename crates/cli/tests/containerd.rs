//! containerd's containers, end to end (issue 12): a real containerd
//! (Debian's, with runc) in a lab namespace runs two busybox containers with
//! `ctr run`: one from a directory (`--rootfs`) on the namespace's network
//! (`--net-host`) carrying the annotations Kubernetes' CRI plugin writes
//! (pod, its namespace, the container's name and type, the image), one from
//! an imported image, in a network namespace of its own. `perimeter audit`
//! must trace each listener to its container from containerd's own state
//! (the task's bundle: the OCI spec and `init.pid`), with the runtime,
//! containerd's namespace, the container id and, for the first, the pod;
//! and an executable copied into the second (its overlay's upper directory)
//! is `container.drift`.
//!
//! Isolation: containerd runs through `nsenter` in a holder process (see
//! common/containers.rs) started in the lab namespace, whose private mount
//! namespace has tmpfs over /run and /var/lib: runc's state
//! (/run/containerd/runc) and every mount the shims make stay in it. Its
//! root, state and socket are in a temporary directory (`--config` names a
//! private configuration, with the CRI plugin disabled). The image is an
//! OCI layout of a static busybox built here and imported (`ctr images
//! import`): no registry is asked. Nothing leaves the lab namespace: one
//! container shares it, the other has its own.

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::containers::{self, Holder};
use perimeter_testlab::{Daemon, Ns, Requirement, require, unique_suffix};

/// The container on the lab namespace's network, annotated as a pod's.
const WEB: &str = "perimeter-web";
const WEB_PORT: u16 = 18081;
/// The container with a network namespace of its own.
const PLAIN: &str = "perimeter-plain";
const PLAIN_PORT: u16 = 18082;
const POD: &str = "web-7d9f8-lab";
const POD_NAMESPACE: &str = "shop";
const IMAGE: &str = "perimeter-lab/busybox:1";

fn require_containerd_lab() -> bool {
    require(Requirement::Netns)
        && require(Requirement::Tool("containerd"))
        && require(Requirement::Tool("ctr"))
        && require(Requirement::Tool("runc"))
        && require(Requirement::Tool("nsenter"))
        && containers::require_busybox()
}

/// containerd in a lab namespace, inside a holder's private mount namespace;
/// on drop its tasks and containers are removed, the daemon, any shim left
/// and the holder stopped, and the namespace's cgroups removed.
struct Containerd {
    dir: tempfile::TempDir,
    /// containerd's namespace for the test's containers (unique to the run:
    /// it names cgroups outside the lab).
    namespace: String,
    daemon: Option<Daemon>,
    holder: Holder,
}

impl Containerd {
    fn start(ns: &Ns) -> Containerd {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\n\
                 root = \"{}\"\n\
                 state = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                path("root"),
                path("state"),
                path("containerd.sock"),
            ),
        )
        .expect("config.toml");
        let holder = Holder::start(ns, dir.path());
        // Its log in a file: a pipe nobody reads would fill and stop it.
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = holder
            .command("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let mut containerd = Containerd {
            namespace: format!("perimeter-{}", unique_suffix()),
            daemon: Some(Daemon::new("containerd", child)),
            holder,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            if let Some(Err(err)) = containerd.daemon.as_mut().map(Daemon::ensure_running) {
                panic!("containerd: {err:#}\n{}", containerd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer in 30 s:\n{}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        containerd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.holder
            .command("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr runs")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let output = self.ctr(args);
        assert!(
            output.status.success(),
            "ctr {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The pid `ctr task ls` gives a running task.
    fn task_pid(&self, id: &str) -> u32 {
        let tasks = self.ctr_ok(&["task", "ls"]);
        tasks
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
    }

    /// The shims of this containerd (each names its socket with
    /// `-address`), by pid.
    fn shims(&self) -> Vec<i32> {
        let socket = self.socket().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    let args: Vec<String> = cmdline
                        .split(|b| *b == 0)
                        .map(|arg| String::from_utf8_lossy(arg).into_owned())
                        .collect();
                    args.first()
                        .is_some_and(|arg0| arg0.contains("containerd-shim"))
                        && args.iter().any(|arg| arg == &socket)
                })
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The tasks and containers first (their shims outlive containerd),
        // then containerd, then any shim still running, then the cgroups
        // runc made for the namespace (seen from the holder, which mounted
        // them), then the holder: the last process of the mount namespace
        // that holds the shims' mounts and runc's state.
        for id in [WEB, PLAIN] {
            let _ = self.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", id]);
        }
        for id in [WEB, PLAIN] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.ctr(&["task", "delete", id]).status.success()
                && self
                    .ctr(&["task", "ls", "--quiet"])
                    .stdout
                    .split(|b| *b == b'\n')
                    .any(|line| line == id.as_bytes())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.ctr(&["container", "delete", id]);
        }
        let shims = self.shims();
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
        for pid in shims.into_iter().chain(self.shims()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self
            .holder
            .command("sh")
            .args([
                "-c",
                "for d in /sys/fs/cgroup/*/\"$1\" /sys/fs/cgroup/\"$1\"; do \
                   [ -d \"$d\" ] && rmdir \"$d\"/* \"$d\" 2>/dev/null; \
                 done; true",
                "sh",
                &self.namespace,
            ])
            .stdin(Stdio::null())
            .status();
        self.holder.stop();
    }
}

/// The listener on `port` whose container perimeter named, from `perimeter
/// audit` in the lab namespace (every namespace with `--all-netns`), once
/// there is one: busybox may not be listening yet when `ctr run` returns.
fn attributed_listener(
    ns: &Ns,
    approvals: &std::path::Path,
    extra: &[&str],
    port: u16,
) -> serde_json::Value {
    let mut args = vec!["--no-service-probes"];
    args.extend_from_slice(extra);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, doc) = common::audit_json(Some(ns), approvals, &args);
        let found = doc["listeners"].as_array().and_then(|listeners| {
            listeners
                .iter()
                .find(|l| l["port"] == port && l["protocol"] == "tcp")
                .cloned()
        });
        if let Some(listener) = found {
            return listener;
        }
        assert!(
            Instant::now() < deadline,
            "no listener on port {port}: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn containerds_containers_and_a_pods_annotations_name_their_listeners() {
    if !require_containerd_lab() {
        return;
    }
    let ns = Ns::new("ctrd").expect("namespace");
    let containerd = Containerd::start(&ns);
    let archive = containers::busybox_oci_archive(containerd.dir.path(), IMAGE);
    containerd.ctr_ok(&["images", "import", &archive.to_string_lossy()]);
    let rootfs = containers::busybox_rootfs(containerd.dir.path());
    let rootfs = rootfs.to_string_lossy();
    let web_port = WEB_PORT.to_string();
    let plain_port = PLAIN_PORT.to_string();
    let annotations = [
        "io.kubernetes.cri.container-type=container".to_owned(),
        "io.kubernetes.cri.container-name=web".to_owned(),
        format!("io.kubernetes.cri.image-name={IMAGE}"),
        format!("io.kubernetes.cri.sandbox-name={POD}"),
        format!("io.kubernetes.cri.sandbox-namespace={POD_NAMESPACE}"),
    ];
    let mut run_web = vec!["run", "--detach", "--net-host", "--rootfs"];
    for annotation in &annotations {
        run_web.extend(["--annotation", annotation.as_str()]);
    }
    run_web.extend([
        &*rootfs,
        WEB,
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        &web_port,
    ]);
    containerd.ctr_ok(&run_web);
    containerd.ctr_ok(&[
        "run",
        "--detach",
        IMAGE,
        PLAIN,
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        &plain_port,
    ]);
    // The oracle: the web container's port answers in the lab namespace.
    ns.wait_tcp(
        format!("127.0.0.1:{WEB_PORT}").parse().expect("address"),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|err| {
        panic!(
            "the web container does not listen: {err:#}\n{}",
            containerd.log()
        )
    });
    let web_pid = containerd.task_pid(WEB);
    let plain_pid = containerd.task_pid(PLAIN);

    let approvals = containerd.dir.path().join("approvals.toml");
    std::fs::write(&approvals, "version = 1\n").expect("write");
    let listener = attributed_listener(&ns, &approvals, &[], WEB_PORT);
    assert!(
        listener["pids"]
            .as_array()
            .is_some_and(|pids| pids.contains(&web_pid.into())),
        "the container's first process holds it ({web_pid}): {listener:#}"
    );
    let reference = &listener["container_ref"];
    assert_eq!(reference["runtime"], "containerd", "{listener:#}");
    assert_eq!(reference["id"], WEB, "{listener:#}");
    assert_eq!(
        reference["namespace"],
        containerd.namespace.as_str(),
        "{listener:#}"
    );
    assert_eq!(reference["via"], "process", "{listener:#}");
    assert_eq!(reference["name"], "web", "{listener:#}");
    assert_eq!(reference["image"], IMAGE, "{listener:#}");
    assert_eq!(reference["pod"]["name"], POD, "{listener:#}");
    assert_eq!(reference["pod"]["namespace"], POD_NAMESPACE, "{listener:#}");
    assert_eq!(reference["pod"]["container"], "web", "{listener:#}");
    assert_eq!(reference["pod"]["sandbox"], false, "{listener:#}");
    assert_eq!(
        listener["container"],
        format!("containerd:{}/{WEB}", containerd.namespace).as_str(),
        "{listener:#}"
    );

    // Every namespace: the plain container's listener, in its own network
    // namespace, is its own too, and the container's risks are findings.
    let plain = attributed_listener(&ns, &approvals, &["--all-netns"], PLAIN_PORT);
    assert!(
        plain["pids"]
            .as_array()
            .is_some_and(|pids| pids.contains(&plain_pid.into())),
        "the container's first process holds it ({plain_pid}): {plain:#}"
    );
    let reference = &plain["container_ref"];
    assert_eq!(reference["runtime"], "containerd", "{plain:#}");
    assert_eq!(reference["id"], PLAIN, "{plain:#}");
    assert_eq!(reference["name"], PLAIN, "{plain:#}");
    assert_eq!(
        reference["namespace"],
        containerd.namespace.as_str(),
        "{plain:#}"
    );
    assert!(reference["pod"].is_null(), "{plain:#}");
    // Its spec does not name its image: containerd's metadata database does.
    assert_eq!(reference["image"], IMAGE, "{plain:#}");
    assert!(
        reference["image_digest"]
            .as_str()
            .is_some_and(|digest| digest.starts_with("sha256:")),
        "{plain:#}"
    );
    let (_, everything) = common::audit_json(
        Some(&ns),
        &approvals,
        &["--no-service-probes", "--all-netns"],
    );
    let web_subject = format!("container web of pod {POD_NAMESPACE}/{POD} ({IMAGE}, ");
    for rule in ["container.host-network", "container.root"] {
        assert!(
            common::finding(&everything, rule, &web_subject).is_some(),
            "{rule} about {web_subject} in {:#}",
            everything["findings"]
        );
    }
    // Its findings name the image containerd's metadata database gives.
    let plain_subject = format!("container {PLAIN} ({IMAGE}, ");
    assert!(
        common::finding(&everything, "container.root", &plain_subject).is_some(),
        "container.root about {plain_subject} in {:#}",
        everything["findings"]
    );
    assert!(
        common::finding(&everything, "container.host-network", &plain_subject).is_none(),
        "{:#}",
        everything["findings"]
    );

    // A binary dropped into the running container, as a miner would be, and
    // not in a scratch directory: only the writable layer (the upper
    // directory of the overlay its root is) gives it away.
    containerd.ctr_ok(&[
        "task",
        "exec",
        "--detach",
        "--exec-id",
        "drift",
        PLAIN,
        "/bin/sh",
        "-c",
        // busybox runs the applet its argv[0] names: a link named sleep.
        "busybox mkdir -p /opt && busybox cp /bin/busybox /opt/xminer && \
         busybox ln -s xminer /opt/sleep && exec /opt/sleep 300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let drifted = loop {
        let (_, doc) = common::audit_json(
            Some(&ns),
            &approvals,
            &["--no-service-probes", "--all-netns"],
        );
        if let Some(finding) = common::finding(&doc, "container.drift", "/opt/xminer") {
            break finding.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no container.drift about /opt/xminer: {:#}",
            doc["findings"]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(drifted["severity"], "high", "{drifted:#}");
    assert!(
        drifted["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with(&plain_subject)),
        "{drifted:#}"
    );
    // The image's own busybox (the httpd both serve with) is not judged by
    // the host's packages.
    assert!(
        common::finding(&everything, "exec.unpackaged", "/bin/busybox").is_none(),
        "{:#}",
        everything["findings"]
    );
    drop(containerd);
    drop(ns);
}
