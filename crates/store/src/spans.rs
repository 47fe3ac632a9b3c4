//! Audits stored as spans (schema version 3): each listener, finding and
//! problem is one row over the consecutive audits of its host that had it,
//! so recording an audit writes only what changed since the host's previous
//! one. The layout and why: `migrations/0003_audit_spans.sql`.
//!
//! Recording streams the snapshot: one listener's row is built, digested,
//! matched against the host's open rows and (when new) inserted before the
//! next is built, so no second copy of the whole snapshot is held.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use perimeter_model::{Finding, HostSnapshot, Ownership, Problem};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Transaction, params_from_iter};
use sha2::{Digest, Sha256};

use crate::audit::ListenerRecord;
use crate::codec::{encode_pids, encode_strings, u64_to_bits};
use crate::diff_audits::mask_pids;

/// The first 16 bytes of a SHA-256: matches values across audits. A
/// collision would take a second preimage of SHA-256, not luck.
pub(crate) type RowDigest = [u8; 16];

/// How values of a table are told apart when audits are diffed
/// ([`crate::diff_audits`]): the columns that make a value's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identity {
    /// Not diffed (problems).
    None,
    /// Namespace name, protocol, address, port and executable: listener
    /// columns 9, 0, 1, 2 and 14.
    Listener,
    /// Rule and subject with pids masked: finding columns 0 and 2.
    Finding,
}

/// One of the three span tables: its name and value columns, in the order
/// the rows' values are given and read back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanTable {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static str,
    identity: Identity,
    /// The identity's columns, in the order [`Identity`] gives them.
    identity_columns: &'static str,
}

pub(crate) const LISTENERS: SpanTable = SpanTable {
    name: "audit_listener_spans",
    columns: "protocol, address, port, scope, v6only, interface, inode, socket_uid, netns_inode, \
              netns_name, pids, process_name, uid, user, exe, exe_deleted, unit, container, ownership, \
              ownership_detail, package_manager, package_name, package_arch",
    identity: Identity::Listener,
    identity_columns: "netns_name, protocol, address, port, exe",
};

pub(crate) const FINDINGS: SpanTable = SpanTable {
    name: "audit_finding_spans",
    columns: "rule, severity, subject, message, evidence, remedy",
    identity: Identity::Finding,
    identity_columns: "rule, subject",
};

pub(crate) const PROBLEMS: SpanTable = SpanTable {
    name: "audit_problem_spans",
    columns: "subject, message, hint",
    identity: Identity::None,
    identity_columns: "NULL",
};

impl SpanTable {
    fn n_columns(self) -> usize {
        self.columns.split(',').count()
    }

    /// Rows of `host` in audit `audit_id`, `id` first and then the value
    /// columns. `latest`: the audit is the host's newest, whose rows are
    /// exactly the open ones.
    pub(crate) fn select_sql(self, latest: bool) -> String {
        let (name, columns) = (self.name, self.columns);
        if latest {
            // ?2 is bound either way; the open rows need only the host.
            format!(
                "SELECT id, {columns} FROM {name} WHERE host = ?1 AND gone_audit IS NULL \
                 AND ?2 IS NOT NULL ORDER BY id"
            )
        } else {
            format!(
                "SELECT id, {columns} FROM {name} WHERE host = ?1 AND first_audit <= ?2 \
                 AND (gone_audit IS NULL OR gone_audit > ?2) ORDER BY id"
            )
        }
    }

    /// One row by id, `id` first and then the value columns.
    pub(crate) fn select_one_sql(self) -> String {
        format!(
            "SELECT id, {} FROM {} WHERE id = ?1",
            self.columns, self.name
        )
    }

