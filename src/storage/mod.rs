//! Durable storage of resources behind one trait.
//!
//! [`Store`] is the backend seam (SQLite today, see `sqlite.rs`). Work is done in
//! transactions: a closure gets a [`ReadTx`] (on a blocking thread) or a [`WriteTx`] (on the
//! store's writer thread, group-committed), never on the async workers. A write closure that returns `Err` is rolled back, so a
//! multi-step change (a CIN, its container's counters, the eviction of old CINs) is all or
//! nothing. Nothing outside this module touches the database.

mod sqlite;

use std::sync::Arc;

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
    /// Resources whose `et` is before `now` (both in stored timestamp form).
    fn expired(&self, now: &str, limit: usize) -> Result<Vec<Resource>>;
}

/// Changes inside a transaction (committed when the closure returns `Ok`).
pub trait WriteTx: ReadTx {
    fn insert(&mut self, resource: &Resource) -> Result<()>;
    /// Replace the stored resource with the same `ri`.
    fn update(&mut self, resource: &Resource) -> Result<()>;
    /// Delete the resource and everything below it; returns how many were deleted.
    fn delete_subtree(&mut self, resource: &Resource) -> Result<usize>;
}

/// What a write job does inside the transaction.
pub type WriteWork = Box<dyn FnOnce(&mut dyn WriteTx) -> Result<()> + Send>;
/// What is told the outcome of a write job, once committed (or failed).
pub type WriteDone = Box<dyn FnOnce(Result<()>) + Send>;

/// A write to run: `work` in a transaction, then `done` with the outcome once it is
/// committed (or failed).
pub struct WriteJob {
    pub work: WriteWork,
    pub done: WriteDone,
}

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// Run `work` in a read transaction, on the calling thread (which may block).
    fn read(&self, work: &mut dyn FnMut(&dyn ReadTx) -> Result<()>) -> Result<()>;
    /// Queue a write; the backend calls `job.done` when its outcome is durable (or failed).
    fn write(&self, job: WriteJob);
}

/// The shared handle to the store. Cloning is cheap.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn Store>,
}

impl Storage {
    /// Open the configured store: a SQLite file, or SQLite in memory.
    pub fn open(config: &DatabaseConfig) -> Result<Storage> {
        let store = match &config.path {
            Some(path) => SqliteStore::open(path, config.durability)?,
            None => SqliteStore::in_memory()?,
        };
        Ok(Storage { store: Arc::new(store) })
    }

    pub fn from_store(store: Arc<dyn Store>) -> Storage {
        Storage { store }
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

    /// Run `work` in a write transaction (on the store's writer) and wait until it is
    /// committed. An `Err` from `work` rolls back what it did, and only that.
    pub async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn WriteTx) -> Result<T> + Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.submit(work, move |outcome| {
            let _ = sender.send(outcome);
        });
        receiver.await.map_err(|_| Error::internal("the database writer dropped a write"))?
    }

    fn submit<T, F>(&self, work: F, done: impl FnOnce(Result<T>) + Send + 'static)
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn WriteTx) -> Result<T> + Send + 'static,
    {
        let slot = Arc::new(std::sync::Mutex::new(None));
        let output = slot.clone();
        self.store.write(WriteJob {
            work: Box::new(move |tx| {
                let value = work(tx)?;
                if let Ok(mut output) = output.lock() {
                    *output = Some(value);
                }
                Ok(())
            }),
            done: Box::new(move |outcome| {
                let value = outcome.and_then(|()| {
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

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| Error::internal(format!("storage task failed: {error}")))?
}
