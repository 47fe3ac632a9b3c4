//! Test support: network namespaces, veth labs and real daemons, all created by a
//! test and removed when it ends (in `Drop`), so tests and benchmarks only ever
//! send packets to loopback or to addresses inside namespaces they own.
//!
//! A [`Lab`] is a "switch" namespace holding a bridge, and hosts: one namespace
//! each, joined to the bridge by a veth pair, with 198.18.0.0/15 addresses and no
//! default route, so nothing in a lab can reach beyond it.
//!
//! Everything here shells out to iproute2 (`ip`) and nftables (`nft`), the tools
//! an operator would use by hand, and needs root. A test first asks
//! [`require`] for what it needs (root, namespaces, a program): without it the
//! test is skipped, saying so, or fails under `PERIMETER_TEST_STRICT=1`.
//!
//! A [`PgCluster`] is a throwaway PostgreSQL server on a Unix socket in a
//! temporary directory, for the fleet store's and the server's tests.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use postgres::{PG_DATABASE, PG_USER, PgCluster, require_postgres};
pub use require::{Requirement, STRICT_VAR, require, require_rpm, require_that, require_tool};

mod postgres;
mod require;

/// A copy of `program` named `name` in a fresh directory under /tmp (mode
/// 0755, so other users may run it): the "downloaded binary" no package
/// manager knows, running from a world-writable place. The directory goes
/// when the returned guard is dropped.
pub fn copy_to_tmp(program: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("perimeter-test-")
        .tempdir_in("/tmp")
        .expect("tempdir under /tmp");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod tempdir");
    let exe = dir.path().join(name);
    std::fs::copy(program, &exe).expect("copy the program");
    (dir, exe)
}

/// A short name unique to this process and call, usable in interface names
/// (at most 15 bytes with a prefix of up to 5).
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // pid and a counter make names unique within a machine; the nanos keep two
    // runs of the same pid (rare, after a reboot) apart.
    format!(
        "{:x}{:x}{:x}",
        std::process::id() % 0xfff,
        n % 0xff,
        nanos % 0xfff
    )
}

/// Run a command, failing with its stderr when it does not succeed.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    check_output(program, args, output)
}

