//! A room per resource type: what is particular to AE, CNT, CIN, CSR, ACP and the CSEBase
//! lives in that type's file, behind `TypeRules`.
//!
//! The operations (`core::ops`) do what every resource shares (access checks, names and
//! paths, `acpi`, `et`, timestamps, storage) and ask the type for the rest: its attribute
//! policy, which children it takes, who may create one and under what name, what it fills
//! in and what a create changes in its parent, what an update or a delete does besides
//! storing. A new type is one file here, one [`ResourceType`] variant and one arm in
//! `rules`.

mod acp;
mod ae;
mod announced;
mod cin;
mod cnt;
mod cse_base;
mod csr;
mod sub;

use serde_json::{Map, Value};

use crate::config::Config;
use crate::core::address::Identity;
use crate::core::registry::Registry;
use crate::core::request::Operation;
use crate::error::{Error, Result};
use crate::resource::{self, AttrKind, Need, Policy, Resource, ResourceType, Timestamp, random_id};
use crate::security::HostPattern;
use crate::storage::{ReadTx, WriteTx};

pub(crate) use announced::{ANNOUNCEABLE, announced_attributes, announced_body};
pub(crate) use cnt::{edge_instance, enforce_limits};
pub(crate) use sub::{
    BLOCKING_UPDATE, batch_window, check_child_types as check_subscription_parent, check_target_hosts, events_of,
};

/// Length of the random part of generated IDs.
pub(crate) const ID_LENGTH: usize = 10;

/// What the rules of a type may consult: the configuration, this CSE's identity, and the
/// routing table (read-only).
pub(crate) struct Context<'a> {
    pub config: &'a Config,
    pub identity: &'a Identity,
    pub registry: &'a Registry,
}

/// A resource being created, before it is stored.
pub(crate) struct Draft {
    pub ty: ResourceType,
    /// The attributes: as sent, then completed by the operation and the type.
    pub attributes: Map<String, Value>,
    /// The (simplified) originator; for an AE its AE-ID, for a CSR its CSE-ID.
    pub originator: String,
    /// The request's release version.
    pub rvi: String,
    /// Its creation time.
    pub now: Timestamp,
    /// Its expiration time (the type may shorten it).
    pub et: Timestamp,
    /// An `ri` chosen before the transaction (a subscription names itself in its
    /// verification requests), if any.
    pub ri: Option<String>,
}

/// The rules of one resource type. Every method but [`TypeRules::policy`] has a default:
/// "nothing particular".
pub(crate) trait TypeRules: Sync {
    /// The policy of attribute `name`; `None` when the type has no such attribute.
    fn policy(&self, name: &str) -> Option<Policy>;

