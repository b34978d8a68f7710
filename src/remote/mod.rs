//! The remote-CSE manager: registration to registrar CSEs, the registree table, and the
//! embedding API (status and CSR callbacks).
//!
//! Four tasks run while the manager is started:
//! - the **connection monitor** (`monitor`; every `check_interval`, or at once on
//!   [`RemoteCseManager::check_now`]): for every registrar, make sure this CSE is
//!   registered there (`registrar`: create, verify, refresh, re-register; fail over
//!   between the registrar's addresses; retried with backoff after a failure), then probe
//!   the registree CSEs and remove the ones that stayed unreachable (`liveliness`);
//! - the **push-up** (`changes`): every change of the set of CSEs below this one goes to
//!   the registrars at once (the `dcse` of this CSE's CSR there), coalesced, one update at
//!   a time per registrar;
//! - the **push-down** (`pushdown`): what registrees copy from this CSE's CSEBase (`ici`,
//!   `poa`, ...) goes to them at once when it changes;
//! - the **change follower** (`changes`): reports the `<remoteCSE>` resources committed
//!   (log, events, CSR callbacks), never held up by a registrar that does not answer.
//!
//! The routing table ([`Registry`]) is not kept here: it follows the commits in the core.
//! Changes to local resources go through the core ([`Cse`]); requests to other CSEs
//! through its outbound seam. Callbacks run on their own threads (`callbacks`), so a slow
//! or panicking callback never holds up the CSE or another callback. A configuration
//! reload (`reconfigure`) changes the registrars between rounds.

mod announce;
mod callbacks;
mod changes;
mod liveliness;
mod monitor;
mod pushdown;
mod reconfigure;
mod registrar;
mod relation;
mod twins;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::config::AddressGroup;
use crate::core::Cse;
use crate::core::registry::{Registry, Route};
use crate::core::request::{Operation, Request};
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType};

use callbacks::Reports;
pub use callbacks::{CallbackHandle, RegistrarView, RemoteChange, RemoteChanges};
use registrar::Registrar;
use relation::Step;

/// The state of the registration to one registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationStatus {
    /// Not started (or stopped without deregistering).
    Disabled,
    /// Trying to register.
    Connecting,
    /// Registered; the registrar answered the last check.
    Registered,
    /// Registered, but the registrar did not answer the last check (registration kept).
    Unreachable,
    /// The registration was removed (on stop) or lost and could not be re-created.
    Deregistered,
    /// The registrar refused or failed a step; the reason says which.
    Error(String),
}

/// A registrar this CSE registers to.
#[derive(Debug, Clone)]
pub struct RegistrarInfo {
    /// The configuration section (`cse.registrar`, `cse.sp.registrar.NAME`).
    pub section: String,
    /// The registrar's CSE-ID as this CSE stores it (`/id-in`, or `//sp/id-in`).
    pub cse_id: String,
    /// Its base URLs, most preferred first (every group's, in the order of the groups).
    pub addresses: Vec<String>,
    /// Its address groups, most preferred first.
    pub groups: Vec<AddressGroup>,
}

impl RegistrarInfo {
    /// The group that the address at `index` (into `addresses`) belongs to: its position
    /// and name.
    pub fn group_of(&self, index: usize) -> Option<(usize, &str)> {
        let position = AddressGroup::position_of(&self.groups, index)?;
        Some((position, &self.groups[position].name))
    }

    /// The name of the group that `address` belongs to (for a status callback, which is
    /// handed the address in use).
    pub fn group_of_address(&self, address: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|group| group.addresses.iter().any(|known| known == address))
            .map(|group| group.name.as_str())
    }
}

/// The last liveliness probe of a registree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistreeProbe {
    /// When it ended (oneM2M timestamp form).
    pub last_probe: String,
    /// Failed probes in a row (0: it answered).
    pub failures: u32,
    /// Why the last probe failed, if it did.
    pub last_error: Option<String>,
}

/// A local `<remoteCSE>`, as handed to callbacks.
#[derive(Debug, Clone)]
pub struct CsrRecord {
    /// The CSE it describes.
    pub csi: String,
    /// The CSR's `ri` here.
    pub ri: String,
    /// That CSE's CSEBase address.
    pub cb: String,
    /// Where that CSE is reached.
    pub poa: Vec<String>,
    /// The CSEs below it, as it claims them.
    pub dcse: Vec<String>,
    /// True for the CSR of a registrar, false for a registree's.
    pub registrar: bool,
    /// The CSR itself.
    pub resource: Arc<Resource>,
}

