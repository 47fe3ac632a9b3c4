//! Redis rules: `redis.no-auth`, `redis.protected-mode-off`, `redis.exposed`,
//! decided on what each running instance answered, never on a config file
//! guessed from its path. Only a confirmed Redis gets them: a listener that
//! answered something else, or nothing, is not known to be Redis.

use perimeter_model::{Finding, HostSnapshot, RedisAuth, RedisFacts, Scope, Severity};

use crate::rules::{REDIS_EXPOSED, REDIS_NO_AUTH, REDIS_PROTECTED_MODE_OFF};

/// The widest scope among the instance's listeners.
fn widest_scope(snapshot: &HostSnapshot, redis: &RedisFacts) -> Scope {
    snapshot
        .listeners
        .iter()
        .filter(|l| l.netns == redis.netns && l.pids().iter().any(|pid| redis.pids.contains(pid)))
        .map(|l| l.scope)
        .chain(
            // The probed endpoint itself, in case the owners could not be seen.
            snapshot
                .listeners
                .iter()
                .filter(|l| l.netns == redis.netns && l.endpoint() == redis.endpoint)
                .map(|l| l.scope),
        )
        .max()
        .unwrap_or(Scope::Loopback)
}

fn subject(redis: &RedisFacts) -> String {
    let mut subject = format!("redis {}", redis.endpoint);
    if let Some(pid) = redis.pids.first() {
        subject.push_str(&format!(" (pid {pid})"));
    }
    if redis.netns.name != "host" {
        subject.push_str(&format!(" in netns {}", redis.netns.name));
    }
    subject
}

fn version_evidence(finding: Finding, redis: &RedisFacts) -> Finding {
    let mut finding = finding;
    if let Some(version) = &redis.version {
        finding = finding.with_evidence(format!("redis_version:{version}"));
    }
    match redis.config_file.as_deref() {
        Some("") => finding.with_evidence("started without a config file (config_file is empty)"),
        Some(file) => finding.with_evidence(format!("config_file:{file}")),
        // A config file never read is not an empty one.
        None => finding.with_evidence("config file unknown (INFO server did not name it)"),
    }
}

