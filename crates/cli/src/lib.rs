//! The `perimeter` command, in layers: raw flags (`args`, clap only), the
//! settings the flags leave to the world outside (`settings`), the runs
//! several commands share (`pipeline`), and one module per command under
//! `commands/`, each returning an [`exit_codes::ExitCode`]. Only this crate
//! touches the terminal, environment variables and exit codes.

mod args;
mod commands;
mod exit_codes;
mod pipeline;
mod settings;
mod terminal;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::exit_codes::ExitCode;
use crate::terminal::Terminal;

/// Parse the command line, run the command, and turn the outcome into an exit
/// code: the command's own (0 or 1), or 2 for any error, printed on stderr.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help and version on stdout with exit 0, usage errors
            // on stderr; usage errors map to our 2.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::Error
            } else {
                ExitCode::Clean
            }
            .into();
        }
    };
    init_logging(cli.verbose);
    match run(cli.command, &Terminal::detect()) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("perimeter: error: {err:#}");
            ExitCode::Error.into()
        }
    }
}

/// Run one command.
fn run(command: Command, terminal: &Terminal) -> anyhow::Result<ExitCode> {
    match command {
        Command::Audit(args) => commands::audit::run(args, terminal),
        Command::Check(args) => commands::check::run(args, terminal),
        Command::Approve(args) => commands::approve::run(args, terminal),
        Command::Rules => commands::rules::run(terminal),
        Command::Scan(args) => commands::scan::run(*args, terminal),
        Command::Scans(args) => commands::scans::run(args, terminal),
        Command::Diff(args) => commands::diff::run(args, terminal),
        Command::Audits(args) => commands::audits::run(args, terminal),
        Command::Init(args) => commands::envs::init(args),
        Command::Envs(args) => commands::envs::run(args, terminal),
        Command::Verify(args) => commands::verify::run(*args, terminal),
        Command::Inventory(args) => commands::inventory::run(args, terminal),
        Command::Watch(args) => commands::watch::run(args, terminal),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
