//! Running external tools (nft, iptables-save, sshd -T, rpm, apt-helper)
//! with no stdin, a timeout and a cap on what they print: a tool that hangs or
//! floods never stalls or exhausts the audit.
//!
//! Every external tool that host and inventory run goes through here.
//! [`run_bounded`] keeps what the tool printed (listings and answers of a few
//! MiB); [`run_streaming`] hands it to a reader as it comes, for output too
//! large to hold (apt's decompressed package indexes). Both read the tool's
//! pipes on the calling thread, polling them against one deadline, so neither
//! a tool that never writes nor a child of it that keeps a pipe open can hold
//! the caller past the timeout.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;

/// How much of a tool's standard error is kept: enough for any diagnostic,
/// which callers reduce to its first line anyway.
const MAX_STDERR: usize = 64 * 1024;

/// An executable by name, from PATH and then the sbin directories, which a
/// non-root PATH often lacks.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What a command printed, capped.
#[derive(Debug)]
pub struct BoundedOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Stdout went past the cap; what was kept is its beginning.
    pub truncated: bool,
}

/// What a streamed command left besides its output: what the reader made of
/// it, and how the command ended.
#[derive(Debug)]
pub struct StreamedOutput<T> {
    /// What the reader returned.
    pub value: T,
    pub status: ExitStatus,
    pub stderr: Vec<u8>,
    /// Stdout went past the cap; the reader saw its beginning.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} seconds", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
}

/// Runs a command with no stdin, keeping at most `max_stdout` bytes of its
/// output (and 64 KiB of its errors), and killing it after `timeout`. Used by
/// the firewall listings, `sshd -T` and rpm's queries.
pub fn run_bounded(
    command: Command,
    timeout: Duration,
    max_stdout: usize,
) -> Result<BoundedOutput, CommandError> {
    let out = run_streaming(command, timeout, max_stdout, |stdout| {
        let mut kept = Vec::new();
        // A pipe that fails mid-read ends the output there, as if the tool
        // had stopped; a timeout is reported by run_streaming itself.
        let _ = stdout.read_to_end(&mut kept);
        kept
    })?;
    Ok(BoundedOutput {
        status: out.status,
        stdout: out.value,
        stderr: out.stderr,
        truncated: out.truncated,
    })
}

/// Runs a command with no stdin, handing its standard output to `read` as it
/// comes (at most `max_stdout` bytes of it, then an end of file), keeping 64
/// KiB of its errors, and killing it after `timeout`. Whatever `read` leaves
/// unread is drained so the command can finish.
///
/// The deadline covers the reading: once it passes, reads fail with
/// `io::ErrorKind::TimedOut`, and the command is killed and reported as
/// [`CommandError::Timeout`] whatever `read` returned.
pub fn run_streaming<T>(
    mut command: Command,
    timeout: Duration,
    max_stdout: usize,
    read: impl FnOnce(&mut ToolStdout<'_>) -> T,
) -> Result<StreamedOutput<T>, CommandError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
    // A timeout too long to represent is no deadline at all.
    let deadline = Instant::now().checked_add(timeout);
    let mut pipes = Pipes {
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        n_stdout: 0,
        stderr_kept: Vec::new(),
        deadline,
        timed_out: false,
    };
    let value = read(&mut ToolStdout {
        pipes: &mut pipes,
        max_stdout,
    });
    // Past the cap, or not wanted by the reader: read and dropped, so a child
    // blocked writing to a full pipe can finish.
    pipes.drain();
    let status = if pipes.timed_out {
        None
    } else {
        wait_until(&mut child, deadline)
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(CommandError::Timeout { program, timeout });
    };
    Ok(StreamedOutput {
        value,
        status,
        stderr: pipes.stderr_kept,
        truncated: pipes.n_stdout > max_stdout,
    })
}

/// The child's exit status, waited for until the deadline; `None` past it.
fn wait_until(child: &mut Child, deadline: Option<Instant>) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if deadline.is_none_or(|deadline| Instant::now() < deadline) => {
                thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => return None,
        }
    }
}

/// A tool's standard output as [`run_streaming`] hands it to its reader: at
/// most the cap, then an end of file; reads fail with
/// `io::ErrorKind::TimedOut` once the deadline has passed.
#[derive(Debug)]
pub struct ToolStdout<'a> {
    pipes: &'a mut Pipes,
    max_stdout: usize,
}