    /// A value's identity, hashed from the identity's columns in order;
    /// `None` for a table that is not diffed. The hash is keyed at random per
    /// writer and lives as long as it: identities are compared within one
    /// recording, never stored, so nobody can aim for a collision.
    fn identity_of(self, keys: &RandomState, columns: &[ValueRef<'_>]) -> Option<u64> {
        match self.identity {
            Identity::None => None,
            Identity::Listener => Some(keys.hash_one(Refs(columns))),
            Identity::Finding => {
                let rule = columns.first().copied().unwrap_or(ValueRef::Null);
                let subject = match columns.get(1) {
                    Some(ValueRef::Text(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                    _ => String::new(),
                };
                let masked = mask_pids(&subject);
                Some(keys.hash_one(Refs(&[rule, ValueRef::Text(masked.as_bytes())])))
            }
        }
    }

    /// The identity of a new value, from its columns.
    fn identity_of_values(self, keys: &RandomState, values: &[ToSqlOutput<'_>]) -> Option<u64> {
        let positions: &[usize] = match self.identity {
            Identity::None => return None,
            Identity::Listener => &[9, 0, 1, 2, 14],
            Identity::Finding => &[0, 2],
        };
        let columns: Vec<ValueRef<'_>> = positions
            .iter()
            .map(|&idx| values.get(idx).map_or(ValueRef::Null, value_ref))
            .collect();
        self.identity_of(keys, &columns)
    }
}

/// Column values hashed with their types, so `1` and `"1"` differ.
struct Refs<'a, 'v>(&'a [ValueRef<'v>]);

impl Hash for Refs<'_, '_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for value in self.0 {
            match value {
                ValueRef::Null => state.write_u8(0),
                ValueRef::Integer(n) => {
                    state.write_u8(1);
                    state.write_i64(*n);
                }
                ValueRef::Real(x) => {
                    state.write_u8(2);
                    state.write_u64(x.to_bits());
                }
                ValueRef::Text(bytes) => {
                    state.write_u8(3);
                    bytes.hash(state);
                }
                ValueRef::Blob(bytes) => {
                    state.write_u8(4);
                    bytes.hash(state);
                }
            }
        }
    }
}

/// What recording one table's values did.
#[derive(Debug, Default)]
pub(crate) struct SpanOutcome {
    /// Rows written: inserted, or closed.
    pub(crate) n_written: usize,
    /// The values (by their index among those added) whose identity no open
    /// row of the host had: what appeared since the previous audit.
    pub(crate) appeared: Vec<usize>,
    /// The open rows whose identity no value of the new audit has: what
    /// went away since the previous audit.
    pub(crate) disappeared: Vec<i64>,
}

/// Records the values of one table for audit `audit_id` of `host`: values
/// whose digest matches an open row of the host stay in that row; new ones
/// are inserted; open rows matched by nothing are closed at this audit.
/// Along the way it tells, by identity, what appeared and what went away.
pub(crate) struct SpanWriter<'tx, 'conn> {
    tx: &'tx Transaction<'conn>,
    table: SpanTable,
    host: &'tx str,
    audit_id: i64,
    /// The host's open rows, sorted by digest (a value listed twice has two),
    /// each with its id, whether a value of the new audit has matched it, and
    /// its identity.
    open: Vec<OpenRow>,
    /// The identities of the new values, each with the values that have it.
    added: HashMap<u64, Vec<usize>>,
    keys: RandomState,
    n_added: usize,
    insert_sql: String,
    n_written: usize,
}

#[derive(Debug)]
struct OpenRow {
    digest: RowDigest,
    id: i64,
    matched: bool,
    identity: Option<u64>,
}

impl<'tx, 'conn> SpanWriter<'tx, 'conn> {
    pub(crate) fn new(
        tx: &'tx Transaction<'conn>,
        table: SpanTable,
        host: &'tx str,
        audit_id: i64,
    ) -> rusqlite::Result<SpanWriter<'tx, 'conn>> {
        let mut open = Vec::new();
        let keys = RandomState::new();
        let mut statement = tx.prepare_cached(&format!(
            "SELECT id, digest, {} FROM {} WHERE host = ?1 AND gone_audit IS NULL",
            table.identity_columns, table.name
        ))?;
        let n_identity = table.identity_columns.split(',').count();
        let mut rows = statement.query([host])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            // A digest of another length (or type) cannot match any value:
            // the row is closed as gone, and its value written again.
            let digest = match row.get_ref(1)? {
                ValueRef::Blob(bytes) => RowDigest::try_from(bytes).unwrap_or_default(),
                _ => RowDigest::default(),
            };
            let identity_columns = (0..n_identity)
                .map(|idx| row.get_ref(2 + idx))
                .collect::<Result<Vec<_>, _>>()?;
            open.push(OpenRow {
                digest,
                id,
                matched: false,
                identity: table.identity_of(&keys, &identity_columns),
            });
        }
        open.sort_unstable_by_key(|row| (row.digest, row.id));
        let n_values = table.n_columns();
        let placeholders: Vec<String> = (5..5 + n_values).map(|i| format!("?{i}")).collect();
        let insert_sql = format!(
            "INSERT INTO {} (host, first_audit, gone_audit, digest, {}) VALUES (?1, ?2, ?3, ?4, {})",
            table.name,
            table.columns,
            placeholders.join(", ")
        );
        Ok(SpanWriter {
            tx,
            table,
            host,
            audit_id,
            open,
            added: HashMap::new(),
            keys,
            n_added: 0,
            insert_sql,
            n_written: 0,
        })
    }

