//! What the agent keeps on disk, in its state directory (0700):
//!
//! - `key`: its private key (0600), generated at enrolment, never sent;
//! - `enrolment.json`: the server, the agent id, and the machine id at
//!   enrolment (a machine id that changed means the disk was cloned: the clone
//!   enrols anew with a key of its own);
//! - `acked.json`: the last report the server acknowledged and the state it
//!   left, the base of the next delta;
//! - `queue/`: reports not yet acknowledged, one file each, the exact bytes
//!   to send (a resend then has the same digest, and the server knows it).
//!
//! Every file is written atomically; a file that does not parse is reported
//! and set aside, never silently trusted.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use perimeter_api::HostState;
use perimeter_api::sign::AgentKey;
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
}

#[derive(Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
}

fn io_error(path: &Path, err: impl std::fmt::Display) -> AgentError {
    AgentError::State(format!("{}: {err}", path.display()))
}

impl StateDir {
    pub(crate) fn open(root: &Path) -> Result<StateDir, AgentError> {
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
        Ok(StateDir {
            root: root.to_owned(),
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

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|err| AgentError::State(format!("cannot encode {name}: {err}")))?;
        self.write(name, &bytes)
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
        self.write_json("enrolment.json", enrolment)
    }

    pub(crate) fn acked(&self) -> Result<Option<Acked>, AgentError> {
        self.read_json("acked.json")
    }

    pub(crate) fn save_acked(&self, acked: &Acked) -> Result<(), AgentError> {
        self.write_json("acked.json", acked)
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
    pub(crate) fn queue(&self) -> Result<Vec<(u64, Vec<u8>)>, AgentError> {
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
        let mut queue = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(bytes) = self.read(&StateDir::queue_name(seq))? {
                queue.push((seq, bytes));
            }
        }
        Ok(queue)
    }

    pub(crate) fn push(&self, seq: u64, body: &[u8]) -> Result<(), AgentError> {
        self.write(&StateDir::queue_name(seq), body)
    }

    pub(crate) fn pop(&self, seq: u64) -> Result<(), AgentError> {
        self.remove(&StateDir::queue_name(seq))
    }

    pub(crate) fn clear_queue(&self) -> Result<(), AgentError> {
        for (seq, _) in self.queue()? {
            self.pop(seq)?;
        }
        Ok(())
    }
}
