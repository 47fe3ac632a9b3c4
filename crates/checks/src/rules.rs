//! The catalogue of audit rules: ids, default severities and what each means.
//! `perimeter rules` prints it; the ids are a compatibility surface (approvals,
//! CI gates and dashboards key on them), so they never change meaning.

use perimeter_model::Severity;

/// One rule as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    /// The severity it usually fires with; some rules raise or lower it with the
    /// evidence (a root Redis on a public address is worse than on a private one).
    pub severity: Severity,
    pub summary: &'static str,
}

pub const LISTENER_UNAPPROVED: &str = "listener.unapproved";
pub const EXEC_UNPACKAGED: &str = "exec.unpackaged";
pub const EXEC_DELETED: &str = "exec.deleted";
pub const EXEC_WORLD_WRITABLE: &str = "exec.world-writable";
pub const SERVICE_ROOT: &str = "service.root";
pub const SERVICE_LOGIN_SHELL: &str = "service.login-shell";
pub const REDIS_NO_AUTH: &str = "redis.no-auth";
pub const REDIS_PROTECTED_MODE_OFF: &str = "redis.protected-mode-off";
pub const REDIS_EXPOSED: &str = "redis.exposed";
pub const SSH_ROOT_LOGIN: &str = "ssh.root-login";
pub const SSH_PASSWORD_AUTH: &str = "ssh.password-auth";
pub const FIREWALL_NONE: &str = "firewall.none";
pub const FIREWALL_ALLOWS_ANY: &str = "firewall.allows-any";
pub const FIREWALL_BYPASSED: &str = "firewall.bypassed";
pub const CONTAINER_DRIFT: &str = "container.drift";
pub const CONTAINER_RUNTIME_SOCKET: &str = "container.runtime-socket";
pub const CONTAINER_PRIVILEGED: &str = "container.privileged";
pub const CONTAINER_HOST_NETWORK: &str = "container.host-network";
pub const CONTAINER_ROOT: &str = "container.root";
pub const ENV_DEV_OPEN: &str = "env.dev-open";
pub const ENV_PROD_UNEXPECTED_PORT: &str = "env.prod-unexpected-port";
pub const ENV_EXPIRED: &str = "env.expired";
pub const ENV_SHARED_HOST: &str = "env.shared-host";
pub const ENV_DEV_REACHABLE: &str = "env.dev-reachable";
pub const ENV_UNKNOWN_HOST: &str = "env.unknown-host";

