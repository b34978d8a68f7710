//! The remote-CSE manager: registration to registrar CSEs, the registree table, and the
//! embedding API (status and CSR callbacks).
//!
//! Two tasks run while the manager is started:
//! - the **connection monitor** (every `check_interval`, or at once on [`RemoteCseManager::check_now`]):
//!   for every registrar, make sure this CSE is registered there (create, verify, refresh,
//!   re-register; fail over between the registrar's addresses), then probe the registree
//!   CSEs and remove the ones that stayed unreachable;
//! - the **event handler**: keeps the [`Registry`] in step with the CSRs created, updated
//!   and deleted here, pushes every change of the set of CSEs below this one to the
//!   registrars at once (the `dcse` of this CSE's CSR there), and feeds the callbacks.
//!
//! Changes to resources go through the dispatcher ([`Cse`]); requests to other CSEs
//! through the shared client. Callbacks run on their own threads, so a slow or panicking
//! callback never holds up the CSE or another callback.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{CseKind, RegistrarConfig};
use crate::core::Cse;
use crate::core::registry::{Registry, Route};
use crate::core::request::{Operation, Request, Response};
use crate::error::{Error, Result, Rsc};
use crate::event::Event;
use crate::id::resource_name_of;
use crate::resource::{Resource, ResourceType, random_id};
use crate::storage::{Change, ChangeSet};

/// The state of the registration to one registrar.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Its base URLs, most preferred first.
    pub addresses: Vec<String>,
}

