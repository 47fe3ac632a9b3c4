//! The command channel, for anything else: a program run with the
//! `perimeter.alert/1` document on stdin.
//!
//! The program runs from an argv, never through a shell, in its own process
//! group, with a clean environment: `PATH=/usr/local/bin:/usr/bin:/bin`,
//! `PERIMETER_IDEMPOTENCY_KEY`, `PERIMETER_SEVERITY` and whatever the
//! configuration adds, and nothing of the monitor's own environment, which
//! may hold the other channels' secrets. After the timeout the whole group
//! is killed (a shell script's children too). At most [`MAX_ANSWER_BYTES`]
//! of its stdout and of its stderr are kept, for the receipt or the error
//! message; the rest is read and dropped, so the program never blocks on a
//! full pipe.
//!
//! The exit status follows sysexits(3), as mail delivery agents do: 0 is
//! delivered; 75 (`EX_TEMPFAIL`) or any status outside 64..=78 means "try
//! again later"; the other sysexits codes (64 `EX_USAGE`, 78 `EX_CONFIG`...)
//! mean "this will not work until someone acts". A program killed by a
//! signal, or by the timeout, is tried again.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use perimeter_model::Alert;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::{ConfigError, Delivery, Failure, MAX_ANSWER_BYTES, Timeouts, clean_answer, seconds};

/// The child's PATH: the system's directories, not the monitor's.
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How much of the program's output goes into a receipt or an error.
const OUTPUT_IN_MESSAGE: usize = 300;

/// sysexits(3) `EX_TEMPFAIL`.
const EX_TEMPFAIL: i32 = 75;

/// A command channel's configuration.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// The program and its arguments. The program is a path or a name found
    /// on the child's PATH. Arguments are visible to every user in `ps`:
    /// never put a secret there.
    pub argv: Vec<String>,
    /// Environment variables added to the child's clean environment.
    pub env: Vec<(String, String)>,
    /// After this the program's process group is killed.
    pub timeout: Duration,
}

/// A command channel, ready to deliver.
#[derive(Debug)]
pub struct Command {
    config: CommandConfig,
}

impl Command {
    pub fn new(config: CommandConfig) -> Result<Command, ConfigError> {
        match config.argv.first() {
            None => return Err(ConfigError::Command("no program to run".to_owned())),
            Some(program) if program.is_empty() => {
                return Err(ConfigError::Command("the program is empty".to_owned()));
            }
            Some(_) => {}
        }
        if config.argv.iter().any(|arg| arg.contains('\0')) {
            return Err(ConfigError::Command(
                "an argument holds a NUL byte".to_owned(),
            ));
        }
        for (name, value) in &config.env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(ConfigError::Command(format!(
                    "`{name}` is not an environment variable name, or its value holds a NUL byte"
                )));
            }
        }
        Ok(Command { config })
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.config.timeout,
            overall: self.config.timeout,
        }
    }

    fn program(&self) -> &str {
        self.config.argv.first().map_or("", String::as_str)
    }

    pub(crate) async fn deliver(&self, alert: &Alert) -> Result<Delivery, Failure> {
        let json = perimeter_report::alert::to_json_bytes(alert);
        let program = self.program();
        let mut command = tokio::process::Command::new(program);
        command
            .args(self.config.argv.iter().skip(1))
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("PERIMETER_IDEMPOTENCY_KEY", alert.idempotency_key.as_str())
            .env("PERIMETER_SEVERITY", alert.severity.as_str())
            .envs(self.config.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that the timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|err| spawn_failure(program, &err))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A program that exits without reading its input closes the
                // pipe; that is its business, its exit status tells.
                let _ = stdin.write_all(&json).await;
                let _ = stdin.shutdown().await;
            }
        };
        let run = async {
            let ((), stdout, stderr, status) =
                tokio::join!(feed, read_capped(stdout), read_capped(stderr), child.wait());
            (stdout, stderr, status)
        };
        let (stdout, stderr, status) = match tokio::time::timeout(self.config.timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                kill_group(pid);
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(Failure::transient(format!(
                    "{program} did not finish within {}; it was killed",
                    seconds(self.config.timeout)
                )));
            }
        };
        let status = status.map_err(|err| Failure::transient(format!("{program}: {err}")))?;
        judge(program, status, &stdout, &stderr)
    }
}

/// Output read to its end, the first [`MAX_ANSWER_BYTES`] kept.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    n_bytes: u64,
}

