//! The core: the binding-neutral CSE, which applies oneM2M requests to the resource tree.
//!
//! [`Cse`] is the handle every caller shares (the HTTP binding, the background workers,
//! embedders): cloning it is cheap. `Cse::handle` checks a request, resolves its target,
//! and runs the operation in one storage transaction, so that every change (a CIN and its
//! container's counters, an eviction, a name check and an insert) is atomic. Changes that
//! others must hear about are emitted as events after the commit.

pub mod access;
pub mod address;
mod descendants;
pub mod filter;
pub mod net;
mod originator;
pub mod registry;
mod represent;
pub mod request;
mod select;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tracing::{debug, error, info, instrument};

use crate::config::{Config, CseKind, RegistrarConfig};
use crate::core::access::{Access, Accessor, Permission, Touches};
use crate::core::address::{Identity, LocalId, LocalTarget, RemoteTarget, Target, VirtualChild, matches_any};
use crate::core::descendants::check_dcse;
use crate::core::net::{Outbound, TransportError};
use crate::core::registry::{Registry, Route};
use crate::core::request::{FilterCriteria, IdForm, Operation, Request, Response, SUPPORTED_MEDIA_TYPES};
use crate::core::select::{Bounds, Measure, Selected, select};
use crate::error::{Error, Result, Rsc};
use crate::event::EventBus;
use crate::id::{hop_name, is_cse_id, last_element, resource_name_of};
use crate::resource::{self, Resource, ResourceType, Timestamp, content_size, known_unsupported_type, random_id};
use crate::security::{Credentials, HostPattern};
use crate::storage::{ReadTx, Storage, WriteTx};

/// Longest structured path of a resource (the tree cannot grow without bound in depth).
const MAX_PATH_LENGTH: usize = 4096;

/// Most CSEs a forwarded request may pass.
const MAX_HOPS: usize = 16;

/// Length of the random part of generated IDs.
const ID_LENGTH: usize = 10;

/// The CSE: configuration, identity, storage, events, the registry of remote CSEs and
/// the outgoing client, shared by every caller. Cloning is cheap: every field is a handle.
#[derive(Clone)]
pub struct Cse {
    pub config: Arc<Config>,
    pub identity: Arc<Identity>,
    pub storage: Storage,
    pub events: EventBus,
    /// Known remote CSEs; kept current by the remote-CSE manager, read for routing.
    pub registry: Registry,
    /// How requests reach other CSEs (a binding's client).
    pub outbound: Arc<dyn Outbound>,
}

impl Cse {
    pub fn new(config: Arc<Config>, storage: Storage, events: EventBus, outbound: Arc<dyn Outbound>) -> Cse {
        let identity = Arc::new(Identity::from(&config.cse));
        let registrars = config
            .registrar
            .iter()
            .map(|registrar| registrar.cse_id.to_string())
            .chain(config.sp_registrars.iter().map(|registrar| format!("//{}{}", registrar.sp_id, registrar.cse_id)))
            .collect();
        let registry = Registry::new(&identity.cse_id, registrars);
        storage.observe(Arc::new(registry.clone()));
        Cse { config, identity, storage, events, registry, outbound }
    }

    /// Fill the routing table from the `<remoteCSE>` resources stored now (at start).
    pub async fn load_registry(&self) -> Result<()> {
        let csrs = self.storage.read(|tx| tx.by_type(ResourceType::Csr)).await?;
        self.registry.load(csrs);
        Ok(())
    }

    /// Handle one request; every failure becomes an error response.
    #[instrument(name = "request", skip_all, fields(op = request.op.name(), to = %request.to, fr = ?request.originator, rqi = %request.rqi))]
    pub async fn handle(&self, request: Request) -> Response {
        match self.dispatch(&request).await {
            Ok(response) => {
                debug!(rsc = response.rsc.code(), "done");
                response
            }
            Err(failure) => {
                // The peer learns the RSC and a short text; the details are logged here.
                match failure.rsc {
                    Rsc::InternalServerError => error!(error = %failure.detail(), "request failed"),
                    Rsc::TargetNotReachable | Rsc::RequestTimeout => {
                        info!(rsc = failure.rsc.code(), error = %failure.detail(), "request not delivered")
                    }
                    _ => debug!(rsc = failure.rsc.code(), dbg = %failure.dbg, "rejected"),
                }
                Response::error(&request, &failure)
            }
        }
    }

    async fn dispatch(&self, request: &Request) -> Result<Response> {
        self.check_request(request)?;
        self.check_caller(request)?;
        let local = match self.identity.resolve(&request.to)? {
            Target::Local(local) => local,
            Target::Remote(remote) => return self.forward(request, &remote).await,
        };
        let originator = request.originator.as_deref().map(|o| self.identity.simplify_originator(o));
        let guard = Access {
            accessor: Accessor {
                originator: originator.clone().unwrap_or_default(),
                authenticated: request.caller.is_authenticated(),
                address: request.caller.address(),
            },
            config: self.config.clone(),
            identity: self.identity.clone(),
        };
        match request.op {
            Operation::Create => self.create(request, originator, local, guard).await,
            Operation::Retrieve => self.retrieve(request, local, guard).await,
            Operation::Update => self.update(request, local, guard).await,
            Operation::Delete => self.delete(request, local, guard).await,
            Operation::Notify => {
                Err(Error::not_implemented("this CSE does not host notification targets (no subscriptions)"))
            }
        }
    }

