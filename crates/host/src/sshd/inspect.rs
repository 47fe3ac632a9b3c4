//! A running sshd, inspected: its command line (`-f`, `-o`), the files it
//! reads (through `/proc/PID/root` when it runs in another mount namespace),
//! the plan of evaluations (source classes x users x listeners, capped), and
//! the answer per evaluation from `sshd -T` where it can run, else from
//! perimeter's own evaluator, with a problem saying why or where they differ.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use perimeter_model::{Problem, SshdEvaluation, SshdFacts};

use super::classes::{SourceClass, source_classes};
use super::config::{CriterionKind, Directive, SshdConfig};
use super::evaluate::{AuthSettings, evaluate, global_value};
use super::matching::Connection;
use super::parse::{RealFiles, load_sshd_config, parse_command_line_option};
use super::sshd_t::{ask_sshd_t, sshd_for_t};

/// sshd's default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/ssh/sshd_config";

/// How many evaluations one sshd may cost (`sshd -T` runs, each ~10 ms).
const MAX_EVALUATIONS: usize = 32;

/// The user name evaluated as "any non-root user". It exists nowhere, so only
/// patterns that match every user (`*`, negations) apply to it, and no `Match
/// Group` does.
pub const OTHER_USER: &str = "perimeter-any-user";

/// What sshd's command line says about its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshdArgs {
    /// `-f FILE`.
    pub config_file: Option<PathBuf>,
    /// `-o Keyword=value` options, in order.
    pub options: Vec<String>,
}

/// sshd's options that take an argument (from its getopt string
/// `C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV`).
const OPTIONS_WITH_ARGUMENT: &str = "CEbcfghkopu";

/// Reads `-f` and `-o` from an sshd command line, as argv or as the single
/// rewritten process title OpenSSH sets (`sshd: /usr/sbin/sshd -D -f /etc/x
/// [listener] 0 of 10-100 startups`). A title cannot show where a path with
/// spaces ends; such paths are read up to the first space.
pub fn parse_sshd_cmdline(cmdline: &[String]) -> SshdArgs {
    // A rewritten title may be followed by empty strings (the NUL padding of
    // the old argv area).
    let non_empty: Vec<&String> = cmdline.iter().filter(|w| !w.is_empty()).collect();
    let words: Vec<String> = match non_empty.as_slice() {
        [title] if title.contains(char::is_whitespace) => {
            let title = title.strip_prefix("sshd: ").unwrap_or(title);
            title
                .split_whitespace()
                .take_while(|w| !w.starts_with('['))
                .map(str::to_owned)
                .collect()
        }
        _ => non_empty.into_iter().cloned().collect(),
    };
    let mut args = SshdArgs::default();
    let mut idx = 1;
    while let Some(word) = words.get(idx) {
        idx += 1;
        if word == "--" {
            break;
        }
        let Some(flags) = word.strip_prefix('-') else {
            continue;
        };
        for (pos, flag) in flags.char_indices() {
            if !OPTIONS_WITH_ARGUMENT.contains(flag) {
                continue;
            }
            let attached = &flags[pos + flag.len_utf8()..];
            let value = if attached.is_empty() {
                let value = words.get(idx).cloned();
                idx += 1;
                value
            } else {
                Some(attached.to_owned())
            };
            match (flag, value) {
                ('f', Some(file)) => args.config_file = Some(PathBuf::from(file)),
                ('o', Some(option)) => args.options.push(option),
                _ => {}
            }
            break;
        }
    }
    args
}

/// The effective authentication settings of the sshd with `pid`, per class of
/// source address. See [`inspect_sshd_listening`].
pub fn inspect_sshd(
    pid: u32,
    exe: Option<&Path>,
    cmdline: &[String],
) -> (Option<SshdFacts>, Vec<Problem>) {
    inspect_sshd_listening(pid, exe, cmdline, &[])
}

