//! Durable storage of resources behind one trait.
//!
//! [`Store`] is the backend seam (SQLite today, see `sqlite.rs`). Work is done in
//! transactions: a closure gets a [`ReadTx`] (on a blocking thread) or a [`WriteTx`] (on the
//! store's writer thread, group-committed), never on the async workers. A write closure
//! that returns `Err` is rolled back, so a multi-step change (a CIN, its container's
//! counters, the eviction of old CINs) is all or nothing. Nothing outside this module
//! touches the database.
//!
//! **Changes come from the commit.** Every write transaction records what it created,
//! updated and deleted (a [`ChangeSet`]). Once it is committed, and before its caller hears
//! "done", the set goes to the [`Observer`]s (synchronously, on the writer thread, in commit
//! order: for small in-memory state such as the routing table) and then to the
//! subscribers of [`Storage::changes_of`] the types it touched (a broadcast per type, so a
//! subscriber is woken only by what it follows; one that lags resynchronises from the
//! store). So nothing that happened is lost because a request's future was dropped after
//! the commit.

mod cache;
mod lockfile;
mod migrations;
mod outbox;
mod postgres;
mod row;
mod sqlite;
mod writer;

pub use writer::CommitHook;

pub(crate) use cache::{Held, Representation};
pub(crate) use outbox::{Busy, Due, StoredPending, select_due};
pub(crate) use row::{by_type_index, is_announced, stored_resource};

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::config::DatabaseConfig;
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType};

/// Queries inside a transaction.
pub trait ReadTx {
    fn get(&self, ri: &str) -> Result<Option<Resource>>;
    fn get_by_path(&self, path: &str) -> Result<Option<Resource>>;
    /// Children of `pi` in creation order, optionally of one type only.
    fn children(&self, pi: &str, ty: Option<ResourceType>) -> Result<Vec<Resource>>;
    /// The newest (`newest = true`) or oldest child of `pi` of type `ty`.
    fn edge_child(&self, pi: &str, ty: ResourceType, newest: bool) -> Result<Option<Resource>>;
    /// Visit the resources below `path` (not the one at `path`) in path order, at most
    /// `max_depth` levels down. `visit` gets each resource with the size of its stored form
    /// and says whether to go on, so a caller that has enough stops the scan there and
    /// never holds more than it keeps.
    fn walk_below(
        &self,
        path: &str,
        max_depth: Option<usize>,
        visit: &mut dyn FnMut(Resource, usize) -> Result<bool>,
    ) -> Result<()>;
    fn by_type(&self, ty: ResourceType) -> Result<Vec<Resource>>;
    /// The resources whose `at` lists a CSE (announced, or to be), in creation order:
    /// found by an index, without reading any other resource.
    fn announced(&self) -> Result<Vec<Resource>>;
    /// Resources whose `et` is before `now` (both in stored timestamp form).
    fn expired(&self, now: &str, limit: usize) -> Result<Vec<Resource>>;
    /// Resources of type `ty` at `path` or below it.
    fn of_type_below(&self, path: &str, ty: ResourceType) -> Result<Vec<Resource>>;
    /// What may be sent at `now`: for every target, its notifications in order up to the
    /// first that is not due (a retry waiting), at most `per_target` of them, `limit` in
    /// all; batches still gathering and the targets in `busy` (a sender is still at them)
    /// are passed over. Also when the next of the rest is due.
    fn outbox_due(&self, now: &str, per_target: usize, limit: usize, busy: &Busy) -> Result<Due>;
    /// How many notifications wait for `target`.
    fn outbox_count(&self, target: &str) -> Result<usize>;
    /// How many notifications wait, for every target.
    fn outbox_total(&self) -> Result<usize>;
    /// The batch of `subscription` for `target` being gathered: how many it holds, and
    /// when it is due.
    fn outbox_batch(&self, target: &str, subscription: &str) -> Result<(usize, Option<String>)>;
    /// The addresses of every instance serving the database (their `poa`s), sorted, once each.
    fn instance_addresses(&self) -> Result<Vec<String>>;
}

