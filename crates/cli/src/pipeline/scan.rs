//! A scan job, which `scan` and `verify` share: the port set and engine
//! options from the tuning flags, then resolve, scan, stream results to JSON
//! Lines and the store as they come, and finish the stored scan (incomplete
//! when interrupted).
//!
//! Ctrl-C stops the scan cleanly: what was found is stored, marked
//! incomplete, and the caller is told it was interrupted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use perimeter_model::{PortResult, PortState, ScanInfo};
use perimeter_report::scan::{StateTotals, to_jsonl_line};
use perimeter_scan::{
    PortSet, Profile, ScanError, ScanEvent, ScanOptions, ScanOutcome, ScanPlan, SystemResolver,
    TargetRequest, TargetSet, TcpTransport, read_target_file, resolve_targets, run_udp,
    standard_probes,
};
use perimeter_store::{SqliteStore, Store};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::args::{ProfileArg, ScanArgs, ScanTuning};
use crate::settings::{Zero, parse_duration};

/// Default port list: the 1,000 most exposure-relevant ports, like nmap's
/// default of its top 1,000.
const DEFAULT_TOP_PORTS: usize = 1000;
/// Results are written to the database in batches of this many, or at least
/// once a second.
const STORE_BATCH: usize = 512;

/// What a `perimeter scan` command line asks for, checked.
pub(crate) struct Settings {
    pub(crate) request: TargetRequest,
    pub(crate) ports: PortSet,
    pub(crate) options: ScanOptions,
    /// The command line, for the nmap XML's record.
    pub(crate) args_text: String,
}

/// The targets, ports and engine options of `scan`'s flags (a scanner
/// node's too: a job carries `scan`'s flags).
pub(crate) fn settings(args: &ScanArgs) -> Result<Settings> {
    let mut targets = args.targets.clone();
    for file in &args.targets_file {
        targets.extend(read_target_file(file)?);
    }
    let mut excludes = args.exclude.clone();
    for file in &args.exclude_file {
        excludes.extend(read_target_file(file)?);
    }
    if targets.is_empty() {
        bail!(
            "no targets: give addresses, CIDRs, ranges or host names (perimeter scans only what it is told to)"
        );
    }
    let (ports, mut options) = tuning(&args.tuning)?;
    options.identify = !args.no_identify;
    if let Some(shard) = args.shard {
        // A random seed per shard would walk N different permutations,
        // whose parts overlap and leave gaps.
        if args.tuning.seed.is_none() {
            bail!(
                "--shard {shard} needs an explicit --seed: every shard of a scan must walk the same permutation, so give each the same --seed (any number)"
            );
        }
        options.shard = shard;
    }
    Ok(Settings {
        request: TargetRequest {
            targets,
            excludes,
            allow_internet_wide: args.allow_internet_wide,
        },
        ports,
        options,
        // args_os: an argument that is not UTF-8 (a path) must not panic;
        // the record shows it lossily.
        args_text: std::env::args_os()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// The port set and engine options from the shared tuning flags.
pub(crate) fn tuning(args: &ScanTuning) -> Result<(PortSet, ScanOptions)> {
    let ports = match (&args.ports, args.top_ports) {
        (Some(spec), _) => PortSet::parse(spec)?,
        (None, Some(n)) => {
            if n > usize::from(u16::MAX) {
                eprintln!(
                    "perimeter: note: --top-ports {n} is more than there are ports: scanning every port (1-65535)"
                );
            }
            PortSet::top(n)?
        }
        (None, None) => PortSet::top(DEFAULT_TOP_PORTS)?,
    };
    let profile = match args.profile {
        ProfileArg::Fast => Profile::Fast,
        ProfileArg::Normal => Profile::Normal,
        ProfileArg::Stealth => Profile::Stealth,
    };
    let mut options = ScanOptions::new(profile);
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of probes per second");
        }
        options.rate = Some(rate);
    }
    if let Some(concurrency) = args.concurrency {
        if concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        options.concurrency = Some(concurrency);
    }
    if let Some(text) = &args.timeout {
        options.timeout = Some(parse_duration("--timeout", text, Zero::Allowed)?);
    }
    if let Some(text) = &args.spread {
        options.spread = Some(parse_duration("--spread", text, Zero::Allowed)?);
    }
    options.retries = args.retries;
    // Pick the seed here, not in the engine, so the stored scan carries it from
    // its first row.
    options.seed = Some(args.seed.unwrap_or_else(rand_seed));
    Ok((ports, options))
}

/// The UDP ports of a `--udp` scan: as -p or --top-ports say (the UDP
/// ranking for --top-ports), else the curated UDP list; `None` without --udp.
pub(crate) fn udp_ports(args: &ScanTuning) -> Result<Option<PortSet>> {
    if !args.udp {
        return Ok(None);
    }
    Ok(Some(match (&args.ports, args.top_ports) {
        (Some(spec), _) => PortSet::parse(spec)?,
        (None, n) => PortSet::udp_top(n)?,
    }))
}

pub(crate) fn rand_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    OffsetDateTime::now_utc().unix_timestamp_nanos() as u64
}

