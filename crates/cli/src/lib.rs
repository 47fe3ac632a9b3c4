//! The `perimeter` command, in layers: raw flags (`args`, clap only), the
//! settings the flags leave to the world outside (`settings`), the runs
//! several commands share (`pipeline`), and one module per command under
//! `commands/`, each returning an [`exit_codes::ExitCode`]. Only this crate
//! touches the terminal, environment variables and exit codes.

/// `print!` to stdout through [`output`]: never panics on a closed pipe or a
/// full disk.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` to stdout through [`output`].
macro_rules! outln {
    () => {
        $crate::output::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod args;
mod commands;
mod exit_codes;
mod output;
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
    let cli = match Cli::try_parse_from(nmap_style_flags(std::env::args_os())) {
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
    // The monitor is a service: what it does is its log, at info by default.
    let verbose = match cli.command {
        Command::Monitor(_) => cli.verbose.max(1),
        _ => cli.verbose,
    };
    init_logging(verbose);
    let outcome = run(cli.command, &Terminal::detect());
    // Whatever the command decided, output that did not reach stdout (a full
    // disk) makes the run an error: its answer was not delivered.
    let written = output::finish();
    match (outcome, written) {
        (Ok(code), Ok(())) => code.into(),
        (Ok(_), Err(write)) => {
            eprintln!("perimeter: error: cannot write the output: {write}");
            ExitCode::Error.into()
        }
        (Err(err), Err(write)) => {
            // A command stopped by its own output failing says so once; one
            // that failed for another reason says both.
            let message = error_chain(&err);
            if message != write.to_string() {
                eprintln!("perimeter: error: {message}");
            }
            eprintln!("perimeter: error: cannot write the output: {write}");
            ExitCode::Error.into()
        }
        (Err(err), Ok(())) => {
            eprintln!("perimeter: error: {}", error_chain(&err));
            ExitCode::Error.into()
        }
    }
}

/// nmap's two-letter scan types as people type them (`-sU`, `-sS`), which
/// clap would read as `-s -U`: each becomes its long flag. Only these exact
/// words are rewritten, and never after `--`.
fn nmap_style_flags(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut after_dashes = false;
    args.map(|arg| {
        if after_dashes {
            return arg;
        }
        match arg.to_str() {
            Some("--") => {
                after_dashes = true;
                arg
            }
            Some("-sU") => "--udp".into(),
            Some("-sS") => "--syn".into(),
            _ => arg,
        }
    })
    .collect()
}

/// An error and its causes on one line, each cause said once: many errors
/// already include their cause's text in their own (`cannot read X: no such
/// file`), and printing the chain again would double it ("malformed:
/// malformed").
pub(crate) fn error_chain(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
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
        Command::Monitor(args) => commands::monitor::run(args, terminal),
        Command::Alerts(args) => commands::alerts::run(args, terminal),
        Command::Server(args) => commands::server::run(args, terminal),
        Command::Approvals(args) => commands::approvals::run(args, terminal),
        Command::Agent(args) => commands::agent::run(*args, terminal),
        Command::Scanner(args) => commands::scanner::run(*args, terminal),
        Command::Completions(args) => commands::completions::run(args),
        Command::Man(args) => commands::man::run(args),
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
