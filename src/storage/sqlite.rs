//! The SQLite backend: one table of resources (JSON bodies plus indexed columns), WAL
//! mode, one writer thread with its connection and a few reader connections.
//!
//! Writes are group-committed (`writer.rs`): each job of a batch runs inside its own
//! savepoint of one transaction (a failing job is rolled back alone), and the batch is
//! committed once — one `fsync` for the whole batch — before any job hears its outcome.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::lockfile::own;
use super::migrations;
use super::writer::{self, Queue};
use super::{Busy, Change, ChangeSet, Due, Pending, ReadTx, Store, StoredPending, WriteJob, WriteTx, WriteWork};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType};

const COLUMNS: &str = "ty, path, creator, body";

const READERS: usize = 4;

/// SQLite store. Writes go through the writer thread; reads use their own connections
/// (WAL lets them run beside a write). An in-memory store has one connection, which reads
/// share with the writer thread.
pub struct SqliteStore {
    /// The writer's connection (locked by the writer thread for each batch).
    writer: Arc<Mutex<Connection>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// The writer thread's queue.
    jobs: Queue,
    /// An exclusive lock on `<database>.lock` while the file is open: this process alone
    /// writes the database (what `Lease::always` and the resource cache rely on).
    _owner: Option<std::fs::File>,
}

impl SqliteStore {
    /// Open (or create) the database file at `path`. A file this process cannot write (a
    /// read-only file or file system, say) is an error now, naming the path, rather than a
    /// 5000 answer to every write later.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| {
                Error::internal(format!("cannot create database directory {}: {error}", dir.display()))
            })?;
        }
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        let unusable = |error: rusqlite::Error| {
            Error::internal(format!("the database {} (database.path) cannot be written: {error}", path.display()))
        };
        let owner = own(path)?;
        let mut writer = Connection::open(path).map_err(unusable)?;
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA busy_timeout = 5000;"
            ))
            .map_err(unusable)?;
        migrate(&mut writer, &format!("the database {} (database.path)", path.display()))?;
        // A real write: SQLite opens a file it may not write read-only, without a word.
        writer
            .execute(
                "INSERT INTO meta (key, value) VALUES ('opened', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                [crate::resource::Timestamp::now().to_string()],
            )
            .map_err(unusable)?;
        let mut readers = Vec::with_capacity(READERS);
        // Readers keep 512 KiB of pages each (SQLite's default is 2 MiB): the hot reads are
        // answered from the resource cache, and a walk over a large subtree would otherwise
        // leave ~10 MiB resident across the readers (measured after a discovery of 70,000
        // instances: 50 MiB RSS with the default, 39 MiB with this).
        for _ in 0..READERS {
            let reader = Connection::open(path)?;
            reader.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON; PRAGMA cache_size = -512;")?;
            readers.push(Mutex::new(reader));
        }
        SqliteStore::start(writer, readers, Some(owner))
    }

    /// A database in memory, gone with the store.
    pub fn in_memory() -> Result<SqliteStore> {
        let mut writer = Connection::open_in_memory()?;
        migrate(&mut writer, "the in-memory database")?;
        SqliteStore::start(writer, Vec::new(), None)
    }

    fn start(writer: Connection, readers: Vec<Mutex<Connection>>, owner: Option<std::fs::File>) -> Result<SqliteStore> {
        let writer = Arc::new(Mutex::new(writer));
        let connection = writer.clone();
        let jobs = Queue::start(move |works| match connection.lock() {
            Ok(mut connection) => run_batch(&mut connection, works),
            Err(_) => Err(Error::internal("database lock poisoned")),
        })?;
        Ok(SqliteStore { writer, readers, next_reader: AtomicUsize::new(0), jobs, _owner: owner })
    }
}

