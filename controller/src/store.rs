//! The controller's durable state behind one trait, [`Store`], so that a PostgreSQL backend can
//! follow the embedded SQLite one ([`SqliteStore`]).
//!
//! What is kept: every version served (content, digest, origin, operator, time, and the source it
//! was built from, so a rollback can re-resolve it against later inventories), the last known
//! state of every gateway, decision records (pre-digested for the report, with the raw JSON),
//! and a few key/value facts (the hashes of the watched files at the last version built from
//! them). Versions only ever grow, across restarts: the next version is always one more than the
//! largest stored, inside the transaction that stores it.
//!
//! The trait is synchronous: SQLite calls are short, and the async side calls them through
//! `spawn_blocking` (see `server`), so no runtime worker ever waits on the disk.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

/// Errors of the store: the backend's message, for logs and operators.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError(e.to_string())
    }
}

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The watched policy or inventory file changed.
    File,
    /// `bulkheadctl push`.
    Push,
    /// `bulkheadctl rollback`.
    Rollback,
}

impl Origin {
    /// `file`, `push` or `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Push => "push",
            Origin::Rollback => "rollback",
        }
    }

    fn parse(text: &str) -> Origin {
        match text {
            "push" => Origin::Push,
            "rollback" => Origin::Rollback,
            _ => Origin::File,
        }
    }
}

/// A version to store; the store assigns its number.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// When it was made, ms since the epoch.
    pub time_ms: u64,
    /// Where it came from.
    pub origin: Origin,
    /// The operator (push, rollback) or `controller` (watched files).
    pub operator: String,
    /// Digest of `content`.
    pub digest: String,
    /// The encoded wire `Policy`, as served.
    pub content: Vec<u8>,
    /// The source it was built from (JSON, see `server::Source`).
    pub source: Vec<u8>,
    /// For a rollback, the version whose content is served again; else 0.
    pub rollback_of: u64,
}

/// A stored version.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// Its number.
    pub version: u64,
    /// Everything else.
    pub data: NewVersion,
}

/// The last known state of one gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayRow {
    /// Gateway id (from its certificate).
    pub id: String,
    /// Peer address of its last stream.
    pub address: String,
    /// Its build, from its Hello.
    pub build_version: String,
    /// The version it enforces.
    pub enforced_version: u64,
    /// acked | nacked | pending | disconnected.
    pub state: String,
    /// Last message, ms since the epoch.
    pub last_seen_ms: u64,
    /// Errors of its last NACK.
    pub errors: Vec<String>,
}

/// One decision record, digested for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordRow {
    /// The record's time, ms since the epoch.
    pub time_ms: u64,
    /// First source group, or empty.
    pub src_group: String,
    /// Source address when in no group, else empty.
    pub src_ip: String,
    /// First destination group, or empty.
    pub dst_group: String,
    /// Destination name or address when in no group, else empty.
    pub dst_name: String,
    /// A decision (flow start or refusal), as opposed to a flow end.
    pub is_decision: bool,
    /// `allowed`, `denied` or `detected`.
    pub disposition: String,
    /// Bytes from the flow end record.
    pub bytes_in: u64,
    /// Bytes from the flow end record.
    pub bytes_out: u64,
    /// The record as received.
    pub json: String,
}

/// One row of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportRow {
    /// See [`RecordRow`].
    pub src_group: String,
    /// See [`RecordRow`].
    pub src_ip: String,
    /// See [`RecordRow`].
    pub dst_group: String,
    /// See [`RecordRow`].
    pub dst_name: String,
    /// Decisions.
    pub flows: u64,
    /// Bytes sent by the source.
    pub bytes_out: u64,
    /// Bytes received by the source.
    pub bytes_in: u64,
    /// Decisions allowed.
    pub allowed: u64,
    /// Decisions denied.
    pub denied: u64,
    /// Decisions detected (log-only or watch).
    pub detected: u64,
}

