//! What makes a running container a way into its host, from the runtime's
//! own state: privileged, the runtime's API socket mounted, the host's
//! network, its processes running as the host's root.

use perimeter_model::{Container, Finding, HostSnapshot, Severity};

use crate::rules::{
    CONTAINER_DRIFT, CONTAINER_HOST_NETWORK, CONTAINER_PRIVILEGED, CONTAINER_ROOT,
    CONTAINER_RUNTIME_SOCKET,
};

/// How a container is named in findings: `container cache (redis:7,
/// 4f9a0d2c6b1e)`; a Kubernetes container with its pod (`container web of
/// pod shop/web-7d9f8 (...)`); a containerd container whose image its
/// bundle does not say with its runtime instead (`container web
/// (containerd, web)`).
pub fn container_subject(container: &Container) -> String {
    let pod = container
        .pod
        .as_ref()
        .filter(|pod| !pod.sandbox)
        .map(|pod| format!(" of pod {}/{}", pod.namespace, pod.name))
        .unwrap_or_default();
    let image = if container.image.is_empty() {
        &container.runtime
    } else {
        &container.image
    };
    format!(
        "container {}{pod} ({image}, {})",
        container.name,
        container.short_id()
    )
}

pub(crate) fn check(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for container in snapshot.containers.iter().filter(|c| c.running) {
        let subject = container_subject(container);
        let evidence = match &container.namespace {
            Some(namespace) => format!(
                "{} state of container {namespace}/{}",
                container.runtime, container.id
            ),
            None => format!("{} state of container {}", container.runtime, container.id),
        };
        // An LXC system container has no image: its own package database
        // says what belongs in it, and the LXC reader lists what no package
        // of it owns (the audit adds what was deleted since it started).
        let lxc = container.runtime == "lxc";
        for (pid, exe) in &container.drift {
            let process = snapshot.processes.get(pid);
            let why = if !lxc {
                "which its image did not ship: written after the container started, run from a scratch directory, or deleted since"
            } else if process.is_some_and(|p| p.exe_deleted) {
                "which was deleted since it started"
            } else {
                "which no package in the container's own package database owns"
            };
            let mut finding = Finding::new(
                CONTAINER_DRIFT,
                Severity::High,
                format!("{subject} {}", exe.display()),
                format!("{subject} runs {} (pid {pid}), {why}", exe.display()),
            )
            .with_evidence(evidence.clone());
            if let Some(process) = process {
                finding = finding.with_evidence(format!(
                    "pid {pid} as {}{}",
                    process.user_name(),
                    if process.exe_deleted {
                        ", executable deleted"
                    } else {
                        ""
                    }
                ));
            }
            findings.push(finding.with_remedy(if lxc {
                "find how it got there (no package of the container installed it), keep a copy for analysis, then remove it or install what it should be from a package; a system container should run only what its packages ship"
            } else {
                "find how it got there (docker diff or podman diff shows the container's changes), keep a copy for analysis, then replace the container from its image; a container should run only what its image ships"
            }));
        }
        if container.runtime_socket_mounted {
            findings.push(
                Finding::new(
                    CONTAINER_RUNTIME_SOCKET,
                    Severity::Critical,
                    &subject,
                    format!(
                        "{subject} has the container runtime's API socket mounted: whoever controls the container controls the host"
                    ),
                )
                .with_evidence(evidence.clone())
                .with_remedy(
                    "do not mount docker.sock into containers; give a tool that needs the API a proxy that allows only the calls it needs",
                ),
            );
        }
        if container.privileged {
            // A privileged LXC container is one without a user namespace
            // (no `lxc.idmap`), not one given every device: its root is the
            // host's root.
            let (why, remedy) = if lxc {
                (
                    format!(
                        "{subject} is a privileged LXC container (no lxc.idmap): root inside it is root on the host"
                    ),
                    "make it unprivileged: map its user and group ids to unused ones of the host with lxc.idmap and shift its root file system's owners to them",
                )
            } else {
                (
                    format!("{subject} runs privileged: every device and capability of the host"),
                    "run it without --privileged; add only the capabilities and devices it needs",
                )
            };
            findings.push(
                Finding::new(CONTAINER_PRIVILEGED, Severity::High, &subject, why)
                    .with_evidence(evidence.clone())
                    .with_remedy(remedy),
            );
        }
        if container.network_mode == "host" {
            findings.push(
                Finding::new(
                    CONTAINER_HOST_NETWORK,
                    Severity::Medium,
                    &subject,
                    format!(
                        "{subject} uses the host's network: its listeners are the host's, on every address the host has"
                    ),
                )
                .with_evidence(evidence.clone())
                .with_remedy("use a bridge network and publish only the ports it serves, on the addresses they are for"),
            );
        }
        if let Some(process) = container.pid.and_then(|pid| snapshot.processes.get(&pid))
            && process.uid == 0
        {
            findings.push(
                Finding::new(
                    CONTAINER_ROOT,
                    Severity::Medium,
                    &subject,
                    format!(
                        "{subject} runs as the host's root (pid {}): an escape from it is root on the host",
                        process.pid
                    ),
                )
                .with_evidence(evidence)
                .with_remedy(if lxc {
                    "run it unprivileged: map its ids to unused ones of the host with lxc.idmap"
                } else {
                    "run it as an unprivileged user (USER in the image, or --user), or with user namespaces (dockerd --userns-remap, rootless Docker or Podman)"
                }),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::fixtures::{process, render, snapshot};

    fn container(name: &str, pid: u32) -> Container {
        Container {
            runtime: "docker".into(),
            id: format!("{:0<64}", "4f9a0d2c6b1e"),
            namespace: None,
            pod: None,
            name: name.into(),
            image: "redis:7".into(),
            image_id: "sha256:abc".into(),
            image_digest: None,
            running: true,
            pid: Some(pid),
            addresses: Vec::new(),
            privileged: false,
            network_mode: "bridge".into(),
            runtime_socket_mounted: false,
            writable_layer: None,
            drift: Vec::new(),
            published: Vec::new(),
            daemon_netns: None,
        }
    }

    #[test]
    fn risky_containers_are_named_and_tame_or_stopped_ones_are_not() {
        let mut snap = snapshot(
            Vec::new(),
            vec![
                process(100, 1, "/usr/bin/redis-server", 0, "root"),
                process(200, 1, "/usr/bin/nginx", 101, "www-data"),
            ],
        );
        let mut risky = container("ci-runner", 100);
        risky.privileged = true;
        risky.runtime_socket_mounted = true;
        risky.network_mode = "host".into();
        let mut tame = container("web", 200);
        tame.drift = vec![(200, std::path::PathBuf::from("/tmp/xmrig"))];
        let mut stopped = container("old", 300);
        stopped.running = false;
        stopped.privileged = true;
        snap.containers = vec![risky, tame, stopped];
        let mut findings = check(&snap);
        crate::sort_findings(&mut findings);
        expect![[r#"
            critical container.runtime-socket container ci-runner (redis:7, 4f9a0d2c6b1e)
              container ci-runner (redis:7, 4f9a0d2c6b1e) has the container runtime's API socket mounted: whoever controls the container controls the host
              | docker state of container 4f9a0d2c6b1e0000000000000000000000000000000000000000000000000000
            high container.drift container web (redis:7, 4f9a0d2c6b1e) /tmp/xmrig
              container web (redis:7, 4f9a0d2c6b1e) runs /tmp/xmrig (pid 200), which its image did not ship: written after the container started, run from a scratch directory, or deleted since
              | docker state of container 4f9a0d2c6b1e0000000000000000000000000000000000000000000000000000
              | pid 200 as www-data
            high container.privileged container ci-runner (redis:7, 4f9a0d2c6b1e)
              container ci-runner (redis:7, 4f9a0d2c6b1e) runs privileged: every device and capability of the host
              | docker state of container 4f9a0d2c6b1e0000000000000000000000000000000000000000000000000000
            medium container.host-network container ci-runner (redis:7, 4f9a0d2c6b1e)
              container ci-runner (redis:7, 4f9a0d2c6b1e) uses the host's network: its listeners are the host's, on every address the host has
              | docker state of container 4f9a0d2c6b1e0000000000000000000000000000000000000000000000000000
            medium container.root container ci-runner (redis:7, 4f9a0d2c6b1e)
              container ci-runner (redis:7, 4f9a0d2c6b1e) runs as the host's root (pid 100): an escape from it is root on the host
              | docker state of container 4f9a0d2c6b1e0000000000000000000000000000000000000000000000000000
        "#]]
        .assert_eq(&render(&findings));
    }

    #[test]
    fn an_lxc_container_answers_to_its_own_packages_and_idmap() {
        let mut snap = snapshot(
            Vec::new(),
            vec![
                process(100, 1, "/bin/busybox", 0, "root"),
                process(200, 100, "/opt/busybox", 0, "root"),
            ],
        );
        let mut web = container("web", 100);
        web.runtime = "lxc".into();
        web.id = "web".into();
        web.image = "lxc-busybox".into();
        web.image_id = String::new();
        web.network_mode = "private".into();
        web.privileged = true;
        web.drift = vec![(200, std::path::PathBuf::from("/opt/busybox"))];
        snap.containers = vec![web];
        let mut findings = check(&snap);
        crate::sort_findings(&mut findings);
        expect![[r#"
            high container.drift container web (lxc-busybox, web) /opt/busybox
              container web (lxc-busybox, web) runs /opt/busybox (pid 200), which no package in the container's own package database owns
              | lxc state of container web
              | pid 200 as root
            high container.privileged container web (lxc-busybox, web)
              container web (lxc-busybox, web) is a privileged LXC container (no lxc.idmap): root inside it is root on the host
              | lxc state of container web
            medium container.root container web (lxc-busybox, web)
              container web (lxc-busybox, web) runs as the host's root (pid 100): an escape from it is root on the host
              | lxc state of container web
        "#]]
        .assert_eq(&render(&findings));
    }

    #[test]
    fn containerds_containers_are_named_by_pod_or_runtime() {
        let mut snap = snapshot(
            Vec::new(),
            vec![
                process(100, 1, "/usr/bin/nginx", 0, "root"),
                process(200, 1, "/bin/busybox", 0, "root"),
            ],
        );
        let mut web = container("web", 100);
        web.runtime = "containerd".into();
        web.namespace = Some("k8s.io".into());
        web.image = "registry.example/web:1.2".into();
        web.pod = Some(perimeter_model::Pod {
            name: "web-7d9f8".into(),
            namespace: "shop".into(),
            container: Some("web".into()),
            sandbox: false,
        });
        let mut plain = container("t2", 200);
        plain.runtime = "containerd".into();
        plain.id = "t2".into();
        plain.namespace = Some("default".into());
        plain.image = String::new();
        snap.containers = vec![web, plain];
        let mut findings = check(&snap);
        crate::sort_findings(&mut findings);
        expect![[r#"
            medium container.root container t2 (containerd, t2)
              container t2 (containerd, t2) runs as the host's root (pid 200): an escape from it is root on the host
              | containerd state of container default/t2
            medium container.root container web of pod shop/web-7d9f8 (registry.example/web:1.2, 4f9a0d2c6b1e)
              container web of pod shop/web-7d9f8 (registry.example/web:1.2, 4f9a0d2c6b1e) runs as the host's root (pid 100): an escape from it is root on the host
              | containerd state of container k8s.io/4f9a0d2c6b1e0000000000000000000000000000000000000000000000000000
        "#]]
        .assert_eq(&render(&findings));
    }
}