impl Read for ToolStdout<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = self.max_stdout.saturating_sub(self.pipes.n_stdout);
        let n_wanted = buf.len().min(room);
        match buf.get_mut(..n_wanted) {
            Some(buf) if !buf.is_empty() => self.pipes.read_stdout(buf),
            _ => Ok(0),
        }
    }
}

/// A child's output pipes, read against one deadline. Standard error is read
/// whenever it has something, so a child writing there is never stalled
/// while the reader waits for standard output.
#[derive(Debug)]
struct Pipes {
    /// `None` once at its end (or broken).
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    /// Bytes of stdout read so far, handed to the reader or drained.
    n_stdout: usize,
    stderr_kept: Vec<u8>,
    deadline: Option<Instant>,
    timed_out: bool,
}

impl Pipes {
    /// Reads stdout into `buf` (which is not empty) once it has something:
    /// `Ok(0)` at its end.
    fn read_stdout(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.wait_for_stdout()? {
                return Ok(0);
            }
            let Some(stdout) = &mut self.stdout else {
                return Ok(0);
            };
            match stdout.read(buf) {
                Ok(0) => {
                    self.stdout = None;
                    return Ok(0);
                }
                Ok(n) => {
                    self.n_stdout += n;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.stdout = None;
                    return Err(err);
                }
            }
        }
    }

    /// Waits until stdout can be read without blocking (it has data, or is at
    /// its end), reading standard error meanwhile. `Ok(false)` once stdout is
    /// closed.
    fn wait_for_stdout(&mut self) -> io::Result<bool> {
        while self.stdout.is_some() {
            let (stdout_ready, stderr_ready) = self.poll()?;
            if stderr_ready {
                self.read_stderr();
            }
            if stdout_ready {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Which of the open pipes can be read, waiting until one can or the
    /// deadline passes (an error of kind `TimedOut`, remembered).
    fn poll(&mut self) -> io::Result<(bool, bool)> {
        loop {
            let timeout = match self.deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.timed_out = true;
                        return Err(io::Error::from(io::ErrorKind::TimedOut));
                    }
                    Some(Timespec {
                        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                        tv_nsec: i64::from(left.subsec_nanos()),
                    })
                }
            };
            let mut fds = Vec::with_capacity(2);
            if let Some(stdout) = &self.stdout {
                fds.push(PollFd::new(stdout, PollFlags::IN));
            }
            if let Some(stderr) = &self.stderr {
                fds.push(PollFd::new(stderr, PollFlags::IN));
            }
            if fds.is_empty() {
                return Ok((false, false));
            }
            match poll(&mut fds, timeout.as_ref()) {
                // The time is up; the next turn says so.
                Ok(0) => {}
                Ok(_) => {
                    // A hang-up or an error counts as readable: the read that
                    // follows sees the end.
                    let mut ready = fds.iter().map(|fd| !fd.revents().is_empty());
                    let stdout_ready = self.stdout.is_some() && ready.next().unwrap_or(false);
                    let stderr_ready = self.stderr.is_some() && ready.next().unwrap_or(false);
                    return Ok((stdout_ready, stderr_ready));
                }
                Err(Errno::INTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Reads what standard error has, keeping the first [`MAX_STDERR`] bytes.
    fn read_stderr(&mut self) {
        let Some(stderr) = &mut self.stderr else {
            return;
        };
        let mut chunk = [0u8; 8192];
        match stderr.read(&mut chunk) {
            Ok(n) if n > 0 => {
                let room = MAX_STDERR.saturating_sub(self.stderr_kept.len());
                self.stderr_kept
                    .extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Ok(_) | Err(_) => self.stderr = None,
        }
    }

    /// Reads both pipes to their end, dropping stdout, until the deadline.
    fn drain(&mut self) {
        let mut sink = [0u8; 8192];
        while !self.timed_out && (self.stdout.is_some() || self.stderr.is_some()) {
            let progress = if self.stdout.is_some() {
                self.read_stdout(&mut sink).map(|_| ())
            } else {
                self.poll().map(|(_, stderr_ready)| {
                    if stderr_ready {
                        self.read_stderr();
                    }
                })
            };
            if progress.is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn bounded_command_output_is_capped() {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("head -c 100000 /dev/zero; echo oops >&2; exit 3");
        let out = run_bounded(command, Duration::from_secs(30), 1000).map_err(|e| e.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.truncated);
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn a_hung_tool_is_killed_at_the_timeout() {
        // The tool prints its pid and then never finishes.
        let mut command = Command::new("sh");
        command.arg("-c").arg("echo $$; exec sleep 60");
        let mut pid = None;
        let started = Instant::now();
        let result = run_streaming(command, Duration::from_secs(1), 1024, |stdout| {
            let mut lines = io::BufReader::new(stdout).lines();
            pid = lines.next().and_then(Result::ok);
            // Then waits for more, which never comes.
            lines.next().map(|line| line.map_err(|err| err.kind()))
        });
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(CommandError::Timeout { ref program, .. }) if program == "sh"),
            "{result:?}"
        );
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        // Killed and reaped: the process is gone, not left sleeping.
        let pid = pid.expect("the tool printed its pid");
        assert!(
            !std::path::Path::new("/proc").join(&pid).exists(),
            "process {pid} still exists"
        );
        let message = result.map(|_| ()).map_err(|err| err.to_string());
        assert_eq!(
            message,
            Err("sh did not finish within 1 seconds".to_owned())
        );
    }

    #[test]
    fn a_child_holding_the_pipe_open_does_not_hold_the_caller() {
        // The tool exits at once, but a child it left behind keeps stdout
        // open: the end never comes, and the deadline ends the wait.
        let mut command = Command::new("sh");
        command.arg("-c").arg("sleep 60 & echo $!");
        let mut orphan = None;
        let started = Instant::now();
        let result = run_streaming(command, Duration::from_secs(1), 1024, |stdout| {
            let mut lines = io::BufReader::new(stdout).lines();
            orphan = lines.next().and_then(Result::ok);
            // Past the deadline every read fails; the first failure ends it.
            lines.take_while(Result::is_ok).count()
        });
        let elapsed = started.elapsed();
        if let Some(pid) = orphan.as_deref().and_then(|pid| pid.trim().parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            matches!(result, Err(CommandError::Timeout { .. })),
            "{result:?}"
        );
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    }

    #[test]
    fn streamed_output_comes_line_by_line_and_is_capped() {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("echo one; echo two; echo err >&2; echo three");
        let out = run_streaming(command, Duration::from_secs(30), 1024, |stdout| {
            io::BufReader::new(stdout)
                .lines()
                .collect::<io::Result<Vec<String>>>()
                .map_err(|err| err.to_string())
        })
        .map_err(|err| err.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        assert_eq!(
            out.value,
            Ok(vec!["one".to_owned(), "two".to_owned(), "three".to_owned()])
        );
        assert_eq!(out.stderr, b"err\n");
        assert!(!out.truncated);
        assert!(out.status.success());

        // A reader that stops early leaves the rest to be drained: the tool
        // still finishes, and its output is not cut by any cap.
        let mut command = Command::new("sh");
        command.arg("-c").arg("head -c 1000000 /dev/zero");
        let out = run_streaming(command, Duration::from_secs(30), 2_000_000, |stdout| {
            let mut first = [0u8; 10];
            stdout.read_exact(&mut first).map(|()| first.len())
        })
        .map_err(|err| err.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        assert_eq!(out.value.ok(), Some(10));
        assert!(!out.truncated);
        assert!(out.status.success());

        // Past the cap the reader sees an end of file.
        let mut command = Command::new("sh");
        command.arg("-c").arg("head -c 1000000 /dev/zero");
        let out = run_streaming(command, Duration::from_secs(30), 4096, |stdout| {
            let mut kept = Vec::new();
            stdout.read_to_end(&mut kept).map(|_| kept.len())
        })
        .map_err(|err| err.to_string());
        let Ok(out) = out else {
            panic!("{out:?}");
        };
        assert_eq!(out.value.ok(), Some(4096));
        assert!(out.truncated);
    }

    #[test]
    fn a_tool_that_cannot_start_is_a_spawn_error() {
        let command = Command::new("/nonexistent/perimeter-no-such-tool");
        let result = run_bounded(command, Duration::from_secs(5), 1024);
        assert!(
            matches!(result, Err(CommandError::Spawn { .. })),
            "{result:?}"
        );
    }
}