/// Bring the schema of `database` (named so in errors) to the version this build writes,
/// in one transaction; refuse a database written by a newer build.
fn migrate(connection: &mut Connection, database: &str) -> Result<()> {
    let failed = |error: rusqlite::Error| Error::internal(format!("{database} cannot be opened: {error}"));
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(failed)?;
    let table = |name: &str| -> rusqlite::Result<bool> {
        tx.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |row| {
            row.get::<_, i64>(0)
        })
        .map(|count| count > 0)
    };
    let recorded: Option<String> = if table("meta").map_err(failed)? {
        tx.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
            .optional()
            .map_err(failed)?
    } else {
        None
    };
    let found = migrations::version_of(recorded.as_deref(), table("resources").map_err(failed)?, database)?;
    let latest = migrations::latest();
    for migration in migrations::pending(found, database, "database.path")? {
        tx.execute_batch(migration.sqlite).map_err(|error| migrations::failed(migration, database, error))?;
    }
    if found < latest {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
            [latest.to_string()],
        )
        .map_err(failed)?;
    }
    tx.commit().map_err(failed)?;
    if found > 0 && found < latest {
        tracing::info!(from = found, to = latest, "{database}: schema upgraded");
    }
    Ok(())
}

/// One batch in one transaction, a savepoint per job; the outcomes once committed.
fn run_batch(connection: &mut Connection, works: &mut [WriteWork]) -> Result<Vec<Result<ChangeSet>>> {
    let mut tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works {
        let outcome = match tx.savepoint() {
            Ok(mut savepoint) => {
                let outcome = writer::run_job(|changes, enqueued| {
                    work(&mut SqliteTx { connection: &savepoint, changes: Some(changes), enqueued })
                });
                match outcome {
                    Ok(changes) => savepoint.commit().map(|()| changes).map_err(Error::from),
                    Err(error) => {
                        // Undo this job alone; the others of the batch stand.
                        let _ = savepoint.rollback();
                        Err(error)
                    }
                }
            }
            Err(error) => Err(error.into()),
        };
        outcomes.push(outcome);
    }
    tx.commit()?;
    Ok(outcomes)
}

impl Store for SqliteStore {
    fn read(&self, work: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        let poisoned = |_| Error::internal("database lock poisoned");
        let mut connection = if self.readers.is_empty() {
            self.writer.lock().map_err(poisoned)?
        } else {
            // Take a free reader if there is one; otherwise wait for the next in turn.
            let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
            let count = self.readers.len();
            let free = (0..count).find_map(|offset| self.readers[(start + offset) % count].try_lock().ok());
            match free {
                Some(guard) => guard,
                None => self.readers[start % count].lock().map_err(poisoned)?,
            }
        };
        let tx = connection.transaction()?;
        work(&SqliteTx { connection: &tx, changes: None, enqueued: &mut 0 })?;
        tx.finish()?;
        Ok(())
    }

    fn write(&self, job: WriteJob) {
        self.jobs.send(job);
    }

    fn on_commit(&self, hook: super::CommitHook) {
        self.jobs.on_commit(hook);
    }
}

/// A transaction, or a savepoint inside one; a write one records what it changes.
struct SqliteTx<'a> {
    connection: &'a Connection,
    changes: Option<&'a mut Vec<Change>>,
    /// Notifications put in the outbox.
    enqueued: &'a mut usize,
}

impl SqliteTx<'_> {
    fn record(&mut self, change: Change) {
        if let Some(changes) = self.changes.as_mut() {
            changes.push(change);
        }
    }
}

impl SqliteTx<'_> {
    fn one(&self, sql: &str, params: impl rusqlite::Params) -> Result<Option<Resource>> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let row = statement.query_row(params, row_to_parts).optional()?;
        row.map(parts_to_resource).transpose()
    }

    fn many(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Resource>> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map(params, row_to_parts)?;
        let mut resources = Vec::new();
        for row in rows {
            resources.push(parts_to_resource(row?)?);
        }
        Ok(resources)
    }
}

/// The `announced` column of `resource`'s row: 1, or NULL (outside the partial index).
fn announced_column(resource: &Resource) -> Option<i64> {
    super::is_announced(resource).then_some(1)
}

type Parts = (i64, String, Option<String>, String);