/// A notification in the outbox: written in the transaction of the change that caused
/// it, deleted once delivered (or given up).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its place in the outbox: notifications to one target go in this order.
    pub seq: i64,
    /// Where it goes: a URL, or the ID of an entity or resource (a `nu` entry).
    pub target: String,
    /// The subscription it is about (`ri`).
    pub subscription: String,
    /// The request ID every attempt carries, so that a receiver can drop repeats.
    pub rqi: String,
    /// The NOTIFY content.
    pub content: Value,
    /// When it was written, and when it may be sent next (stored timestamp form).
    pub created: String,
    pub due: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Held for a batch of its subscription to its target (sent together once `due`).
    pub batch: bool,
}

/// Changes inside a transaction (committed when the closure returns `Ok`); each is recorded
/// in the transaction's [`ChangeSet`].
pub trait WriteTx: ReadTx {
    fn insert(&mut self, resource: &Resource) -> Result<()>;
    /// Replace the stored resource with the same `ri`.
    fn update(&mut self, resource: &Resource) -> Result<()>;
    /// Delete the resource and everything below it; returns how many were deleted.
    fn delete_subtree(&mut self, resource: &Resource) -> Result<usize>;
    /// Put a notification in the outbox (`seq` is assigned); the commit wakes the sender.
    fn enqueue(&mut self, notification: &Pending) -> Result<()>;
    /// Remove a notification from the outbox (delivered, or given up).
    fn dequeue(&mut self, seq: i64) -> Result<()>;
    /// Try a notification again at `due`, after `attempts` failures (its claim ends).
    fn reschedule(&mut self, seq: i64, attempts: u32, due: &str) -> Result<()>;
    /// Of the notifications `seqs`, those `claimant` may take at `now`: claimed by nobody,
    /// by itself, or by a claim that has ended. Rows another transaction holds are skipped,
    /// not waited for (`FOR UPDATE SKIP LOCKED` on PostgreSQL); the rows returned are
    /// locked until the commit.
    fn claimable(&mut self, seqs: &[i64], claimant: &str, now: &str) -> Result<Vec<i64>>;
    /// Claim the notifications `seqs` for `claimant` until `until`, or release them (`None`).
    fn claim(&mut self, seqs: &[i64], claim: Option<(&str, &str)>) -> Result<()>;
    /// [`ReadTx::outbox_due`] for a sender among several (a database shared by instances):
    /// what is due and not claimed by another sender, claimed for `claimant` until
    /// `until`. A target whose next notification another sender holds is passed over
    /// whole, so that its notifications still go in order, each sent by one sender.
    fn claim_due(
        &mut self,
        now: &str,
        per_target: usize,
        limit: usize,
        busy: &Busy,
        claimant: &str,
        until: &str,
    ) -> Result<Due> {
        let (due, next) = self.outbox_due(now, per_target, limit, busy)?;
        let seqs: Vec<i64> = due.iter().map(|pending| pending.seq).collect();
        let free: std::collections::HashSet<i64> = self.claimable(&seqs, claimant, now)?.into_iter().collect();
        let mut held_elsewhere: Option<String> = None;
        let mut taken = Vec::with_capacity(due.len());
        for pending in due {
            if held_elsewhere.as_deref() == Some(pending.target.as_str()) {
                continue;
            }
            if free.contains(&pending.seq) {
                taken.push(pending);
            } else {
                held_elsewhere = Some(pending.target.clone());
            }
        }
        let seqs: Vec<i64> = taken.iter().map(|pending| pending.seq).collect();
        self.claim(&seqs, Some((claimant, until)))?;
        Ok((taken, next))
    }
    /// Keep the newest `keep` notifications of `target`; returns how many were dropped.
    fn trim_outbox(&mut self, target: &str, keep: usize) -> Result<usize>;
    /// Make the batches of `subscription` (for `target`, or every target) due at `due`.
    fn release_batch(&mut self, subscription: &str, target: Option<&str>, due: &str) -> Result<()>;
    /// This instance (`id`) serves the database at `poa`, as of `seen`.
    fn set_instance(&mut self, id: &str, poa: &[String], seen: &str) -> Result<()>;
    /// Forget the instances not seen since `before` (all others, with `before` = now), and
    /// `gone` if given.
    fn forget_instances(&mut self, before: &str, gone: Option<&str>) -> Result<()>;
}

