//! Attribute policies: which attributes a resource type has, their value kinds, and
//! whether a request may send them on CREATE and UPDATE. Violations are `4000` with a
//! message that names the attribute.

use serde_json::{Map, Value};

use super::{MAX_SPAN_SECONDS, ResourceType, TimeWindow, Timestamp};
use crate::error::{Error, Result};
use crate::id::is_unreserved;

/// Longest resource name.
pub const MAX_NAME_LENGTH: usize = 255;

/// Whether a request may carry an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Mandatory,
    Optional,
    NotPermitted,
}

/// The shape a value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrKind {
    Any,
    Str,
    Bool,
    NonNegInt,
    PosInt,
    /// A duration in seconds that fits the calendar (at most [`MAX_SPAN_SECONDS`]).
    Seconds,
    Timestamp,
    StrList,
    /// A list that must not be empty when present (`lbl`, `acpi`, ...).
    NonEmptyStrList,
    /// `lbl`: a non-empty list of tokens (not empty, no tab or line break, no double space).
    Labels,
    /// `poa`: a non-empty list of absolute `http://` or `https://` URLs with a host and
    /// without credentials (the schemes this CSE can reach).
    PoaList,
    Object,
    /// `cst`: 1, 2 or 3.
    CseType,
    /// `cr`: only `null` ("fill in the creator") is accepted.
    NullOnly,
    /// `cnf`: `type/subtype:encoding[:security]`.
    ContentInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: AttrKind,
    pub create: Need,
    pub update: Need,
}

/// The policy of attribute `name` on resources of type `ty`, `None` if the type has no
/// such attribute.
pub fn policy_of(ty: ResourceType, name: &str) -> Option<Policy> {
    use AttrKind::*;
    use Need::{Mandatory as M, NotPermitted as NP, Optional as O};
    use ResourceType as T;
    let (kind, create, update) = match (ty, name) {
        (_, "ty" | "ri" | "pi" | "ct" | "lt") => (Any, NP, NP),
        (_, "rn") => (Str, O, NP),
        (T::CseBase, _) => return None,
        (_, "et") => (Timestamp, O, O),
        (_, "lbl") => (Labels, O, O),
        (T::Acp | T::Cin, "acpi" | "daci" | "cstn") => return None,
        (_, "acpi" | "daci") => (NonEmptyStrList, O, O),
        (_, "cstn") => (Str, O, O),
        (_, "at" | "aa") => (NonEmptyStrList, O, O),
        (_, "ast") => (NonNegInt, O, O),
        (T::Acp, "loc") => return None,
        (_, "loc") => (Any, O, O),
        (T::Cnt | T::Cin | T::Csr, "cr") => (NullOnly, O, NP),
        (T::Cnt | T::Cin, "st") => (NonNegInt, NP, NP),

        (T::Ae, "api") => (Str, M, NP),
        (T::Ae, "aei") => (Str, NP, NP),
        (T::Ae, "apn" | "nl" | "or" | "mei" | "regs") => (Str, O, O),
        (T::Ae, "trps") => (Bool, O, O),
        (T::Ae, "scp" | "tren" | "ape" | "esi") => (Any, O, O),
        (T::Ae | T::Csr, "rr") => (Bool, M, O),
        (T::Ae | T::Csr, "srv") => (StrList, M, O),
        (T::Ae | T::Csr, "poa") => (PoaList, O, O),
        (T::Ae | T::Csr, "csz") => (StrList, O, O),

        (T::Csr, "csi") => (Str, O, NP),
        (T::Csr, "cb") => (Str, M, NP),
        (T::Csr, "cst") => (CseType, O, NP),
        (T::Csr, "dcse") => (StrList, O, O),
        (T::Csr, "spi" | "ici" | "nl" | "mei" | "tri" | "trn" | "egid") => (Str, O, O),
        (T::Csr, "esi" | "mtcc" | "tren" | "ape") => (Any, O, O),

        (T::Cnt, "mni" | "mbs") => (NonNegInt, O, O),
        (T::Cnt, "mia") => (Seconds, O, O),
        (T::Cnt, "cni" | "cbs") => (NonNegInt, NP, NP),
        (T::Cnt, "li") => (Str, NP, NP),
        (T::Cnt, "disr") => (Bool, O, O),
        (T::Cnt, "or") => (Str, O, O),

        (T::Cin, "con") => (Any, O, NP),
        (T::Cin, "cnf") => (ContentInfo, O, NP),
        (T::Cin, "cs") => (NonNegInt, NP, NP),
        (T::Cin, "dcnt") => (PosInt, O, NP),
        (T::Cin, "conr" | "or") => (Str, O, NP),
        (T::Cin, "dgt") => (Any, O, NP),

        (T::Acp, "pv" | "pvs") => (Object, M, O),
        (T::Acp, "adri" | "apri" | "airi") => (Any, O, O),
        _ => return None,
    };
    Some(Policy { kind, create, update })
}