fn check_output(program: &str, args: &[&str], output: Output) -> Result<String> {
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A network namespace created by the test, deleted on drop (which also
/// removes its veth ends and kills nothing: stop daemons first, [`Daemon`] does
/// that on drop).
#[derive(Debug)]
pub struct Ns {
    name: String,
}

impl Ns {
    /// Create `perimeter-TAG-SUFFIX` with loopback up.
    pub fn new(tag: &str) -> Result<Ns> {
        let name = format!("perimeter-{tag}-{}", unique_suffix());
        run("ip", &["netns", "add", &name])?;
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, for `setns` or `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that runs inside the namespace (`ip netns exec NAME PROGRAM`).
    /// `ip netns exec` execs the program, so a spawned child's pid is the
    /// program's own.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Run a program inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {program} in {}", self.name))?;
        check_output(program, args, output)
    }

    /// Start a long-running program inside the namespace.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Daemon> {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {program} in {}", self.name))?;
        Ok(Daemon::new(program, child))
    }

    /// Load an nftables ruleset (the text of an `nft -f` file) into this
    /// namespace only.
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(ruleset.as_bytes())
                .context("writing nft ruleset")?;
        }
        let output = child.wait_with_output().context("waiting for nft")?;
        check_output("nft", &["-f", "-"], output).map(drop)
    }

    /// Run a closure on a thread that has entered this namespace. Sockets made
    /// inside live in the namespace; threads started inside (a tokio runtime
    /// built in the closure) inherit it.
    pub fn enter<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let file = std::fs::File::open(self.path())
            .with_context(|| format!("cannot open {}", self.path().display()))?;
        let handle = std::thread::spawn(move || -> Result<T> {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns into the lab namespace")?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(_) => bail!("the closure run inside {} panicked", self.name),
        }
    }

    /// TCP listeners on `address` and each of `ports` inside this namespace,
    /// never accepted: the kernel finishes the handshake into the backlog,
    /// which is what a client's connect() waits for.
    pub fn listen_tcp(&self, address: IpAddr, ports: &[u16]) -> Result<Vec<TcpListener>> {
        let ports = ports.to_vec();
        self.enter(move || {
            ports
                .into_iter()
                .map(|port| {
                    TcpListener::bind((address, port))
                        .with_context(|| format!("cannot listen on {address} port {port}"))
                })
                .collect::<Result<Vec<_>>>()
        })?
    }

    /// Wait until a TCP port accepts connections from inside this namespace.
    pub fn wait_tcp(&self, address: SocketAddr, timeout: Duration) -> Result<()> {
        let ok = self.enter(move || {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })?;
        if !ok {
            bail!(
                "nothing accepted on {address} in {} within {timeout:?}",
                self.name
            );
        }
        Ok(())
    }
}

/// Connects from every source to every port of `server` at once, each attempt
/// bound to its source address, from the namespace of the calling thread (in
/// a lab, inside [`Ns::enter`] of the client). A dropped SYN shows as no
/// answer within the timeout; nothing outside the lab is reachable, so there
/// is nothing else to wait for. The answers come port by port, each port's
/// sources in the order given.
pub fn connect_all(sources: &[&str], server: &str, ports: &[u16]) -> Vec<((IpAddr, u16), bool)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server: IpAddr = server.parse().expect("literal");
    let attempts: Vec<(IpAddr, u16)> = ports
        .iter()
        .flat_map(|&port| {
            sources
                .iter()
                .map(move |s| (s.parse::<IpAddr>().expect("literal"), port))
        })
        .collect();
    runtime.block_on(async move {
        let tasks: Vec<_> = attempts
            .iter()
            .map(|&(source, port)| {
                tokio::spawn(async move {
                    let socket = tokio::net::TcpSocket::new_v4().ok()?;
                    socket.bind(SocketAddr::new(source, 0)).ok()?;
                    tokio::time::timeout(
                        Duration::from_secs(3),
                        socket.connect(SocketAddr::new(server, port)),
                    )
                    .await
                    .ok()?
                    .ok()
                })
            })
            .collect();
        let mut results = Vec::new();
        for (task, attempt) in tasks.into_iter().zip(attempts) {
            let connected = matches!(task.await, Ok(Some(_)));
            results.push((attempt, connected));
        }
        results
    })
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it, which takes
        // the peer end in the switch namespace with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A process started by a test, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Daemon {
    program: String,
    child: Option<Child>,
}

impl Daemon {
    pub fn new(program: &str, child: Child) -> Daemon {
        Daemon {
            program: program.to_owned(),
            child: Some(child),
        }
    }

    /// Start a program in the current namespace.
    pub fn spawn(program: &str, args: &[&str]) -> Result<Daemon> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        Ok(Daemon::new(program, child))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Fail if the process has already exited, with what it said on stderr.
    pub fn ensure_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("{} was already stopped", self.program);
        };
        if let Some(status) = child.try_wait()? {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                use std::io::Read;
                let _ = err.read_to_string(&mut stderr);
            }
            bail!(
                "{} exited early ({status}): {}",
                self.program,
                stderr.trim()
            );
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A lab network: a switch namespace with a bridge, and host namespaces joined
/// to it by veth pairs. No namespace gets a default route.
#[derive(Debug)]
pub struct Lab {
    hosts: Vec<Arc<Ns>>,
    switch: Ns,
    n_links: u32,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        let switch = Ns::new("sw")?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        Ok(Lab {
            hosts: Vec::new(),
            switch,
            n_links: 0,
        })
    }

    pub fn switch(&self) -> &Ns {
        &self.switch
    }

    /// Add a host namespace whose `eth0` carries `addresses` (CIDR form, e.g.
    /// `198.18.0.2/15`; IPv6 too, e.g. `2001:db8::2/64` is NOT allowed here: use
    /// lab-only ULA such as `fd00:198:18::2/64`).
    pub fn add_host(&mut self, tag: &str, addresses: &[&str]) -> Result<Arc<Ns>> {
        let ns = Ns::new(tag)?;
        self.n_links += 1;
        let peer = format!("v{}{}", self.n_links, unique_suffix());
        let peer: String = peer.chars().take(15).collect();
        self.switch.ip(&[
            "link",
            "add",
            &peer,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.switch
            .ip(&["link", "set", &peer, "master", "br0", "up"])?;
        for address in addresses {
            ns.ip(&["addr", "add", address, "dev", "eth0", "nodad"])
                .or_else(|_| ns.ip(&["addr", "add", address, "dev", "eth0"]))?;
        }
        ns.ip(&["link", "set", "eth0", "up"])?;
        let ns = Arc::new(ns);
        self.hosts.push(Arc::clone(&ns));
        Ok(ns)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Hosts first (their veths vanish with them), then the switch. A test
        // still holding an Arc<Ns> keeps that namespace until it drops it.
        self.hosts.clear();
    }
}

/// The package the rpm tests build and install under a root.
pub const RPM_FIXTURE_PACKAGE: &str = "perimeter-rpm-fixture";

/// The one file [`RPM_FIXTURE_PACKAGE`] ships, a small shell script.
pub const RPM_FIXTURE_EXE: &str = "/usr/bin/perimeter-rpm-fixture";

/// Builds [`RPM_FIXTURE_PACKAGE`] 1.0-1 (noarch) with `rpmbuild` in `work`,
/// then creates an rpm database at `dbpath` (a path inside the root:
/// `/var/lib/rpm` or `/usr/lib/sysimage/rpm`) under `root` and installs the
/// package there, which writes [`RPM_FIXTURE_EXE`] under `root`. Nothing
/// touches the network or the live host's rpm database.
///
/// The database path is always given: Debian's rpm keeps its own database in
/// `~/.rpmdb`, so `--root` alone would put it at `<root>/root/.rpmdb`.
pub fn install_rpm_fixture(work: &Path, root: &Path, dbpath: &str) -> Result<()> {
    let topdir = work.join("rpmbuild");
    let sources = topdir.join("SOURCES");
    std::fs::create_dir_all(&sources)?;
    std::fs::write(
        sources.join(RPM_FIXTURE_PACKAGE),
        "#!/bin/sh\necho perimeter rpm fixture\n",
    )?;
    let spec = work.join(format!("{RPM_FIXTURE_PACKAGE}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {RPM_FIXTURE_PACKAGE}\n\
             Version: 1.0\n\
             Release: 1\n\
             Summary: perimeter's rpm test fixture\n\
             License: MIT\n\
             BuildArch: noarch\n\
             Source0: {RPM_FIXTURE_PACKAGE}\n\
             \n\
             %description\n\
             One executable for perimeter's tests of rpm under a root.\n\
             \n\
             %install\n\
             mkdir -p %{{buildroot}}/usr/bin\n\
             install -m 0755 %{{SOURCE0}} %{{buildroot}}{RPM_FIXTURE_EXE}\n\
             \n\
             %files\n\
             {RPM_FIXTURE_EXE}\n"
        ),
    )?;
    let topdir_define = format!("_topdir {}", topdir.display());
    run(
        "rpmbuild",
        &["-bb", "--define", &topdir_define, &path_str(&spec)?],
    )?;
    let package = topdir
        .join("RPMS/noarch")
        .join(format!("{RPM_FIXTURE_PACKAGE}-1.0-1.noarch.rpm"));
    std::fs::create_dir_all(root)?;
    let root = path_str(root)?;
    run("rpm", &["--root", &root, "--dbpath", dbpath, "--initdb"])?;
    run(
        "rpm",
        &[
            "--root",
            &root,
            "--dbpath",
            dbpath,
            "-i",
            "--nodeps",
            "--noscripts",
            &path_str(&package)?,
        ],
    )?;
    Ok(())
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
