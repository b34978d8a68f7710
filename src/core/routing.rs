//! Routing: a request for a resource on another CSE goes to the next CSE on the way (a
//! registree that is the target or has it below, a registrar, the registrar of another
//! service provider) through the outbound seam, and its answer comes back unchanged.
//! Loops and overlong paths are refused (`Via`); an address that cannot be reached gives
//! way to the next one, an answer that timed out does not.

use tracing::debug;

use crate::config::RegistrarConfig;
use crate::core::Cse;
use crate::core::address::{Originator, RemoteTarget};
use crate::core::net::TransportError;
use crate::core::registry::Route;
use crate::core::request::{Request, Response};
use crate::error::{Error, Result};
use crate::id::hop_name;
use crate::resource::{Resource, Timestamp};
use crate::security::Credentials;

/// Most CSEs a forwarded request may pass.
const MAX_HOPS: usize = 16;

impl Cse {
    /// A target on another CSE: forward the request to the next hop towards it and relay
    /// the answer unchanged. See [`Cse::next_hop`] for the routing decision.
    pub(in crate::core) async fn forward(
        &self,
        request: &Request,
        originator: Option<&Originator>,
        remote: &RemoteTarget,
    ) -> Result<Response> {
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
        outgoing.originator = Some(self.forwarding_originator(originator, remote.sp_id.is_some()));
        outgoing.via.push(own_hop);
        let timeout = match &request.rqet {
            Some(rqet) => rqet.duration_since(Timestamp::now()).min(self.outbound.timeout()),
            None => self.outbound.timeout(),
        };
        // The next address is tried only when this one could not be reached: a request that
        // timed out may have been carried out, and an oversized answer is an answer.
        let mut last_failure = None;
        self.metrics.forwarded(&hop.cse_id);
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
    pub(crate) fn next_hop(&self, target: &str, other_sp: Option<&str>) -> Result<NextHop> {
        if let Some(sp) = other_sp {
            let prefix = format!("//{sp}/");
            if let Some(registrar) = self.config().sp_registrars.iter().find(|registrar| registrar.sp_id == sp) {
                return Ok(self.registrar_hop(registrar, registrar.absolute_cse_id()));
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
        if let Some(registrar) = &self.config().registrar {
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

    /// To a registrar: the address in use first (as the manager keeps it), then the others
    /// of its group, then the other groups.
    fn registrar_hop(&self, registrar: &RegistrarConfig, cse_id: String) -> NextHop {
        let in_use = self
            .registrar_address(&cse_id)
            .and_then(|address| registrar.addresses.iter().position(|known| *known == address));
        let urls = registrar
            .attempt_order(in_use)
            .into_iter()
            .filter_map(|index| registrar.addresses.get(index))
            .map(|address| format!("{address}{}", registrar.root))
            .collect();
        let name = hop_name(&cse_id, &self.identity.sp_id);
        NextHop { cse_id, name, urls, credentials: registrar.credentials.clone() }
    }

    fn registree_hop(&self, csr: &Resource) -> NextHop {
        let cse_id = csr.str("csi").unwrap_or_default().to_string();
        let name = hop_name(&cse_id, &self.identity.sp_id);
        let credentials = self.config().registration.registree_credentials.get(&cse_id).cloned();
        NextHop { cse_id, name, urls: csr.str_list("poa"), credentials }
    }

    /// The originator a forwarded request carries: SP-relative (`/id-in/Cae`), or
    /// absolute (`//sp/id-in/Cae`) when the request leaves this service provider.
    fn forwarding_originator(&self, originator: Option<&Originator>, across_sps: bool) -> String {
        let simplified = originator.map(Originator::simplified).unwrap_or_default();
        let sp_relative = self.identity.sp_relative(simplified);
        if across_sps && !sp_relative.starts_with("//") {
            return format!("//{}{sp_relative}", self.identity.sp_id);
        }
        sp_relative
    }
}

/// The next CSE on the way to a target, and where to reach it (in order of preference).
#[derive(Debug, Clone)]
pub(crate) struct NextHop {
    pub cse_id: String,
    /// Its name in `Via` headers.
    pub name: String,
    pub urls: Vec<String>,
    /// What this CSE presents to it (`[cse.registrar.security]`, `registree_security`).
    pub credentials: Option<Credentials>,
}
