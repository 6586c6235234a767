//! The things registry on disk: SQLite in WAL mode, read whole at start, written by one thread.
//!
//! Rule: **a dedicated writer thread owns the connection.** The service hands it [`StoreOp`]s
//! through a bounded channel and never waits for the disk: the thread takes whatever is queued
//! (up to [`BATCH_MAX`] operations) and commits it in one transaction; a batch that nobody
//! waits for (no barrier, flush or held reply) waits to be at least [`LAZY_COMMIT`] after the
//! previous commit. With WAL and
//! `synchronous = FULL` every commit is synced to disk, once for the whole batch (group commit):
//! what a commit holds survives a crash or a power cut. Only then are the batch's
//! [`StoreOp::Barrier`]s and [`StoreOp::Reply`]s answered, which is what lets a gateway
//! acknowledge a device, and the API answer a provisioning call, only once the data is durable.
//!
//! A failed commit is retried ([`RETRIES`] times, with back-off); if it still fails, the batch's
//! operations are written one by one so that only those that cannot be written at all are lost,
//! each counted in [`StoreStats::failed_ops`], and the batch's barriers and replies say so.
//!
//! The action log is bounded: once it holds more than `action_log_max` rows plus a tenth, the
//! oldest rows are deleted down to `action_log_max`.
//!
//! Schema version 1 (kept in `PRAGMA user_version`):
//! - `things(id, type, info, created_ms, secret_salt, secret_hash)`
//! - `reported(thing, property, value, at_ms)` and `desired(thing, property, value, at_ms)`,
//!   values as JSON text
//! - `actions(id, thing, action, input, status, result, created_ms, updated_ms)`

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use device_models::{Commit, CommitError, Stamped, ThingId};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::request::{ApiError, Reply};
use super::secret::SecretHash;

/// The schema version this hub writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// Most operations committed in one transaction.
pub const BATCH_MAX: usize = 1024;
/// The least time between two commits that nobody waits for (see `Writer::gather`).
pub const LAZY_COMMIT: std::time::Duration = std::time::Duration::from_millis(5);
/// How often a lazy commit looks for a barrier that should end its wait.
const LAZY_POLL: std::time::Duration = std::time::Duration::from_millis(1);
/// How many times a failed commit is tried again before its operations are written one by one.
pub const RETRIES: u32 = 3;
/// The wait before the first retry; each next one waits four times longer.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// Why the database could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("things database {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "things database {path}: unreadable or not a Brume database (move it away to start afresh): {source}"
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "things database {path}: schema version {found} is newer than this hub supports ({SCHEMA_VERSION})"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("things database {path}: table {table}, row {key}: {reason}")]
    BadRow {
        path: PathBuf,
        table: &'static str,
        key: String,
        reason: String,
    },
    /// A stored value that does not parse; the parser's error is the source.
    #[error("things database {path}: table {table}, row {key}: {what}: {source}")]
    BadValue {
        path: PathBuf,
        table: &'static str,
        key: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("things database {path}: cannot create its directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the database writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Status of a logged action call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    /// Accepted and logged, not yet handed to a gateway.
    Queued,
    /// Handed to the thing's gateway.
    Sent,
    /// The device replied with a valid output.
    Done,
    /// The device replied with an error, or its reply broke the schema, or it could not be sent.
    Failed,
    /// No reply before the deadline (or the hub restarted meanwhile).
    Expired,
    /// The caller canceled the call before the device replied.
    Canceled,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Queued => "queued",
            ActionStatus::Sent => "sent",
            ActionStatus::Done => "done",
            ActionStatus::Failed => "failed",
            ActionStatus::Expired => "expired",
            ActionStatus::Canceled => "canceled",
        }
    }
}

