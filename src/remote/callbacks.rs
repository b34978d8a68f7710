//! What the manager reports to embedders, in three forms over one source:
//! - a [`watch`] snapshot of every registrar relation ([`RegistrarView`]: status, address
//!   group and address in use), replaced on every change;
//! - a change stream ([`RemoteChanges`]): every status change and every local CSR added
//!   or removed, in order, nothing dropped;
//! - callbacks, a thin adapter on the stream: each has a thread of its own that runs its
//!   invocations in order, so a slow or panicking callback never holds up the CSE or
//!   another callback. A [`CallbackHandle`] unregisters one.
//!
//! Streams are unbounded, so nothing is lost: a subscriber that stops reading should drop
//! its stream (a callback: unregister).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::registrar::Registrar;
use super::{CsrRecord, Inner, RegistrarInfo, RegistrationStatus, lock};
use crate::resource::Resource;

/// One registrar relation at a moment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistrarView {
    /// The registrar.
    pub registrar: RegistrarInfo,
    /// The relation's state.
    pub status: RegistrationStatus,
    /// The address group in use (`default` for `address`), once an address answered.
    pub group: Option<String>,
    /// The address in use: the one that answered last.
    pub address: Option<String>,
}

/// Something the manager reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RemoteChange {
    /// A registrar relation changed status or address.
    Registrar(RegistrarView),
    /// A local CSR was added (`added`) or removed.
    Csr {
        /// The CSR.
        record: CsrRecord,
        /// Added (`true`) or removed.
        added: bool,
    },
}

/// The manager's reports from the moment of subscribing, in order.
pub struct RemoteChanges {
    receiver: mpsc::UnboundedReceiver<RemoteChange>,
}

impl RemoteChanges {
    /// The next report; `None` once the manager is gone.
    pub async fn recv(&mut self) -> Option<RemoteChange> {
        self.receiver.recv().await
    }

    /// The next report, waiting on this thread (not from async code).
    pub fn blocking_recv(&mut self) -> Option<RemoteChange> {
        self.receiver.blocking_recv()
    }
}

/// Unregisters a callback (see [`CallbackHandle::unregister`]). Dropping the handle keeps
/// the callback registered.
pub struct CallbackHandle {
    id: u64,
    reports: Weak<Reports>,
}

impl CallbackHandle {
    /// Stop calling the callback. Invocations already queued still run; its thread ends.
    pub fn unregister(self) {
        if let Some(reports) = self.reports.upgrade() {
            lock(&reports.subscribers).retain(|(id, _)| *id != self.id);
        }
    }
}

/// The subscribers and the snapshot.
pub(super) struct Reports {
    subscribers: Mutex<Vec<(u64, mpsc::UnboundedSender<RemoteChange>)>>,
    next_id: AtomicU64,
    registrars: watch::Sender<Arc<Vec<RegistrarView>>>,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            subscribers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            registrars: watch::Sender::new(Arc::new(Vec::new())),
        }
    }
}

impl Reports {
    pub(super) fn subscribe(&self) -> (u64, RemoteChanges) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers).push((id, sender));
        (id, RemoteChanges { receiver })
    }

    pub(super) fn watch(&self) -> watch::Receiver<Arc<Vec<RegistrarView>>> {
        self.registrars.subscribe()
    }

    pub(super) fn snapshot(&self) -> Arc<Vec<RegistrarView>> {
        self.registrars.borrow().clone()
    }

    /// Hand `change` to every subscriber; forget those that are gone.
    fn publish(&self, change: &RemoteChange) {
        lock(&self.subscribers).retain(|(_, subscriber)| subscriber.send(change.clone()).is_ok());
    }

    /// Run `call` for every report, on a thread of its own, until unregistered.
    pub(super) fn on_each(
        self: &Arc<Self>,
        name: &str,
        call: impl Fn(RemoteChange) + Send + 'static,
    ) -> CallbackHandle {
        let (id, mut changes) = self.subscribe();
        let spawned = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            while let Some(change) = changes.blocking_recv() {
                if std::panic::catch_unwind(AssertUnwindSafe(|| call(change))).is_err() {
                    warn!("a registration callback panicked");
                }
            }
        });
        if let Err(error) = spawned {
            warn!(%error, "cannot start a callback thread");
            lock(&self.subscribers).retain(|(known, _)| *known != id);
        }
        CallbackHandle { id, reports: Arc::downgrade(self) }
    }
}

impl Inner {
    /// Report the relation to `registrar` as it is now (status or address changed).
    pub(super) fn notify_status(&self, registrar: &Registrar) {
        self.refresh_view();
        self.reports.publish(&RemoteChange::Registrar(registrar.view()));
    }

    /// Replace the snapshot of the registrar relations.
    pub(super) fn refresh_view(&self) {
        let views = self.registrars().iter().map(|registrar| registrar.view()).collect();
        self.reports.registrars.send_replace(Arc::new(views));
    }

    pub(super) fn notify_csr(&self, csr: Arc<Resource>, registrar: bool, added: bool) {
        let record = CsrRecord::new(csr, registrar);
        self.reports.publish(&RemoteChange::Csr { record, added });
    }
}

impl Registrar {
    /// The relation as it is now.
    pub(super) fn view(&self) -> RegistrarView {
        let state = lock(&self.state);
        let address = state.active.and_then(|index| self.info.addresses.get(index).cloned());
        let group = state.active.and_then(|index| self.info.group_of(index)).map(|(_, name)| name.to_string());
        RegistrarView { registrar: self.info.clone(), status: state.status.clone(), group, address }
    }
}
