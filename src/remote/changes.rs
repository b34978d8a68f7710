//! The change follower: what is committed about `<remoteCSE>` resources is logged,
//! emitted as events and handed to the CSR callbacks. Beside it, the push-up task sends
//! every change of the set of CSEs below this one to the registrars at once, coalesced,
//! without holding up the reports.
//!
//! The follower keeps the CSRs it has reported. One that falls behind the commits (the
//! change channel is bounded) compares that set with the stored CSRs and reports the
//! difference, so no registree's arrival or departure is missed. It reads them from the
//! registry, which follows the commits on the writer thread (routing never waits for the
//! follower), so neither the start nor a resync reads the store.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Inner;
use crate::event::Event;
use crate::resource::Resource;
use crate::storage::{Change, ChangeSet};

/// What is reported about one CSR.
#[derive(Debug)]
enum Reported {
    Added(Arc<Resource>),
    Updated(Arc<Resource>),
    Removed(Arc<Resource>),
}

/// The CSRs reported so far, by `ri`.
#[derive(Default)]
struct Known(HashMap<String, Arc<Resource>>);

impl Known {
    fn new(csrs: Vec<Arc<Resource>>) -> Known {
        Known(csrs.into_iter().map(|csr| (csr.ri().to_string(), csr)).collect())
    }

    /// What one committed change means for the reported set (nothing when the set has it
    /// already, as after a reconciliation).
    fn apply(&mut self, change: &Change) -> Option<Reported> {
        let csr = change.resource();
        let ri = csr.ri().to_string();
        match change {
            Change::Created(_) | Change::Updated(_) => match self.0.insert(ri, csr.clone()) {
                None => Some(Reported::Added(csr.clone())),
                Some(previous) if previous == *csr => None,
                Some(_) => Some(Reported::Updated(csr.clone())),
            },
            Change::Deleted(_) => self.0.remove(&ri).map(|_| Reported::Removed(csr.clone())),
        }
    }

    /// The difference between the reported set and the CSRs stored now; the stored ones
    /// become the reported set.
    fn reconcile(&mut self, stored: Vec<Arc<Resource>>) -> Vec<Reported> {
        let stored: HashMap<String, Arc<Resource>> =
            stored.into_iter().map(|csr| (csr.ri().to_string(), csr)).collect();
        let mut reported = Vec::new();
        for (ri, known) in &self.0 {
            match stored.get(ri) {
                None => reported.push(Reported::Removed(known.clone())),
                Some(now) if now != known => reported.push(Reported::Updated(now.clone())),
                Some(_) => {}
            }
        }
        for (ri, csr) in &stored {
            if !self.0.contains_key(ri) {
                reported.push(Reported::Added(csr.clone()));
            }
        }
        self.0 = stored;
        reported
    }
}

