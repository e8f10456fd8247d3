//! The SQLite file behind the spool: one row per batch, FIFO by row id.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::config::{Durability, SpoolConfig, WhenFull};

/// `PRAGMA user_version` of the schema this build writes.
const SCHEMA_VERSION: i64 = 1;
/// Bytes a row costs beyond its blob and names (SQLite record header, index entry), for the
/// size bound. An estimate: the bound is on logical bytes, checked without touching the disk.
const ROW_OVERHEAD: u64 = 48;
/// Incremental vacuum after this many deleted rows.
const VACUUM_EVERY: u64 = 256;
/// Acknowledged rows deleted in one transaction (one commit instead of one per row). Until
/// then they are never handed out again; a crash before the delete replays them once more (a
/// duplicate upstream, never a loss).
const ACK_BATCH: usize = 64;

const SCHEMA: &str = "
CREATE TABLE batches (
    id        INTEGER PRIMARY KEY,
    source    TEXT    NOT NULL,  -- JSON string literals, as rendered into payloads
    device    TEXT    NOT NULL,
    grp       TEXT    NOT NULL,
    topic     TEXT    NOT NULL,
    epoch     INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    records   INTEGER NOT NULL,
    oldest_ts INTEGER NOT NULL,  -- ns since the Unix epoch, of the batch's oldest record
    body      BLOB    NOT NULL   -- codec.rs
);";

/// The columns of a stored row, in the order [`stored_row`] reads them.
const SELECT_ROW: &str =
    "SELECT id, source, device, grp, topic, epoch, first_seq, last_seq, records, oldest_ts, body
     FROM batches";

fn stored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        id: r.get(0)?,
        row: NewRow {
            source: r.get::<_, String>(1)?.into(),
            device: r.get::<_, String>(2)?.into(),
            group: r.get::<_, String>(3)?.into(),
            topic: r.get::<_, String>(4)?.into(),
            epoch: r.get::<_, i64>(5)? as u64,
            seqs: (r.get::<_, i64>(6)? as u64, r.get::<_, i64>(7)? as u64),
            records: r.get::<_, i64>(8)? as u64,
            oldest_ts: r.get::<_, i64>(9)? as u64,
            body: r.get(10)?,
        },
    })
}

/// A batch to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRow {
    /// Source name (JSON string literal).
    pub source: Box<str>,
    /// Device name (JSON string literal).
    pub device: Box<str>,
    /// Group name (JSON string literal).
    pub group: Box<str>,
    /// Topic the batch is published to.
    pub topic: Box<str>,
    /// Epoch of its records.
    pub epoch: u64,
    /// First and last seq.
    pub seqs: (u64, u64),
    /// Number of records.
    pub records: u64,
    /// Timestamp of its oldest record (ns).
    pub oldest_ts: u64,
    /// Encoded records (codec.rs).
    pub body: Vec<u8>,
}

impl NewRow {
    fn cost(&self) -> u64 {
        ROW_OVERHEAD
            + (self.body.len()
                + self.source.len()
                + self.device.len()
                + self.group.len()
                + self.topic.len()) as u64
    }
}

/// A stored batch handed out for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// Row id (FIFO order).
    pub id: i64,
    /// The batch as stored.
    pub row: NewRow,
}

/// Batches the spool gave up, for the caller to log and count as gaps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dropped {
    /// Rows dropped.
    pub rows: u64,
    /// Records in them.
    pub records: u64,
    /// `(source, epoch, first seq, last seq)` of each dropped batch.
    pub ranges: Vec<(Box<str>, u64, u64, u64)>,
}

/// What an append did besides storing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendReport {
    /// Rows stored.
    pub stored: u64,
    /// Older rows dropped to make room (`drop-oldest`), or new rows refused (`drop-newest`).
    pub dropped: Dropped,
}

/// What opening the spool found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenReport {
    /// Where a corrupt or foreign spool file was moved, and why.
    pub moved_aside: Option<(PathBuf, String)>,
}

/// Depth and size of the spool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Rows (batches) stored.
    pub rows: u64,
    /// Records in them.
    pub records: u64,
    /// Logical bytes counted against `max_bytes`.
    pub bytes: u64,
    /// Bytes of the database file and its WAL on disk.
    pub file_bytes: u64,
    /// Timestamp (ns) of the oldest spooled record, if any.
    pub oldest_ts: Option<u64>,
}

/// A spool operation failed. Appends that fail lose the batches they carried (the caller
/// counts them); nothing already stored is affected.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {what}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

impl SpoolError {
    /// Whether the disk (or the file's size limit) is full.
    pub fn is_full(&self) -> bool {
        self.source.sqlite_error_code() == Some(ErrorCode::DiskFull)
    }

