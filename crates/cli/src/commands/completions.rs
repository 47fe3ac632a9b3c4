//! `perimeter completions SHELL`: the shell completion script, generated from
//! the clap definitions in `args` so it never drifts from the flags.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};
use crate::exit_codes::ExitCode;
use crate::output::Stdout;

pub(crate) fn run(args: CompletionsArgs) -> Result<ExitCode> {
    // Rendered into memory first: clap_complete panics when a write fails,
    // and a full disk must be exit 2, not a panic. The write error is
    // returned as it is: `main` says it once, as every failed output.
    let script = script(args.shell);
    Stdout.write_all(&script)?;
    Ok(ExitCode::Clean)
}

/// The completion script for `shell`.
fn script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    script
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;
    use clap_complete::Shell;

    use super::*;

    /// Every shell's script names the binary and completes a command and a
    /// flag of a nested command (`inventory export --output`).
    #[test]
    fn every_shell_completes_commands_and_flags() {
        for shell in Shell::value_variants() {
            let script = String::from_utf8(script(*shell)).expect("scripts are UTF-8");
            for needle in ["perimeter", "audit", "completions", "export", "output"] {
                assert!(
                    script.contains(needle),
                    "{shell}: the script does not mention {needle}"
                );
            }
        }
    }
}
