//! What the container runtime tests (docker.rs, podman.rs, containerd.rs)
//! share: a static busybox as the containers' root file system, the cgroup
//! mounts a runtime under `ip netns exec` needs again, and a holder process
//! whose private mount namespace keeps a runtime's mounts and state.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use perimeter_testlab::{Daemon, Ns, require_that};

/// Shell lines that mount the cgroup file systems again: `ip netns exec`
/// gives a process a private mount namespace with a fresh sysfs and none of
/// the cgroup mounts. cgroup v2 where the process's cgroups are v2 only,
/// else the v1 hierarchies the runtimes need.
pub(crate) const REMOUNT_CGROUPS: &str = "\
if ! grep -qv '^0::' /proc/self/cgroup; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
  mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
  for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
    mkdir -p /sys/fs/cgroup/$c
    mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
  done
fi
";

/// A static busybox (Debian's busybox-static) is there to build images from.
pub(crate) fn require_busybox() -> bool {
    require_that(
        "a static busybox (Debian's busybox-static) for the container image",
        if Path::new("/bin/busybox").exists() {
            Ok(())
        } else {
            Err("/bin/busybox is missing".to_owned())
        },
    )
}

/// `dir/rootfs`: a root file system holding only the static busybox (and
/// `sh`, a link to it).
pub(crate) fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink");
    rootfs
}

/// `dir/rootfs.tar`: [`busybox_rootfs`] as a tarball, for `docker import`
/// and `podman import`.
pub(crate) fn busybox_tarball(dir: &Path) -> PathBuf {
    let rootfs = busybox_rootfs(dir);
    let tarball = dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar");
    tarball
}

/// A process in a lab namespace that has mounted the cgroups again and
/// tmpfs over /run and /var/lib in its private mount namespace, then waits:
/// a runtime run through [`Holder::command`] keeps its mounts and the state
/// it writes there (network namespaces in /run/netns, runc's in /run/runc or
/// /run/containerd/runc, the CNI plugins' in /var/lib/cni) in that namespace,
/// and they go with the holder, the namespace's last process.
pub(crate) struct Holder {
    daemon: Daemon,
}

impl Holder {
    /// The holder, its script and ready mark in `dir`.
    pub(crate) fn start(ns: &Ns, dir: &Path) -> Holder {
        let script = dir.join("holder");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nset -e\n{REMOUNT_CGROUPS}\
                 mount -t tmpfs -o mode=755 tmpfs /run\n\
                 mount -t tmpfs -o mode=755 tmpfs /var/lib\n\
                 touch \"$0.ready\"\n\
                 exec sleep 100000\n"
            ),
        )
        .expect("write");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let mut daemon = ns
            .spawn(&script.to_string_lossy(), &[])
            .expect("the holder starts");
        let ready = dir.join("holder.ready");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if let Err(err) = daemon.ensure_running() {
                panic!("the holder: {err:#}");
            }
            assert!(
                Instant::now() < deadline,
                "the holder was not ready in 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Holder { daemon }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// `program`, run in the holder's mount and network namespaces.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.pid().to_string(), "-m", "-n", program]);
        command
    }

    /// Stop the holder: the last process of its mount namespace, unless a
    /// runtime's processes still live in it.
    pub(crate) fn stop(&mut self) {
        self.daemon.stop();
    }
}
