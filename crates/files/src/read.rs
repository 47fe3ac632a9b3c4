//! Bounded reads of regular files.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{FileError, LineIndex, kind_name};

/// The cap for configuration and lists a person writes: approvals,
/// perimeter.toml, target and exclude lists. 64 MiB holds several hundred
/// thousand approvals or a few million targets, far beyond any real file,
/// while `/dev/zero` or a runaway generator is stopped at once.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// The cap for documents perimeter wrote itself and reads back (rebuild
/// manifests): a manifest lists every package and unowned file of a host.
pub const MAX_DOCUMENT_BYTES: u64 = 256 * 1024 * 1024;

/// Opens `path` for reading without blocking and checks that it is a regular
/// file. `O_NONBLOCK` makes opening a FIFO return at once instead of waiting
/// for a writer (it changes nothing for a regular file); `O_NOCTTY` keeps a
/// terminal device from becoming our controlling terminal before it is
/// refused.
fn open_regular(path: &Path) -> Result<(File, u64), FileError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| FileError::io(path, err))?;
    let meta = file.metadata().map_err(|err| FileError::io(path, err))?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: kind_name(meta.file_type()),
        });
    }
    Ok((file, meta.len()))
}

/// The bytes of the regular file at `path`, at most `cap` of them: a larger
/// file (or one that grows past the cap while it is read) is an error naming
/// `what` the file was meant to be.
pub fn read_bytes(path: &Path, what: &'static str, cap: u64) -> Result<Vec<u8>, FileError> {
    let (file, len) = open_regular(path)?;
    let too_large = || FileError::TooLarge {
        path: path.to_owned(),
        what,
        cap,
    };
    if len > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| FileError::io(path, err))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The UTF-8 text of the regular file at `path`, as [`read_bytes`]; text that
/// is not UTF-8 is an error with the line and column of the first bad byte. A
/// leading byte-order mark is kept (the caller's parser decides about it).
pub fn read_text(path: &Path, what: &'static str, cap: u64) -> Result<String, FileError> {
    let bytes = read_bytes(path, what, cap)?;
    String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let bytes = err.as_bytes();
        let prefix = std::str::from_utf8(bytes.get(..valid).unwrap_or_default()).unwrap_or("");
        let (line, column) = LineIndex::new(prefix).line_column(prefix, valid);
        FileError::NotUtf8 {
            path: path.to_owned(),
            line,
            column,
            byte: bytes.get(valid).copied().unwrap_or(0),
        }
    })
}
