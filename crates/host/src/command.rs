//! Running external tools (nft, iptables-save, sshd -T, rpm, apt-helper)
//! with no stdin, a timeout and a cap on what they print: a tool that hangs or
//! floods never stalls or exhausts the audit.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
/// the firewall listings and by `sshd -T`.
pub fn run_bounded(
    mut command: Command,
    timeout: Duration,
    max_stdout: usize,
) -> Result<BoundedOutput, CommandError> {
    const MAX_STDERR: usize = 64 * 1024;
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
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Read both pipes on threads so neither can fill up and stall the child;
    // each read is capped, and the rest is drained so the child can finish.
    let read_capped = |pipe: Option<Box<dyn Read + Send>>, cap: usize| {
        thread::spawn(move || {
            let mut kept = Vec::new();
            let mut truncated = false;
            if let Some(mut pipe) = pipe {
                let _ = pipe.by_ref().take(cap as u64).read_to_end(&mut kept);
                let mut sink = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                    truncated = true;
                }
            }
            (kept, truncated)
        })
    };
    let stdout_reader = read_capped(
        stdout.map(|p| Box::new(p) as Box<dyn Read + Send>),
        max_stdout,
    );
    let stderr_reader = read_capped(
        stderr.map(|p| Box::new(p) as Box<dyn Read + Send>),
        MAX_STDERR,
    );

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout { program, timeout });
            }
        }
    };
    let (stdout, truncated) = stdout_reader.join().unwrap_or_default();
    let (stderr, _) = stderr_reader.join().unwrap_or_default();
    Ok(BoundedOutput {
        status,
        stdout,
        stderr,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
