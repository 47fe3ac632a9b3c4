//! `perimeter scan`: resolve the scope, run the engine, stream results to the
//! output and the history database as they come, and say what changed since
//! the previous scan of the same targets.
//!
//! Ctrl-C stops the scan cleanly: what was found is stored, marked incomplete,
//! and the exit code is 130.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use perimeter_model::{PortResult, ScanInfo, Severity};
use perimeter_report::diff::Compared;
use perimeter_report::scan::{to_human, to_json, to_nmap_xml};
use perimeter_store::{SHARD_OPTION, SqliteStore, Store};

use crate::args::{ScanArgs, ScanFormat};
use crate::exit_codes::ExitCode;
use crate::pipeline::scan::{Executed, Job, Settings, execute, settings, udp_ports};
use crate::pipeline::{scan_diff, store};
use crate::terminal::Terminal;

pub(crate) fn run(args: ScanArgs, terminal: &Terminal) -> Result<ExitCode> {
    let settings = settings(&args)?;
    // An output that can never be written (a device, a directory) is refused
    // before a packet is sent, not after a scan of hours.
    if let Some(path) = &args.xml_out {
        perimeter_files::resolve_write_target(path).context("cannot write the nmap XML")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(scan(args, settings, terminal))
}

async fn scan(args: ScanArgs, settings: Settings, terminal: &Terminal) -> Result<ExitCode> {
    let mut record = BTreeMap::new();
    if let Some(spread) = args.tuning.spread.as_ref() {
        record.insert("spread".into(), spread.clone());
    }
    if let Some(shard) = args.shard {
        // Stored with the scan: it gives the shard a target key of its own,
        // and `scans merge` finds the parts of a scan by it.
        record.insert(SHARD_OPTION.into(), shard.to_string());
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
        ..
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
        tcp: !args.tuning.udp || args.tuning.tcp,
        udp_ports: udp_ports(&args.tuning)?,
        cancel: None,
    })
    .await?;

    match args.format {
        ScanFormat::Human => out!(
            "{}",
            to_human(&info, &kept, totals, terminal.stdout_style())
        ),
        ScanFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(&info, &kept, totals))?
        ),
        ScanFormat::Xml => out!("{}", to_nmap_xml(&info, &kept, &settings.args_text)),
        ScanFormat::Jsonl => {}
    }
    if let Some(path) = &args.xml_out {
        perimeter_files::write_atomic(
            path,
            to_nmap_xml(&info, &kept, &settings.args_text).as_bytes(),
            0o644,
        )
        .context("cannot write the nmap XML")?;
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
        return Ok(ExitCode::Interrupted);
    }
    let threshold: Option<Severity> = args.fail_on.map(Into::into);
    let failed = threshold.is_some_and(|t| {
        kept.iter()
            .flat_map(|r| &r.findings)
            .any(|f| f.severity >= t)
    });
    Ok(ExitCode::findings_if(failed))
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
    let Some(previous) = scan_diff::previous_complete_scan(db, info)? else {
        match info.options.get(SHARD_OPTION) {
            Some(shard) => outln!(
                "\nshard {shard} of seed {} stored as scan #{}: `perimeter scans merge` combines the shards into one scan",
                info.seed,
                info.id
            ),
            None => outln!(
                "\nfirst complete scan of these targets and ports (#{}); the next one will be compared with it",
                info.id
            ),
        }
        return Ok(());
    };
    let (before_info, before) = db.load_scan(previous.info.id)?;
    let changes = scan_diff::port_changes(&before_info, &before, info, results);
    let before_view = Compared::of(&before_info);
    let after_view = Compared::of(info);
    outln!();
    out!(
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
