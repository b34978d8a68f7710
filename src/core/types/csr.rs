//! `<remoteCSE>` (ty 16): a CSE registers itself here. Who may register is decided by
//! `cse.registration.allowed_csr_originators`; the resource is named after the registree's
//! CSE-ID (so that no CSE can take another's name) and a CSE can only register itself.
//!
//! What a registree claims about the CSEs below it (`dcse`) is not taken on trust, since
//! this CSE routes to every CSE listed and reports them to its own registrar: every entry
//! must be a well-formed CSE-ID, must not be this CSE, its registrar, a CSE registered here
//! directly (the registree itself included) or one that another registree already claims,
//! must appear once, and the list is bounded (`cse.registration.max_descendants`). A list
//! that breaks a rule is refused whole (4000), naming the entry.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{Context, Draft, TypeRules, check_poa_hosts, policy, registrant};
use crate::config::CseKind;
use crate::error::{Error, Result};
use crate::id::{is_cse_id, last_element, matches_any, resource_name_of};
use crate::resource::{AttrKind, Need, Policy, Resource, ResourceType, Timestamp};
use crate::storage::{ReadTx, WriteTx};

pub(super) struct Csr;

impl TypeRules for Csr {
    fn policy(&self, name: &str) -> Option<Policy> {
        use AttrKind::*;
        use Need::{Mandatory as M, NotPermitted as NP, Optional as O};
        match name {
            "csi" => policy(Str, O, NP),
            "cb" => policy(Str, M, NP),
            "cst" => policy(CseType, O, NP),
            "dcse" => policy(StrList, O, O),
            "spi" | "ici" | "nl" | "mei" | "tri" | "trn" | "egid" => policy(Str, O, O),
            "esi" | "mtcc" | "tren" | "ape" => policy(Any, O, O),
            "cr" => policy(NullOnly, O, NP),
            _ => registrant(name),
        }
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["cb", "rr", "srv"]
    }

