//! The overview's memory of every host's judgement, so a page view re-reads
//! and re-judges only the hosts whose state or covering approvals changed
//! since the view before (issue 10: at 10,000 hosts, reading and judging
//! every latest state took seconds a view).
//!
//! Only what the overview shows is kept per host: its counts (exposed,
//! unapproved, findings by severity) and its worst few problem lines, already
//! escaped, never its listeners; so the memory grows with the hosts, not with
//! their listeners.
//!
//! A host's entry stands while nothing it was judged from has changed:
//! - its report chain (the agent row's `last_seq` and `last_digest`, which
//!   every stored report moves in the same transaction as the state it
//!   brings; a report without a new state is noticed by the state's own
//!   sequence number, read again but not parsed again),
//! - its environment (which approvals cover it),
//! - the live approvals that cover it: the fleet's, its environment's, its
//!   own, compared by id (an approval is never edited, only revoked, which
//!   takes it out of the live ones),
//! - the day (approvals expire by date).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use perimeter_api::HostSummary;
use perimeter_store::fleet::{AgentRow, ApprovalScope, FleetApproval, FleetStore};
use time::{Date, OffsetDateTime};

use super::pages;
use crate::error::ApiError;
use crate::routes;

/// The most problem lines kept (and shown) per host; the rest are counted.
pub(crate) const MAX_HOST_PROBLEMS: usize = 8;

/// One of a host's problems, for the top of the overview.
pub(crate) struct HostProblem {
    /// Lower is worse.
    pub(crate) rank: u8,
    /// Escaped HTML.
    pub(crate) html: String,
}

/// What the overview shows of a host's latest state, as judged.
pub(crate) struct HostJudgement {
    pub(crate) exposed: u64,
    pub(crate) unapproved: u64,
    pub(crate) findings: BTreeMap<String, u64>,
    /// Its worst problems, worst first (in the order found within a rank),
    /// at most [`MAX_HOST_PROBLEMS`].
    pub(crate) problems: Vec<HostProblem>,
    /// All its problems, shown or not.
    pub(crate) n_problems: usize,
}

impl HostJudgement {
    fn of(judged: &routes::Judged) -> HostJudgement {
        let mut problems = pages::state_problems(judged);
        problems.sort_by_key(|problem| problem.rank);
        let n_problems = problems.len();
        problems.truncate(MAX_HOST_PROBLEMS);
        HostJudgement {
            exposed: judged.summary.exposed,
            unapproved: judged.summary.unapproved,
            findings: judged.summary.findings.clone(),
            problems,
            n_problems,
        }
    }
}

/// A host as the overview lists it: its agent's row as read now, its
/// judgement as cached.
pub(crate) struct OverviewHost {
    pub(crate) summary: HostSummary,
    pub(crate) judgement: Arc<HostJudgement>,
}

/// Every host, in the store's order.
pub(crate) struct Overview {
    pub(crate) hosts: Vec<OverviewHost>,
}

/// A host's entry and what it was judged from.
struct Entry {
    last_seq: u64,
    last_digest: String,
    environment: Option<String>,
    /// The judged state's sequence number and time (`None`: no state yet).
    state: Option<(u64, OffsetDateTime)>,
    judgement: Arc<HostJudgement>,
}

/// The live approvals' ids by scope.
#[derive(Debug, Default, PartialEq, Eq)]
struct ApprovalIds {
    fleet: Vec<i64>,
    environments: BTreeMap<String, Vec<i64>>,
    hosts: BTreeMap<String, Vec<i64>>,
}

impl ApprovalIds {
    fn of(live: &[FleetApproval]) -> ApprovalIds {
        let mut ids = ApprovalIds::default();
        for row in live.iter().filter(|row| row.revoked.is_none()) {
            match &row.scope {
                ApprovalScope::Fleet => ids.fleet.push(row.id),
                ApprovalScope::Environment(name) => {
                    ids.environments
                        .entry(name.clone())
                        .or_default()
                        .push(row.id);
                }
                ApprovalScope::Host(id) => ids.hosts.entry(id.clone()).or_default().push(row.id),
            }
        }
        ids
    }

