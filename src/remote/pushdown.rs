//! Push-down: registrees copy attributes of this CSE's CSEBase into the CSR that
//! describes this CSE on their side (and take `ici`, the IN-CSE at the top of the tree,
//! into their own CSEBase). When those attributes change here (an `ici` learned from a
//! registrar, a new `poa`), every same-SP registree gets an UPDATE of its copy at once, in
//! the background, a bounded number at a time; a registree applies a new `ici` in the
//! same transaction and pushes it further down, so a tree converges in as many hops as it
//! has levels, not in as many monitor rounds.
//!
//! A registree that misses a push (down, slow) still converges at its next own round,
//! which copies the registrar's CSEBase anyway.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Inner;
use crate::core::request::{Operation, Request};
use crate::resource::Resource;
use crate::storage::ChangeSet;

/// The CSEBase attributes a registree copies into its CSR for this CSE (`cst` never
/// changes, and a CSR's `cst` cannot be updated).
const COPIED: [&str; 7] = ["csz", "lbl", "nl", "srv", "spi", "ici", "poa"];

/// Most push-down UPDATEs in flight at once.
const PARALLELISM: usize = 32;

impl Inner {
    /// What registrees copy from the CSEBase now: read before following its changes, so
    /// that nothing committed in between is missed.
    pub(super) async fn copied_now(&self) -> Map<String, Value> {
        match self.cse.cse_base().await {
            Ok(cse_base) => copied(&cse_base),
            Err(error) => {
                debug!(error = %error.detail(), "cannot read the CSEBase; pushing everything on its first change");
                Map::new()
            }
        }
    }

    /// Follow the committed changes of the CSEBase (`changes`, subscribed after `pushed`
    /// was read); push what registrees copy whenever it changes. Changes that come while a
    /// push is under way are coalesced into the next.
    pub(super) async fn push_down(
        self: Arc<Self>,
        mut pushed: Map<String, Value>,
        mut changes: broadcast::Receiver<Arc<ChangeSet>>,
        token: CancellationToken,
    ) {
        // First compare at once: a change between the read and the subscription.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    () = token.cancelled() => return,
                    received = changes.recv() => {
                        if matches!(received, Err(broadcast::error::RecvError::Closed)) {
                            return;
                        }
                    }
                }
            }
            // Whatever else is queued is covered by reading the CSEBase as it is now.
            while !matches!(
                changes.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
            let Ok(cse_base) = self.cse.cse_base().await else { continue };
            let now = copied(&cse_base);
            let changed = crate::resource::attribute_changes(&pushed, &now);
            pushed = now;
            if changed.is_empty() {
                continue;
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = self.push_to_registrees(changed) => {}
            }
        }
    }

    /// UPDATE every same-SP registree's CSR for this CSE with `changed`.
    async fn push_to_registrees(&self, changed: Map<String, Value>) {
        let identity = &self.cse.identity;
        let own_name = crate::id::resource_name_of(&identity.cse_id);
        let registrees: Vec<Arc<Resource>> = self
            .cse
            .registry
            .registree_csrs()
            .into_iter()
            .filter(|csr| csr.str("csi").is_some_and(|csi| !csi.starts_with("//")))
            .collect();
        if registrees.is_empty() {
            return;
        }
        info!(attributes = ?changed.keys().collect::<Vec<_>>(), registrees = registrees.len(), "pushing CSEBase changes down");
        let content = Arc::new(json!({ "m2m:csr": changed }));
        let rvi = self.cse.config().cse.release_version.clone();
        let permits = Arc::new(Semaphore::new(PARALLELISM));
        let mut pushes = JoinSet::new();
        for csr in registrees {
            let (Some(csi), Some(cb)) = (csr.str("csi"), csr.str("cb")) else { continue };
            let mut request = Request::new(Operation::Update, format!("{cb}/{own_name}"), Some(&identity.cse_id));
            request.rvi = rvi.clone();
            request.content = Some(Value::clone(&content));
            let (cse, permits, csi) = (self.cse.clone(), permits.clone(), csi.to_string());
            pushes.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let response = cse.handle(request).await;
                match response.into_result() {
                    Ok(_) => debug!(registree = %csi, "pushed down"),
                    // It converges at its own next round.
                    Err(error) => {
                        info!(registree = %csi, rsc = error.rsc.code(), error = %error.detail(), "push-down not taken")
                    }
                }
            });
        }
        while pushes.join_next().await.is_some() {}
    }
}

fn copied(cse_base: &Resource) -> Map<String, Value> {
    COPIED
        .iter()
        .filter_map(|name| cse_base.attributes.get(*name).map(|value| (name.to_string(), value.clone())))
        .collect()
}
