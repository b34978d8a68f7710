//! The PostgreSQL backend (`[database] url`): the tables of `migrations.rs`, reached with
//! the async driver tokio-postgres through a deadpool connection pool.
//!
//! It has the shape of the SQLite store, because the core's transaction code is the same
//! for both: a transaction is a synchronous closure run on a blocking thread. Each
//! statement is sent by the async driver and waited for on that thread
//! ([`Handle::block_on`]), never on an async worker; the connections themselves are
//! served by tasks of the runtime. Writes go through the writer thread (`writer.rs`)
//! holding one connection and are group-committed (a savepoint per job, one commit per
//! batch), so change sets are published in commit order, as with SQLite. Reads run in
//! `REPEATABLE READ READ ONLY` transactions (one snapshot each) on pooled connections.
//! Round trips, not threads, are what a transaction costs here: BEGIN goes with the first
//! statement, a read's COMMIT is not waited for, and the writer sends each RELEASE with
//! the next SAVEPOINT (`benches/postgres_calls.rs` measures it).
//!
//! Several instances may share the database. An UPDATE applies only to the row version
//! the job read (`tx.rs`), else the job runs again, locking what it reads; a deadlock or a
//! serialization failure runs the batch again. The work only one instance does is behind
//! the lease (`lease.rs`).
//!
//! The URL may hold a password: errors and logs name the server by
//! [`redacted`](crate::config::redacted) URL only.

mod lease;
mod shared;
mod tls;
mod tx;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;

use self::lease::keep_lease;
use self::tx::PgTx;
use super::migrations;
use super::writer::{self, Queue};
use super::{ChangeSet, Lease, ReadTx, Store, WriteJob, WriteWork};
use crate::config::redacted;
use crate::error::{Error, Result};
use crate::security::Secret;

/// Serialises schema upgrades of instances that start together (a transaction-scoped
/// advisory lock; the number is this purpose's, arbitrary but fixed).
const MIGRATION_LOCK: i64 = 0x6163_6d65_0001;

/// PostgreSQL store.
pub struct PostgresStore {
    runtime: Handle,
    pool: Pool,
    /// Names the server in errors (the URL without its password).
    name: String,
    /// The writer thread's queue.
    jobs: Queue,
    lease: Lease,
    /// Ends the lease keeper (and so releases the lease) and the listener: when the CSE
    /// stops, or the store goes.
    keeper: tokio_util::sync::CancellationToken,
    _keeper_guard: tokio_util::sync::DropGuard,
    /// What other instances committed, until taken (see [`Store::foreign_changes`]).
    foreign: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ChangeSet>>>,
}

