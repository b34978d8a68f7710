//! The table of known remote CSEs: which CSEs are registered here (directly, or below a
//! registree), and which CSE is this CSE's registrar.
//!
//! Shared by the dispatcher (to route) and the remote-CSE manager (which keeps it
//! current). Plain data: no I/O, and no DashMap guard ever leaves a method, so nothing
//! holds one across an `.await`. Keys are CSE-IDs as stored in CSRs (`/id-mn`, or
//! `//sp/id-in` for another service provider).

use std::collections::BTreeSet;
use std::sync::Arc;

use dashmap::DashMap;

use crate::resource::Resource;

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

/// The shared registry. Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// csi → descendant (the registree/descendant table).
    descendants: Arc<DashMap<String, Descendant>>,
    /// registrar csi → the local CSR describing it.
    registrars: Arc<DashMap<String, Arc<Resource>>>,
}

impl Registry {
    /// Record a direct registree and its `dcse`. Returns true if the set of CSEs changed.
    pub fn add_registree(&self, own_csi: &str, csr: Arc<Resource>) -> bool {
        let dcse = csr.str_list("dcse");
        self.update_registree(own_csi, csr, Some(&dcse))
    }

    /// A registree's CSR changed. `dcse` is the new descendant list when the update carried
    /// one; `None` keeps the known descendants. Returns true if the set of CSEs changed.
    pub fn update_registree(&self, own_csi: &str, csr: Arc<Resource>, dcse: Option<&[String]>) -> bool {
        let Some(csi) = csr.str("csi").map(str::to_string) else {
            return false;
        };
        let existed = self.descendants.contains_key(&csi);
        self.descendants.insert(csi.clone(), Descendant { csr: Some(csr), via: own_csi.to_string() });
        let changed = self.replace_descendants_of(&csi, dcse);
        !existed || changed
    }

    /// Forget a registree and every CSE reached only through it. Returns the removed IDs.
    pub fn remove_registree(&self, csi: &str) -> Vec<String> {
        let mut removed = Vec::new();
        if self.descendants.remove(csi).is_some() {
            removed.push(csi.to_string());
        }
        let mut frontier = vec![csi.to_string()];
        while let Some(via) = frontier.pop() {
            let below: Vec<String> = self
                .descendants
                .iter()
                .filter(|entry| entry.via == via && entry.csr.is_none())
                .map(|entry| entry.key().clone())
                .collect();
            for id in below {
                if self.descendants.remove(&id).is_some() {
                    frontier.push(id.clone());
                    removed.push(id);
                }
            }
        }
        removed
    }

    /// Replace the indirect descendants reached via `csi` by `dcse` (if given).
    fn replace_descendants_of(&self, csi: &str, dcse: Option<&[String]>) -> bool {
        let Some(dcse) = dcse else {
            return false;
        };
        let wanted: BTreeSet<&str> = dcse.iter().map(String::as_str).filter(|id| *id != csi).collect();
        let current: BTreeSet<String> = self
            .descendants
            .iter()
            .filter(|entry| entry.via == csi && entry.csr.is_none())
            .map(|entry| entry.key().clone())
            .collect();
        let mut changed = false;
        for id in &current {
            if !wanted.contains(id.as_str()) {
                self.descendants.remove(id);
                changed = true;
            }
        }
        for id in wanted {
            if !current.contains(id) && !self.descendants.contains_key(id) {
                self.descendants.insert(id.to_string(), Descendant { csr: None, via: csi.to_string() });
                changed = true;
            }
        }
        changed
    }

    pub fn set_registrar(&self, csr: Arc<Resource>) {
        if let Some(csi) = csr.str("csi").map(str::to_string) {
            self.registrars.insert(csi, csr);
        }
    }

    pub fn remove_registrar(&self, csi: &str) -> Option<Arc<Resource>> {
        self.registrars.remove(csi).map(|(_, csr)| csr)
    }

    pub fn registrar(&self, csi: &str) -> Option<Arc<Resource>> {
        self.registrars.get(csi).map(|entry| entry.value().clone())
    }

    pub fn is_registrar(&self, csi: &str) -> bool {
        self.registrars.contains_key(csi)
    }

