//! The resource model: resource types, the [`Resource`] value, attribute policies and
//! their validation, timestamps. Pure data and rules: no async, no I/O.

mod policy;
mod schedule;
mod time;

pub use policy::{AttrKind, MAX_NAME_LENGTH, Need, Policy, check_create, check_update};
pub use schedule::TimeWindow;
pub use time::{MAX_SPAN_SECONDS, Timestamp};

use serde_json::{Map, Value};

/// The resource types this CSE hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResourceType {
    /// accessControlPolicy (1).
    Acp,
    /// AE (2).
    Ae,
    /// container (3).
    Cnt,
    /// contentInstance (4).
    Cin,
    /// CSEBase (5).
    CseBase,
    /// remoteCSE (16).
    Csr,
    /// subscription (23).
    Sub,
    /// The announced types: copies of an original on another CSE, with a link (`lnk`)
    /// back to it.
    AcpAnnc,
    /// AEAnnc (10002).
    AeAnnc,
    /// containerAnnc (10003).
    CntAnnc,
    /// contentInstanceAnnc (10004).
    CinAnnc,
    /// The announced CSEBase of another CSE: the anchor its announced resources hang
    /// below when it is not registered here.
    CseBaseAnnc,
    /// remoteCSEAnnc (10016).
    CsrAnnc,
}

impl ResourceType {
    /// Every type this CSE hosts.
    pub const ALL: [ResourceType; 13] = [
        ResourceType::Acp,
        ResourceType::Ae,
        ResourceType::Cnt,
        ResourceType::Cin,
        ResourceType::CseBase,
        ResourceType::Csr,
        ResourceType::Sub,
        ResourceType::AcpAnnc,
        ResourceType::AeAnnc,
        ResourceType::CntAnnc,
        ResourceType::CinAnnc,
        ResourceType::CseBaseAnnc,
        ResourceType::CsrAnnc,
    ];

    /// The announced type of an announceable one (`<container>` → `<containerAnnc>`).
    pub fn announced(self) -> Option<ResourceType> {
        Some(match self {
            ResourceType::Acp => ResourceType::AcpAnnc,
            ResourceType::Ae => ResourceType::AeAnnc,
            ResourceType::Cnt => ResourceType::CntAnnc,
            ResourceType::Cin => ResourceType::CinAnnc,
            ResourceType::CseBase => ResourceType::CseBaseAnnc,
            ResourceType::Csr => ResourceType::CsrAnnc,
            _ => return None,
        })
    }

    /// The type an announced type copies (`<containerAnnc>` → `<container>`).
    pub fn original(self) -> Option<ResourceType> {
        Some(match self {
            ResourceType::AcpAnnc => ResourceType::Acp,
            ResourceType::AeAnnc => ResourceType::Ae,
            ResourceType::CntAnnc => ResourceType::Cnt,
            ResourceType::CinAnnc => ResourceType::Cin,
            ResourceType::CseBaseAnnc => ResourceType::CseBase,
            ResourceType::CsrAnnc => ResourceType::Csr,
            _ => return None,
        })
    }

    /// Whether it is an announced copy of a resource of another CSE.
    pub fn is_announced(self) -> bool {
        self.original().is_some()
    }

    /// The `ty` number.
    pub fn code(self) -> u16 {
        match self {
            ResourceType::Acp => 1,
            ResourceType::Ae => 2,
            ResourceType::Cnt => 3,
            ResourceType::Cin => 4,
            ResourceType::CseBase => 5,
            ResourceType::Csr => 16,
            ResourceType::Sub => 23,
            ResourceType::AcpAnnc => 10001,
            ResourceType::AeAnnc => 10002,
            ResourceType::CntAnnc => 10003,
            ResourceType::CinAnnc => 10004,
            ResourceType::CseBaseAnnc => 10005,
            ResourceType::CsrAnnc => 10016,
        }
    }

    /// The type of a `ty` number, if this CSE hosts it.
    pub fn from_code(code: u64) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|ty| u64::from(ty.code()) == code)
    }

    /// The JSON wrapper key: `m2m:cnt`.
    pub fn wrapper(self) -> &'static str {
        match self {
            ResourceType::Acp => "m2m:acp",
            ResourceType::Ae => "m2m:ae",
            ResourceType::Cnt => "m2m:cnt",
            ResourceType::Cin => "m2m:cin",
            ResourceType::CseBase => "m2m:cb",
            ResourceType::Csr => "m2m:csr",
            ResourceType::Sub => "m2m:sub",
            ResourceType::AcpAnnc => "m2m:acpA",
            ResourceType::AeAnnc => "m2m:aeA",
            ResourceType::CntAnnc => "m2m:cntA",
            ResourceType::CinAnnc => "m2m:cinA",
            ResourceType::CseBaseAnnc => "m2m:cbA",
            ResourceType::CsrAnnc => "m2m:csrA",
        }
    }

    /// The type of a JSON wrapper key (`m2m:cnt`), if this CSE hosts it.
    pub fn from_wrapper(wrapper: &str) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|ty| ty.wrapper() == wrapper)
    }

    /// The short name used in generated IDs: `cnt`.
    pub fn short_name(self) -> &'static str {
        match self {
            ResourceType::Acp => "acp",
            ResourceType::Ae => "ae",
            ResourceType::Cnt => "cnt",
            ResourceType::Cin => "cin",
            ResourceType::CseBase => "cb",
            ResourceType::Csr => "csr",
            ResourceType::Sub => "sub",
            ResourceType::AcpAnnc => "acpA",
            ResourceType::AeAnnc => "aeA",
            ResourceType::CntAnnc => "cntA",
            ResourceType::CinAnnc => "cinA",
            ResourceType::CseBaseAnnc => "cbA",
            ResourceType::CsrAnnc => "csrA",
        }
    }
}