/// Like [`inspect_sshd`], also evaluating `Match LocalAddress` / `LocalPort`
/// blocks for each address the daemon listens on (`listeners`).
///
/// `sshd -T` is the authority when it can run: as root (it loads the host
/// keys), with an executable owned by root and writable by nobody else, and in
/// the same mount namespace (else the files it would read are not the
/// daemon's). Otherwise, and when it fails, perimeter's own evaluation is used
/// and a problem says why. When both ran and disagree, a problem says so.
pub fn inspect_sshd_listening(
    pid: u32,
    exe: Option<&Path>,
    cmdline: &[String],
    listeners: &[SocketAddr],
) -> (Option<SshdFacts>, Vec<Problem>) {
    let mut problems = Vec::new();
    let subject = format!("sshd (pid {pid})");
    let args = parse_sshd_cmdline(cmdline);
    let config_file = args
        .config_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if config_file.is_relative() {
        problems.push(Problem::new(
            &subject,
            format!(
                "sshd was started with a relative config path {}; read relative to /",
                config_file.display()
            ),
        ));
    }
    let config_file = Path::new("/").join(&config_file);

    let same_mount_ns = same_mount_namespace(pid);
    let files = RealFiles {
        root: (!same_mount_ns).then(|| PathBuf::from(format!("/proc/{pid}/root"))),
    };

    let mut command_line = Vec::new();
    for option in &args.options {
        match parse_command_line_option(option) {
            Ok(directive) => command_line.push(directive),
            Err(err) => problems.push(Problem::new(
                &subject,
                format!("sshd option -o {option:?}: {err}"),
            )),
        }
    }

    let config = match load_sshd_config(&config_file, &files) {
        Ok(config) => Some(config),
        Err(err) => {
            problems.push(Problem::new(
                &subject,
                format!("could not evaluate the sshd configuration: {err}"),
            ));
            None
        }
    };

    let classes = match &config {
        Some(config) => source_classes(config),
        None => vec![SourceClass {
            description: "any address".to_owned(),
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        }],
    };
    let users = match &config {
        Some(config) => users_to_evaluate(config),
        None => vec!["root".to_owned(), OTHER_USER.to_owned()],
    };
    let locals = local_endpoints(
        config.as_ref(),
        &command_line,
        listeners,
        &subject,
        &mut problems,
    );
    if let Some(config) = &config
        && global_value(config, &command_line, "usedns")
            .is_some_and(|v| v.first().is_some_and(|v| v.eq_ignore_ascii_case("yes")))
    {
        problems.push(Problem::new(
            &subject,
            "UseDNS yes: Match Host blocks depend on reverse DNS; they were evaluated with the address as the host name",
        ));
    }

    let mut planned: Vec<(&SourceClass, Connection)> = Vec::new();
    for class in &classes {
        for user in &users {
            for local in &locals {
                planned.push((
                    class,
                    Connection {
                        user: Some(user.clone()),
                        groups: groups_of(user),
                        host: Some(class.addr.to_string()),
                        addr: Some(class.addr),
                        laddr: local.0,
                        lport: local.1,
                        rdomain: None,
                    },
                ));
            }
        }
    }
    if planned.len() > MAX_EVALUATIONS {
        problems.push(Problem::new(
            &subject,
            format!(
                "{} combinations of source class, user and listener; only the first {MAX_EVALUATIONS} were evaluated",
                planned.len()
            ),
        ));
        planned.truncate(MAX_EVALUATIONS);
    }

    let authoritative =
        sshd_for_t(pid, exe, same_mount_ns, &subject, &mut problems).and_then(|sshd| {
            let connections: Vec<&Connection> = planned.iter().map(|(_, conn)| conn).collect();
            ask_sshd_t(
                &sshd,
                &config_file,
                &args.options,
                &connections,
                &subject,
                &mut problems,
            )
        });

    let ours: Option<Vec<AuthSettings>> = config.as_ref().map(|config| {
        planned
            .iter()
            .map(|(_, conn)| evaluate(config, &command_line, conn))
            .collect()
    });

    let (method, settings) = match (&authoritative, &ours) {
        (Some(theirs), Some(ours)) => {
            for ((_, conn), (theirs, ours)) in planned.iter().zip(theirs.iter().zip(ours)) {
                if theirs != ours {
                    problems.push(Problem::new(
                        &subject,
                        format!(
                            "perimeter's reading of {} differs from sshd -T for {}: sshd says {theirs}, perimeter read {ours}; using sshd's",
                            config_file.display(),
                            conn.criteria()
                        ),
                    ));
                }
            }
            ("sshd -T", theirs.clone())
        }
        (Some(theirs), None) => ("sshd -T", theirs.clone()),
        (None, Some(ours)) => ("parsed", ours.clone()),
        (None, None) => return (None, problems),
    };

    let evaluations = planned
        .iter()
        .zip(settings)
        .map(|((class, conn), settings)| SshdEvaluation {
            sources: class.description.clone(),
            criteria: conn.criteria(),
            permit_root_login: settings.permit_root_login.as_str().to_owned(),
            password_authentication: settings.password_authentication,
            kbd_interactive_authentication: settings.kbd_interactive_authentication,
            permit_empty_passwords: settings.permit_empty_passwords,
        })
        .collect();
    let facts = SshdFacts {
        pid,
        exe: exe.map(Path::to_owned),
        config_file,
        method: method.to_owned(),
        evaluations,
    };
    (Some(facts), problems)
}

