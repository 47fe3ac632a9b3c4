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
/// `sh`, a link to it), made once.
pub(crate) fn busybox_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    if rootfs.join("bin/sh").symlink_metadata().is_ok() {
        return rootfs;
    }
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("symlink");
    rootfs
}

/// `dir/rootfs.tar`: [`busybox_rootfs`] as a tarball, for `docker import`
/// and `podman import`.
pub(crate) fn busybox_tarball(dir: &Path) -> PathBuf {
    let tarball = dir.join("rootfs.tar");
    tar(&busybox_rootfs(dir), &tarball);
    tarball
}

/// `tarball`: everything in `dir`.
fn tar(dir: &Path, tarball: &Path) {
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(tarball)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar {}", dir.display());
}

/// The sha256 of a file, in hex (`sha256sum`'s).
fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

/// `dir/image.tar`: an OCI image layout, as a tarball, of one layer holding
/// [`busybox_rootfs`], named `name` (`io.containerd.image.name`), for `ctr
/// images import`.
pub(crate) fn busybox_oci_archive(dir: &Path, name: &str) -> PathBuf {
    let layer = busybox_tarball(dir);
    let oci = dir.join("oci");
    let blobs = oci.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("mkdir");
    // Each blob under its digest; the descriptor that names it (with
    // `more` fields).
    let blob = |path: &Path, media_type: &str, more: &str| -> String {
        let digest = sha256(path);
        std::fs::copy(path, blobs.join(&digest)).expect("copy blob");
        let size = std::fs::metadata(path).expect("blob").len();
        format!(r#"{{"mediaType":"{media_type}","digest":"sha256:{digest}","size":{size}{more}}}"#)
    };
    let layer_digest = sha256(&layer);
    let layer = blob(&layer, "application/vnd.oci.image.layer.v1.tar", "");
    let config = dir.join("image-config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{layer_digest}"]}}}}"#
        ),
    )
    .expect("config");
    let config = blob(&config, "application/vnd.oci.image.config.v1+json", "");
    let manifest = dir.join("image-manifest.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{config},"layers":[{layer}]}}"#
        ),
    )
    .expect("manifest");
    let manifest = blob(
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
        &format!(r#","annotations":{{"io.containerd.image.name":"{name}"}}"#),
    );
    std::fs::write(
        oci.join("index.json"),
        format!(r#"{{"schemaVersion":2,"manifests":[{manifest}]}}"#),
    )
    .expect("index.json");
    std::fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let archive = dir.join("image.tar");
    tar(&oci, &archive);
    archive
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