impl CsrRecord {
    fn new(resource: Arc<Resource>, registrar: bool) -> CsrRecord {
        CsrRecord {
            csi: resource.str("csi").unwrap_or_default().to_string(),
            ri: resource.ri().to_string(),
            cb: resource.str("cb").unwrap_or_default().to_string(),
            poa: resource.str_list("poa"),
            dcse: resource.str_list("dcse"),
            registrar,
            resource,
        }
    }
}

struct Inner {
    cse: Cse,
    /// The registrars of the configuration in force (replaced by a reload).
    registrars: ArcSwap<Vec<Arc<Registrar>>>,
    /// Held through a monitor round and through a change of registrars, so that a
    /// reload never changes the registrars under a round.
    rounds: tokio::sync::Mutex<()>,
    /// Snapshot, change stream and callbacks.
    reports: Arc<Reports>,
    /// The last liveliness probe of each registree, by CSE-ID.
    probes: Mutex<std::collections::HashMap<String, RegistreeProbe>>,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    /// Stops the monitor (first, so that nothing registers while stopping).
    monitor_token: CancellationToken,
    /// Stops the change follower (last, after it has reported what the stop changed).
    follower_token: CancellationToken,
    commands: mpsc::Sender<oneshot::Sender<()>>,
    monitor: JoinHandle<()>,
    /// Pushes `dcse` changes up; stops with the monitor.
    pusher: JoinHandle<()>,
    /// Pushes CSEBase changes down to the registrees; stops with the monitor.
    pusher_down: JoinHandle<()>,
    /// Announces resources to other CSEs; stops with the monitor.
    announcer: JoinHandle<()>,
    follower: JoinHandle<()>,
}

/// The remote-CSE manager. Cloning is cheap.
#[derive(Clone)]
pub struct RemoteCseManager {
    inner: Arc<Inner>,
}

impl RemoteCseManager {
    /// The manager of `cse`, with the registrars of its configuration (not started).
    pub fn new(cse: Cse) -> RemoteCseManager {
        let registrars = Registrar::all(&cse.config()).into_iter().map(Arc::new).collect();
        let manager = RemoteCseManager {
            inner: Arc::new(Inner {
                cse,
                registrars: ArcSwap::from_pointee(registrars),
                rounds: tokio::sync::Mutex::new(()),
                reports: Arc::new(Reports::default()),
                probes: Mutex::default(),
                running: tokio::sync::Mutex::new(None),
            }),
        };
        manager.inner.refresh_view();
        manager
    }

    // ---------------------------------------------------------------------------------
    // Embedding API
    // ---------------------------------------------------------------------------------

    /// Call `callback` on every status change of a registrar connection, with the
    /// registrar, its new status and the address in use (its group:
    /// [`RegistrarInfo::group_of_address`]). Runs on a thread of its own; the handle
    /// unregisters it.
    pub fn on_status(
        &self,
        callback: impl Fn(&RegistrarInfo, &RegistrationStatus, Option<&str>) + Send + Sync + 'static,
    ) -> CallbackHandle {
        self.inner.reports.on_each("acme-status-cb", move |change| {
            if let RemoteChange::Registrar(view) = change {
                callback(&view.registrar, &view.status, view.address.as_deref());
            }
        })
    }

    /// Call `callback` for every local CSR added (`true`) or removed (`false`). Runs on a
    /// thread of its own; the handle unregisters it.
    pub fn on_csr_update(&self, callback: impl Fn(&CsrRecord, bool) + Send + Sync + 'static) -> CallbackHandle {
        self.inner.reports.on_each("acme-csr-cb", move |change| {
            if let RemoteChange::Csr { record, added } = change {
                callback(&record, added);
            }
        })
    }

    /// Every report from now on, in order: status changes and CSRs added or removed.
    pub fn subscribe(&self) -> RemoteChanges {
        self.inner.reports.subscribe().1
    }

    /// The registrar relations as they are, replaced on every change.
    pub fn watch_registrars(&self) -> tokio::sync::watch::Receiver<Arc<Vec<RegistrarView>>> {
        self.inner.reports.watch()
    }

    /// Call `callback` for every local CSR (registrars first, then registrees by CSE-ID).
    /// Each record is borrowed for the duration of its call only.
    pub fn for_each_csr(&self, mut callback: impl FnMut(&CsrRecord)) {
        let registry = &self.inner.cse.registry;
        for csr in registry.registrar_csrs() {
            callback(&CsrRecord::new(csr, true));
        }
        for csr in registry.registree_csrs() {
            callback(&CsrRecord::new(csr, false));
        }
    }

    /// The last liveliness probe of each registree, by CSE-ID (registrees not probed yet
    /// are absent).
    pub fn probes(&self) -> std::collections::HashMap<String, RegistreeProbe> {
        lock(&self.inner.probes).clone()
    }

