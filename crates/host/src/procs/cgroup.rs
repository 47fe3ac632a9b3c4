//! /proc/PID/cgroup: where a process runs, on cgroup v2, v1 or a hybrid of
//! the two, the systemd unit its path names, and the container runtime
//! (docker, podman, lxc, kubernetes) its naming gives away.

/// What /proc/PID/cgroup says about where a process runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupFacts {
    /// The cgroup v2 path (`0::/path`), or on cgroup v1 the `name=systemd`
    /// hierarchy's path.
    pub path: Option<String>,
    /// The innermost systemd `.service` or `.scope` in the path.
    pub unit: Option<String>,
    /// `runtime:id` when a container runtime's cgroup naming is recognised in
    /// any hierarchy: `docker:0123456789ab`, `podman:…`, `lxc:NAME`,
    /// `kubernetes:…` (container ids cut to the 12 characters `docker ps` shows).
    pub container: Option<String>,
}

/// Parses /proc/PID/cgroup (`hierarchy-id:controllers:path` per line).
///
/// The v2 line wins, unless it is just `/` while the v1 `name=systemd` line is
/// more specific (a hybrid host where systemd still uses v1 for tracking).
pub fn parse_cgroup(text: &str) -> CgroupFacts {
    let mut unified = None;
    let mut systemd_v1 = None;
    let mut container = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if controllers == "name=systemd" {
            systemd_v1 = Some(path);
        }
        if container.is_none() {
            container = container_hint(path);
        }
    }
    let path = match (unified, systemd_v1) {
        (Some("/"), Some(v1)) if v1 != "/" => Some(v1),
        (Some(v2), _) => Some(v2),
        (None, v1) => v1,
    };
    CgroupFacts {
        path: path.map(str::to_owned),
        unit: path.and_then(unit_from_cgroup),
        container,
    }
}

/// The systemd unit a cgroup path belongs to: its innermost `.service` or
/// `.scope` component. `/system.slice/redis-server.service` →
/// `redis-server.service`; `/user.slice/user-1000.slice/user@1000.service/app.slice/
/// syncthing.service` → `syncthing.service`.
pub fn unit_from_cgroup(path: &str) -> Option<String> {
    path.split('/')
        .rev()
        .find(|component| component.ends_with(".service") || component.ends_with(".scope"))
        .map(str::to_owned)
}

/// Recognises the cgroup naming of docker, podman, lxc and kubernetes.
pub fn container_hint(path: &str) -> Option<String> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let short = |id: &str| id.chars().take(12).collect::<String>();
    let scope_id = |component: &str, prefix: &str| {
        component
            .strip_prefix(prefix)?
            .strip_suffix(".scope")
            .filter(|id| is_container_id(id))
            .map(short)
    };

    if components.iter().any(|c| c.starts_with("kubepods")) {
        // The container's own cgroup, under the pod's: cri-containerd-ID.scope,
        // crio-ID.scope, docker-ID.scope (systemd driver) or a bare ID (cgroupfs).
        let id = components.iter().rev().find_map(|c| {
            scope_id(c, "cri-containerd-")
                .or_else(|| scope_id(c, "crio-"))
                .or_else(|| scope_id(c, "docker-"))
                .or_else(|| is_container_id(c).then(|| short(c)))
        });
        return Some(match id {
            Some(id) => format!("kubernetes:{id}"),
            None => "kubernetes".to_owned(),
        });
    }
    for (idx, component) in components.iter().enumerate() {
        if let Some(id) = scope_id(component, "docker-") {
            return Some(format!("docker:{id}"));
        }
        // libpod-conmon-ID.scope is podman's monitor, which runs outside the
        // container; is_container_id rejects the "conmon-" prefix.
        if let Some(id) = scope_id(component, "libpod-") {
            return Some(format!("podman:{id}"));
        }
        let next = components.get(idx + 1).copied();
        match (*component, next) {
            ("docker", Some(id)) if is_container_id(id) => {
                return Some(format!("docker:{}", short(id)));
            }
            ("libpod_parent", Some(next)) => {
                if let Some(id) = next
                    .strip_prefix("libpod-")
                    .filter(|id| is_container_id(id))
                {
                    return Some(format!("podman:{}", short(id)));
                }
            }
            ("lxc", Some(name)) => return Some(format!("lxc:{name}")),
            _ => {}
        }
        if let Some(name) = component.strip_prefix("lxc.payload.") {
            return Some(format!("lxc:{name}"));
        }
    }
    None
}