/// The union of instances' `poa` lists as stored (JSON arrays), sorted, once each.
pub(crate) fn addresses_of(stored: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut addresses: Vec<String> =
        stored.into_iter().filter_map(|poa| serde_json::from_str::<Vec<String>>(&poa).ok()).flatten().collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// One change of a committed transaction.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Change {
    Created(Arc<Resource>),
    /// The resource as it is now.
    Updated(Arc<Resource>),
    /// The resource was deleted with everything below it.
    Deleted(Arc<Resource>),
}

impl Change {
    pub fn resource(&self) -> &Arc<Resource> {
        match self {
            Change::Created(resource) | Change::Updated(resource) | Change::Deleted(resource) => resource,
        }
    }
}

/// What one committed write transaction changed, in order.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub changes: Vec<Change>,
    /// Notifications it put in the outbox.
    pub enqueued: usize,
}

/// Hears every committed change set, on the writer thread, before the writer's caller
/// does. Must be quick and must not block: in-memory bookkeeping only.
pub trait Observer: Send + Sync {
    fn committed(&self, changes: &ChangeSet);
}

/// What a write job does inside the transaction. It may be run again, from the start, when
/// the backend had to roll its transaction back for a reason that is not the job's (a
/// deadlock or a serialization failure between instances): it must do the same each time.
pub type WriteWork = Box<dyn FnMut(&mut dyn WriteTx) -> Result<()> + Send>;
/// What is told the outcome of a write job, once committed (or failed): what it changed.
pub type WriteDone = Box<dyn FnOnce(Result<ChangeSet>) + Send>;

/// A write to run: `work` in a transaction, then `done` with the outcome once it is
/// committed (or failed).
pub struct WriteJob {
    pub work: WriteWork,
    pub done: WriteDone,
}

/// Whether this instance may do the work that exactly one instance of a shared database
/// does (the registration monitor and liveliness, expiry, sending notifications): always,
/// for a store only this process uses (SQLite); for PostgreSQL, while this instance holds
/// the database's lease. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Lease {
    held: tokio::sync::watch::Receiver<bool>,
    shared: bool,
}

impl Lease {
    /// Held for good: the store is this process's alone.
    pub fn always() -> Lease {
        let (_, held) = tokio::sync::watch::channel(true);
        Lease { held, shared: false }
    }