/// One change for the writer thread. Values are serialized to JSON text on that thread.
#[derive(Debug)]
pub enum StoreOp {
    /// Inserts or replaces a thing (its state rows are untouched).
    PutThing {
        id: ThingId,
        type_id: String,
        info: Map<String, Value>,
        created_ms: u64,
        secret: Option<SecretHash>,
    },
    /// Replaces a thing's info.
    SetInfo {
        id: ThingId,
        info: Map<String, Value>,
    },
    /// Deletes a thing with its state and action log.
    DeleteThing { id: ThingId },
    /// Upserts reported values.
    PutReported {
        thing: ThingId,
        values: Vec<(String, Stamped)>,
    },
    /// Upserts pending desired values.
    PutDesired {
        thing: ThingId,
        values: Vec<(String, Stamped)>,
    },
    /// Removes desired values (settled, or no longer needed).
    ClearDesired { thing: ThingId, names: Vec<String> },
    /// Logs a new action call.
    InsertAction {
        id: u64,
        thing: ThingId,
        action: String,
        input: Value,
        status: ActionStatus,
        at_ms: u64,
    },
    /// Moves a logged action to a new status, with its result (output or error text).
    UpdateAction {
        id: u64,
        status: ActionStatus,
        result: Option<Value>,
        at_ms: u64,
    },
    /// Answers once everything queued before it is committed (tests, shutdown).
    Flush(oneshot::Sender<()>),
    /// A gateway's barrier: answered once everything queued before it is committed, or with
    /// [`CommitError::WriteFailed`] if part of its batch could not be written.
    Barrier(Commit),
    /// An API answer held until the writes before it are committed (provisioning, deletion,
    /// info updates); replaced by `brume.error.write_failed` if they could not be written.
    Reply {
        reply: Reply,
        answer: Result<Value, ApiError>,
    },
    /// Operations sent as one message (a turn of the things service), taken by the writer in
    /// order as if sent one by one: a turn costs one channel operation, and the writer never
    /// sees a turn's reports without the barrier behind them.
    Turn(Vec<StoreOp>),
}

impl StoreOp {
    /// True for operations that write (not barriers, flushes or held replies): an operation
    /// that does not write is one something waits for. A turn writes if all of it does.
    pub(crate) fn writes(&self) -> bool {
        match self {
            StoreOp::Flush(_) | StoreOp::Barrier(_) | StoreOp::Reply { .. } => false,
            StoreOp::Turn(ops) => ops.iter().all(StoreOp::writes),
            _ => true,
        }
    }

    /// Appends `self` to `batch`, a turn as its operations; true if something waits for one
    /// of them (see [`writes`](Self::writes)).
    fn take_into(self, batch: &mut Vec<StoreOp>) -> bool {
        match self {
            StoreOp::Turn(ops) => ops
                .into_iter()
                .fold(false, |waited, op| op.take_into(batch) | waited),
            op => {
                let waited = !op.writes();
                batch.push(op);
                waited
            }
        }
    }
}

/// Merges the [`StoreOp::PutReported`] of one thing in `ops` into its first one, up to the next
/// other write (a deletion, say, is never overtaken): a device that reports several times in one
/// turn of the things service then costs the writer one operation. The merged operation holds
/// each property's last value and sits where the first report was, so a barrier after any of
/// those reports still follows their write.
pub fn coalesce_reported(ops: &mut Vec<StoreOp>) {
    // Where each operation goes: `Some(j)` merges it into operation `j`.
    let mut into: Vec<Option<usize>> = Vec::with_capacity(ops.len());
    let mut first: HashMap<&str, usize, ahash::RandomState> = HashMap::default();
    for (i, op) in ops.iter().enumerate() {
        into.push(match op {
            StoreOp::PutReported { thing, .. } => match first.entry(thing.as_str()) {
                std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                    None
                }
            },
            op => {
                if op.writes() {
                    first.clear();
                }
                None
            }
        });
    }
    drop(first);
    if into.iter().all(Option::is_none) {
        return;
    }
    let mut slots: Vec<Option<StoreOp>> = ops.drain(..).map(Some).collect();
    for (i, target) in into.into_iter().enumerate() {
        let Some(j) = target else { continue };
        let Some(Some(StoreOp::PutReported { values, .. })) = slots.get_mut(i).map(Option::take)
        else {
            continue;
        };
        if let Some(Some(StoreOp::PutReported { values: merged, .. })) = slots.get_mut(j) {
            for (name, stamped) in values {
                match merged.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = stamped,
                    None => merged.push((name, stamped)),
                }
            }
        }
    }
    ops.extend(slots.into_iter().flatten());
}

