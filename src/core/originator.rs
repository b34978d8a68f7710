//! Who may act in whose name: a request's originator against its credentials, and against
//! the CSE it came from.
//!
//! An originator names the CSE it belongs to (`/id-mn/Cae` belongs to `/id-mn`; `Cae` to
//! this CSE). A request is only accepted in the name of a CSE if it really comes from
//! there:
//! - from a registree (its hop named last in `Via`): that registree or a CSE below it;
//! - from above (a registrar, or the registrar of another service provider): any CSE but
//!   this one and the CSEs below it, whose requests come from below;
//! - from a client (no known hop): this CSE's own originators, or a CSE-ID speaking for
//!   itself (a registration), or what its credentials are explicitly bound to;
//! - never this CSE itself: it does not send requests to itself.
//!
//! A request forwarded by another CSE carries an SP-relative or absolute originator; a
//! CSE-relative one would be read as one of this CSE's own.
//!
//! Requests the CSE makes itself ([`Caller::Internal`]) are not checked.

use tracing::warn;

use crate::core::Cse;
use crate::core::address::Originator;
use crate::core::registry::Route;
use crate::core::request::{Caller, Request};
use crate::error::{Error, Result};
use crate::id::hop_name;
use crate::security::{Originators, Principal};

/// Where a request came from, as far as its `Via` tells and this CSE knows that hop.
enum Previous {
    /// A direct registree (by its CSE-ID).
    Registree(String),
    /// A registrar of this CSE (same or other service provider).
    Registrar,
    /// No known CSE: a client, or a hop this CSE has no link with.
    Client,
}

impl Cse {
    /// Check the originator of a request received from a client or another CSE.
    pub(crate) fn check_caller(&self, request: &Request, originator: Option<&Originator>) -> Result<()> {
        let Caller::Peer { principal, .. } = &request.caller else {
            return Ok(());
        };
        // A missing originator is only allowed for an AE CREATE, which registers as "C".
        let registering;
        let originator = match originator {
            Some(originator) => originator,
            None => {
                registering = self.identity.originator("C");
                &registering
            }
        };
        let (received, simplified) = (originator.received(), originator.simplified());
        if let Some(principal) = principal {
            self.check_credentials(principal, received, simplified)?;
        }
        if self.identity.cse_id == simplified {
            self.warn_self_claim(request.caller.address());
            return Err(Error::no_privilege(format!(
                "originator {received} is this CSE itself (instance {}), which sends no requests to itself",
                self.instance()
            )));
        }
        let origin_cse = originator.cse();
        let refuse = |why: String| Err(Error::no_privilege(format!("originator {received}: {why}")));
        match self.previous_hop(request) {
            Previous::Registree(registree) => {
                let below = origin_cse.is_some_and(|cse| {
                    cse == registree
                        || matches!(self.registry.route(cse), Some(Route::Registree(csr)) if csr.str("csi") == Some(registree.as_str()))
                });
                if !below {
                    return refuse(format!(
                        "the registree {registree} may only forward requests of itself or of CSEs below it"
                    ));
                }
            }
            Previous::Registrar => match origin_cse {
                None => {
                    return refuse(
                        "a request from another CSE must carry an SP-relative or absolute originator, and this CSE's own originators do not come from there"
                            .into(),
                    );
                }
                Some(cse) if matches!(self.registry.route(cse), Some(Route::Registree(_))) => {
                    return refuse(format!("requests of {cse} come from below this CSE, not from its registrar"));
                }
                Some(_) => {}
            },
            Previous::Client => {
                let own = origin_cse.is_none();
                let itself = origin_cse == Some(simplified);
                let bound = principal.as_ref().is_some_and(|p| matches!(p.originators, Originators::Only(_)));
                if !(own || itself || bound) {
                    let cse = origin_cse.unwrap_or_default();
                    return refuse(format!("it belongs to CSE {cse}, and requests in its name come through that CSE"));
                }
            }
        }
        Ok(())
    }

    /// Credentials may act only as the originators they are bound to (any but the admin
    /// when their configuration lists none). Refusals are logged, never with the secret.
    fn check_credentials(&self, principal: &Principal, received: &str, simplified: &str) -> Result<()> {
        if principal.may_act_as(&[received, simplified], &self.config().cse.admin_originator) {
            return Ok(());
        }
        warn!(user = %principal.name, originator = %received, "credentials used for an originator they may not act as");
        Err(Error::no_privilege(format!("the credentials of {} may not act as originator {received}", principal.name)))
    }

    /// The hop named last in `Via`, if this CSE has a link with it.
    fn previous_hop(&self, request: &Request) -> Previous {
        let Some(previous) = request.via.last() else {
            return Previous::Client;
        };
        // A registree of this SP is named `<sp>_<csi stem>`: look it up directly; only a
        // peer of another SP needs the walk over the registrees.
        let own_sp_registree = previous
            .strip_prefix(&format!("{}_", self.identity.sp_id))
            .map(|stem| format!("/{stem}"))
            .filter(|csi| self.registry.descendant(csi).is_some_and(|descendant| descendant.csr.is_some()));
        let registree = own_sp_registree.or_else(|| {
            self.registry.registree_csrs().into_iter().find_map(|csr| {
                let csi = csr.str("csi")?.to_string();
                (hop_name(&csi, &self.identity.sp_id) == *previous).then_some(csi)
            })
        });
        if let Some(registree) = registree {
            return Previous::Registree(registree);
        }
        let sp = &self.identity.sp_id;
        let config = self.config();
        let same_sp = config.registrar.iter().map(|registrar| hop_name(&registrar.cse_id, sp));
        let other_sp = config.sp_registrars.iter().map(|registrar| hop_name(&registrar.absolute_cse_id(), sp));
        if same_sp.chain(other_sp).any(|hop| hop == *previous) {
            return Previous::Registrar;
        }
        Previous::Client
    }
}