    /// Request-level checks that do not depend on the target.
    fn check_request(&self, request: &Request) -> Result<()> {
        if request.ty.is_some() && request.op != Operation::Create {
            return Err(Error::bad_request(format!(
                "a resource type (ty) belongs to a CREATE only, not to a {}",
                request.op.name()
            )));
        }
        if !self.config.cse.release_versions.contains(&request.rvi) {
            return Err(Error::new(
                Rsc::ReleaseVersionNotSupported,
                format!(
                    "release version {:?} is not supported (supported: {})",
                    request.rvi,
                    self.config.cse.release_versions.join(", ")
                ),
            ));
        }
        let is_ae_create = request.op == Operation::Create && request.ty == Some(2);
        if request.originator.is_none() && !is_ae_create {
            return Err(Error::bad_request("missing originator (X-M2M-Origin)"));
        }
        if let Some(rqet) = &request.rqet {
            if *rqet < Timestamp::now() {
                return Err(Error::new(Rsc::RequestTimeout, "request expiration time has passed"));
            }
        }
        if let Some(rcn) = request.rcn {
            let allowed: &[u8] = match (request.op, request.filter.is_discovery()) {
                (Operation::Create, _) => &[0, 1, 2, 3, 9],
                (Operation::Retrieve, true) => &[6, 11],
                (Operation::Retrieve, false) => &[1, 4, 5, 6, 7, 8],
                (Operation::Update, _) => &[0, 1, 9],
                (Operation::Delete, _) => &[0, 1, 4, 5, 6, 8],
                (Operation::Notify, _) => &[0],
            };
            if !allowed.contains(&rcn) {
                return Err(Error::bad_request(format!(
                    "rcn {rcn} is not allowed for {} (allowed: {allowed:?})",
                    request.op.name()
                )));
            }
        }
        Ok(())
    }

    /// A target on another CSE: forward the request to the next hop towards it and relay
    /// the answer unchanged. See [`Cse::next_hop`] for the routing decision.
    async fn forward(&self, request: &Request, remote: &RemoteTarget) -> Result<Response> {
        let target = match &remote.sp_id {
            Some(sp) => format!("//{sp}{}", remote.cse_id),
            None => remote.cse_id.clone(),
        };
        let own_hop = self.identity.hop_name();
        if request.via.contains(&own_hop) {
            return Err(Error::not_reachable(format!(
                "routing loop: the request for {target} has already passed this CSE (via {})",
                request.via.join(", ")
            )));
        }
        if request.via.len() >= MAX_HOPS {
            return Err(Error::not_reachable(format!(
                "the request for {target} has passed {} CSEs; giving up (hop limit)",
                request.via.len()
            )));
        }
        let hop = self.next_hop(&target, remote.sp_id.as_deref())?;
        if request.via.last().is_some_and(|previous| *previous == hop.name) {
            return Err(Error::not_reachable(format!(
                "no route to CSE {target}: the next hop {} is the CSE the request came from",
                hop.cse_id
            )));
        }
        let mut outgoing = request.clone();
        outgoing.originator = Some(self.forwarding_originator(request, remote.sp_id.is_some()));
        outgoing.via.push(own_hop);
        let timeout = match &request.rqet {
            Some(rqet) => rqet.duration_since(Timestamp::now()).min(self.outbound.timeout()),
            None => self.outbound.timeout(),
        };
        // The next address is tried only when this one could not be reached: a request that
        // timed out may have been carried out, and an oversized answer is an answer.
        let mut last_failure = None;
        for url in &hop.urls {
            match self.outbound.send(url, &outgoing, timeout, hop.credentials.as_ref()).await {
                Ok(response) => {
                    debug!(next = %hop.cse_id, %url, rsc = response.rsc.code(), "forwarded");
                    return Ok(response);
                }
                Err(failure @ (TransportError::Timeout { .. } | TransportError::TooLarge { .. })) => {
                    return Err(failure.into_error(&hop.cse_id));
                }
                Err(failure) => {
                    debug!(next = %hop.cse_id, error = %failure, "next hop address failed");
                    last_failure = Some(failure);
                }
            }
        }
        Err(match last_failure {
            Some(failure) => failure.into_error(&hop.cse_id),
            None => Error::not_reachable(format!("CSE {} has no point of access", hop.cse_id)),
        })
    }

    /// The routing decision, in one place: down to the registree that is the target or has
    /// it below (exact CSE-ID); to a registrar that is the target; across to the registrar
    /// of another service provider; otherwise up to this CSE's registrar (the default
    /// route); otherwise no route (5103).
    pub fn next_hop(&self, target: &str, other_sp: Option<&str>) -> Result<NextHop> {
        if let Some(sp) = other_sp {
            let prefix = format!("//{sp}/");
            if let Some(registrar) = self.config.sp_registrars.iter().find(|registrar| registrar.sp_id == sp) {
                return Ok(self.registrar_hop(registrar, format!("//{sp}{}", registrar.cse_id)));
            }
            if let Some(csr) = self
                .registry
                .registree_csrs()
                .into_iter()
                .find(|csr| csr.str("csi").is_some_and(|csi| csi == target || csi.starts_with(&prefix)))
            {
                return Ok(self.registree_hop(&csr));
            }
        } else {
            match self.registry.route(target) {
                Some(Route::Registree(csr)) => return Ok(self.registree_hop(&csr)),
                Some(Route::Registrar(_)) | None => {}
            }
        }
        // Up: to the same-SP registrar (MN/ASN), once registered there.
        if let Some(registrar) = &self.config.registrar {
            if self.registry.is_registrar(&registrar.cse_id) {
                return Ok(self.registrar_hop(registrar, registrar.cse_id.to_string()));
            }
            return Err(Error::not_reachable(format!(
                "no route to CSE {target}: this CSE is not registered to its registrar {} (yet)",
                registrar.cse_id
            )));
        }
        if let Some(sp) = other_sp {
            return Err(Error::not_found(format!(
                "no route to CSE {target}: service provider {sp} is unknown here (not a peer of this CSE)"
            )));
        }
        Err(Error::not_reachable(format!("no route to CSE {target}")))
    }

    fn registrar_hop(&self, registrar: &RegistrarConfig, cse_id: String) -> NextHop {
        let urls = registrar.addresses.iter().map(|address| format!("{address}{}", registrar.root)).collect();
        let name = hop_name(&cse_id, &self.identity.sp_id);
        NextHop { cse_id, name, urls, credentials: registrar.credentials.clone() }
    }

    fn registree_hop(&self, csr: &Resource) -> NextHop {
        let cse_id = csr.str("csi").unwrap_or_default().to_string();
        let name = hop_name(&cse_id, &self.identity.sp_id);
        let credentials = self.config.registration.registree_credentials.get(&cse_id).cloned();
        NextHop { cse_id, name, urls: csr.str_list("poa"), credentials }
    }