/// Most rows a report returns (distinct source/destination pairs).
pub const MAX_REPORT_ROWS: usize = 100_000;

/// The controller's durable state.
pub trait Store: Send + Sync + 'static {
    /// Stores a version as the next number and returns that number.
    fn append_version(&self, version: &NewVersion) -> Result<u64, StoreError>;
    /// One version.
    fn version(&self, version: u64) -> Result<Option<StoredVersion>, StoreError>;
    /// The newest version.
    fn latest(&self) -> Result<Option<StoredVersion>, StoreError>;
    /// Up to `limit` versions, newest first, without content or source.
    fn history(&self, limit: usize) -> Result<Vec<StoredVersion>, StoreError>;
    /// Inserts or replaces a gateway's state.
    fn put_gateway(&self, gateway: &GatewayRow) -> Result<(), StoreError>;
    /// Every gateway, by id.
    fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError>;
    /// Stores decision records received from `gateway`.
    fn add_records(
        &self,
        gateway: &str,
        received_ms: u64,
        rows: &[RecordRow],
    ) -> Result<(), StoreError>;
    /// Deletes records received before `before_ms` and the oldest beyond `max_rows`.
    fn prune_records(&self, before_ms: u64, max_rows: u64) -> Result<u64, StoreError>;
    /// Aggregates the records whose time is in `[since_ms, until_ms]`.
    fn report(&self, since_ms: u64, until_ms: u64) -> Result<Vec<ReportRow>, StoreError>;
    /// Up to `limit` records whose time is in `[since_ms, until_ms]` and whose row id is above
    /// `after_id`, in row order: `(id, time_ms, json)`. Callers page through with the last id,
    /// so a scan of millions of records holds neither the whole result nor the database lock.
    fn records_page(
        &self,
        since_ms: u64,
        until_ms: u64,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, String)>, StoreError>;
    /// A stored fact.
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Stores a fact.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
}

/// The embedded store: one SQLite database file in WAL mode. A new version is committed with
/// `synchronous = FULL`, so a version the controller has served survives a power cut; everything
/// else (gateway state, decision records) with `synchronous = NORMAL`, which survives a crash of
/// the controller but may lose the last commits on a power cut. Gateway state is rewritten on
/// every ACK of every gateway, so syncing each of those writes to disk made a fleet's ACKs queue
/// behind the disk (1,000 gateways: 2,000 synced writes per change); the next sync of the WAL,
/// at the next version or checkpoint, persists them anyway.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    version INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    operator TEXT NOT NULL,
    digest TEXT NOT NULL,
    content BLOB NOT NULL,
    source BLOB NOT NULL,
    rollback_of INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    build_version TEXT NOT NULL,
    enforced_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    errors TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    src_group TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    dst_group TEXT NOT NULL,
    dst_name TEXT NOT NULL,
    is_decision INTEGER NOT NULL,
    disposition TEXT NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_time ON records(time_ms);
CREATE INDEX IF NOT EXISTS records_received ON records(received_ms);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// SQLite integers are signed; every count and time here fits, and saturating keeps a hostile
/// value (bytes = u64::MAX) from wrapping negative.
fn sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Byte sums use SQLite's floating `TOTAL`, which cannot overflow (a hostile gateway claiming
/// huge byte counts must not make the report fail); `as` saturates, and the precision lost above
/// 2^53 bytes does not matter for a report.
fn untotal(value: f64) -> u64 {
    value as u64
}