    /// The keys whose ids differ between `before` and `now`.
    fn changed<'a>(
        before: &'a BTreeMap<String, Vec<i64>>,
        now: &'a BTreeMap<String, Vec<i64>>,
    ) -> HashSet<&'a str> {
        before
            .keys()
            .chain(now.keys())
            .filter(|key| before.get(*key) != now.get(*key))
            .map(String::as_str)
            .collect()
    }
}

#[derive(Default)]
struct Inner {
    day: Option<Date>,
    approvals: ApprovalIds,
    entries: HashMap<String, Entry>,
}

impl Inner {
    /// Drops the entries that the approvals now in force or the day no
    /// longer vouch for, and those of agents no longer listed.
    fn invalidate(&mut self, approvals: ApprovalIds, day: Date, listed: &HashSet<&str>) {
        if self.day != Some(day) || self.approvals.fleet != approvals.fleet {
            self.entries.clear();
        } else {
            let environments =
                ApprovalIds::changed(&self.approvals.environments, &approvals.environments);
            let hosts = ApprovalIds::changed(&self.approvals.hosts, &approvals.hosts);
            self.entries.retain(|id, entry| {
                !hosts.contains(id.as_str())
                    && entry
                        .environment
                        .as_deref()
                        .is_none_or(|name| !environments.contains(name))
            });
        }
        self.entries.retain(|id, _| listed.contains(id.as_str()));
        self.day = Some(day);
        self.approvals = approvals;
    }
}

/// The cache, shared by the dashboard's handlers.
#[derive(Default)]
pub(crate) struct OverviewCache {
    inner: Mutex<Inner>,
}

impl OverviewCache {
    /// The cache, locked, with what no longer stands dropped, and the live
    /// approvals and the agents it was checked against.
    #[expect(clippy::type_complexity, reason = "a private helper's plain tuple")]
    fn current(
        &self,
        store: &dyn FleetStore,
    ) -> Result<(MutexGuard<'_, Inner>, Vec<FleetApproval>, Vec<AgentRow>), ApiError> {
        let live = store.approvals(false)?;
        let agents = store.agents()?;
        let day = OffsetDateTime::now_utc().date();
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => {
                // A panic while it was held may have left it half updated:
                // start afresh rather than trust it.
                let mut inner = poisoned.into_inner();
                *inner = Inner::default();
                inner
            }
        };
        {
            let listed: HashSet<&str> = agents.iter().map(|agent| agent.id.as_str()).collect();
            inner.invalidate(ApprovalIds::of(&live), day, &listed);
        }
        Ok((inner, live, agents))
    }

    /// Every host with its judgement: re-read from the store and re-judged
    /// only where something it was judged from changed. The cache stays
    /// locked meanwhile, so two views at once judge a host once.
    pub(crate) fn overview(&self, store: &dyn FleetStore) -> Result<Overview, ApiError> {
        let (mut inner, live, agents) = self.current(store)?;
        let mut hosts = Vec::with_capacity(agents.len());
        for agent in agents {
            let judgement = judgement(&mut inner.entries, store, &agent, &live)?;
            hosts.push(OverviewHost {
                summary: HostSummary {
                    agent_id: agent.id,
                    hostname: agent.hostname,
                    status: agent.status.as_str().to_owned(),
                    environment: agent.environment,
                    enrolled_at: agent.enrolled_at,
                    last_seen: agent.last_seen,
                    exposed: judgement.exposed,
                    unapproved: judgement.unapproved,
                    findings: judgement.findings.clone(),
                },
                judgement,
            });
        }
        Ok(Overview { hosts })
    }

    /// Judges at most `limit` hosts the cache does not hold fresh, and says
    /// how many it judged: the server warms the cache in such batches at
    /// start, taking the store for one batch at a time, so the first view
    /// finds the fleet judged and reports are stored in between.
    pub(crate) fn warm(&self, store: &dyn FleetStore, limit: usize) -> Result<usize, ApiError> {
        let (mut inner, live, agents) = self.current(store)?;
        let mut judged = 0;
        for agent in &agents {
            if judged >= limit {
                break;
            }
            if fresh(&inner.entries, agent) {
                continue;
            }
            judgement(&mut inner.entries, store, agent, &live)?;
            judged += 1;
        }
        Ok(judged)
    }

    /// How many hosts it holds (for the tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entries
            .len()
    }
}