    /// Held while `held` says so (sent by the backend's lease keeper).
    pub fn watching(held: tokio::sync::watch::Receiver<bool>) -> Lease {
        Lease { held, shared: true }
    }

    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves once the lease is held (at once if it is; never if it cannot be any more).
    pub async fn acquired(&self) {
        let mut held = self.held.clone();
        if held.wait_for(|held| *held).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Other instances may write to the same database.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// Run `work` in a read transaction, on the calling thread (which may block).
    fn read(&self, work: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()>;
    /// Queue a write; the backend calls `job.done` when its outcome is durable (or failed).
    fn write(&self, job: WriteJob);
    /// The lease on singleton work (see [`Lease`]).
    fn lease(&self) -> Lease {
        Lease::always()
    }
    /// Give the lease up for good (the CSE stopped), so that another instance takes it at
    /// once rather than when this store is dropped.
    fn release_lease(&self) {}
    /// What other instances of a shared database committed, as change sets (the routing
    /// registry's types only, and how many notifications they put in the outbox), published
    /// like this instance's commits (the [`Observer`]s, the subscribers of their types, the
    /// notification sender); `None` when nobody else writes (or after the first call).
    fn foreign_changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<ChangeSet>> {
        None
    }
    /// Tell `hook` the size and duration of every write batch (metrics).
    fn on_commit(&self, _hook: CommitHook) {}
}

/// The shared handle to the store. Cloning is cheap.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
    /// Who hears committed changes, and how.
    fanout: Arc<Fanout>,
    /// Resources read by name, for [`Storage::read_cached`]; only for a store this process
    /// alone writes (see `cache.rs`).
    cache: Option<Arc<cache::Cache>>,
}

/// Where the change sets of a set of resource types go.
type ChangeSender = broadcast::Sender<Arc<ChangeSet>>;

/// Where committed change sets go.
#[derive(Default)]
struct Fanout {
    observers: std::sync::RwLock<Vec<Arc<dyn Observer>>>,
    /// Per set of resource types, the subscribers of their changes (one channel per set:
    /// a channel's backlog is allocated whole when it is made).
    by_type: std::sync::RwLock<Vec<(Vec<ResourceType>, ChangeSender)>>,
    /// Woken by every commit that put notifications in the outbox.
    outbox: tokio::sync::Notify,
}

/// The resource cache in numbers: resources held in memory for RETRIEVE, and how often a
/// read was answered from them ([`crate::Cse::cache_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Resources held.
    pub held: usize,
    /// Reads answered from memory alone.
    pub hits: u64,
    /// Reads that needed a database transaction.
    pub misses: u64,
}

/// Change sets a slow subscriber may fall behind by before it sees `Lagged`.
const CHANGE_BACKLOG: usize = 4096;

impl Storage {
    /// Open the configured store: PostgreSQL, a SQLite file, or SQLite in memory. Called on
    /// a blocking thread of the runtime (PostgreSQL's connections are served by its tasks).
    pub fn open(config: &DatabaseConfig) -> Result<Storage> {
        let store: Arc<dyn Store> = match (&config.url, &config.path) {
            (Some(url), _) => Arc::new(PostgresStore::open(url, config.pool_size, config.ca_file.as_deref())?),
            (None, Some(path)) => Arc::new(SqliteStore::open(path, config.durability)?),
            (None, None) => Arc::new(SqliteStore::in_memory()?),
        };
        Ok(Storage::from_store(store))
    }

    pub fn from_store(store: Arc<dyn Store>) -> Storage {
        let fanout: Arc<Fanout> = Arc::default();
        if let (Some(mut foreign), Ok(runtime)) = (store.foreign_changes(), tokio::runtime::Handle::try_current()) {
            let observed = fanout.clone();
            runtime.spawn(async move {
                while let Some(changes) = foreign.recv().await {
                    observed.publish(changes);
                }
            });
        }
        // Another instance's commits reach this one after they are acknowledged, so a cache
        // could not be kept true by them: a shared database is read every time.
        let cache = (!store.lease().is_shared()).then(|| Arc::new(cache::Cache::new(cache::CAPACITY, cache::BUDGET)));
        if let (Some(cache), Ok(mut observers)) = (&cache, fanout.observers.write()) {
            // First, so that no observer reads what a commit replaced.
            observers.push(cache.clone());
        }
        Storage { store, fanout, cache }
    }

    /// What [`Storage::read_cached`] held and did so far (zeros without a cache).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.as_ref().map_or_else(CacheStats::default, |cache| CacheStats {
            held: cache.len(),
            hits: cache.hits.load(std::sync::atomic::Ordering::Relaxed),
            misses: cache.misses.load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Tell `hook` the size and duration of every write batch from now on.
    pub fn on_commit(&self, hook: CommitHook) {
        self.store.on_commit(hook);
    }