/// A local `<remoteCSE>`, as handed to callbacks.
#[derive(Debug, Clone)]
pub struct CsrRecord {
    /// The CSE it describes.
    pub csi: String,
    pub ri: String,
    /// That CSE's CSEBase address.
    pub cb: String,
    pub poa: Vec<String>,
    pub dcse: Vec<String>,
    /// True for the CSR of a registrar, false for a registree's.
    pub registrar: bool,
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

type StatusCallback = dyn Fn(&RegistrarInfo, &RegistrationStatus, Option<&str>) + Send + Sync;
type CsrCallback = dyn Fn(&CsrRecord, bool) + Send + Sync;

/// Runs queued callback invocations on a thread of its own.
struct CallbackThread {
    queue: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl CallbackThread {
    fn spawn(name: &str) -> CallbackThread {
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
struct Callbacks {
    status: Vec<(Arc<StatusCallback>, CallbackThread)>,
    csr: Vec<(Arc<CsrCallback>, CallbackThread)>,
}

/// Per registrar: configuration, derived names, and what the monitor knows.
struct Registrar {
    config: RegistrarConfig,
    info: RegistrarInfo,
    /// Name of this CSE's CSR on the registrar.
    own_csr_rn: String,
    /// This CSE's CSE-ID as the registrar knows it.
    own_csi: String,
    /// This CSE's CSEBase address as the registrar knows it.
    own_cb: String,
    /// The registrar's CSEBase address (`/id-in/cse-in`, `//sp/id-in/cse-in`).
    registrar_cb: String,
    /// `ri` of the local CSR describing the registrar.
    local_csr_ri: String,
    state: Mutex<RegistrarState>,
}

struct RegistrarState {
    status: RegistrationStatus,
    /// Index into the addresses of the one that answered last.
    active: Option<usize>,
    /// Whether `RegisteredToRegistrar` was emitted for the current registration.
    announced: bool,
}

impl Registrar {
    fn own_csr_path(&self) -> String {
        format!("{}/{}", self.registrar_cb, self.own_csr_rn)
    }
}

struct Inner {
    cse: Cse,
    registrars: Vec<Registrar>,
    callbacks: Mutex<Callbacks>,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    token: CancellationToken,
    commands: mpsc::Sender<oneshot::Sender<()>>,
    monitor: JoinHandle<()>,
    events: JoinHandle<()>,
}

/// The remote-CSE manager. Cloning is cheap.
#[derive(Clone)]
pub struct RemoteCseManager {
    inner: Arc<Inner>,
}

impl RemoteCseManager {
    pub fn new(cse: Cse) -> RemoteCseManager {
        let config = cse.config.clone();
        let own = &config.cse;
        let mut registrars = Vec::new();
        let same_sp = config.registrar.iter().map(|registrar| (registrar, false));
        let other_sp = config.sp_registrars.iter().map(|registrar| (registrar, true));
        for (registrar, other) in same_sp.chain(other_sp) {
            let own_stem = own.cse_id.stem();
            let (cse_id, own_csi, own_cb, own_csr_rn, registrar_cb) = if other {
                (
                    format!("//{}{}", registrar.sp_id, registrar.cse_id),
                    format!("//{}{}", own.sp_id, own.cse_id),
                    format!("//{}{}/{}", own.sp_id, own.cse_id, own.resource_name),
                    format!("{}_{own_stem}", own.sp_id),
                    format!("//{}{}/{}", registrar.sp_id, registrar.cse_id, registrar.resource_name),
                )
            } else {
                (
                    registrar.cse_id.to_string(),
                    own.cse_id.to_string(),
                    format!("{}/{}", own.cse_id, own.resource_name),
                    own_stem.to_string(),
                    format!("{}/{}", registrar.cse_id, registrar.resource_name),
                )
            };
            registrars.push(Registrar {
                info: RegistrarInfo {
                    section: registrar.section.clone(),
                    cse_id: cse_id.clone(),
                    addresses: registrar.addresses.clone(),
                },
                local_csr_ri: resource_name_of(&cse_id),
                own_csr_rn,
                own_csi,
                own_cb,
                registrar_cb,
                config: registrar.clone(),
                state: Mutex::new(RegistrarState {
                    status: RegistrationStatus::Disabled,
                    active: None,
                    announced: false,
                }),
            });
        }
        RemoteCseManager {
            inner: Arc::new(Inner {
                cse,
                registrars,
                callbacks: Mutex::new(Callbacks::default()),
                running: tokio::sync::Mutex::new(None),
            }),
        }
    }

    // ---------------------------------------------------------------------------------
    // Embedding API
    // ---------------------------------------------------------------------------------

    /// Call `callback` on every status change of a registrar connection, with the
    /// registrar, its new status and the address in use.
    pub fn on_status(
        &self,
        callback: impl Fn(&RegistrarInfo, &RegistrationStatus, Option<&str>) + Send + Sync + 'static,
    ) {
        let thread = CallbackThread::spawn("acme-status-cb");
        if let Ok(mut callbacks) = self.inner.callbacks.lock() {
            callbacks.status.push((Arc::new(callback), thread));
        }
    }

    /// Call `callback` for every local CSR added (`true`) or removed (`false`).
    pub fn on_csr_update(&self, callback: impl Fn(&CsrRecord, bool) + Send + Sync + 'static) {
        let thread = CallbackThread::spawn("acme-csr-cb");
        if let Ok(mut callbacks) = self.inner.callbacks.lock() {
            callbacks.csr.push((Arc::new(callback), thread));
        }
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

    /// The registrars and their current status.
    pub fn statuses(&self) -> Vec<(RegistrarInfo, RegistrationStatus, Option<String>)> {
        self.inner
            .registrars
            .iter()
            .map(|registrar| {
                let state = lock(&registrar.state);
                let address = state.active.and_then(|index| registrar.info.addresses.get(index).cloned());
                (registrar.info.clone(), state.status.clone(), address)
            })
            .collect()
    }

    /// True when this CSE is registered to its same-SP registrar (also while that one is
    /// momentarily unreachable: the registration is kept).
    pub fn is_registered(&self) -> bool {
        self.inner.registrars.iter().filter(|registrar| !registrar.info.cse_id.starts_with("//")).any(|registrar| {
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
        request.rvi = cse.config.cse.release_version.clone();
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
        let token = CancellationToken::new();
        let (commands, command_rx) = mpsc::channel(16);
        let changes = self.inner.cse.storage.changes();
        let descendants = self.inner.cse.registry.descendants_changed();
        let monitor =
            tokio::spawn(self.inner.clone().monitor(command_rx, token.clone()).instrument(info_span!("remote_cse")));
        let events = tokio::spawn(
            self.inner
                .clone()
                .follow_changes(changes, descendants, token.clone())
                .instrument(info_span!("remote_cse_changes")),
        );
        for registrar in &self.inner.registrars {
            self.inner.set_status(registrar, RegistrationStatus::Connecting);
        }
        *running = Some(Running { token, commands, monitor, events });
        Ok(())
    }

    /// Stop the workers. With `unregister_when_stopping`, delete this CSE's CSR on each
    /// registrar and the local registrar CSRs, bounded by the client time-out.
    pub async fn stop(&self) {
        self.halt().await;
        if self.inner.cse.config.registration.unregister_when_stopping {
            let grace = self.inner.cse.outbound.timeout() + Duration::from_secs(1);
            if tokio::time::timeout(grace, self.inner.deregister_all()).await.is_err() {
                warn!(?grace, "deregistration did not finish in time");
            }
        } else {
            for registrar in &self.inner.registrars {
                self.inner.set_status(registrar, RegistrationStatus::Disabled);
            }
        }
    }

    /// Stop without deregistering and start again with an immediate check.
    pub async fn restart(&self) -> Result<()> {
        self.halt().await;
        for registrar in &self.inner.registrars {
            lock(&registrar.state).announced = false;
        }
        self.start().await
    }

    /// Run one monitor round now and wait until it is done.
    pub async fn check_now(&self) -> Result<()> {
        let commands = {
            let running = self.inner.running.lock().await;
            match running.as_ref() {
                Some(running) => running.commands.clone(),
                None => return Err(Error::not_allowed("the remote-CSE manager is not running")),
            }
        };
        let (done, finished) = oneshot::channel();
        commands.send(done).await.map_err(|_| Error::internal("the connection monitor has stopped"))?;
        finished.await.map_err(|_| Error::internal("the connection monitor has stopped"))
    }

    async fn halt(&self) {
        let Some(running) = self.inner.running.lock().await.take() else {
            return;
        };
        running.token.cancel();
        let _ = running.monitor.await;
        let _ = running.events.await;
    }
}

impl Inner {
    // ---------------------------------------------------------------------------------
    // Workers
    // ---------------------------------------------------------------------------------

    async fn monitor(self: Arc<Self>, mut commands: mpsc::Receiver<oneshot::Sender<()>>, token: CancellationToken) {
        let mut ticks = tokio::time::interval(self.cse.config.registration.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: HashMap<String, u32> = HashMap::new();
        // The first round runs at once, before any check-now request is taken, so that a
        // check-now always means "a full round after this call".
        ticks.tick().await;
        tokio::select! {
            () = token.cancelled() => return,
            () = self.round(&mut failures) => {}
        }
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = ticks.tick() => self.round(&mut failures).await,
                Some(done) = commands.recv() => {
                    self.round(&mut failures).await;
                    let _ = done.send(());
                }
            }
        }
    }

    async fn round(&self, failures: &mut HashMap<String, u32>) {
        for registrar in &self.registrars {
            self.check_registrar(registrar).await;
        }
        let kind = self.cse.config.cse.kind;
        if self.cse.config.registration.check_liveliness && kind != CseKind::Asn {
            self.probe_registrees(failures).await;
        }
    }

    /// Follow what is committed: report `<remoteCSE>` changes (log, events, callbacks), and
    /// push every change of the set of CSEs below this one to the registrars at once. The
    /// routing table itself follows the commits in the core; nothing here writes it.
    async fn follow_changes(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<Arc<ChangeSet>>,
        mut descendants: watch::Receiver<u64>,
        token: CancellationToken,
    ) {
        descendants.mark_unchanged();
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                committed = changes.recv() => match committed {
                    Ok(committed) => self.report(&committed),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "fell behind the committed changes: CSR callbacks may have missed some");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = descendants.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    descendants.mark_unchanged();
                    self.push_descendants().await;
                }
            }
        }
    }

    /// Log, emit and call back the `<remoteCSE>` changes of one commit.
    fn report(&self, committed: &ChangeSet) {
        for change in &committed.changes {
            let csr = change.resource();
            if csr.ty != ResourceType::Csr {
                continue;
            }
            let csi = csr.str("csi").unwrap_or_default().to_string();
            let registrar = self.cse.registry.is_configured_registrar(&csi);
            match change {
                Change::Created(_) if registrar => self.notify_csr(csr.clone(), true, true),
                Change::Created(_) => {
                    info!(%csi, "registree registered");
                    self.cse.events.emit(Event::RemoteCseRegistered { csr: csr.clone() });
                    self.notify_csr(csr.clone(), false, true);
                }
                Change::Updated(_) => self.cse.events.emit(Event::CsrUpdated { csr: csr.clone() }),
                Change::Deleted(_) if registrar => self.notify_csr(csr.clone(), true, false),
                Change::Deleted(_) => {
                    info!(%csi, "registree deregistered");
                    self.cse.events.emit(Event::RemoteCseDeregistered { csr: csr.clone() });
                    self.notify_csr(csr.clone(), false, false);
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Registree side: registration to a registrar
    // ---------------------------------------------------------------------------------

    async fn check_registrar(&self, registrar: &Registrar) {
        let result = match self.cse.storage.get(&registrar.local_csr_ri).await {
            Ok(Some(_)) => self.verify_registration(registrar).await,
            Ok(None) => self.register(registrar).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            match error.rsc {
                Rsc::TargetNotReachable | Rsc::RequestTimeout => {
                    let status = match lock(&registrar.state).status {
                        RegistrationStatus::Registered | RegistrationStatus::Unreachable => {
                            RegistrationStatus::Unreachable
                        }
                        _ => RegistrationStatus::Connecting,
                    };
                    warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "registrar unreachable");
                    self.set_status(registrar, status);
                }
                _ => {
                    warn!(registrar = %registrar.info.cse_id, rsc = error.rsc.code(), error = %error.detail(), "registration step failed");
                    self.set_status(
                        registrar,
                        RegistrationStatus::Error(format!("{}: {}", error.rsc.code(), error.detail())),
                    );
                }
            }
        }
    }

    /// Branch A: a local registrar CSR exists. Verify the own CSR on the registrar;
    /// re-register if it is gone; keep both sides' copies current.
    async fn verify_registration(&self, registrar: &Registrar) -> Result<()> {
        let request = self.request(registrar, Operation::Retrieve, registrar.own_csr_path());
        let response = self.send_to_registrar(registrar, &request).await?;
        match response.rsc {
            Rsc::Ok => {}
            Rsc::NotFound => {
                info!(registrar = %registrar.info.cse_id, "registration lost at the registrar; registering again");
                self.drop_local_registrar_csr(registrar).await?;
                return self.register(registrar).await;
            }
            _ => return Err(response.into_result().err().unwrap_or_else(|| Error::internal("unexpected answer"))),
        }
        let remote_own = response
            .content
            .as_ref()
            .and_then(|content| content.get("m2m:csr"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let registrar_cb = self.retrieve_registrar_cse_base(registrar).await?;
        let (local, _) = self.cse.put_registrar_csr(self.local_csr_content(registrar, &registrar_cb)).await?;
        self.learn_from_registrar(&registrar_cb).await?;
        // Push local changes by comparing values with what the registrar holds (never
        // timestamps of two clocks).
        let desired = self.own_csr_content(registrar, true).await?;
        if desired.iter().any(|(name, value)| remote_own.get(name) != Some(value)) {
            self.update_own_csr(registrar, desired).await?;
        }
        let announce = !std::mem::replace(&mut lock(&registrar.state).announced, true);
        if announce {
            self.cse.events.emit(Event::RegisteredToRegistrar {
                registrar_csi: registrar.info.cse_id.clone(),
                csr: Arc::new(local),
            });
        }
        self.set_status(registrar, RegistrationStatus::Registered);
        Ok(())
    }

    /// Branch B: no local registrar CSR. Clean slate, create the own CSR, retrieve the
    /// registrar's CSEBase, create the local CSR for the registrar.
    async fn register(&self, registrar: &Registrar) -> Result<()> {
        let status = lock(&registrar.state).status.clone().max_connecting();
        self.set_status(registrar, status);
        self.delete_own_csr(registrar).await?;
        let content = self.own_csr_content(registrar, false).await?;
        let mut request = self.request(registrar, Operation::Create, registrar.registrar_cb.clone());
        request.ty = Some(16);
        request.content = Some(json!({ "m2m:csr": content }));
        let mut response = self.send_to_registrar(registrar, &request).await?;
        if response.rsc == Rsc::Conflict {
            // A CSR with our name is still there (a race, or a registrar that kept it):
            // remove it and create ours again, in this round.
            warn!(registrar = %registrar.info.cse_id, "own CSR already exists at the registrar; replacing it");
            self.delete_own_csr(registrar).await?;
            request.rqi = random_id(10);
            response = self.send_to_registrar(registrar, &request).await?;
        }
        if !matches!(response.rsc, Rsc::Created | Rsc::Ok) {
            let error = response.into_result().err().unwrap_or_else(|| Error::internal("unexpected answer"));
            return Err(error);
        }
        let registrar_cb = self.retrieve_registrar_cse_base(registrar).await?;
        let (local, _) = self.cse.put_registrar_csr(self.local_csr_content(registrar, &registrar_cb)).await?;
        self.learn_from_registrar(&registrar_cb).await?;
        lock(&registrar.state).announced = true;
        info!(registrar = %registrar.info.cse_id, "registered to registrar");
        self.cse
            .events
            .emit(Event::RegisteredToRegistrar { registrar_csi: registrar.info.cse_id.clone(), csr: Arc::new(local) });
        self.set_status(registrar, RegistrationStatus::Registered);
        Ok(())
    }

    /// DELETE the own CSR on the registrar; "not there" is fine.
    async fn delete_own_csr(&self, registrar: &Registrar) -> Result<()> {
        let request = self.request(registrar, Operation::Delete, registrar.own_csr_path());
        let response = self.send_to_registrar(registrar, &request).await?;
        match response.rsc {
            Rsc::Deleted | Rsc::Ok | Rsc::NotFound => Ok(()),
            _ => Err(response.into_result().err().unwrap_or_else(|| Error::internal("unexpected answer"))),
        }
    }

    async fn update_own_csr(&self, registrar: &Registrar, content: Map<String, Value>) -> Result<()> {
        let mut request = self.request(registrar, Operation::Update, registrar.own_csr_path());
        request.content = Some(json!({ "m2m:csr": content }));
        let response = self.send_to_registrar(registrar, &request).await?;
        match response.rsc {
            Rsc::Updated | Rsc::Ok => {
                debug!(registrar = %registrar.info.cse_id, "own CSR updated at the registrar");
                Ok(())
            }
            _ => Err(response.into_result().err().unwrap_or_else(|| Error::internal("unexpected answer"))),
        }
    }

    async fn retrieve_registrar_cse_base(&self, registrar: &Registrar) -> Result<Map<String, Value>> {
        let request = self.request(registrar, Operation::Retrieve, registrar.registrar_cb.clone());
        let response = self.send_to_registrar(registrar, &request).await?.into_result()?;
        let cse_base = response
            .content
            .as_ref()
            .and_then(|content| content.get("m2m:cb"))
            .and_then(Value::as_object)
            .filter(|cse_base| cse_base.get("csi").is_some_and(Value::is_string))
            .cloned()
            .ok_or_else(|| Error::bad_request("the registrar's CSEBase has no csi"))?;
        Ok(cse_base)
    }

    /// Attributes of this CSE's CSR on the registrar, from the local CSEBase.
    async fn own_csr_content(&self, registrar: &Registrar, for_update: bool) -> Result<Map<String, Value>> {
        let cse_base = self.cse.cse_base().await?;
        let mut content = Map::new();
        for name in ["cst", "csz", "lbl", "nl", "srv", "spi", "ici", "poa"] {
            if let Some(value) = cse_base.attributes.get(name) {
                content.insert(name.to_string(), value.clone());
            }
        }
        let descendants: Vec<String> =
            self.cse.registry.descendant_ids().into_iter().filter(|csi| *csi != registrar.info.cse_id).collect();
        content.insert("dcse".into(), json!(descendants));
        if for_update {
            content.remove("cst");
        } else {
            content.insert("rn".into(), json!(registrar.own_csr_rn));
            content.insert("rr".into(), json!(true));
            content.insert("csi".into(), json!(registrar.own_csi));
            content.insert("cb".into(), json!(registrar.own_cb));
        }
        for name in &registrar.config.exclude_csr_attributes {
            content.remove(name);
        }
        Ok(content)
    }

    /// Attributes of the local CSR describing the registrar, from its CSEBase.
    fn local_csr_content(&self, registrar: &Registrar, registrar_cb: &Map<String, Value>) -> Map<String, Value> {
        let mut content = Map::new();
        for name in ["cst", "csz", "lbl", "nl", "srv", "spi", "ici", "poa"] {
            if registrar.config.exclude_csr_attributes.iter().any(|excluded| excluded == name) {
                continue;
            }
            if let Some(value) = registrar_cb.get(name) {
                content.insert(name.to_string(), value.clone());
            }
        }
        if !content.contains_key("poa") {
            content.insert("poa".into(), json!(registrar.info.addresses));
        }
        content.insert("rr".into(), json!(true));
        content.insert("csi".into(), json!(registrar.info.cse_id));
        content.insert("cb".into(), json!(registrar.registrar_cb));
        content
    }

    /// Take over what the registrar tells about the tree: the IN-CSE's ID (`ici`).
    async fn learn_from_registrar(&self, registrar_cb: &Map<String, Value>) -> Result<()> {
        if self.cse.config.registrar.is_none() {
            return Ok(());
        }
        if let Some(ici) = registrar_cb.get("ici").filter(|ici| ici.is_string()) {
            let mut changes = Map::new();
            changes.insert("ici".into(), ici.clone());
            self.cse.update_cse_base(changes).await?;
        }
        Ok(())
    }

    async fn drop_local_registrar_csr(&self, registrar: &Registrar) -> Result<()> {
        self.cse.delete_local(&registrar.local_csr_ri).await?;
        lock(&registrar.state).announced = false;
        Ok(())
    }

    async fn deregister_all(&self) {
        for registrar in &self.registrars {
            let registered = matches!(self.cse.storage.get(&registrar.local_csr_ri).await, Ok(Some(_)));
            if registered {
                if let Err(error) = self.delete_own_csr(registrar).await {
                    warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot delete the own CSR at the registrar");
                }
                if let Err(error) = self.drop_local_registrar_csr(registrar).await {
                    warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot delete the local registrar CSR");
                }
                info!(registrar = %registrar.info.cse_id, "deregistered from registrar");
                self.cse.events.emit(Event::DeregisteredFromRegistrar { registrar_csi: registrar.info.cse_id.clone() });
            }
            self.set_status(registrar, RegistrationStatus::Deregistered);
        }
    }

    /// Push the current set of CSEs below this one to every registrar this CSE is
    /// registered to (the `dcse` of its CSR there).
    async fn push_descendants(&self) {
        for registrar in &self.registrars {
            if !matches!(
                lock(&registrar.state).status,
                RegistrationStatus::Registered | RegistrationStatus::Unreachable
            ) {
                continue;
            }
            let content = match self.own_csr_content(registrar, true).await {
                Ok(content) => content,
                Err(error) => {
                    warn!(error = %error.detail(), "cannot build the own CSR");
                    continue;
                }
            };
            if let Err(error) = self.update_own_csr(registrar, content).await {
                warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot push descendants to the registrar");
            }
        }
    }

    fn request(&self, registrar: &Registrar, op: Operation, to: String) -> Request {
        let mut request = Request::new(op, to, Some(&registrar.config.originator));
        request.rvi = self.cse.config.cse.release_version.clone();
        request
    }

    /// Send to the registrar: its addresses in order of preference, moving on only when
    /// one is unreachable. Remembers (and reports) the address in use.
    async fn send_to_registrar(&self, registrar: &Registrar, request: &Request) -> Result<Response> {
        let mut last_failure = None;
        for (index, address) in registrar.info.addresses.iter().enumerate() {
            let base = format!("{address}{}", registrar.config.root);
            let credentials = registrar.config.credentials.as_ref();
            match self.cse.outbound.send(&base, request, self.cse.outbound.timeout(), credentials).await {
                Ok(response) => {
                    let previous = lock(&registrar.state).active.replace(index);
                    if previous != Some(index) {
                        info!(registrar = %registrar.info.cse_id, %address, "using registrar address");
                        let status = lock(&registrar.state).status.clone();
                        self.notify_status(registrar, &status);
                    }
                    return Ok(response);
                }
                Err(failure) => {
                    debug!(registrar = %registrar.info.cse_id, %address, error = %failure, "registrar address failed");
                    last_failure = Some(failure);
                }
            }
        }
        Err(match last_failure {
            Some(failure) => failure.into_error(&registrar.info.cse_id),
            None => Error::not_reachable("the registrar has no address"),
        })
    }

    // ---------------------------------------------------------------------------------
    // Registrar side: registree liveliness
    // ---------------------------------------------------------------------------------

    /// Probe every registree's CSEBase concurrently (bounded), each with its own
    /// time-out; remove a registree only after `liveliness_failures` failed rounds in a row.
    async fn probe_registrees(&self, failures: &mut HashMap<String, u32>) {
        let registration = &self.cse.config.registration;
        let csrs = self.cse.registry.registree_csrs();
        failures.retain(|csi, _| csrs.iter().any(|csr| csr.str("csi") == Some(csi)));
        let permits = Arc::new(Semaphore::new(registration.liveliness_parallelism));
        let mut probes = JoinSet::new();
        for csr in csrs {
            let permits = permits.clone();
            let cse = self.cse.clone();
            let timeout = registration.liveliness_timeout;
            probes.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let alive = probe(&cse, &csr, timeout).await;
                (csr, alive)
            });
        }
        while let Some(result) = probes.join_next().await {
            let Ok((csr, alive)) = result else { continue };
            let csi = csr.str("csi").unwrap_or_default().to_string();
            if alive {
                failures.remove(&csi);
                continue;
            }
            let count = failures.entry(csi.clone()).or_insert(0);
            *count += 1;
            warn!(%csi, failures = *count, "registree did not answer");
            if *count >= registration.liveliness_failures {
                failures.remove(&csi);
                info!(%csi, "removing unreachable registree");
                if let Err(error) = self.cse.delete_local(csr.ri()).await {
                    warn!(%csi, error = %error.detail(), "cannot remove the registree's CSR");
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Status and callbacks
    // ---------------------------------------------------------------------------------

    fn set_status(&self, registrar: &Registrar, status: RegistrationStatus) {
        let changed = {
            let mut state = lock(&registrar.state);
            let changed = state.status != status;
            state.status = status.clone();
            changed
        };
        if changed {
            self.notify_status(registrar, &status);
        }
    }

    fn notify_status(&self, registrar: &Registrar, status: &RegistrationStatus) {
        let address = lock(&registrar.state).active.and_then(|index| registrar.info.addresses.get(index).cloned());
        let Ok(callbacks) = self.callbacks.lock() else { return };
        for (callback, thread) in &callbacks.status {
            let (callback, info, status, address) =
                (callback.clone(), registrar.info.clone(), status.clone(), address.clone());
            thread.run(move || callback(&info, &status, address.as_deref()));
        }
    }

    fn notify_csr(&self, csr: Arc<Resource>, registrar: bool, added: bool) {
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

/// Is the registree behind `csr` answering? Any oneM2M answer counts; only transport
/// failures on every `poa` count as down, and so does a refusal of this CSE's credentials
/// (`registree_security`): a registree this CSE cannot call is not reachable from here.
async fn probe(cse: &Cse, csr: &Resource, timeout: Duration) -> bool {
    let target = csr.str("cb").unwrap_or_default().to_string();
    let csi = csr.str("csi").unwrap_or_default();
    let credentials = cse.config.registration.registree_credentials.get(csi);
    let identity = &cse.identity;
    let originator =
        if csi.starts_with("//") { identity.cse_id.absolute(&identity.sp_id) } else { identity.cse_id.to_string() };
    let mut request = Request::new(Operation::Retrieve, target, Some(&originator));
    request.rvi = cse.config.cse.release_version.clone();
    for poa in csr.str_list("poa") {
        match cse.outbound.send(&poa, &request, timeout, credentials).await {
            Ok(_) => return true,
            Err(failure) => debug!(%csi, %poa, error = %failure, "probe failed"),
        }
    }
    false
}

fn resource_from_json(content: &Value, id: &str) -> Option<Resource> {
    let (wrapper, attributes) = content.as_object()?.iter().next()?;
    let ty = crate::resource::ResourceType::from_wrapper(wrapper)?;
    Some(Resource { ty, attributes: attributes.as_object()?.clone(), path: id.to_string(), creator: None })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl RegistrationStatus {
    /// While (re-)registering: stay `Unreachable`/`Error` if that is the news, else `Connecting`.
    fn max_connecting(self) -> RegistrationStatus {
        match self {
            RegistrationStatus::Registered | RegistrationStatus::Disabled | RegistrationStatus::Deregistered => {
                RegistrationStatus::Connecting
            }
            other => other,
        }
    }
}