impl SqliteStore {
    /// Opens (or creates) `DIR/controller.db`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("{}: cannot create: {e}", dir.display())))?;
        let conn = Connection::open(dir.join("controller.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (its own transactions
        // guarantee that), so a poisoned lock is safe to keep using.
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(StoreError::from)
    }
}

fn version_from_row(row: &rusqlite::Row<'_>) -> Result<StoredVersion, rusqlite::Error> {
    Ok(StoredVersion {
        version: unsql(row.get(0)?),
        data: NewVersion {
            time_ms: unsql(row.get(1)?),
            origin: Origin::parse(&row.get::<_, String>(2)?),
            operator: row.get(3)?,
            digest: row.get(4)?,
            content: row.get(5)?,
            source: row.get(6)?,
            rollback_of: unsql(row.get(7)?),
        },
    })
}

/// Appends one version row in its own transaction: the next number after the highest stored.
fn append_version_row(conn: &mut Connection, v: &NewVersion) -> Result<u64, rusqlite::Error> {
    let tx = conn.transaction()?;
    let next: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM versions",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO versions (version, time_ms, origin, operator, digest, content, source, rollback_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            next,
            sql(v.time_ms),
            v.origin.as_str(),
            v.operator,
            v.digest,
            v.content,
            v.source,
            sql(v.rollback_of)
        ],
    )?;
    tx.commit()?;
    Ok(unsql(next))
}

const VERSION_COLUMNS: &str =
    "version, time_ms, origin, operator, digest, content, source, rollback_of";

impl Store for SqliteStore {
    fn append_version(&self, v: &NewVersion) -> Result<u64, StoreError> {
        self.with(|conn| {
            // Versions are what must never go back: this commit, and with it every commit before
            // it in the WAL, is synced before the version is served.
            conn.pragma_update(None, "synchronous", "FULL")?;
            let appended = append_version_row(conn, v);
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            appended
        })
    }