impl PostgresStore {
    /// Connect to the server at `url` with at most `pool_size` connections (one of them the
    /// writer's; TLS trusting also the CAs of `ca_file` when the URL asks for TLS) and bring
    /// the schema up to date. Call it from a blocking thread of the tokio runtime that is to
    /// serve the connections.
    pub fn open(url: &Secret, pool_size: usize, ca_file: Option<&std::path::Path>) -> Result<PostgresStore> {
        let name = format!("the database {} (database.url)", redacted(url));
        let runtime = Handle::try_current().map_err(|_| {
            Error::internal(format!("{name}: PostgreSQL needs a tokio runtime to serve its connections"))
        })?;
        let config: tokio_postgres::Config =
            url.expose().parse().map_err(|error| Error::internal(format!("{name} is not a valid URL: {error}")))?;
        let tls = tls::Tls::for_config(&config, ca_file, &name)?;
        let pool = Pool::builder(tls.manager(config.clone()))
            .max_size(pool_size)
            .build()
            .map_err(|error| Error::internal(format!("{name}: cannot build the connection pool: {error}")))?;
        let mut writer = runtime
            .block_on(pool.get())
            .map_err(|error| Error::internal(format!("cannot connect to {name}: {error}")))?;
        runtime.block_on(migrate(&mut writer, &name))?;
        let (writer_runtime, writer_pool, writer_name) = (runtime.clone(), pool.clone(), name.clone());
        let mut connection = Some(writer);
        // Tells this instance's announcements from the others'.
        let instance = format!("{:016x}", rand::random::<u64>());
        let writer_instance = instance.clone();
        let jobs = Queue::start(move |works| {
            // The writer's connection, taken again from the pool if it was lost.
            let client = match connection.take().filter(|client| !client.is_closed()) {
                Some(client) => client,
                None => writer_runtime.block_on(writer_pool.get()).map_err(|error| {
                    tracing::warn!(%error, "{writer_name} cannot be reached; {} write(s) failed", works.len());
                    Error::internal(format!("{writer_name} cannot be reached: {error}"))
                })?,
            };
            let mut attempt = 1;
            let outcomes = loop {
                let outcomes = run_batch(&writer_runtime, &client, works, &writer_instance);
                if let Err(error) = &outcomes {
                    // Whatever happened, nothing of the batch is committed.
                    let _ = writer_runtime.block_on(client.batch_execute("ROLLBACK"));
                    if is_deadlock_or_serialization(error) && attempt < BATCH_ATTEMPTS {
                        // Another instance's transaction and this batch were in each
                        // other's way; one of them gave up. Run the batch again a little later.
                        tracing::debug!(attempt, error = %error.detail(), "write batch rolled back; running it again");
                        std::thread::sleep(Duration::from_millis(rand::random_range(1..=10) * attempt));
                        attempt += 1;
                        continue;
                    }
                }
                break outcomes;
            };
            connection = Some(client);
            outcomes
        })?;
        let (held, lease) = tokio::sync::watch::channel(false);
        let keeper = tokio_util::sync::CancellationToken::new();
        let (tried, first_try) = tokio::sync::oneshot::channel();
        runtime.spawn(keep_lease(config.clone(), tls.clone(), held, keeper.clone(), name.clone(), Some(tried)));
        let (observed, foreign) = tokio::sync::mpsc::unbounded_channel();
        runtime.spawn(shared::listen(config, tls, pool.clone(), instance, observed, keeper.clone(), name.clone()));
        // A lone instance holds the lease from its start (its first rounds are not skipped).
        let _ = runtime.block_on(tokio::time::timeout(Duration::from_secs(5), first_try));
        Ok(PostgresStore {
            runtime,
            pool,
            name,
            jobs,
            lease: Lease::watching(lease),
            keeper: keeper.clone(),
            _keeper_guard: keeper.drop_guard(),
            foreign: std::sync::Mutex::new(Some(foreign)),
        })
    }
}

