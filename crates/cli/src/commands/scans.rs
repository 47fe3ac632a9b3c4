//! `perimeter scans`: the stored scans, newest first; `scans merge`: the
//! shard runs of one scan (`scan --shard K/N`), from this database and
//! others (or a server's scan job), combined into one stored scan; `scans
//! submit` and `scans jobs`: scan jobs on a `perimeter server`, whose parts
//! scanner nodes lease.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use perimeter_api::NewScanJobDoc;
use perimeter_report::history::{StoredScan, scans_to_human, scans_to_json};
use perimeter_store::{
    MergePlan, RunLimits, SHARD_OPTION, Selection, ShardRun, SqliteStore, Store, decode_run,
    merge_results, merged_info, plan_merge,
};
use time::OffsetDateTime;

use crate::args::{Format, JobsArgs, MergeArgs, ScansAction, ScansArgs, SubmitArgs};
use crate::exit_codes::ExitCode;
use crate::pipeline::fleet::{As, Session};
use crate::pipeline::scan::settings as scan_settings;
use crate::pipeline::scanner::{Part, part_args};
use crate::pipeline::store;
use crate::settings::{self, Zero, parse_duration};
use crate::terminal::Terminal;

/// Results are written to the merged scan in batches of this many.
const MERGE_BATCH: usize = 4096;

pub(crate) fn run(args: ScansArgs, _terminal: &Terminal) -> Result<ExitCode> {
    match args.action {
        Some(ScansAction::Merge(merge_args)) => return merge(merge_args),
        Some(ScansAction::Submit(submit_args)) => return submit(submit_args),
        Some(ScansAction::Jobs(jobs_args)) => return jobs(jobs_args),
        None => {}
    }
    if args.limit == 0 {
        anyhow::bail!("--limit 0 would list nothing: give a count of at least 1");
    }
    let db = store::open_read_only(&args.db)?;
    let scans = db.list_scans(args.limit)?;
    let rows: Vec<StoredScan> = scans
        .iter()
        .map(|s| StoredScan {
            info: &s.info,
            status: s.status.as_str(),
            n_results: s.n_results,
            n_open: s.n_open,
        })
        .collect();
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&scans_to_json(&rows))?),
        Format::Human => out!(
            "{}",
            scans_to_human(&rows, &settings::db_path(args.db.db.as_deref())?)
        ),
    }
    Ok(ExitCode::Clean)
}

/// Where a shard run is stored: the database (index into the sources) and
/// its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunAt {
    source: usize,
    id: i64,
}

/// A database shard runs are read from.
struct Source {
    /// As the user gave it (for messages and `--scan FILE:ID`).
    path: PathBuf,
    /// `None` for --db, whose store is the one written.
    store: Option<SqliteStore>,
}

fn merge(mut args: MergeArgs) -> Result<ExitCode> {
    if let Some(job) = args.job {
        if args.server.server.is_none() {
            bail!("--job needs --server: the scan job's server");
        }
        args.seed = Some(fetch_job(&args, job)?);
    }
    let db_path = settings::db_path(args.db.db.as_deref())?;
    let mut db = store::open(&args.db)?;
    let mut sources = vec![Source {
        path: db_path.clone(),
        store: None,
    }];
    let db_identity = identity(&db_path);
    for path in &args.from {
        // The database written is read already: named again, it would offer
        // each of its runs twice.
        if db_identity.is_some() && identity(path) == db_identity {
            continue;
        }
        let store = SqliteStore::open_read_only(path)
            .with_context(|| format!("cannot read the shard runs of {}", path.display()))?;
        sources.push(Source {
            path: path.clone(),
            store: Some(store),
        });
    }

    let mut candidates: Vec<ShardRun<RunAt>> = Vec::new();
    for (source_idx, source) in sources.iter().enumerate() {
        let store = source.store.as_ref().unwrap_or(&db);
        candidates.extend(ShardRun::from_summaries(
            store.list_scans(usize::MAX)?,
            |summary| RunAt {
                source: source_idx,
                id: summary.info.id,
            },
        ));
    }
    let name = |at: &RunAt| describe(&sources, *at);
    let selection = if args.scans.is_empty() {
        Selection::Newest { seed: args.seed }
    } else {
        let mut named = Vec::new();
        for text in &args.scans {
            let at = parse_run(text, &sources)?;
            let idx = candidates
                .iter()
                .position(|run| run.source == at)
                .with_context(|| {
                    format!(
                        "--scan {text}: no shard run {} in {} (scans stored by `perimeter scan --shard K/N`)",
                        at.id,
                        sources.get(at.source).map_or(Path::new("?"), |s| &s.path).display()
                    )
                })?;
            named.push(idx);
        }
        Selection::Explicit(named)
    };
    let plan = plan_merge(&candidates, &selection, |run| name(&run.source))?;

    let mut parts = Vec::with_capacity(plan.parts.len());
    for run in plan.parts.values() {
        let store = sources
            .get(run.source.source)
            .and_then(|source| source.store.as_ref())
            .unwrap_or(&db);
        let (_, results) = store
            .load_scan(run.source.id)
            .with_context(|| format!("cannot load shard {} ({})", run.part, name(&run.source)))?;
        parts.push(results);
    }
    let (results, n_repeated) = merge_results(parts);
    let Some(info) = merged_info(&plan, |run| name(&run.source), OffsetDateTime::now_utc()) else {
        bail!("no shard runs to merge");
    };

    let merged_id = db.begin_scan(&info)?;
    for batch in results.chunks(MERGE_BATCH) {
        db.record_results(merged_id, batch)?;
    }
    db.finish_scan(
        merged_id,
        info.finished.unwrap_or(info.started),
        info.complete,
        info.n_probes,
    )?;

    let n_open = results
        .iter()
        .filter(|result| result.state == perimeter_model::PortState::Open)
        .count();
    outln!(
        "merged {} of {} shards of seed {} ({}, ports {}) into scan #{} in {}: {} results, {} open, {}",
        plan.parts.len(),
        plan.group.count,
        plan.group.seed,
        info.targets.join(" "),
        info.ports,
        merged_id,
        db_path.display(),
        results.len(),
        n_open,
        if info.complete {
            "complete"
        } else {
            "INCOMPLETE"
        }
    );
    for run in plan.parts.values() {
        outln!(
            "  shard {}: {}, {}, {} results",
            run.part,
            name(&run.source),
            run.summary.status.as_str(),
            run.summary.n_results
        );
    }
    if n_repeated > 0 {
        eprintln!(
            "perimeter: warning: {n_repeated} results were in more than one shard and were kept once (the shards did not walk the same permutation)"
        );
    }
    if info.complete {
        return Ok(ExitCode::Clean);
    }
    eprintln!(
        "perimeter: error: merged scan #{merged_id} is stored incomplete: {}",
        what_is_missing(&plan, name)
    );
    Ok(ExitCode::Error)
}

