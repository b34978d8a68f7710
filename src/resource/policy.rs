//! Attribute policies: the value kinds of attributes and whether a request may send them
//! on CREATE and UPDATE, and the checks of a body against the policies of its type (the
//! policies themselves are the types' rules, `core::types`). Violations are `4000` with a
//! message that names the attribute.

use serde_json::{Map, Value};

use super::{MAX_SPAN_SECONDS, ResourceType, Timestamp};
use crate::error::{Error, Result};
use crate::id::is_unreserved;

/// Longest resource name.
pub const MAX_NAME_LENGTH: usize = 255;

/// Whether a request may carry an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Must be sent (a CREATE without it is 4000).
    Mandatory,
    /// May be sent.
    Optional,
    /// Must not be sent (set by the CSE, or fixed once created).
    NotPermitted,
}

/// The shape a value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttrKind {
    /// Any JSON value (checked by the type's own rules, if at all).
    Any,
    /// A string.
    Str,
    /// `true` or `false`.
    Bool,
    /// An integer ≥ 0.
    NonNegInt,
    /// An integer ≥ 1.
    PosInt,
    /// A duration in seconds that fits the calendar (at most [`MAX_SPAN_SECONDS`]).
    Seconds,
    /// A oneM2M time: `YYYYMMDDTHHMMSS`, optionally with a fraction and `Z`.
    Timestamp,
    /// A list of strings.
    StrList,
    /// A list that must not be empty when present (`lbl`, `acpi`, ...).
    NonEmptyStrList,
    /// `lbl`: a non-empty list of tokens (not empty, no tab or line break, no double space).
    Labels,
    /// `poa`: a non-empty list of absolute `http://` or `https://` URLs with a host and
    /// without credentials (the schemes this CSE can reach).
    PoaList,
    /// A JSON object.
    Object,
    /// `cst`: 1, 2 or 3.
    CseType,
    /// `cr`: only `null` ("fill in the creator") is accepted.
    NullOnly,
    /// `cnf`: `type/subtype:encoding[:security]`.
    ContentInfo,
}

/// One attribute's policy: its value's shape and what CREATE and UPDATE may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The shape its value must have.
    pub kind: AttrKind,
    /// Whether a CREATE must, may or must not send it.
    pub create: Need,
    /// Whether an UPDATE must, may or must not send it.
    pub update: Need,
}

/// Check a CREATE body's attributes against the policies `policy_of` gives and the
/// `mandatory` list of `ty`.
pub fn check_create(
    ty: ResourceType,
    policy_of: impl Fn(&str) -> Option<Policy>,
    mandatory: &[&str],
    attributes: &Map<String, Value>,
) -> Result<()> {
    for (name, value) in attributes {
        let policy = known(ty, &policy_of, name)?;
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
    for name in mandatory {
        if !attributes.contains_key(*name) {
            return Err(Error::bad_request(format!("missing mandatory attribute {name}")));
        }
    }
    check_names(attributes)
}

/// Check an UPDATE body's attributes against the policies `policy_of` gives. `null`
/// removes an optional attribute.
pub fn check_update(
    ty: ResourceType,
    policy_of: impl Fn(&str) -> Option<Policy>,
    attributes: &Map<String, Value>,
) -> Result<()> {
    if attributes.is_empty() {
        return Err(Error::bad_request("an update must carry at least one attribute"));
    }
    for (name, value) in attributes {
        let policy = known(ty, &policy_of, name)?;
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
    Ok(())
}

fn known(ty: ResourceType, policy_of: &impl Fn(&str) -> Option<Policy>, name: &str) -> Result<Policy> {
    policy_of(name).ok_or_else(|| Error::bad_request(format!("unknown attribute {name} for {}", ty.wrapper())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_info_format() {
        assert!(valid_content_info("text/plain:0"));
        assert!(valid_content_info("application/json:1:3"));
        assert!(!valid_content_info("text/plain"));
        assert!(!valid_content_info("text/plain:7"));
    }
}
