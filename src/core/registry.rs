//! The routing table of remote CSEs: which CSEs are registered here (directly, or below a
//! registree), and which are this CSE's registrars.
//!
//! The table follows the `<remoteCSE>` resources as they are committed: [`Registry`]
//! observes the store, so it changes in commit order, before the writer's caller hears
//! "done". A request that times out after its commit cannot lose a registration, and a
//! deregistration cannot remove a newer registration. The table is a function of the
//! stored CSRs, whatever the order of the commits: a CSE listed by two registrees is routed
//! through the first and, when that one drops it, through the other at once. Readers work
//! on a snapshot that no writer changes under them (`ArcSwap` of persistent maps, so a
//! commit costs in proportion to what it changed); only the store's writer thread writes,
//! through `Observer::committed`. Keys are CSE-IDs as stored in CSRs (`/id-mn`, or
//! `//sp/id-in` for another service provider). No I/O.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::resource::{Resource, ResourceType};
use crate::storage::{Change, ChangeSet, Observer};

/// One known CSE below this one.
#[derive(Debug, Clone)]
pub struct Descendant {
    /// The CSR of a direct registree; `None` for a CSE further down.
    pub csr: Option<Arc<Resource>>,
    /// The CSE it is reached through: this CSE for a direct registree, else the direct
    /// registree it sits below.
    pub via: String,
}

/// Where a request for a CSE goes next.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Route {
    /// Down, to this direct registree (the target or one of its descendants).
    Registree(Arc<Resource>),
    /// Up, to this registrar (the target itself is the registrar).
    Registrar(Arc<Resource>),
}

impl Route {
    /// The CSR the route goes through.
    pub fn csr(&self) -> &Arc<Resource> {
        match self {
            Route::Registree(csr) | Route::Registrar(csr) => csr,
        }
    }
}

/// The routing table, read-only for everybody but the store's writer. Cloning is cheap.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// This CSE's CSE-ID: the `via` of direct registrees.
    own_csi: String,
    /// The CSE-IDs of the configured registrars: their CSRs are routes up. Replaced when
    /// a configuration reload changes the registrars.
    registrar_csis: ArcSwap<Vec<String>>,
    table: ArcSwap<Table>,
    /// Held by whoever replaces the table (the commit observer, a change of registrars),
    /// so that neither loses the other's change. Readers never take it.
    writing: Mutex<()>,
    /// Bumped whenever the set of CSEs below this one changes.
    descendants: watch::Sender<u64>,
}

/// The table, a function of the stored CSRs. Persistent maps: a commit copies the table in
/// O(1) and changes it in proportion to what the commit changed.
#[derive(Debug, Clone, Default)]
struct Table {
    /// Direct registrees: CSE-ID → their CSR here.
    registrees: imbl::HashMap<String, Arc<Resource>>,
    /// A CSE below a registree → the registrees whose `dcse` lists it, in the order they
    /// claimed it; the first is its route.
    claims: imbl::HashMap<String, Vec<String>>,
    /// registrar csi → the local CSR describing it.
    registrars: imbl::HashMap<String, Arc<Resource>>,
}

impl Table {
    /// Is `csi` below this CSE (registered here or listed by a registree)?
    fn knows(&self, csi: &str) -> bool {
        self.registrees.contains_key(csi) || self.claims.contains_key(csi)
    }

    fn descendant(&self, own_csi: &str, csi: &str) -> Option<Descendant> {
        if let Some(csr) = self.registrees.get(csi) {
            return Some(Descendant { csr: Some(csr.clone()), via: own_csi.to_string() });
        }
        let via = self.claims.get(csi)?.first()?;
        Some(Descendant { csr: None, via: via.clone() })
    }

