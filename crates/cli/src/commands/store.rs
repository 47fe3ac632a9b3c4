//! Opening the history database named by `--db`, `PERIMETER_DB` or the XDG
//! default.

use std::path::PathBuf;

use anyhow::Result;
use perimeter_store::SqliteStore;

use crate::args::DbArgs;
use crate::settings;

pub(crate) fn db_path(args: &DbArgs) -> Result<PathBuf> {
    settings::db_path(args.db.as_deref())
}

pub(crate) fn open(args: &DbArgs) -> Result<SqliteStore> {
    let path = db_path(args)?;
    Ok(SqliteStore::open(&path)?)
}
