//! Exclusive locks for read-modify-write of a user's file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::{FileError, resolve_write_target};

/// An exclusive lock on a file, held until dropped.
///
/// The lock is taken on the file itself (`flock`), so every perimeter that
/// updates the same file, through whichever symlink, waits for the others.
/// Since an update replaces the file by a rename, a process that waited on the
/// old file finds, once it has the lock, that the path now names a new file:
/// it then locks that one instead, so it always reads what the previous
/// holder wrote.
#[derive(Debug)]
pub struct UpdateLock {
    /// The file the lock is on (the end of the symlink chain).
    pub target: PathBuf,
    _file: Option<File>,
}

/// Locks the file at `path` (through symlinks) for a read-modify-write,
/// waiting for any other holder. A file that does not exist yet is created
/// empty by nobody: the lock is then taken on its directory instead, so two
/// processes creating the same new file still take turns.
pub fn lock_for_update(path: &Path) -> Result<UpdateLock, FileError> {
    loop {
        let target = resolve_write_target(path)?;
        let file = match OpenOptions::new().read(true).open(&target) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let dir = match target.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                    _ => PathBuf::from("."),
                };
                let dir_file = File::open(&dir).map_err(|err| FileError::io(&dir, err))?;
                rustix::fs::flock(&dir_file, FlockOperation::LockExclusive)
                    .map_err(|err| FileError::io(&dir, err.into()))?;
                if target.exists() {
                    // Someone created it while we waited: lock the file.
                    continue;
                }
                return Ok(UpdateLock {
                    target,
                    _file: Some(dir_file),
                });
            }
            Err(err) => return Err(FileError::io(&target, err)),
        };
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|err| FileError::io(&target, err.into()))?;
        let held = file.metadata().map_err(|err| FileError::io(&target, err))?;
        match std::fs::metadata(&target) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                return Ok(UpdateLock {
                    target,
                    _file: Some(file),
                });
            }
            // Replaced (or removed) while we waited: lock what is there now.
            _ => continue,
        }
    }
}