    /// Registree `csi` is now `csr` (or gone): its claims follow the difference between
    /// what it listed and what it lists, so the cost is that of the change. Returns whether
    /// the set of CSEs below this one changed.
    fn set_registree(&mut self, csi: &str, csr: Option<Arc<Resource>>) -> bool {
        let listed =
            |csr: &Resource| -> BTreeSet<String> { csr.str_list("dcse").into_iter().filter(|id| id != csi).collect() };
        let before = self.registrees.get(csi).map(|old| listed(old)).unwrap_or_default();
        let after = csr.as_deref().map(listed).unwrap_or_default();
        let was_known = self.knows(csi);
        match csr {
            Some(csr) => self.registrees.insert(csi.to_string(), csr),
            None => self.registrees.remove(csi),
        };
        let mut changed = self.knows(csi) != was_known;
        for id in before.difference(&after) {
            if let Some(claimants) = self.claims.get_mut(id) {
                claimants.retain(|claimant| claimant != csi);
                if claimants.is_empty() {
                    self.claims.remove(id);
                    changed |= !self.registrees.contains_key(id);
                }
            }
        }
        for id in after.difference(&before) {
            changed |= !self.knows(id);
            self.claims.entry(id.clone()).or_default().push(csi.to_string());
        }
        changed
    }
}

impl Registry {
    /// An empty table for a CSE with CSE-ID `own_csi` whose registrars are `registrar_csis`.
    pub(crate) fn new(own_csi: &str, registrar_csis: Vec<String>) -> Registry {
        let (descendants, _) = watch::channel(0);
        Registry {
            inner: Arc::new(Inner {
                own_csi: own_csi.to_string(),
                registrar_csis: ArcSwap::from_pointee(registrar_csis),
                table: ArcSwap::from_pointee(Table::default()),
                writing: Mutex::new(()),
                descendants,
            }),
        }
    }

    /// Fill the table from the CSRs stored now (at start, before anything is committed).
    pub(crate) fn load(&self, csrs: Vec<Resource>) {
        let _writing = self.inner.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = Table::default();
        for csr in csrs {
            self.apply(&mut table, &Change::Created(Arc::new(csr)));
        }
        self.inner.table.store(Arc::new(table));
        self.inner.descendants.send_modify(|version| *version += 1);
    }

    /// The next hop towards CSE `csi`, by exact CSE-ID (never by prefix).
    pub fn route(&self, csi: &str) -> Option<Route> {
        let table = self.inner.table.load();
        if let Some(registrar) = table.registrars.get(csi) {
            return Some(Route::Registrar(registrar.clone()));
        }
        if let Some(csr) = table.registrees.get(csi) {
            return Some(Route::Registree(csr.clone()));
        }
        let via = table.claims.get(csi)?.first()?;
        table.registrees.get(via).map(|csr| Route::Registree(csr.clone()))
    }

    /// The local CSR of the registrar `csi`, while this CSE is registered there.
    pub fn registrar(&self, csi: &str) -> Option<Arc<Resource>> {
        self.inner.table.load().registrars.get(csi).cloned()
    }

    /// Whether this CSE is registered to the registrar `csi` (its local CSR exists).
    pub fn is_registrar(&self, csi: &str) -> bool {
        self.inner.table.load().registrars.contains_key(csi)
    }

    /// The CSE `csi` below this one, and the registree it is reached through.
    pub fn descendant(&self, csi: &str) -> Option<Descendant> {
        self.inner.table.load().descendant(&self.inner.own_csi, csi)
    }

    /// Every CSE-ID below this CSE, sorted: what this CSE reports as `dcse`.
    pub fn descendant_ids(&self) -> Vec<String> {
        let table = self.inner.table.load();
        let ids: BTreeSet<&String> = table.registrees.keys().chain(table.claims.keys()).collect();
        ids.into_iter().cloned().collect()
    }

    /// The CSRs of direct registrees, sorted by CSE-ID.
    pub fn registree_csrs(&self) -> Vec<Arc<Resource>> {
        let table = self.inner.table.load();
        let mut csrs: Vec<Arc<Resource>> = table.registrees.values().cloned().collect();
        csrs.sort_by(|a, b| a.str("csi").cmp(&b.str("csi")));
        csrs
    }

    /// The local CSRs describing registrars.
    pub fn registrar_csrs(&self) -> Vec<Arc<Resource>> {
        self.inner.table.load().registrars.values().cloned().collect()
    }

