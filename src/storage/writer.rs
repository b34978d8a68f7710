//! The writer thread both backends share: write jobs are queued, taken in batches (every
//! job waiting, up to [`MAX_BATCH`]), run by the backend in one transaction with a
//! savepoint each, and told their outcomes only once the batch is committed. So
//! concurrent writers share the cost of durability, nobody hears "done" before the data is
//! committed, and change sets are published in commit order.

use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use super::{Change, ChangeSet, WriteJob, WriteWork};
use crate::error::{Error, Result};

/// Most write jobs committed together.
pub(crate) const MAX_BATCH: usize = 512;

/// Told every batch's size and how long its transaction took, commit included.
pub type CommitHook = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// The queue of the writer thread; the thread ends when this is dropped.
pub(crate) struct Queue(Mutex<mpsc::Sender<WriteJob>>, Arc<OnceLock<CommitHook>>);

impl Queue {
    /// Start the writer thread. `commit` runs a batch in one transaction (again, if it must)
    /// and answers each job's outcome, in order, once the transaction is committed, or an
    /// error when the batch as a whole failed (then every job fails with it).
    pub(crate) fn start(
        mut commit: impl FnMut(&mut [WriteWork]) -> Result<Vec<Result<ChangeSet>>> + Send + 'static,
    ) -> Result<Queue> {
        let (jobs, queue) = mpsc::channel::<WriteJob>();
        let hook: Arc<OnceLock<CommitHook>> = Arc::default();
        let told = hook.clone();
        std::thread::Builder::new()
            .name("acme-db-writer".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let (mut works, dones): (Vec<_>, Vec<_>) =
                        batch.into_iter().map(|job| (job.work, job.done)).unzip();
                    let began = Instant::now();
                    let committed = commit(&mut works);
                    if let Some(hook) = told.get() {
                        // A hook that panics costs its report, never the writer.
                        let report = || hook(works.len(), began.elapsed());
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(report));
                    }
                    match committed {
                        Ok(outcomes) => {
                            for (done, outcome) in dones.into_iter().zip(outcomes) {
                                done(outcome);
                            }
                        }
                        Err(error) => {
                            for done in dones {
                                done(Err(Error::internal(format!("commit failed: {}", error.detail()))));
                            }
                        }
                    }
                }
            })
            .map_err(|error| Error::internal(format!("cannot start the database writer: {error}")))?;
        Ok(Queue(Mutex::new(jobs), hook))
    }

    /// Tell `hook` about every batch from now on (the first hook set stays).
    pub(crate) fn on_commit(&self, hook: CommitHook) {
        let _ = self.1.set(hook);
    }

    pub(crate) fn send(&self, job: WriteJob) {
        let sent = match self.0.lock() {
            Ok(jobs) => jobs.send(job).map_err(|mpsc::SendError(job)| job),
            Err(_) => Ok(()),
        };
        if let Err(job) = sent {
            (job.done)(Err(Error::internal("the database writer has stopped")));
        }
    }
}

/// Run one job: `run` gives its work a transaction that records into the change set. A
/// panicking job is that job's failure, never the writer's end.
pub(crate) fn run_job(run: impl FnOnce(&mut Vec<Change>, &mut usize) -> Result<()>) -> Result<ChangeSet> {
    let mut changes = Vec::new();
    let mut enqueued = 0;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut changes, &mut enqueued)))
        .unwrap_or_else(|_| Err(Error::internal("a write job panicked")))?;
    Ok(ChangeSet { changes, enqueued })
}
