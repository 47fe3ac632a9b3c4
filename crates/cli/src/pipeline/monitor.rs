//! How the monitor's jobs run: the same scan, audit and verify the one-shot
//! commands run, each recording into the monitor's history database. The
//! monitor (crates/monitor) decides when, judges what changed and tells;
//! this is the `JobRunner` it is given.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use perimeter_model::Environment;
use perimeter_model::Finding;
use perimeter_monitor::config::VerifyJob;
use perimeter_monitor::runner::{
    AuditRun, FleetExec, FleetHost, FleetListener, FleetRun, JobRunner, ScanRequest, ScanRun,
    VerifyRun,
};
use perimeter_scan::{ScanOptions, TargetRequest};
use perimeter_store::{SqliteStore, Store as _};
use tokio_util::sync::CancellationToken;

use crate::args::{HostArgs, InventoryFileArgs};
use crate::pipeline::fleet::open_fleet_store;
use crate::pipeline::host::{MissingApprovals, audit_host};
use crate::pipeline::scan::{Executed, Job, execute, rand_seed};
use crate::pipeline::{environments, verify};

/// Runs the monitor's jobs against `db`, with `inventory` (the monitor's own
/// perimeter.toml) as the inventory of environments.
pub(crate) struct CliRunner {
    pub(crate) db: PathBuf,
    pub(crate) inventory: PathBuf,
    /// The server's database, for the fleet job of a monitor inside
    /// `perimeter server`.
    pub(crate) fleet_database: Option<String>,
}

impl CliRunner {
    fn inventory_args(&self) -> InventoryFileArgs {
        InventoryFileArgs {
            path: Some(self.inventory.clone()),
            env: None,
        }
    }
}

impl JobRunner for CliRunner {
    async fn scan(&self, request: ScanRequest, cancel: CancellationToken) -> Result<ScanRun> {
        let mut options = ScanOptions::new(request.profile);
        options.rate = request.rate;
        options.spread = request.spread;
        options.seed = Some(rand_seed());
        let mut record = BTreeMap::new();
        record.insert("monitor_job".to_owned(), request.job.clone());
        let db = SqliteStore::open(&self.db)?;
        let executed = execute(Job {
            request: TargetRequest {
                targets: request.targets,
                excludes: request.excludes,
                allow_internet_wide: false,
            },
            ports: request.ports.clone(),
            options,
            db: Some(db),
            all_states: false,
            jsonl: false,
            progress: false,
            record,
            syn: request.syn,
            tcp: true,
            udp_ports: None,
            cancel: Some(cancel),
        })
        .await?;
        Ok(scan_run(executed, request.ports))
    }

    async fn audit(&self, approvals: Option<PathBuf>) -> Result<AuditRun> {
        let args = HostArgs {
            all_netns: false,
            approvals,
            proc_net: false,
            no_service_probes: false,
            inventory: self.inventory_args(),
            privsep: Vec::new(),
        };
        let db = self.db.clone();
        // The audit reads /proc and asks local services: blocking work, off
        // the loop that delivers alerts.
        tokio::task::spawn_blocking(move || -> Result<AuditRun> {
            let audit = audit_host(&args, MissingApprovals::Error)?;
            let mut store = SqliteStore::open(&db)?;
            let recorded = store.record_audit_since(
                &audit.snapshot.hostname,
                audit.taken_at,
                &audit.snapshot,
                &audit.findings,
            )?;
            let unapproved = audit
                .snapshot
                .listeners
                .iter()
                .zip(&audit.statuses)
                .filter(|(_, status)| status.needs_decision())
                .map(|(listener, _)| listener.clone())
                .collect();
            Ok(AuditRun {
                audit_id: Some(recorded.id),
                snapshot: audit.snapshot,
                findings: audit.findings,
                unapproved,
            })
        })
        .await
        .context("the audit task failed")?
    }