    fn children(&self) -> &'static [ResourceType] {
        use ResourceType::*;
        &[Acp, Cnt, Sub, AcpAnnc, AeAnnc, CntAnnc, CinAnnc, CsrAnnc]
    }

    fn is_registration(&self) -> bool {
        true
    }

    /// Who may register a CSE here; the CSE-ID in its SP-relative form.
    fn originator(&self, ctx: &Context, originator: Option<&str>) -> Result<String> {
        let originator = originator.unwrap_or_default();
        let admin = originator == ctx.config.cse.admin_originator;
        let allowed = admin
            || originator == ctx.identity.cse_id
            || matches_any(&ctx.config.registration.allowed_csr_originators, originator);
        if !allowed {
            return Err(Error::no_privilege(format!(
                "originator {originator} is not allowed to register a CSE (cse.registration.allowed_csr_originators)"
            )));
        }
        if ctx.config.cse.kind == CseKind::Asn {
            return Err(Error::not_allowed("an ASN-CSE does not accept CSE registrations"));
        }
        if !admin && !is_cse_id(originator) {
            return Err(Error::not_allowed(format!(
                "originator {originator} is not a CSE-ID (/csi or //sp/csi); AEs cannot register as CSEs"
            )));
        }
        Ok(if originator.starts_with('/') { originator.to_string() } else { format!("/{originator}") })
    }

    fn check_create(&self, tx: &dyn ReadTx, ctx: &Context, _parent: &Resource, draft: &Draft) -> Result<()> {
        let originator = &draft.originator;
        let admin = *originator == format!("/{}", ctx.config.cse.admin_originator);
        if !admin && tx.get(last_element(originator))?.is_some_and(|existing| existing.ty == ResourceType::Ae) {
            return Err(Error::not_allowed(format!("originator {originator} has registered an AE")));
        }
        let attributes = &draft.attributes;
        if let Some(csi) = attributes.get("csi").and_then(Value::as_str) {
            let simplify = |id: &str| ctx.identity.simplify_originator(id);
            if !admin && simplify(csi) != simplify(originator) {
                return Err(Error::no_privilege(format!(
                    "originator {originator} cannot register the CSE {csi}: a CSE registers itself"
                )));
            }
        }
        let name = resource_name_of(originator);
        if let Some(rn) = attributes.get("rn").and_then(Value::as_str).filter(|rn| *rn != name) {
            return Err(Error::bad_request(format!(
                "rn {rn:?}: the remoteCSE of {originator} is named {name} (after its CSE-ID)"
            )));
        }
        if let Some(dcse) = attributes.get("dcse") {
            check_dcse(tx, ctx, originator, dcse)?;
        }
        let cb = attributes.get("cb").and_then(Value::as_str).unwrap_or_default();
        if !cb.starts_with('/') {
            return Err(Error::bad_request(format!("cb {cb:?} must be the CSEBase address /<csi>/<name>")));
        }
        check_poa_hosts(&ctx.config.registration.allowed_poa_hosts, attributes)
    }

    /// Named after the CSE-ID: `ri` and `rn` are both its last element.
    fn identify(&self, _tx: &dyn ReadTx, draft: &mut Draft) -> Result<(String, String)> {
        let name = resource_name_of(&draft.originator);
        Ok((name.clone(), name))
    }

    fn complete(&self, _ctx: &Context, _parent: &Resource, draft: &mut Draft) -> Result<()> {
        draft.attributes.insert("csi".into(), Value::String(draft.originator.clone()));
        Ok(())
    }

    fn check_update(&self, tx: &dyn ReadTx, ctx: &Context, csr: &Resource, changes: &Map<String, Value>) -> Result<()> {
        check_poa_hosts(&ctx.config.registration.allowed_poa_hosts, changes)?;
        if let (Some(dcse), Some(csi)) = (changes.get("dcse"), csr.str("csi")) {
            check_dcse(tx, ctx, csi, dcse)?;
        }
        Ok(())
    }

    /// The registrar pushing down a new `ici` (the IN-CSE at the top
    /// of the tree) into its CSR here: this CSE takes it into its CSEBase in the same
    /// transaction, so the change leaves the commit and goes further down to its own
    /// registrees.
    fn after_update(
        &self,
        tx: &mut dyn WriteTx,
        ctx: &Context,
        csr: &mut Resource,
        _before: &Resource,
        changes: &Map<String, Value>,
    ) -> Result<()> {
        let Some(ici) = changes.get("ici").filter(|ici| ici.is_string()) else {
            return Ok(());
        };
        let same_sp_registrar =
            ctx.config.registrar.as_ref().is_some_and(|registrar| csr.str("csi") == Some(registrar.cse_id.as_str()));
        if !same_sp_registrar {
            return Ok(());
        }
        let Some(mut cse_base) = tx.get(&ctx.config.cse.resource_id)? else {
            return Ok(());
        };
        if cse_base.attributes.get("ici") != Some(ici) {
            cse_base.attributes.insert("ici".into(), ici.clone());
            cse_base.set("lt", Timestamp::now());
            tx.update(&cse_base)?;
        }
        Ok(())
    }

    /// What the departing registree announced here goes with it: its resources announced
    /// below its CSR go with the subtree, those below its announced CSEBase (an anchor, made
    /// by CSEs that place their announcements the reference CSE's way) here. Not those of
    /// the CSEs its `dcse` lists: a registree may claim a CSE it does not carry, and must
    /// not remove what that one announced.
    fn on_delete(&self, tx: &mut dyn WriteTx, csr: &Resource) -> Result<()> {
        let Some(csi) = csr.str("csi") else { return Ok(()) };
        for anchor in super::announced::anchors_of(&*tx, csr.pi(), csi)? {
            super::remove(tx, &anchor)?;
        }
        Ok(())
    }
}

/// Check the `dcse` that the registree `registree` (its CSE-ID) sends.
fn check_dcse(tx: &dyn ReadTx, ctx: &Context, registree: &str, dcse: &Value) -> Result<()> {
    let Context { config, identity, registry } = ctx;
    let entries: Vec<&str> = dcse.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let max = config.registration.max_descendants;
    if entries.len() > max {
        return Err(Error::bad_request(format!(
            "dcse lists {} CSEs; at most {max} are accepted (cse.registration.max_descendants)",
            entries.len()
        )));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    for entry in entries {
        let refuse = |why: &str| Err(Error::bad_request(format!("dcse entry {entry:?} {why}")));
        if !is_cse_id(entry) {
            return refuse("is not a CSE-ID (/csi or //sp/csi)");
        }
        let csi = identity.simplify_originator(entry);
        if !seen.insert(csi.clone()) {
            return refuse("is listed twice");
        }
        if csi == identity.cse_id {
            return refuse("is this CSE");
        }
        if is_registrar(ctx, &csi) {
            return refuse("is this CSE's registrar");
        }
        if csi == registree {
            return refuse("is the registree itself");
        }
        let registered_here = tx.get(&resource_name_of(&csi))?.is_some_and(|resource| resource.ty == ResourceType::Csr);
        if registered_here {
            return refuse("is registered here directly");
        }
        if registry.descendant(&csi).is_some_and(|descendant| descendant.via != registree) {
            return refuse("is below another registree already");
        }
    }
    Ok(())
}

fn is_registrar(ctx: &Context, csi: &str) -> bool {
    let Context { config, identity, .. } = ctx;
    config.registrar.iter().any(|registrar| registrar.cse_id == csi)
        || config
            .sp_registrars
            .iter()
            .any(|registrar| identity.simplify_originator(&registrar.absolute_cse_id()) == csi)
}
