//! The uplink's store-and-forward queue: events waiting to go up to the cloud, in SQLite, bounded
//! by bytes and by age, surviving crashes.
//!
//! Rules:
//! - Every event gets the next sequence number of this hub; rows go up in sequence order and are
//!   deleted only once the cloud router acknowledged them.
//! - Over the byte bound, the oldest *telemetry* is dropped first; lifecycle events go only when no
//!   telemetry is left. Past the age bound, events are dropped whatever their kind. Every drop is
//!   counted by topic until it has been reported to the cloud, and by cause ([`Drops`]) since the
//!   queue was opened, so loss is never silent.
//! - A row that cannot be read back (written by another version, damaged on disk) is moved to
//!   the `unreadable` table (the newest [`MAX_UNREADABLE`] are kept for inspection) and counted;
//!   it never blocks the rows behind it.
//! - The database runs in WAL mode with `synchronous = FULL`, in batched transactions: a queued
//!   event survives a crash of the process or the machine once its batch committed.
//!
//! The queue is a plain struct over a connection (no async); the uplink owns it on a blocking
//! thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeSeed;

use crate::disk::{self, DiskReserve};
use crate::wamp::value::{Flavor, Seed, Ser};
use crate::wamp::{Payload, Value};

pub use crate::config::uplink::Kind;

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::Telemetry => 0,
            Kind::Lifecycle => 1,
        }
    }
    fn from_code(c: i64) -> Kind {
        if c == 1 {
            Kind::Lifecycle
        } else {
            Kind::Telemetry
        }
    }
}

/// Bounds of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_bytes: u64,
    pub max_age: Duration,
    /// The most the queue's database file may grow to (the hub's disk budget less what the
    /// things database needs); `None`: as far as the disk allows.
    pub max_file_bytes: Option<u64>,
}

impl QueueLimits {
    /// The bounds `[uplink]` configures.
    pub fn of(config: &crate::config::UplinkConfig) -> QueueLimits {
        QueueLimits {
            max_bytes: config.queue_max_bytes,
            max_age: Duration::from_secs(config.queue_max_age_secs),
            max_file_bytes: None,
        }
    }
}

/// An event to queue.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub topic: String,
    pub kind: Kind,
    pub payload: Payload,
    pub at_ms: u64,
}

/// A queued event.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedEvent {
    pub seq: u64,
    pub topic: String,
    pub kind: Kind,
    pub payload: Payload,
    pub at_ms: u64,
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("uplink queue database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("uplink queue row {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("uplink queue row {seq} is corrupt: {source}")]
    Undecodable {
        seq: u64,
        #[source]
        source: rmp_serde::decode::Error,
    },
}

impl QueueError {
    /// Whether the database is full: the disk, or the page budget the hub gave it.
    pub fn is_disk_full(&self) -> bool {
        matches!(
            self,
            QueueError::Db(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull
        )
    }
}

/// Events dropped by the queue since it was opened, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Pushed out by the byte bound (oldest telemetry first).
    pub bound: u64,
    /// Older than the age bound.
    pub age: u64,
    /// Larger than [`MAX_EVENT_BYTES`].
    pub oversize: u64,
    /// Refused by the cloud router (not authorized, invalid URI): never deliverable.
    pub rejected: u64,
    /// Could not be read back from the database.
    pub unreadable: u64,
    /// Shed, oldest telemetry first, because the disk (or the hub's disk budget) was full.
    pub disk_full: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.bound + self.age + self.oversize + self.rejected + self.unreadable + self.disk_full
    }
}

/// Why rows were dropped, for [`Drops`].
#[derive(Clone, Copy, Debug)]
enum Cause {
    Bound,
    Age,
    Rejected,
    DiskFull,
}

/// Unreadable rows kept for inspection; older ones are deleted.
pub const MAX_UNREADABLE: i64 = 1000;

