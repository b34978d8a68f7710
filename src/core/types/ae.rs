//! `<AE>` (ty 2): an application entity registers itself. Who may register is decided by
//! `cse.registration.allowed_ae_originators`; the AE-ID is the originator (`C`/`S` ask the
//! CSE to assign one) and becomes the `ri`; the App-ID and serializations are checked.

use serde_json::{Map, Value};

use super::{Context, Draft, ID_LENGTH, TypeRules, check_poa_hosts, policy, registrant};
use crate::core::request::SUPPORTED_MEDIA_TYPES;
use crate::error::{Error, Result, Rsc};
use crate::id::{last_element, matches_any};
use crate::resource::{AttrKind, Need, Policy, Resource, ResourceType, random_id};
use crate::storage::ReadTx;

pub(super) struct Ae;

impl TypeRules for Ae {
    fn policy(&self, name: &str) -> Option<Policy> {
        use AttrKind::*;
        use Need::{Mandatory as M, NotPermitted as NP, Optional as O};
        match name {
            "api" => policy(Str, M, NP),
            "aei" => policy(Str, NP, NP),
            "apn" | "nl" | "or" | "mei" | "regs" => policy(Str, O, O),
            "trps" => policy(Bool, O, O),
            "scp" | "tren" | "ape" | "esi" => policy(Any, O, O),
            _ => registrant(name),
        }
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["api", "rr", "srv"]
    }

    fn children(&self) -> &'static [ResourceType] {
        &[ResourceType::Acp, ResourceType::Cnt, ResourceType::Sub]
    }

    fn is_registration(&self) -> bool {
        true
    }

    /// Who may register an AE, and the AE-ID it gets.
    fn originator(&self, ctx: &Context, originator: Option<&str>) -> Result<String> {
        let originator = originator.unwrap_or("C");
        let allowed = originator == ctx.config.cse.admin_originator
            || matches_any(&ctx.config.registration.allowed_ae_originators, originator);
        if !allowed {
            return Err(Error::new(
                Rsc::SecurityAssociationRequired,
                format!("originator {originator} is not allowed to register an AE"),
            ));
        }
        Ok(match originator {
            "C" => format!("C{}", random_id(ID_LENGTH)),
            "S" => format!("S{}", random_id(ID_LENGTH)),
            other => other.to_string(),
        })
    }

    fn check_registrant(&self, tx: &dyn ReadTx, originator: &str) -> Result<()> {
        let registered = tx.get(last_element(originator))?.is_some_and(|existing| existing.ty == ResourceType::Ae);
        if registered {
            return Err(Error::new(
                Rsc::OriginatorHasAlreadyRegistered,
                format!("an AE with AE-ID {originator} is already registered"),
            ));
        }
        Ok(())
    }

    fn check_create(&self, _tx: &dyn ReadTx, ctx: &Context, _parent: &Resource, draft: &Draft) -> Result<()> {
        check_app(&draft.attributes, &draft.rvi)?;
        check_poa_hosts(&ctx.config.registration.allowed_poa_hosts, &draft.attributes)
    }

    /// The `ri` is the AE-ID's last element; the `rn` the requested one or a random one.
    fn identify(&self, _tx: &dyn ReadTx, draft: &mut Draft) -> Result<(String, String)> {
        let ri = last_element(&draft.originator).to_string();
        let rn = draft.attributes.get("rn").and_then(Value::as_str).map(str::to_string);
        Ok((ri, rn.unwrap_or_else(|| format!("ae_{}", random_id(ID_LENGTH)))))
    }

    fn complete(&self, _ctx: &Context, _parent: &Resource, draft: &mut Draft) -> Result<()> {
        draft.attributes.insert("aei".into(), Value::String(draft.originator.clone()));
        Ok(())
    }

    fn check_update(
        &self,
        _tx: &dyn ReadTx,
        ctx: &Context,
        _ae: &Resource,
        changes: &Map<String, Value>,
    ) -> Result<()> {
        check_poa_hosts(&ctx.config.registration.allowed_poa_hosts, changes)
    }
}

/// `api` (the App-ID, by release version) and `csz` rules of AE registration.
fn check_app(attributes: &Map<String, Value>, rvi: &str) -> Result<()> {
    let api = attributes.get("api").and_then(Value::as_str).unwrap_or_default();
    let problem = match api.chars().next() {
        _ if api.chars().count() < 2 => Some("must have at least two characters"),
        Some('N') => None,
        Some('R') if api.split('.').count() < 3 => {
            Some("is a registered App-ID (R...), which has at least three dot-separated parts, like Rcom.example.app")
        }
        Some('R') => None,
        // Release 2a and 3 App-IDs began with a lower-case r.
        Some('r') if matches!(rvi, "2a" | "3") => None,
        Some('r') => Some("starts with a lower-case r, which only release versions 2a and 3 allow"),
        _ => Some("must start with N (non-registered) or R (registered, like Rcom.example.app)"),
    };
    if let Some(problem) = problem {
        return Err(Error::bad_request(format!("api {api:?} {problem}")));
    }
    for media in attributes.get("csz").and_then(Value::as_array).into_iter().flatten() {
        let media = media.as_str().unwrap_or_default();
        if !SUPPORTED_MEDIA_TYPES.contains(&media) && !media.contains("cbor") {
            return Err(Error::bad_request(format!("csz entry {media:?} is not a supported serialization")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(api: &str, rvi: &str) -> Result<()> {
        let Value::Object(attributes) = json!({ "api": api, "csz": ["application/json"] }) else {
            unreachable!("an object")
        };
        check_app(&attributes, rvi)
    }

    #[test]
    fn app_ids_follow_the_release_rules() {
        assert!(app("Nmine", "4").is_ok());
        assert!(app("Rcom.example.app", "4").is_ok());
        assert!(app("Rcom", "4").is_err(), "a registered App-ID has three parts");
        assert!(app("rlegacy", "3").is_ok());
        assert!(app("rlegacy", "4").is_err(), "lower-case r is for 2a and 3 only");
        assert!(app("N", "4").is_err(), "too short");
        assert!(app("xyz", "4").is_err());
    }
}
