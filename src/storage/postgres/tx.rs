//! A PostgreSQL transaction as the core's [`ReadTx`] and [`WriteTx`]: each statement sent
//! by the async driver and awaited on the calling (blocking) thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::Object;
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::ChangedMeanwhile;
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType};
use crate::storage::{Busy, Change, Due, Pending, ReadTx, StoredPending, WriteTx};

/// A resource's columns, then its row version (`xmin`) and `ri`.
pub(super) const COLUMNS: &str = "ty, path, creator, body, xmin::TEXT, ri";
const OUTBOX_COLUMNS: &str = "seq, target, subscription, rqi, content, created, due, attempts, batch";

/// Rows read at a time by a walk below a path.
const WALK_PAGE: i64 = 256;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A transaction (or a savepoint inside one) on one connection; a write one records what
/// it changes.
pub(super) struct PgTx<'a> {
    pub runtime: &'a Handle,
    pub client: &'a Object,
    pub changes: Option<&'a mut Vec<Change>>,
    /// Notifications put in the outbox.
    pub enqueued: &'a mut usize,
    /// In a write transaction, the version (`xmin`) of each resource row as it was read:
    /// an UPDATE applies only to that version, so no update of another instance is lost.
    pub versions: &'a RefCell<HashMap<String, String>>,
    /// Read resources `FOR UPDATE` (a write job run again after a row changed meanwhile).
    pub lock: bool,
    /// The statement that opens the transaction, until it is sent: with the first statement
    /// of the transaction, in one round trip (pipelined), so that a read that asks nothing
    /// costs nothing and one that asks once waits for one answer.
    pub begin: Cell<Option<&'static str>>,
}

impl PgTx<'_> {
    fn wait<T>(&self, future: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
        match self.begin.take() {
            None => self.runtime.block_on(future).map_err(Error::from),
            // Polled in this order, so the server gets BEGIN first.
            Some(begin) => self
                .runtime
                .block_on(async {
                    let (begun, outcome) = futures_util::join!(self.client.batch_execute(begin), future);
                    begun.and(outcome)
                })
                .map_err(Error::from),
        }
    }

    /// Whether the transaction was opened (a statement was sent).
    pub fn begun(&self) -> bool {
        self.begin.get().is_none()
    }

    fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        self.wait(async {
            let statement = self.client.prepare_cached(sql).await?;
            self.client.query(&statement, params).await
        })
    }

    fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64> {
        self.wait(async {
            let statement = self.client.prepare_cached(sql).await?;
            self.client.execute(&statement, params).await
        })
    }

    /// Each row of `sql` in turn, as it arrives, until `visit` says stop. `visit` must not
    /// query: its query would wait behind the rows not read yet, which wait for it.
    fn stream(&self, sql: &str, params: Params<'_>, visit: &mut dyn FnMut(Row) -> Result<bool>) -> Result<()> {
        let statement = self.wait(self.client.prepare_cached(sql))?;
        let rows = self.wait(self.client.query_raw(&statement, params.iter().copied()))?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = self.runtime.block_on(rows.next()) {
            if !visit(row?)? {
                break;
            }
        }
        Ok(())
    }

    fn many(&self, sql: &str, params: Params<'_>) -> Result<Vec<Resource>> {
        self.rows(sql, params)?.iter().map(|row| self.resource(row)).collect()
    }

    fn one(&self, sql: &str, params: Params<'_>) -> Result<Option<Resource>> {
        self.rows(sql, params)?.first().map(|row| self.resource(row)).transpose()
    }

    /// The resource of a row of [`COLUMNS`]; in a write transaction, its version noted. The
    /// first version read stays noted: a job that read a row again after another instance
    /// changed it may still hold the first copy, so its UPDATE must fail and the job run again.
    fn resource(&self, row: &Row) -> Result<Resource> {
        if self.changes.is_some() {
            self.versions.borrow_mut().entry(row.try_get(5)?).or_insert(row.try_get(4)?);
        }
        resource_of(row)
    }

    fn record(&mut self, change: Change) {
        if let Some(changes) = self.changes.as_mut() {
            changes.push(change);
        }
    }
}

/// The resource of a row of [`COLUMNS`].
pub(super) fn resource_of(row: &Row) -> Result<Resource> {
    let ty: i32 = row.try_get(0)?;
    crate::storage::stored_resource(i64::from(ty), row.try_get(1)?, row.try_get(2)?, row.try_get(3)?)
}

