//! Internal events: a closed set of facts, fanned out to whoever subscribed.
//!
//! [`EventBus`] wraps a `tokio::sync::broadcast` channel: `emit` never blocks and never
//! fails; a subscriber that falls behind loses the oldest events (it sees `Lagged`) instead
//! of slowing request handling down.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::resource::Resource;

/// Something that happened in this CSE.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The CSE is serving requests.
    CseStarted,
    /// This CSE registered to a registrar (the local CSR describing the registrar).
    RegisteredToRegistrar {
        /// The registrar's CSE-ID.
        registrar_csi: String,
        /// The local CSR describing the registrar.
        csr: Arc<Resource>,
    },
    /// This CSE lost or gave up its registration to a registrar.
    DeregisteredFromRegistrar {
        /// The registrar's CSE-ID.
        registrar_csi: String,
    },
    /// A registree CSE created its CSR here.
    RemoteCseRegistered {
        /// Its CSR.
        csr: Arc<Resource>,
    },
    /// A registree's CSR here was deleted (request, liveliness, expiry).
    RemoteCseDeregistered {
        /// Its CSR as it was.
        csr: Arc<Resource>,
    },
    /// A CSR here was updated (the CSR as it is now).
    CsrUpdated {
        /// The CSR as it is now.
        csr: Arc<Resource>,
    },
    /// A configuration reload applied changes: the `acme.toml` keys that changed.
    ConfigUpdated {
        /// The keys that changed.
        keys: Vec<String>,
    },
}

/// The shared event channel. Cloning is cheap.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(1024)
    }
}

impl EventBus {
    /// A bus that keeps up to `capacity` events for a subscriber that falls behind.
    pub fn new(capacity: usize) -> EventBus {
        let (sender, _) = broadcast::channel(capacity);
        EventBus { sender }
    }

    /// Publish an event; having no subscriber is fine.
    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        let _ = self.sender.send(event);
    }

    /// Every event from now on (a subscriber that falls behind hears `Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