/// A thing as loaded from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedThing {
    pub id: ThingId,
    pub type_id: String,
    pub info: Map<String, Value>,
    pub created_ms: u64,
    pub secret: Option<SecretHash>,
    pub reported: BTreeMap<String, Stamped>,
    pub desired: BTreeMap<String, Stamped>,
}

/// Everything read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub things: Vec<LoadedThing>,
    /// The highest action id in the log, so new ids continue after it.
    pub last_action_id: u64,
    /// Actions found queued or sent, marked expired since their callers are gone.
    pub expired_at_start: usize,
}

/// Counters of the writer thread.
#[derive(Debug)]
pub struct StoreStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Operations committed.
    pub ops: AtomicU64,
    /// Operations that could not be written even alone, after retries (each failure is logged).
    pub failed_ops: AtomicU64,
    /// Commits that failed and were tried again.
    pub retries: AtomicU64,
    /// Barriers answered (device messages acknowledged after their commit).
    pub barriers: AtomicU64,
    /// Action log rows pruned.
    pub pruned_actions: AtomicU64,
    /// Whether the last commit lost writes (the database is failing now).
    pub failing: std::sync::atomic::AtomicBool,
    /// Commit latency and size, for `/metrics`.
    pub commit_seconds: prometheus_client::metrics::histogram::Histogram,
    pub commit_ops: prometheus_client::metrics::histogram::Histogram,
}

impl Default for StoreStats {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        StoreStats {
            batches: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failed_ops: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            barriers: AtomicU64::new(0),
            pruned_actions: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
            // 0.25 ms to about 4 s.
            commit_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            // 1 to 4096 operations.
            commit_ops: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

/// The service's end of the writer thread.
#[derive(Debug)]
pub struct Store {
    tx: mpsc::Sender<StoreOp>,
    room: Arc<tokio::sync::Semaphore>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<StoreStats>,
}

/// Ends the writer's lazy wait (see [`LAZY_COMMIT`]) once something waits for the commit.
///
/// The writer waits lazily after a message nobody waits for (a turn of fire-and-forget reports),
/// parked, not in its queue: a turn with a barrier queued meanwhile would wait for the writer's
/// next look at its queue (up to [`LAZY_POLL`]) on top of its commit. Whoever queues such a turn
/// wakes it.
#[derive(Clone, Debug, Default)]
pub struct WriterWaker(Option<std::thread::Thread>);

impl WriterWaker {
    /// Tells the writer that an operation someone waits for is queued. Cheap when the writer
    /// is not waiting: a later wait then returns at once and looks at the queue again.
    pub fn wake(&self) {
        if let Some(t) = &self.0 {
            t.unpark();
        }
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database, reads everything, and starts the
    /// writer thread with a queue of `queue` operations (see [`Store::room`]). Blocking: call it off the async runtime.
    pub fn open(
        path: &Path,
        queue: usize,
        action_log_max: u64,
    ) -> Result<(Store, Loaded), StoreError> {
        Self::open_with_reserve(path, queue, action_log_max, None)
    }

    /// Like [`Store::open`]; a commit that fails because the disk is full first releases the
    /// hub's disk `reserve` (see [`crate::disk`]), then tries again.
    pub fn open_with_reserve(
        path: &Path,
        queue: usize,
        action_log_max: u64,
        reserve: Option<Arc<crate::disk::DiskReserve>>,
    ) -> Result<(Store, Loaded), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let unreadable = |source| StoreError::Unreadable {
            path: path.to_owned(),
            source,
        };
        prepare(&conn).map_err(unreadable)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(unreadable)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
            });
        }
        migrate(&conn, version).map_err(unreadable)?;
        let loaded = load(&conn, path)?;
        let action_rows: i64 = conn
            .query_row("SELECT count(*) FROM actions", [], |r| r.get(0))
            .map_err(unreadable)?;
        let action_rows = u64::try_from(action_rows).unwrap_or(0);

