//! What the agent keeps on disk, in its state directory (0700):
//!
//! - `key`: its private key (0600), generated at enrolment, never sent;
//! - `enrolment.json`: the server, the agent id, and the machine id at
//!   enrolment (a machine id that changed means the disk was cloned: the clone
//!   enrols anew with a key of its own);
//! - `acked.json`: the last report the server acknowledged and the state it
//!   left, the base of the next delta (read once; the running agent keeps it
//!   in memory and writes each new one here);
//! - `queue/`: reports not yet acknowledged, one file each, the exact bytes
//!   to send (a resend then has the same digest, and the server knows it).
//!
//! Every file is written atomically; a file that does not parse is reported
//! and set aside, never silently trusted.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use perimeter_api::sign::AgentKey;
use perimeter_api::{HostState, Report};
use serde::{Deserialize, Serialize};

use crate::AgentError;

/// The largest file of the state directory read (a queued full report of a
/// host with 20,000 listeners is about 5 MiB).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The enrolment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Enrolment {
    pub(crate) server: String,
    pub(crate) agent_id: String,
    #[serde(default)]
    pub(crate) machine_id: Option<String>,
}

/// The last acknowledged report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Acked {
    pub(crate) seq: u64,
    pub(crate) state: HostState,
    /// The optional report fields the server named in its last
    /// acknowledgement (`ReportAck.accepts`): what the next reports may
    /// carry. Kept here so an agent run once (`--once`) knows it too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) server_accepts: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
    /// The running agent's exclusive lock on the directory (`lock`), held
    /// while it lives: two agents on one directory would send two report
    /// chains under one key, which the server takes for a cloned machine.
    _lock: Option<fs::File>,
}

/// Whether opening the directory takes the running agent's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// The agent itself: refuse to run beside another.
    Exclusive,
    /// A reader (`check --server` reading the id and key).
    None,
}

fn io_error(path: &Path, err: impl std::fmt::Display) -> AgentError {
    AgentError::State(format!("{}: {err}", path.display()))
}