/// Bring the schema to the version this build writes, in one transaction, one instance
/// at a time; refuse a database written by a newer build.
async fn migrate(client: &mut Object, database: &str) -> Result<()> {
    let failed = |error: tokio_postgres::Error| Error::internal(format!("{database} cannot be opened: {error}"));
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(failed)?;
    let row = tx
        .query_one("SELECT to_regclass('meta') IS NOT NULL, to_regclass('resources') IS NOT NULL", &[])
        .await
        .map_err(failed)?;
    let (has_meta, has_resources): (bool, bool) = (row.get(0), row.get(1));
    let recorded: Option<String> = if has_meta {
        tx.query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .await
            .map_err(failed)?
            .map(|row| row.get(0))
    } else {
        None
    };
    let found = migrations::version_of(recorded.as_deref(), has_resources, database)?;
    let latest = migrations::latest();
    for migration in migrations::pending(found, database, "database.url")? {
        tx.batch_execute(migration.postgres).await.map_err(|error| migrations::failed(migration, database, error))?;
    }
    if found < latest {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
            &[&latest.to_string()],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    if found > 0 && found < latest {
        tracing::info!(from = found, to = latest, "{database}: schema upgraded");
    }
    Ok(())
}

/// One batch in one transaction, a savepoint per job; the outcomes once committed. A job
/// that found a row changed by another instance since it read it runs again (it then
/// reads what the other committed); a deadlock or a serialization failure rolls the whole
/// batch back (the caller runs it again).
fn run_batch(
    runtime: &Handle,
    client: &Object,
    works: &mut [WriteWork],
    instance: &str,
) -> Result<Vec<Result<ChangeSet>>> {
    let statement = |sql: &'static str| runtime.block_on(client.batch_execute(sql)).map_err(Error::from);
    // Statements that need no answer of their own go with the next one, in one round trip:
    // BEGIN with the first savepoint, a job's RELEASE with the next one's SAVEPOINT; the
    // last savepoint is released by the COMMIT.
    let mut opening = "BEGIN; SAVEPOINT job";
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works.iter_mut() {
        let mut attempt = 1;
        let outcome = loop {
            statement(opening)?;
            opening = "SAVEPOINT job";
            let versions = RefCell::default();
            // Optimistic first; a job run again locks what it reads, so it cannot lose again.
            let lock = attempt > 1;
            let outcome = writer::run_job(|changes, enqueued| {
                work(&mut PgTx {
                    runtime,
                    client,
                    changes: Some(changes),
                    enqueued,
                    versions: &versions,
                    lock,
                    begin: Cell::new(None),
                })
            });
            match outcome {
                Ok(changes) => {
                    opening = "RELEASE SAVEPOINT job; SAVEPOINT job";
                    break Ok(changes);
                }
                Err(error) => {
                    // Undo this job alone; the others of the batch stand.
                    statement("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?;
                    if is_deadlock_or_serialization(&error) {
                        return Err(error);
                    }
                    if changed_meanwhile(&error) && attempt < JOB_ATTEMPTS {
                        attempt += 1;
                        continue;
                    }
                    break Err(error);
                }
            }
        };
        outcomes.push(outcome);
    }
    // Told to the other instances with the commit (a NOTIFY is delivered when it commits).
    for payload in shared::announcements(instance, &outcomes) {
        runtime.block_on(client.execute("SELECT pg_notify($1, $2)", &[&shared::CHANNEL, &payload]))?;
    }
    statement("COMMIT")?;
    Ok(outcomes)
}

/// Times a batch is run when it meets deadlocks or serialization failures.
const BATCH_ATTEMPTS: u64 = 8;
/// Times a job is run when rows it read were changed meanwhile by another instance.
const JOB_ATTEMPTS: u32 = 16;

/// A row this transaction read was changed by another one before this one could update
/// it: the job runs again (reading the other's change), so no update is lost.
#[derive(Debug, thiserror::Error)]
#[error("{0} was changed by another transaction meanwhile")]
pub(super) struct ChangedMeanwhile(pub String);

fn changed_meanwhile(error: &Error) -> bool {
    error.cause::<ChangedMeanwhile>().is_some()
}

fn is_deadlock_or_serialization(error: &Error) -> bool {
    error
        .cause::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE)
}

impl Store for PostgresStore {
    fn read(&self, work: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()> {
        let client = self
            .runtime
            .block_on(self.pool.get())
            .map_err(|error| Error::internal(format!("{} cannot be reached: {error}", self.name)))?;
        let runtime = &self.runtime;
        let versions = RefCell::default();
        let mut enqueued = 0;
        let tx = PgTx {
            runtime,
            client: &client,
            changes: None,
            enqueued: &mut enqueued,
            versions: &versions,
            lock: false,
            begin: Cell::new(Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&tx)));
        let begun = tx.begun();
        let outcome = match outcome {
            // Read all it wanted: the caller goes on while the snapshot is let go (nothing
            // to keep; the connection returns to the pool after its COMMIT, and one whose
            // COMMIT fails is dropped, never reused inside a transaction).
            Ok(Ok(())) => {
                if begun {
                    runtime.spawn(async move {
                        if let Err(error) = client.batch_execute("COMMIT").await {
                            tracing::debug!(%error, "a read transaction did not end; its connection is dropped");
                            drop(Object::take(client));
                        }
                    });
                }
                return Ok(());
            }
            outcome => outcome,
        };
        // Failed (or panicked): the transaction ends before the connection goes back.
        if begun && runtime.block_on(client.batch_execute("ROLLBACK")).is_err() {
            drop(Object::take(client));
        }
        outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    fn write(&self, job: WriteJob) {
        self.jobs.send(job);
    }

    fn on_commit(&self, hook: super::CommitHook) {
        self.jobs.on_commit(hook);
    }

    fn lease(&self) -> Lease {
        self.lease.clone()
    }

    fn release_lease(&self) {
        self.keeper.cancel();
    }

    fn foreign_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ChangeSet>> {
        self.foreign.lock().ok()?.take()
    }
}