fn row_to_parts(row: &Row<'_>) -> rusqlite::Result<Parts> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn parts_to_resource((ty, path, creator, body): Parts) -> Result<Resource> {
    super::stored_resource(ty, path, creator, &body)
}

impl ReadTx for SqliteTx<'_> {
    fn get(&self, ri: &str) -> Result<Option<Resource>> {
        self.one(&format!("SELECT {COLUMNS} FROM resources WHERE ri = ?1"), [ri])
    }

    fn get_by_path(&self, path: &str) -> Result<Option<Resource>> {
        self.one(&format!("SELECT {COLUMNS} FROM resources WHERE path = ?1"), [path])
    }

    fn children(&self, pi: &str, ty: Option<ResourceType>) -> Result<Vec<Resource>> {
        match ty {
            Some(ty) => self.many(
                &format!("SELECT {COLUMNS} FROM resources WHERE pi = ?1 AND ty = ?2 ORDER BY ord"),
                params![pi, ty.code()],
            ),
            None => self.many(&format!("SELECT {COLUMNS} FROM resources WHERE pi = ?1 ORDER BY ord"), [pi]),
        }
    }

    fn edge_child(&self, pi: &str, ty: ResourceType, newest: bool) -> Result<Option<Resource>> {
        let order = if newest { "DESC" } else { "ASC" };
        self.one(
            &format!("SELECT {COLUMNS} FROM resources WHERE pi = ?1 AND ty = ?2 ORDER BY ord {order} LIMIT 1"),
            params![pi, ty.code()],
        )
    }

    fn walk_below(
        &self,
        path: &str,
        max_depth: Option<usize>,
        visit: &mut dyn FnMut(Resource, usize) -> Result<bool>,
    ) -> Result<()> {
        // Everything whose path starts with "<path>/": the range ["<path>/", "<path>0"),
        // because '0' is the character after '/'. This uses the path index. The depth is the
        // number of '/' in a path, compared before a body is parsed.
        let depth = max_depth.map(|levels| path.matches('/').count().saturating_add(levels));
        let depth = depth.map_or(i64::MAX, |depth| i64::try_from(depth).unwrap_or(i64::MAX));
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM resources WHERE path >= ?1 || '/' AND path < ?1 || '0' \
             AND LENGTH(path) - LENGTH(REPLACE(path, '/', '')) <= ?2 ORDER BY path"
        ))?;
        let mut rows = statement.query(params![path, depth])?;
        while let Some(row) = rows.next()? {
            let parts = row_to_parts(row)?;
            let size = parts.3.len();
            if !visit(parts_to_resource(parts)?, size)? {
                break;
            }
        }
        Ok(())
    }

    fn by_type(&self, ty: ResourceType) -> Result<Vec<Resource>> {
        self.many(
            &format!("SELECT {COLUMNS} FROM resources WHERE ty = ?1{} ORDER BY ord", super::by_type_index(ty)),
            [ty.code()],
        )
    }

    fn announced(&self) -> Result<Vec<Resource>> {
        self.many(&format!("SELECT {COLUMNS} FROM resources WHERE announced = 1 ORDER BY ord"), [])
    }

    fn expired(&self, now: &str, limit: usize) -> Result<Vec<Resource>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.many(
            &format!("SELECT {COLUMNS} FROM resources WHERE et IS NOT NULL AND et < ?1 ORDER BY et LIMIT ?2"),
            params![now, limit],
        )
    }

    fn of_type_below(&self, path: &str, ty: ResourceType) -> Result<Vec<Resource>> {
        self.many(
            &format!(
                "SELECT {COLUMNS} FROM resources WHERE (path = ?1 OR (path >= ?1 || '/' AND path < ?1 || '0')) \
                 AND ty = ?2 ORDER BY path"
            ),
            params![path, ty.code()],
        )
    }

    fn outbox_due(&self, now: &str, per_target: usize, limit: usize, busy: &Busy) -> Result<Due> {
        super::select_due(
            now,
            per_target,
            limit,
            busy,
            &mut |after| {
                // The next target in index order: one index seek each, however long its queue.
                Ok(self
                    .connection
                    .prepare_cached("SELECT MIN(target) FROM outbox WHERE target > ?1")?
                    .query_row([after], |row| row.get(0))?)
            },
            &mut |target, visit| {
                let mut statement = self.connection.prepare_cached(
                    "SELECT seq, target, subscription, rqi, content, created, due, attempts, batch FROM outbox \
                     WHERE target = ?1 ORDER BY seq",
                )?;
                let mut rows = statement.query([target])?;
                while let Some(row) = rows.next()? {
                    if !visit(pending_of(row)?) {
                        break;
                    }
                }
                Ok(())
            },
        )
    }

    fn outbox_batch(&self, target: &str, subscription: &str) -> Result<(usize, Option<String>)> {
        let mut statement = self.connection.prepare_cached(
            "SELECT COUNT(*), MIN(due) FROM outbox WHERE target = ?1 AND subscription = ?2 AND batch = 1",
        )?;
        let (count, due): (i64, Option<String>) =
            statement.query_row([target, subscription], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok((usize::try_from(count).unwrap_or(usize::MAX), due))
    }

    fn instance_addresses(&self) -> Result<Vec<String>> {
        let mut statement = self.connection.prepare_cached("SELECT poa FROM instances")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        Ok(super::addresses_of(rows.collect::<rusqlite::Result<Vec<_>>>()?))
    }

    fn outbox_count(&self, target: &str) -> Result<usize> {
        let mut statement = self.connection.prepare_cached("SELECT COUNT(*) FROM outbox WHERE target = ?1")?;
        let count: i64 = statement.query_row([target], |row| row.get(0))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn outbox_total(&self) -> Result<usize> {
        let mut statement = self.connection.prepare_cached("SELECT COUNT(*) FROM outbox")?;
        let count: i64 = statement.query_row([], |row| row.get(0))?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}

/// An outbox row as a [`Pending`] notification.
fn pending_of(row: &Row<'_>) -> Result<Pending> {
    Pending::try_from(StoredPending {
        seq: row.get(0)?,
        target: row.get(1)?,
        subscription: row.get(2)?,
        rqi: row.get(3)?,
        content: row.get(4)?,
        created: row.get(5)?,
        due: row.get(6)?,
        attempts: row.get(7)?,
        batch: row.get(8)?,
    })
}

impl WriteTx for SqliteTx<'_> {
    fn insert(&mut self, resource: &Resource) -> Result<()> {
        let body = serde_json::to_string(&resource.attributes)
            .map_err(|error| Error::internal(format!("cannot serialise resource: {error}")))?;
        let mut statement = self.connection.prepare_cached(
            "INSERT INTO resources (ri, pi, ty, path, et, creator, body, announced) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        statement
            .execute(params![
                resource.ri(),
                resource.pi(),
                resource.ty.code(),
                resource.path,
                resource.et(),
                resource.creator,
                body,
                announced_column(resource)
            ])
            .map_err(|error| match error.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => Error::conflict(format!(
                    "a resource with ri {} or path {} already exists",
                    resource.ri(),
                    resource.path
                )),
                _ => Error::from(error),
            })?;
        self.record(Change::Created(Arc::new(resource.clone())));
        Ok(())
    }

    fn update(&mut self, resource: &Resource) -> Result<()> {
        let body = serde_json::to_string(&resource.attributes)
            .map_err(|error| Error::internal(format!("cannot serialise resource: {error}")))?;
        let mut statement = self
            .connection
            .prepare_cached("UPDATE resources SET et = ?2, creator = ?3, body = ?4, announced = ?5 WHERE ri = ?1")?;
        let changed = statement.execute(params![
            resource.ri(),
            resource.et(),
            resource.creator,
            body,
            announced_column(resource)
        ])?;
        if changed == 0 {
            return Err(Error::not_found(format!("resource {} no longer exists", resource.ri())));
        }
        self.record(Change::Updated(Arc::new(resource.clone())));
        Ok(())
    }

    fn delete_subtree(&mut self, resource: &Resource) -> Result<usize> {
        let mut statement = self
            .connection
            .prepare_cached("DELETE FROM resources WHERE path = ?1 OR (path >= ?1 || '/' AND path < ?1 || '0')")?;
        let deleted = statement.execute([&resource.path])?;
        if deleted > 0 {
            self.record(Change::Deleted(Arc::new(resource.clone())));
        }
        Ok(deleted)
    }

    fn enqueue(&mut self, notification: &Pending) -> Result<()> {
        let content = serde_json::to_string(&notification.content)
            .map_err(|error| Error::internal(format!("cannot serialise a notification: {error}")))?;
        let mut statement = self.connection.prepare_cached(
            "INSERT INTO outbox (target, subscription, rqi, content, created, due, attempts, batch) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        statement.execute(params![
            notification.target,
            notification.subscription,
            notification.rqi,
            content,
            notification.created,
            notification.due,
            notification.attempts,
            notification.batch
        ])?;
        *self.enqueued += 1;
        Ok(())
    }

    fn dequeue(&mut self, seq: i64) -> Result<()> {
        self.connection.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?.execute([seq])?;
        Ok(())
    }

    fn reschedule(&mut self, seq: i64, attempts: u32, due: &str) -> Result<()> {
        self.connection
            .prepare_cached(
                "UPDATE outbox SET attempts = ?2, due = ?3, claimant = NULL, claimed_until = NULL WHERE seq = ?1",
            )?
            .execute(params![seq, attempts, due])?;
        Ok(())
    }

    // One writer at a time: a row read in the transaction stays as read until its commit.
    fn claimable(&mut self, seqs: &[i64], claimant: &str, now: &str) -> Result<Vec<i64>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT seq FROM outbox WHERE seq = ?1 AND (claimant IS NULL OR claimant = ?2 OR claimed_until < ?3)",
        )?;
        let mut free = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            free.extend(statement.query_row(params![seq, claimant, now], |row| row.get::<_, i64>(0)).optional()?);
        }
        Ok(free)
    }

    fn claim(&mut self, seqs: &[i64], claim: Option<(&str, &str)>) -> Result<()> {
        let (claimant, until) = claim.unzip();
        let mut statement =
            self.connection.prepare_cached("UPDATE outbox SET claimant = ?2, claimed_until = ?3 WHERE seq = ?1")?;
        for &seq in seqs {
            statement.execute(params![seq, claimant, until])?;
        }
        Ok(())
    }

    fn release_batch(&mut self, subscription: &str, target: Option<&str>, due: &str) -> Result<()> {
        match target {
            Some(target) => self
                .connection
                .prepare_cached("UPDATE outbox SET due = ?3 WHERE subscription = ?1 AND target = ?2 AND batch = 1")?
                .execute(params![subscription, target, due])?,
            None => self
                .connection
                .prepare_cached("UPDATE outbox SET due = ?2 WHERE subscription = ?1 AND batch = 1")?
                .execute(params![subscription, due])?,
        };
        Ok(())
    }

    fn set_instance(&mut self, id: &str, poa: &[String], seen: &str) -> Result<()> {
        let poa = serde_json::to_string(poa).map_err(|error| Error::internal(error.to_string()))?;
        self.connection
            .prepare_cached(
                "INSERT INTO instances (id, poa, seen) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET poa = ?2, seen = ?3",
            )?
            .execute(params![id, poa, seen])?;
        Ok(())
    }

    fn forget_instances(&mut self, before: &str, gone: Option<&str>) -> Result<()> {
        self.connection
            .prepare_cached("DELETE FROM instances WHERE seen < ?1 OR id = ?2")?
            .execute(params![before, gone])?;
        Ok(())
    }

    fn trim_outbox(&mut self, target: &str, keep: usize) -> Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let dropped = self
            .connection
            .prepare_cached(
                "DELETE FROM outbox WHERE target = ?1 AND seq NOT IN \
                 (SELECT seq FROM outbox WHERE target = ?1 ORDER BY seq DESC LIMIT ?2)",
            )?
            .execute(params![target, keep])?;
        Ok(dropped)
    }
}