    /// Changes whenever the set of CSEs below this one changes.
    pub fn descendants_changed(&self) -> watch::Receiver<u64> {
        self.inner.descendants.subscribe()
    }

    /// Is `csi` one of this CSE's registrars (configured)?
    pub fn is_configured_registrar(&self, csi: &str) -> bool {
        self.inner.registrar_csis.load().iter().any(|registrar| registrar == csi)
    }

    /// The registrars are now `registrar_csis` (a configuration reload). A stored CSR of a
    /// CSE that stopped being a registrar becomes a registree's, and the other way round.
    pub(crate) fn set_registrars(&self, registrar_csis: Vec<String>) {
        let _writing = self.inner.writing.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.registrar_csis.store(Arc::new(registrar_csis));
        let mut table = Table::clone(&self.inner.table.load());
        let mut descendants_changed = false;
        let demoted: Vec<(String, Arc<Resource>)> = table
            .registrars
            .iter()
            .filter(|(csi, _)| !self.is_configured_registrar(csi))
            .map(|(csi, csr)| (csi.clone(), csr.clone()))
            .collect();
        for (csi, csr) in demoted {
            table.registrars.remove(&csi);
            descendants_changed |= table.set_registree(&csi, Some(csr));
        }
        let promoted: Vec<(String, Arc<Resource>)> = table
            .registrees
            .iter()
            .filter(|(csi, _)| self.is_configured_registrar(csi))
            .map(|(csi, csr)| (csi.clone(), csr.clone()))
            .collect();
        for (csi, csr) in promoted {
            descendants_changed |= table.set_registree(&csi, None);
            table.registrars.insert(csi, csr);
        }
        self.inner.table.store(Arc::new(table));
        if descendants_changed {
            self.inner.descendants.send_modify(|version| *version += 1);
        }
    }

    /// Apply one change to `table`; true if the set of descendants changed.
    fn apply(&self, table: &mut Table, change: &Change) -> bool {
        let csr = change.resource();
        if csr.ty != ResourceType::Csr {
            return false;
        }
        let Some(csi) = csr.str("csi").map(str::to_string) else {
            return false;
        };
        let registrar = self.is_configured_registrar(&csi);
        match (change, registrar) {
            (Change::Deleted(_), true) => {
                table.registrars.remove(&csi);
                false
            }
            (_, true) => {
                table.registrars.insert(csi, csr.clone());
                false
            }
            (Change::Deleted(_), false) => table.set_registree(&csi, None),
            (_, false) => table.set_registree(&csi, Some(csr.clone())),
        }
    }
}