pub const AUDIT_RULES: &[Rule] = &[
    Rule {
        id: LISTENER_UNAPPROVED,
        severity: Severity::High,
        summary: "a listener beyond loopback that no entry in the approvals file covers",
    },
    Rule {
        id: EXEC_UNPACKAGED,
        severity: Severity::High,
        summary: "a listening process whose executable no package installed",
    },
    Rule {
        id: EXEC_DELETED,
        severity: Severity::High,
        summary: "a process running an executable that was deleted or replaced",
    },
    Rule {
        id: EXEC_WORLD_WRITABLE,
        severity: Severity::High,
        summary: "a process whose executable lives in a world-writable directory (/tmp, /var/tmp, /dev/shm, ...)",
    },
    Rule {
        id: SERVICE_ROOT,
        severity: Severity::High,
        summary: "a listener beyond loopback served by a root process (privilege-separating daemons exempt)",
    },
    Rule {
        id: SERVICE_LOGIN_SHELL,
        severity: Severity::Medium,
        summary: "the account running a listener beyond loopback has a login shell",
    },
    Rule {
        id: REDIS_NO_AUTH,
        severity: Severity::Critical,
        summary: "a Redis instance answers commands without authentication",
    },
    Rule {
        id: REDIS_PROTECTED_MODE_OFF,
        severity: Severity::Medium,
        summary: "a Redis instance runs with protected-mode off",
    },
    Rule {
        id: REDIS_EXPOSED,
        severity: Severity::High,
        summary: "a Redis instance is bound beyond loopback",
    },
    Rule {
        id: SSH_ROOT_LOGIN,
        severity: Severity::High,
        summary: "sshd lets root log in (PermitRootLogin is not `no`) from some source addresses",
    },
    Rule {
        id: SSH_PASSWORD_AUTH,
        severity: Severity::Medium,
        summary: "sshd accepts passwords or keyboard-interactive login from some source addresses",
    },
    Rule {
        id: FIREWALL_NONE,
        severity: Severity::High,
        summary: "the network namespace has no default-deny inbound firewall policy",
    },
    Rule {
        id: FIREWALL_ALLOWS_ANY,
        severity: Severity::Medium,
        summary: "an accept rule with no source restriction reaches a listener on a port that is not public in its environment",
    },
    Rule {
        id: FIREWALL_BYPASSED,
        severity: Severity::High,
        summary: "a port the input firewall (ufw, firewalld, INPUT) denies is reachable anyway: a DNAT in nat prerouting (Docker's -p) sends it to a container through the forward chains",
    },
    Rule {
        id: CONTAINER_DRIFT,
        severity: Severity::High,
        summary: "a container runs an executable its image did not ship (written into its writable layer, run from /tmp, or deleted)",
    },
    Rule {
        id: CONTAINER_RUNTIME_SOCKET,
        severity: Severity::Critical,
        summary: "a running container has the container runtime's API socket (docker.sock) mounted",
    },
    Rule {
        id: CONTAINER_PRIVILEGED,
        severity: Severity::High,
        summary: "a running container is privileged (every device and capability of the host)",
    },
    Rule {
        id: CONTAINER_HOST_NETWORK,
        severity: Severity::Medium,
        summary: "a running container uses the host's network namespace",
    },
    Rule {
        id: CONTAINER_ROOT,
        severity: Severity::Medium,
        summary: "a running container's main process is the host's root (no user namespace)",
    },
    Rule {
        id: ENV_DEV_OPEN,
        severity: Severity::High,
        summary: "a dev or experiment listener is reachable (local firewall) from beyond the environment's allow_from",
    },
    Rule {
        id: ENV_PROD_UNEXPECTED_PORT,
        severity: Severity::High,
        summary: "a prod port not in public_ports is reachable from beyond allow_from (local firewall, or seen by verify)",
    },
    Rule {
        id: ENV_EXPIRED,
        severity: Severity::High,
        summary: "a host of an experiment past its expires date still reports (audit) or answers (verify)",
    },
    Rule {
        id: ENV_SHARED_HOST,
        severity: Severity::High,
        summary: "one host carries addresses of both prod and dev/experiment environments",
    },
    Rule {
        id: ENV_DEV_REACHABLE,
        severity: Severity::High,
        summary: "a dev or experiment host answered a scanner outside its allow_from (perimeter verify)",
    },
    Rule {
        id: ENV_UNKNOWN_HOST,
        severity: Severity::Medium,
        summary: "a host answered in no declared environment (perimeter verify)",
    },
];

// ---------------------------------------------------------------------------
// Package authority (`perimeter inventory`): where the host departs from its
// package database. Severity policy: see `pkg.rs`.

pub const PKG_UNOWNED_FILE: &str = "pkg.unowned-file";
pub const PKG_UNOWNED_UNIT: &str = "pkg.unowned-unit";
pub const PKG_MODIFIED_CONFFILE: &str = "pkg.modified-conffile";
pub const PKG_MODIFIED_FILE: &str = "pkg.modified-file";

/// The rules `perimeter inventory` checks.
pub const PKG_RULES: &[Rule] = &[
    Rule {
        id: PKG_UNOWNED_FILE,
        severity: Severity::Medium,
        summary: "an executable in a PATH directory, /usr/local, /opt or /srv, or a running one, that no package installed (low in /usr/local, /opt, /srv; higher when running or world-writable)",
    },
    Rule {
        id: PKG_UNOWNED_UNIT,
        severity: Severity::Low,
        summary: "a systemd unit, drop-in or linked unit that no package ships (medium in the package manager's unit directories)",
    },
    Rule {
        id: PKG_MODIFIED_CONFFILE,
        severity: Severity::Info,
        summary: "a package conffile changed from the md5 it shipped with (normal for edited configuration; kept in the rebuild manifest)",
    },
    Rule {
        id: PKG_MODIFIED_FILE,
        severity: Severity::High,
        summary: "a package file whose md5 no longer matches its package's md5sums (`perimeter inventory --verify`; high for code, medium for data, low when missing)",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_dotted() {
        let mut ids: Vec<&str> = AUDIT_RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "duplicate rule id");
        for id in ids {
            let (family, name) = id.split_once('.').unwrap_or(("", ""));
            assert!(
                !family.is_empty() && !name.is_empty(),
                "{id} is not family.name"
            );
        }
    }
}