async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Captured {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return captured;
    };
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                captured.n_bytes += n as u64;
                let room = MAX_ANSWER_BYTES.saturating_sub(captured.kept.len());
                captured
                    .kept
                    .extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
            }
        }
    }
    captured
}

fn kill_group(pid: Option<u32>) {
    let group = pid
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        // The child leads its group (process_group(0)); it may be gone
        // already, which is fine.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

fn spawn_failure(program: &str, err: &io::Error) -> Failure {
    let reason = format!("cannot run {program}: {err}");
    match err.kind() {
        // Not there, or not executable: fixed by a person, not by waiting.
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Failure::permanent(reason),
        // Out of processes, memory or file descriptors: may pass.
        _ => Failure::transient(reason),
    }
}

fn judge(
    program: &str,
    status: ExitStatus,
    stdout: &Captured,
    stderr: &Captured,
) -> Result<Delivery, Failure> {
    let answer_bytes_read = stdout.n_bytes + stderr.n_bytes;
    let said = |captured: &Captured| clean_answer(&captured.kept, OUTPUT_IN_MESSAGE);
    if status.success() {
        let out = said(stdout);
        let receipt = if out.is_empty() {
            "exit status 0".to_owned()
        } else {
            format!("exit status 0: {out}")
        };
        return Ok(Delivery {
            receipt,
            answer_bytes_read,
        });
    }
    // The error output says why; a program that only writes to stdout still
    // says something.
    let mut why = said(stderr);
    if why.is_empty() {
        why = said(stdout);
    }
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    };
    match (status.code(), status.signal()) {
        (Some(EX_TEMPFAIL), _) => Err(Failure::transient(format!(
            "{program} exited with status {EX_TEMPFAIL} (temporary failure){why}"
        ))),
        (Some(code @ 64..=78), _) => Err(Failure::permanent(format!(
            "{program} exited with status {code}, a permanent failure in sysexits(3){why}"
        ))),
        (Some(code), _) => Err(Failure::transient(format!(
            "{program} exited with status {code}{why}"
        ))),
        (None, Some(signal)) => Err(Failure::transient(format!(
            "{program} was killed by signal {signal}{why}"
        ))),
        (None, None) => Err(Failure::transient(format!(
            "{program} failed: {status}{why}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        let command = |argv: &[&str], env: &[(&str, &str)]| {
            Command::new(CommandConfig {
                argv: argv.iter().map(ToString::to_string).collect(),
                env: env
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect(),
                timeout: Duration::from_secs(1),
            })
            .map(drop)
            .map_err(|err| err.to_string())
        };
        assert_eq!(
            command(&[], &[]),
            Err("command: no program to run".to_owned())
        );
        assert_eq!(
            command(&[""], &[]),
            Err("command: the program is empty".to_owned())
        );
        assert_eq!(
            command(&["/bin/true", "a\0b"], &[]),
            Err("command: an argument holds a NUL byte".to_owned())
        );
        assert!(command(&["/bin/true"], &[("A=B", "c")]).is_err());
        assert_eq!(
            command(&["/bin/true"], &[("HOME", "/var/lib/perimeter")]),
            Ok(())
        );
    }

    #[test]
    fn exit_statuses_follow_sysexits() {
        let nothing = Captured::default();
        let err = Captured {
            kept: b"relay down\n".to_vec(),
            n_bytes: 11,
        };
        let judge_code =
            |code: i32| judge("notify", ExitStatus::from_raw(code << 8), &nothing, &err);
        assert_eq!(
            judge_code(0),
            Ok(Delivery {
                receipt: "exit status 0".to_owned(),
                answer_bytes_read: 11
            })
        );
        for (code, retry) in [
            (1, true),
            (2, true),
            (75, true),
            (64, false),
            (65, false),
            (78, false),
            (79, true),
        ] {
            let failure = judge_code(code).expect_err("failed");
            assert_eq!(
                matches!(failure.retry, crate::Retry::Transient { .. }),
                retry,
                "{code}: {failure:?}"
            );
        }
        assert_eq!(
            judge_code(1).expect_err("failed").reason,
            "notify exited with status 1: relay down"
        );
        let killed = judge("notify", ExitStatus::from_raw(9), &nothing, &nothing);
        assert_eq!(
            killed.expect_err("killed").reason,
            "notify was killed by signal 9"
        );
    }
}