/// Other oneM2M resource types: known names, not hosted here (CREATE → 5001).
pub fn known_unsupported_type(code: u64) -> Option<&'static str> {
    Some(match code {
        9 => "group",
        10 => "locationPolicy",
        13 => "mgmtObj",
        14 => "node",
        15 => "pollingChannel",
        17 => "request",
        18 => "schedule",
        24 => "semanticDescriptor",
        28 => "flexContainer",
        29 => "timeSeries",
        30 => "timeSeriesInstance",
        48 => "crossResourceSubscription",
        58 => "flexContainerInstance",
        10009..=10060 => "announced resource",
        _ => return None,
    })
}

/// One resource: its type, its attributes as sent on the wire, and what the CSE keeps
/// about it internally (never shown to peers).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Its type.
    pub ty: ResourceType,
    /// All wire attributes, `ri`, `rn`, `pi`, `ct`, ... included.
    pub attributes: Map<String, Value>,
    /// Structured path, CSE-relative: `cse-in/ae1/cnt1`.
    pub path: String,
    /// The originator that created it (access decisions; not the `cr` attribute).
    pub creator: Option<String>,
}

impl Resource {
    /// `ri` (empty if missing).
    pub fn ri(&self) -> &str {
        self.str("ri").unwrap_or_default()
    }
    /// `rn` (empty if missing).
    pub fn rn(&self) -> &str {
        self.str("rn").unwrap_or_default()
    }
    /// `pi` (empty if missing).
    pub fn pi(&self) -> &str {
        self.str("pi").unwrap_or_default()
    }
    /// `ct` (empty if missing).
    pub fn ct(&self) -> &str {
        self.str("ct").unwrap_or_default()
    }
    /// `et`, if set.
    pub fn et(&self) -> Option<&str> {
        self.str("et")
    }

    /// A text attribute.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).and_then(Value::as_str)
    }
    /// A non-negative integer attribute.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.attributes.get(name).and_then(Value::as_u64)
    }
    /// A boolean attribute.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.attributes.get(name).and_then(Value::as_bool)
    }
    /// A list of strings (missing or ill-typed entries are skipped).
    pub fn str_list(&self, name: &str) -> Vec<String> {
        match self.attributes.get(name) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        }
    }

    /// Set an attribute.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.attributes.insert(name.to_string(), value.into());
    }

    /// `{"m2m:xxx": {attributes}}`
    pub fn to_json(&self) -> Value {
        let mut wrapped = Map::with_capacity(1);
        wrapped.insert(self.ty.wrapper().to_string(), Value::Object(self.attributes.clone()));
        Value::Object(wrapped)
    }

    /// [`Resource::to_json`] without a copy of the attributes.
    pub fn into_json(self) -> Value {
        let mut wrapped = Map::with_capacity(1);
        wrapped.insert(self.ty.wrapper().to_string(), Value::Object(self.attributes));
        Value::Object(wrapped)
    }
}

/// The content size (`cs`) of a CIN's `con`, counted the way the reference CSE counts it:
/// characters of a string, 4 for an integer or boolean, 8 for a float, the sum over the
/// elements of a list or the values of an object, 0 for nothing.
pub fn content_size(content: Option<&Value>) -> u64 {
    match content {
        None | Some(Value::Null) => 0,
        Some(Value::String(text)) => text.chars().count() as u64,
        Some(Value::Bool(_)) => 4,
        Some(Value::Number(number)) if number.is_f64() => 8,
        Some(Value::Number(_)) => 4,
        Some(Value::Array(items)) => items.iter().map(|item| content_size(Some(item))).sum(),
        Some(Value::Object(map)) => map.values().map(|item| content_size(Some(item))).sum(),
    }
}

/// What an UPDATE must send to turn attributes `before` into `now`: those new or changed,
/// and `null` for those gone.
pub fn attribute_changes(before: &Map<String, Value>, now: &Map<String, Value>) -> Map<String, Value> {
    let mut changed: Map<String, Value> = now
        .iter()
        .filter(|(name, value)| before.get(*name) != Some(value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for name in before.keys().filter(|name| !now.contains_key(*name)) {
        changed.insert(name.clone(), Value::Null);
    }
    changed
}

/// `len` random characters from `A-Z a-z 0-9`.
pub fn random_id(len: usize) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_round_trip_through_code_and_wrapper() {
        for ty in ResourceType::ALL {
            assert_eq!(ResourceType::from_code(u64::from(ty.code())), Some(ty));
            assert_eq!(ResourceType::from_wrapper(ty.wrapper()), Some(ty));
        }
        assert_eq!(ResourceType::from_code(23), Some(ResourceType::Sub));
        assert_eq!(ResourceType::from_code(9), None);
        assert_eq!(known_unsupported_type(9), Some("group"));
    }

    #[test]
    fn attribute_changes_are_the_new_the_changed_and_the_gone_as_null() {
        let before = match json!({"a": 1, "b": 2, "c": 3}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let now = match json!({"a": 1, "b": 5, "d": 4}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        assert_eq!(Value::Object(attribute_changes(&before, &now)), json!({"b": 5, "d": 4, "c": null}));
        assert!(attribute_changes(&now, &now).is_empty());
    }

    #[test]
    fn content_size_counts_like_the_reference() {
        assert_eq!(content_size(Some(&json!("héllo€"))), 6);
        assert_eq!(content_size(Some(&json!({"a": "xy", "b": [1, 2.5, true]}))), 18);
        assert_eq!(content_size(None), 0);
    }
}