    /// The next value of the new audit.
    pub(crate) fn add(&mut self, values: &[ToSqlOutput<'_>]) -> rusqlite::Result<()> {
        debug_assert_eq!(values.len(), self.table.n_columns());
        if let Some(identity) = self.table.identity_of_values(&self.keys, values) {
            self.added.entry(identity).or_default().push(self.n_added);
        }
        self.n_added += 1;
        let digest = digest(values);
        let first = self.open.partition_point(|row| row.digest < digest);
        let unmatched = self
            .open
            .get_mut(first..)
            .unwrap_or_default()
            .iter_mut()
            .take_while(|row| row.digest == digest)
            .find(|row| !row.matched);
        if let Some(row) = unmatched {
            row.matched = true;
            return Ok(());
        }
        let mut statement = self.tx.prepare_cached(&self.insert_sql)?;
        let head = [
            ToSqlOutput::Borrowed(ValueRef::Text(self.host.as_bytes())),
            ToSqlOutput::Owned(Value::Integer(self.audit_id)),
            ToSqlOutput::Owned(Value::Null),
            ToSqlOutput::Borrowed(ValueRef::Blob(&digest)),
        ];
        statement.execute(params_from_iter(head.iter().chain(values)))?;
        self.n_written += 1;
        Ok(())
    }

    /// Closes the open rows no value matched (gone in this audit), and says
    /// what appeared and what went away.
    pub(crate) fn finish(self) -> rusqlite::Result<SpanOutcome> {
        let mut statement = self.tx.prepare_cached(&format!(
            "UPDATE {} SET gone_audit = ?1 WHERE id = ?2",
            self.table.name
        ))?;
        let mut outcome = SpanOutcome {
            n_written: self.n_written,
            ..SpanOutcome::default()
        };
        let mut before: HashSet<u64> = HashSet::with_capacity(self.open.len());
        for row in &self.open {
            if !row.matched {
                statement.execute([self.audit_id, row.id])?;
                outcome.n_written += 1;
            }
            if let Some(identity) = row.identity {
                before.insert(identity);
                if !self.added.contains_key(&identity) {
                    outcome.disappeared.push(row.id);
                }
            }
        }
        for (identity, values) in &self.added {
            if !before.contains(identity) {
                outcome.appeared.extend(values);
            }
        }
        outcome.appeared.sort_unstable();
        outcome.disappeared.sort_unstable();
        Ok(outcome)
    }
}

fn value_ref<'a>(value: &'a ToSqlOutput<'_>) -> ValueRef<'a> {
    match value {
        ToSqlOutput::Borrowed(value) => *value,
        ToSqlOutput::Owned(value) => ValueRef::from(value),
        // Not produced by this module.
        _ => ValueRef::Null,
    }
}

/// The digest of a row's values: each value's type, length and bytes, so no
/// two different rows feed the hash the same bytes.
pub(crate) fn digest(values: &[ToSqlOutput<'_>]) -> RowDigest {
    digest_refs(values.iter().map(value_ref))
}

fn digest_refs<'a>(values: impl IntoIterator<Item = ValueRef<'a>>) -> RowDigest {
    let mut hasher = Sha256::new();
    for value in values {
        match value {
            ValueRef::Null => hasher.update([0u8]),
            ValueRef::Integer(n) => {
                hasher.update([1u8]);
                hasher.update(n.to_le_bytes());
            }
            ValueRef::Real(x) => {
                hasher.update([2u8]);
                hasher.update(x.to_le_bytes());
            }
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                hasher.update([if matches!(value, ValueRef::Text(_)) {
                    3u8
                } else {
                    4u8
                }]);
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
        }
    }
    let full = hasher.finalize();
    let mut out = RowDigest::default();
    out.copy_from_slice(&full[..16]);
    out
}

fn text(value: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(value.as_bytes()))
}

fn opt_text(value: Option<&str>) -> ToSqlOutput<'_> {
    value.map_or(ToSqlOutput::Owned(Value::Null), text)
}