    fn version(&self, version: u64) -> Result<Option<StoredVersion>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE version = ?1"),
                [sql(version)],
                version_from_row,
            )
            .optional()
        })
    }

    fn latest(&self) -> Result<Option<StoredVersion>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {VERSION_COLUMNS} FROM versions ORDER BY version DESC LIMIT 1"),
                [],
                version_from_row,
            )
            .optional()
        })
    }

    fn history(&self, limit: usize) -> Result<Vec<StoredVersion>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT version, time_ms, origin, operator, digest, x'', x'', rollback_of
                 FROM versions ORDER BY version DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([sql(limit as u64)], version_from_row)?;
            rows.collect()
        })
    }

    fn put_gateway(&self, g: &GatewayRow) -> Result<(), StoreError> {
        let errors = serde_json::to_string(&g.errors).unwrap_or_else(|_| "[]".to_string());
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO gateways
                 (id, address, build_version, enforced_version, state, last_seen_ms, errors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    g.id,
                    g.address,
                    g.build_version,
                    sql(g.enforced_version),
                    g.state,
                    sql(g.last_seen_ms),
                    errors
                ],
            )
            .map(drop)
        })
    }

    fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, address, build_version, enforced_version, state, last_seen_ms, errors
                 FROM gateways ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                let errors: String = r.get(6)?;
                Ok(GatewayRow {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    build_version: r.get(2)?,
                    enforced_version: unsql(r.get(3)?),
                    state: r.get(4)?,
                    last_seen_ms: unsql(r.get(5)?),
                    errors: serde_json::from_str(&errors).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
    }

    fn add_records(
        &self,
        gateway: &str,
        received_ms: u64,
        rows: &[RecordRow],
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO records (gateway_id, received_ms, time_ms, src_group, src_ip,
                     dst_group, dst_name, is_decision, disposition, bytes_in, bytes_out, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for r in rows {
                    stmt.execute(params![
                        gateway,
                        sql(received_ms),
                        sql(r.time_ms),
                        r.src_group,
                        r.src_ip,
                        r.dst_group,
                        r.dst_name,
                        r.is_decision,
                        r.disposition,
                        sql(r.bytes_in),
                        sql(r.bytes_out),
                        r.json
                    ])?;
                }
            }
            tx.commit()
        })
    }

    fn prune_records(&self, before_ms: u64, max_rows: u64) -> Result<u64, StoreError> {
        self.with(|conn| {
            let old = conn.execute(
                "DELETE FROM records WHERE received_ms < ?1",
                [sql(before_ms)],
            )?;
            let excess = conn.execute(
                "DELETE FROM records WHERE id <= (SELECT MAX(id) FROM records) - ?1",
                [sql(max_rows)],
            )?;
            Ok((old + excess) as u64)
        })
    }

    fn report(&self, since_ms: u64, until_ms: u64) -> Result<Vec<ReportRow>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT src_group, src_ip, dst_group, dst_name,
                        SUM(is_decision), TOTAL(bytes_out), TOTAL(bytes_in),
                        SUM(is_decision AND disposition = 'allowed'),
                        SUM(is_decision AND disposition = 'denied'),
                        SUM(is_decision AND disposition = 'detected')
                 FROM records WHERE time_ms >= ?1 AND time_ms <= ?2
                 GROUP BY src_group, src_ip, dst_group, dst_name
                 ORDER BY SUM(is_decision) DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![sql(since_ms), sql(until_ms), sql(MAX_REPORT_ROWS as u64)],
                |r| {
                    Ok(ReportRow {
                        src_group: r.get(0)?,
                        src_ip: r.get(1)?,
                        dst_group: r.get(2)?,
                        dst_name: r.get(3)?,
                        flows: unsql(r.get(4)?),
                        bytes_out: untotal(r.get(5)?),
                        bytes_in: untotal(r.get(6)?),
                        allowed: unsql(r.get(7)?),
                        denied: unsql(r.get(8)?),
                        detected: unsql(r.get(9)?),
                    })
                },
            )?;
            rows.collect()
        })
    }

    fn records_page(
        &self,
        since_ms: u64,
        until_ms: u64,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, String)>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT id, time_ms, json FROM records
                 WHERE id > ?1 AND time_ms >= ?2 AND time_ms <= ?3
                 ORDER BY id LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    sql(after_id),
                    sql(since_ms),
                    sql(until_ms),
                    sql(limit as u64)
                ],
                |r| Ok((unsql(r.get(0)?), unsql(r.get(1)?), r.get(2)?)),
            )?;
            rows.collect()
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(content: &[u8]) -> NewVersion {
        NewVersion {
            time_ms: 1,
            origin: Origin::Push,
            operator: "alice".into(),
            digest: "d".into(),
            content: content.to_vec(),
            source: b"{}".to_vec(),
            rollback_of: 0,
        }
    }

    #[test]
    fn versions_keep_growing_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.append_version(&version(b"a")).unwrap(), 1);
        assert_eq!(store.append_version(&version(b"b")).unwrap(), 2);
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.append_version(&version(b"c")).unwrap(), 3);
        assert_eq!(store.version(1).unwrap().unwrap().data.content, b"a");
        assert_eq!(store.latest().unwrap().unwrap().version, 3);
        let history: Vec<u64> = store
            .history(10)
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(history, [3, 2, 1]);
    }

    #[test]
    fn records_are_aggregated_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let decision = RecordRow {
            time_ms: 100,
            src_group: "prod".into(),
            dst_group: "openai".into(),
            is_decision: true,
            disposition: "allowed".into(),
            ..Default::default()
        };
        let end = RecordRow {
            is_decision: false,
            bytes_in: 10,
            bytes_out: u64::MAX,
            ..decision.clone()
        };
        store.add_records("g", 5, &[decision.clone(), end]).unwrap();
        store.add_records("g", 50, &[decision]).unwrap();
        let report = store.report(0, 1000).unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].flows, 2);
        assert_eq!(report[0].allowed, 2);
        assert_eq!(report[0].bytes_in, 10);
        assert_eq!(store.prune_records(10, 1000).unwrap(), 2);
        assert_eq!(store.report(0, 1000).unwrap()[0].flows, 1);
        assert!(store.report(101, 1000).unwrap().is_empty());
    }
}