pub(crate) fn check(snapshot: &HostSnapshot) -> Vec<Finding> {
    let mut findings = Vec::new();
    for redis in snapshot.redis.iter().filter(|r| r.auth.is_confirmed()) {
        let scope = widest_scope(snapshot, redis);
        let exposed = scope.is_exposed();
        if redis.auth == RedisAuth::Open {
            let severity = if exposed {
                Severity::Critical
            } else {
                Severity::High
            };
            let finding = Finding::new(
                REDIS_NO_AUTH,
                severity,
                subject(redis),
                format!(
                    "Redis on {} answers commands without a password{}",
                    redis.endpoint,
                    if exposed {
                        ", and it is reachable beyond this host"
                    } else {
                        " (any local user or SSRF can reach it)"
                    }
                ),
            )
            .with_evidence(format!(
                "PING to {} answered +PONG without AUTH",
                redis.probed
            ));
            findings.push(
                version_evidence(finding, redis).with_remedy(
                    "set requirepass (or ACL users) in the config file named above and restart; bind it to 127.0.0.1",
                ),
            );
        }
        if redis.protected_mode == Some(false) {
            let severity = if exposed && redis.auth == RedisAuth::Open {
                Severity::High
            } else {
                Severity::Medium
            };
            let finding = Finding::new(
                REDIS_PROTECTED_MODE_OFF,
                severity,
                subject(redis),
                format!("Redis on {} runs with protected-mode off", redis.endpoint),
            )
            .with_evidence("CONFIG GET protected-mode: no");
            findings.push(
                version_evidence(finding, redis)
                    .with_remedy("set `protected-mode yes` in the config file and restart"),
            );
        }
        if exposed {
            let mut finding = Finding::new(
                REDIS_EXPOSED,
                Severity::High,
                subject(redis),
                format!("Redis listens on {} ({scope})", redis.endpoint),
            );
            if let Some(bind) = &redis.bind {
                finding = finding.with_evidence(format!("CONFIG GET bind: {bind}"));
            }
            findings.push(
                version_evidence(finding, redis)
                    .with_remedy("bind 127.0.0.1 -::1 in the config file, or firewall the port to the application hosts"),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use perimeter_model::Netns;

    use super::*;
    use crate::fixtures::{listener, process, render, snapshot};

    /// The Redis family's findings about `snapshot`, worst first.
    fn check(snapshot: &HostSnapshot, expect: Expect) {
        let mut findings = super::check(snapshot);
        crate::sort_findings(&mut findings);
        expect.assert_eq(&render(&findings));
    }

    fn redis(endpoint: &str, pid: u32, auth: RedisAuth, protected: Option<bool>) -> RedisFacts {
        RedisFacts {
            endpoint: endpoint.into(),
            netns: Netns {
                inode: 1,
                name: "host".into(),
            },
            pids: vec![pid],
            probed: "127.0.0.1:6379".parse().expect("addr"),
            auth,
            version: Some("7.0.15".into()),
            config_file: Some(String::new()),
            protected_mode: protected,
            bind: Some("* -::*".into()),
        }
    }

    #[test]
    fn tarball_redis_on_all_interfaces_without_password() {
        let mut snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 6379, &[3]),
                listener("tcp", "::", 6379, &[3]),
            ],
            vec![process(3, 1, "/opt/redis/redis-server", 0, "root")],
        );
        snap.redis
            .push(redis("tcp 0.0.0.0:6379", 3, RedisAuth::Open, Some(false)));
        check(
            &snap,
            expect![[r#"
            critical redis.no-auth redis tcp 0.0.0.0:6379 (pid 3)
              Redis on tcp 0.0.0.0:6379 answers commands without a password, and it is reachable beyond this host
              | PING to 127.0.0.1:6379 answered +PONG without AUTH
              | redis_version:7.0.15
              | started without a config file (config_file is empty)
            high redis.exposed redis tcp 0.0.0.0:6379 (pid 3)
              Redis listens on tcp 0.0.0.0:6379 (wildcard)
              | CONFIG GET bind: * -::*
              | redis_version:7.0.15
              | started without a config file (config_file is empty)
            high redis.protected-mode-off redis tcp 0.0.0.0:6379 (pid 3)
              Redis on tcp 0.0.0.0:6379 runs with protected-mode off
              | CONFIG GET protected-mode: no
              | redis_version:7.0.15
              | started without a config file (config_file is empty)
        "#]],
        );
    }

    #[test]
    fn loopback_redis_with_password_is_clean() {
        let mut snap = snapshot(
            vec![listener("tcp", "127.0.0.1", 6380, &[4])],
            vec![process(4, 1, "/usr/bin/redis-check-rdb", 101, "redis")],
        );
        snap.redis
            .push(redis("tcp 127.0.0.1:6380", 4, RedisAuth::Required, None));
        check(
            &snap,
            expect![[r#"
            no findings
        "#]],
        );
    }

    #[test]
    fn loopback_redis_without_password_is_high_not_exposed() {
        let mut snap = snapshot(
            vec![listener("tcp", "127.0.0.1", 6381, &[5])],
            vec![process(5, 1, "/usr/bin/redis-check-rdb", 101, "redis")],
        );
        snap.redis
            .push(redis("tcp 127.0.0.1:6381", 5, RedisAuth::Open, Some(true)));
        check(
            &snap,
            expect![[r#"
            high redis.no-auth redis tcp 127.0.0.1:6381 (pid 5)
              Redis on tcp 127.0.0.1:6381 answers commands without a password (any local user or SSRF can reach it)
              | PING to 127.0.0.1:6379 answered +PONG without AUTH
              | redis_version:7.0.15
              | started without a config file (config_file is empty)
        "#]],
        );
    }

    #[test]
    fn a_named_config_file_and_owners_out_of_sight() {
        // Owners not seen (not root): the probed endpoint still gives the
        // scope, and the config file is named in the evidence.
        let mut snap = snapshot(vec![listener("tcp", "10.0.0.5", 6379, &[])], vec![]);
        let mut facts = redis("tcp 10.0.0.5:6379", 6, RedisAuth::Required, Some(false));
        facts.pids.clear();
        facts.config_file = Some("/etc/redis/redis.conf".into());
        facts.bind = None;
        facts.version = None;
        snap.redis.push(facts);
        check(
            &snap,
            expect![[r#"
            high redis.exposed redis tcp 10.0.0.5:6379
              Redis listens on tcp 10.0.0.5:6379 (private)
              | config_file:/etc/redis/redis.conf
            medium redis.protected-mode-off redis tcp 10.0.0.5:6379
              Redis on tcp 10.0.0.5:6379 runs with protected-mode off
              | CONFIG GET protected-mode: no
              | config_file:/etc/redis/redis.conf
        "#]],
        );
    }

    #[test]
    fn only_a_confirmed_redis_gets_findings_and_an_unread_config_is_not_empty() {
        // A service on 6379 whose answer was not RESP, and one that never
        // answered: neither is Redis as far as anyone knows.
        let mut snap = snapshot(
            vec![
                listener("tcp", "0.0.0.0", 6379, &[7]),
                listener("tcp", "0.0.0.0", 6380, &[8]),
                listener("tcp", "0.0.0.0", 6381, &[9]),
            ],
            vec![
                process(7, 1, "/opt/web/server", 0, "root"),
                process(8, 1, "/opt/web/other", 0, "root"),
                process(9, 1, "/opt/redis/redis-server", 0, "root"),
            ],
        );
        let mut not_resp = redis(
            "tcp 0.0.0.0:6379",
            7,
            RedisAuth::NotRedis("not RESP".into()),
            None,
        );
        not_resp.config_file = None;
        snap.redis.push(not_resp);
        let mut silent = redis(
            "tcp 0.0.0.0:6380",
            8,
            RedisAuth::Unreachable("no answer".into()),
            None,
        );
        silent.config_file = None;
        snap.redis.push(silent);
        // A Redis asking for a password, whose INFO could not be read.
        let mut locked = redis("tcp 0.0.0.0:6381", 9, RedisAuth::Required, None);
        locked.config_file = None;
        locked.version = None;
        locked.bind = None;
        snap.redis.push(locked);
        check(
            &snap,
            expect![[r#"
                high redis.exposed redis tcp 0.0.0.0:6381 (pid 9)
                  Redis listens on tcp 0.0.0.0:6381 (wildcard)
                  | config file unknown (INFO server did not name it)
            "#]],
        );
    }
}
