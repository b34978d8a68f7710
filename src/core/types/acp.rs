//! `<accessControlPolicy>` (ty 1): privileges (`pv`) and self-privileges (`pvs`), each a
//! list of rules checked whole when they are sent, so that an access decision never meets
//! a rule it cannot read. How the rules decide is `core::access`.

use serde_json::{Map, Value};

use super::{TypeRules, policy, regular};
use crate::error::{Error, Result};
use crate::resource::{AttrKind, Need, Policy, ResourceType, TimeWindow, known_unsupported_type};

pub(super) struct Acp;

impl TypeRules for Acp {
    fn children(&self) -> &'static [ResourceType] {
        &[ResourceType::Sub]
    }

    fn policy(&self, name: &str) -> Option<Policy> {
        use Need::{Mandatory as M, Optional as O};
        match name {
            "pv" | "pvs" => policy(AttrKind::Object, M, O),
            "adri" | "apri" | "airi" => policy(AttrKind::Any, O, O),
            _ => regular(name),
        }
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["pv", "pvs"]
    }

    /// The `pv` and `pvs` rules: on CREATE both are there; on UPDATE those sent.
    fn check_body(&self, attributes: &Map<String, Value>, create: bool) -> Result<()> {
        for (name, self_privileges) in [("pv", false), ("pvs", true)] {
            let value = attributes.get(name);
            if create || value.is_some_and(|value| !value.is_null()) {
                check_privileges(name, value, self_privileges)?;
            }
        }
        Ok(())
    }
}

/// `pv` / `pvs`: `{"acr": [rule, ...]}`. `pv` may be `{}` or have an empty list; `pvs`
/// must have at least one rule and nothing else.
fn check_privileges(name: &str, value: Option<&Value>, self_privileges: bool) -> Result<()> {
    let Some(Value::Object(object)) = value else {
        return Err(Error::bad_request(format!("attribute {name} must be an object {{\"acr\": [...]}}")));
    };
    if let Some(other) = object.keys().find(|key| *key != "acr") {
        return Err(Error::bad_request(format!("attribute {name} has an unknown field {other}")));
    }
    let rules = match object.get("acr") {
        None if !self_privileges => return Ok(()),
        None => {
            return Err(Error::bad_request(format!("attribute {name} needs a non-empty acr list")));
        }
        Some(Value::Array(rules)) => rules,
        Some(_) => {
            return Err(Error::bad_request(format!("{name}.acr must be a list of rules")));
        }
    };
    if self_privileges && rules.is_empty() {
        return Err(Error::bad_request(format!("attribute {name} needs a non-empty acr list")));
    }
    for rule in rules {
        let Value::Object(rule) = rule else {
            return Err(Error::bad_request(format!("{name}.acr entries must be objects")));
        };
        for (field, value) in rule {
            let ok = match field.as_str() {
                "acor" => value.as_array().is_some_and(|items| items.iter().all(Value::is_string)),
                "acop" => value.as_u64().is_some_and(|bits| (1..=63).contains(&bits)),
                "acaf" => value.is_boolean(),
                "aca" => value.as_array().is_some_and(|items| !items.is_empty() && items.iter().all(Value::is_string)),
                "acco" => {
                    check_contexts(&format!("{name}.acr.acco"), value)?;
                    true
                }
                "acod" => {
                    check_object_details(&format!("{name}.acr.acod"), value)?;
                    true
                }
                _ => {
                    return Err(Error::bad_request(format!("{name}.acr has an unknown field {field}")));
                }
            };
            if !ok {
                return Err(Error::bad_request(format!("{name}.acr.{field} has an invalid value {value}")));
            }
        }
        for field in ["acor", "acop"] {
            if !rule.contains_key(field) {
                return Err(Error::bad_request(format!("{name}.acr entries need {field}")));
            }
        }
    }
    Ok(())
}

