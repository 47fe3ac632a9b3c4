//! The user's files, read and written safely: every file perimeter is told to
//! read (approvals, the environments file, target lists, manifests) and every
//! file it writes on the user's behalf (approvals, reports, manifests, the
//! example configuration) goes through this crate.
//!
//! - [`read_text`] / [`read_bytes`] open a file once, refuse what is not a
//!   regular file (a FIFO would block forever, `/dev/zero` would never end)
//!   and cap its size, with errors that say which file, what it is and what
//!   was expected. Text that is not UTF-8 is refused with the line and column
//!   of the first bad byte.
//! - [`write_atomic`] replaces a file so that readers see the old contents or
//!   the new, never half of either; it writes *through* a symlink to its target
//!   (a link into a repository stays a link and the repository gets the
//!   change), never replaces anything but a regular file (a device node, a
//!   directory or a socket is refused), and keeps the owner, group and mode of
//!   the file it replaces. [`write_atomic_with`] does the same for a
//!   document encoded straight into the file.
//! - [`lock_for_update`] takes an exclusive lock for a read-modify-write, so
//!   two processes updating the same file both land, one after the other.
//! - [`LineIndex`] turns byte offsets into 1-based line and column in linear
//!   time overall (a binary search per lookup), for configuration errors.
//!
//! Architecture invariant: perimeter opens a user-named input file only
//! through this crate, and writes a user-visible file only through it.

mod lines;
mod lock;
mod read;
mod write;

pub use lines::LineIndex;
pub use lock::{UpdateLock, lock_for_update};
pub use read::{MAX_CONFIG_BYTES, MAX_DOCUMENT_BYTES, read_bytes, read_text};
pub use write::{resolve_write_target, write_atomic, write_atomic_with};

use std::path::PathBuf;

/// Why a file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path names something that is not a regular file.
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The file is larger than the cap for its kind.
    #[error("{}: is larger than the {} allowed for {what}", path.display(), human_bytes(*cap))]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        cap: u64,
    },
    /// The file is not UTF-8 text.
    #[error("{}:{line}:{column}: not UTF-8 text (byte 0x{byte:02x})", path.display())]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
        byte: u8,
    },
    /// A symlink chain that does not end (a loop, or too long).
    #[error("{}: too many levels of symbolic links", path.display())]
    SymlinkLoop { path: PathBuf },
}

impl FileError {
    /// Whether the file does not exist (as opposed to existing and being
    /// unreadable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    fn io(path: &std::path::Path, source: std::io::Error) -> FileError {
        FileError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What a file type is, in words, for errors.
fn kind_name(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "not a file"
    }
}

fn human_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}