    /// Let `observer` hear every change set committed from now on, before the writer's
    /// caller does.
    pub fn observe(&self, observer: Arc<dyn Observer>) {
        if let Ok(mut observers) = self.fanout.observers.write() {
            observers.push(observer);
        }
    }

    /// The changes of resources of type `ty` committed from now on, one set per commit
    /// that touched any (a subscriber that falls behind sees `Lagged` and must
    /// resynchronise from the store). Commits of other types do not wake it.
    pub fn changes_of(&self, ty: ResourceType) -> broadcast::Receiver<Arc<ChangeSet>> {
        self.changes_of_any(&[ty])
    }

    /// The changes of resources of any of `types` committed from now on, one set per
    /// commit that touched any, in commit order across the types (unlike one receiver per
    /// type, which a subscriber would have to merge, with no order between them).
    pub fn changes_of_any(&self, types: &[ResourceType]) -> broadcast::Receiver<Arc<ChangeSet>> {
        let Ok(mut by_type) = self.fanout.by_type.write() else {
            // Poisoned: nothing will be published either; a closed channel says so.
            return broadcast::channel(1).1;
        };
        if let Some((_, sender)) = by_type.iter().find(|(of, _)| of.as_slice() == types) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(CHANGE_BACKLOG);
        by_type.push((types.to_vec(), sender));
        receiver
    }

    /// The lease on the work only one instance does (see [`Lease`]).
    pub fn lease(&self) -> Lease {
        self.store.lease()
    }

    /// Give the lease up for good: the CSE has stopped.
    pub fn release_lease(&self) {
        self.store.release_lease();
    }

    /// Resolves after a commit put notifications in the outbox (a wake-up is kept if
    /// nobody waits, so none is missed by a sender that was busy).
    pub async fn outbox_filled(&self) {
        self.fanout.outbox.notified().await;
    }

    /// Run `work` in a read transaction on a blocking thread.
    pub async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadTx) -> Result<T> + Send + 'static,
    {
        let storage = self.clone();
        blocking(move || storage.read_blocking(work)).await
    }

    /// [`Storage::read`] for work that mostly reads resources by name (`get`,
    /// `get_by_path`): first on the calling thread over the resources held in memory; only
    /// when it needs anything else, in a read transaction on a blocking thread, whose
    /// `get`s then fill the cache. `work` must only read: it may run twice.
    pub async fn read_cached<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn ReadTx) -> Result<T> + Send + 'static,
    {
        let Some(cache) = &self.cache else {
            return self.read(work).await;
        };
        match work(&cache::CachedTx(cache)) {
            Err(error) if cache::is_miss(&error) => {
                cache.misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            answered => {
                cache.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return answered;
            }
        }
        let cache = cache.clone();
        // Taken before the transaction begins: see `Cache::fill`.
        let generation = cache.generation();
        self.read(move |tx| work(&cache::FillingTx { tx, cache: &cache, generation })).await
    }

    /// `work` over the resources held in memory alone, given the entry held for `name` (a
    /// structured path, or else a resource ID): `None` when that is not held, or when
    /// `work` needed anything that is not (the caller then reads through a transaction).
    pub(crate) fn with_held<T>(
        &self,
        name: &str,
        structured: bool,
        work: impl FnOnce(&dyn ReadTx, &Held) -> Result<T>,
    ) -> Option<Result<T>> {
        let cache = self.cache.as_ref()?;
        let held = if structured { cache.held_by_path(name) } else { cache.held(name) }?;
        match work(&cache::CachedTx(cache), &held) {
            Err(error) if cache::is_miss(&error) => None,
            answered => {
                cache.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(answered)
            }
        }
    }

    /// Run `work` in a write transaction (on the store's writer) and wait until it is
    /// committed. An `Err` from `work` rolls back what it did, and only that. `work` may
    /// run more than once (see [`WriteWork`]); what it leaves is from its last run.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn WriteTx) -> Result<T> + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.submit(work, move |outcome| {
            let _ = sender.send(outcome);
        });
        receiver.await.map_err(|_| Error::internal("the database writer dropped a write"))?
    }

    fn submit<T, F>(&self, mut work: F, done: impl FnOnce(Result<T>) + Send + 'static)
    where
        T: Send + 'static,
        F: FnMut(&mut dyn WriteTx) -> Result<T> + Send + 'static,
    {
        let slot = Arc::new(std::sync::Mutex::new(None));
        let output = slot.clone();
        let fanout = self.fanout.clone();
        self.store.write(WriteJob {
            work: Box::new(move |tx| {
                let value = work(tx)?;
                if let Ok(mut output) = output.lock() {
                    *output = Some(value);
                }
                Ok(())
            }),
            done: Box::new(move |outcome| {
                let value = outcome.and_then(|changes| {
                    fanout.publish(changes);
                    slot.lock()
                        .ok()
                        .and_then(|mut slot| slot.take())
                        .ok_or_else(|| Error::internal("write transaction produced nothing"))
                });
                done(value);
            }),
        });
    }

    /// [`Storage::read`] for code already on a blocking thread.
    pub fn read_blocking<T>(&self, work: impl FnOnce(&dyn ReadTx) -> Result<T>) -> Result<T> {
        let mut work = Some(work);
        let mut output = None;
        self.store.read(&mut |tx| {
            let work = work.take().ok_or_else(|| Error::internal("read transaction retried"))?;
            output = Some(work(tx)?);
            Ok(())
        })?;
        output.ok_or_else(|| Error::internal("read transaction produced nothing"))
    }

    pub async fn get(&self, ri: &str) -> Result<Option<Resource>> {
        let ri = ri.to_string();
        self.read(move |tx| tx.get(&ri)).await
    }
}