    /// The originator a forwarded request carries: SP-relative (`/id-in/Cae`), or
    /// absolute (`//sp/id-in/Cae`) when the request leaves this service provider.
    fn forwarding_originator(&self, request: &Request, across_sps: bool) -> String {
        let received = request.originator.as_deref().unwrap_or_default();
        let simplified = self.identity.simplify_originator(received);
        let sp_relative = self.identity.sp_relative(&simplified);
        if across_sps && !sp_relative.starts_with("//") {
            return format!("//{}{sp_relative}", self.identity.sp_id);
        }
        sp_relative
    }

    // -------------------------------------------------------------------------------------
    // CREATE
    // -------------------------------------------------------------------------------------

    async fn create(
        &self,
        request: &Request,
        originator: Option<String>,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::not_allowed("resources cannot be created under la or ol"));
        }
        let code = request.ty.ok_or_else(|| Error::bad_request("CREATE needs a resource type (ty)"))?;
        let ty = match ResourceType::from_code(code) {
            Some(ResourceType::CseBase) => {
                return Err(Error::not_allowed("a CSEBase cannot be created"));
            }
            Some(ty) => ty,
            None => match known_unsupported_type(code) {
                Some(name) => {
                    return Err(Error::not_implemented(format!("resource type {code} ({name}) is not supported")));
                }
                None => return Err(Error::bad_request(format!("unknown resource type {code}"))),
            },
        };
        let attributes = unwrap_content(request.content.as_ref(), ty, Rsc::BadRequest)?;
        let originator = match ty {
            ResourceType::Ae => self.ae_originator(originator.as_deref())?,
            ResourceType::Csr => self.csr_originator(originator.as_deref())?,
            _ => originator.unwrap_or_default(),
        };
        let plan = CreatePlan {
            ty,
            target: target.id,
            attributes,
            originator,
            rvi: request.rvi.clone(),
            config: self.config.clone(),
            identity: self.identity.clone(),
            registry: self.registry.clone(),
            guard,
        };
        let resource = self.storage.write(move |tx| plan.apply(tx)).await?;
        let request_attributes = match request.content.as_ref().and_then(|c| c.get(ty.wrapper())) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        let address = self.address_of(&resource, request.drt);
        let content = match request.rcn.unwrap_or(1) {
            0 => None,
            2 => Some(json!({ "m2m:uri": address })),
            3 => Some(json!({ "m2m:rce": { "uri": address, ty.wrapper(): resource.attributes } })),
            9 => Some(represent::modified_attributes(&resource, None, &request_attributes)),
            _ => Some(resource.to_json()),
        };
        let mut response = Response::new(request, Rsc::Created, content);
        response.content_location = Some(address);
        Ok(response)
    }

    /// AE registration rules: who may register, and the AE-ID they get.
    fn ae_originator(&self, originator: Option<&str>) -> Result<String> {
        let originator = originator.unwrap_or("C");
        let allowed = originator == self.config.cse.admin_originator
            || matches_any(&self.config.registration.allowed_ae_originators, originator);
        if !allowed {
            return Err(Error::new(
                Rsc::SecurityAssociationRequired,
                format!("originator {originator} is not allowed to register an AE"),
            ));
        }
        Ok(match originator {
            "C" => format!("C{}", random_id(ID_LENGTH)),
            "S" => format!("S{}", random_id(ID_LENGTH)),
            other => other.to_string(),
        })
    }

    /// CSR registration rules (who may register a CSE here).
    fn csr_originator(&self, originator: Option<&str>) -> Result<String> {
        let originator = originator.unwrap_or_default();
        let admin = originator == self.config.cse.admin_originator;
        let allowed = admin
            || originator == self.identity.cse_id
            || matches_any(&self.config.registration.allowed_csr_originators, originator);
        if !allowed {
            return Err(Error::no_privilege(format!(
                "originator {originator} is not allowed to register a CSE (cse.registration.allowed_csr_originators)"
            )));
        }
        if self.config.cse.kind == CseKind::Asn {
            return Err(Error::not_allowed("an ASN-CSE does not accept CSE registrations"));
        }
        if !admin && !is_cse_id(originator) {
            return Err(Error::not_allowed(format!(
                "originator {originator} is not a CSE-ID (/csi or //sp/csi); AEs cannot register as CSEs"
            )));
        }
        Ok(if originator.starts_with('/') { originator.to_string() } else { format!("/{originator}") })
    }

    // -------------------------------------------------------------------------------------
    // RETRIEVE
    // -------------------------------------------------------------------------------------

    async fn retrieve(&self, request: &Request, target: LocalTarget, guard: Access) -> Result<Response> {
        if request.filter.is_discovery() {
            return self.discover(request, target, guard).await;
        }
        let rcn = request.rcn.unwrap_or(1);
        if !request.atrl.is_empty() && rcn != 1 {
            return Err(Error::bad_request(format!("a partial retrieve (atrl) is for rcn 1 only, not rcn {rcn}")));
        }
        let filter = request.filter.clone();
        let atrl = request.atrl.clone();
        let bounds = self.bounds();
        let (mut resource, selected) = self
            .storage
            .read(move |tx| {
                let resource = match target.virtual_child {
                    Some(which) => edge_instance(tx, &target.id, which)?,
                    None => locate(tx, &target.id)?,
                };
                let touches = if atrl.is_empty() { Touches::Whole } else { Touches::Attributes(&atrl) };
                guard.check(tx, &resource, Permission::Retrieve, None, touches)?;
                check_instance_readable(tx, &resource)?;
                if rcn == 7 {
                    return Err(Error::bad_request(format!(
                        "{} is not an announced resource: it has no original (rcn 7)",
                        resource.path
                    )));
                }
                let selected = below(tx, &resource, rcn, &filter, &guard, bounds)?;
                Ok((resource, selected))
            })
            .await?;
        if resource.ty == ResourceType::Cin && resource.u64("dcnt").is_some() {
            let ri = resource.ri().to_string();
            self.storage.write(move |tx| consume_delete_count(tx, &ri)).await?;
        }
        if resource.ty == ResourceType::CseBase {
            resource.set("ctm", Timestamp::now());
        }
        let partial = selected.as_ref().and_then(|selected| selected.partial);
        let content = match selected {
            Some(selected) => self.with_below(request, &resource, rcn, selected),
            None if !request.atrl.is_empty() => represent::partial(&resource, &request.atrl)?,
            None => resource.to_json(),
        };
        let mut response = Response::new(request, Rsc::Ok, Some(content));
        response.partial = partial;
        Ok(response)
    }

    async fn discover(&self, request: &Request, target: LocalTarget, guard: Access) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::bad_request("discovery cannot start at la or ol"));
        }
        let filter = request.filter.clone();
        let bounds = self.bounds();
        let selected = self
            .storage
            .read(move |tx| {
                // The target only has to exist: what is found is checked one by one.
                let root = locate(tx, &target.id)?;
                select(tx, &root, &filter, &guard, Permission::Discovery, Measure::Reference, bounds)
            })
            .await?;
        let address = |resource: &Resource| self.scoped(request, self.address_of(resource, request.drt));
        let content = match request.rcn.unwrap_or(11) {
            6 => json!({ "m2m:rrl": { "rrf": represent::references(&selected.resources, address) } }),
            _ => {
                let uris: Vec<Value> =
                    selected.resources.iter().map(|resource| Value::String(address(resource))).collect();
                json!({ "m2m:uril": uris })
            }
        };
        let mut response = Response::new(request, Rsc::Ok, Some(content));
        response.partial = selected.partial;
        Ok(response)
    }

    /// The bounds of one answer: `cse.max_results`, `cse.max_result_size`, and the time a
    /// request may take.
    fn bounds(&self) -> Bounds {
        Bounds {
            max_results: self.config.cse.max_results,
            max_size: self.config.cse.max_result_size,
            deadline: std::time::Instant::now() + self.config.http.request_timeout,
        }
    }

    /// `resource` with what `rcn` (4, 5, 6 or 8) asks for of the resources below it.
    fn with_below(&self, request: &Request, resource: &Resource, rcn: u8, selected: Selected) -> Value {
        let address = |resource: &Resource| self.scoped(request, self.address_of(resource, request.drt));
        match rcn {
            4 | 8 => represent::tree(resource, selected.resources, rcn == 4),
            5 => {
                let mut json = resource.to_json();
                if let Some(Value::Object(attributes)) = json.get_mut(resource.ty.wrapper()) {
                    let references = represent::references(&selected.resources, address);
                    attributes.insert("ch".into(), Value::Array(references));
                }
                json
            }
            _ => json!({ "m2m:rrl": { "rrf": represent::references(&selected.resources, address) } }),
        }
    }

    // -------------------------------------------------------------------------------------
    // UPDATE
    // -------------------------------------------------------------------------------------

    async fn update(&self, request: &Request, target: LocalTarget, guard: Access) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::not_allowed("la and ol cannot be updated"));
        }
        let content = request.content.clone();
        let max_et = self.config.cse.max_expiration_delta;
        let identity = self.identity.clone();
        let registry = self.registry.clone();
        let (before, resource, changes) = self
            .storage
            .write(move |tx| {
                let mut resource = locate(tx, &target.id)?;
                match resource.ty {
                    ResourceType::CseBase => {
                        return Err(Error::not_allowed("the CSEBase cannot be updated"));
                    }
                    ResourceType::Cin => {
                        return Err(Error::not_allowed("a contentInstance cannot be updated"));
                    }
                    _ => {}
                }
                let changes = unwrap_content(content.as_ref(), resource.ty, Rsc::ContentsUnacceptable)?;
                if changes.contains_key("acpi") {
                    guard.check_acpi_change(tx, &resource)?;
                } else {
                    let sent: Vec<String> = changes.keys().cloned().collect();
                    guard.check(tx, &resource, Permission::Update, None, Touches::Attributes(&sent))?;
                }
                resource::validate_update(resource.ty, &changes)?;
                check_poa_hosts(&guard.config.registration.allowed_poa_hosts, &changes)?;
                if let (Some(dcse), Some(csi)) = (changes.get("dcse"), resource.str("csi")) {
                    check_dcse(&*tx, &registry, &identity, &guard.config, csi, dcse)?;
                }
                let before = resource.clone();
                apply_update(tx, &identity, &mut resource, &changes, max_et)?;
                Ok((before, resource, changes))
            })
            .await?;
        let content = match request.rcn.unwrap_or(1) {
            0 => None,
            9 => Some(represent::modified_attributes(&resource, Some(&before), &changes)),
            _ => Some(resource.to_json()),
        };
        Ok(Response::new(request, Rsc::Updated, content))
    }

    // -------------------------------------------------------------------------------------
    // DELETE
    // -------------------------------------------------------------------------------------

    async fn delete(&self, request: &Request, target: LocalTarget, guard: Access) -> Result<Response> {
        let rcn = match target.virtual_child {
            // DELETE of la/ol answers with the deleted instance.
            Some(_) => 1,
            None => request.rcn.unwrap_or(0),
        };
        let bounds = self.bounds();
        let (resource, selected) = self
            .storage
            .write(move |tx| {
                let resource = match target.virtual_child {
                    Some(which) => edge_instance(tx, &target.id, which)?,
                    None => locate(tx, &target.id)?,
                };
                if resource.ty == ResourceType::CseBase {
                    return Err(Error::not_allowed("the CSEBase cannot be deleted"));
                }
                guard.check(tx, &resource, Permission::Delete, None, Touches::Whole)?;
                check_instance_readable(tx, &resource)?;
                // What is shown of the deleted subtree is what the originator may read.
                let selected = below(tx, &resource, rcn, &FilterCriteria::default(), &guard, bounds)?;
                delete_resource(tx, &resource)?;
                Ok((resource, selected))
            })
            .await?;
        let partial = selected.as_ref().and_then(|selected| selected.partial);
        let content = match (rcn, selected) {
            (0, _) => None,
            (_, Some(selected)) => Some(self.with_below(request, &resource, rcn, selected)),
            (_, None) => Some(resource.to_json()),
        };
        let mut response = Response::new(request, Rsc::Deleted, content);
        response.partial = partial;
        Ok(response)
    }

    // -------------------------------------------------------------------------------------
    // Housekeeping and helpers for other components
    // -------------------------------------------------------------------------------------

    /// Delete every resource whose `et` has passed, with the same bookkeeping as a DELETE.
    /// Returns how many were removed.
    pub async fn remove_expired(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let now = Timestamp::now().to_string();
            let batch = self
                .storage
                .write(move |tx| {
                    let expired = tx.expired(&now, 100)?;
                    let mut deleted = Vec::new();
                    for resource in expired {
                        // An earlier deletion in this batch may have removed it with its parent.
                        if tx.get(resource.ri())?.is_none() {
                            continue;
                        }
                        delete_resource(tx, &resource)?;
                        deleted.push(resource);
                    }
                    Ok(deleted)
                })
                .await?;
            let count = batch.len();
            for resource in batch {
                debug!(ri = resource.ri(), "expired");
            }
            removed += count;
            if count < 100 {
                return Ok(removed);
            }
        }
    }

    /// The CSEBase.
    pub async fn cse_base(&self) -> Result<Resource> {
        let ri = self.config.cse.resource_id.clone();
        self.storage.read(move |tx| tx.get(&ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))).await
    }

    /// Set attributes of the CSEBase (what this CSE learns from its registrar). Returns
    /// whether anything changed.
    pub async fn update_cse_base(&self, changes: Map<String, Value>) -> Result<bool> {
        let ri = self.config.cse.resource_id.clone();
        self.storage
            .write(move |tx| {
                let mut cse_base = tx.get(&ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))?;
                let changed = changes.iter().any(|(name, value)| cse_base.attributes.get(name) != Some(value));
                if changed {
                    cse_base.attributes.extend(changes);
                    cse_base.set("lt", Timestamp::now());
                    tx.update(&cse_base)?;
                }
                Ok(changed)
            })
            .await
    }

    /// All CSRs under the CSEBase.
    pub async fn local_csrs(&self) -> Result<Vec<Resource>> {
        self.storage.read(|tx| tx.by_type(ResourceType::Csr)).await
    }

    /// Create or refresh the local CSR that describes a registrar (`attributes` as copied
    /// from the registrar's CSEBase, with `csi`, `cb`, `rr`). Returns the stored CSR and
    /// whether it was created.
    pub async fn put_registrar_csr(&self, attributes: Map<String, Value>) -> Result<(Resource, bool)> {
        let csi = attributes
            .get("csi")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::internal("a registrar CSR needs a csi"))?
            .to_string();
        let max_et = self.config.cse.max_expiration_delta;
        let cse_base_ri = self.config.cse.resource_id.clone();
        self.storage
            .write(move |tx| {
                let name = resource_name_of(&csi);
                let parent = tx.get(&cse_base_ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))?;
                let now = Timestamp::now();
                if let Some(mut existing) = tx.get(&name)? {
                    if existing.ty != ResourceType::Csr {
                        return Err(Error::conflict(format!("resource {name} exists and is not a CSR")));
                    }
                    let changed = attributes.iter().any(|(key, value)| existing.attributes.get(key) != Some(value));
                    if changed {
                        existing.attributes.extend(attributes);
                        existing.set("lt", now);
                        tx.update(&existing)?;
                    }
                    return Ok((existing, false));
                }
                let path = format!("{}/{name}", parent.path);
                if tx.get_by_path(&path)?.is_some() {
                    return Err(Error::conflict(format!(
                        "a resource named {name} already exists under {}",
                        parent.path
                    )));
                }
                let mut csr = Resource { ty: ResourceType::Csr, attributes, path, creator: Some(csi.clone()) };
                csr.set("ri", name.clone());
                csr.set("rn", name);
                csr.set("pi", parent.ri().to_string());
                csr.set("ty", ResourceType::Csr.code());
                csr.set("ct", now);
                csr.set("lt", now);
                csr.set("et", expiration(None, Some(&parent), max_et)?);
                tx.insert(&csr)?;
                Ok((csr, true))
            })
            .await
    }

    /// Delete a local resource (and its subtree) as a DELETE request would. Returns the
    /// deleted resource, `None` if it did not exist.
    pub async fn delete_local(&self, ri: &str) -> Result<Option<Resource>> {
        let ri = ri.to_string();
        let deleted = self
            .storage
            .write(move |tx| {
                let Some(resource) = tx.get(&ri)? else {
                    return Ok(None);
                };
                delete_resource(tx, &resource)?;
                Ok(Some(resource))
            })
            .await?;
        Ok(deleted)
    }

    /// The address of a resource in the requested form: structured path, or `ri`.
    fn address_of(&self, resource: &Resource, form: IdForm) -> String {
        match form {
            IdForm::Structured => resource.path.clone(),
            IdForm::Unstructured => format!("{}/{}", self.identity.cse_id, resource.ri()),
        }
    }

    /// Express a CSE-relative ID in the scope the originator used (SP-relative or absolute).
    fn scoped(&self, request: &Request, id: String) -> String {
        if id.starts_with('/') {
            return id;
        }
        match request.originator.as_deref() {
            Some(o) if o.starts_with("//") => {
                format!("//{}{}/{id}", self.identity.sp_id, self.identity.cse_id)
            }
            Some(o) if o.starts_with('/') => format!("{}/{id}", self.identity.cse_id),
            _ => id,
        }
    }
}