/// What a scan run needs besides the engine plan.
pub(crate) struct Job {
    pub(crate) request: TargetRequest,
    pub(crate) ports: PortSet,
    pub(crate) options: ScanOptions,
    /// `Some` to record the scan in the history database.
    pub(crate) db: Option<SqliteStore>,
    /// Keep (and store) closed and filtered results too.
    pub(crate) all_states: bool,
    /// Print each kept result as a JSON line as it comes.
    pub(crate) jsonl: bool,
    pub(crate) progress: bool,
    /// Extra `key=value` options to record with the scan.
    pub(crate) record: BTreeMap<String, String>,
    /// A SYN scan from a raw socket instead of a connect scan.
    pub(crate) syn: bool,
    /// Scan TCP (`ports`): true unless the scan is UDP alone.
    pub(crate) tcp: bool,
    /// Scan these UDP ports too (`--udp`).
    pub(crate) udp_ports: Option<PortSet>,
    /// Who stops the scan: `None` for Ctrl-C (a one-shot command), or the
    /// caller's token (the monitor, which owns the signals).
    pub(crate) cancel: Option<CancellationToken>,
}

/// A finished (or interrupted) scan run.
pub(crate) struct Executed {
    pub(crate) info: ScanInfo,
    /// Ports in each state, as the engine counted them (closed and filtered
    /// ones are not in `results` unless --all-states kept them).
    pub(crate) totals: StateTotals,
    pub(crate) results: Vec<PortResult>,
    pub(crate) interrupted: bool,
    pub(crate) db: Option<SqliteStore>,
    /// Every address the scan was asked to cover (what it did not reach is
    /// why an interrupted scan is incomplete).
    pub(crate) targets: TargetSet,
}

/// Resolve, scan, stream results to JSON Lines and the store as they come,
/// and finish the stored scan (incomplete when interrupted).
pub(crate) async fn execute(job: Job) -> Result<Executed> {
    let Job {
        request,
        ports,
        options,
        mut db,
        all_states,
        jsonl,
        progress,
        mut record,
        syn,
        tcp,
        udp_ports,
        cancel,
    } = job;
    // Opened before anything is resolved or stored: a missing privilege is an
    // error at once, not an empty scan.
    let syn_sockets = if syn && tcp {
        Some(perimeter_scan::SynSockets::open()?)
    } else {
        None
    };
    let targets = resolve_targets(&request, &SystemResolver).await?;
    for problem in &targets.problems {
        eprintln!(
            "perimeter: warning: {}: {}",
            problem.subject, problem.message
        );
    }
    let started = OffsetDateTime::now_utc();
    if let Some(rate) = options.rate {
        record.insert("rate".into(), rate.to_string());
    }
    record.insert("identify".into(), options.identify.to_string());
    let tcp_technique = if syn { "syn" } else { "connect" };
    record.insert(
        "technique".into(),
        match (tcp, &udp_ports) {
            (true, Some(_)) => format!("{tcp_technique}+udp"),
            (false, Some(_)) => "udp".to_owned(),
            (_, None) => tcp_technique.to_owned(),
        },
    );
    if tcp {
        record.insert(
            "port_list".into(),
            perimeter_report::scan::port_ranges(ports.ports()),
        );
    }
    if let Some(udp) = &udp_ports {
        record.insert(
            "udp_port_list".into(),
            perimeter_report::scan::port_ranges(udp.ports()),
        );
    }
    // nmap's notation when UDP is in the scan: `T:22,80,U:53,161`.
    let ports_spec = match (tcp, &udp_ports) {
        (true, Some(udp)) => format!("T:{},U:{}", ports.spec(), udp.spec()),
        (false, Some(udp)) => udp.spec().to_owned(),
        (_, None) => ports.spec().to_owned(),
    };
    let mut info = ScanInfo {
        id: 0,
        targets: targets.given.clone(),
        resolved: targets.resolved.clone(),
        excluded: targets.excluded.clone(),
        ports: ports_spec,
        profile: options.profile.as_str().to_owned(),
        seed: options.seed.unwrap_or_default(),
        options: record,
        started,
        finished: None,
        complete: false,
        n_probes: 0,
    };
    if let Some(db) = db.as_mut() {
        info.id = db.begin_scan(&info)?;
    }

    let n_ports = if tcp { ports.len() } else { 0 } + udp_ports.as_ref().map_or(0, PortSet::len);
    let total = u64::try_from(targets.set.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(n_ports as u64);
    let bar = progress_bar(progress, total);

    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cancel = match cancel {
        Some(cancel) => {
            let watched = cancel.clone();
            let interrupted = Arc::clone(&interrupted);
            tokio::spawn(async move {
                watched.cancelled().await;
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            cancel
        }
        None => {
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            let interrupted = Arc::clone(&interrupted);
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                    on_signal.cancel();
                }
            });
            cancel
        }
    };
    let (tx, mut rx) = mpsc::channel::<ScanEvent>(4096);
    // Closed and filtered ports are counted by the engine either way; only
    // an --all-states scan needs each of them as an event.
    let mut options = options;
    options.report_unanswered = all_states;
    let covered = targets.set.clone();
    let udp_plan = udp_ports.map(|udp| ScanPlan {
        targets: targets.clone(),
        ports: udp,
        options: options.clone(),
        probes: standard_probes(),
    });
    let tcp_plan = tcp.then(|| ScanPlan {
        targets,
        ports,
        options,
        probes: standard_probes(),
    });
    let engine = tokio::spawn(run_engines(
        tcp_plan,
        syn_sockets,
        udp_plan,
        tx,
        cancel.clone(),
    ));

    let keep = |r: &PortResult| all_states || r.state == PortState::Open;
    let mut kept: Vec<PortResult> = Vec::new();
    let mut batch: Vec<PortResult> = Vec::new();
    let mut last_flush = std::time::Instant::now();
    let mut n_open = 0u64;
    while let Some(event) = rx.recv().await {
        match event {
            ScanEvent::Result(result) => {
                if result.state == PortState::Open {
                    n_open += 1;
                }
                if !keep(&result) {
                    continue;
                }
                if jsonl {
                    outln!("{}", to_jsonl_line(&result));
                }
                if db.is_some() {
                    batch.push(result.clone());
                }
                kept.push(result);
                if batch.len() >= STORE_BATCH || last_flush.elapsed() > Duration::from_secs(1) {
                    flush(db.as_mut(), info.id, &mut batch)?;
                    last_flush = std::time::Instant::now();
                }
            }
            ScanEvent::Progress {
                done, total, rate, ..
            } => {
                if let Some(bar) = &bar {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(format!("{n_open} open, {rate:.0}/s"));
                }
            }
            ScanEvent::Problem(problem) => {
                let line = format!(
                    "perimeter: warning: {}: {}",
                    problem.subject, problem.message
                );
                match &bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
    }
    flush(db.as_mut(), info.id, &mut batch)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let outcome = engine.await.context("the scan task failed")?;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            if let Some(db) = db.as_mut() {
                let _ = db.finish_scan(info.id, OffsetDateTime::now_utc(), false, 0);
            }
            return Err(err.into());
        }
    };
    let interrupted =
        interrupted.load(std::sync::atomic::Ordering::SeqCst) || cancel.is_cancelled();
    info.finished = Some(
        outcome
            .info
            .finished
            .unwrap_or_else(OffsetDateTime::now_utc),
    );
    info.complete = outcome.info.complete && !interrupted;
    info.n_probes = outcome.info.n_probes;
    info.seed = outcome.info.seed;
    if let Some(db) = db.as_mut() {
        db.finish_scan(
            info.id,
            info.finished.unwrap_or(started),
            info.complete,
            info.n_probes,
        )?;
    }
    let totals = StateTotals {
        open: outcome.counts.open,
        closed: outcome.counts.closed,
        filtered: outcome.counts.filtered,
        open_filtered: outcome.counts.open_filtered,
    };
    Ok(Executed {
        info,
        totals,
        results: kept,
        interrupted,
        db,
        targets: covered,
    })
}