fn int(value: i64) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(Value::Integer(value))
}

fn opt_int(value: Option<i64>) -> ToSqlOutput<'static> {
    value.map_or(ToSqlOutput::Owned(Value::Null), int)
}

fn owned_text(value: String) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(Value::Text(value))
}

/// A listener's row values, in [`LISTENERS`]' column order: the same values
/// (and encodings) as the version 1 `audit_listeners` rows.
pub(crate) fn listener_values(record: &ListenerRecord) -> Vec<ToSqlOutput<'_>> {
    use std::os::unix::ffi::OsStrExt;
    let process = record.process.as_ref();
    let (ownership, detail, package) = match process.map(|process| &process.ownership) {
        Some(Ownership::Package(package)) => ("package", None, Some(package)),
        Some(Ownership::Unpackaged) => ("unpackaged", None, None),
        Some(Ownership::Unknown(why)) => ("unknown", Some(why.as_str()), None),
        Some(Ownership::NotChecked) | None => ("not-checked", None, None),
    };
    vec![
        text(record.protocol.as_str()),
        owned_text(record.address.to_string()),
        int(i64::from(record.port)),
        text(record.scope.as_str()),
        opt_int(record.v6only.map(i64::from)),
        opt_text(record.interface.as_deref()),
        int(u64_to_bits(record.inode)),
        int(i64::from(record.socket_uid)),
        int(u64_to_bits(record.netns.inode)),
        text(&record.netns.name),
        owned_text(encode_pids(&record.pids)),
        opt_text(process.map(|process| process.name.as_str())),
        opt_int(process.map(|process| i64::from(process.uid))),
        opt_text(process.and_then(|process| process.user.as_deref())),
        process
            .and_then(|process| process.exe.as_ref())
            .map_or(ToSqlOutput::Owned(Value::Null), |exe| {
                ToSqlOutput::Borrowed(ValueRef::Blob(exe.as_os_str().as_bytes()))
            }),
        int(i64::from(
            process.is_some_and(|process| process.exe_deleted),
        )),
        opt_text(process.and_then(|process| process.unit.as_deref())),
        opt_text(process.and_then(|process| process.container.as_deref())),
        text(ownership),
        opt_text(detail),
        opt_text(package.map(|package| package.manager.as_str())),
        opt_text(package.map(|package| package.name.as_str())),
        opt_text(package.and_then(|package| package.arch.as_deref())),
    ]
}

pub(crate) fn finding_values(finding: &Finding) -> Vec<ToSqlOutput<'_>> {
    vec![
        text(&finding.rule),
        text(finding.severity.as_str()),
        text(&finding.subject),
        text(&finding.message),
        owned_text(encode_strings(&finding.evidence)),
        text(&finding.remedy),
    ]
}

pub(crate) fn problem_values(problem: &Problem) -> Vec<ToSqlOutput<'_>> {
    vec![
        text(&problem.subject),
        text(&problem.message),
        opt_text(problem.hint.as_deref()),
    ]
}

/// What recording an audit's values did, per table.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub(crate) listeners: SpanOutcome,
    pub(crate) findings: SpanOutcome,
}

/// Records the listeners, findings and problems of audit `audit_id` of
/// `host`, inside `tx`.
pub(crate) fn record_spans(
    tx: &Transaction<'_>,
    host: &str,
    audit_id: i64,
    snapshot: &HostSnapshot,
    findings: &[Finding],
) -> rusqlite::Result<Recorded> {
    let mut listeners = SpanWriter::new(tx, LISTENERS, host, audit_id)?;
    for listener in &snapshot.listeners {
        // One record at a time: built, written (or matched), dropped.
        let record = ListenerRecord::from_listener(snapshot, listener);
        listeners.add(&listener_values(&record))?;
    }
    let listeners = listeners.finish()?;
    let mut finding_spans = SpanWriter::new(tx, FINDINGS, host, audit_id)?;
    for finding in findings {
        finding_spans.add(&finding_values(finding))?;
    }
    let findings = finding_spans.finish()?;
    let mut problem_spans = SpanWriter::new(tx, PROBLEMS, host, audit_id)?;
    for problem in &snapshot.problems {
        problem_spans.add(&problem_values(problem))?;
    }
    // Problems are kept, not diffed.
    problem_spans.finish()?;
    Ok(Recorded {
        listeners,
        findings,
    })
}