/// The next CSE on the way to a target, and where to reach it (in order of preference).
#[derive(Debug, Clone)]
pub struct NextHop {
    pub cse_id: String,
    /// Its name in `Via` headers.
    pub name: String,
    pub urls: Vec<String>,
    /// What this CSE presents to it (`[cse.registrar.security]`, `registree_security`).
    pub credentials: Option<Credentials>,
}

/// The attribute map inside `{"m2m:xxx": {...}}`, checked against the expected type.
fn unwrap_content(content: Option<&Value>, ty: ResourceType, wrong_type: Rsc) -> Result<Map<String, Value>> {
    let Some(content) = content else {
        return Err(Error::bad_request("missing content"));
    };
    let Value::Object(wrapper) = content else {
        return Err(Error::bad_request("content must be a JSON object like {\"m2m:cnt\": {...}}"));
    };
    let mut entries = wrapper.iter();
    let (Some((key, value)), None) = (entries.next(), entries.next()) else {
        return Err(Error::bad_request("content must have exactly one member like \"m2m:cnt\""));
    };
    if key != ty.wrapper() {
        return Err(Error::new(
            wrong_type,
            format!("content {key} does not match the resource type (expected {})", ty.wrapper()),
        ));
    }
    match value {
        Value::Object(attributes) => Ok(attributes.clone()),
        _ => Err(Error::bad_request(format!("{key} must be a JSON object"))),
    }
}