impl Fanout {
    /// A change set to the observers.
    fn observe(&self, changes: &ChangeSet) {
        if let Ok(observers) = self.observers.read() {
            for observer in observers.iter() {
                observer.committed(changes);
            }
        }
    }

    /// A committed change set (this instance's, or another's announced to it): to the
    /// observers, then to the subscribers of its types.
    fn publish(&self, changes: ChangeSet) {
        if changes.enqueued > 0 {
            self.outbox.notify_one();
        }
        if changes.changes.is_empty() {
            return;
        }
        self.observe(&changes);
        let Ok(by_type) = self.by_type.read() else { return };
        for (types, sender) in by_type.iter() {
            let of_type: Vec<Change> =
                changes.changes.iter().filter(|change| types.contains(&change.resource().ty)).cloned().collect();
            if !of_type.is_empty() && sender.receiver_count() > 0 {
                let _ = sender.send(Arc::new(ChangeSet { changes: of_type, enqueued: 0 }));
            }
        }
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| Error::internal(format!("storage task failed: {error}")))?
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn resource(ty: ResourceType, ri: &str) -> Resource {
        let mut attributes = Map::new();
        attributes.insert("ri".into(), json!(ri));
        attributes.insert("pi".into(), json!(""));
        Resource { ty, attributes, path: ri.to_string(), creator: None }
    }

    #[tokio::test]
    async fn a_subscriber_hears_only_the_changes_of_its_type() {
        let storage = Storage::open(&DatabaseConfig::default()).expect("in-memory store");
        let mut csrs = storage.changes_of(ResourceType::Csr);
        let cnt = resource(ResourceType::Cnt, "cnt1");
        storage.write(move |tx| tx.insert(&cnt)).await.expect("commit");
        assert!(csrs.try_recv().is_err(), "a commit of containers does not wake it");
        let (csr, cnt) = (resource(ResourceType::Csr, "id-mn"), resource(ResourceType::Cnt, "cnt2"));
        storage.write(move |tx| tx.insert(&cnt).and_then(|()| tx.insert(&csr))).await.expect("commit");
        let committed = csrs.try_recv().expect("the CSR's commit");
        assert_eq!(committed.changes.len(), 1);
        assert_eq!(committed.changes[0].resource().ri(), "id-mn");
    }

