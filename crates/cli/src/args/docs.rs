//! Flags of the commands that describe perimeter itself, generated from these
//! clap definitions: `completions` and `man`.

use std::path::PathBuf;

use clap::Args;
use clap_complete::Shell;

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for. bash: save as
    /// /usr/share/bash-completion/completions/perimeter (or source it from
    /// ~/.bashrc); zsh: as _perimeter in a directory of $fpath; fish: as
    /// ~/.config/fish/completions/perimeter.fish.
    #[arg(value_enum)]
    pub(crate) shell: Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write every page into this existing directory: perimeter.1 and one
    /// page per command (perimeter-audit.1, perimeter-inventory-export.1,
    /// ...). Default: the main page on stdout (`perimeter man | man -l -`).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}
