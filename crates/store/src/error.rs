//! The errors the store returns: each names the database file it is about, so a
//! message read in a log still says which history was affected.

use std::io;
use std::path::PathBuf;

/// Something the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not create directory {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: io::Error },

    #[error("could not create database file {}: {source}", .path.display())]
    CreateFile { path: PathBuf, source: io::Error },

    #[error("no history database at {}: nothing has been stored there yet", .path.display())]
    Missing { path: PathBuf },

    #[error("could not open database {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("{} is not a SQLite database", .path.display())]
    NotADatabase { path: PathBuf },

    #[error("{} is a SQLite database but not a perimeter one: {reason}", .path.display())]
    NotPerimeter { path: PathBuf, reason: String },

    #[error(
        "database {} has schema version {found}, this perimeter knows up to {known}: upgrade perimeter",
        .path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    #[error("database {}: could not migrate to schema version {version}: {source}", .path.display())]
    Migration {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },

    #[error("database {}: could not {action}: {source}", .path.display())]
    Sqlite {
        path: PathBuf,
        action: String,
        source: rusqlite::Error,
    },

    #[error("database {}: no scan with id {id}", .path.display())]
    NoSuchScan { path: PathBuf, id: i64 },

    #[error("database {}: scan {id} is already finished and takes no more results", .path.display())]
    ScanFinished { path: PathBuf, id: i64 },

    #[error("database {}: no audit with id {id}", .path.display())]
    NoSuchAudit { path: PathBuf, id: i64 },

    /// A stored value does not decode: the file was edited by hand or damaged.
    #[error("database {}: {detail}", .path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// A value cannot be written in the stored form (a timestamp outside
    /// RFC 3339's years, a count beyond SQLite's integers).
    #[error("cannot store {what}: {detail}")]
    Unrepresentable { what: String, detail: String },
}