/// Find the target resource; 4004 when it does not exist.
fn locate(tx: &dyn ReadTx, id: &LocalId) -> Result<Resource> {
    let found = match id {
        LocalId::Structured(path) => tx.get_by_path(path)?,
        LocalId::Unstructured(ri) => tx.get(ri)?,
    };
    found.ok_or_else(|| {
        let id = match id {
            LocalId::Structured(path) | LocalId::Unstructured(path) => path,
        };
        Error::not_found(format!("resource {id} does not exist"))
    })
}

/// The newest or oldest CIN of the container `id`.
fn edge_instance(tx: &dyn ReadTx, id: &LocalId, which: VirtualChild) -> Result<Resource> {
    let container = locate(tx, id)?;
    if container.ty != ResourceType::Cnt {
        return Err(Error::not_found(format!("{} is not a container: it has no la/ol", container.path)));
    }
    let newest = which == VirtualChild::Latest;
    tx.edge_child(container.ri(), ResourceType::Cin, newest)?
        .ok_or_else(|| Error::not_found(format!("container {} has no content instances", container.path)))
}

/// CINs of a container with `disr` = true cannot be read or deleted.
fn check_instance_readable(tx: &dyn ReadTx, resource: &Resource) -> Result<()> {
    if resource.ty != ResourceType::Cin {
        return Ok(());
    }
    let parent = tx.get(resource.pi())?;
    if parent.is_some_and(|parent| parent.bool("disr") == Some(true)) {
        return Err(Error::not_allowed("retrieval of instances is disabled for this container (disr)"));
    }
    Ok(())
}