/// A database failure: an internal error for the peer, the cause for the log.
impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        Error::internal_from(error)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::storage::Storage;

    /// A file database as an acme-cse before schema versions wrote it: the version-1
    /// tables, a container and its instances created in an order that is not their names'.
    fn version_1_database(path: &Path) {
        let connection = Connection::open(path).expect("create");
        connection.execute_batch(migrations::MIGRATIONS[0].sqlite).expect("version 1 schema");
        for (ri, pi, ty, path) in [
            ("cnt", "cb", 3, "cse-in/cnt"),
            ("zeta", "cnt", 4, "cse-in/cnt/zeta"),
            ("alpha", "cnt", 4, "cse-in/cnt/alpha"),
            ("mid", "cnt", 4, "cse-in/cnt/mid"),
        ] {
            let body = format!(r#"{{"ri":"{ri}","pi":"{pi}","rn":"{ri}","ty":{ty}}}"#);
            connection
                .execute(
                    "INSERT INTO resources (ri, pi, ty, path, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![ri, pi, ty, path, body],
                )
                .expect("insert");
        }
    }

    fn recorded_version(path: &Path) -> Option<String> {
        let connection = Connection::open(path).expect("open");
        connection
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
            .optional()
            .expect("query")
    }

    fn names(resources: &[Resource]) -> Vec<String> {
        resources.iter().map(|resource| resource.ri().to_string()).collect()
    }

    #[tokio::test]
    async fn a_version_1_database_is_upgraded_at_open_and_keeps_the_creation_order() {
        // Arrange
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("old.db");
        version_1_database(&path);
        // Act
        let storage = Storage::from_store(Arc::new(SqliteStore::open(&path, Durability::Full).expect("open")));
        // Assert: the version is recorded, the order of creation kept and continued.
        assert_eq!(recorded_version(&path), Some(migrations::latest().to_string()));
        let children = storage.read(|tx| tx.children("cnt", Some(ResourceType::Cin))).await.expect("children");
        assert_eq!(names(&children), ["zeta", "alpha", "mid"]);
        let mut attributes = Map::new();
        attributes.insert("ri".into(), "aaa".into());
        attributes.insert("pi".into(), "cnt".into());
        let newest = Resource { ty: ResourceType::Cin, attributes, path: "cse-in/cnt/aaa".into(), creator: None };
        storage.write(move |tx| tx.insert(&newest)).await.expect("insert");
        let children = storage.read(|tx| tx.children("cnt", None)).await.expect("children");
        assert_eq!(names(&children), ["zeta", "alpha", "mid", "aaa"]);
        let last = storage.read(|tx| tx.edge_child("cnt", ResourceType::Cin, true)).await.expect("newest");
        assert_eq!(last.map(|resource| resource.ri().to_string()).as_deref(), Some("aaa"));
        let first = storage.read(|tx| tx.edge_child("cnt", ResourceType::Cin, false)).await.expect("oldest");
        assert_eq!(first.map(|resource| resource.ri().to_string()).as_deref(), Some("zeta"));
        // Opening it again changes nothing.
        drop(storage);
        let again = SqliteStore::open(&path, Durability::Full).expect("open again");
        drop(again);
        assert_eq!(recorded_version(&path), Some(migrations::latest().to_string()));
    }

    #[tokio::test]
    async fn the_resources_announced_are_found_by_their_index_after_an_upgrade_and_follow_their_at() {
        // Arrange: an old database with an announced AE, one whose `at` is empty, and instances.
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("old.db");
        version_1_database(&path);
        let connection = Connection::open(&path).expect("open");
        for (ri, at) in [("announcedAe", r#"["/id-mn"]"#), ("quietAe", "[]")] {
            let body = format!(r#"{{"ri":"{ri}","pi":"cb","rn":"{ri}","ty":2,"at":{at}}}"#);
            connection
                .execute(
                    "INSERT INTO resources (ri, pi, ty, path, body) VALUES (?1, 'cb', 2, ?2, ?3)",
                    params![ri, format!("cse-in/{ri}"), body],
                )
                .expect("insert");
        }
        drop(connection);
        let storage = Storage::from_store(Arc::new(SqliteStore::open(&path, Durability::Full).expect("open")));
        let announced = || async { names(&storage.read(|tx| tx.announced()).await.expect("announced")) };
        // Assert: the upgrade filled the column from the stored bodies.
        assert_eq!(announced().await, ["announcedAe"]);
        // Act: an instance created with `at`, the AE's `at` emptied, the other AE's filled.
        let resource = |ri: &str, ty: ResourceType, at: &[&str]| {
            let mut attributes = Map::new();
            attributes.insert("ri".into(), ri.into());
            attributes.insert("pi".into(), "cb".into());
            attributes.insert("at".into(), at.iter().map(|entry| serde_json::Value::from(*entry)).collect());
            Resource { ty, attributes, path: format!("cse-in/{ri}"), creator: None }
        };
        let created = resource("announcedCin", ResourceType::Cin, &["/id-in"]);
        let emptied = resource("announcedAe", ResourceType::Ae, &[]);
        let filled = resource("quietAe", ResourceType::Ae, &["/id-mn/xyz"]);
        storage
            .write(move |tx| {
                tx.insert(&created)?;
                tx.update(&emptied)?;
                tx.update(&filled)
            })
            .await
            .expect("write");
        // Assert: in creation order, and read through the partial index, not the table.
        assert_eq!(announced().await, ["quietAe", "announcedCin"]);
        let connection = Connection::open(&path).expect("open");
        let plan: String = connection
            .query_row(&format!("EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM resources WHERE announced = 1"), [], |row| {
                row.get(3)
            })
            .expect("plan");
        assert!(plan.contains("resources_announced"), "{plan}");
    }

    #[test]
    fn reads_of_a_type_use_the_index_by_type_and_content_instances_stay_out_of_it() {
        let mut connection = Connection::open_in_memory().expect("open");
        migrate(&mut connection, "the test database").expect("schema");
        let plan = |ty: ResourceType| -> String {
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM resources WHERE ty = ?1{} ORDER BY ord",
                crate::storage::by_type_index(ty)
            );
            let mut statement = connection.prepare(&sql).expect("prepare");
            let rows = statement.query_map([ty.code()], |row| row.get::<_, String>(3)).expect("plan");
            rows.collect::<rusqlite::Result<Vec<_>>>().expect("plan rows").join("; ")
        };
        assert_eq!(ResourceType::Cin.code(), 4, "the index's condition names the content instance's code");
        assert!(plan(ResourceType::Csr).contains("resources_by_type"), "{}", plan(ResourceType::Csr));
        assert!(!plan(ResourceType::Cin).contains("resources_by_type"), "{}", plan(ResourceType::Cin));
        let indexed: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'resources_by_type' AND sql LIKE '%WHERE ty <> 4%'",
                [],
                |row| row.get(0),
            )
            .expect("index");
        assert_eq!(indexed, 1);
    }

    #[test]
    fn a_database_written_by_a_newer_build_is_refused_naming_database_path() {
        // Arrange
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("new.db");
        drop(SqliteStore::open(&path, Durability::Full).expect("create"));
        let connection = Connection::open(&path).expect("open");
        connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).expect("set version");
        drop(connection);
        // Act
        let refused = SqliteStore::open(&path, Durability::Full).err().expect("refused");
        // Assert
        let text = refused.detail();
        assert!(text.contains("database.path") && text.contains("new.db"), "{text}");
        assert!(text.contains("schema version 99") && text.contains("newer"), "{text}");
        assert_eq!(recorded_version(&path).as_deref(), Some("99"), "left as it was");
    }
}
