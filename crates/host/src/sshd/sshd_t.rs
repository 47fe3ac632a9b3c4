//! Asking the daemon itself: `sshd -T -f CONFIG -C CRITERIA` prints the
//! settings sshd would apply to a connection. It is run (through
//! [`crate::command::run_bounded`]) only when that is safe and meaningful:
//! as root, with a binary that root owns and nobody else can change, in the
//! daemon's own mount namespace.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use perimeter_model::Problem;

use super::evaluate::{AuthSettings, PassValues};
use super::matching::Connection;
use super::parse::parse_setting;
use crate::command::{find_tool, run_bounded};

/// `sshd -T` output: `keyword value` lines. Returns the evaluated settings;
/// `without-password` is read as `prohibit-password` (the same value).
pub fn parse_sshd_t(text: &str) -> Result<AuthSettings, String> {
    let mut values = PassValues::default();
    for line in text.lines() {
        let Some((keyword, value)) = line.split_once(' ') else {
            continue;
        };
        if let Ok(Some(setting)) = parse_setting(keyword, keyword, &[value.trim().to_owned()]) {
            values.take_setting(setting);
        }
    }
    let missing: Vec<&str> = [
        ("permitrootlogin", values.permit_root_login.is_none()),
        (
            "passwordauthentication",
            values.password_authentication.is_none(),
        ),
        (
            "kbdinteractiveauthentication",
            values.kbd_interactive_authentication.is_none(),
        ),
        (
            "permitemptypasswords",
            values.permit_empty_passwords.is_none(),
        ),
    ]
    .into_iter()
    .filter(|(_, missing)| *missing)
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        return Err(format!("sshd -T output lacks {}", missing.join(", ")));
    }
    Ok(values.or_defaults())
}

/// Runs `SSHD -T -f CONFIG [-o ...] -C CRITERIA`, the daemon's own evaluation.
pub fn run_sshd_t(
    sshd: &Path,
    config: &Path,
    options: &[String],
    conn: &Connection,
) -> Result<AuthSettings, String> {
    let mut command = Command::new(sshd);
    command.arg("-T").arg("-f").arg(config);
    for option in options {
        command.arg("-o").arg(option);
    }
    command.arg("-C").arg(conn.criteria());
    let out =
        run_bounded(command, Duration::from_secs(10), 1024 * 1024).map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        return Err(format!("sshd -T failed: {first}"));
    }
    parse_sshd_t(&String::from_utf8_lossy(&out.stdout))
}

/// `sshd -T` for every connection; `None` (with a problem saying why) as soon
/// as one run fails, since then the daemon's answer is not to be had.
pub(super) fn ask_sshd_t(
    sshd: &Path,
    config_file: &Path,
    options: &[String],
    connections: &[&Connection],
    subject: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<AuthSettings>> {
    let mut results = Vec::new();
    for conn in connections {
        match run_sshd_t(sshd, config_file, options, conn) {
            Ok(settings) => results.push(settings),
            Err(err) => {
                let mut problem = Problem::new(
                    subject,
                    format!("{err}; using perimeter's own reading of the configuration"),
                );
                if err.contains("hostkeys") || err.contains("host key") || err.contains("ermission")
                {
                    problem = problem.with_hint("sshd -T loads the host keys, which needs root");
                }
                problems.push(problem);
                return None;
            }
        }
    }
    (!results.is_empty()).then_some(results)
}

/// The sshd binary to ask, when asking it is safe and meaningful.
pub(super) fn sshd_for_t(
    pid: u32,
    exe: Option<&Path>,
    same_mount_ns: bool,
    subject: &str,
    problems: &mut Vec<Problem>,
) -> Option<PathBuf> {
    if !same_mount_ns {
        problems.push(Problem::new(
            subject,
            format!("sshd runs in another mount namespace; its files were read through /proc/{pid}/root and evaluated by perimeter, not sshd -T"),
        ));
        return None;
    }
    let sshd = match exe {
        Some(exe) => exe.to_owned(),
        None => find_tool("sshd")?,
    };
    // The binary is run as root: only one that root owns and nobody else can
    // change, as the running daemon's own is.
    match fs::metadata(&sshd) {
        Ok(meta) if meta.uid() == 0 && meta.mode() & 0o022 == 0 => Some(sshd),
        Ok(_) => {
            problems.push(Problem::new(
                subject,
                format!(
                    "{} is not owned by root or is writable by others; not running it for sshd -T",
                    sshd.display()
                ),
            ));
            None
        }
        Err(err) => {
            problems.push(Problem::new(
                subject,
                format!("{}: {err}; cannot run sshd -T", sshd.display()),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sshd::PermitRootLogin;

    #[test]
    fn sshd_t_output() {
        let text = "port 22\npermitrootlogin without-password\npasswordauthentication no\nkbdinteractiveauthentication no\npermitemptypasswords no\n";
        assert_eq!(
            parse_sshd_t(text),
            Ok(AuthSettings {
                permit_root_login: PermitRootLogin::ProhibitPassword,
                password_authentication: false,
                kbd_interactive_authentication: false,
                permit_empty_passwords: false,
            })
        );
        assert_eq!(
            parse_sshd_t("port 22\n"),
            Err("sshd -T output lacks permitrootlogin, passwordauthentication, kbdinteractiveauthentication, permitemptypasswords".to_owned())
        );
    }
}