    #[tokio::test]
    async fn a_subscriber_of_several_types_hears_them_in_commit_order_on_one_receiver() {
        let storage = Storage::open(&DatabaseConfig::default()).expect("in-memory store");
        let mut both = storage.changes_of_any(&[ResourceType::Cnt, ResourceType::Cin]);
        let mut csrs = storage.changes_of(ResourceType::Csr);
        let (cnt, ae) = (resource(ResourceType::Cnt, "cnt1"), resource(ResourceType::Ae, "ae1"));
        storage.write(move |tx| tx.insert(&cnt).and_then(|()| tx.insert(&ae))).await.expect("commit");
        let (cin, csr) = (resource(ResourceType::Cin, "cin1"), resource(ResourceType::Csr, "id-mn"));
        storage.write(move |tx| tx.insert(&csr).and_then(|()| tx.insert(&cin))).await.expect("commit");
        let ris =
            |set: &ChangeSet| set.changes.iter().map(|change| change.resource().ri().to_string()).collect::<Vec<_>>();
        assert_eq!(ris(&both.try_recv().expect("the first commit")), ["cnt1"], "the AE is not among its types");
        assert_eq!(ris(&both.try_recv().expect("the second commit")), ["cin1"]);
        assert!(both.try_recv().is_err(), "one set per commit");
        assert_eq!(ris(&csrs.try_recv().expect("the CSR's commit")), ["id-mn"], "each subscriber has its own sets");
        let again = storage.changes_of_any(&[ResourceType::Cnt, ResourceType::Cin]);
        assert_eq!(
            storage.fanout.by_type.read().map(|by_type| by_type.len()).ok(),
            Some(2),
            "the same set shares its channel"
        );
        drop(again);
    }

    fn pending(target: &str, n: u32, due: &str) -> Pending {
        Pending {
            seq: 0,
            target: target.into(),
            subscription: "sub1".into(),
            rqi: format!("rqi{n}"),
            content: json!({"m2m:sgn": {"n": n}}),
            created: "20260101T000000,000000".into(),
            due: due.into(),
            attempts: 0,
            batch: false,
        }
    }

    #[tokio::test]
    async fn the_outbox_hands_out_the_oldest_of_each_target_in_order_and_keeps_its_bound() {
        let storage = Storage::open(&DatabaseConfig::default()).expect("in-memory store");
        storage
            .write(|tx| {
                for n in 0..4 {
                    tx.enqueue(&pending("http://a", n, "20260101T000000,000000"))?;
                }
                tx.enqueue(&pending("http://b", 9, "20250101T000000,000000"))
            })
            .await
            .expect("commit");
        const LATER: &str = "20990101T000000,000000";
        let (next, _) = storage.read(|tx| tx.outbox_due(LATER, 2, 10, &Busy::new())).await.expect("read");
        let names: Vec<(String, String)> = next.iter().map(|row| (row.target.clone(), row.rqi.clone())).collect();
        let expected = [("http://a", "rqi0"), ("http://a", "rqi1"), ("http://b", "rqi9")];
        assert_eq!(names, expected.map(|(target, rqi)| (target.to_string(), rqi.to_string())));
        // A target a sender is still at is passed over whole.
        let busy = Busy::from(["http://a".to_string()]);
        let (free, _) = storage.read(move |tx| tx.outbox_due(LATER, 2, 10, &busy)).await.expect("read");
        let targets: Vec<&str> = free.iter().map(|row| row.target.as_str()).collect();
        assert_eq!(targets, ["http://b"], "a is busy");
        let dropped = storage.write(|tx| tx.trim_outbox("http://a", 2)).await.expect("trim");
        assert_eq!(dropped, 2);
        let (heads, _) = storage.read(|tx| tx.outbox_due(LATER, 1, 10, &Busy::new())).await.expect("read");
        assert!(heads.iter().any(|head| head.rqi == "rqi2"), "the newest two of a are left: {heads:?}");
        let seq = heads.iter().find(|head| head.rqi == "rqi2").map(|head| head.seq).expect("seq");
        storage.write(move |tx| tx.dequeue(seq)).await.expect("dequeue");
        assert_eq!(storage.read(|tx| tx.outbox_count("http://a")).await.expect("count"), 1);
        // A target whose next notification waits for a retry holds back only itself.
        let (waiting, _) =
            storage.read(|tx| tx.outbox_due("20250601T000000,000000", 10, 10, &Busy::new())).await.expect("read");
        let targets: Vec<&str> = waiting.iter().map(|row| row.target.as_str()).collect();
        assert_eq!(targets, ["http://b"], "a's head is due in 2026 only");
        let (_, next) =
            storage.read(|tx| tx.outbox_due("20250601T000000,000000", 10, 10, &Busy::new())).await.expect("read");
        assert_eq!(next.as_deref(), Some("20260101T000000,000000"));
    }