impl Inner {
    /// Follow what is committed (here, or by another instance of a shared database): report
    /// `<remoteCSE>` changes (log, events, callbacks). The routing table itself follows the
    /// commits in the core; nothing here writes it.
    pub(super) async fn follow_changes(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<Arc<ChangeSet>>,
        token: CancellationToken,
    ) {
        // Subscribed first, read second: a commit in between is in both, and `apply`
        // reports it once.
        let mut known = Known::new(self.stored_csrs());
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    // What was committed before the stop is still reported.
                    while let Ok(committed) = changes.try_recv() {
                        self.report_all(&mut known, &committed);
                    }
                    return;
                }
                committed = changes.recv() => match committed {
                    Ok(committed) => self.report_all(&mut known, &committed),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "fell behind the committed changes; comparing with the store");
                        for reported in known.reconcile(self.stored_csrs()) {
                            self.report(reported);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Push every change of the set of CSEs below this one to the registrars, in the
    /// background of everything else: changes that come while a push is under way are
    /// coalesced into the next one.
    pub(super) async fn push_up(self: Arc<Self>, mut descendants: watch::Receiver<u64>, token: CancellationToken) {
        descendants.mark_unchanged();
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                changed = descendants.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    descendants.mark_unchanged();
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = self.push_descendants() => {}
                    }
                }
            }
        }
    }

    /// The CSRs stored now, from the routing table: it is a function of them, kept in
    /// step on the writer thread, so no store read is needed.
    fn stored_csrs(&self) -> Vec<Arc<Resource>> {
        let registry = &self.cse.registry;
        registry.registrar_csrs().into_iter().chain(registry.registree_csrs()).collect()
    }

    /// Report what one committed change set changed among the CSRs.
    fn report_all(&self, known: &mut Known, committed: &ChangeSet) {
        for change in &committed.changes {
            if let Some(reported) = known.apply(change) {
                self.report(reported);
            }
        }
    }

    /// Log, emit and call back one reported CSR.
    fn report(&self, reported: Reported) {
        let csr = match &reported {
            Reported::Added(csr) | Reported::Updated(csr) | Reported::Removed(csr) => csr.clone(),
        };
        let csi = csr.str("csi").unwrap_or_default().to_string();
        let registrar = self.cse.registry.is_configured_registrar(&csi);
        match reported {
            Reported::Added(_) if registrar => self.notify_csr(csr, true, true),
            Reported::Added(_) => {
                info!(%csi, "registree registered");
                self.cse.events.emit(Event::RemoteCseRegistered { csr: csr.clone() });
                self.notify_csr(csr, false, true);
            }
            Reported::Updated(_) => self.cse.events.emit(Event::CsrUpdated { csr }),
            Reported::Removed(_) if registrar => self.notify_csr(csr, true, false),
            Reported::Removed(_) => {
                info!(%csi, "registree deregistered");
                self.cse.events.emit(Event::RemoteCseDeregistered { csr: csr.clone() });
                self.notify_csr(csr, false, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ResourceType;
    use serde_json::json;

    fn csr(ri: &str, poa: &str) -> Arc<Resource> {
        let mut attributes = serde_json::Map::new();
        attributes.insert("ri".into(), json!(ri));
        attributes.insert("csi".into(), json!(format!("/{ri}")));
        attributes.insert("poa".into(), json!([poa]));
        Arc::new(Resource { ty: ResourceType::Csr, attributes, path: format!("cse-in/{ri}"), creator: None })
    }

    fn names(reported: &[Reported]) -> Vec<String> {
        let mut names: Vec<String> = reported
            .iter()
            .map(|report| match report {
                Reported::Added(csr) => format!("+{}", csr.ri()),
                Reported::Updated(csr) => format!("~{}", csr.ri()),
                Reported::Removed(csr) => format!("-{}", csr.ri()),
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_commit_already_known_is_reported_once() {
        let mut known = Known::new(vec![csr("id-mn", "http://a")]);
        let again = Change::Created(csr("id-mn", "http://a"));
        assert!(known.apply(&again).is_none());
        let moved = Change::Updated(csr("id-mn", "http://b"));
        assert!(matches!(known.apply(&moved), Some(Reported::Updated(_))));
        let gone = Change::Deleted(csr("id-mn", "http://b"));
        assert!(matches!(known.apply(&gone), Some(Reported::Removed(_))));
        assert!(known.apply(&gone).is_none(), "a deletion is reported once");
    }

    #[test]
    fn a_follower_that_fell_behind_reports_the_difference_with_the_store() {
        let mut known =
            Known::new(vec![csr("id-mn1", "http://a"), csr("id-mn2", "http://a"), csr("id-mn3", "http://a")]);
        let stored = vec![csr("id-mn1", "http://a"), csr("id-mn2", "http://b"), csr("id-mn4", "http://a")];
        assert_eq!(names(&known.reconcile(stored)), ["+id-mn4", "-id-mn3", "~id-mn2"]);
        let unchanged = vec![csr("id-mn1", "http://a"), csr("id-mn2", "http://b"), csr("id-mn4", "http://a")];
        assert!(known.reconcile(unchanged).is_empty());
    }
}