    /// The attributes a CREATE must carry.
    fn mandatory(&self) -> &'static [&'static str] {
        &[]
    }

    /// The types that may be created under a resource of this type.
    fn children(&self) -> &'static [ResourceType] {
        &[]
    }

    /// Checks of a request body that need nothing but the body, after the attribute
    /// policies (`create`: a CREATE's body, else an UPDATE's).
    fn check_body(&self, _attributes: &Map<String, Value>, _create: bool) -> Result<()> {
        Ok(())
    }

    /// Why `op` is never allowed on this type (the answer is 4005), if it is not.
    fn refuses(&self, _op: Operation) -> Option<&'static str> {
        None
    }

    /// Whether creating one is a registration, decided by the allowed-originator lists
    /// rather than by the parent's access rules.
    fn is_registration(&self) -> bool {
        false
    }

    /// The originator a CREATE is carried out for (before the transaction): a registration
    /// checks who may register and assigns the ID.
    fn originator(&self, _ctx: &Context, originator: Option<&str>) -> Result<String> {
        Ok(originator.unwrap_or_default().to_string())
    }

    /// Whether the originator may register now (an AE-ID already registered is 4105); asked
    /// first in the transaction, before the parent's and the content's rules.
    fn check_registrant(&self, _tx: &dyn ReadTx, _originator: &str) -> Result<()> {
        Ok(())
    }

    /// The request's content, beyond the attribute policies (values, consistency, what
    /// the originator may claim, what the parent allows).
    fn check_create(&self, _tx: &dyn ReadTx, _ctx: &Context, _parent: &Resource, _draft: &Draft) -> Result<()> {
        Ok(())
    }

    /// The `ri` and `rn` of the new resource (a random `ri`, the requested `rn` or a random
    /// one, unless the type names it).
    fn identify(&self, tx: &dyn ReadTx, draft: &mut Draft) -> Result<(String, String)> {
        random_identity(tx, draft)
    }

    /// Fill in what the CSE assigns to a new resource of this type.
    fn complete(&self, _ctx: &Context, _parent: &Resource, _draft: &mut Draft) -> Result<()> {
        Ok(())
    }

    /// What a create changes besides the new resource (its parent's counters), after it
    /// is stored; `parent` as read in this transaction.
    fn after_create(&self, _tx: &mut dyn WriteTx, _parent: Resource, _created: &Resource) -> Result<()> {
        Ok(())
    }

    /// A RETRIEVE or DELETE of this resource: may it be read at all?
    fn check_read(&self, _tx: &dyn ReadTx, _resource: &Resource) -> Result<()> {
        Ok(())
    }

    /// Whether a RETRIEVE of `resource` changes it (see [`TypeRules::retrieved`]).
    fn writes_on_retrieve(&self, _resource: &Resource) -> bool {
        false
    }

    /// What a RETRIEVE changes in the stored resource, after it is answered.
    fn retrieved(&self, _tx: &mut dyn WriteTx, _ri: &str) -> Result<()> {
        Ok(())
    }

    /// Values computed at read time (not stored). What it adds must follow from the stored
    /// resource alone, but for the [`TypeRules::now_attribute`]: a RETRIEVE's JSON text is
    /// made once per version of a held resource and reused.
    fn present(&self, _resource: &mut Resource) {}

    /// The attribute that [`TypeRules::present`] sets to the time of reading, if any: it is
    /// written anew into each answer made from a held resource's text.
    fn now_attribute(&self) -> Option<&'static str> {
        None
    }

    /// An UPDATE's content, beyond the attribute policies.
    fn check_update(
        &self,
        _tx: &dyn ReadTx,
        _ctx: &Context,
        _resource: &Resource,
        _changes: &Map<String, Value>,
    ) -> Result<()> {
        Ok(())
    }

    /// What an UPDATE changes besides the attributes sent, before the resource is stored.
    fn after_update(
        &self,
        _tx: &mut dyn WriteTx,
        _ctx: &Context,
        _resource: &mut Resource,
        _before: &Resource,
        _changes: &Map<String, Value>,
    ) -> Result<()> {
        Ok(())
    }

    /// What a DELETE changes besides removing the subtree, before it is removed.
    fn on_delete(&self, _tx: &mut dyn WriteTx, _resource: &Resource) -> Result<()> {
        Ok(())
    }
}

/// The rules of `ty`.
pub(crate) fn rules(ty: ResourceType) -> &'static dyn TypeRules {
    match ty {
        ResourceType::Acp => &acp::Acp,
        ResourceType::Ae => &ae::Ae,
        ResourceType::Cnt => &cnt::Cnt,
        ResourceType::Cin => &cin::Cin,
        ResourceType::CseBase => &cse_base::CseBase,
        ResourceType::Csr => &csr::Csr,
        ResourceType::Sub => &sub::Sub,
        ResourceType::AcpAnnc => &announced::Announced(ResourceType::AcpAnnc),
        ResourceType::AeAnnc => &announced::Announced(ResourceType::AeAnnc),
        ResourceType::CntAnnc => &announced::Announced(ResourceType::CntAnnc),
        ResourceType::CinAnnc => &announced::Announced(ResourceType::CinAnnc),
        ResourceType::CseBaseAnnc => &announced::Announced(ResourceType::CseBaseAnnc),
        ResourceType::CsrAnnc => &announced::Announced(ResourceType::CsrAnnc),
    }
}