    #[tokio::test]
    async fn a_claimed_notification_goes_to_no_other_sender_until_its_claim_ends_and_order_holds() {
        let storage = Storage::open(&DatabaseConfig::default()).expect("in-memory store");
        const DUE: &str = "20260101T000000,000000";
        const NOW: &str = "20260101T000001,000000";
        const CLAIMED_UNTIL: &str = "20260101T000010,000000";
        const AFTER_THE_CLAIM: &str = "20260101T000011,000000";
        storage
            .write(|tx| {
                tx.enqueue(&pending("http://a", 1, DUE))?;
                tx.enqueue(&pending("http://a", 2, DUE))?;
                tx.enqueue(&pending("http://b", 3, DUE))
            })
            .await
            .expect("commit");
        let claim = |claimant: &'static str, now: &'static str| {
            let storage = storage.clone();
            async move {
                let (taken, _) = storage
                    .write(move |tx| tx.claim_due(now, 10, 10, &Busy::new(), claimant, CLAIMED_UNTIL))
                    .await
                    .expect("claim");
                taken.into_iter().map(|row| row.rqi).collect::<Vec<_>>()
            }
        };
        assert_eq!(claim("x", NOW).await, ["rqi1", "rqi2", "rqi3"], "x takes everything due");
        assert!(claim("y", NOW).await.is_empty(), "y takes nothing x holds");
        assert_eq!(claim("x", NOW).await, ["rqi1", "rqi2", "rqi3"], "x may take its own again");
        // x gives back a's second only: y may still not take it before a's first (order).
        let (first, second) = storage
            .read(|tx| tx.outbox_due(NOW, 10, 10, &Busy::new()))
            .await
            .map(|(rows, _)| (rows[0].seq, rows[1].seq))
            .expect("read");
        storage.write(move |tx| tx.claim(&[second], None)).await.expect("release");
        assert!(claim("y", NOW).await.is_empty(), "a's first is still x's");
        storage.write(move |tx| tx.claim(&[first], None)).await.expect("release");
        assert_eq!(claim("y", NOW).await, ["rqi1", "rqi2"], "released: y takes a's in order");
        // b's claim by x has ended: y takes it over.
        assert_eq!(claim("y", AFTER_THE_CLAIM).await, ["rqi1", "rqi2", "rqi3"]);
        // A retry scheduled ends the claim.
        storage.write(move |tx| tx.reschedule(first, 1, DUE)).await.expect("reschedule");
        assert_eq!(claim("x", NOW).await, ["rqi1"], "x takes a's first again, not y's a's second");
    }
}