        let (tx, rx) = mpsc::channel(queue);
        let room = Arc::new(tokio::sync::Semaphore::new(queue));
        let stats = Arc::new(StoreStats::default());
        let writer = Writer {
            conn,
            rx,
            room: room.clone(),
            stats: stats.clone(),
            action_rows,
            action_log_max,
            reserve,
        };
        let thread = std::thread::Builder::new()
            .name("things-store".into())
            .spawn(move || {
                device_models::fault::inject("things_store");
                writer.run()
            })
            .map_err(StoreError::Thread)?;
        Ok((
            Store {
                tx,
                room,
                thread: Some(thread),
                stats,
            },
            loaded,
        ))
    }

    /// A sender of operations to the writer thread.
    pub fn sender(&self) -> mpsc::Sender<StoreOp> {
        self.tx.clone()
    }

    /// Room in the writer's queue, counted in operations: the queue holds up to `queue`
    /// messages, and a message may be a whole [`StoreOp::Turn`], so the things service takes
    /// one permit per operation it sends (and forgets it); the writer gives them back as it
    /// takes operations off the queue. This keeps the queue's bound in operations.
    pub fn room(&self) -> Arc<tokio::sync::Semaphore> {
        self.room.clone()
    }

    /// Wakes the writer out of a lazy wait; see [`WriterWaker`].
    pub fn waker(&self) -> WriterWaker {
        WriterWaker(self.thread.as_ref().map(|t| t.thread().clone()))
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// Closes the queue, lets the writer commit what is left, and waits for it (blocking).
    pub fn close(mut self) {
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the things database writer thread panicked");
        }
    }
}

fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Reading the schema forces SQLite to read the header: a file that is not a database fails
    // here, not later on the writer thread.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "the things database could not switch to WAL mode");
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")?;
    Ok(())
}

fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    if from < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS things (
                 id TEXT PRIMARY KEY NOT NULL,
                 type TEXT NOT NULL,
                 info TEXT NOT NULL,
                 created_ms INTEGER NOT NULL,
                 secret_salt BLOB,
                 secret_hash BLOB
             );
             CREATE TABLE IF NOT EXISTS reported (
                 thing TEXT NOT NULL,
                 property TEXT NOT NULL,
                 value TEXT NOT NULL,
                 at_ms INTEGER NOT NULL,
                 PRIMARY KEY (thing, property)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS desired (
                 thing TEXT NOT NULL,
                 property TEXT NOT NULL,
                 value TEXT NOT NULL,
                 at_ms INTEGER NOT NULL,
                 PRIMARY KEY (thing, property)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS actions (
                 id INTEGER PRIMARY KEY NOT NULL,
                 thing TEXT NOT NULL,
                 action TEXT NOT NULL,
                 input TEXT NOT NULL,
                 status TEXT NOT NULL,
                 result TEXT,
                 created_ms INTEGER NOT NULL,
                 updated_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS actions_by_thing ON actions (thing);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn load(conn: &Connection, path: &Path) -> Result<Loaded, StoreError> {
    let unreadable = |source| StoreError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let bad = |table: &'static str, key: &str, reason: String| StoreError::BadRow {
        path: path.to_owned(),
        table,
        key: key.to_owned(),
        reason,
    };
    let bad_value = |table: &'static str,
                     key: &str,
                     what: &'static str,
                     source: Box<dyn std::error::Error + Send + Sync>| {
        StoreError::BadValue {
            path: path.to_owned(),
            table,
            key: key.to_owned(),
            what,
            source,
        }
    };
    let mut things: BTreeMap<String, LoadedThing> = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT id, type, info, created_ms, secret_salt, secret_hash FROM things")
            .map_err(unreadable)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                    r.get::<_, Option<Vec<u8>>>(5)?,
                ))
            })
            .map_err(unreadable)?;
        for row in rows {
            let (id, type_id, info, created_ms, salt, hash) = row.map_err(unreadable)?;
            let thing = ThingId::new(id.clone())
                .map_err(|e| bad_value("things", &id, "bad thing id", Box::new(e)))?;
            let info: Map<String, Value> = serde_json::from_str(&info)
                .map_err(|e| bad_value("things", &id, "info is not a JSON object", Box::new(e)))?;
            let secret = match (salt, hash) {
                (Some(salt), Some(hash)) => Some(
                    SecretHash::from_parts(&salt, &hash)
                        .ok_or_else(|| bad("things", &id, "malformed secret hash".into()))?,
                ),
                _ => None,
            };
            things.insert(
                id,
                LoadedThing {
                    id: thing,
                    type_id,
                    info,
                    created_ms: u64::try_from(created_ms).unwrap_or(0),
                    secret,
                    reported: BTreeMap::new(),
                    desired: BTreeMap::new(),
                },
            );
        }
    }
    for table in ["reported", "desired"] {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT thing, property, value, at_ms FROM {table}"
            ))
            .map_err(unreadable)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(unreadable)?;
        let table_name: &'static str = if table == "reported" {
            "reported"
        } else {
            "desired"
        };
        for row in rows {
            let (thing, property, value, at_ms) = row.map_err(unreadable)?;
            let key = format!("{thing}/{property}");
            let value: Value = serde_json::from_str(&value)
                .map_err(|e| bad_value(table_name, &key, "value is not JSON", Box::new(e)))?;
            // State of a thing that is gone (deleted while a write was queued) is skipped.
            let Some(t) = things.get_mut(&thing) else {
                continue;
            };
            let stamped = Stamped {
                value,
                at_ms: u64::try_from(at_ms).unwrap_or(0),
            };
            if table == "reported" {
                t.reported.insert(property, stamped);
            } else {
                t.desired.insert(property, stamped);
            }
        }
    }
    let last_action_id: i64 = conn
        .query_row("SELECT coalesce(max(id), 0) FROM actions", [], |r| r.get(0))
        .map_err(unreadable)?;
    let expired_at_start = conn
        .execute(
            "UPDATE actions SET status = 'expired', result = 'the hub restarted before the reply'
             WHERE status IN ('queued', 'sent')",
            [],
        )
        .map_err(unreadable)?;
    Ok(Loaded {
        things: things.into_values().collect(),
        last_action_id: u64::try_from(last_action_id).unwrap_or(0),
        expired_at_start,
    })
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<StoreOp>,
    /// Room for operations in the queue (see [`Store::room`]); given back as they are taken.
    room: Arc<tokio::sync::Semaphore>,
    stats: Arc<StoreStats>,
    action_rows: u64,
    action_log_max: u64,
    reserve: Option<Arc<crate::disk::DiskReserve>>,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        let mut last_commit = std::time::Instant::now();
        while let Some(first) = self.rx.blocking_recv() {
            let waited_for = first.take_into(&mut batch);
            self.gather(&mut batch, waited_for, last_commit);
            // What the batch took off the queue makes room for as many operations again.
            self.room.add_permits(batch.len());
            self.commit(&mut batch);
            last_commit = std::time::Instant::now();
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "things database: final checkpoint failed");
        }
        tracing::debug!("things database writer stopped");
    }

    /// Takes what else is queued into `batch`. While nobody waits for the commit (no barrier,
    /// flush or held reply in the batch: fire-and-forget reports only), it keeps gathering
    /// until [`LAZY_COMMIT`] after the previous commit, so a stream of such reports costs a few
    /// hundred commits a second, not one per turn of the things service.
    fn gather(
        &mut self,
        batch: &mut Vec<StoreOp>,
        mut waited_for: bool,
        last_commit: std::time::Instant,
    ) {
        loop {
            while batch.len() < BATCH_MAX {
                match self.rx.try_recv() {
                    Ok(op) => waited_for |= op.take_into(batch),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let since = last_commit.elapsed();
            if waited_for || batch.len() >= BATCH_MAX || since >= LAZY_COMMIT {
                return;
            }
            // Woken early by a [`WriterWaker`] when a barrier, flush or reply is queued.
            std::thread::park_timeout((LAZY_COMMIT - since).min(LAZY_POLL));
        }
    }

    fn commit(&mut self, batch: &mut Vec<StoreOp>) {
        let started = std::time::Instant::now();
        let writes = batch.iter().filter(|op| op.writes()).count() as u64;
        let mut result = self.write(batch);
        let mut delay = RETRY_DELAY;
        for attempt in 1..=RETRIES {
            let Err(e) = &result else { break };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
                // The disk is full: take the hub's reserve, and give back what the WAL holds.
                if let Some(reserve) = &self.reserve {
                    reserve.release();
                }
                if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                    tracing::warn!(error = %e, "things database: checkpoint on a full disk failed");
                }
            }
            tracing::warn!(error = %e, ops = writes, attempt, retry_in = ?delay, "things database: a commit failed; trying again");
            std::thread::sleep(delay);
            delay *= 4;
            result = self.write(batch);
        }
        let lost = match result {
            Ok(()) => 0,
            Err(e) => {
                // Alone, each operation that can be written is; only the rest is lost.
                let lost = batch
                    .iter()
                    .filter(|op| op.writes())
                    .filter(|op| self.write(std::slice::from_ref(*op)).is_err())
                    .count() as u64;
                self.stats.failed_ops.fetch_add(lost, Ordering::Relaxed);
                tracing::error!(error = %e, ops = writes, lost, "things database: a batch could not be committed; written one by one, the rest is lost and counted");
                lost
            }
        };
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.ops.fetch_add(writes - lost, Ordering::Relaxed);
        self.stats.failing.store(lost > 0, Ordering::Relaxed);
        if writes > 0 {
            self.stats
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.stats.commit_ops.observe(writes as f64);
        }
        self.action_rows += batch
            .iter()
            .filter(|op| matches!(op, StoreOp::InsertAction { .. }))
            .count() as u64;
        self.prune();
        let outcome = if lost == 0 {
            Ok(())
        } else {
            Err(CommitError::WriteFailed)
        };
        for op in batch.drain(..) {
            match op {
                StoreOp::Flush(f) => {
                    let _ = f.send(());
                }
                StoreOp::Barrier(c) => {
                    self.stats.barriers.fetch_add(1, Ordering::Relaxed);
                    c.answer(outcome);
                }
                StoreOp::Reply { reply, answer } => {
                    let answer = match outcome {
                        Ok(()) => answer,
                        Err(_) => Err(ApiError::write_failed()),
                    };
                    let _ = reply.send(answer);
                }
                _ => {}
            }
        }
    }

    /// Applies `ops` in one transaction. Reported values are coalesced: of a run of
    /// [`StoreOp::PutReported`] (up to the next other write), only each property's last value
    /// is written, since the transaction commits whole and a row holds only the latest value.
    /// A device reporting faster than the disk commits then costs one row per property per
    /// commit, not one per report.
    fn write(&mut self, ops: &[StoreOp]) -> rusqlite::Result<()> {
        write_batch(&mut self.conn, ops)
    }

    /// Deletes the oldest action rows once the log exceeds its bound by a tenth.
    fn prune(&mut self) {
        let slack = (self.action_log_max / 10).max(1);
        if self.action_rows <= self.action_log_max + slack {
            return;
        }
        let keep = i64::try_from(self.action_log_max).unwrap_or(i64::MAX);
        let result = self.conn.execute(
            "DELETE FROM actions WHERE id <= (SELECT id FROM actions ORDER BY id DESC LIMIT 1 OFFSET ?1)",
            params![keep],
        );
        match result {
            Ok(deleted) => {
                self.stats
                    .pruned_actions
                    .fetch_add(deleted as u64, Ordering::Relaxed);
                self.action_rows = self.action_rows.saturating_sub(deleted as u64);
            }
            Err(e) => tracing::warn!(error = %e, "things database: pruning the action log failed"),
        }
    }
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Applies `ops` in one transaction on `conn` (see [`Writer::write`]).
fn write_batch(conn: &mut Connection, ops: &[StoreOp]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut reported: HashMap<(&str, &str), &Stamped, ahash::RandomState> = HashMap::default();
    for op in ops {
        match op {
            StoreOp::PutReported { thing, values } => {
                for (name, s) in values {
                    reported.insert((thing.as_str(), name.as_str()), s);
                }
            }
            op if op.writes() => {
                put_reported(&tx, &mut reported)?;
                apply(&tx, op)?;
            }
            _ => {}
        }
    }
    put_reported(&tx, &mut reported)?;
    tx.commit()
}