    async fn verify(&self, job: &VerifyJob, cancel: CancellationToken) -> Result<VerifyRun> {
        let inventory = environments::load(&self.inventory_args())?;
        if let Err(refusal) = inventory.check_scannable() {
            bail!("{refusal}");
        }
        let selected: Vec<&Environment> = inventory
            .environments
            .iter()
            .filter(|e| job.only.is_empty() || job.only.contains(&e.name))
            .collect();
        let mut targets: Vec<String> = Vec::new();
        for env in &selected {
            targets.extend(env.ranges.iter().map(ToString::to_string));
            targets.extend(env.hosts.iter().cloned());
        }
        targets.extend(job.also.iter().cloned());
        if targets.is_empty() {
            bail!("the verify job's environments have no ranges or hosts to scan");
        }
        let vantage = verify::own_addresses();
        let mut options = ScanOptions::new(job.profile);
        options.seed = Some(rand_seed());
        let mut record = BTreeMap::new();
        record.insert("verify".to_owned(), "true".to_owned());
        record.insert("monitor_job".to_owned(), "verify".to_owned());
        record.insert(
            "vantage".to_owned(),
            vantage
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        let db = SqliteStore::open(&self.db)?;
        let mut executed = execute(Job {
            request: TargetRequest {
                targets,
                excludes: Vec::new(),
                allow_internet_wide: false,
            },
            ports: job.ports.clone(),
            options,
            db: Some(db),
            all_states: false,
            jsonl: false,
            progress: false,
            record,
            syn: job.syn,
            tcp: true,
            udp_ports: None,
            cancel: Some(cancel),
        })
        .await?;
        verify::add_findings(
            &inventory,
            &selected,
            &executed.info,
            &mut executed.results,
            &vantage,
        );
        let findings = executed
            .results
            .iter()
            .flat_map(|result| &result.findings)
            .filter(|finding| finding.rule.starts_with("env."))
            .cloned()
            .collect();
        let mut scan = scan_run(executed, job.ports.clone());
        scan.sources = vantage;
        Ok(VerifyRun { scan, findings })
    }

    async fn fleet(&self, events: std::ops::Range<time::OffsetDateTime>) -> Result<FleetRun> {
        let Some(database) = self.fleet_database.clone() else {
            bail!(
                "a fleet job runs only inside `perimeter server --monitor`, which holds the agents' reports"
            );
        };
        tokio::task::spawn_blocking(move || {
            let store = open_fleet_store(Some(&database))?;
            let hosts =
                perimeter_server::judge_fleet(store.as_ref()).map_err(anyhow::Error::msg)?;
            let mut execs = perimeter_server::suspicious_execs(store.as_ref(), events)
                .map_err(anyhow::Error::msg)?;
            Ok(FleetRun {
                hosts: hosts
                    .into_iter()
                    .map(|host| {
                        let execs = execs
                            .remove(&host.agent.id)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|event| FleetExec {
                                at: event.at,
                                summary: event.summary,
                                flags: event.flags,
                            })
                            .collect();
                        fleet_host(host, execs)
                    })
                    .collect(),
            })
        })
        .await
        .context("the fleet job's thread")?
    }
}

/// The monitor's view of a judged host.
fn fleet_host(host: perimeter_server::JudgedHost, execs: Vec<FleetExec>) -> FleetHost {
    FleetHost {
        agent_id: host.agent.id,
        hostname: host.agent.hostname,
        environment: host.agent.environment,
        last_seen: host.agent.last_seen,
        unapproved: host
            .listeners
            .iter()
            .filter(|l| l.approval == "unapproved" || l.approval == "expired")
            .map(|l| FleetListener {
                netns: l.listener.netns.clone(),
                endpoint: l.listener.endpoint(),
                owner: l.listener.owners.first().map_or_else(
                    || "no process holds it".to_owned(),
                    |o| {
                        format!(
                            "{} (pid {}, {})",
                            o.exe.as_deref().unwrap_or(&o.name),
                            o.pid,
                            o.user
                        )
                    },
                ),
                approval: l.approval.clone(),
            })
            .collect(),
        findings: host
            .findings
            .into_iter()
            .filter_map(|f| {
                let severity = f.severity.parse().ok()?;
                let mut finding = Finding::new(f.rule, severity, f.subject, f.message);
                finding.evidence = f.evidence;
                finding.remedy = f.remedy;
                Some(finding)
            })
            .collect(),
        execs,
    }
}

fn scan_run(executed: Executed, ports: perimeter_scan::PortSet) -> ScanRun {
    ScanRun {
        info: executed.info,
        results: executed.results,
        targets: executed.targets,
        ports,
        sources: verify::own_addresses(),
    }
}