/// The durable queue.
#[derive(Debug)]
pub struct UplinkQueue {
    conn: Connection,
    limits: QueueLimits,
    count: u64,
    bytes: u64,
    drops: Drops,
    /// The hub's disk reserve and the queue's directory, when the queue watches the disk.
    reserve: Option<(Arc<DiskReserve>, PathBuf)>,
    page_size: u64,
    /// The file's current cap in pages (`max_page_count`), and whether the disk (not the
    /// budget) set it; when it was last fitted (see [`Self::fit_to_disk`]).
    cap: i64,
    disk_limited: bool,
    fitted: Option<Instant>,
    /// When drops were last logged.
    drop_logged: Option<Instant>,
}

/// Least time between two log lines about dropped events.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Most events written in one transaction while the disk is nearly full.
const SMALL_BATCH: usize = 64;

/// How often the queue fits its file's cap to the free space on its filesystem.
const FIT_EVERY: Duration = Duration::from_millis(100);

/// Largest single event accepted into the queue; larger ones are dropped and counted.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

fn encode(p: &Payload) -> Vec<u8> {
    let v = Value::List(vec![
        Value::List(p.arg_list().to_vec()),
        Value::Dict(p.kwarg_dict().cloned().unwrap_or_default()),
    ]);
    rmp_serde::to_vec(&Ser(&v, Flavor::Binary)).unwrap_or_default()
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Payload, QueueError> {
    let corrupt = |reason: String| QueueError::Corrupt { seq, reason };
    let mut rd = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rd);
    let v = Seed::new(Flavor::Binary)
        .deserialize(&mut de)
        .map_err(|source| QueueError::Undecodable { seq, source })?;
    match v {
        Value::List(mut parts) if parts.len() == 2 => {
            let kwargs = parts.pop();
            let args = parts.pop();
            match (args, kwargs) {
                (Some(Value::List(a)), Some(Value::Dict(k))) => Ok(Payload::new(a, k)),
                _ => Err(corrupt("payload is not [args, kwargs]".into())),
            }
        }
        _ => Err(corrupt("payload is not [args, kwargs]".into())),
    }
}

