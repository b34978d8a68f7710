//! Announcement: which attributes of an original are copied to its announced resources,
//! and the announced types themselves (`<aeAnnc>`, `<containerAnnc>`, … ty 10000 + n), kept
//! here for the CSE whose resources they link to (`lnk`).
//!
//! An attribute of an announceable type is *mandatory announced* (MA: copied whenever the
//! original has it), *optionally announced* (OA: copied when the original's `aa` lists it)
//! or not announced (everything else). An announced resource takes the MA and OA
//! attributes of its original's type, `lnk` (mandatory, unlike the reference CSE, which
//! accepts a copy that links to nothing), and nothing else: `at` or `cni` on a `cntA` is
//! 4000.
//!
//! Who may do what with an announced resource (`core::access`): the CSE its `lnk` names,
//! everything; everybody else by the usual rules. Only a CSE announces, and only its own
//! resources: the `lnk` of a new one must name the originator's CSE.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Context, Draft, TypeRules, policy, rules, universal};
use crate::error::{Error, Result};
use crate::id::cse_of;
use crate::resource::{AttrKind, Need, Policy, Resource, ResourceType};
use crate::storage::ReadTx;

/// The types whose resources may carry `at` (announced by `remote::announce`).
pub(crate) const ANNOUNCEABLE: [ResourceType; 5] =
    [ResourceType::Acp, ResourceType::Ae, ResourceType::Cnt, ResourceType::Cin, ResourceType::Csr];

/// The attributes copied whenever present (MA) and those copied when `aa` lists them (OA),
/// for the originals of `ty`; `None` for a type that is not announceable.
pub(crate) fn announced_attributes(ty: ResourceType) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match ty {
        ResourceType::Ae => (
            &["et", "lbl", "acpi", "ast", "esi", "srv"],
            &[
                "rn", "daci", "loc", "apn", "api", "aei", "poa", "nl", "rr", "csz", "regs", "trps", "scp", "tren",
                "ape", "or",
            ],
        ),
        ResourceType::Cnt => {
            (&["et", "lbl", "acpi", "ast"], &["rn", "daci", "loc", "mni", "mbs", "mia", "li", "or", "disr"])
        }
        ResourceType::Cin => (&["et", "lbl", "ast"], &["rn", "loc", "cnf", "conr", "con", "or", "dgt"]),
        ResourceType::Acp => (&["et", "lbl", "ast", "pv", "pvs", "adri", "apri", "airi"], &["rn"]),
        ResourceType::Csr => (
            &["et", "lbl", "acpi", "ast", "esi", "srv"],
            &[
                "rn", "daci", "loc", "cst", "poa", "cb", "csi", "spi", "ici", "tri", "rr", "nl", "csz", "trn", "dcse",
                "egid", "tren", "ape",
            ],
        ),
        ResourceType::CseBase => {
            (&["lbl", "acpi", "esi", "srv"], &["rn", "loc", "csi", "spi", "ici", "cst", "csz", "daci", "poa"])
        }
        _ => return None,
    })
}

/// Check an original's `aa` (each entry an attribute name its type defines; 4000 naming
/// it) and keep the entries that can be announced: optionally announced attributes the
/// resource has (`attributes`, as it will be stored). `None` when none is left: `aa` is
/// then removed, as the standard says.
pub(crate) fn announceable_aa(ty: ResourceType, aa: &Value, attributes: &Map<String, Value>) -> Result<Option<Value>> {
    let Some((_, optional)) = announced_attributes(ty) else {
        return Err(Error::bad_request(format!("a {} cannot be announced: aa is not allowed", ty.wrapper())));
    };
    let mut kept = Vec::new();
    for entry in aa.as_array().into_iter().flatten() {
        let Some(name) = entry.as_str() else {
            return Err(Error::bad_request("aa entries must be attribute names"));
        };
        let valid_name = name.chars().next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !valid_name {
            return Err(Error::bad_request(format!("aa entry {name:?} is not an attribute name")));
        }
        if rules(ty).policy(name).is_none() {
            return Err(Error::bad_request(format!("aa entry {name:?}: a {} has no such attribute", ty.wrapper())));
        }
        if optional.contains(&name) && attributes.contains_key(name) && !kept.contains(&name) {
            kept.push(name);
        }
    }
    Ok((!kept.is_empty()).then(|| Value::from(kept)))
}

/// What the announced copy of `original` carries: its MA attributes, the OA attributes its
/// `aa` lists, and `lnk` (`link`: the original's ID as the target sees it). `et` and `rn`
/// as they are (a copy without `rn` gets a name of the target's choosing).
pub(crate) fn announced_body(original: &Resource, link: &str) -> Map<String, Value> {
    let mut body = Map::new();
    let Some((mandatory, optional)) = announced_attributes(original.ty) else {
        return body;
    };
    let listed: BTreeSet<String> = original.str_list("aa").into_iter().collect();
    for (name, value) in &original.attributes {
        if mandatory.contains(&name.as_str()) || (optional.contains(&name.as_str()) && listed.contains(name)) {
            body.insert(name.clone(), value.clone());
        }
    }
    body.insert("lnk".into(), Value::String(link.to_string()));
    body
}

/// The announced types.
pub(super) struct Announced(pub ResourceType);