/// A RETRIEVE of a CIN with `dcnt` shows the count and decrements it; at the last one the
/// CIN is deleted.
fn consume_delete_count(tx: &mut dyn WriteTx, ri: &str) -> Result<()> {
    let Some(mut instance) = tx.get(ri)? else {
        return Ok(());
    };
    let Some(count) = instance.u64("dcnt") else {
        return Ok(());
    };
    if count <= 1 {
        return delete_resource(tx, &instance);
    }
    instance.set("dcnt", count - 1);
    tx.update(&instance)
}

/// The resources below `resource` that `rcn` shows: with 4 and 8 their attributes (the
/// originator needs RETRIEVE on each), with 5 and 6 references (DISCOVERY on each).
fn below(
    tx: &dyn ReadTx,
    resource: &Resource,
    rcn: u8,
    filter: &FilterCriteria,
    guard: &Access,
    bounds: Bounds,
) -> Result<Option<Selected>> {
    let (permission, measure) = match rcn {
        4 | 8 => (Permission::Retrieve, Measure::Attributes),
        5 | 6 => (Permission::Discovery, Measure::Reference),
        _ => return Ok(None),
    };
    select(tx, resource, filter, guard, permission, measure, bounds).map(Some)
}

/// Delete a resource and its subtree, keeping the parent container's counters right.
fn delete_resource(tx: &mut dyn WriteTx, resource: &Resource) -> Result<()> {
    if resource.ty == ResourceType::Cin {
        if let Some(mut container) = tx.get(resource.pi())? {
            let size = resource.u64("cs").unwrap_or(0);
            container.set("cni", container.u64("cni").unwrap_or(0).saturating_sub(1));
            container.set("cbs", container.u64("cbs").unwrap_or(0).saturating_sub(size));
            tx.update(&container)?;
        }
    }
    tx.delete_subtree(resource)?;
    Ok(())
}

/// Delete the oldest CINs of `container` until it is within its `mni` and `mbs`.
fn enforce_container_limits(tx: &mut dyn WriteTx, container: &mut Resource) -> Result<()> {
    let mni = container.u64("mni");
    let mbs = container.u64("mbs");
    loop {
        let cni = container.u64("cni").unwrap_or(0);
        let cbs = container.u64("cbs").unwrap_or(0);
        let over = mni.is_some_and(|mni| cni > mni) || mbs.is_some_and(|mbs| cbs > mbs);
        if !over {
            return Ok(());
        }
        let Some(oldest) = tx.edge_child(container.ri(), ResourceType::Cin, false)? else {
            return Ok(());
        };
        let size = oldest.u64("cs").unwrap_or(0);
        tx.delete_subtree(&oldest)?;
        container.set("cni", cni.saturating_sub(1));
        container.set("cbs", cbs.saturating_sub(size));
    }
}

/// The `et` of a new or updated resource: the requested one, clipped to the parent's (for a
/// non-CSEBase parent) and to the maximum; the default is the parent's or the maximum.
fn expiration(requested: Option<&Value>, parent: Option<&Resource>, max_delta: Duration) -> Result<Timestamp> {
    let now = Timestamp::now();
    let max = now.saturating_add(max_delta);
    let parent_et = parent
        .filter(|parent| parent.ty != ResourceType::CseBase)
        .and_then(|parent| parent.et())
        .and_then(Timestamp::parse);
    let limit = parent_et.map_or(max, |parent_et| parent_et.min(max));
    let Some(requested) = requested.and_then(Value::as_str) else {
        return Ok(limit);
    };
    let requested = Timestamp::parse(requested)
        .ok_or_else(|| Error::bad_request(format!("et {requested:?} is not a timestamp (YYYYMMDDTHHMMSS)")))?;
    if requested < now {
        return Err(Error::bad_request("et is in the past"));
    }
    Ok(requested.min(limit))
}

