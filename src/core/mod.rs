//! The core: the binding-neutral CSE, which applies oneM2M requests to the resource tree.
//!
//! [`Cse`] is the handle every caller shares (the HTTP binding, the background workers,
//! embedders): cloning it is cheap. [`Cse::handle`] checks a request, resolves its target,
//! and either routes it to another CSE (`routing`) or runs the operation (`ops`) in one
//! storage transaction, asking the target's type (`types`) for what is particular to it.
//! What changed leaves the commit as a change set that the registry, the remote-CSE
//! manager and later consumers follow; nothing here announces changes itself.
//!
//! Inside: `request` (the binding-neutral request and response), `address` (targets and
//! originator forms), `access` (ACP decisions), `originator` (who may claim which
//! originator), `filter`, `select` and `represent` (what an answer holds and how it is
//! shown), `tree` (shared lookups), `registry` (routing table), `net` (the outbound seam),
//! `expiry`, `local` (what the manager changes directly).

pub mod access;
pub mod address;
mod expiry;
pub mod filter;
mod local;
pub mod net;
mod notify;
mod ops;
mod originator;
pub mod registry;
mod represent;
pub mod request;
mod routing;
mod select;
mod tree;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use tracing::{debug, error, info, instrument};

use crate::config::{Config, Source};
use crate::core::access::{Access, Accessor};
use crate::core::address::{Identity, Target};
use crate::core::net::Outbound;
use crate::core::registry::Registry;
use crate::core::request::{Operation, Request, Response};
use crate::error::{Error, Result, Rsc};
use crate::event::EventBus;
use crate::resource::{Resource, Timestamp};
use crate::storage::Storage;

pub(crate) use local::INSTANCE_HEARTBEAT;
pub(crate) use tree::resolve_acpi;

/// The CSE: configuration, identity, storage, events, the registry of remote CSEs and
/// the outbound seam, shared by every caller. Cloning is cheap (one reference count: a
/// request clones it several times). Embedders read through the accessors; only the crate
/// writes.
#[derive(Clone)]
pub struct Cse(Arc<Shared>);

impl std::ops::Deref for Cse {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What a [`Cse`] holds; reached through it.
pub struct Shared {
    /// The configuration in force; replaced as a whole when a reload applies changes.
    config: Arc<ArcSwap<Config>>,
    /// Where the configuration was read from, to read it again (none for embedders that
    /// hand over a [`Config`]).
    source: Option<Arc<Source>>,
    pub(crate) identity: Arc<Identity>,
    /// Random, new with every process: tells this CSE from another one that answers to
    /// the same CSE-ID (a clone, a misconfiguration).
    instance: Arc<str>,
    /// When a peer last claimed this CSE's own CSE-ID (seconds since the epoch), so that
    /// the warning about it is logged at most once a minute.
    self_claims: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) storage: Storage,
    pub(crate) events: EventBus,
    /// Known remote CSEs: a snapshot table fed by committed CSR changes, read for routing.
    pub(crate) registry: Registry,
    /// How requests reach other CSEs (a binding's client).
    pub(crate) outbound: Arc<dyn Outbound>,
    /// The address of each registrar (by CSE-ID) that answered the manager last: requests
    /// forwarded there try it first.
    registrar_addresses: Arc<ArcSwap<HashMap<String, String>>>,
    /// What is counted for operators (`GET /metrics` on the admin listener).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl Cse {
    pub(crate) fn new(
        config: Config,
        source: Option<Source>,
        storage: Storage,
        events: EventBus,
        outbound: Arc<dyn Outbound>,
    ) -> Cse {
        let identity = Arc::new(Identity::from(&config.cse));
        let registry = Registry::new(&identity.cse_id, registrar_ids(&config));
        storage.observe(Arc::new(registry.clone()));
        let config = Arc::new(ArcSwap::from_pointee(config));
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let counted = metrics.clone();
        storage.on_commit(Arc::new(move |writes, elapsed| counted.commit(writes, elapsed)));
        let instance = Arc::from(crate::resource::random_id(16));
        Cse(Arc::new(Shared {
            config,
            source: source.map(Arc::new),
            identity,
            instance,
            self_claims: Arc::default(),
            storage,
            events,
            registry,
            outbound,
            registrar_addresses: Arc::default(),
            metrics,
        }))
    }

    /// The counters of this CSE (requests, forwarding, liveliness, notifications).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The validated configuration in force (a snapshot: a reload replaces it as a whole).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Where the configuration is read from, if it came from files.
    pub fn config_source(&self) -> Option<&Source> {
        self.source.as_deref()
    }

    /// Run with `config` from now on (the manager applies a reload through this). The
    /// registry learns the new set of registrars.
    pub(crate) fn replace_config(&self, config: Config) {
        self.registry.set_registrars(registrar_ids(&config));
        self.config.store(Arc::new(config));
    }

