//! The registree side: this CSE's registration to each of its registrars. Every monitor
//! round either verifies the registration (the own CSR there, the local CSR describing the
//! registrar, what each side should copy from the other) or makes it anew; a registrar
//! that does not answer keeps the registration (`Unreachable`) and is tried again next
//! round. The registrar's addresses are tried in order; the one that answered is kept.

use std::sync::{Arc, Mutex};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::relation::Step;
use super::{Inner, RegistrarInfo, RegistrationStatus, lock};
use crate::config::{Config, CseConfig, RegistrarConfig};
use crate::core::net::TransportError;
use crate::core::request::{Operation, Request, Response};
use crate::error::{Error, Result, Rsc};
use crate::event::Event;
use crate::id::resource_name_of;
use crate::resource::random_id;

/// Per registrar: configuration, derived names, and what the monitor knows.
pub(super) struct Registrar {
    pub(super) config: RegistrarConfig,
    pub(super) info: RegistrarInfo,
    /// Name of this CSE's CSR on the registrar.
    pub(super) own_csr_rn: String,
    /// This CSE's CSE-ID as the registrar knows it.
    pub(super) own_csi: String,
    /// This CSE's CSEBase address as the registrar knows it.
    pub(super) own_cb: String,
    /// The registrar's CSEBase address (`/id-in/cse-in`, `//sp/id-in/cse-in`).
    pub(super) registrar_cb: String,
    /// `ri` of the local CSR describing the registrar.
    pub(super) local_csr_ri: String,
    pub(super) state: Mutex<RegistrarState>,
    /// Held while this CSE's CSR on the registrar is being updated.
    pushing: tokio::sync::Mutex<()>,
}

pub(super) struct RegistrarState {
    pub(super) status: RegistrationStatus,
    /// Index into the addresses of the one that answered last.
    pub(super) active: Option<usize>,
    /// Whether `RegisteredToRegistrar` was emitted for the current registration.
    pub(super) announced: bool,
    /// Whether the last check failed: the monitor retries soon, and a failure is logged
    /// once, not at every retry.
    pub(super) failing: bool,
    /// While on a less preferred address group: when to try the better ones next, and the
    /// growing delays between tries.
    return_at: Option<Instant>,
    returns: Option<ExponentialBackoff>,
    /// Registrations lost at the registrar lately: how many, the last when.
    pub(super) lost: Option<(u32, Instant)>,
}

impl Registrar {
    /// The registrars `config` names: the same-SP one first, then those of other SPs.
    pub(super) fn all(config: &Config) -> Vec<Registrar> {
        let same_sp = config.registrar.iter().map(|registrar| (registrar, false));
        let other_sp = config.sp_registrars.iter().map(|registrar| (registrar, true));
        same_sp.chain(other_sp).map(|(registrar, other)| Registrar::new(&config.cse, registrar, other)).collect()
    }