/// Resolve `acpi` entries to the `ri`s of existing ACPs (4000 when one is not an ACP).
pub(crate) fn resolve_acpi(tx: &dyn ReadTx, identity: &Identity, value: &Value) -> Result<Value> {
    let mut resolved = Vec::new();
    for entry in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
        let acp = match identity.resolve(entry) {
            Ok(Target::Local(target)) if target.virtual_child.is_none() => match locate(tx, &target.id) {
                Ok(resource) => Some(resource),
                Err(error) if error.rsc == Rsc::NotFound => None,
                Err(error) => return Err(error),
            },
            _ => None,
        };
        match acp {
            Some(acp) if acp.ty == ResourceType::Acp => resolved.push(Value::String(acp.ri().to_string())),
            _ => {
                return Err(Error::bad_request(format!("acpi entry {entry} is not an existing accessControlPolicy")));
            }
        }
    }
    Ok(Value::Array(resolved))
}

/// Apply an UPDATE's attributes to `resource` and store it (with the type's side effects).
fn apply_update(
    tx: &mut dyn WriteTx,
    identity: &Identity,
    resource: &mut Resource,
    changes: &Map<String, Value>,
    max_et: Duration,
) -> Result<()> {
    if changes.contains_key("acpi") && changes.len() > 1 {
        return Err(Error::bad_request("acpi must be the only attribute of an update"));
    }
    let retrieval_was_disabled = resource.bool("disr") == Some(true);
    let parent = tx.get(resource.pi())?;
    for (name, value) in changes {
        if value.is_null() {
            if name == "et" {
                resource.set("et", expiration(None, parent.as_ref(), max_et)?);
            } else {
                resource.attributes.remove(name);
            }
            continue;
        }
        let value = match name.as_str() {
            "et" => expiration(Some(value), parent.as_ref(), max_et)?.into(),
            _ => value.clone(),
        };
        resource.attributes.insert(name.clone(), value);
    }
    if let Some(acpi) = changes.get("acpi").filter(|value| !value.is_null()) {
        let resolved = resolve_acpi(&*tx, identity, acpi)?;
        resource.set("acpi", resolved);
    }
    resource.set("lt", Timestamp::now());
    if resource.ty == ResourceType::Cnt {
        resource.set("st", resource.u64("st").unwrap_or(0) + 1);
        if retrieval_was_disabled && changes.get("disr") == Some(&Value::Bool(false)) {
            for instance in tx.children(resource.ri(), Some(ResourceType::Cin))? {
                tx.delete_subtree(&instance)?;
            }
            resource.set("cni", 0);
            resource.set("cbs", 0);
        }
        enforce_container_limits(tx, resource)?;
    }
    tx.update(resource)
}

/// Everything a CREATE needs, moved onto the storage thread.
struct CreatePlan {
    ty: ResourceType,
    target: LocalId,
    attributes: Map<String, Value>,
    /// The (simplified) originator; for an AE its AE-ID, for a CSR its CSE-ID.
    originator: String,
    rvi: String,
    config: Arc<Config>,
    identity: Arc<Identity>,
    registry: Registry,
    guard: Access,
}