impl TypeRules for Announced {
    fn policy(&self, name: &str) -> Option<Policy> {
        let original = self.0.original()?;
        let (mandatory, optional) = announced_attributes(original)?;
        match name {
            "lnk" => policy(AttrKind::Str, Need::Mandatory, Need::NotPermitted),
            "et" => policy(AttrKind::Timestamp, Need::Optional, Need::Optional),
            "ast" => policy(AttrKind::NonNegInt, Need::Optional, Need::Optional),
            "rn" | "ty" | "ri" | "pi" | "ct" | "lt" => universal(name),
            _ if mandatory.contains(&name) || optional.contains(&name) => {
                // The original's kind of value; whatever the original lets a client set
                // once or not at all, its CSE copies and keeps current here.
                let kind = rules(original).policy(name).map_or(AttrKind::Any, |policy| policy.kind);
                policy(kind, Need::Optional, Need::Optional)
            }
            _ => None,
        }
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["lnk"]
    }

    fn children(&self) -> &'static [ResourceType] {
        use ResourceType::*;
        match self.0 {
            CseBaseAnnc => &[AcpAnnc, AeAnnc, CntAnnc, Sub],
            AeAnnc => &[Acp, AcpAnnc, Cnt, CntAnnc, Sub],
            CntAnnc => &[Cnt, CntAnnc, Cin, CinAnnc, Sub],
            AcpAnnc => &[Sub],
            CsrAnnc => &[Acp, AcpAnnc, AeAnnc, Cnt, CntAnnc, CinAnnc, CsrAnnc, Sub],
            _ => &[],
        }
    }

    /// A CSE announces its own resources only; one anchor per announcing CSE.
    fn check_create(&self, tx: &dyn ReadTx, ctx: &Context, parent: &Resource, draft: &Draft) -> Result<()> {
        let lnk = draft.attributes.get("lnk").and_then(Value::as_str).unwrap_or_default();
        let Some(linked_cse) = cse_of(lnk).filter(|csi| lnk.len() > csi.len() + 1) else {
            return Err(Error::bad_request(format!("lnk {lnk:?} is not the ID of a resource on a CSE")));
        };
        let admin = draft.originator == ctx.config.cse.admin_originator;
        let simplify = |id: &str| ctx.identity.simplify_originator(id);
        if !admin && simplify(linked_cse) != simplify(&draft.originator) {
            return Err(Error::no_privilege(format!(
                "originator {} cannot announce {lnk}: a CSE announces its own resources",
                draft.originator
            )));
        }
        if self.0 == ResourceType::CseBaseAnnc
            && tx
                .children(parent.ri(), Some(ResourceType::CseBaseAnnc))?
                .iter()
                .any(|anchor| anchor.str("lnk") == Some(lnk))
        {
            return Err(Error::conflict(format!("the CSEBase {lnk} is already announced here")));
        }
        Ok(())
    }
}

/// The announced CSEBases (anchors) below `cse_base` that the CSE `csi` made, with what
/// hangs below them: removed when that CSE's registration goes.
pub(super) fn anchors_of(tx: &dyn ReadTx, cse_base: &str, csi: &str) -> Result<Vec<Resource>> {
    let prefix = format!("{csi}/");
    Ok(tx
        .children(cse_base, Some(ResourceType::CseBaseAnnc))?
        .into_iter()
        .filter(|anchor| anchor.str("lnk").is_some_and(|lnk| lnk.starts_with(&prefix)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test bodies are objects"),
        }
    }

    #[test]
    fn aa_keeps_the_optional_attributes_present_and_refuses_unknown_names() {
        let attributes = map(json!({"api": "Nx", "rr": true, "srv": ["4"], "lbl": ["a"], "poa": ["http://x"]}));
        let kept = announceable_aa(ResourceType::Ae, &json!(["poa", "lbl", "ri", "nl", "poa"]), &attributes);
        assert_eq!(kept.expect("valid"), Some(json!(["poa"])));
        assert_eq!(announceable_aa(ResourceType::Ae, &json!(["ri", "ct"]), &attributes).expect("valid"), None);
        for wrong in ["lb+l", "lb l", "1lbl", "st"] {
            let error = announceable_aa(ResourceType::Ae, &json!([wrong]), &attributes).expect_err(wrong);
            assert!(error.dbg.contains(wrong), "{}", error.dbg);
        }
        assert!(announceable_aa(ResourceType::Sub, &json!(["nu"]), &attributes).is_err());
    }

    #[test]
    fn the_body_carries_ma_listed_oa_and_the_link() {
        let original = Resource {
            ty: ResourceType::Cnt,
            attributes: map(json!({
                "ri": "cnt1", "rn": "box", "lbl": ["x"], "mni": 5, "mbs": 9, "cni": 3, "st": 2,
                "aa": ["mni"], "at": ["/id-in"], "et": "20991231T000000"
            })),
            path: "cse-mn/box".into(),
            creator: None,
        };
        let body = announced_body(&original, "/id-mn/cnt1");
        assert_eq!(Value::Object(body), json!({"lbl": ["x"], "mni": 5, "et": "20991231T000000", "lnk": "/id-mn/cnt1"}));
    }

    #[test]
    fn announced_types_take_the_originals_attributes_and_lnk_only() {
        let rules = Announced(ResourceType::CntAnnc);
        assert!(rules.policy("mni").is_some());
        assert!(rules.policy("lnk").is_some());
        assert!(rules.policy("at").is_none());
        assert!(rules.policy("cni").is_none());
        assert!(rules.policy("st").is_none());
        assert!(Announced(ResourceType::AeAnnc).policy("srv").is_some());
    }
}