/// The parts missing and the parts incomplete, for the message.
fn what_is_missing(plan: &MergePlan<RunAt>, describe: impl Fn(&RunAt) -> String) -> String {
    let mut said = Vec::new();
    if !plan.missing.is_empty() {
        let parts: Vec<String> = plan
            .missing
            .iter()
            .map(|index| format!("{index}/{}", plan.group.count))
            .collect();
        said.push(format!(
            "{} {} missing (no run found of seed {})",
            if parts.len() == 1 { "shard" } else { "shards" },
            parts.join(", "),
            plan.group.seed
        ));
    }
    for run in plan.incomplete() {
        said.push(format!(
            "shard {} is {} ({})",
            run.part,
            run.summary.status.as_str(),
            describe(&run.source)
        ));
    }
    said.join("; ")
}

fn describe(sources: &[Source], at: RunAt) -> String {
    let path = sources
        .get(at.source)
        .map_or_else(|| "?".into(), |source| source.path.display().to_string());
    format!("{path} scan {}", at.id)
}

/// `ID` (in --db) or `FILE:ID` (in the --from database given as FILE).
fn parse_run(text: &str, sources: &[Source]) -> Result<RunAt> {
    let (file, id) = match text.rsplit_once(':') {
        Some((file, id)) => (Some(file), id),
        None => (None, text),
    };
    let id: i64 = id
        .trim()
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .with_context(|| format!("--scan {text}: expected a scan id, or FILE:ID"))?;
    let source = match file {
        None => 0,
        Some(file) => {
            let wanted = identity(Path::new(file));
            sources
                .iter()
                .position(|source| {
                    source.path == Path::new(file)
                        || (wanted.is_some() && identity(&source.path) == wanted)
                })
                .with_context(|| {
                    format!("--scan {text}: {file} is not --db or one of the --from databases")
                })?
        }
    };
    Ok(RunAt { source, id })
}

/// A file's device and inode, to tell two spellings of one database apart
/// from two databases.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