    /// Every CSE-ID below this CSE, sorted: what this CSE reports as `dcse`.
    pub fn descendant_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.descendants.iter().map(|entry| entry.key().clone()).collect();
        ids.sort();
        ids
    }

    pub fn descendant(&self, csi: &str) -> Option<Descendant> {
        self.descendants.get(csi).map(|entry| entry.value().clone())
    }

    /// The next hop towards CSE `csi`, by exact CSE-ID (never by prefix).
    pub fn route(&self, csi: &str) -> Option<Route> {
        if let Some(registrar) = self.registrar(csi) {
            return Some(Route::Registrar(registrar));
        }
        let mut current = csi.to_string();
        // Follow "reached via" links up to the direct registree; bounded against cycles.
        for _ in 0..=self.descendants.len() {
            let descendant = self.descendant(&current)?;
            if let Some(csr) = descendant.csr {
                return Some(Route::Registree(csr));
            }
            current = descendant.via;
        }
        None
    }

    /// The CSRs of direct registrees, sorted by CSE-ID.
    pub fn registree_csrs(&self) -> Vec<Arc<Resource>> {
        let mut csrs: Vec<Arc<Resource>> = self.descendants.iter().filter_map(|entry| entry.csr.clone()).collect();
        csrs.sort_by(|a, b| a.str("csi").cmp(&b.str("csi")));
        csrs
    }

    /// The local CSRs describing registrars.
    pub fn registrar_csrs(&self) -> Vec<Arc<Resource>> {
        self.registrars.iter().map(|entry| entry.value().clone()).collect()
    }

    pub fn clear(&self) {
        self.descendants.clear();
        self.registrars.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csr(csi: &str, dcse: &[&str]) -> Arc<Resource> {
        let attributes = json!({"csi": csi, "ri": csi.trim_start_matches('/'), "dcse": dcse});
        let serde_json::Value::Object(attributes) = attributes else { unreachable!() };
        Arc::new(Resource {
            ty: crate::resource::ResourceType::Csr,
            attributes,
            path: format!("cse-in/{}", csi.trim_start_matches('/')),
            creator: None,
        })
    }

    #[test]
    fn registrees_and_their_descendants_are_routed_by_exact_id() {
        let registry = Registry::default();
        assert!(registry.add_registree("/id-in", csr("/id-mn", &["/id-asn"])));
        assert_eq!(registry.descendant_ids(), ["/id-asn", "/id-mn"]);
        let route = registry.route("/id-asn").expect("descendant is routed");
        assert_eq!(route.csr().str("csi"), Some("/id-mn"));
        assert!(registry.route("/id-mn2").is_none(), "no prefix matching");
        assert!(registry.route("/id-as").is_none());
    }

    #[test]
    fn an_update_without_dcse_keeps_the_descendants() {
        let registry = Registry::default();
        registry.add_registree("/id-in", csr("/id-mn", &["/id-asn"]));
        assert!(!registry.update_registree("/id-in", csr("/id-mn", &[]), None));
        assert_eq!(registry.descendant_ids(), ["/id-asn", "/id-mn"]);
        assert!(registry.update_registree("/id-in", csr("/id-mn", &[]), Some(&[])));
        assert_eq!(registry.descendant_ids(), ["/id-mn"]);
    }

    #[test]
    fn removing_a_registree_removes_what_is_reached_only_through_it() {
        let registry = Registry::default();
        registry.add_registree("/id-in", csr("/id-mn", &["/id-asn1", "/id-asn2"]));
        registry.add_registree("/id-in", csr("/id-mn2", &[]));
        let mut removed = registry.remove_registree("/id-mn");
        removed.sort();
        assert_eq!(removed, ["/id-asn1", "/id-asn2", "/id-mn"]);
        assert_eq!(registry.descendant_ids(), ["/id-mn2"]);
    }

    #[test]
    fn the_registrar_is_a_route_too() {
        let registry = Registry::default();
        registry.set_registrar(csr("/id-in", &[]));
        assert!(matches!(registry.route("/id-in"), Some(Route::Registrar(_))));
        assert!(registry.descendant_ids().is_empty());
    }
}