/// The policy of attribute `name` on resources of type `ty`, `None` if the type has no
/// such attribute.
pub fn policy_of(ty: ResourceType, name: &str) -> Option<Policy> {
    rules(ty).policy(name)
}

/// Check a CREATE body's attributes against the policies of `ty` and its content rules
/// that need nothing but the body (4000 naming the attribute).
pub fn validate_create(ty: ResourceType, attributes: &Map<String, Value>) -> Result<()> {
    let rules = rules(ty);
    resource::check_create(ty, |name| rules.policy(name), rules.mandatory(), attributes)?;
    rules.check_body(attributes, true)
}

/// Check an UPDATE body's attributes against the policies of `ty` (`null` removes an
/// optional attribute).
pub fn validate_update(ty: ResourceType, attributes: &Map<String, Value>) -> Result<()> {
    let rules = rules(ty);
    resource::check_update(ty, |name| rules.policy(name), attributes)?;
    rules.check_body(attributes, false)
}

/// May a resource of type `child` be created under one of type `parent`?
pub fn allowed_under(child: ResourceType, parent: ResourceType) -> bool {
    rules(parent).children().contains(&child)
}

// ---------------------------------------------------------------------------------------
// Attributes shared by several types
// ---------------------------------------------------------------------------------------

fn policy(kind: AttrKind, create: Need, update: Need) -> Option<Policy> {
    Some(Policy { kind, create, update })
}

/// Attributes of every resource, the CSEBase included: assigned by the CSE, `rn` chosen
/// at creation only.
fn universal(name: &str) -> Option<Policy> {
    match name {
        "ty" | "ri" | "pi" | "ct" | "lt" => policy(AttrKind::Any, Need::NotPermitted, Need::NotPermitted),
        "rn" => policy(AttrKind::Str, Need::Optional, Need::NotPermitted),
        _ => None,
    }
}

/// Attributes of every resource below the CSEBase: universal ones, expiration, labels,
/// announcement.
fn regular(name: &str) -> Option<Policy> {
    use Need::Optional as O;
    match name {
        "et" => policy(AttrKind::Timestamp, O, O),
        "lbl" => policy(AttrKind::Labels, O, O),
        "at" | "aa" => policy(AttrKind::NonEmptyStrList, O, O),
        "ast" => policy(AttrKind::NonNegInt, O, O),
        _ => universal(name),
    }
}

/// Attributes of resources that carry their own access control: `acpi`, `daci`,
/// custodian, location.
fn access_controlled(name: &str) -> Option<Policy> {
    use Need::Optional as O;
    match name {
        "acpi" | "daci" => policy(AttrKind::NonEmptyStrList, O, O),
        "cstn" => policy(AttrKind::Str, O, O),
        "loc" => policy(AttrKind::Any, O, O),
        _ => regular(name),
    }
}

/// The announcement attributes of a resource about to be stored (`before`: as it was, for
/// an UPDATE): `at` only on announceable types, each entry naming a CSE (this one too: the
/// copy is then made here) — an entry this CSE wrote on announcing (`<CSE-ID>/<announced
/// ri>`) kept as it is, any other reduced to its CSE-ID, which the announcer then announces to;
/// `aa` checked and reduced to what can be announced (`announced::announceable_aa`).
pub(crate) fn settle_announcement(
    ty: ResourceType,
    attributes: &mut Map<String, Value>,
    before: Option<&Resource>,
    identity: &Identity,
) -> Result<()> {
    if let Some(at) = attributes.get("at") {
        if announced_attributes(ty).is_none() || ty == ResourceType::CseBase {
            return Err(Error::bad_request(format!("a {} cannot be announced: at is not allowed", ty.wrapper())));
        }
        let announced = before.map(|resource| resource.str_list("at")).unwrap_or_default();
        let mut entries: Vec<String> = Vec::new();
        for entry in at.as_array().into_iter().flatten() {
            let text = entry.as_str().unwrap_or_default();
            let Some(csi) = crate::id::cse_of(text).filter(|csi| crate::id::is_cse_id(csi)) else {
                return Err(Error::bad_request(format!("at entry {text:?} does not name a CSE")));
            };
            let csi = identity.simplify_originator(csi);
            let kept = if announced.iter().any(|known| known == text) { text } else { csi.as_str() };
            match entries.iter().position(|existing| crate::id::cse_of(existing) == Some(csi.as_str())) {
                // One entry per CSE; the announced form wins over a bare repeat.
                Some(index) if kept.len() > entries[index].len() => entries[index] = kept.to_string(),
                Some(_) => {}
                None => entries.push(kept.to_string()),
            }
        }
        attributes.insert("at".into(), Value::from(entries));
    }
    if let Some(aa) = attributes.get("aa") {
        match announced::announceable_aa(ty, aa, attributes)? {
            Some(kept) => attributes.insert("aa".into(), kept),
            None => attributes.remove("aa"),
        };
    }
    Ok(())
}