const PUT_REPORTED: &str =
    "INSERT OR REPLACE INTO reported (thing, property, value, at_ms) VALUES (?1, ?2, ?3, ?4)";

/// Writes the coalesced reported values and empties the map.
fn put_reported(
    tx: &Transaction<'_>,
    reported: &mut HashMap<(&str, &str), &Stamped, ahash::RandomState>,
) -> rusqlite::Result<()> {
    if reported.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(PUT_REPORTED)?;
    for ((thing, name), s) in reported.drain() {
        stmt.execute(params![thing, name, json(&s.value), ms(s.at_ms)])?;
    }
    Ok(())
}

fn apply(tx: &Transaction<'_>, op: &StoreOp) -> rusqlite::Result<()> {
    match op {
        StoreOp::PutThing {
            id,
            type_id,
            info,
            created_ms,
            secret,
        } => {
            let (salt, hash) = match &secret {
                Some(s) => (Some(s.salt().to_vec()), Some(s.hash().to_vec())),
                None => (None, None),
            };
            tx.prepare_cached(
                "INSERT OR REPLACE INTO things (id, type, info, created_ms, secret_salt, secret_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                id.as_str(),
                type_id,
                json(&info),
                ms(*created_ms),
                salt,
                hash
            ])?;
        }
        StoreOp::SetInfo { id, info } => {
            tx.prepare_cached("UPDATE things SET info = ?2 WHERE id = ?1")?
                .execute(params![id.as_str(), json(&info)])?;
        }
        StoreOp::DeleteThing { id } => {
            for sql in [
                "DELETE FROM things WHERE id = ?1",
                "DELETE FROM reported WHERE thing = ?1",
                "DELETE FROM desired WHERE thing = ?1",
                "DELETE FROM actions WHERE thing = ?1",
            ] {
                tx.prepare_cached(sql)?.execute(params![id.as_str()])?;
            }
        }
        StoreOp::PutReported { thing, values } => {
            let mut stmt = tx.prepare_cached(PUT_REPORTED)?;
            for (name, s) in values {
                stmt.execute(params![thing.as_str(), name, json(&s.value), ms(s.at_ms)])?;
            }
        }
        StoreOp::PutDesired { thing, values } => {
            let mut stmt = tx.prepare_cached(
                "INSERT OR REPLACE INTO desired (thing, property, value, at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (name, s) in values {
                stmt.execute(params![thing.as_str(), name, json(&s.value), ms(s.at_ms)])?;
            }
        }
        StoreOp::ClearDesired { thing, names } => {
            let mut stmt =
                tx.prepare_cached("DELETE FROM desired WHERE thing = ?1 AND property = ?2")?;
            for name in names {
                stmt.execute(params![thing.as_str(), name])?;
            }
        }
        StoreOp::InsertAction {
            id,
            thing,
            action,
            input,
            status,
            at_ms,
        } => {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO actions (id, thing, action, input, status, result, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6)",
            )?
            .execute(params![
                ms(*id),
                thing.as_str(),
                action,
                json(&input),
                status.as_str(),
                ms(*at_ms)
            ])?;
        }
        StoreOp::UpdateAction {
            id,
            status,
            result,
            at_ms,
        } => {
            tx.prepare_cached(
                "UPDATE actions SET status = ?2, result = ?3, updated_ms = ?4 WHERE id = ?1",
            )?
            .execute(params![
                ms(*id),
                status.as_str(),
                result.as_ref().map(json),
                ms(*at_ms)
            ])?;
        }
        StoreOp::Flush(_) | StoreOp::Barrier(_) | StoreOp::Reply { .. } => {}
        // The writer takes a turn apart as it receives it; this keeps `apply` whole.
        StoreOp::Turn(ops) => {
            for op in ops {
                apply(tx, op)?;
            }
        }
    }
    Ok(())
}

/// One logged action, as the tests and tools read it back.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub id: u64,
    pub thing: String,
    pub action: String,
    pub status: String,
    pub result: Option<String>,
}

/// Reads the action log of a database directly (for tests and diagnostics; blocking).
pub fn read_action_log(path: &Path) -> rusqlite::Result<Vec<ActionRow>> {
    let conn = Connection::open(path)?;
    let mut stmt =
        conn.prepare("SELECT id, thing, action, status, result FROM actions ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(ActionRow {
            id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            thing: r.get(1)?,
            action: r.get(2)?,
            status: r.get(3)?,
            result: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// The schema version of a database file, if it has one (for tests; blocking).
pub fn schema_version(path: &Path) -> rusqlite::Result<Option<i64>> {
    let conn = Connection::open(path)?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .optional()
}

#[cfg(test)]
mod tests;
