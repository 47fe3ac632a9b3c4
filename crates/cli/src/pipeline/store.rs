//! Opening the history database named by `--db`, `PERIMETER_DB` or the XDG
//! default (`settings::db_path`).

use anyhow::Result;
use perimeter_store::SqliteStore;

use crate::args::DbArgs;
use crate::settings;

pub(crate) fn open(args: &DbArgs) -> Result<SqliteStore> {
    let path = settings::db_path(args.db.as_deref())?;
    Ok(SqliteStore::open(&path)?)
}