/// Delete a resource and its subtree, with what its type changes elsewhere (a container's
/// counters). Every deletion goes through here: DELETE, expiry, `dcnt`, the manager.
pub(crate) fn remove(tx: &mut dyn WriteTx, resource: &Resource) -> Result<()> {
    crate::core::notify::events::deleting(tx, resource)?;
    rules(resource.ty).on_delete(tx, resource)?;
    tx.delete_subtree(resource)?;
    Ok(())
}

/// As [`remove`], for the local CSR that describes this CSE's registrar (dropped on every
/// re-registration): what the registrar announced here stays, since a registrar does not
/// announce again because a registree registered anew.
pub(crate) fn remove_registrar_record(tx: &mut dyn WriteTx, csr: &Resource) -> Result<()> {
    crate::core::notify::events::deleting(tx, csr)?;
    tx.delete_subtree(csr)?;
    Ok(())
}

/// Attributes of what registers here (AE, CSR): how to reach it and what it speaks, on top
/// of access control.
fn registrant(name: &str) -> Option<Policy> {
    use Need::{Mandatory as M, Optional as O};
    match name {
        "rr" => policy(AttrKind::Bool, M, O),
        "srv" => policy(AttrKind::StrList, M, O),
        "poa" => policy(AttrKind::PoaList, O, O),
        "csz" => policy(AttrKind::StrList, O, O),
        _ => access_controlled(name),
    }
}

/// A random `ri` not in use, and the requested `rn` or a random one.
fn random_identity(tx: &dyn ReadTx, draft: &Draft) -> Result<(String, String)> {
    let short = draft.ty.short_name();
    let ri = loop {
        let candidate = format!("{short}{}", random_id(ID_LENGTH));
        if tx.get(&candidate)?.is_none() {
            break candidate;
        }
    };
    let rn = draft.attributes.get("rn").and_then(Value::as_str).map(str::to_string);
    Ok((ri, rn.unwrap_or_else(|| format!("{short}_{}", random_id(ID_LENGTH)))))
}