    fn is_corrupt(&self) -> bool {
        matches!(
            self.source.sqlite_error_code(),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        )
    }
}

/// The spool file.
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    path: PathBuf,
    max_bytes: u64,
    when_full: WhenFull,
    durability: Durability,
    rows: u64,
    records: u64,
    bytes: u64,
    /// Rows handed out for replay and not yet acknowledged.
    handed_out: BTreeSet<i64>,
    /// Replay cursor. Invariant: every row with `id <= cursor` is handed out, given back
    /// (`returned`), or gone; rows past it were not handed out since the last reset. So
    /// `take_oldest` reads only the rows it hands out, however many are in flight.
    cursor: i64,
    /// Rows at or below the cursor that are available again (given back, or appended under a
    /// reused id).
    returned: BTreeSet<i64>,
    /// Rows acknowledged and not yet deleted: deleted together, in one transaction, once
    /// [`ACK_BATCH`] have gathered or nothing else is handed out.
    acked: Vec<i64>,
    deleted_since_vacuum: u64,
    corruptions: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`. A file that is not a healthy spool of this
    /// schema is moved aside to `<path>.corrupt-<unix seconds>` (with its `-wal` and `-shm`)
    /// and a fresh one is created: reported, never fatal.
    pub fn open(path: &Path, cfg: &SpoolConfig) -> Result<(Self, OpenReport), SpoolError> {
        let mut report = OpenReport::default();
        let conn = match Self::open_checked(path, cfg.durability) {
            Ok(conn) => conn,
            Err(why) => {
                let aside = move_aside(path).map_err(|e| SpoolError {
                    path: path.to_owned(),
                    what: "moving a corrupt spool aside",
                    source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
                })?;
                tracing::error!(path = %path.display(), moved_to = %aside.display(), reason = %why, "spool file is unusable; moved aside, starting a fresh spool");
                report.moved_aside = Some((aside, why));
                Self::open_checked(path, cfg.durability).map_err(|why| SpoolError {
                    path: path.to_owned(),
                    what: "creating a fresh spool",
                    source: rusqlite::Error::InvalidParameterName(why),
                })?
            }
        };
        let mut spool = Self {
            conn,
            path: path.to_owned(),
            max_bytes: cfg.max_bytes,
            when_full: cfg.when_full,
            durability: cfg.durability,
            rows: 0,
            records: 0,
            bytes: 0,
            handed_out: BTreeSet::new(),
            cursor: 0,
            returned: BTreeSet::new(),
            acked: Vec::new(),
            deleted_since_vacuum: 0,
            corruptions: u64::from(report.moved_aside.is_some()),
        };
        spool.recount()?;
        Ok((spool, report))
    }

    fn open_checked(path: &Path, durability: Durability) -> Result<Connection, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| e.to_string())?;
        let setup = || -> rusqlite::Result<Result<(), String>> {
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            let tables: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )?;
            if tables == 0 {
                // auto_vacuum only takes effect before the first table exists.
                conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")?;
                conn.execute_batch(SCHEMA)?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                return Ok(Err(format!(
                    "schema version {version}, this build reads {SCHEMA_VERSION}"
                )));
            }
            let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if check != "ok" {
                return Ok(Err(format!("integrity check: {check}")));
            }
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", durability.pragma())?;
            conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
            Ok(Ok(()))
        };
        match setup() {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(e.to_string()),
        }
    }

    fn err(&self, what: &'static str) -> impl Fn(rusqlite::Error) -> SpoolError + '_ {
        move |source| SpoolError {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn recount(&mut self) -> Result<(), SpoolError> {
        let (rows, records, bytes): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), coalesce(sum(records), 0),
                        coalesce(sum(length(body) + length(source) + length(device) + length(grp) + length(topic)), 0)
                 FROM batches",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(self.err("counting rows"))?;
        self.rows = rows as u64;
        self.records = records as u64;
        self.bytes = bytes as u64 + self.rows * ROW_OVERHEAD;
        Ok(())
    }

    /// Stores `rows` in one transaction, first making room by the configured policy.
    pub fn append(&mut self, rows: &[NewRow]) -> Result<AppendReport, SpoolError> {
        let result = self.append_inner(rows);
        if let Err(e) = &result
            && e.is_corrupt()
        {
            self.recover_from_corruption();
        }
        result
    }

    fn append_inner(&mut self, rows: &[NewRow]) -> Result<AppendReport, SpoolError> {
        // Deleted rows free their bytes before the bound is checked.
        if let Err(e) = self.flush_acks() {
            tracing::error!(error = %e, "cannot delete acknowledged rows; retried later");
        }
        let mut report = AppendReport::default();
        let mut incoming: u64 = rows.iter().map(NewRow::cost).sum();
        let mut accept = rows;
        if self.bytes + incoming > self.max_bytes {
            match self.when_full {
                WhenFull::DropOldest => {
                    let need = self.bytes + incoming - self.max_bytes;
                    self.drop_oldest(need, &mut report.dropped)?;
                    // Still too big (a single batch larger than the bound): refuse what cannot fit.
                    while self.bytes + incoming > self.max_bytes && !accept.is_empty() {
                        let (last, rest) = accept.split_last().expect("non-empty");
                        refuse(last, &mut report.dropped);
                        incoming -= last.cost();
                        accept = rest;
                    }
                }
                WhenFull::DropNewest => {
                    while self.bytes + incoming > self.max_bytes && !accept.is_empty() {
                        let (last, rest) = accept.split_last().expect("non-empty");
                        refuse(last, &mut report.dropped);
                        incoming -= last.cost();
                        accept = rest;
                    }
                }
            }
        }
        if accept.is_empty() {
            return Ok(report);
        }
        let mut reused = Vec::new();
        let tx = self.conn.transaction().map_err(|source| SpoolError {
            path: self.path.clone(),
            what: "starting a transaction",
            source,
        })?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO batches (source, device, grp, topic, epoch, first_seq, last_seq, records, oldest_ts, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(|source| SpoolError {
                    path: self.path.clone(),
                    what: "preparing insert",
                    source,
                })?;
            for r in accept {
                insert
                    .execute(params![
                        &*r.source,
                        &*r.device,
                        &*r.group,
                        &*r.topic,
                        r.epoch as i64,
                        r.seqs.0 as i64,
                        r.seqs.1 as i64,
                        r.records as i64,
                        r.oldest_ts as i64,
                        &r.body
                    ])
                    .map_err(|source| SpoolError {
                        path: self.path.clone(),
                        what: "inserting a batch",
                        source,
                    })?;
                // Without AUTOINCREMENT a new row takes the highest id + 1, which can be at or
                // below the cursor once the newest rows were deleted: keep it reachable.
                let id = tx.last_insert_rowid();
                if id <= self.cursor {
                    reused.push(id);
                }
            }
        }
        tx.commit().map_err(|source| SpoolError {
            path: self.path.clone(),
            what: "committing batches",
            source,
        })?;
        self.returned.extend(reused);
        self.rows += accept.len() as u64;
        self.records += accept.iter().map(|r| r.records).sum::<u64>();
        self.bytes += incoming;
        report.stored = accept.len() as u64;
        Ok(report)
    }

    /// Deletes the oldest rows not handed out until `need` bytes are free.
    fn drop_oldest(&mut self, need: u64, dropped: &mut Dropped) -> Result<(), SpoolError> {
        let mut freed = 0;
        let mut victims = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT id, source, epoch, first_seq, last_seq, records,
                            length(body) + length(source) + length(device) + length(grp) + length(topic)
                     FROM batches ORDER BY id",
                )
                .map_err(self.err("finding the oldest rows"))?;
            let mut rows = stmt
                .query([])
                .map_err(self.err("finding the oldest rows"))?;
            while freed < need {
                let Some(row) = rows.next().map_err(self.err("finding the oldest rows"))? else {
                    break;
                };
                let id: i64 = row.get(0).map_err(self.err("reading a row"))?;
                if self.handed_out.contains(&id) || self.acked.contains(&id) {
                    continue;
                }
                let source: String = row.get(1).map_err(self.err("reading a row"))?;
                let (epoch, first, last, records, len): (i64, i64, i64, i64, i64) = (
                    row.get(2).map_err(self.err("reading a row"))?,
                    row.get(3).map_err(self.err("reading a row"))?,
                    row.get(4).map_err(self.err("reading a row"))?,
                    row.get(5).map_err(self.err("reading a row"))?,
                    row.get(6).map_err(self.err("reading a row"))?,
                );
                freed += len as u64 + ROW_OVERHEAD;
                victims.push((id, len as u64 + ROW_OVERHEAD, records as u64));
                dropped.rows += 1;
                dropped.records += records as u64;
                dropped
                    .ranges
                    .push((source.into(), epoch as u64, first as u64, last as u64));
            }
        }
        for (id, cost, records) in victims {
            self.returned.remove(&id);
            self.delete(id, cost, records)?;
        }
        Ok(())
    }

    fn delete(&mut self, id: i64, cost: u64, records: u64) -> Result<(), SpoolError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM batches WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(self.err("deleting a row"))?;
        if n == 1 {
            self.rows -= 1;
            self.records -= records;
            self.bytes = self.bytes.saturating_sub(cost);
            self.deleted_since_vacuum += 1;
        }
        self.maybe_vacuum()
    }

    fn maybe_vacuum(&mut self) -> Result<(), SpoolError> {
        if self.deleted_since_vacuum >= VACUUM_EVERY || self.rows == 0 {
            // Returns freed pages to the filesystem (auto_vacuum = INCREMENTAL). The pragma frees
            // one page per step, so step it to the end.
            self.conn
                .prepare_cached("PRAGMA incremental_vacuum")
                .and_then(|mut s| {
                    let mut rows = s.query([])?;
                    while rows.next()?.is_some() {}
                    Ok(())
                })
                .map_err(self.err("vacuuming"))?;
            self.deleted_since_vacuum = 0;
        }
        Ok(())
    }

    /// Up to `n` of the oldest rows not handed out yet; they count as handed out until acked,
    /// given back, or reset. Reads only the rows it returns: given-back rows first (they are
    /// older than anything past the cursor), then rows past the cursor.
    pub fn take_oldest(&mut self, n: usize) -> Result<Vec<StoredRow>, SpoolError> {
        let mut out = Vec::with_capacity(n);
        let result = self.take_oldest_into(n, &mut out);
        if result.is_err() {
            // Whatever was read stays available (all of it is at or below the cursor now).
            self.returned.extend(out.iter().map(|r| r.id));
            return result.map(|()| Vec::new());
        }
        self.handed_out.extend(out.iter().map(|r| r.id));
        Ok(out)
    }

    fn take_oldest_into(&mut self, n: usize, out: &mut Vec<StoredRow>) -> Result<(), SpoolError> {
        let returned: Vec<i64> = self.returned.iter().take(n).copied().collect();
        if !returned.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("{SELECT_ROW} WHERE id = ?1"))
                .map_err(self.err("reading a given-back row"))?;
            for id in returned {
                // A given-back row may have been dropped by the size bound meanwhile.
                let row = stmt
                    .query_row([id], stored_row)
                    .optional()
                    .map_err(self.err("reading a given-back row"))?;
                self.returned.remove(&id);
                out.extend(row);
            }
        }
        if out.len() < n {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("{SELECT_ROW} WHERE id > ?1 ORDER BY id LIMIT ?2"))
                .map_err(self.err("reading the oldest rows"))?;
            let rows = stmt
                .query_map(params![self.cursor, (n - out.len()) as i64], stored_row)
                .map_err(self.err("reading the oldest rows"))?;
            for row in rows {
                let row = row.map_err(self.err("reading a row"))?;
                self.cursor = self.cursor.max(row.id);
                out.push(row);
            }
        }
        Ok(())
    }

    /// Deletes an acknowledged row.
    pub fn ack(&mut self, id: i64) -> Result<(), SpoolError> {
        self.handed_out.remove(&id);
        self.returned.remove(&id);
        self.acked.push(id);
        if self.acked.len() >= ACK_BATCH || self.handed_out.is_empty() {
            self.flush_acks()?;
        }
        Ok(())
    }

    /// Deletes the acknowledged rows not deleted yet, in one transaction. On failure they stay
    /// pending and the next flush tries again.
    pub fn flush_acks(&mut self) -> Result<(), SpoolError> {
        if self.acked.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.acked);
        let result = self.delete_acked(&ids);
        if result.is_err() {
            self.acked = ids;
        }
        result
    }

    fn delete_acked(&mut self, ids: &[i64]) -> Result<(), SpoolError> {
        let path = &self.path;
        let err = |what: &'static str| {
            move |source| SpoolError {
                path: path.clone(),
                what,
                source,
            }
        };
        let tx = self
            .conn
            .transaction()
            .map_err(err("starting a transaction"))?;
        let (mut rows, mut records, mut bytes) = (0u64, 0u64, 0u64);
        {
            let mut find = tx
                .prepare_cached(
                    "SELECT records, length(body) + length(source) + length(device) + length(grp) + length(topic)
                     FROM batches WHERE id = ?1",
                )
                .map_err(err("finding an acknowledged row"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM batches WHERE id = ?1")
                .map_err(err("deleting a row"))?;
            for &id in ids {
                let found: Option<(i64, i64)> = find
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(err("finding an acknowledged row"))?;
                if let Some((n, len)) = found {
                    delete.execute([id]).map_err(err("deleting a row"))?;
                    rows += 1;
                    records += n as u64;
                    bytes += len as u64 + ROW_OVERHEAD;
                }
            }
        }
        tx.commit().map_err(err("committing deletes"))?;
        self.rows -= rows;
        self.records -= records;
        self.bytes = self.bytes.saturating_sub(bytes);
        self.deleted_since_vacuum += rows;
        self.maybe_vacuum()
    }

    /// A handed-out row becomes available again.
    pub fn give_back(&mut self, id: i64) {
        if self.handed_out.remove(&id) {
            self.returned.insert(id);
        }
    }

    /// Every handed-out row becomes available again (after a disconnect).
    pub fn reset_handed_out(&mut self) {
        // Acknowledged rows must not be handed out again from the start.
        if let Err(e) = self.flush_acks() {
            tracing::error!(error = %e, "cannot delete acknowledged rows; they may be sent again");
            self.acked.clear();
        }
        self.handed_out.clear();
        self.returned.clear();
        self.cursor = 0;
    }

    /// Whether rows wait that are not handed out.
    pub fn has_waiting(&self) -> bool {
        self.rows > (self.handed_out.len() + self.acked.len()) as u64
    }

    /// Depth and size.
    pub fn stats(&self) -> SpoolStats {
        let oldest_ts = self
            .conn
            .query_row("SELECT min(oldest_ts) FROM batches", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .ok()
            .flatten()
            .map(|v| v as u64);
        let file = |suffix: &str| {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        };
        SpoolStats {
            rows: self.rows,
            records: self.records,
            bytes: self.bytes,
            file_bytes: file("") + file("-wal"),
            oldest_ts,
        }
    }

    /// Depth and size of the spool at `path`, read-only (for `edge-gateway spool stats`, which
    /// may run beside a live gateway and must never move or change the file).
    pub fn inspect(path: &Path) -> Result<SpoolStats, SpoolError> {
        use rusqlite::OpenFlags;
        let err = |what| {
            move |source| SpoolError {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err("opening read-only"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err("setting a busy timeout"))?;
        let (rows, records, bytes, oldest): (i64, i64, i64, Option<i64>) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(records), 0),
                        coalesce(sum(length(body) + length(source) + length(device) + length(grp) + length(topic)), 0),
                        min(oldest_ts)
                 FROM batches",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(err("reading the spool"))?;
        let file = |suffix: &str| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        };
        Ok(SpoolStats {
            rows: rows as u64,
            records: records as u64,
            bytes: bytes as u64 + rows as u64 * ROW_OVERHEAD,
            file_bytes: file("") + file("-wal"),
            oldest_ts: oldest.map(|v| v as u64),
        })
    }

    /// Rows and records stored (kept in memory: no query).
    pub fn depth(&self) -> (u64, u64) {
        (self.rows, self.records)
    }

    /// Times the spool file was found corrupt and replaced.
    pub fn corruptions(&self) -> u64 {
        self.corruptions
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite said the file is corrupt while running: move it aside, start fresh, keep going.
    fn recover_from_corruption(&mut self) {
        tracing::error!(path = %self.path.display(), "spool file became corrupt; moving it aside");
        let fresh = Connection::open_in_memory().expect("in-memory database");
        drop(std::mem::replace(&mut self.conn, fresh));
        let cfg = SpoolConfig {
            path: None,
            max_bytes: self.max_bytes,
            durability: self.durability,
            when_full: self.when_full,
        };
        match move_aside(&self.path)
            .map_err(|e| e.to_string())
            .and_then(|_| Self::open_checked(&self.path, cfg.durability))
        {
            Ok(conn) => {
                self.conn = conn;
                self.corruptions += 1;
                self.acked.clear();
                self.reset_handed_out();
                let _ = self.recount();
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot recreate the spool")
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.flush_acks() {
            tracing::warn!(error = %e, "acknowledged rows not deleted at close; they will be sent again");
        }
    }
}

fn refuse(row: &NewRow, dropped: &mut Dropped) {
    dropped.rows += 1;
    dropped.records += row.records;
    dropped
        .ranges
        .push((row.source.clone(), row.epoch, row.seqs.0, row.seqs.1));
}

/// Renames `path` (and its `-wal`, `-shm`) to `<path>.corrupt-<unix seconds>`.
fn move_aside(path: &Path) -> std::io::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let with = |p: &Path, s: &str| {
        let mut o = p.as_os_str().to_owned();
        o.push(s);
        PathBuf::from(o)
    };
    let aside = with(path, &format!(".corrupt-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        match std::fs::rename(with(path, suffix), with(&aside, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(aside)
}

#[cfg(test)]
impl Spool {
    /// Checkpoints the WAL into the database file (tests measure the file).
    pub(crate) fn conn_checkpoint(&self) {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
}