/// The attributes a CREATE must carry.
fn mandatory(ty: ResourceType) -> &'static [&'static str] {
    match ty {
        ResourceType::Ae => &["api", "rr", "srv"],
        ResourceType::Csr => &["cb", "rr", "srv"],
        ResourceType::Acp => &["pv", "pvs"],
        ResourceType::Cnt | ResourceType::Cin | ResourceType::CseBase => &[],
    }
}

/// Check a CREATE body's attributes against the type's policies.
pub fn validate_create(ty: ResourceType, attributes: &Map<String, Value>) -> Result<()> {
    for (name, value) in attributes {
        let policy = known(ty, name)?;
        if policy.create == Need::NotPermitted {
            return Err(Error::bad_request(format!(
                "attribute {name} is assigned by the CSE and must not be sent on create"
            )));
        }
        if value.is_null() && policy.kind != AttrKind::NullOnly {
            return Err(Error::bad_request(format!("attribute {name} must not be null on create")));
        }
        check_kind(name, policy.kind, value)?;
    }
    for name in mandatory(ty) {
        if !attributes.contains_key(*name) {
            return Err(Error::bad_request(format!("missing mandatory attribute {name}")));
        }
    }
    check_names(attributes)?;
    if ty == ResourceType::Acp {
        check_privileges("pv", attributes.get("pv"), false)?;
        check_privileges("pvs", attributes.get("pvs"), true)?;
    }
    Ok(())
}

/// Check an UPDATE body's attributes. `null` removes an optional attribute.
pub fn validate_update(ty: ResourceType, attributes: &Map<String, Value>) -> Result<()> {
    if attributes.is_empty() {
        return Err(Error::bad_request("an update must carry at least one attribute"));
    }
    for (name, value) in attributes {
        let policy = known(ty, name)?;
        if policy.update == Need::NotPermitted {
            return Err(Error::bad_request(format!("attribute {name} cannot be updated")));
        }
        if value.is_null() {
            if policy.create == Need::Mandatory {
                return Err(Error::bad_request(format!("mandatory attribute {name} cannot be removed")));
            }
            continue;
        }
        check_kind(name, policy.kind, value)?;
    }
    if ty == ResourceType::Acp {
        if let Some(pv) = attributes.get("pv") {
            check_privileges("pv", Some(pv), false)?;
        }
        if let Some(pvs) = attributes.get("pvs") {
            check_privileges("pvs", Some(pvs), true)?;
        }
    }
    Ok(())
}

fn known(ty: ResourceType, name: &str) -> Result<Policy> {
    policy_of(ty, name).ok_or_else(|| Error::bad_request(format!("unknown attribute {name} for {}", ty.wrapper())))
}

fn check_names(attributes: &Map<String, Value>) -> Result<()> {
    if let Some(Value::String(rn)) = attributes.get("rn") {
        if rn.is_empty() || !is_unreserved(rn) {
            return Err(Error::bad_request(format!(
                "invalid rn {rn:?}: only letters, digits, '-', '.', '_' and '~' are allowed"
            )));
        }
        if rn == "la" || rn == "ol" || rn == "." || rn == ".." {
            return Err(Error::bad_request(format!("rn {rn:?} is reserved")));
        }
        if rn.chars().count() > MAX_NAME_LENGTH {
            return Err(Error::bad_request(format!("rn is longer than {MAX_NAME_LENGTH} characters")));
        }
    }
    Ok(())
}