/// The hosts of a `poa` must be among `cse.registration.allowed_poa_hosts`, when that is set.
fn check_poa_hosts(allowed: &[HostPattern], attributes: &Map<String, Value>) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    for entry in attributes.get("poa").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let permitted = url::Url::parse(entry).is_ok_and(|url| allowed.iter().any(|pattern| pattern.matches(&url)));
        if !permitted {
            return Err(Error::bad_request(format!(
                "poa entry {entry:?} names a host that registrees may not advertise here (cse.registration.allowed_poa_hosts)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Rsc;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test bodies are objects"),
        }
    }

    fn create_error(ty: ResourceType, value: Value) -> String {
        let error = validate_create(ty, &body(value)).expect_err("should be rejected");
        assert_eq!(error.rsc, Rsc::BadRequest);
        error.dbg
    }

    #[test]
    fn parent_child_rules() {
        assert!(allowed_under(ResourceType::Ae, ResourceType::CseBase));
        assert!(!allowed_under(ResourceType::Ae, ResourceType::Ae));
        assert!(allowed_under(ResourceType::Cin, ResourceType::Cnt));
        assert!(!allowed_under(ResourceType::Cin, ResourceType::Ae));
        assert!(!allowed_under(ResourceType::Csr, ResourceType::Csr));
        assert!(!allowed_under(ResourceType::Cnt, ResourceType::Cin));
    }

    #[test]
    fn every_type_has_the_universal_attributes_and_the_csebase_nothing_else() {
        for ty in ResourceType::ALL {
            for name in ["ty", "ri", "pi", "ct", "lt", "rn"] {
                assert!(policy_of(ty, name).is_some(), "{ty:?} {name}");
            }
        }
        assert!(policy_of(ResourceType::CseBase, "lbl").is_none());
        assert!(policy_of(ResourceType::Cin, "acpi").is_none());
        assert!(policy_of(ResourceType::Acp, "loc").is_none());
        assert!(policy_of(ResourceType::Cnt, "acpi").is_some());
    }

    #[test]
    fn a_valid_ae_passes() {
        validate_create(
            ResourceType::Ae,
            &body(json!({"api": "Nx", "rr": true, "srv": ["3"], "rn": "ae1", "lbl": ["a"]})),
        )
        .expect("valid");
    }

    #[test]
    fn create_errors_name_the_attribute() {
        assert!(create_error(ResourceType::Ae, json!({"api": "Nx", "rr": true})).contains("srv"));
        assert!(create_error(ResourceType::Ae, json!({"api": "Nx", "rr": "yes", "srv": []})).contains("rr"));
        assert!(create_error(ResourceType::Ae, json!({"api": "Nx", "rr": true, "srv": [], "foo": 1})).contains("foo"));
        assert!(create_error(ResourceType::Ae, json!({"api": "Nx", "rr": true, "srv": [], "ri": "x"})).contains("ri"));
        assert!(create_error(ResourceType::Ae, json!({"api": "Nx", "rr": true, "srv": [], "cr": null})).contains("cr"));
        assert!(create_error(ResourceType::Cnt, json!({"lbl": []})).contains("lbl"));
        assert!(create_error(ResourceType::Cnt, json!({"mni": -1})).contains("mni"));
        assert!(create_error(ResourceType::Cnt, json!({"rn": "a b"})).contains("rn"));
        assert!(create_error(ResourceType::Cnt, json!({"cr": "Cx"})).contains("cr"));
        assert!(create_error(ResourceType::Cin, json!({"acpi": ["x"]})).contains("acpi"));
        assert!(create_error(ResourceType::Cin, json!({"cnf": "text"})).contains("cnf"));
        assert!(create_error(ResourceType::Csr, json!({"rr": true, "srv": ["3"]})).contains("cb"));
        assert!(create_error(ResourceType::Acp, json!({"pv": {}, "pvs": {"acr": []}})).contains("pvs"));
        assert!(
            create_error(
                ResourceType::Acp,
                json!({"pv": {"acr": [{"acop": 2}]}, "pvs": {"acr": [{"acor": ["all"], "acop": 63}]}})
            )
            .contains("acor")
        );
    }

    #[test]
    fn update_rules() {
        validate_update(ResourceType::Cnt, &body(json!({"mni": 5, "lbl": null}))).expect("valid");
        let error = validate_update(ResourceType::Ae, &body(json!({"api": "Ny"}))).expect_err("NP");
        assert!(error.dbg.contains("api"));
        let error = validate_update(ResourceType::Ae, &body(json!({"rr": null}))).expect_err("mandatory");
        assert!(error.dbg.contains("rr"));
        let error = validate_update(ResourceType::Csr, &body(json!({"csi": "/x"}))).expect_err("NP");
        assert!(error.dbg.contains("csi"));
        validate_update(ResourceType::Csr, &body(json!({"dcse": [], "poa": ["http://x"]}))).expect("valid");
    }
}
