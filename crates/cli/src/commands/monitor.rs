//! `perimeter monitor`: the service that runs the [monitor] jobs of
//! perimeter.toml on their schedules and tells every unexpected change to
//! its channels (crates/monitor), with this CLI's scan, audit and verify as
//! the jobs' runner. Signals become the service's controls: SIGHUP reloads,
//! SIGTERM and SIGINT stop (a running scan is stored incomplete).

use anyhow::{Context, Result, bail};
use perimeter_monitor::service::{self, Control, Once, ServiceOptions};
use perimeter_store::RunStatus;
use tokio::sync::mpsc;

use crate::args::MonitorArgs;
use crate::exit_codes::ExitCode;
use crate::pipeline::monitor::CliRunner;
use crate::settings::{self, Zero, parse_duration};
use crate::terminal::Terminal;

pub(crate) fn run(args: MonitorArgs, _terminal: &Terminal) -> Result<ExitCode> {
    let config = settings::inventory_file(args.inventory.as_deref());
    if !config.named && !config.path.exists() {
        bail!(
            "the monitor needs a perimeter.toml with a [monitor] part: --inventory FILE, ./perimeter.toml or /etc/perimeter/perimeter.toml (see `perimeter init`)"
        );
    }
    let retry_initial = parse_duration("--retry-initial", &args.retry_initial, Zero::Refused)?;
    let retry_max = parse_duration("--retry-max", &args.retry_max, Zero::Refused)?;
    if retry_max < retry_initial {
        bail!("--retry-max must be at least --retry-initial");
    }
    if args.check {
        let (jobs, channels) = service::check_config(&config.path)?;
        outln!("{}: the configuration is valid", config.path.display());
        for job in &jobs {
            outln!("  job {}: {}", job.job, job.schedule);
        }
        if channels.is_empty() {
            outln!(
                "  no channels: changes are stored and listed by `perimeter alerts`, told to no one"
            );
        }
        for channel in &channels {
            outln!("  channel {channel}");
        }
        return Ok(ExitCode::Clean);
    }
    let db_path = settings::db_path(args.db.db.as_deref())?;
    let once = args.once.map(|job| {
        if job.is_empty() {
            Once::Due
        } else {
            Once::Job(job)
        }
    });
    let options = ServiceOptions {
        config_path: config.path.clone(),
        db_path: db_path.clone(),
        host: settings::hostname(),
        once: once.clone(),
        retry_initial,
        retry_max,
    };
    let runner = CliRunner {
        db: db_path,
        inventory: config.path,
        fleet_database: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(async {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(forward_signals(tx));
        service::run(&runner, options, rx).await
    })?;
    if once.is_none() {
        return Ok(ExitCode::Clean);
    }
    let mut failed = false;
    let mut changed = false;
    for (job, status, n_changes) in &summary.runs {
        outln!("{job}: {} ({n_changes} changes)", status.as_str());
        failed |= *status != RunStatus::Complete;
        changed |= *n_changes > 0;
    }
    if summary.runs.is_empty() {
        outln!("no job was due");
    }
    outln!(
        "alerts: {} delivered, {} waiting for a channel",
        summary.delivered,
        summary.pending
    );
    if failed {
        return Ok(ExitCode::Error);
    }
    Ok(ExitCode::findings_if(changed))
}

/// SIGHUP to reload, SIGTERM or SIGINT to stop; a second stop signal ends
/// the process at once.
async fn forward_signals(tx: mpsc::Sender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals: SIGHUP will not reload");
        return;
    };
    let mut stopping = false;
    loop {
        let control = tokio::select! {
            _ = hup.recv() => Control::Reload,
            _ = term.recv() => Control::Stop,
            _ = int.recv() => Control::Stop,
        };
        if control == Control::Stop {
            if stopping {
                tracing::warn!("stopped again: exiting now");
                std::process::exit(i32::from(ExitCode::Interrupted.code()));
            }
            stopping = true;
        }
        if tx.send(control).await.is_err() {
            return;
        }
    }
}