fn check_kind(name: &str, kind: AttrKind, value: &Value) -> Result<()> {
    let ok = match kind {
        AttrKind::Any => true,
        AttrKind::Str => value.is_string(),
        AttrKind::Bool => value.is_boolean(),
        AttrKind::NonNegInt => value.is_u64(),
        AttrKind::PosInt => value.as_u64().is_some_and(|n| n > 0),
        AttrKind::Seconds => value.as_u64().is_some_and(|n| n <= MAX_SPAN_SECONDS),
        AttrKind::Timestamp => value.as_str().and_then(Timestamp::parse).is_some(),
        AttrKind::StrList => value.as_array().is_some_and(|items| items.iter().all(Value::is_string)),
        AttrKind::NonEmptyStrList => {
            value.as_array().is_some_and(|items| !items.is_empty() && items.iter().all(Value::is_string))
        }
        AttrKind::PoaList => return check_poa(value),
        AttrKind::Labels => return check_labels(value),
        AttrKind::Object => value.is_object(),
        AttrKind::CseType => value.as_u64().is_some_and(|n| (1..=3).contains(&n)),
        AttrKind::NullOnly => value.is_null(),
        AttrKind::ContentInfo => value.as_str().is_some_and(valid_content_info),
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        AttrKind::Any => "any value",
        AttrKind::Str => "a string",
        AttrKind::Bool => "a boolean",
        AttrKind::NonNegInt => "a non-negative integer",
        AttrKind::PosInt => "a positive integer",
        AttrKind::Seconds => &format!("a number of seconds from 0 to {MAX_SPAN_SECONDS}"),
        AttrKind::Timestamp => "a timestamp like 20301231T235959 (years 0001 to 9999)",
        AttrKind::StrList => "a list of strings",
        AttrKind::NonEmptyStrList => "a non-empty list of strings",
        AttrKind::PoaList => "a non-empty list of URLs",
        AttrKind::Labels => "a non-empty list of labels",
        AttrKind::Object => "an object",
        AttrKind::CseType => "a CSE type (1 IN, 2 MN, 3 ASN)",
        AttrKind::NullOnly => "null (the CSE fills in the creator)",
        AttrKind::ContentInfo => "a content info like text/plain:0",
    };
    Err(Error::bad_request(format!("attribute {name} must be {expected}, got {value}")))
}

/// `lbl`: a non-empty list of tokens; a token is not empty and has no tab, line break or
/// double space (as the reference CSE checks).
fn check_labels(value: &Value) -> Result<()> {
    let labels = match value.as_array() {
        Some(labels) if !labels.is_empty() => labels,
        _ => return Err(Error::bad_request(format!("attribute lbl must be a non-empty list of labels, got {value}"))),
    };
    for label in labels {
        let Some(label) = label.as_str() else {
            return Err(Error::bad_request(format!("attribute lbl must be a list of strings, got {label}")));
        };
        if label.is_empty() {
            return Err(Error::bad_request("lbl entry \"\" is empty"));
        }
        if label.contains(['\t', '\n', '\r']) || label.contains("  ") {
            return Err(Error::bad_request(format!("lbl entry {label:?} has a tab, a line break or a double space")));
        }
    }
    Ok(())
}

/// `poa`: a non-empty list of URLs this CSE can reach (HTTP and HTTPS), each with a host and
/// without `user:password@` (credentials never travel in a resource).
fn check_poa(value: &Value) -> Result<()> {
    let entries = match value.as_array() {
        Some(entries) if !entries.is_empty() => entries,
        _ => return Err(Error::bad_request(format!("attribute poa must be a non-empty list of URLs, got {value}"))),
    };
    for entry in entries {
        let Some(text) = entry.as_str() else {
            return Err(Error::bad_request(format!("attribute poa must be a list of URL strings, got {entry}")));
        };
        let reachable = url::Url::parse(text).is_ok_and(|url| {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.fragment().is_none()
        });
        if !reachable {
            return Err(Error::bad_request(format!(
                "poa entry {text:?} is not an absolute http:// or https:// URL with a host (and without credentials)"
            )));
        }
    }
    Ok(())
}

/// `type/subtype:encoding` with encoding 0-2, optionally `:security` 0-5.
fn valid_content_info(text: &str) -> bool {
    let mut parts = text.split(':');
    let media = parts.next().unwrap_or_default();
    let media_ok = media.split_once('/').is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty());
    let encoding_ok = parts.next().is_some_and(|e| matches!(e, "0" | "1" | "2"));
    let security_ok = parts.next().is_none_or(|s| matches!(s, "0" | "1" | "2" | "3" | "4" | "5"));
    media_ok && encoding_ok && security_ok && parts.next().is_none()
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
        value.as_u64().is_some_and(|code| {
            ResourceType::from_code(code).is_some() || super::known_unsupported_type(code).is_some()
        })
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

    #[test]
    fn content_info_format() {
        assert!(valid_content_info("text/plain:0"));
        assert!(valid_content_info("application/json:1:3"));
        assert!(!valid_content_info("text/plain"));
        assert!(!valid_content_info("text/plain:7"));
    }
}
