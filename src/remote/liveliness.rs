//! The registrar side: are the registrees still there? Every round probes each
//! registree's CSEBase (concurrently, bounded by `liveliness_parallelism`, each within
//! `liveliness_timeout`); a registree that fails `liveliness_failures` rounds in a row is
//! removed (its CSR deleted, which the change follower reports), unless its CSR changed
//! while it was probed (it re-registered or pushed an update: it is there).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::Inner;
use crate::core::Cse;
use crate::core::request::{Operation, Request};
use crate::resource::Resource;

impl Inner {
    /// Probe every registree's CSEBase concurrently (bounded), each with its own
    /// time-out; remove a registree only after `liveliness_failures` failed rounds in a row.
    pub(super) async fn probe_registrees(&self, failures: &mut HashMap<String, u32>) {
        let registration = &self.cse.config().registration;
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
                match self.cse.delete_local_unchanged(&csr).await {
                    Ok(true) => info!(%csi, "removed unreachable registree"),
                    Ok(false) => info!(%csi, "registree re-registered or updated while probed; kept"),
                    Err(error) => warn!(%csi, error = %error.detail(), "cannot remove the registree's CSR"),
                }
            }
        }
    }
}

/// Is the registree behind `csr` answering? Any oneM2M answer counts; only transport
/// failures on every `poa` count as down, and so does a refusal of this CSE's credentials
/// (`registree_security`): a registree this CSE cannot call is not reachable from here.
async fn probe(cse: &Cse, csr: &Resource, timeout: Duration) -> bool {
    let target = csr.str("cb").unwrap_or_default().to_string();
    let csi = csr.str("csi").unwrap_or_default();
    let config = cse.config();
    let credentials = config.registration.registree_credentials.get(csi);
    let identity = &cse.identity;
    let originator =
        if csi.starts_with("//") { identity.cse_id.absolute(&identity.sp_id) } else { identity.cse_id.to_string() };
    let mut request = Request::new(Operation::Retrieve, target, Some(&originator));
    request.rvi = cse.config().cse.release_version.clone();
    for poa in csr.str_list("poa") {
        match cse.outbound.send(&poa, &request, timeout, credentials).await {
            Ok(_) => return true,
            Err(failure) => debug!(%csi, %poa, error = %failure, "probe failed"),
        }
    }
    false
}
