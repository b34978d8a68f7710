//! The routing table of remote CSEs: which CSEs are registered here (directly, or below a
//! registree), and which are this CSE's registrars.
//!
//! The table follows the `<remoteCSE>` resources as they are committed: [`Registry`]
//! observes the store, so it changes in commit order, before the writer's caller hears
//! "done". A request that times out after its commit cannot lose a registration, and a
//! deregistration cannot remove a newer registration. Readers work on a snapshot that no
//! writer changes under them (`ArcSwap`); only the store's writer thread writes, through
//! `Observer::committed`. Keys are CSE-IDs as stored in CSRs (`/id-mn`, or `//sp/id-in`
//! for another service provider). No I/O.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

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
    /// The CSE-IDs of the configured registrars: their CSRs are routes up.
    registrar_csis: Vec<String>,
    table: ArcSwap<Table>,
    /// Bumped whenever the set of CSEs below this one changes.
    descendants: watch::Sender<u64>,
}

#[derive(Debug, Clone, Default)]
struct Table {
    /// csi → descendant (the registree/descendant table).
    descendants: HashMap<String, Descendant>,
    /// registrar csi → the local CSR describing it.
    registrars: HashMap<String, Arc<Resource>>,
}

impl Registry {
    /// An empty table for a CSE with CSE-ID `own_csi` whose registrars are `registrar_csis`.
    pub(crate) fn new(own_csi: &str, registrar_csis: Vec<String>) -> Registry {
        let (descendants, _) = watch::channel(0);
        Registry {
            inner: Arc::new(Inner {
                own_csi: own_csi.to_string(),
                registrar_csis,
                table: ArcSwap::from_pointee(Table::default()),
                descendants,
            }),
        }
    }

    /// Fill the table from the CSRs stored now (at start, before anything is committed).
    pub(crate) fn load(&self, csrs: Vec<Resource>) {
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
        let mut current = csi;
        // Follow "reached via" links up to the direct registree; bounded against cycles.
        for _ in 0..=table.descendants.len() {
            let descendant = table.descendants.get(current)?;
            if let Some(csr) = &descendant.csr {
                return Some(Route::Registree(csr.clone()));
            }
            current = &descendant.via;
        }
        None
    }

    pub fn registrar(&self, csi: &str) -> Option<Arc<Resource>> {
        self.inner.table.load().registrars.get(csi).cloned()
    }

    pub fn is_registrar(&self, csi: &str) -> bool {
        self.inner.table.load().registrars.contains_key(csi)
    }

    pub fn descendant(&self, csi: &str) -> Option<Descendant> {
        self.inner.table.load().descendants.get(csi).cloned()
    }

    /// Every CSE-ID below this CSE, sorted: what this CSE reports as `dcse`.
    pub fn descendant_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.inner.table.load().descendants.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The CSRs of direct registrees, sorted by CSE-ID.
    pub fn registree_csrs(&self) -> Vec<Arc<Resource>> {
        let table = self.inner.table.load();
        let mut csrs: Vec<Arc<Resource>> =
            table.descendants.values().filter_map(|descendant| descendant.csr.clone()).collect();
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
        self.inner.registrar_csis.iter().any(|registrar| registrar == csi)
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
            (Change::Deleted(_), false) => remove_registree(table, &csi),
            (_, false) => {
                let existed = table.descendants.contains_key(&csi);
                let dcse = csr.str_list("dcse");
                table
                    .descendants
                    .insert(csi.clone(), Descendant { csr: Some(csr.clone()), via: self.inner.own_csi.clone() });
                let changed = replace_descendants_of(table, &csi, &dcse);
                !existed || changed
            }
        }
    }
}

impl Observer for Registry {
    fn committed(&self, changes: &ChangeSet) {
        if !changes.changes.iter().any(|change| change.resource().ty == ResourceType::Csr) {
            return;
        }
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

/// Forget a registree and every CSE reached only through it; true if anything went.
fn remove_registree(table: &mut Table, csi: &str) -> bool {
    let mut removed = table.descendants.remove(csi).is_some();
    let mut frontier = vec![csi.to_string()];
    while let Some(via) = frontier.pop() {
        let below: Vec<String> = table
            .descendants
            .iter()
            .filter(|(_, descendant)| descendant.via == via && descendant.csr.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in below {
            if table.descendants.remove(&id).is_some() {
                frontier.push(id);
                removed = true;
            }
        }
    }
    removed
}

/// Make the indirect descendants reached via `csi` those of `dcse`; true if they changed.
fn replace_descendants_of(table: &mut Table, csi: &str, dcse: &[String]) -> bool {
    let wanted: BTreeSet<&str> = dcse.iter().map(String::as_str).filter(|id| *id != csi).collect();
    let current: BTreeSet<String> = table
        .descendants
        .iter()
        .filter(|(_, descendant)| descendant.via == csi && descendant.csr.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let mut changed = false;
    for id in &current {
        if !wanted.contains(id.as_str()) {
            table.descendants.remove(id);
            changed = true;
        }
    }
    for id in wanted {
        if !current.contains(id) && !table.descendants.contains_key(id) {
            table.descendants.insert(id.to_string(), Descendant { csr: None, via: csi.to_string() });
            changed = true;
        }
    }
    changed
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
        registry.committed(&ChangeSet { changes });
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
    fn the_csr_of_a_configured_registrar_is_a_route_up() {
        let registry = Registry::new("/id-mn", vec!["/id-in".into()]);
        commit(&registry, vec![Change::Created(csr("/id-in", &[]))]);
        assert!(matches!(registry.route("/id-in"), Some(Route::Registrar(_))));
        assert!(registry.descendant_ids().is_empty());
        commit(&registry, vec![Change::Deleted(csr("/id-in", &[]))]);
        assert!(registry.route("/id-in").is_none());
    }
}