    /// The registrars, their current status and the address in use.
    pub fn statuses(&self) -> Vec<(RegistrarInfo, RegistrationStatus, Option<String>)> {
        self.registrar_views()
            .iter()
            .map(|view| (view.registrar.clone(), view.status.clone(), view.address.clone()))
            .collect()
    }

    /// The registrar relations as they are now (status, address group and address).
    pub fn registrar_views(&self) -> Arc<Vec<RegistrarView>> {
        self.inner.reports.snapshot()
    }

    /// True when this CSE is registered to its same-SP registrar (also while that one is
    /// momentarily unreachable: the registration is kept).
    pub fn is_registered(&self) -> bool {
        self.inner.registrars().iter().filter(|registrar| !registrar.info.cse_id.starts_with("//")).any(|registrar| {
            matches!(lock(&registrar.state).status, RegistrationStatus::Registered | RegistrationStatus::Unreachable)
        })
    }

    /// The routing table (read-only: it follows the committed `<remoteCSE>` resources).
    pub fn registry(&self) -> &Registry {
        &self.inner.cse.registry
    }

    // ---------------------------------------------------------------------------------
    // Lookups
    // ---------------------------------------------------------------------------------

    /// All local CSRs (registrars and registrees).
    pub fn csrs(&self) -> Vec<CsrRecord> {
        let mut records = Vec::new();
        self.for_each_csr(|record| records.push(record.clone()));
        records
    }

    /// The CSR through which the CSE named by `id` is reached: only the CSE part of `id`
    /// counts (`/id-asn/cse-asn/ae1` → `/id-asn`), matched exactly.
    pub fn csr_for(&self, id: &str) -> Option<CsrRecord> {
        let csi = self.cse_part(id)?;
        match self.inner.cse.registry.route(&csi)? {
            Route::Registrar(csr) => Some(CsrRecord::new(csr, true)),
            Route::Registree(csr) => Some(CsrRecord::new(csr, false)),
        }
    }

    /// The SP-relative address of the CSEBase of a registered or descendant CSE.
    pub fn cse_base_address(&self, csi: &str) -> Option<String> {
        let identity = &self.inner.cse.identity;
        if csi == identity.cse_id {
            return Some(format!("{}/{}", identity.cse_id, identity.resource_id));
        }
        if let Some(csr) = self.inner.cse.registry.registrar(csi) {
            return csr.str("cb").map(str::to_string);
        }
        let descendant = self.inner.cse.registry.descendant(csi)?;
        match descendant.csr {
            Some(csr) => csr.str("cb").map(str::to_string),
            None => Some(format!("{csi}/-")),
        }
    }

    /// RETRIEVE a resource on another CSE (`id` SP-relative or absolute) the way any
    /// request is forwarded; the originator defaults to this CSE.
    pub async fn retrieve_remote(&self, id: &str, originator: Option<&str>) -> Result<Resource> {
        let cse = &self.inner.cse;
        let mut request = Request::new(Operation::Retrieve, id, Some(originator.unwrap_or(&cse.identity.cse_id)));
        request.rvi = cse.config().cse.release_version.clone();
        let response = cse.handle(request).await.into_result()?;
        let content = response.content.ok_or_else(|| Error::internal("empty answer"))?;
        resource_from_json(&content, id)
            .ok_or_else(|| Error::bad_request(format!("the answer for {id} is not a resource")))
    }

    /// The CSE part of `id`, an absolute ID of this service provider taken SP-relative.
    fn cse_part(&self, id: &str) -> Option<String> {
        let own_sp = format!("//{}/", self.inner.cse.identity.sp_id);
        if let Some(rest) = id.strip_prefix(&own_sp) {
            return crate::id::cse_of(&format!("/{rest}")).map(str::to_string);
        }
        crate::id::cse_of(id).map(str::to_string)
    }

    // ---------------------------------------------------------------------------------
    // Lifecycle
    // ---------------------------------------------------------------------------------