/// Container runtimes name containers by 64 hex characters.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_systemd_service() {
        let facts = parse_cgroup("0::/system.slice/redis-server.service\n");
        assert_eq!(
            facts.path.as_deref(),
            Some("/system.slice/redis-server.service")
        );
        assert_eq!(facts.unit.as_deref(), Some("redis-server.service"));
        assert_eq!(facts.container, None);
    }

    #[test]
    fn cgroup_v2_user_units() {
        let facts = parse_cgroup(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service\n",
        );
        assert_eq!(facts.unit.as_deref(), Some("syncthing.service"));
        let facts = parse_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n");
        assert_eq!(facts.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(
            parse_cgroup("0::/init.scope\n").unit.as_deref(),
            Some("init.scope")
        );
        assert_eq!(parse_cgroup("0::/\n").unit, None);
    }

    #[test]
    fn cgroup_v1_uses_the_systemd_hierarchy() {
        // Debian 10-era host on cgroup v1 (trimmed).
        let text = "12:pids:/system.slice/ssh.service\n\
                    11:memory:/system.slice/ssh.service\n\
                    4:cpu,cpuacct:/system.slice/ssh.service\n\
                    1:name=systemd:/system.slice/ssh.service\n";
        let facts = parse_cgroup(text);
        assert_eq!(facts.path.as_deref(), Some("/system.slice/ssh.service"));
        assert_eq!(facts.unit.as_deref(), Some("ssh.service"));
    }

    #[test]
    fn cgroup_hybrid_prefers_the_specific_hierarchy() {
        // This machine's own /proc/self/cgroup: v1 controllers plus an empty v2.
        let text = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/f767e7e2e849f4784f772519d4147e08\n0::/\n";
        let facts = parse_cgroup(text);
        assert_eq!(facts.path.as_deref(), Some("/"));
        assert_eq!(facts.unit, None);
        let text = "1:name=systemd:/system.slice/cron.service\n0::/\n";
        assert_eq!(parse_cgroup(text).unit.as_deref(), Some("cron.service"));
        let text = "1:name=systemd:/system.slice/cron.service\n0::/system.slice/cron.service\n";
        assert_eq!(
            parse_cgroup(text).path.as_deref(),
            Some("/system.slice/cron.service")
        );
    }

    const ID: &str = "4f1e0ec9a5d2b3c74e6f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d";

    #[test]
    fn containers_are_recognised() {
        let facts = parse_cgroup(&format!("0::/system.slice/docker-{ID}.scope\n"));
        assert_eq!(facts.container.as_deref(), Some("docker:4f1e0ec9a5d2"));
        assert_eq!(facts.unit, Some(format!("docker-{ID}.scope")));

        let v1 = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n");
        assert_eq!(
            parse_cgroup(&v1).container.as_deref(),
            Some("docker:4f1e0ec9a5d2")
        );

        let podman = format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(
            parse_cgroup(&podman).container.as_deref(),
            Some("podman:4f1e0ec9a5d2")
        );
        let conmon = format!("0::/machine.slice/libpod-conmon-{ID}.scope\n");
        assert_eq!(parse_cgroup(&conmon).container, None);
        let cgroupfs_podman = format!("0::/libpod_parent/libpod-{ID}\n");
        assert_eq!(
            parse_cgroup(&cgroupfs_podman).container.as_deref(),
            Some("podman:4f1e0ec9a5d2")
        );

        assert_eq!(
            parse_cgroup("0::/lxc.payload.web1/system.slice/nginx.service\n")
                .container
                .as_deref(),
            Some("lxc:web1")
        );
        assert_eq!(
            parse_cgroup("0::/lxc.payload.web1/system.slice/nginx.service\n")
                .unit
                .as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            parse_cgroup("4:memory:/lxc/web1\n").container.as_deref(),
            Some("lxc:web1")
        );
        // The lxc monitor runs on the host side.
        assert_eq!(parse_cgroup("0::/lxc.monitor.web1\n").container, None);

        let k8s = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f7a.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            parse_cgroup(&k8s).container.as_deref(),
            Some("kubernetes:4f1e0ec9a5d2")
        );
        let k8s_v1 = format!("11:memory:/kubepods/besteffort/pod0f7a/{ID}\n");
        assert_eq!(
            parse_cgroup(&k8s_v1).container.as_deref(),
            Some("kubernetes:4f1e0ec9a5d2")
        );
        assert_eq!(
            parse_cgroup("0::/kubepods.slice\n").container.as_deref(),
            Some("kubernetes")
        );

        assert_eq!(
            parse_cgroup("0::/system.slice/docker.service\n").container,
            None
        );
        assert_eq!(
            parse_cgroup("0::/system.slice/docker-notanid.scope\n").container,
            None
        );
    }
}
