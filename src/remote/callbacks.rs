//! The embedding callbacks: each registered callback has a thread of its own that runs its
//! invocations in order, so a slow or panicking callback never holds up the CSE or
//! another callback. Status changes of a registrar connection and CSRs added or removed
//! are handed out here.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tracing::{info, warn};

use super::registrar::Registrar;
use super::{CsrRecord, Inner, RegistrarInfo, RegistrationStatus, lock};
use crate::resource::Resource;

type StatusCallback = dyn Fn(&RegistrarInfo, &RegistrationStatus, Option<&str>) + Send + Sync;
type CsrCallback = dyn Fn(&CsrRecord, bool) + Send + Sync;

/// Runs queued callback invocations on a thread of its own.
pub(super) struct CallbackThread {
    queue: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl CallbackThread {
    pub(super) fn spawn(name: &str) -> CallbackThread {
        let (queue, jobs) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let spawned = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            for job in jobs {
                if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
                    warn!("a registration callback panicked");
                }
            }
        });
        if let Err(error) = spawned {
            warn!(%error, "cannot start a callback thread");
        }
        CallbackThread { queue }
    }

    fn run(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.queue.send(Box::new(job));
    }
}

#[derive(Default)]
pub(super) struct Callbacks {
    pub(super) status: Vec<(Arc<StatusCallback>, CallbackThread)>,
    pub(super) csr: Vec<(Arc<CsrCallback>, CallbackThread)>,
}

impl Inner {
    /// Set the status of the relation to `registrar`; a change is logged for the operator
    /// (recoveries included) and reported to the status callbacks. Returns the previous
    /// status when it changed.
    pub(super) fn set_status(&self, registrar: &Registrar, status: RegistrationStatus) -> Option<RegistrationStatus> {
        let (previous, address) = {
            let mut state = lock(&registrar.state);
            if state.status == status {
                return None;
            }
            let address = state.active.and_then(|index| registrar.info.addresses.get(index).cloned());
            (std::mem::replace(&mut state.status, status.clone()), address)
        };
        let csi = &registrar.info.cse_id;
        let address = address.as_deref().unwrap_or("-");
        match (&previous, &status) {
            (RegistrationStatus::Unreachable, RegistrationStatus::Registered) => {
                info!(registrar = %csi, %address, "registrar reachable again");
            }
            (RegistrationStatus::Error(_), RegistrationStatus::Registered) => {
                info!(registrar = %csi, %address, "registration works again");
            }
            _ => {}
        }
        self.notify_status(registrar, &status);
        Some(previous)
    }

    pub(super) fn notify_status(&self, registrar: &Registrar, status: &RegistrationStatus) {
        let address = lock(&registrar.state).active.and_then(|index| registrar.info.addresses.get(index).cloned());
        let Ok(callbacks) = self.callbacks.lock() else { return };
        for (callback, thread) in &callbacks.status {
            let (callback, info, status, address) =
                (callback.clone(), registrar.info.clone(), status.clone(), address.clone());
            thread.run(move || callback(&info, &status, address.as_deref()));
        }
    }

    pub(super) fn notify_csr(&self, csr: Arc<Resource>, registrar: bool, added: bool) {
        let Ok(callbacks) = self.callbacks.lock() else { return };
        if callbacks.csr.is_empty() {
            return;
        }
        let record = CsrRecord::new(csr, registrar);
        for (callback, thread) in &callbacks.csr {
            let (callback, record) = (callback.clone(), record.clone());
            thread.run(move || callback(&record, added));
        }
    }
}