    /// A registrar of the same service provider, or (`other_sp`) of another one.
    pub(super) fn new(own: &CseConfig, registrar: &RegistrarConfig, other_sp: bool) -> Registrar {
        let own_stem = own.cse_id.stem();
        let (cse_id, own_csi, own_cb, own_csr_rn, registrar_cb) = if other_sp {
            (
                registrar.absolute_cse_id(),
                own.cse_id.absolute(&own.sp_id),
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
        Registrar {
            info: RegistrarInfo {
                section: registrar.section.clone(),
                cse_id: cse_id.clone(),
                addresses: registrar.addresses.clone(),
                groups: registrar.groups.clone(),
            },
            local_csr_ri: resource_name_of(&cse_id),
            own_csr_rn,
            own_csi,
            own_cb,
            registrar_cb,
            config: registrar.clone(),
            pushing: tokio::sync::Mutex::new(()),
            state: Mutex::new(RegistrarState {
                status: RegistrationStatus::Disabled,
                active: None,
                announced: false,
                failing: false,
                return_at: None,
                returns: None,
                lost: None,
            }),
        }
    }

    /// Go on from where `old` (the same registrar, configured differently) was: its
    /// status and whether its registration was announced. The address in use is found
    /// anew.
    pub(super) fn take_state(&self, old: &Registrar) {
        let old = lock(&old.state);
        let mut state = lock(&self.state);
        state.status = old.status.clone();
        state.announced = old.announced;
        state.failing = old.failing;
    }

    pub(super) fn own_csr_path(&self) -> String {
        format!("{}/{}", self.registrar_cb, self.own_csr_rn)
    }
}

impl Inner {
    pub(super) async fn check_registrar(&self, registrar: &Registrar) {
        self.return_to_preferred_group(registrar).await;
        let result = match self.cse.storage.get(&registrar.local_csr_ri).await {
            Ok(Some(_)) => self.verify_registration(registrar).await,
            Ok(None) => self.register(registrar).await,
            Err(error) => Err(error),
        };
        let was_failing = std::mem::replace(&mut lock(&registrar.state).failing, result.is_err());
        let Err(error) = result else { return };
        // A failure is logged at warn when it starts or changes kind, at debug while it lasts.
        let unreachable = matches!(error.rsc, Rsc::TargetNotReachable | Rsc::RequestTimeout);
        let step = if unreachable {
            Step::NotReached
        } else {
            Step::Refused(format!("{}: {}", error.rsc.code(), error.detail()))
        };
        let csi = &registrar.info.cse_id;
        let changed = self.step(registrar, step).is_some() || !was_failing;
        match (changed, unreachable) {
            (true, true) => warn!(registrar = %csi, error = %error.detail(), "registrar unreachable; retrying"),
            (true, false) => {
                warn!(registrar = %csi, rsc = error.rsc.code(), error = %error.detail(), "registration step failed; retrying")
            }
            (false, _) => debug!(registrar = %csi, rsc = error.rsc.code(), error = %error.detail(), "still failing"),
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
                self.note_lost_registration(registrar);
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
        self.push_own_csr(registrar, Some(&remote_own)).await?;
        let announce = !std::mem::replace(&mut lock(&registrar.state).announced, true);
        if announce {
            self.cse.events.emit(Event::RegisteredToRegistrar {
                registrar_csi: registrar.info.cse_id.clone(),
                csr: Arc::new(local),
            });
        }
        self.step(registrar, Step::Registered);
        Ok(())
    }

    /// Branch B: no local registrar CSR. Clean slate, create the own CSR, retrieve the
    /// registrar's CSEBase, create the local CSR for the registrar.
    async fn register(&self, registrar: &Registrar) -> Result<()> {
        self.step(registrar, Step::Registering);
        self.refuse_if_twin(registrar).await?;
        self.delete_own_csr(registrar).await?;
        // Whatever this CSE announced there went with that CSR: to be made anew.
        self.cse.announcements_lost(registrar.info.cse_id.clone()).await?;
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
        self.step(registrar, Step::Registered);
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
        if self.cse.config().registrar.is_none() {
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
        self.cse.delete_registrar_record(&registrar.local_csr_ri).await?;
        lock(&registrar.state).announced = false;
        Ok(())
    }

    pub(super) async fn deregister_all(&self) {
        for registrar in self.registrars().iter() {
            self.deregister(registrar).await;
        }
    }

    /// Delete this CSE's CSR on `registrar` and the local CSR describing it (each step
    /// logged when it fails; the local one goes anyway), waiting for a push in progress.
    pub(super) async fn deregister(&self, registrar: &Registrar) {
        let _no_push = registrar.pushing.lock().await;
        let registered = matches!(self.cse.storage.get(&registrar.local_csr_ri).await, Ok(Some(_)));
        if registered {
            match self.delete_own_csr(registrar).await {
                Err(error) => {
                    warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot delete the own CSR at the registrar");
                }
                // What this CSE announced there went with its CSR.
                Ok(()) => {
                    if let Err(error) = self.cse.announcements_lost(registrar.info.cse_id.clone()).await {
                        warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot mark the announcements there as lost");
                    }
                }
            }
            if let Err(error) = self.drop_local_registrar_csr(registrar).await {
                warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot delete the local registrar CSR");
            }
            info!(registrar = %registrar.info.cse_id, "deregistered from registrar");
            self.cse.events.emit(Event::DeregisteredFromRegistrar { registrar_csi: registrar.info.cse_id.clone() });
        }
        self.step(registrar, Step::Deregistered);
    }

    /// Push the current set of CSEs below this one to every registrar this CSE is
    /// registered to (the `dcse` of its CSR there).
    pub(super) async fn push_descendants(&self) {
        for registrar in self.registrars().iter() {
            if !matches!(
                lock(&registrar.state).status,
                RegistrationStatus::Registered | RegistrationStatus::Unreachable
            ) {
                continue;
            }
            if let Err(error) = self.push_own_csr(registrar, None).await {
                warn!(registrar = %registrar.info.cse_id, error = %error.detail(), "cannot push descendants to the registrar");
            }
        }
    }

    /// Bring this CSE's CSR on the registrar up to date (unless `remote` shows it is). One
    /// push at a time per registrar, each built from the state of the moment it is sent,
    /// so a late push never overwrites a newer one with an older `dcse`.
    async fn push_own_csr(&self, registrar: &Registrar, remote: Option<&Map<String, Value>>) -> Result<()> {
        let _one_at_a_time = registrar.pushing.lock().await;
        let desired = self.own_csr_content(registrar, true).await?;
        let current = remote.is_some_and(|remote| desired.iter().all(|(name, value)| remote.get(name) == Some(value)));
        if current {
            return Ok(());
        }
        self.update_own_csr(registrar, desired).await
    }

    pub(super) fn request(&self, registrar: &Registrar, op: Operation, to: String) -> Request {
        let mut request = Request::new(op, to, Some(&registrar.config.originator));
        request.rvi = self.cse.config().cse.release_version.clone();
        request
    }

    /// Send to the registrar: the address in use first (sticky), then the others of its
    /// group, then the other groups by preference, moving on when one is unreachable or
    /// answers with a server error (5xxx: a broken instance or a proxy in front of none).
    /// Remembers (and reports) the address that answered; when every address failed, the
    /// last server error is the answer, else the last transport error.
    pub(super) async fn send_to_registrar(&self, registrar: &Registrar, request: &Request) -> Result<Response> {
        let mut last_failure = None;
        let mut last_server_error = None;
        let active = lock(&registrar.state).active;
        for index in registrar.config.attempt_order(active) {
            match self.send_via(registrar, index, request).await {
                Ok(response) if response.rsc.code() >= 5000 => last_server_error = Some(response),
                Ok(response) => {
                    self.use_address(registrar, index);
                    return Ok(response);
                }
                Err(failure) => last_failure = Some(failure),
            }
        }
        if let Some(response) = last_server_error {
            return Ok(response);
        }
        Err(match last_failure {
            Some(failure) => failure.into_error(&registrar.info.cse_id),
            None => Error::not_reachable("the registrar has no address"),
        })
    }

    /// Send through the registrar's address at `index` only.
    async fn send_via(
        &self,
        registrar: &Registrar,
        index: usize,
        request: &Request,
    ) -> std::result::Result<Response, TransportError> {
        let address = registrar.info.addresses.get(index).map(String::as_str).unwrap_or_default();
        let base = format!("{address}{}", registrar.config.root);
        let credentials = registrar.config.credentials.as_ref();
        let sent = self.cse.outbound.send(&base, request, self.cse.outbound.timeout(), credentials).await;
        match &sent {
            Ok(response) if response.rsc.code() >= 5000 => {
                debug!(registrar = %registrar.info.cse_id, %address, rsc = response.rsc.code(), "registrar address answered a server error");
            }
            Ok(_) => {}
            Err(failure) => {
                debug!(registrar = %registrar.info.cse_id, %address, error = %failure, "registrar address failed")
            }
        }
        sent
    }

    /// The address at `index` answered: keep using it; report a change.
    fn use_address(&self, registrar: &Registrar, index: usize) {
        let previous = {
            let mut state = lock(&registrar.state);
            let previous = state.active.replace(index);
            let group =
                |index: Option<usize>| index.and_then(|index| registrar.info.group_of(index)).map(|(group, _)| group);
            if group(previous) != group(Some(index)) {
                // Another group: the way back to better ones starts afresh.
                state.return_at = None;
                state.returns = None;
            }
            previous
        };
        if previous == Some(index) {
            return;
        }
        let address = registrar.info.addresses.get(index).map(String::as_str).unwrap_or_default();
        self.cse.use_registrar_address(&registrar.info.cse_id, address);
        let group = registrar.info.group_of(index).map(|(_, name)| name).unwrap_or_default();
        info!(registrar = %registrar.info.cse_id, %group, %address, "using registrar address");
        self.notify_status(registrar);
    }

    /// On a less preferred group: when due, try the better groups' addresses (a RETRIEVE
    /// of the registrar's CSEBase) and move back to the first that answers. Tries are
    /// spaced from `check_interval` up to 16 times that, doubling, with jitter.
    async fn return_to_preferred_group(&self, registrar: &Registrar) {
        let current = {
            let mut state = lock(&registrar.state);
            let Some((group, _)) = state.active.and_then(|index| registrar.info.group_of(index)) else { return };
            if group == 0 || state.return_at.is_some_and(|at| Instant::now() < at) {
                return;
            }
            let interval = self.cse.config().registration.check_interval;
            let delays = state.returns.get_or_insert_with(|| {
                ExponentialBuilder::new()
                    .with_min_delay(interval)
                    .with_max_delay(interval * 16)
                    .with_jitter()
                    .without_max_times()
                    .build()
            });
            let delay = delays.next().unwrap_or(interval * 16);
            state.return_at = Some(Instant::now() + delay);
            group
        };
        let request = self.request(registrar, Operation::Retrieve, registrar.registrar_cb.clone());
        let better = (0..registrar.info.addresses.len())
            .take_while(|index| registrar.info.group_of(*index).is_some_and(|(group, _)| group < current));
        for index in better {
            if let Ok(response) = self.send_via(registrar, index, &request).await
                && response.rsc.code() < 5000
            {
                info!(registrar = %registrar.info.cse_id, "a more preferred registrar address group answers again; going back");
                self.use_address(registrar, index);
                return;
            }
        }
        debug!(registrar = %registrar.info.cse_id, "the more preferred registrar address groups still do not answer");
    }
}