/// The (local address, local port) pairs to evaluate: one per listener when
/// the configuration has `Match LocalAddress` or `LocalPort` blocks, else a
/// single "not given".
fn local_endpoints(
    config: Option<&SshdConfig>,
    command_line: &[Directive],
    listeners: &[SocketAddr],
    subject: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(Option<IpAddr>, Option<u16>)> {
    let uses = |kinds: &[CriterionKind]| {
        config.is_some_and(|c| {
            c.match_lines()
                .iter()
                .any(|(_, m)| m.criteria.iter().any(|k| kinds.contains(&k.kind)))
        })
    };
    let uses_local = uses(&[CriterionKind::LocalAddress, CriterionKind::LocalPort]);
    let uses_local_port = uses(&[CriterionKind::LocalPort]);
    let mut locals: Vec<(Option<IpAddr>, Option<u16>)> = Vec::new();
    if uses_local {
        for listener in listeners {
            let local = (Some(listener.ip()), Some(listener.port()));
            if !locals.contains(&local) {
                locals.push(local);
            }
        }
    }
    if locals.is_empty() {
        // sshd -T refuses to evaluate `Match LocalPort` without a port, so
        // the configured one stands in.
        let port = uses_local_port.then(|| configured_port(config, command_line));
        if uses_local {
            let mut message =
                "no listening address was given, so Match LocalAddress blocks were not evaluated"
                    .to_owned();
            if let Some(port) = port {
                message.push_str(&format!(
                    " and Match LocalPort was evaluated for port {port} only"
                ));
            }
            problems.push(
                Problem::new(subject, message)
                    .with_hint("pass the daemon's listeners to inspect_sshd_listening"),
            );
        }
        locals.push((None, port));
    }
    locals
}

/// The groups of a local user, as sshd's `Match Group` sees them (getpwnam,
/// then getgrouplist); `None` when the user does not exist, in which case no
/// `Match Group` applies, as in sshd.
pub fn groups_of(user: &str) -> Option<Vec<String>> {
    let account = nix::unistd::User::from_name(user).ok()??;
    let name = std::ffi::CString::new(user).ok()?;
    let gids = nix::unistd::getgrouplist(&name, account.gid).ok()?;
    Some(
        gids.into_iter()
            .filter_map(|gid| nix::unistd::Group::from_gid(gid).ok().flatten())
            .map(|group| group.name)
            .collect(),
    )
}

/// The first `Port` sshd would listen on (22 when none is set).
fn configured_port(config: Option<&SshdConfig>, command_line: &[Directive]) -> u16 {
    config
        .and_then(|c| global_value(c, command_line, "port"))
        .and_then(|args| args.first())
        .and_then(|port| port.parse().ok())
        .unwrap_or(22)
}

/// The users worth evaluating: root (PermitRootLogin applies only to it),
/// users named literally in `Match User` lines, and one user no pattern names.
pub fn users_to_evaluate(config: &SshdConfig) -> Vec<String> {
    let mut users = vec!["root".to_owned()];
    for (_, m) in config.match_lines() {
        for criterion in m.criteria.iter().filter(|c| c.kind == CriterionKind::User) {
            for name in criterion.patterns.split(',') {
                let literal =
                    !name.is_empty() && !name.starts_with('!') && !name.contains(['*', '?']);
                if literal && !users.iter().any(|u| u == name) && users.len() < 6 {
                    users.push(name.to_owned());
                }
            }
        }
    }
    users.push(OTHER_USER.to_owned());
    users
}

fn same_mount_namespace(pid: u32) -> bool {
    match (
        fs::read_link(format!("/proc/{pid}/ns/mnt")),
        fs::read_link("/proc/self/ns/mnt"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        // Not readable (not root, process gone): assume the host's.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_sshd_cmdline(&argv(&[
                "/usr/sbin/sshd",
                "-D",
                "-f",
                "/etc/x",
                "-oPasswordAuthentication=no"
            ])),
            SshdArgs {
                config_file: Some("/etc/x".into()),
                options: vec!["PasswordAuthentication=no".into()],
            }
        );
        assert_eq!(
            parse_sshd_cmdline(&argv(&[
                "sshd: /usr/sbin/sshd -D -f /etc/x [listener] 0 of 10-100 startups"
            ])),
            SshdArgs {
                config_file: Some("/etc/x".into()),
                options: vec![],
            }
        );
        // Flags bundled before -f, and the argument attached.
        assert_eq!(
            parse_sshd_cmdline(&argv(&["/usr/sbin/sshd", "-Df/etc/y"])).config_file,
            Some(PathBuf::from("/etc/y"))
        );
        // -p takes an argument, so `-f` after it is its value, not an option.
        assert_eq!(
            parse_sshd_cmdline(&argv(&["/usr/sbin/sshd", "-p", "-f"])).config_file,
            None
        );
        assert_eq!(
            parse_sshd_cmdline(&argv(&[
                "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
            ])),
            SshdArgs::default()
        );
        assert_eq!(
            parse_sshd_cmdline(&argv(&["/usr/sbin/sshd"])),
            SshdArgs::default()
        );
    }
}
