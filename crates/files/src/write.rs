//! Atomic replacement of a file, through symlinks, keeping owner and mode.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{FileError, kind_name};

/// How many symbolic links a path may go through, as the kernel's own
/// `MAXSYMLINKS` (40).
const MAX_SYMLINK_HOPS: usize = 40;

/// The file a write to `path` must replace: `path` itself, or the file at the
/// end of its chain of symbolic links (which need not exist yet: a dangling
/// link is written through, creating its target). Refuses a path that ends in
/// anything but a regular file.
pub fn resolve_write_target(path: &Path) -> Result<PathBuf, FileError> {
    let mut current = path.to_owned();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = fs::read_link(&current).map_err(|err| FileError::io(&current, err))?;
                current = if link.is_absolute() {
                    link
                } else {
                    current
                        .parent()
                        .map_or_else(|| link.clone(), |dir| dir.join(&link))
                };
            }
            Ok(meta) if meta.file_type().is_file() => return Ok(current),
            Ok(meta) => {
                return Err(FileError::NotRegular {
                    path: current,
                    kind: kind_name(meta.file_type()),
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(current),
            Err(err) => return Err(FileError::io(&current, err)),
        }
    }
    Err(FileError::SymlinkLoop {
        path: path.to_owned(),
    })
}

/// Replaces the file at `path` (or, through symlinks, the file it points to)
/// with `contents`: a temporary file beside the target, given the target's
/// mode, owner and group when it exists (the owner only where this process may
/// set it, i.e. as root or when it already is the owner), written, synced,
/// renamed over the target, and the directory synced so the rename itself is
/// durable. Readers see the old file or the new one, never half of either.
///
/// A new file gets mode `new_mode` (before the umask). Parent directories are
/// not created: a typo in a directory name is an error, not a new tree.
pub fn write_atomic(path: &Path, contents: &[u8], new_mode: u32) -> Result<(), FileError> {
    write_atomic_with(path, new_mode, |file| file.write_all(contents))
}

/// [`write_atomic`] of what `write` writes: a large document (an agent's
/// state, a report) goes to the temporary file as it is encoded, never whole
/// in memory. An error of `write` leaves the target as it was.
pub fn write_atomic_with(
    path: &Path,
    new_mode: u32,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let target = resolve_write_target(path)?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let existing = match fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(FileError::io(&target, err)),
    };
    let name = target
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}.perimeter-"))
        .tempfile_in(&dir)
        .map_err(|err| FileError::io(&dir, err))?;
    let io_err = |err: std::io::Error| FileError::io(&target, err);
    match &existing {
        Some(meta) => {
            // Owner first: chown clears set-id bits, which the mode then restores.
            let (uid, gid) = (meta.uid(), meta.gid());
            if uid != rustix::process::geteuid().as_raw()
                || gid != rustix::process::getegid().as_raw()
            {
                // As root this keeps a `nobody:nogroup` file theirs; as anyone
                // else the kernel refuses a change of owner, and the group is
                // kept where we belong to it. What cannot be kept is left as
                // the kernel made it rather than failing the write.
                let _ = std::os::unix::fs::fchown(temp.as_file(), Some(uid), Some(gid))
                    .or_else(|_| std::os::unix::fs::fchown(temp.as_file(), None, Some(gid)));
            }
            temp.as_file()
                .set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err)?;
        }
        None => {
            let umask = current_umask();
            temp.as_file()
                .set_permissions(fs::Permissions::from_mode(new_mode & !umask & 0o7777))
                .map_err(io_err)?;
        }
    }
    {
        let mut buffered = std::io::BufWriter::new(temp.as_file_mut());
        write(&mut buffered).map_err(io_err)?;
        buffered.flush().map_err(io_err)?;
    }
    temp.as_file().sync_all().map_err(io_err)?;
    temp.persist(&target).map_err(|err| io_err(err.error))?;
    if let Ok(dir) = fs::File::open(&dir) {
        dir.sync_all().map_err(|err| FileError::io(&target, err))?;
    }
    Ok(())
}

/// The process's umask. Reading it means setting it, so it is set back at
/// once; perimeter creates no files on other threads while this runs (writes
/// of user files happen on the command's own thread, one at a time).
fn current_umask() -> u32 {
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    rustix::process::umask(old);
    old.as_raw_mode()
}
