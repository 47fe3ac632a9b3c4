//! `perimeter scan`: resolve the scope, run the engine, stream results to the
//! output and the history database as they come, and say what changed since
//! the previous scan of the same targets.
//!
//! Ctrl-C stops the scan cleanly: what was found is stored, marked incomplete,
//! and the exit code is 130.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use perimeter_model::{PortResult, PortState, ScanInfo, Severity};
use perimeter_report::diff::PortChange;
use perimeter_report::scan::{StateTotals, to_human, to_json, to_jsonl_line, to_nmap_xml};
use perimeter_scan::{
    PortSet, Profile, ScanEvent, ScanOptions, ScanPlan, SystemResolver, TargetRequest,
    TcpTransport, read_target_file, resolve_targets, standard_probes,
};
use perimeter_store::{SqliteStore, Store, TargetKey, diff_scan_runs};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::args::{ProfileArg, ScanArgs, ScanFormat, ScanTuning};
use crate::commands::diff::port_change;
use crate::commands::store;
use crate::exit_codes;
use crate::settings::{Zero, parse_duration};
use crate::terminal::Terminal;

/// Default port list: the 1,000 most exposure-relevant ports, like nmap's
/// default of its top 1,000.
const DEFAULT_TOP_PORTS: usize = 1000;
/// Results are written to the database in batches of this many, or at least
/// once a second.
const STORE_BATCH: usize = 512;

struct Settings {
    request: TargetRequest,
    ports: PortSet,
    options: ScanOptions,
    args_text: String,
}

fn settings(args: &ScanArgs) -> Result<Settings> {
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
    Ok(Settings {
        request: TargetRequest {
            targets,
            excludes,
            allow_internet_wide: args.allow_internet_wide,
        },
        ports,
        options,
        args_text: std::env::args().collect::<Vec<_>>().join(" "),
    })
}

/// The port set and engine options from the shared tuning flags.
pub(crate) fn tuning(args: &ScanTuning) -> Result<(PortSet, ScanOptions)> {
    let ports = match (&args.ports, args.top_ports) {
        (Some(spec), _) => PortSet::parse(spec)?,
        (None, Some(n)) => PortSet::top(n)?,
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

fn rand_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    OffsetDateTime::now_utc().unix_timestamp_nanos() as u64
}

pub(crate) fn run(args: ScanArgs, terminal: &Terminal) -> Result<u8> {
    let settings = settings(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(scan(args, settings, terminal))
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
    } = job;
    // Opened before anything is resolved or stored: a missing privilege is an
    // error at once, not an empty scan.
    let syn_transport = if syn {
        Some(Arc::new(perimeter_scan::SynTransport::open()?))
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
    record.insert(
        "technique".into(),
        if syn { "syn" } else { "connect" }.to_owned(),
    );
    record.insert(
        "port_list".into(),
        perimeter_report::scan::port_ranges(ports.ports()),
    );
    let mut info = ScanInfo {
        id: 0,
        targets: targets.given.clone(),
        resolved: targets.resolved.clone(),
        excluded: targets.excluded.clone(),
        ports: ports.spec().to_owned(),
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

    let total = u64::try_from(targets.set.len())
        .unwrap_or(u64::MAX)
        .saturating_mul(ports.len() as u64);
    let bar = progress_bar(progress, total);

    let cancel = CancellationToken::new();
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
                cancel.cancel();
            }
        });
    }
    let (tx, mut rx) = mpsc::channel::<ScanEvent>(4096);
    // Closed and filtered ports are counted by the engine either way; only
    // an --all-states scan needs each of them as an event.
    let mut options = options;
    options.report_unanswered = all_states;
    let plan = ScanPlan {
        targets,
        ports,
        options,
        probes: standard_probes(),
    };
    let engine = match syn_transport {
        Some(transport) => tokio::spawn(perimeter_scan::run(transport, plan, tx, cancel.clone())),
        None => tokio::spawn(perimeter_scan::run(
            Arc::new(TcpTransport),
            plan,
            tx,
            cancel.clone(),
        )),
    };

    let keep = |r: &PortResult| all_states || r.state == PortState::Open;
    let mut kept: Vec<PortResult> = Vec::new();
    let mut batch: Vec<PortResult> = Vec::new();
    let mut last_flush = std::time::Instant::now();
    let mut n_open = 0u64;
    let stdout = std::io::stdout();
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
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{}", to_jsonl_line(&result));
                    let _ = out.flush();
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
    let interrupted = interrupted.load(std::sync::atomic::Ordering::SeqCst);
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
    };
    Ok(Executed {
        info,
        totals,
        results: kept,
        interrupted,
        db,
    })
}