impl UplinkQueue {
    /// Opens (or creates) the queue at `path`.
    pub fn open(path: &Path, limits: QueueLimits) -> Result<UplinkQueue, QueueError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page_size = page.max(512) as u64;
        let max_pages: i64 = match limits.max_file_bytes {
            Some(max) => {
                let pages = (max / page_size).max(64) as i64;
                conn.pragma_update(None, "max_page_count", pages)?;
                pages
            }
            None => conn.query_row("PRAGMA max_page_count", [], |r| r.get(0))?,
        };
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS queue (
                 seq INTEGER PRIMARY KEY,
                 topic TEXT NOT NULL,
                 kind INTEGER NOT NULL,
                 payload BLOB NOT NULL,
                 bytes INTEGER NOT NULL,
                 at_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS dropped (
                 topic TEXT PRIMARY KEY,
                 count INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (
                 key TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS unreadable (
                 seq INTEGER PRIMARY KEY,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 at_ms INTEGER NOT NULL,
                 reason TEXT NOT NULL
             );",
        )?;
        let (count, bytes): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM queue",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(UplinkQueue {
            conn,
            limits,
            count: count as u64,
            bytes: bytes as u64,
            drops: Drops::default(),
            reserve: None,
            page_size,
            cap: max_pages,
            disk_limited: false,
            fitted: None,
            drop_logged: None,
        })
    }

    /// The same queue, watching its filesystem: when a write fails because the disk itself is
    /// full (not the disk budget), it releases the hub's disk `reserve` and stops growing.
    pub fn with_reserve(mut self, reserve: Arc<DiskReserve>, dir: &Path) -> UplinkQueue {
        self.reserve = Some((reserve, dir.to_owned()));
        self
    }

    /// Whether the queue's file is held below its budget because its filesystem is nearly full.
    pub fn disk_limited(&self) -> bool {
        self.disk_limited
    }

    /// Fits the file's cap to its filesystem, at most every [`FIT_EVERY`]: the file may grow to
    /// its budget, but never into the last two reserves' worth of free space, which stays for the
    /// things database and both write-ahead logs. Past that cap the queue sheds its oldest
    /// telemetry (counted as `disk_full`), as it does at its budget. Restores the hub's disk
    /// reserve once there is room for it again.
    fn fit_to_disk(&mut self) {
        let Some((reserve, dir)) = &self.reserve else {
            return;
        };
        if self.fitted.is_some_and(|t| t.elapsed() < FIT_EVERY) {
            return;
        }
        self.fitted = Some(Instant::now());
        if !reserve.held() {
            reserve.restore_if_room();
        }
        let Some(free) = disk::free_bytes(dir) else {
            return;
        };
        let keep_free = reserve.bytes().saturating_mul(2);
        let pages: i64 = match self.conn.query_row("PRAGMA page_count", [], |r| r.get(0)) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "uplink queue: cannot read its page count");
                return;
            }
        };
        let room =
            i64::try_from(free.saturating_sub(keep_free) / self.page_size).unwrap_or(i64::MAX);
        let budget = self.budget_pages();
        let cap = budget.min(pages.saturating_add(room));
        if cap != self.cap {
            match self.conn.pragma_update(None, "max_page_count", cap) {
                Ok(()) => self.cap = cap,
                Err(e) => tracing::warn!(error = %e, "uplink queue: cannot set its page cap"),
            }
        }
        let limited = cap < budget;
        if limited != self.disk_limited {
            self.disk_limited = limited;
            if limited {
                tracing::warn!(
                    free,
                    keep_free,
                    file_bytes = cap.saturating_mul(self.page_size as i64),
                    "the disk is nearly full: the uplink queue stops growing and sheds its oldest telemetry (disk_full)"
                );
            } else {
                tracing::info!("the disk has room again: the uplink queue may grow to its budget");
            }
        }
    }

    /// The most pages the disk budget allows the file.
    fn budget_pages(&self) -> i64 {
        match self.limits.max_file_bytes {
            Some(max) => (max / self.page_size).max(64) as i64,
            None => i64::from(u32::MAX >> 1),
        }
    }

    /// A write failed for lack of space while the filesystem is full anyway (something else
    /// filled it faster than the cap followed): release the hub's disk reserve, give back what
    /// the WAL holds, and refit the cap at once.
    fn on_disk_full(&mut self) {
        let Some((reserve, dir)) = &self.reserve else {
            return;
        };
        if disk::free_bytes(dir).is_some_and(|free| free >= reserve.bytes().max(1 << 20)) {
            return; // the cap or the budget, not the disk
        }
        reserve.release();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!(error = %e, "uplink queue checkpoint on a full disk failed");
        }
        self.fitted = None;
        self.fit_to_disk();
    }

    /// Events dropped since the queue was opened, by cause.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Events queued.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes queued (topics and payloads).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// When the event at the head of the queue (the next to go up) was taken in, in ms since
    /// the Unix epoch; `None` when the queue is empty or cannot be read.
    pub fn oldest_at_ms(&self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT at_ms FROM queue ORDER BY seq LIMIT 1")
            .ok()?;
        stmt.query_row([], |r| r.get::<_, i64>(0))
            .optional()
            .ok()
            .flatten()
            .map(|at| at.max(0) as u64)
    }

    /// The last sequence number handed out (0 if none yet). Survives restarts and acks, so
    /// sequence numbers never repeat for this hub.
    fn last_seq(&self) -> Result<u64, QueueError> {
        let stored: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'last_seq'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(stored.unwrap_or(0) as u64)
    }

    /// Queues events in one transaction, then enforces the bounds. Returns the sequence numbers
    /// given. When the disk (or the disk budget) is full, the oldest telemetry is shed, counted
    /// as `disk_full`, and the write tried again, rather than losing the newest events.
    pub fn push(&mut self, events: &[NewEvent]) -> Result<Vec<u64>, QueueError> {
        self.fit_to_disk();
        if self.disk_limited && events.len() > SMALL_BATCH {
            // Small transactions while the disk is nearly full: the WAL needs little room.
            let mut given = Vec::with_capacity(events.len());
            for chunk in events.chunks(SMALL_BATCH) {
                given.extend(self.push(chunk)?);
            }
            return Ok(given);
        }
        let mut attempts = 0;
        loop {
            let outcome = self.push_once(events);
            if outcome.as_ref().is_err_and(QueueError::is_disk_full) {
                let was_limited = self.disk_limited;
                self.on_disk_full();
                if !was_limited && self.disk_limited {
                    // The disk itself filled up: make room, then write in small transactions.
                    if !self.is_empty() {
                        self.shed_for_space((self.bytes / 4).max(64 * 1024))?;
                    }
                    return self.push(events);
                }
            }
            if outcome.is_ok() && self.disk_limited {
                // Give the WAL's space back to the filesystem after each write while it is
                // full, so the things database keeps the room the reserve made.
                if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                    tracing::debug!(error = %e, "uplink queue checkpoint on a full disk failed");
                }
            }
            match outcome {
                Err(e) if e.is_disk_full() && attempts < 8 && !self.is_empty() => {
                    attempts += 1;
                    let wanted = (self.bytes / 4).max(64 * 1024);
                    let shed = match self.shed_for_space(wanted) {
                        // Even a delete needs room in the WAL: make some and try once more.
                        Err(e) if e.is_disk_full() => {
                            self.on_disk_full();
                            self.shed_for_space(wanted)?
                        }
                        other => other?,
                    };
                    tracing::debug!(
                        shed,
                        "the uplink queue's disk is full; oldest telemetry shed and counted (disk_full)"
                    );
                }
                // Even an empty queue cannot take the whole batch: half of it at a time.
                Err(e) if e.is_disk_full() && events.len() > 1 => {
                    let (first, second) = events.split_at(events.len() / 2);
                    let mut given = self.push(first)?;
                    given.extend(self.push(second)?);
                    return Ok(given);
                }
                other => return other,
            }
        }
    }

    /// Drops the oldest events, telemetry first, until about `wanted` bytes are freed; returns
    /// how many went.
    fn shed_for_space(&mut self, wanted: u64) -> Result<u64, QueueError> {
        for (sql, cond) in [
            (
                "SELECT seq, bytes FROM queue WHERE kind = 0 ORDER BY seq",
                "kind = 0 AND seq <= ?1",
            ),
            ("SELECT seq, bytes FROM queue ORDER BY seq", "seq <= ?1"),
        ] {
            let mut freed = 0u64;
            let mut upto = None;
            {
                let mut stmt = self.conn.prepare(sql)?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    freed += row.get::<_, i64>(1)? as u64;
                    upto = Some(row.get::<_, i64>(0)?);
                    if freed >= wanted {
                        break;
                    }
                }
            }
            if let Some(upto) = upto {
                return self.drop_where(cond, upto, Cause::DiskFull);
            }
        }
        Ok(0)
    }

    fn push_once(&mut self, events: &[NewEvent]) -> Result<Vec<u64>, QueueError> {
        let mut seq = self.last_seq()?;
        let mut given = Vec::with_capacity(events.len());
        // Applied to the counters only once the transaction committed.
        let (mut added, mut added_bytes, mut oversize) = (0u64, 0u64, 0u64);
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO queue (seq, topic, kind, payload, bytes, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut count_drop = tx.prepare_cached(
                "INSERT INTO dropped (topic, count) VALUES (?1, 1)
                 ON CONFLICT(topic) DO UPDATE SET count = count + 1",
            )?;
            for e in events {
                let payload = encode(&e.payload);
                let size = payload.len() + e.topic.len();
                if size > MAX_EVENT_BYTES {
                    tracing::warn!(topic = %e.topic, size, "event too large for the uplink queue; dropped");
                    count_drop.execute(params![e.topic])?;
                    oversize += 1;
                    continue;
                }
                seq += 1;
                insert.execute(params![
                    seq as i64,
                    e.topic,
                    e.kind.code(),
                    payload,
                    size as i64,
                    e.at_ms as i64
                ])?;
                added += 1;
                added_bytes += size as u64;
                given.push(seq);
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('last_seq', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![seq as i64],
        )?;
        tx.commit()?;
        self.count += added;
        self.bytes += added_bytes;
        self.drops.oversize += oversize;
        self.enforce_bytes()?;
        Ok(given)
    }

    /// Drops the oldest telemetry (then the oldest of anything) until the byte bound holds.
    fn enforce_bytes(&mut self) -> Result<(), QueueError> {
        for kind in [Some(Kind::Telemetry), None] {
            if self.bytes <= self.limits.max_bytes {
                return Ok(());
            }
            let excess = self.bytes - self.limits.max_bytes;
            // The newest sequence number that must go for the excess to be freed.
            let sql = match kind {
                Some(_) => "SELECT seq, bytes FROM queue WHERE kind = ?1 ORDER BY seq",
                None => "SELECT seq, bytes FROM queue WHERE ?1 >= 0 ORDER BY seq",
            };
            let mut freed = 0u64;
            let mut upto = None;
            {
                let mut stmt = self.conn.prepare(sql)?;
                let mut rows = stmt.query(params![kind.map_or(0, Kind::code)])?;
                while let Some(row) = rows.next()? {
                    let seq: i64 = row.get(0)?;
                    let bytes: i64 = row.get(1)?;
                    freed += bytes as u64;
                    upto = Some(seq);
                    if freed >= excess {
                        break;
                    }
                }
            }
            if let Some(upto) = upto {
                self.drop_where(
                    match kind {
                        Some(_) => "kind = 0 AND seq <= ?1",
                        None => "seq <= ?1",
                    },
                    upto,
                    Cause::Bound,
                )?;
            }
        }
        Ok(())
    }

    /// Deletes the rows matching `cond` (with `?1` bound to `arg`), counting them as dropped.
    fn drop_where(&mut self, cond: &str, arg: i64, cause: Cause) -> Result<u64, QueueError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO dropped (topic, count)
                 SELECT topic, COUNT(*) FROM queue WHERE {cond} GROUP BY topic
                 ON CONFLICT(topic) DO UPDATE SET count = count + excluded.count"
            ),
            params![arg],
        )?;
        let (n, b): (i64, i64) = tx.query_row(
            &format!("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM queue WHERE {cond}"),
            params![arg],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(&format!("DELETE FROM queue WHERE {cond}"), params![arg])?;
        tx.commit()?;
        self.count -= n as u64;
        self.bytes -= b as u64;
        let counter = match cause {
            Cause::Bound => &mut self.drops.bound,
            Cause::Age => &mut self.drops.age,
            Cause::Rejected => &mut self.drops.rejected,
            Cause::DiskFull => &mut self.drops.disk_full,
        };
        *counter += n as u64;
        if n > 0 {
            // One line per DROP_LOG_EVERY at most: a full disk sheds on every write.
            if self
                .drop_logged
                .is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY)
            {
                self.drop_logged = Some(Instant::now());
                tracing::warn!(
                    dropped = n,
                    bytes = b,
                    cause = ?cause,
                    total = ?self.drops,
                    "uplink queue over its bounds; oldest events dropped and counted (further drops are counted, and logged again in 10 s)"
                );
            } else {
                tracing::debug!(dropped = n, bytes = b, cause = ?cause, "uplink queue dropped events");
            }
        }
        Ok(n as u64)
    }

    /// Drops events older than the age bound; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> Result<u64, QueueError> {
        let cutoff = now_ms.saturating_sub(self.limits.max_age.as_millis() as u64);
        self.drop_where("at_ms < ?1", cutoff as i64, Cause::Age)
    }

    /// Up to `limit` events with a sequence number above `after`, in order. A row that cannot be
    /// read back is moved aside to `unreadable`, counted (by topic and in [`Drops::unreadable`])
    /// and skipped, so it never holds up the rows behind it.
    pub fn peek(&mut self, after: u64, limit: usize) -> Result<Vec<QueuedEvent>, QueueError> {
        let mut out = Vec::new();
        let mut bad = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT seq, topic, kind, payload, at_ms FROM queue WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, i64>(4)? as u64,
                ))
            })?;
            for row in rows {
                let (seq, topic, kind, payload, at_ms) = row?;
                match decode(seq, &payload) {
                    Ok(payload) => out.push(QueuedEvent {
                        seq,
                        topic,
                        kind: Kind::from_code(kind),
                        payload,
                        at_ms,
                    }),
                    Err(e) => bad.push((seq, e.to_string())),
                }
            }
        }
        for (seq, reason) in bad {
            self.move_aside(seq, &reason)?;
        }
        Ok(out)
    }

    /// Moves an unreadable row to the `unreadable` table, counting it as dropped.
    fn move_aside(&mut self, seq: u64, reason: &str) -> Result<(), QueueError> {
        tracing::error!(seq, %reason, "uplink queue row cannot be read back; moved aside and counted");
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO unreadable (seq, topic, payload, at_ms, reason)
             SELECT seq, topic, payload, at_ms, ?2 FROM queue WHERE seq = ?1",
            params![seq as i64, reason],
        )?;
        tx.execute(
            "INSERT INTO dropped (topic, count)
             SELECT topic, 1 FROM queue WHERE seq = ?1
             ON CONFLICT(topic) DO UPDATE SET count = count + 1",
            params![seq as i64],
        )?;
        let bytes: Option<i64> = tx
            .query_row(
                "SELECT bytes FROM queue WHERE seq = ?1",
                params![seq as i64],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute("DELETE FROM queue WHERE seq = ?1", params![seq as i64])?;
        tx.execute(
            "DELETE FROM unreadable WHERE seq NOT IN
             (SELECT seq FROM unreadable ORDER BY seq DESC LIMIT ?1)",
            params![MAX_UNREADABLE],
        )?;
        tx.commit()?;
        if let Some(b) = bytes {
            self.count -= 1;
            self.bytes -= b as u64;
            self.drops.unreadable += 1;
        }
        Ok(())
    }

    /// Deletes acknowledged events.
    pub fn ack(&mut self, seqs: &[u64]) -> Result<(), QueueError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        let mut removed = 0u64;
        let mut freed = 0u64;
        {
            let mut size = tx.prepare_cached("SELECT bytes FROM queue WHERE seq = ?1")?;
            let mut delete = tx.prepare_cached("DELETE FROM queue WHERE seq = ?1")?;
            for &seq in seqs {
                if let Some(b) = size
                    .query_row(params![seq as i64], |r| r.get::<_, i64>(0))
                    .optional()?
                {
                    delete.execute(params![seq as i64])?;
                    removed += 1;
                    freed += b as u64;
                }
            }
        }
        tx.commit()?;
        self.count -= removed;
        self.bytes -= freed;
        Ok(())
    }

    /// Deletes events that can never be delivered, counting them as dropped.
    pub fn reject(&mut self, seqs: &[u64]) -> Result<(), QueueError> {
        for &seq in seqs {
            self.drop_where("seq = ?1", seq as i64, Cause::Rejected)?;
        }
        Ok(())
    }

    /// Drop counts by topic not yet reported.
    pub fn dropped(&self) -> Result<Vec<(String, u64)>, QueueError> {
        let mut stmt = self
            .conn
            .prepare("SELECT topic, count FROM dropped ORDER BY topic")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets drop counts once reported (subtracting what was reported, so drops counted in the
    /// meantime are kept).
    pub fn clear_dropped(&mut self, reported: &[(String, u64)]) -> Result<(), QueueError> {
        let tx = self.conn.transaction()?;
        for (topic, n) in reported {
            tx.execute(
                "UPDATE dropped SET count = count - ?2 WHERE topic = ?1",
                params![topic, *n as i64],
            )?;
        }
        tx.execute("DELETE FROM dropped WHERE count <= 0", [])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wamp::dict;

    fn ev(topic: &str, kind: Kind, n: i64, at_ms: u64) -> NewEvent {
        NewEvent {
            topic: topic.into(),
            kind,
            payload: Payload::new(vec![Value::Int(n)], dict([("x", Value::from("y"))])),
            at_ms,
        }
    }

    fn open(dir: &tempfile::TempDir, max_bytes: u64) -> UplinkQueue {
        UplinkQueue::open(
            &dir.path().join("q.db"),
            QueueLimits {
                max_bytes,
                max_age: Duration::from_secs(3600),
                max_file_bytes: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn push_peek_ack_in_order_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 1 << 20);
        let seqs = q
            .push(&[
                ev("a", Kind::Telemetry, 1, 0),
                ev("b", Kind::Lifecycle, 2, 0),
                ev("a", Kind::Telemetry, 3, 0),
            ])
            .unwrap();
        assert_eq!(seqs, vec![1, 2, 3]);
        let got = q.peek(0, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got[1].kind, Kind::Lifecycle);
        assert_eq!(got[2].payload.arg(0), Some(&Value::Int(3)));
        q.ack(&[1]).unwrap();
        drop(q);
        let mut q = open(&dir, 1 << 20);
        assert_eq!(q.len(), 2);
        assert_eq!(q.peek(0, 10).unwrap()[0].seq, 2);
        // Sequence numbers keep counting after a restart, even with the queue drained.
        q.ack(&[2, 3]).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.push(&[ev("a", Kind::Telemetry, 4, 0)]).unwrap(), vec![4]);
    }

    #[test]
    fn the_oldest_event_is_the_head_of_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 1 << 20);
        assert_eq!(q.oldest_at_ms(), None);
        let seqs = q
            .push(&[
                ev("a", Kind::Telemetry, 1, 100),
                ev("a", Kind::Telemetry, 2, 200),
            ])
            .unwrap();
        assert_eq!(q.oldest_at_ms(), Some(100));
        q.ack(&seqs[..1]).unwrap();
        assert_eq!(q.oldest_at_ms(), Some(200));
        q.ack(&seqs[1..]).unwrap();
        assert_eq!(q.oldest_at_ms(), None);
    }

    #[test]
    fn over_the_byte_bound_oldest_telemetry_goes_first_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, 1 << 20);
        let one = encode(&ev("t", Kind::Telemetry, 0, 0).payload).len() as u64 + 1;
        drop(q);
        // Room for 5 events.
        let mut q = open(&dir, one * 5);
        q.push(&[ev("l", Kind::Lifecycle, 0, 0)]).unwrap();
        for i in 1..=8 {
            q.push(&[ev("t", Kind::Telemetry, i, 0)]).unwrap();
        }
        let kept: Vec<i64> = q
            .peek(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.payload.arg(0).unwrap().as_i64().unwrap())
            .collect();
        assert_eq!(
            kept,
            vec![0, 5, 6, 7, 8],
            "lifecycle kept, oldest telemetry dropped"
        );
        assert_eq!(q.dropped().unwrap(), vec![("t".to_owned(), 4)]);
        assert_eq!(
            q.drops(),
            Drops {
                bound: 4,
                ..Drops::default()
            }
        );
        q.clear_dropped(&[("t".to_owned(), 4)]).unwrap();
        assert!(q.dropped().unwrap().is_empty());
        assert_eq!(q.drops().bound, 4, "the ledger outlives the report");
    }

    #[test]
    fn an_unreadable_row_is_moved_aside_counted_and_does_not_block_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 1 << 20);
        q.push(&[
            ev("a", Kind::Telemetry, 1, 0),
            ev("b", Kind::Telemetry, 2, 0),
            ev("a", Kind::Telemetry, 3, 0),
        ])
        .unwrap();
        // A row no reader understands: nested deeper than the value decoder accepts.
        let deep: Vec<u8> = std::iter::repeat_n(0x91u8, 10_000).chain([0xc0]).collect();
        q.conn
            .execute("UPDATE queue SET payload = ?1 WHERE seq = 2", params![deep])
            .unwrap();
        let before = q.bytes();
        let got = q.peek(0, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(q.len(), 2);
        assert!(q.bytes() < before);
        assert_eq!(q.drops().unreadable, 1);
        assert_eq!(q.dropped().unwrap(), vec![("b".to_owned(), 1)]);
        let kept: (i64, String) = q
            .conn
            .query_row("SELECT seq, reason FROM unreadable", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept.0, 2);
        assert!(!kept.1.is_empty());
        // The next read goes on from there.
        assert_eq!(q.peek(0, 10).unwrap().len(), 2);
    }

    #[test]
    fn rejected_events_are_counted_by_cause() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 1 << 20);
        q.push(&[
            ev("a", Kind::Telemetry, 1, 0),
            ev("a", Kind::Telemetry, 2, 0),
        ])
        .unwrap();
        q.reject(&[1]).unwrap();
        assert_eq!(q.drops().rejected, 1);
        assert_eq!(q.drops().total(), 1);
        assert_eq!(q.len(), 1);
    }

    /// A full disk (here a 2 MiB budget) sheds the oldest telemetry, counted, and keeps the
    /// newest events and every lifecycle event; nothing is refused.
    #[test]
    fn a_full_disk_sheds_the_oldest_telemetry_and_keeps_taking_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = UplinkQueue::open(
            &dir.path().join("q.db"),
            QueueLimits {
                max_bytes: 1 << 30,
                max_age: Duration::from_secs(3600),
                max_file_bytes: Some(2 * 1024 * 1024),
            },
        )
        .unwrap();
        q.push(&[ev("life", Kind::Lifecycle, -1, 1)]).unwrap();
        let big = "x".repeat(2000);
        let padded = |n: i64| {
            let mut e = ev("t", Kind::Telemetry, n, 2);
            e.payload = Payload::new(
                vec![Value::Int(n)],
                dict([("pad", Value::from(big.as_str()))]),
            );
            e
        };
        // One at a time, then in batches as large as the ingest's, each near the budget alone.
        let mut last = 0;
        for n in 0..2000 {
            last = *q.push(&[padded(n)]).unwrap().last().unwrap();
        }
        for batch in 0..2 {
            let events: Vec<NewEvent> =
                (0..1000).map(|i| padded(2000 + batch * 1000 + i)).collect();
            last = *q.push(&events).unwrap().last().unwrap();
        }
        let drops = q.drops();
        assert!(drops.disk_full > 0, "{drops:?}");
        assert_eq!(drops.total(), drops.disk_full);
        assert_eq!(
            q.len() + drops.disk_full,
            4001,
            "every event queued or counted"
        );
        let rows = q.peek(0, 10_000).unwrap();
        assert_eq!(rows[0].topic, "life", "lifecycle is kept");
        assert_eq!(rows.last().unwrap().seq, last, "the newest is kept");
    }

    #[test]
    fn age_bound_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = UplinkQueue::open(
            &dir.path().join("q.db"),
            QueueLimits {
                max_bytes: 1 << 20,
                max_age: Duration::from_secs(10),
                max_file_bytes: None,
            },
        )
        .unwrap();
        q.push(&[
            ev("old", Kind::Lifecycle, 1, 1_000),
            ev("new", Kind::Telemetry, 2, 15_000),
        ])
        .unwrap();
        assert_eq!(q.expire(20_000).unwrap(), 1);
        assert_eq!(q.len(), 1);
        assert_eq!(q.dropped().unwrap(), vec![("old".to_owned(), 1)]);
        assert_eq!(q.drops().age, 1);
    }

    #[test]
    fn oversized_events_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = open(&dir, 1 << 30);
        let big = NewEvent {
            topic: "big".into(),
            kind: Kind::Telemetry,
            payload: Payload::args(vec![Value::from("x".repeat(MAX_EVENT_BYTES + 1))]),
            at_ms: 0,
        };
        assert!(q.push(&[big]).unwrap().is_empty());
        assert_eq!(q.dropped().unwrap(), vec![("big".to_owned(), 1)]);
        assert_eq!(q.drops().oversize, 1);
    }
}
