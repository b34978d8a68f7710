//! Two CSEs with one CSE-ID (a clone, a copied configuration) would take each other's
//! registration over every round, forever: each finds its CSR gone or foreign, deletes
//! it and creates its own.
//!
//! Before this CSE registers anew, it looks at the CSR the registrar holds under its
//! CSE-ID. When that CSR names another address, and the CSE answering there refuses a
//! request from this CSE-ID as coming from itself but names another instance (every
//! process has its own instance token), a twin is alive and registered: the registration
//! stays with it (the first), this CSE does not take it over and says so at warn, and
//! tries again with backoff (when the twin goes, it registers). An address that leads
//! back to this very process names its own instance and is no twin.
//!
//! The other side notices too: a CSE whose registration is lost at the registrar again
//! and again warns and names the likely causes.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::registrar::Registrar;
use super::{Inner, lock};
use crate::core::request::{Operation, Request, Response};
use crate::error::{Error, Result, Rsc};

/// Losses of the registration within this many check intervals (at least an hour) are
/// "again and again".
const LOSS_INTERVALS: u32 = 10;

impl Inner {
    /// Refuse (4105) to register when the registrar's CSR under this CSE-ID belongs to a
    /// live twin.
    pub(super) async fn refuse_if_twin(&self, registrar: &Registrar) -> Result<()> {
        let request = self.request(registrar, Operation::Retrieve, registrar.own_csr_path());
        let response = self.send_to_registrar(registrar, &request).await?;
        if response.rsc != Rsc::Ok {
            return Ok(());
        }
        let held = response.content.as_ref().and_then(|content| content.get("m2m:csr"));
        let their_poa: Vec<String> = held
            .and_then(|csr| csr.get("poa"))
            .and_then(Value::as_array)
            .map(|poa| poa.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let own_poa = self.cse.cse_base().await?.str_list("poa");
        let config = self.cse.config();
        let timeout = config.registration.liveliness_timeout;
        for poa in their_poa.iter().filter(|poa| !own_poa.contains(poa)) {
            let mut probe = Request::new(Operation::Retrieve, registrar.own_cb.clone(), Some(&registrar.own_csi));
            probe.rvi = config.cse.release_version.clone();
            let Ok(answer) = self.cse.outbound.send(poa, &probe, timeout, None).await else { continue };
            if twin_instance(&answer).is_some_and(|instance| instance != self.cse.instance()) {
                return Err(Error::conflict(format!(
                    "CSE-ID {} is registered at {} by another CSE, alive at {poa}; leaving the registration to it. Two CSEs share one cse.cse_id",
                    registrar.own_csi, registrar.info.cse_id
                )));
            }
        }
        Ok(())
    }

    /// The registrar lost this CSE's registration: warn when it happens again and again.
    pub(super) fn note_lost_registration(&self, registrar: &Registrar) {
        let interval = self.cse.config().registration.check_interval;
        let window = (interval * LOSS_INTERVALS).max(Duration::from_secs(3600));
        let now = Instant::now();
        let count = {
            let mut state = lock(&registrar.state);
            let count = match state.lost {
                Some((count, last)) if now.duration_since(last) <= window => count + 1,
                _ => 1,
            };
            state.lost = Some((count, now));
            count
        };
        if count > 1 {
            warn!(
                registrar = %registrar.info.cse_id,
                times = count,
                "the registrar lost this CSE's registration again: another CSE with the same cse.cse_id may be registering there, or the registrar removes this CSE as unreachable (check the poa it advertises)"
            );
        }
    }
}

/// The instance named by a refusal "originator ... is this CSE itself (instance X)".
fn twin_instance(answer: &Response) -> Option<&str> {
    if answer.rsc != Rsc::OriginatorHasNoPrivilege {
        return None;
    }
    let text = answer.content.as_ref()?.get("m2m:dbg")?.as_str()?;
    let rest = text.split_once("is this CSE itself (instance ")?.1;
    rest.split_once(')').map(|(instance, _)| instance)
}