impl Observer for Registry {
    fn committed(&self, changes: &ChangeSet) {
        if !changes.changes.iter().any(|change| change.resource().ty == ResourceType::Csr) {
            return;
        }
        let _writing = self.inner.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = Table::clone(&self.inner.table.load());
        let mut descendants_changed = false;
        for change in &changes.changes {
            descendants_changed |= self.apply(&mut table, change);
        }
        self.inner.table.store(Arc::new(table));
        if descendants_changed {
            self.inner.descendants.send_modify(|version| *version += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn csr(csi: &str, dcse: &[&str]) -> Arc<Resource> {
        let attributes = json!({"csi": csi, "ri": csi.trim_start_matches('/'), "dcse": dcse});
        let serde_json::Value::Object(attributes) = attributes else { unreachable!() };
        Arc::new(Resource {
            ty: ResourceType::Csr,
            attributes,
            path: format!("cse-in/{}", csi.trim_start_matches('/')),
            creator: None,
        })
    }

    fn commit(registry: &Registry, changes: Vec<Change>) {
        registry.committed(&ChangeSet { changes, enqueued: 0 });
    }

    #[test]
    fn registrees_and_their_descendants_are_routed_by_exact_id() {
        let registry = Registry::new("/id-in", Vec::new());
        let changed = registry.descendants_changed();
        commit(&registry, vec![Change::Created(csr("/id-mn", &["/id-asn"]))]);
        assert!(changed.has_changed().unwrap_or(false));
        assert_eq!(registry.descendant_ids(), ["/id-asn", "/id-mn"]);
        let route = registry.route("/id-asn").expect("descendant is routed");
        assert_eq!(route.csr().str("csi"), Some("/id-mn"));
        assert!(registry.route("/id-mn2").is_none(), "no prefix matching");
        assert!(registry.route("/id-as").is_none());
    }

    #[test]
    fn an_update_replaces_the_descendants_and_a_deletion_removes_what_is_reached_only_through_it() {
        let registry = Registry::new("/id-in", Vec::new());
        commit(
            &registry,
            vec![Change::Created(csr("/id-mn", &["/id-asn1", "/id-asn2"])), Change::Created(csr("/id-mn2", &[]))],
        );
        commit(&registry, vec![Change::Updated(csr("/id-mn", &["/id-asn1"]))]);
        assert_eq!(registry.descendant_ids(), ["/id-asn1", "/id-mn", "/id-mn2"]);
        commit(&registry, vec![Change::Deleted(csr("/id-mn", &[]))]);
        assert_eq!(registry.descendant_ids(), ["/id-mn2"]);
    }

    #[test]
    fn routing_is_a_function_of_the_stored_csrs_whatever_the_order_of_claims() {
        // Two registrees list the same CSE (stored before the dcse checks, or re-homing):
        // the first claim routes; when it goes, the other takes over at once.
        let registry = Registry::new("/id-in", Vec::new());
        commit(&registry, vec![Change::Created(csr("/id-mn2", &["/id-asn"]))]);
        commit(&registry, vec![Change::Created(csr("/id-mn1", &["/id-asn"]))]);
        assert_eq!(registry.route("/id-asn").expect("routed").csr().str("csi"), Some("/id-mn2"));
        commit(&registry, vec![Change::Updated(csr("/id-mn2", &[]))]);
        assert_eq!(registry.route("/id-asn").expect("still routed").csr().str("csi"), Some("/id-mn1"));
        assert_eq!(registry.descendant("/id-asn").map(|descendant| descendant.via), Some("/id-mn1".to_string()));
        commit(&registry, vec![Change::Deleted(csr("/id-mn1", &["/id-asn"]))]);
        assert!(registry.route("/id-asn").is_none());
    }

    #[test]
    fn a_direct_registration_routes_before_a_claim_and_a_deletion_uses_what_was_stored() {
        let registry = Registry::new("/id-in", Vec::new());
        commit(&registry, vec![Change::Created(csr("/id-mn", &["/id-asn", "/id-asn2"]))]);
        commit(&registry, vec![Change::Created(csr("/id-asn", &[]))]);
        assert_eq!(registry.route("/id-asn").expect("routed").csr().str("csi"), Some("/id-asn"));
        // The deleted resource as a change carries no dcse here; the stored one counts.
        commit(&registry, vec![Change::Deleted(csr("/id-mn", &[]))]);
        assert!(registry.route("/id-asn2").is_none());
        assert_eq!(registry.descendant_ids(), ["/id-asn"]);
    }

    #[test]
    fn only_a_change_of_the_set_below_signals_a_push() {
        let registry = Registry::new("/id-in", Vec::new());
        commit(&registry, vec![Change::Created(csr("/id-mn", &["/id-asn"]))]);
        let mut changed = registry.descendants_changed();
        changed.mark_unchanged();
        commit(&registry, vec![Change::Updated(csr("/id-mn", &["/id-asn"]))]);
        assert!(!changed.has_changed().unwrap_or(true), "same dcse: nothing to push");
        commit(&registry, vec![Change::Updated(csr("/id-mn", &["/id-asn", "/id-asn2"]))]);
        assert!(changed.has_changed().unwrap_or(false));
    }

    #[test]
    fn the_csr_of_a_configured_registrar_is_a_route_up() {
        let registry = Registry::new("/id-mn", vec!["/id-in".into()]);
        commit(&registry, vec![Change::Created(csr("/id-in", &[]))]);
        assert!(matches!(registry.route("/id-in"), Some(Route::Registrar(_))));
        assert!(registry.descendant_ids().is_empty());
        commit(&registry, vec![Change::Deleted(csr("/id-in", &[]))]);
        assert!(registry.route("/id-in").is_none());
    }
}