    /// This CSE's CSE-ID, SP-ID and CSEBase names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Requests to registrar `csi` try `address` first from now on (the manager found
    /// that it answers).
    pub(crate) fn use_registrar_address(&self, csi: &str, address: &str) {
        self.registrar_addresses.rcu(|known| {
            let mut known = HashMap::clone(known);
            known.insert(csi.to_string(), address.to_string());
            known
        });
    }

    /// The address of registrar `csi` that answered last, if any.
    pub(crate) fn registrar_address(&self, csi: &str) -> Option<String> {
        self.registrar_addresses.load().get(csi).cloned()
    }

    /// This process's instance token (random, new at every start). A request that claims
    /// this CSE's own CSE-ID as its originator is refused with it in the answer, so that a
    /// CSE can tell an address that leads back to itself from a twin (see the registration).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// A peer's request claimed this CSE's own CSE-ID: most likely another CSE configured
    /// with the same `cse.cse_id` (it checks before registering). Warned at most once a
    /// minute.
    pub(crate) fn warn_self_claim(&self, address: Option<std::net::IpAddr>) {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let last = self.self_claims.load(Ordering::Relaxed);
        if now >= last + 60
            && self.self_claims.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                cse_id = %self.identity.cse_id,
                from = ?address,
                "a request claims this CSE's own CSE-ID as its originator: another CSE may run with the same cse.cse_id"
            );
        }
    }

    /// The routing table of remote CSEs (read-only).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How many notifications wait in the outbox for `target` (a `nu` or `su` entry).
    pub async fn pending_notifications(&self, target: &str) -> Result<usize> {
        let target = target.to_string();
        self.storage.read(move |tx| tx.outbox_count(&target)).await
    }

    /// The internal events, to subscribe to.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The stored resource `ri`, as it is now (for embedders and tests; requests go
    /// through [`Cse::handle`] with its access checks).
    pub async fn stored(&self, ri: &str) -> Result<Option<Resource>> {
        self.storage.get(ri).await
    }

    /// Handle one request; every failure becomes an error response.
    #[instrument(name = "request", skip_all, fields(op = request.op.name(), to = %request.to, fr = ?request.originator, rqi = %request.rqi))]
    pub async fn handle(&self, request: Request) -> Response {
        let request = &request;
        match self.dispatch(request).await {
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
                Response::error(request, &failure)
            }
        }
    }

    async fn dispatch(&self, request: &Request) -> Result<Response> {
        self.check_request(request)?;
        // Read once; every decision below uses this form.
        let originator = request.originator.as_deref().map(|received| self.identity.originator(received));
        self.check_caller(request, originator.as_ref())?;
        let local = match self.identity.resolve(&request.to)? {
            Target::Local(local) => local,
            Target::Remote(remote) => return Box::pin(self.forward(request, originator.as_ref(), &remote)).await,
        };
        let originator = originator.map(|originator| originator.simplified().to_string());
        let guard = Access {
            accessor: Accessor {
                originator: originator.clone().unwrap_or_default(),
                authenticated: request.caller.is_authenticated(),
                address: request.caller.address(),
            },
            config: self.config(),
            identity: self.identity.clone(),
        };
        // Each operation's state on the heap, at its own size: inline, this future would be
        // as large as the largest of them, and copied whole each time it is moved.
        match request.op {
            Operation::Create => Box::pin(self.create(request, originator, local, guard)).await,
            Operation::Retrieve => Box::pin(self.retrieve(request, local, guard)).await,
            Operation::Update => Box::pin(self.update(request, local, guard)).await,
            Operation::Delete => Box::pin(self.delete(request, local, guard)).await,
            Operation::Notify => Box::pin(self.notify(request, local, guard)).await,
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
        let config = self.config.load();
        if !config.cse.release_versions.contains(&request.rvi) {
            return Err(Error::new(
                Rsc::ReleaseVersionNotSupported,
                format!(
                    "release version {:?} is not supported (supported: {})",
                    request.rvi,
                    config.cse.release_versions.join(", ")
                ),
            ));
        }
        let is_ae_create = request.op == Operation::Create && request.ty == Some(2);
        if request.originator.is_none() && !is_ae_create {
            return Err(Error::bad_request("missing originator (fr): only an AE may register without one"));
        }
        if let Some(rqet) = &request.rqet
            && *rqet < Timestamp::now()
        {
            return Err(Error::new(Rsc::RequestTimeout, "request expiration time has passed"));
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
}

/// The CSE-IDs of the registrars `config` names, as the registry keys them.
fn registrar_ids(config: &Config) -> Vec<String> {
    config
        .registrar
        .iter()
        .map(|registrar| registrar.cse_id.to_string())
        .chain(config.sp_registrars.iter().map(|registrar| registrar.absolute_cse_id()))
        .collect()
}