async fn scan(args: ScanArgs, settings: Settings, terminal: &Terminal) -> Result<u8> {
    let mut record = BTreeMap::new();
    if let Some(spread) = args.tuning.spread.as_ref() {
        record.insert("spread".into(), spread.clone());
    }
    let db = if args.no_store {
        None
    } else {
        Some(store::open(&args.db)?)
    };
    let Executed {
        info,
        totals,
        results: kept,
        interrupted,
        db,
    } = execute(Job {
        request: settings.request,
        ports: settings.ports,
        options: settings.options,
        db,
        all_states: args.all_states,
        jsonl: args.format == ScanFormat::Jsonl,
        progress: terminal.stderr_tty && !args.quiet && args.format != ScanFormat::Jsonl,
        record,
        syn: args.tuning.syn,
    })
    .await?;

    match args.format {
        ScanFormat::Human => print!(
            "{}",
            to_human(&info, &kept, totals, terminal.stdout_style())
        ),
        ScanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&info, &kept, totals))?
        ),
        ScanFormat::Xml => print!("{}", to_nmap_xml(&info, &kept, &settings.args_text)),
        ScanFormat::Jsonl => {}
    }
    if let Some(path) = &args.xml_out {
        perimeter_checks::approvals::save_atomic(
            path,
            &to_nmap_xml(&info, &kept, &settings.args_text),
        )?;
    }
    if args.format == ScanFormat::Human {
        if let Some(db) = db.as_ref() {
            print_changes(db, &info, &kept, terminal)?;
        }
        if !info.complete {
            eprintln!(
                "perimeter: scan {} interrupted: {} results stored, marked incomplete",
                info.id,
                kept.len()
            );
        }
    }
    if interrupted {
        return Ok(exit_codes::INTERRUPTED);
    }
    let threshold: Option<Severity> = args.fail_on.map(Into::into);
    let failed = threshold.is_some_and(|t| {
        kept.iter()
            .flat_map(|r| &r.findings)
            .any(|f| f.severity >= t)
    });
    Ok(if failed {
        exit_codes::FINDINGS
    } else {
        exit_codes::CLEAN
    })
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

/// After a stored, complete scan: what changed since the previous complete scan
/// of the same target set.
fn print_changes(
    db: &SqliteStore,
    info: &ScanInfo,
    results: &[PortResult],
    terminal: &Terminal,
) -> Result<()> {
    if !info.complete {
        return Ok(());
    }
    let previous = db
        .previous_scans_of(&TargetKey::of(info), 3)?
        .into_iter()
        .find(|s| s.info.id != info.id);
    let Some(previous) = previous else {
        println!(
            "\nfirst complete scan of these targets and ports (#{}); the next one will be compared with it",
            info.id
        );
        return Ok(());
    };
    let (before_info, before) = db.load_scan(previous.info.id)?;
    let changes: Vec<PortChange> = diff_scan_runs(&before_info, &before, info, results)
        .into_iter()
        .map(port_change)
        .collect();
    let before_view = perimeter_report::diff::Compared {
        id: before_info.id,
        started: perimeter_report::rfc3339(before_info.started),
        targets: before_info.targets.clone(),
        complete: before_info.complete,
    };
    let after_view = perimeter_report::diff::Compared {
        id: info.id,
        started: perimeter_report::rfc3339(info.started),
        targets: info.targets.clone(),
        complete: info.complete,
    };
    println!();
    print!(
        "{}",
        perimeter_report::diff::to_human(
            &before_view,
            &after_view,
            &changes,
            terminal.stdout_style()
        )
    );
    Ok(())
}