/// `scans submit`: the scan's options checked here first (a typo is found
/// now, not by every node), then sent as a job.
fn submit(args: SubmitArgs) -> Result<ExitCode> {
    if args.shards == 0 || args.shards > perimeter_server::MAX_SHARDS {
        bail!(
            "--shards must be between 1 and {}",
            perimeter_server::MAX_SHARDS
        );
    }
    let check = Part {
        lease: String::new(),
        job_id: 0,
        index: 0,
        shards: args.shards,
        seed: args.seed.unwrap_or_default(),
        scan_args: args.scan_args.clone(),
        lease_seconds: 0,
        attempt: 0,
    };
    let scan_args = part_args(&check, &[]).context("the scan options after --")?;
    scan_settings(&scan_args).context("the scan options after --")?;
    let lease_seconds = match &args.lease {
        Some(text) => {
            let lease = parse_duration("--lease", text, Zero::Refused)?;
            Some(
                u32::try_from(lease.as_secs())
                    .ok()
                    .filter(|secs| *secs >= 2)
                    .context("--lease must be between 2 s and a day")?,
            )
        }
        None => None,
    };
    let session = Session::open(&args.server, As::Person)?;
    let job = session.submit_scan_job(&NewScanJobDoc {
        schema: perimeter_api::SCHEMA.to_owned(),
        scan_args: args.scan_args.clone(),
        shards: args.shards,
        seed: args.seed,
        vantage: args.vantage.clone(),
        lease_seconds,
    })?;
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&job)?),
        Format::Human => {
            outln!(
                "scan job #{}: {} part{} of seed {}{}, run by {}",
                job.id,
                job.shards,
                if job.shards == 1 { "" } else { "s" },
                job.seed,
                job.vantage
                    .as_deref()
                    .map(|v| format!(" from vantage point {v}"))
                    .unwrap_or_default(),
                job.runs_on
            );
            if job.shards != args.shards {
                outln!("  (asked for {} parts)", args.shards);
            }
            outln!(
                "follow it with `perimeter scans jobs {}`; merge it once done with `perimeter scans merge --job {}` (both with --server)",
                job.id,
                job.id
            );
        }
    }
    Ok(ExitCode::Clean)
}

/// `scans jobs [ID]`.
fn jobs(args: JobsArgs) -> Result<ExitCode> {
    let session = Session::open(&args.server, As::Person)?;
    let jobs = match args.id {
        Some(id) => vec![session.scan_job(id)?],
        None => session.scan_jobs(args.limit)?,
    };
    if args.format == Format::Json {
        let value = match (args.id, jobs.first()) {
            (Some(_), Some(job)) => serde_json::to_value(job)?,
            _ => serde_json::to_value(&jobs)?,
        };
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::Clean);
    }
    if jobs.is_empty() {
        outln!("no scan jobs");
    }
    for job in &jobs {
        outln!(
            "#{:<5} {}  {}/{} done{}  {}  by {}  seed {}{}",
            job.id,
            settings::rfc3339(job.created_at),
            job.done,
            job.shards,
            if job.leased > 0 {
                format!(", {} leased", job.leased)
            } else {
                String::new()
            },
            if job.complete { "complete" } else { "running" },
            job.created_by,
            job.seed,
            job.vantage
                .as_deref()
                .map(|v| format!("  vantage {v}"))
                .unwrap_or_default()
        );
        outln!("       {}", job.scan_args.join(" "));
        for part in &job.parts {
            outln!(
                "       part {}/{}: {}{}{}",
                part.index,
                job.shards,
                part.state,
                part.node
                    .as_deref()
                    .map(|node| format!(" by {node}"))
                    .unwrap_or_default(),
                if part.attempts > 1 {
                    format!(" (leased {} times)", part.attempts)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ExitCode::Clean)
}

/// Fetches the runs of a job's done parts into --db as shard runs (a run
/// fetched before is not stored twice), and returns the job's seed.
fn fetch_job(args: &MergeArgs, job_id: i64) -> Result<u64> {
    let session = Session::open(&args.server, As::Person)?;
    let job = session.scan_job(job_id)?;
    let mut db = store::open(&args.db)?;
    let stored = db.list_scans(usize::MAX)?;
    let mut fetched = 0;
    // Part by part: a job's runs together may be larger than one answer.
    for done in job.parts.iter().filter(|part| part.state == "done") {
        let list = session.scan_job_run(job_id, done.index)?;
        let Some(entry) = list.runs.first() else {
            continue;
        };
        let (mut info, results) = decode_run(&entry.run.to_string(), RunLimits::default())
            .map_err(|why| anyhow::anyhow!("scan job {job_id} part {}: {why}", entry.index))?;
        let part = format!("{}/{}", entry.index, job.shards);
        if entry.index != done.index
            || info.seed != job.seed
            || info.options.get(SHARD_OPTION) != Some(&part)
        {
            bail!(
                "scan job {job_id}: the server's run of part {part} is not of the job's seed and part"
            );
        }
        let known = stored.iter().any(|summary| {
            summary.info.seed == info.seed
                && summary.info.started == info.started
                && summary.info.options.get(SHARD_OPTION) == Some(&part)
        });
        if known {
            continue;
        }
        info.options.insert(
            "scan_job".to_owned(),
            format!("{}#{job_id}", session.base()),
        );
        if let Some(node) = &entry.node {
            info.options.insert("node".to_owned(), node.clone());
        }
        let id = db.begin_scan(&info)?;
        for batch in results.chunks(MERGE_BATCH) {
            db.record_results(id, batch)?;
        }
        db.finish_scan(
            id,
            info.finished.unwrap_or(info.started),
            info.complete,
            info.n_probes,
        )?;
        fetched += 1;
    }
    eprintln!(
        "perimeter: scan job {job_id}: {} of {} parts done; {fetched} run{} fetched into {}",
        job.done,
        job.shards,
        if fetched == 1 { "" } else { "s" },
        settings::db_path(args.db.db.as_deref())?.display()
    );
    Ok(job.seed)
}