fn pending_of(row: &Row) -> Result<Pending> {
    let attempts: i32 = row.try_get(7)?;
    Pending::try_from(StoredPending {
        seq: row.try_get(0)?,
        target: row.try_get(1)?,
        subscription: row.try_get(2)?,
        rqi: row.try_get(3)?,
        content: row.try_get(4)?,
        created: row.try_get(5)?,
        due: row.try_get(6)?,
        attempts: i64::from(attempts),
        batch: row.try_get(8)?,
    })
}

fn code(ty: ResourceType) -> i32 {
    i32::from(ty.code())
}

fn count(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl ReadTx for PgTx<'_> {
    fn get(&self, ri: &str) -> Result<Option<Resource>> {
        let lock = if self.lock { " FOR UPDATE" } else { "" };
        self.one(&format!("SELECT {COLUMNS} FROM resources WHERE ri = $1{lock}"), &[&ri])
    }

    fn get_by_path(&self, path: &str) -> Result<Option<Resource>> {
        let lock = if self.lock { " FOR UPDATE" } else { "" };
        self.one(&format!("SELECT {COLUMNS} FROM resources WHERE path = $1{lock}"), &[&path])
    }

    fn children(&self, pi: &str, ty: Option<ResourceType>) -> Result<Vec<Resource>> {
        match ty {
            Some(ty) => self.many(
                &format!("SELECT {COLUMNS} FROM resources WHERE pi = $1 AND ty = $2 ORDER BY ord"),
                &[&pi, &code(ty)],
            ),
            None => self.many(&format!("SELECT {COLUMNS} FROM resources WHERE pi = $1 ORDER BY ord"), &[&pi]),
        }
    }

    fn edge_child(&self, pi: &str, ty: ResourceType, newest: bool) -> Result<Option<Resource>> {
        let order = if newest { "DESC" } else { "ASC" };
        self.one(
            &format!("SELECT {COLUMNS} FROM resources WHERE pi = $1 AND ty = $2 ORDER BY ord {order} LIMIT 1"),
            &[&pi, &code(ty)],
        )
    }

    fn walk_below(
        &self,
        path: &str,
        max_depth: Option<usize>,
        visit: &mut dyn FnMut(Resource, usize) -> Result<bool>,
    ) -> Result<()> {
        // As in SQLite: the range ["<path>/", "<path>0") of the path index ('0' follows '/'
        // in byte order, which the column's "C" collation keeps), the depth as the number of
        // '/' in a path. Read a page at a time (keyset on the path): the visitor may query
        // on this connection, which must not wait behind the rest of an unread result.
        let depth = max_depth.map_or(i64::MAX, |levels| count(path.matches('/').count().saturating_add(levels)));
        let sql = format!(
            "SELECT {COLUMNS} FROM resources WHERE path > $1 AND path < $2 || '0' \
             AND LENGTH(path) - LENGTH(REPLACE(path, '/', '')) <= $3::BIGINT ORDER BY path LIMIT $4::BIGINT"
        );
        let mut after = format!("{path}/");
        loop {
            let rows = self.rows(&sql, &[&after, &path, &depth, &WALK_PAGE])?;
            let Some(last) = rows.last() else { return Ok(()) };
            let next: String = last.try_get(1)?;
            let full = rows.len() == usize::try_from(WALK_PAGE).unwrap_or(usize::MAX);
            for row in &rows {
                let size = row.try_get::<_, &str>(3)?.len();
                if !visit(resource_of(row)?, size)? {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
            after = next;
        }
    }

    fn by_type(&self, ty: ResourceType) -> Result<Vec<Resource>> {
        let index = crate::storage::by_type_index(ty);
        self.many(&format!("SELECT {COLUMNS} FROM resources WHERE ty = $1{index} ORDER BY ord"), &[&code(ty)])
    }

    fn announced(&self) -> Result<Vec<Resource>> {
        self.many(&format!("SELECT {COLUMNS} FROM resources WHERE announced ORDER BY ord"), &[])
    }

    fn expired(&self, now: &str, limit: usize) -> Result<Vec<Resource>> {
        self.many(
            &format!("SELECT {COLUMNS} FROM resources WHERE et IS NOT NULL AND et < $1 ORDER BY et LIMIT $2::BIGINT"),
            &[&now, &count(limit)],
        )
    }

    fn of_type_below(&self, path: &str, ty: ResourceType) -> Result<Vec<Resource>> {
        self.many(
            &format!(
                "SELECT {COLUMNS} FROM resources WHERE (path = $1 OR (path >= $1 || '/' AND path < $1 || '0')) \
                 AND ty = $2 ORDER BY path"
            ),
            &[&path, &code(ty)],
        )
    }

    fn outbox_due(&self, now: &str, per_target: usize, limit: usize, busy: &Busy) -> Result<Due> {
        crate::storage::select_due(
            now,
            per_target,
            limit,
            busy,
            &mut |after| {
                let rows = self.rows("SELECT MIN(target) FROM outbox WHERE target > $1", &[&after])?;
                let next: Option<Option<String>> = rows.first().map(|row| row.try_get(0)).transpose()?;
                Ok(next.flatten())
            },
            &mut |target, visit| {
                self.stream(
                    &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE target = $1 ORDER BY seq"),
                    &[&target],
                    &mut |row| Ok(visit(pending_of(&row)?)),
                )
            },
        )
    }

    fn instance_addresses(&self) -> Result<Vec<String>> {
        let rows = self.rows("SELECT poa FROM instances", &[])?;
        let stored: Vec<String> = rows.iter().map(|row| row.try_get(0)).collect::<std::result::Result<_, _>>()?;
        Ok(crate::storage::addresses_of(stored))
    }

    fn outbox_count(&self, target: &str) -> Result<usize> {
        let rows = self.rows("SELECT COUNT(*) FROM outbox WHERE target = $1", &[&target])?;
        let count: Option<i64> = rows.first().map(|row| row.try_get(0)).transpose()?;
        let count = count.unwrap_or(0);
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    fn outbox_total(&self) -> Result<usize> {
        let rows = self.rows("SELECT COUNT(*) FROM outbox", &[])?;
        let count: Option<i64> = rows.first().map(|row| row.try_get(0)).transpose()?;
        Ok(usize::try_from(count.unwrap_or(0)).unwrap_or(usize::MAX))
    }

    fn outbox_batch(&self, target: &str, subscription: &str) -> Result<(usize, Option<String>)> {
        let rows = self.rows(
            "SELECT COUNT(*), MIN(due) FROM outbox WHERE target = $1 AND subscription = $2 AND batch",
            &[&target, &subscription],
        )?;
        let Some(row) = rows.first() else { return Ok((0, None)) };
        let (count, due): (i64, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
        Ok((usize::try_from(count).unwrap_or(usize::MAX), due))
    }
}

/// The `announced` column of `resource`'s row: TRUE, or NULL (outside the partial index).
fn announced_column(resource: &Resource) -> Option<bool> {
    crate::storage::is_announced(resource).then_some(true)
}

impl WriteTx for PgTx<'_> {
    fn insert(&mut self, resource: &Resource) -> Result<()> {
        let body = serde_json::to_string(&resource.attributes)
            .map_err(|error| Error::internal(format!("cannot serialise resource: {error}")))?;
        let inserted = self.rows(
            "INSERT INTO resources (ri, pi, ty, path, et, creator, body, announced) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING xmin::TEXT",
            &[
                &resource.ri(),
                &resource.pi(),
                &code(resource.ty),
                &resource.path,
                &resource.et(),
                &resource.creator,
                &body,
                &announced_column(resource),
            ],
        );
        match inserted {
            Ok(rows) => {
                if let Some(row) = rows.first() {
                    self.versions.borrow_mut().insert(resource.ri().to_string(), row.try_get(0)?);
                }
            }
            Err(error) if is_unique_violation(&error) => {
                return Err(Error::conflict(format!(
                    "a resource with ri {} or path {} already exists",
                    resource.ri(),
                    resource.path
                )));
            }
            Err(error) => return Err(error),
        }
        self.record(Change::Created(Arc::new(resource.clone())));
        Ok(())
    }

    fn update(&mut self, resource: &Resource) -> Result<()> {
        let body = serde_json::to_string(&resource.attributes)
            .map_err(|error| Error::internal(format!("cannot serialise resource: {error}")))?;
        let read = self.versions.borrow().get(resource.ri()).cloned();
        let updated = self.rows(
            "UPDATE resources SET et = $2, creator = $3, body = $4, announced = $6 \
             WHERE ri = $1 AND ($5::TEXT IS NULL OR xmin::TEXT = $5) RETURNING xmin::TEXT",
            &[&resource.ri(), &resource.et(), &resource.creator, &body, &read, &announced_column(resource)],
        )?;
        match (updated.first(), read) {
            (Some(row), _) => {
                self.versions.borrow_mut().insert(resource.ri().to_string(), row.try_get(0)?);
            }
            (None, Some(_)) => return Err(Error::internal_from(ChangedMeanwhile(resource.ri().to_string()))),
            (None, None) => return Err(Error::not_found(format!("resource {} no longer exists", resource.ri()))),
        }
        self.record(Change::Updated(Arc::new(resource.clone())));
        Ok(())
    }

    fn delete_subtree(&mut self, resource: &Resource) -> Result<usize> {
        let deleted = self.execute(
            "DELETE FROM resources WHERE path = $1 OR (path >= $1 || '/' AND path < $1 || '0')",
            &[&resource.path],
        )?;
        if deleted > 0 {
            self.record(Change::Deleted(Arc::new(resource.clone())));
        }
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    fn enqueue(&mut self, notification: &Pending) -> Result<()> {
        let content = serde_json::to_string(&notification.content)
            .map_err(|error| Error::internal(format!("cannot serialise a notification: {error}")))?;
        let attempts = i32::try_from(notification.attempts).unwrap_or(i32::MAX);
        self.execute(
            "INSERT INTO outbox (target, subscription, rqi, content, created, due, attempts, batch) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &notification.target,
                &notification.subscription,
                &notification.rqi,
                &content,
                &notification.created,
                &notification.due,
                &attempts,
                &notification.batch,
            ],
        )?;
        *self.enqueued += 1;
        Ok(())
    }

    fn dequeue(&mut self, seq: i64) -> Result<()> {
        self.execute("DELETE FROM outbox WHERE seq = $1", &[&seq])?;
        Ok(())
    }

    fn reschedule(&mut self, seq: i64, attempts: u32, due: &str) -> Result<()> {
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        self.execute(
            "UPDATE outbox SET attempts = $2, due = $3, claimant = NULL, claimed_until = NULL WHERE seq = $1",
            &[&seq, &attempts, &due],
        )?;
        Ok(())
    }

    fn claimable(&mut self, seqs: &[i64], claimant: &str, now: &str) -> Result<Vec<i64>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.rows(
            "SELECT seq FROM outbox WHERE seq = ANY($1) AND (claimant IS NULL OR claimant = $2 OR claimed_until < $3) \
             FOR UPDATE SKIP LOCKED",
            &[&seqs, &claimant, &now],
        )?;
        Ok(rows.iter().map(|row| row.try_get(0)).collect::<std::result::Result<_, _>>()?)
    }

    fn claim(&mut self, seqs: &[i64], claim: Option<(&str, &str)>) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let (claimant, until) = claim.unzip();
        self.execute(
            "UPDATE outbox SET claimant = $2, claimed_until = $3 WHERE seq = ANY($1)",
            &[&seqs, &claimant, &until],
        )?;
        Ok(())
    }

    fn release_batch(&mut self, subscription: &str, target: Option<&str>, due: &str) -> Result<()> {
        match target {
            Some(target) => self.execute(
                "UPDATE outbox SET due = $3 WHERE subscription = $1 AND target = $2 AND batch",
                &[&subscription, &target, &due],
            )?,
            None => {
                self.execute("UPDATE outbox SET due = $2 WHERE subscription = $1 AND batch", &[&subscription, &due])?
            }
        };
        Ok(())
    }

    fn set_instance(&mut self, id: &str, poa: &[String], seen: &str) -> Result<()> {
        let poa = serde_json::to_string(poa).map_err(|error| Error::internal(error.to_string()))?;
        self.execute(
            "INSERT INTO instances (id, poa, seen) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET poa = $2, seen = $3",
            &[&id, &poa, &seen],
        )?;
        Ok(())
    }

    fn forget_instances(&mut self, before: &str, gone: Option<&str>) -> Result<()> {
        self.execute("DELETE FROM instances WHERE seen < $1 OR id = $2", &[&before, &gone])?;
        Ok(())
    }

    fn trim_outbox(&mut self, target: &str, keep: usize) -> Result<usize> {
        let dropped = self.execute(
            "DELETE FROM outbox WHERE target = $1 AND seq NOT IN \
             (SELECT seq FROM outbox WHERE target = $1 ORDER BY seq DESC LIMIT $2::BIGINT)",
            &[&target, &count(keep)],
        )?;
        Ok(usize::try_from(dropped).unwrap_or(usize::MAX))
    }
}

fn is_unique_violation(error: &Error) -> bool {
    error
        .cause::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| *code == SqlState::UNIQUE_VIOLATION)
}

/// A database failure: an internal error for the peer, the cause for the log.
impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Error {
        Error::internal_from(error)
    }
}