impl CreatePlan {
    fn apply(self, tx: &mut dyn WriteTx) -> Result<Resource> {
        let CreatePlan { ty, target, mut attributes, originator, rvi, config, identity, registry, guard } = self;
        let parent = locate(&*tx, &target)?;
        // AE and CSR registration are decided by the allowed-originator lists (checked
        // before); everything else by the parent's access rules.
        if !matches!(ty, ResourceType::Ae | ResourceType::Csr) {
            let sent: Vec<String> = attributes.keys().cloned().collect();
            guard.check(&*tx, &parent, Permission::Create, Some(ty), Touches::Attributes(&sent))?;
        }
        if ty == ResourceType::Ae
            && tx.get(last_element(&originator))?.is_some_and(|existing| existing.ty == ResourceType::Ae)
        {
            return Err(Error::new(
                Rsc::OriginatorHasAlreadyRegistered,
                format!("an AE with AE-ID {originator} is already registered"),
            ));
        }
        if !ty.allowed_under(parent.ty) {
            return Err(Error::new(
                Rsc::InvalidChildResourceType,
                format!("a {} cannot be created under a {}", ty.wrapper(), parent.ty.wrapper()),
            ));
        }
        // Identity of the new resource.
        // The request's attributes as sent (a non-string rn is an error, not replaced).
        resource::validate_create(ty, &attributes)?;
        let (ri, rn) = match ty {
            ResourceType::Ae => {
                let ri = last_element(&originator).to_string();
                let rn = attributes.get("rn").and_then(Value::as_str).map(str::to_string);
                (ri, rn.unwrap_or_else(|| format!("ae_{}", random_id(ID_LENGTH))))
            }
            ResourceType::Csr => {
                if originator != format!("/{}", config.cse.admin_originator)
                    && tx.get(last_element(&originator))?.is_some_and(|existing| existing.ty == ResourceType::Ae)
                {
                    return Err(Error::not_allowed(format!("originator {originator} has registered an AE")));
                }
                let admin = originator == format!("/{}", config.cse.admin_originator);
                if let Some(csi) = attributes.get("csi").and_then(Value::as_str) {
                    if !admin && identity.simplify_originator(csi) != identity.simplify_originator(&originator) {
                        return Err(Error::no_privilege(format!(
                            "originator {originator} cannot register the CSE {csi}: a CSE registers itself"
                        )));
                    }
                }
                // Its name follows from the CSE-ID, so that no CSE can take another's name.
                let ri = resource_name_of(&originator);
                if let Some(rn) = attributes.get("rn").and_then(Value::as_str).filter(|rn| *rn != ri) {
                    return Err(Error::bad_request(format!(
                        "rn {rn:?}: the remoteCSE of {originator} is named {ri} (after its CSE-ID)"
                    )));
                }
                if let Some(dcse) = attributes.get("dcse") {
                    check_dcse(&*tx, &registry, &identity, &config, &originator, dcse)?;
                }
                attributes.insert("csi".into(), Value::String(originator.clone()));
                (ri.clone(), ri)
            }
            _ => {
                let ri = loop {
                    let candidate = format!("{}{}", ty.short_name(), random_id(ID_LENGTH));
                    if tx.get(&candidate)?.is_none() {
                        break candidate;
                    }
                };
                let rn = attributes.get("rn").and_then(Value::as_str).map(str::to_string);
                (ri, rn.unwrap_or_else(|| format!("{}_{}", ty.short_name(), random_id(ID_LENGTH))))
            }
        };
        attributes.insert("rn".into(), Value::String(rn.clone()));

        // Type-specific rules on the content.
        match ty {
            ResourceType::Ae => {
                check_ae(&attributes, &rvi)?;
                check_poa_hosts(&config.registration.allowed_poa_hosts, &attributes)?;
            }
            ResourceType::Csr => {
                let cb = attributes.get("cb").and_then(Value::as_str).unwrap_or_default();
                if !cb.starts_with('/') {
                    return Err(Error::bad_request(format!("cb {cb:?} must be the CSEBase address /<csi>/<name>")));
                }
                check_poa_hosts(&config.registration.allowed_poa_hosts, &attributes)?;
            }
            _ => {}
        }

        let path = format!("{}/{}", parent.path, rn);
        if path.len() > MAX_PATH_LENGTH {
            return Err(Error::bad_request(format!(
                "the structured path of the new resource would be longer than {MAX_PATH_LENGTH} characters"
            )));
        }
        if tx.get(&ri)?.is_some() {
            return Err(Error::conflict(format!("a resource with ri {ri} already exists")));
        }
        if tx.get_by_path(&path)?.is_some() {
            return Err(Error::conflict(format!("a resource named {rn} already exists under {}", parent.path)));
        }
        if let Some(acpi) = attributes.get("acpi") {
            let resolved = resolve_acpi(&*tx, &identity, acpi)?;
            attributes.insert("acpi".into(), resolved);
        }
        if attributes.contains_key("cr") {
            attributes.insert("cr".into(), Value::String(originator.clone()));
        }
        let now = Timestamp::now();
        let mut et = expiration(attributes.get("et"), Some(&parent), config.cse.max_expiration_delta)?;
        attributes.insert("ri".into(), Value::String(ri));
        attributes.insert("pi".into(), Value::String(parent.ri().to_string()));
        attributes.insert("ty".into(), json!(ty.code()));
        attributes.insert("ct".into(), now.into());
        attributes.insert("lt".into(), now.into());
        if ty == ResourceType::Ae {
            attributes.insert("aei".into(), Value::String(originator.clone()));
        }

        let mut container_update = None;
        match ty {
            ResourceType::Cnt => {
                attributes.insert("cni".into(), json!(0));
                attributes.insert("cbs".into(), json!(0));
                attributes.insert("st".into(), json!(0));
                if config.container.enable_limits {
                    attributes.entry("mni").or_insert(json!(config.container.mni));
                    attributes.entry("mbs").or_insert(json!(config.container.mbs));
                }
            }
            ResourceType::Cin => {
                let size = content_size(attributes.get("con"));
                let mut container = parent.clone();
                if let Some(mbs) = container.u64("mbs") {
                    if size > mbs {
                        return Err(Error::new(
                            Rsc::NotAcceptable,
                            format!("content size {size} exceeds the container's mbs {mbs}"),
                        ));
                    }
                }
                if let Some(mia) = container.u64("mia") {
                    // The age limit, itself at most the longest lifetime (so never past the
                    // calendar).
                    let age = Duration::from_secs(mia).min(config.cse.max_expiration_delta);
                    et = et.min(now.saturating_add(age));
                }
                let st = container.u64("st").unwrap_or(0) + 1;
                container.set("st", st);
                container.set("cni", container.u64("cni").unwrap_or(0) + 1);
                container.set("cbs", container.u64("cbs").unwrap_or(0) + size);
                attributes.insert("cs".into(), json!(size));
                attributes.insert("st".into(), json!(st));
                container_update = Some(container);
            }
            _ => {}
        }
        attributes.insert("et".into(), et.into());

        let resource = Resource { ty, attributes, path, creator: Some(originator) };
        tx.insert(&resource)?;
        if let Some(mut container) = container_update {
            enforce_container_limits(tx, &mut container)?;
            tx.update(&container)?;
        }
        Ok(resource)
    }
}

/// The hosts of a `poa` must be among `cse.registration.allowed_poa_hosts`, when that is set.
fn check_poa_hosts(allowed: &[HostPattern], attributes: &Map<String, Value>) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    for entry in attributes.get("poa").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let permitted = url::Url::parse(entry).is_ok_and(|url| allowed.iter().any(|pattern| pattern.matches(&url)));
        if !permitted {
            return Err(Error::bad_request(format!(
                "poa entry {entry:?} names a host that registrees may not advertise here (cse.registration.allowed_poa_hosts)"
            )));
        }
    }
    Ok(())
}

/// `api`, `csz` rules of AE registration.
fn check_ae(attributes: &Map<String, Value>, rvi: &str) -> Result<()> {
    let api = attributes.get("api").and_then(Value::as_str).unwrap_or_default();
    let problem = match api.chars().next() {
        _ if api.chars().count() < 2 => Some("must have at least two characters"),
        Some('N') => None,
        Some('R') if api.split('.').count() < 3 => {
            Some("is a registered App-ID (R...), which has at least three dot-separated parts, like Rcom.example.app")
        }
        Some('R') => None,
        // Release 2a and 3 App-IDs began with a lower-case r.
        Some('r') if matches!(rvi, "2a" | "3") => None,
        Some('r') => Some("starts with a lower-case r, which only release versions 2a and 3 allow"),
        _ => Some("must start with N (non-registered) or R (registered, like Rcom.example.app)"),
    };
    if let Some(problem) = problem {
        return Err(Error::bad_request(format!("api {api:?} {problem}")));
    }
    for media in attributes.get("csz").and_then(Value::as_array).into_iter().flatten() {
        let media = media.as_str().unwrap_or_default();
        if !SUPPORTED_MEDIA_TYPES.contains(&media) && !media.contains("cbor") {
            return Err(Error::bad_request(format!("csz entry {media:?} is not a supported serialization")));
        }
    }
    Ok(())
}
