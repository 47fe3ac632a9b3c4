//! `perimeter scanner`: a scanner node of a `perimeter server` on PostgreSQL.
//! It leases one part of a scan job at a time, scans it, sends the results
//! under its lease and takes the next (pipeline/scanner.rs), until SIGTERM
//! or Ctrl-C, or with --once until there is nothing left to scan.

use anyhow::{Context, Result};
use perimeter_api::client::{ApiClient, Auth};
use tokio_util::sync::CancellationToken;

use crate::args::ScannerArgs;
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{read_token, trust};
use crate::pipeline::scanner::{ApiLeases, NodeOptions, run_node};
use crate::settings::{self, Zero, parse_duration};
use crate::terminal::Terminal;

pub(crate) fn run(args: ScannerArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let token = read_token(&args.token_file)?;
    let node = args.node.clone().unwrap_or_else(settings::hostname);
    let options = NodeOptions {
        name: node.clone(),
        allow: args.allow_targets.clone(),
        poll: parse_duration("--poll", &args.poll, Zero::Refused)?,
        once: args.once,
    };
    let client = ApiClient::new(&args.server, &trust(&args.trust)?, Auth::Token(token))?;
    let leases = ApiLeases {
        client,
        node,
        vantage: args.vantage.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tally = runtime.block_on(async {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            on_signal.cancel();
        });
        eprintln!(
            "perimeter scanner {}: asking {} for work{}",
            options.name,
            args.server,
            args.vantage
                .as_deref()
                .map(|v| format!(" (vantage point {v})"))
                .unwrap_or_default()
        );
        run_node(&leases, &options, &stop).await
    })?;
    eprintln!(
        "perimeter scanner {}: {} parts done, {} lost to other nodes, {} refused",
        options.name, tally.done, tally.lost, tally.refused
    );
    Ok(if tally.refused > 0 {
        ExitCode::Error
    } else {
        ExitCode::Clean
    })
}