/// Whether the agent's entry still stands: no report, and no change of
/// environment, since it was judged.
fn fresh(entries: &HashMap<String, Entry>, agent: &AgentRow) -> bool {
    entries.get(&agent.id).is_some_and(|entry| {
        entry.last_seq == agent.last_seq
            && entry.last_digest == agent.last_digest
            && entry.environment == agent.environment
    })
}

/// The agent's judgement: its entry's when that still stands, else read and
/// judged again (and the entry replaced).
fn judgement(
    entries: &mut HashMap<String, Entry>,
    store: &dyn FleetStore,
    agent: &AgentRow,
    live: &[FleetApproval],
) -> Result<Arc<HostJudgement>, ApiError> {
    if fresh(entries, agent)
        && let Some(entry) = entries.get(&agent.id)
    {
        return Ok(Arc::clone(&entry.judgement));
    }
    let row = store.latest_state(&agent.id)?;
    let state = row.as_ref().map(|row| (row.seq, row.taken_at));
    let judgement = match entries.get(&agent.id) {
        // Reports came, but no new state (heartbeats): the judgement stands.
        Some(entry) if entry.state == state && entry.environment == agent.environment => {
            Arc::clone(&entry.judgement)
        }
        _ => {
            let latest = match row {
                Some(row) => Some((row.taken_at, routes::decode_state(&agent.id, &row.state)?)),
                None => None,
            };
            let judged = routes::summarise(agent.clone(), latest, live)?;
            Arc::new(HostJudgement::of(&judged))
        }
    };
    entries.insert(
        agent.id.clone(),
        Entry {
            last_seq: agent.last_seq,
            last_digest: agent.last_digest.clone(),
            environment: agent.environment.clone(),
            state,
            judgement: Arc::clone(&judgement),
        },
    );
    Ok(judgement)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use perimeter_api::{FindingDoc, HostState, ListenerDoc, NewApprovalDoc, OwnerDoc};
    use perimeter_store::fleet::{
        AgentStatus, EventRow, FleetError, NewAgent, NewFleetApproval, NewReport, NewTrailEntry,
        ReportOutcome, Role, SqliteFleet, StateRow, TokenRow, TrailEntry, UserRow,
    };

    use super::*;

    /// A store that counts the latest states read through it.
    struct Counting {
        inner: SqliteFleet,
        latest_states: AtomicUsize,
    }

    impl Counting {
        /// The states read since the last call.
        fn reads(&self) -> usize {
            self.latest_states.swap(0, Ordering::SeqCst)
        }
    }

    impl FleetStore for Counting {
        fn backend(&self) -> &'static str {
            self.inner.backend()
        }
        fn concurrent_handle(&self) -> Option<Box<dyn FleetStore>> {
            None
        }
        fn record_report_with(
            &mut self,
            report: &NewReport,
            next_state: &mut perimeter_store::fleet::StateBuilder<'_>,
        ) -> Result<Result<ReportOutcome, perimeter_store::fleet::Abandon>, FleetError> {
            self.inner.record_report_with(report, next_state)
        }
        fn prune_states(
            &mut self,
            before: OffsetDateTime,
            limit: usize,
        ) -> Result<usize, FleetError> {
            self.inner.prune_states(before, limit)
        }
        fn enrol_agent(&mut self, agent: &NewAgent) -> Result<AgentRow, FleetError> {
            self.inner.enrol_agent(agent)
        }
        fn agent(&self, id: &str) -> Result<Option<AgentRow>, FleetError> {
            self.inner.agent(id)
        }
        fn agents(&self) -> Result<Vec<AgentRow>, FleetError> {
            self.inner.agents()
        }
        fn set_agent_status(
            &mut self,
            id: &str,
            status: AgentStatus,
            by: &str,
            reason: &str,
            at: OffsetDateTime,
        ) -> Result<(), FleetError> {
            self.inner.set_agent_status(id, status, by, reason, at)
        }
        fn set_agent_environment(
            &mut self,
            id: &str,
            environment: Option<&str>,
            by: &str,
            at: OffsetDateTime,
        ) -> Result<(), FleetError> {
            self.inner.set_agent_environment(id, environment, by, at)
        }
        fn record_report(&mut self, report: &NewReport) -> Result<ReportOutcome, FleetError> {
            self.inner.record_report(report)
        }
        fn latest_state(&self, agent_id: &str) -> Result<Option<StateRow>, FleetError> {
            self.latest_states.fetch_add(1, Ordering::SeqCst);
            self.inner.latest_state(agent_id)
        }
        fn states(&self, agent_id: &str, limit: usize) -> Result<Vec<StateRow>, FleetError> {
            self.inner.states(agent_id, limit)
        }
        fn events(
            &self,
            agent_id: Option<&str>,
            after: i64,
            limit: usize,
        ) -> Result<Vec<EventRow>, FleetError> {
            self.inner.events(agent_id, after, limit)
        }
        fn events_received(
            &self,
            window: std::ops::Range<OffsetDateTime>,
            limit: usize,
        ) -> Result<Vec<EventRow>, FleetError> {
            self.inner.events_received(window, limit)
        }
        fn add_approval(
            &mut self,
            approval: &NewFleetApproval,
        ) -> Result<FleetApproval, FleetError> {
            self.inner.add_approval(approval)
        }
        fn revoke_approval(
            &mut self,
            id: i64,
            by: &str,
            reason: &str,
            at: OffsetDateTime,
        ) -> Result<(), FleetError> {
            self.inner.revoke_approval(id, by, reason, at)
        }
        fn approvals(&self, include_revoked: bool) -> Result<Vec<FleetApproval>, FleetError> {
            self.inner.approvals(include_revoked)
        }
        fn add_user(
            &mut self,
            name: &str,
            role: Role,
            password_hash: &str,
            by: &str,
            at: OffsetDateTime,
        ) -> Result<(), FleetError> {
            self.inner.add_user(name, role, password_hash, by, at)
        }
        fn set_user_disabled(
            &mut self,
            name: &str,
            disabled: bool,
            by: &str,
            at: OffsetDateTime,
        ) -> Result<(), FleetError> {
            self.inner.set_user_disabled(name, disabled, by, at)
        }
        fn user(&self, name: &str) -> Result<Option<UserRow>, FleetError> {
            self.inner.user(name)
        }
        fn users(&self) -> Result<Vec<UserRow>, FleetError> {
            self.inner.users()
        }
        fn add_scoped_token(
            &mut self,
            token_hash: &str,
            user: &str,
            label: &str,
            at: OffsetDateTime,
            expires: Option<OffsetDateTime>,
            scope: perimeter_store::fleet::TokenScope,
        ) -> Result<TokenRow, FleetError> {
            self.inner
                .add_scoped_token(token_hash, user, label, at, expires, scope)
        }
        fn add_scan_job(
            &mut self,
            job: &perimeter_store::fleet::NewScanJob,
        ) -> Result<perimeter_store::fleet::ScanJobRow, FleetError> {
            self.inner.add_scan_job(job)
        }
        fn scan_jobs(
            &self,
            limit: usize,
        ) -> Result<Vec<perimeter_store::fleet::ScanJobRow>, FleetError> {
            self.inner.scan_jobs(limit)
        }
        #[allow(clippy::type_complexity)]
        fn scan_job(
            &self,
            id: i64,
        ) -> Result<
            Option<(
                perimeter_store::fleet::ScanJobRow,
                Vec<perimeter_store::fleet::ShardRow>,
            )>,
            FleetError,
        > {
            self.inner.scan_job(id)
        }
        fn lease_shard(
            &mut self,
            node: &str,
            vantage: Option<&str>,
            token: &str,
            now: OffsetDateTime,
        ) -> Result<Option<perimeter_store::fleet::Lease>, FleetError> {
            self.inner.lease_shard(node, vantage, token, now)
        }
        fn renew_lease(
            &mut self,
            token: &str,
            now: OffsetDateTime,
        ) -> Result<perimeter_store::fleet::LeaseCheck, FleetError> {
            self.inner.renew_lease(token, now)
        }
        fn finish_shard(
            &mut self,
            token: &str,
            now: OffsetDateTime,
            run: &str,
        ) -> Result<perimeter_store::fleet::LeaseCheck, FleetError> {
            self.inner.finish_shard(token, now, run)
        }
        fn shard_runs(&self, job_id: i64) -> Result<Vec<(u32, String)>, FleetError> {
            self.inner.shard_runs(job_id)
        }
        fn token(&self, token_hash: &str) -> Result<Option<TokenRow>, FleetError> {
            self.inner.token(token_hash)
        }
        fn revoke_token(
            &mut self,
            id: i64,
            by: &str,
            at: OffsetDateTime,
        ) -> Result<(), FleetError> {
            self.inner.revoke_token(id, by, at)
        }
        fn append_trail(&mut self, entry: &NewTrailEntry) -> Result<i64, FleetError> {
            self.inner.append_trail(entry)
        }
        fn trail(&self, limit: usize) -> Result<Vec<TrailEntry>, FleetError> {
            self.inner.trail(limit)
        }
    }

    fn redis(address: &str, scope: &str) -> ListenerDoc {
        ListenerDoc {
            netns: "host".into(),
            protocol: "tcp".into(),
            address: address.into(),
            port: 6379,
            scope: scope.into(),
            owners: vec![OwnerDoc {
                pid: 4242,
                name: "redis-server".into(),
                exe: Some("/usr/bin/redis-server".into()),
                package: Some("redis-server".into()),
                user: "redis".into(),
            }],
            reach: None,
        }
    }

    /// Listener `port` of a host, wildcard, packaged.
    fn service(port: u16) -> ListenerDoc {
        ListenerDoc {
            netns: "host".into(),
            protocol: "tcp".into(),
            address: "0.0.0.0".into(),
            port,
            scope: "wildcard".into(),
            owners: vec![OwnerDoc {
                pid: u32::from(port),
                name: format!("svc{port}"),
                exe: Some(format!("/usr/sbin/svc{port}")),
                package: Some(format!("svc{port}")),
                user: "root".into(),
            }],
            reach: None,
        }
    }

    fn report(store: &mut dyn FleetStore, id: &str, seq: u64, state: Option<HostState>) {
        let now = OffsetDateTime::now_utc();
        let outcome = store
            .record_report(&NewReport {
                agent_id: id.to_owned(),
                seq,
                digest: format!("d{seq}"),
                hostname: id.to_owned(),
                taken_at: now,
                received_at: now,
                state: state.map(|state| serde_json::to_string(&state).expect("json")),
                events: Vec::new(),
            })
            .expect("report");
        assert_eq!(outcome, ReportOutcome::Stored);
    }

    /// Two hosts, `web-1` and `web-2`, each with an unapproved Redis on
    /// 0.0.0.0 and a critical finding.
    fn fleet() -> Counting {
        let mut store = SqliteFleet::open_in_memory().expect("store");
        for id in ["web-1", "web-2"] {
            store
                .enrol_agent(&NewAgent {
                    id: id.to_owned(),
                    public_key: id.bytes().cycle().take(32).collect(),
                    hostname: id.to_owned(),
                    status: AgentStatus::Accepted,
                    enrolled_at: OffsetDateTime::now_utc(),
                })
                .expect("enrol");
            report(
                &mut store,
                id,
                1,
                Some(state(vec![redis("0.0.0.0", "wildcard")])),
            );
        }
        Counting {
            inner: store,
            latest_states: AtomicUsize::new(0),
        }
    }

    fn state(listeners: Vec<ListenerDoc>) -> HostState {
        HostState {
            hostname: "web".into(),
            listeners,
            findings: vec![FindingDoc {
                rule: "redis.no-auth".into(),
                severity: "critical".into(),
                subject: "tcp 0.0.0.0:6379".into(),
                message: "Redis answers without a password".into(),
                evidence: Vec::new(),
                remedy: "set requirepass".into(),
            }],
        }
    }

    fn approve_redis(store: &mut dyn FleetStore, scope: &str) -> i64 {
        let host = scope.strip_prefix("host:").is_some();
        let doc = NewApprovalDoc {
            schema: perimeter_api::SCHEMA.to_owned(),
            scope: scope.to_owned(),
            netns: Some("host".into()),
            protocol: "tcp".into(),
            address: host.then(|| "0.0.0.0".to_owned()),
            bind_scope: (!host).then(|| "wildcard".to_owned()),
            port: 6379,
            exe: Some("/usr/bin/redis-server".into()),
            package: Some("redis-server".into()),
            user: Some("redis".into()),
            unowned: false,
            reason: "the web tier's cache".into(),
            expires: None,
            recorded_by: None,
            recorded_at: None,
        };
        let new = routes::fleet_approval(&doc, "alice", OffsetDateTime::now_utc()).expect("valid");
        store.add_approval(&new).expect("stored").id
    }

    fn unapproved(overview: &Overview) -> Vec<(String, u64)> {
        overview
            .hosts
            .iter()
            .map(|host| (host.summary.agent_id.clone(), host.summary.unapproved))
            .collect()
    }

    fn judgement<'a>(overview: &'a Overview, id: &str) -> &'a Arc<HostJudgement> {
        &overview
            .hosts
            .iter()
            .find(|host| host.summary.agent_id == id)
            .expect("listed")
            .judgement
    }

    #[test]
    fn warming_judges_in_batches_and_the_first_view_then_reads_nothing() {
        let store = fleet();
        let cache = OverviewCache::default();
        assert_eq!(cache.warm(&store, 1).expect("warm"), 1);
        assert_eq!(cache.warm(&store, 1).expect("warm"), 1);
        assert_eq!(cache.warm(&store, 1).expect("warm"), 0, "all judged");
        assert_eq!(store.reads(), 2);
        let first = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 0, "the first view finds the fleet judged");
        assert_eq!(
            unapproved(&first),
            [("web-1".to_owned(), 1), ("web-2".to_owned(), 1)]
        );
    }

    #[test]
    fn an_unchanged_host_is_not_read_again() {
        let store = fleet();
        let cache = OverviewCache::default();
        let first = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 2);
        assert_eq!(
            unapproved(&first),
            [("web-1".to_owned(), 1), ("web-2".to_owned(), 1)]
        );
        let problems = &judgement(&first, "web-1").problems;
        assert_eq!(
            problems.iter().map(|p| p.rank).collect::<Vec<_>>(),
            [0, 2],
            "the Redis, then the finding"
        );
        let second = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 0);
        assert!(Arc::ptr_eq(
            judgement(&first, "web-1"),
            judgement(&second, "web-1")
        ));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_new_state_is_judged_on_the_next_view_and_a_heartbeat_is_not() {
        let mut store = fleet();
        let cache = OverviewCache::default();
        let first = cache.overview(&store).expect("overview");
        store.reads();

        // web-1's Redis moves to loopback: only web-1 is read again.
        report(
            &mut store,
            "web-1",
            2,
            Some(state(vec![redis("127.0.0.1", "loopback")])),
        );
        let second = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 1);
        assert_eq!(
            unapproved(&second),
            [("web-1".to_owned(), 0), ("web-2".to_owned(), 1)]
        );
        assert_eq!(judgement(&second, "web-1").exposed, 0);
        assert!(Arc::ptr_eq(
            judgement(&first, "web-2"),
            judgement(&second, "web-2")
        ));

        // A report without a new state: its state is looked up, not judged
        // again.
        report(&mut store, "web-1", 3, None);
        let third = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 1);
        assert!(Arc::ptr_eq(
            judgement(&second, "web-1"),
            judgement(&third, "web-1")
        ));
    }

    #[test]
    fn a_new_or_revoked_approval_is_reflected_on_the_next_view() {
        let mut store = fleet();
        let cache = OverviewCache::default();
        cache.overview(&store).expect("overview");
        store.reads();

        // A host's own approval: that host is judged again, not the other.
        let own = approve_redis(&mut store, "host:web-2");
        let view = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 1);
        assert_eq!(
            unapproved(&view),
            [("web-1".to_owned(), 1), ("web-2".to_owned(), 0)]
        );
        assert_eq!(
            judgement(&view, "web-2").problems.len(),
            1,
            "only the finding is left"
        );

        // The fleet's: every host.
        let fleet_wide = approve_redis(&mut store, "fleet");
        let view = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 2);
        assert_eq!(
            unapproved(&view),
            [("web-1".to_owned(), 0), ("web-2".to_owned(), 0)]
        );

        // Revoked, both are unapproved again on the next view.
        let now = OffsetDateTime::now_utc();
        store
            .revoke_approval(fleet_wide, "alice", "retired", now)
            .expect("revoke");
        store
            .revoke_approval(own, "alice", "retired", now)
            .expect("revoke");
        let view = cache.overview(&store).expect("overview");
        assert_eq!(
            unapproved(&view),
            [("web-1".to_owned(), 1), ("web-2".to_owned(), 1)]
        );
    }

    #[test]
    fn an_environment_and_its_approvals_are_reflected_on_the_next_view() {
        let mut store = fleet();
        let cache = OverviewCache::default();
        cache.overview(&store).expect("overview");
        store.reads();

        let now = OffsetDateTime::now_utc();
        store
            .set_agent_environment("web-1", Some("production"), "root", now)
            .expect("environment");
        let view = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 1, "web-1, whose approvals may differ now");
        assert_eq!(
            view.hosts[0].summary.environment.as_deref(),
            Some("production")
        );

        approve_redis(&mut store, "environment:production");
        let view = cache.overview(&store).expect("overview");
        assert_eq!(store.reads(), 1, "web-1, in production");
        assert_eq!(
            unapproved(&view),
            [("web-1".to_owned(), 0), ("web-2".to_owned(), 1)]
        );
    }

    #[test]
    fn a_host_keeps_its_worst_problems_and_counts_the_rest() {
        let mut store = fleet();
        let listeners: Vec<ListenerDoc> = (0..20).map(|n| service(8000 + n)).collect();
        report(&mut store, "web-1", 2, Some(state(listeners)));
        let cache = OverviewCache::default();
        let view = cache.overview(&store).expect("overview");
        let web_1 = judgement(&view, "web-1");
        assert_eq!(web_1.unapproved, 20);
        assert_eq!(web_1.n_problems, 21, "20 listeners and the finding");
        assert_eq!(web_1.problems.len(), MAX_HOST_PROBLEMS);
        assert!(web_1.problems.iter().all(|p| p.rank == 0));
        assert!(web_1.problems[0].html.contains("0.0.0.0:8000"));
    }
}