/// `acco`: a list of contexts, each with time windows (`actw`, cron-like lines) and/or
/// client addresses (`acip`: `ipv4`/`ipv6` lists of addresses or blocks). Checked whole now,
/// so that no request later meets a window it cannot read. Location contexts (`aclr`)
/// cannot be evaluated here and are refused rather than stored and ignored.
fn check_contexts(key: &str, value: &Value) -> Result<()> {
    let invalid = |what: String| Err(Error::bad_request(format!("{key}: {what}")));
    let Some(contexts) = value.as_array() else {
        return invalid(format!("must be a list of contexts, got {value}"));
    };
    for context in contexts {
        let Some(context) = context.as_object() else {
            return invalid(format!("a context must be an object, got {context}"));
        };
        if context.is_empty() {
            return invalid("a context must name actw or acip".into());
        }
        for (kind, value) in context {
            match kind.as_str() {
                "actw" => {
                    let windows = value.as_array().filter(|windows| !windows.is_empty());
                    let Some(windows) = windows else {
                        return invalid(format!("actw must be a non-empty list of time windows, got {value}"));
                    };
                    for window in windows {
                        let Some(window) = window.as_str() else {
                            return invalid(format!("a time window must be a string, got {window}"));
                        };
                        if let Err(reason) = TimeWindow::parse(window) {
                            return invalid(reason);
                        }
                    }
                }
                "acip" => check_addresses(key, value)?,
                "aclr" => {
                    return Err(Error::not_implemented(format!(
                        "{key}: location contexts (aclr) are not evaluated by this CSE"
                    )));
                }
                other => return invalid(format!("unknown context kind {other}")),
            }
        }
    }
    Ok(())
}

/// `acip`: `{"ipv4": [...], "ipv6": [...]}`, each an address or a block like 10.0.0.0/8.
fn check_addresses(key: &str, value: &Value) -> Result<()> {
    let Some(families) = value.as_object().filter(|families| !families.is_empty()) else {
        return Err(Error::bad_request(format!("{key}: acip must be an object with ipv4 and/or ipv6 lists")));
    };
    for (family, addresses) in families {
        let v4 = match family.as_str() {
            "ipv4" => true,
            "ipv6" => false,
            other => return Err(Error::bad_request(format!("{key}: acip has an unknown field {other}"))),
        };
        for address in addresses.as_array().into_iter().flatten() {
            let parsed = address.as_str().and_then(|text| {
                text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(Into::into))
            });
            let in_family = parsed.is_some_and(|network| matches!(network, ipnet::IpNet::V4(_)) == v4);
            if !in_family {
                return Err(Error::bad_request(format!(
                    "{key}: acip.{family} entry {address} is not an address or block"
                )));
            }
        }
        if !addresses.is_array() {
            return Err(Error::bad_request(format!("{key}: acip.{family} must be a list")));
        }
    }
    Ok(())
}

/// `acod`: a list of `{"chty": [types], "ty": type, "spty": ...}`; `chty` is required and
/// every type must be a oneM2M resource type.
fn check_object_details(key: &str, value: &Value) -> Result<()> {
    let invalid = |what: String| Err(Error::bad_request(format!("{key}: {what}")));
    let Some(details) = value.as_array() else {
        return invalid(format!("must be a list of objects like {{\"chty\": [4]}}, got {value}"));
    };
    let resource_type = |value: &Value| {
        value
            .as_u64()
            .is_some_and(|code| ResourceType::from_code(code).is_some() || known_unsupported_type(code).is_some())
    };
    for detail in details {
        let Some(detail) = detail.as_object() else {
            return invalid(format!("an entry must be an object, got {detail}"));
        };
        let Some(types) = detail.get("chty").and_then(Value::as_array) else {
            return invalid("an entry needs chty, a list of resource types".into());
        };
        if let Some(wrong) = types.iter().find(|ty| !resource_type(ty)) {
            return invalid(format!("chty entry {wrong} is not a resource type"));
        }
        for (field, value) in detail {
            match field.as_str() {
                "chty" => {}
                "ty" if resource_type(value) => {}
                "ty" => return invalid(format!("ty {value} is not a resource type")),
                "spty" if value.is_object() || value.is_string() || value.is_u64() => {}
                "spty" => return invalid(format!("spty has an invalid value {value}")),
                other => return invalid(format!("unknown field {other}")),
            }
        }
    }
    Ok(())
}
