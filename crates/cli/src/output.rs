//! Standard output, written so that it never panics: a reader that went away
//! (`perimeter rules | head -1`) ends the output quietly and the command still
//! returns its own exit code (a gate's verdict does not depend on who reads
//! it); any other write error (a full disk, `> /dev/full`) is kept and turned
//! into exit 2 with a clear message when the command ends.
//!
//! Every byte the CLI writes to stdout goes through here: the `out!` and
//! `outln!` macros for text, [`Stdout`] for serialisers that want an
//! `io::Write`. `println!` would panic on the first failed write.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct State {
    /// The reader closed its end: nothing more is written, and that is fine.
    closed: bool,
    /// The first write that failed for another reason.
    error: Option<io::Error>,
}

static STATE: Mutex<State> = Mutex::new(State {
    closed: false,
    error: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    // A panic while holding the lock cannot leave the state inconsistent
    // (it is two plain fields), so a poisoned lock is used as it is.
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes the outcome of a write: a broken pipe closes the output, any other
/// error is kept (the first one).
fn record(result: io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
            state().closed = true;
            Ok(())
        }
        Err(err) => {
            let message = io::Error::new(err.kind(), err.to_string());
            state().error.get_or_insert(err);
            Err(message)
        }
    }
}

/// Whether output should still be written: the reader is there and nothing
/// failed.
fn open() -> bool {
    let state = state();
    !state.closed && state.error.is_none()
}

/// Writes formatted text to stdout (what `out!` and `outln!` expand to).
/// Failures are recorded, never raised here.
pub(crate) fn write_fmt(args: fmt::Arguments<'_>) {
    if !open() {
        return;
    }
    let mut stdout = io::stdout().lock();
    let _ = record(stdout.write_fmt(args));
}

/// Flushes stdout now (a service's start lines, read by whoever waits for
/// them while the service runs).
pub(crate) fn flush() {
    if open() {
        let _ = record(io::stdout().lock().flush());
    }
}

/// Flushes stdout at the end of a command and says whether everything
/// written reached it: `Err` with the first write error other than a closed
/// pipe.
pub(crate) fn finish() -> io::Result<()> {
    if open() {
        let _ = record(io::stdout().lock().flush());
    }
    match state().error.take() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Stdout as an `io::Write`, for serialisers: writes after the reader went
/// away succeed without effect (so a long document ends quickly and quietly);
/// another error is returned (and recorded), which stops the serialiser.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !open() {
            return match state().error {
                Some(ref err) => Err(io::Error::new(err.kind(), err.to_string())),
                None => Ok(buf.len()),
            };
        }
        let mut stdout = io::stdout().lock();
        record(stdout.write_all(buf)).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !open() {
            return Ok(());
        }
        record(io::stdout().lock().flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_closes_quietly_and_other_errors_are_kept() {
        // One test touches the process-wide state, start to end.
        assert!(record(Err(io::Error::from(io::ErrorKind::BrokenPipe))).is_ok());
        assert!(state().closed);
        assert!(!open());
        state().closed = false;
        let full = io::Error::from_raw_os_error(28);
        assert!(record(Err(full)).is_err());
        assert!(!open());
        let err = finish().expect_err("the disk-full error is reported");
        assert_eq!(err.raw_os_error(), Some(28));
        // Reported once.
        assert!(finish().is_ok());
    }
}