    /// Start the monitor and the follower of committed changes.
    pub async fn start(&self) -> Result<()> {
        let mut running = self.inner.running.lock().await;
        if running.is_some() {
            return Ok(());
        }
        let monitor_token = CancellationToken::new();
        let follower_token = CancellationToken::new();
        let (commands, command_rx) = mpsc::channel(16);
        let changes = self.inner.cse.storage.changes_of(ResourceType::Csr);
        let descendants = self.inner.cse.registry.descendants_changed();
        let copied = self.inner.copied_now().await;
        let cse_base_changes = self.inner.cse.storage.changes_of(ResourceType::CseBase);
        let announced_changes = self.inner.cse.storage.changes_of_any(&crate::core::types::ANNOUNCEABLE);
        let registrations = self.inner.cse.events.subscribe();
        let statuses = self.inner.reports.watch();
        // Connecting before the first round can report anything else.
        for registrar in self.inner.registrars().iter() {
            self.inner.step(registrar, Step::Started);
        }
        let monitor = tokio::spawn(
            self.inner.clone().monitor(command_rx, monitor_token.clone()).instrument(info_span!("remote_cse")),
        );
        let pusher = tokio::spawn(
            self.inner.clone().push_up(descendants, monitor_token.clone()).instrument(info_span!("remote_cse_push")),
        );
        let pusher_down = tokio::spawn(
            self.inner
                .clone()
                .push_down(copied, cse_base_changes, monitor_token.clone())
                .instrument(info_span!("remote_cse_push_down")),
        );
        let announcer = tokio::spawn(
            self.inner
                .clone()
                .announce(announced_changes, registrations, statuses, monitor_token.clone())
                .instrument(info_span!("announcements")),
        );
        let follower = tokio::spawn(
            self.inner
                .clone()
                .follow_changes(changes, follower_token.clone())
                .instrument(info_span!("remote_cse_changes")),
        );
        *running = Some(Running {
            monitor_token,
            follower_token,
            commands,
            monitor,
            pusher,
            pusher_down,
            announcer,
            follower,
        });
        Ok(())
    }

    /// Stop the workers. With `unregister_when_stopping`, delete this CSE's CSR on each
    /// registrar and the local registrar CSRs, bounded by the client time-out. The monitor
    /// stops first; the change follower last, after reporting what the stop changed (the
    /// removal of the registrars' CSRs reaches the CSR callbacks).
    pub async fn stop(&self) {
        let Some(running) = self.inner.running.lock().await.take() else {
            return;
        };
        running.monitor_token.cancel();
        let _ = running.monitor.await;
        let _ = running.pusher.await;
        let _ = running.pusher_down.await;
        let _ = running.announcer.await;
        if self.inner.cse.config().registration.unregister_when_stopping {
            let grace = self.inner.cse.outbound.timeout() + Duration::from_secs(1);
            if tokio::time::timeout(grace, self.inner.deregister_all()).await.is_err() {
                warn!(?grace, "deregistration did not finish in time");
            }
        } else {
            for registrar in self.inner.registrars().iter() {
                self.inner.step(registrar, Step::Stopped);
            }
        }
        running.follower_token.cancel();
        let _ = running.follower.await;
    }

    /// Stop without deregistering, read the configuration again (when it came from a
    /// file; an invalid one is logged and changes nothing), and start again with an
    /// immediate check.
    pub async fn restart(&self) -> Result<()> {
        self.halt().await;
        if self.inner.cse.config_source().is_some() {
            // Logged inside; the restart goes on with the configuration in force.
            let _ = self.reload().await;
        }
        for registrar in self.inner.registrars().iter() {
            lock(&registrar.state).announced = false;
        }
        self.start().await
    }

    /// Run one monitor round now and wait until it is done.
    pub async fn check_now(&self) -> Result<()> {
        let commands =
            self.commands().await.ok_or_else(|| Error::not_allowed("the remote-CSE manager is not running"))?;
        let (done, finished) = oneshot::channel();
        commands.send(done).await.map_err(|_| Error::internal("the connection monitor has stopped"))?;
        finished.await.map_err(|_| Error::internal("the connection monitor has stopped"))
    }

    /// The monitor's command queue, while running.
    async fn commands(&self) -> Option<mpsc::Sender<oneshot::Sender<()>>> {
        self.inner.running.lock().await.as_ref().map(|running| running.commands.clone())
    }

    async fn halt(&self) {
        let Some(running) = self.inner.running.lock().await.take() else {
            return;
        };
        running.monitor_token.cancel();
        let _ = running.monitor.await;
        let _ = running.pusher.await;
        let _ = running.pusher_down.await;
        let _ = running.announcer.await;
        running.follower_token.cancel();
        let _ = running.follower.await;
    }
}

impl Inner {
    /// The registrars in force (a snapshot).
    fn registrars(&self) -> Arc<Vec<Arc<Registrar>>> {
        self.registrars.load_full()
    }
}

fn resource_from_json(content: &Value, id: &str) -> Option<Resource> {
    let (wrapper, attributes) = content.as_object()?.iter().next()?;
    let ty = crate::resource::ResourceType::from_wrapper(wrapper)?;
    Some(Resource { ty, attributes: attributes.as_object()?.clone(), path: id.to_string(), creator: None })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