/// TCP (connect or SYN) and then UDP, as asked, into one outcome.
async fn run_engines(
    tcp: Option<ScanPlan>,
    syn: Option<perimeter_scan::SynSockets>,
    udp: Option<ScanPlan>,
    events: mpsc::Sender<ScanEvent>,
    cancel: CancellationToken,
) -> Result<ScanOutcome, ScanError> {
    let mut outcome: Option<ScanOutcome> = None;
    if let Some(plan) = tcp {
        outcome = Some(match syn {
            Some(sockets) => {
                perimeter_scan::run_syn(
                    sockets,
                    Arc::new(TcpTransport),
                    plan,
                    events.clone(),
                    cancel.clone(),
                )
                .await?
            }
            None => {
                perimeter_scan::run(Arc::new(TcpTransport), plan, events.clone(), cancel.clone())
                    .await?
            }
        });
    }
    if let Some(plan) = udp {
        let udp = run_udp(plan, events, cancel).await?;
        outcome = Some(match outcome {
            None => udp,
            Some(mut both) => {
                both.info.complete &= udp.info.complete;
                both.info.n_probes += udp.info.n_probes;
                both.info.finished = udp.info.finished;
                both.counts.open += udp.counts.open;
                both.counts.closed += udp.counts.closed;
                both.counts.filtered += udp.counts.filtered;
                both.counts.open_filtered += udp.counts.open_filtered;
                both.counts.undecided += udp.counts.undecided;
                both
            }
        });
    }
    outcome.ok_or(ScanError::Empty("nothing to scan"))
}

fn flush(db: Option<&mut SqliteStore>, scan_id: i64, batch: &mut Vec<PortResult>) -> Result<()> {
    if let Some(db) = db
        && !batch.is_empty()
    {
        db.record_results(scan_id, batch)?;
    }
    batch.clear();
    Ok(())
}

fn progress_bar(show: bool, total: u64) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} probes, {msg}, eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