impl StateDir {
    pub(crate) fn open(root: &Path, lock: Lock) -> Result<StateDir, AgentError> {
        for dir in [root.to_owned(), root.join("queue")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|err| io_error(&dir, err))?;
        }
        // Tighten a directory made by someone else.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(|err| io_error(root, err))?;
        let lock = match lock {
            Lock::None => None,
            Lock::Exclusive => {
                let path = root.join("lock");
                let file = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|err| io_error(&path, err))?;
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                {
                    Ok(()) => Some(file),
                    Err(rustix::io::Errno::WOULDBLOCK) => {
                        return Err(AgentError::State(format!(
                            "another perimeter agent is using {}: stop it first (two agents on one key look like a cloned machine to the server)",
                            root.display()
                        )));
                    }
                    Err(err) => return Err(io_error(&path, err)),
                }
            }
        };
        Ok(StateDir {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, AgentError> {
        let path = self.root.join(name);
        match perimeter_files::read_bytes(&path, "an agent state file", MAX_FILE_BYTES) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(AgentError::State(err.to_string())),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), AgentError> {
        let path = self.root.join(name);
        perimeter_files::write_atomic(&path, bytes, 0o600)
            .map_err(|err| AgentError::State(err.to_string()))
    }

    fn remove(&self, name: &str) -> Result<(), AgentError> {
        let path = self.root.join(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(io_error(&path, err)),
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, AgentError> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| io_error(&self.root.join(name), format!("does not parse: {err}")))
    }

    /// Writes `value` as JSON (pretty when `pretty`), encoded straight into
    /// the file: a state of thousands of listeners is never whole in memory
    /// as text.
    fn write_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        pretty: bool,
    ) -> Result<(), AgentError> {
        let path = self.root.join(name);
        perimeter_files::write_atomic_with(&path, 0o600, |file| {
            let written = if pretty {
                serde_json::to_writer_pretty(file, value)
            } else {
                serde_json::to_writer(file, value)
            };
            written.map_err(std::io::Error::other)
        })
        .map_err(|err| AgentError::State(err.to_string()))
    }

    pub(crate) fn key(&self) -> Result<Option<AgentKey>, AgentError> {
        let Some(bytes) = self.read("key")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        AgentKey::from_file_text(&text)
            .map(Some)
            .map_err(|err| io_error(&self.root.join("key"), err))
    }

    pub(crate) fn save_key(&self, key: &AgentKey) -> Result<(), AgentError> {
        self.write("key", key.to_file_text().as_bytes())
    }

    pub(crate) fn enrolment(&self) -> Result<Option<Enrolment>, AgentError> {
        self.read_json("enrolment.json")
    }

    pub(crate) fn save_enrolment(&self, enrolment: &Enrolment) -> Result<(), AgentError> {
        self.write_json("enrolment.json", enrolment, true)
    }

    pub(crate) fn acked(&self) -> Result<Option<Acked>, AgentError> {
        self.read_json("acked.json")
    }

    pub(crate) fn save_acked(&self, acked: &Acked) -> Result<(), AgentError> {
        self.write_json("acked.json", acked, true)
    }

    /// Forgets the enrolment, the key and everything reported under it.
    pub(crate) fn forget(&self) -> Result<(), AgentError> {
        for name in ["key", "enrolment.json", "acked.json"] {
            self.remove(name)?;
        }
        self.clear_queue()
    }

    fn queue_name(seq: u64) -> String {
        format!("queue/{seq:020}.json")
    }

    /// The queued reports, by sequence number.
    #[cfg(test)]
    pub(crate) fn queue(&self) -> Result<Vec<(u64, Vec<u8>)>, AgentError> {
        let mut queue = Vec::new();
        for seq in self.queue_seqs()? {
            if let Some(bytes) = self.queued(seq)? {
                queue.push((seq, bytes));
            }
        }
        Ok(queue)
    }

    /// The sequence numbers of the queued reports, in order (their files are
    /// not read).
    pub(crate) fn queue_seqs(&self) -> Result<Vec<u64>, AgentError> {
        let dir = self.root.join("queue");
        let mut seqs: Vec<u64> = fs::read_dir(&dir)
            .map_err(|err| io_error(&dir, err))?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".json")?.parse::<u64>().ok()
            })
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The bytes of queued report `seq`, `None` when it is not queued.
    pub(crate) fn queued(&self, seq: u64) -> Result<Option<Vec<u8>>, AgentError> {
        self.read(&StateDir::queue_name(seq))
    }

    /// Queued report `seq`, parsed.
    pub(crate) fn queued_report(&self, seq: u64) -> Result<Option<Report>, AgentError> {
        self.read_json(&StateDir::queue_name(seq))
    }

    #[cfg(test)]
    pub(crate) fn push(&self, seq: u64, body: &[u8]) -> Result<(), AgentError> {
        self.write(&StateDir::queue_name(seq), body)
    }

    /// Queues `report` under its number, encoded as it is written: the exact
    /// bytes that will be sent, and resent.
    pub(crate) fn push_report(&self, report: &Report) -> Result<(), AgentError> {
        self.write_json(&StateDir::queue_name(report.seq), report, false)
    }

    pub(crate) fn pop(&self, seq: u64) -> Result<(), AgentError> {
        self.remove(&StateDir::queue_name(seq))
    }

    pub(crate) fn clear_queue(&self) -> Result<(), AgentError> {
        for seq in self.queue_seqs()? {
            self.pop(seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_per_directory_and_readers_do_not_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = StateDir::open(dir.path(), Lock::Exclusive).expect("first agent");
        let second = StateDir::open(dir.path(), Lock::Exclusive).expect_err("second agent");
        assert!(
            second.to_string().contains("another perimeter agent"),
            "{second}"
        );
        StateDir::open(dir.path(), Lock::None).expect("a reader");
        drop(first);
        StateDir::open(dir.path(), Lock::Exclusive).expect("after the first stopped");
    }

    #[test]
    fn the_queue_is_kept_in_order_and_files_are_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::open(dir.path(), Lock::Exclusive).expect("open");
        for seq in [3, 1, 2] {
            state
                .push(seq, format!("{{\"seq\":{seq}}}").as_bytes())
                .expect("push");
        }
        let seqs: Vec<u64> = state
            .queue()
            .expect("queue")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        state.pop(2).expect("pop");
        let seqs: Vec<u64> = state
            .queue()
            .expect("queue")
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [1, 3]);
        let mode = fs::metadata(dir.path().join("queue/00000000000000000001.json"))
            .expect("queued file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(dir.path()).expect("dir").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
