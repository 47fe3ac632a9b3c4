//! Opening the history database named by `--db`, `PERIMETER_DB` or the XDG
//! default.

use std::path::PathBuf;

use anyhow::{Context, Result};
use perimeter_store::{SqliteStore, default_db_path};

use crate::args::DbArgs;

pub(crate) fn db_path(args: &DbArgs) -> Result<PathBuf> {
    if let Some(path) = &args.db {
        return Ok(path.clone());
    }
    let xdg = std::env::var_os("XDG_DATA_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    default_db_path(xdg.as_deref(), home.as_deref())
        .context("no place for the history database: set --db, PERIMETER_DB, XDG_DATA_HOME or HOME")
}

pub(crate) fn open(args: &DbArgs) -> Result<SqliteStore> {
    let path = db_path(args)?;
    Ok(SqliteStore::open(&path)?)
}

/// The history for a command that only reads it (`scans`, `diff`, `audits`,
/// `envs`): never created, never written, readable without write permission.
pub(crate) fn open_read_only(args: &DbArgs) -> Result<SqliteStore> {
    let path = db_path(args)?;
    Ok(SqliteStore::open_read_only(&path)?)
}
