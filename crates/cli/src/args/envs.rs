//! Flags of the commands about the inventory of environments: `init` and
//! `envs`.

use std::path::PathBuf;

use clap::Args;

use super::{DbArgs, Format, InventoryFileArgs};

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Where to write it.
    #[arg(default_value = "perimeter.toml")]
    pub(crate) path: PathBuf,

    /// Overwrite an existing file.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnvsArgs {
    #[command(flatten)]
    pub(crate) inventory: InventoryFileArgs,

    #[command(flatten)]
    pub(crate) db: DbArgs,

    #[arg(long, value_enum, default_value = "human")]
    pub(crate) format: Format,
}
