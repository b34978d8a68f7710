//! Filter criteria (`fc`): which resources a discovery or a conditional retrieval selects.
//!
//! Parsed from request parameters by their oneM2M names (the same in every binding), each
//! value checked once (a bad one is a 4000 that names the parameter), then matched
//! against resources. Where the reference CSE departs from TS-0004 this follows the
//! standard: `sts`/`stb` select state tags smaller/bigger than the value (the reference
//! has them the other way round), `fo=3` is an exclusive or (the reference matches
//! nothing), times are compared as times (the reference compares the text as sent), and
//! `lim`/`ofst` count results, not the target's direct children.

use serde_json::Value;

use crate::core::types::policy_of;
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType, Timestamp, known_unsupported_type};

/// `fu`: what the criteria are used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterUsage {
    /// `fu=1`: find resources; the answer lists them.
    Discovery,
    /// `fu=2`: retrieve what matches (with `rcn` 4, 5, 6, 8).
    ConditionalRetrieval,
}

/// `fo`: how several criteria combine. Several values of one criterion (`ty`, `lbl`,
/// `cty`) always mean "any of them".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterOperation {
    /// `fo=1`: every criterion holds (the default).
    #[default]
    And,
    /// `fo=2`: at least one criterion holds.
    Or,
    /// An odd number of the criteria holds (for two: exactly one).
    Xor,
}

/// The filter criteria of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FilterCriteria {
    /// `fu`: discovery or conditional retrieval; absent: conditional retrieval.
    pub fu: Option<FilterUsage>,
    /// `fo`: how the criteria combine.
    pub fo: FilterOperation,
    /// `ty`: any of these resource types.
    pub ty: Vec<u64>,
    /// `lbl`: any of these labels.
    pub lbl: Vec<String>,
    /// `cty`: any of these content types (`cnf` of an instance, whole or its media type).
    pub cty: Vec<String>,
    /// `crb`: created before.
    pub created_before: Option<Timestamp>,
    /// `cra`: created after.
    pub created_after: Option<Timestamp>,
    /// `ms`: modified since.
    pub modified_since: Option<Timestamp>,
    /// `us`: unmodified since.
    pub unmodified_since: Option<Timestamp>,
    /// `exb`: expires before.
    pub expire_before: Option<Timestamp>,
    /// `exa`: expires after.
    pub expire_after: Option<Timestamp>,
    /// `sts`: state tag smaller than.
    pub state_tag_smaller: Option<u64>,
    /// `stb`: state tag bigger than.
    pub state_tag_bigger: Option<u64>,
    /// `sza`: content size at least.
    pub size_above: Option<u64>,
    /// `szb`: content size below.
    pub size_below: Option<u64>,
    /// Attribute criteria (`rn=temp*`): the attribute equals the value, or matches it as a
    /// wildcard pattern when the value has `*` or `?`.
    pub attributes: Vec<(String, String)>,
    /// `lim`: at most this many results.
    pub lim: Option<usize>,
    /// `lvl`: at most this many levels below the target (1: its children).
    pub lvl: Option<usize>,
    /// `ofst`: the first result to return, counted from 1.
    pub ofst: Option<usize>,
    /// `arp`: each discovered resource stands for the one at this path below it.
    pub arp: Option<String>,
}

/// Filter criteria the CSE knows but does not evaluate: refused, never ignored.
const UNSUPPORTED: [&str; 8] = ["lbq", "smf", "aq", "gmty", "geom", "gsf", "catr", "patr"];

impl FilterCriteria {
    /// Whether the request is a discovery (`fu=1`).
    pub fn is_discovery(&self) -> bool {
        self.fu == Some(FilterUsage::Discovery)
    }

    /// Take the request parameter `name` if it is a filter criterion: `Ok(false)` when it
    /// is not one, 4000 for a value it cannot have, 5001 for a criterion not evaluated here.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool> {
        let value = value.trim();
        match name {
            "fu" => {
                let usage = match value {
                    "1" => FilterUsage::Discovery,
                    "2" => FilterUsage::ConditionalRetrieval,
                    "3" | "4" => {
                        return Err(Error::not_implemented(format!(
                            "fu {value} ({}) is not supported (1 discovery, 2 conditional retrieval)",
                            if value == "3" { "IPE on-demand discovery" } else { "discovery-based operation" }
                        )));
                    }
                    _ => return Err(invalid(name, value, "1 (discovery) or 2 (conditional retrieval)")),
                };
                set_once(&mut self.fu, name, usage)?;
            }
            "fo" => {
                self.fo = match value {
                    "1" => FilterOperation::And,
                    "2" => FilterOperation::Or,
                    "3" => FilterOperation::Xor,
                    _ => return Err(invalid(name, value, "1 (AND), 2 (OR) or 3 (XOR)")),
                }
            }
            "ty" => {
                for item in items(value) {
                    let known = item.parse::<u64>().ok().filter(|code| {
                        ResourceType::from_code(*code).is_some() || known_unsupported_type(*code).is_some()
                    });
                    self.ty.push(known.ok_or_else(|| invalid(name, item, "a resource type number"))?);
                }
            }
            "lbl" => {
                for item in items(value) {
                    self.lbl.push(item.to_string());
                }
            }
            "cty" => {
                for item in items(value) {
                    self.cty.push(item.to_string());
                }
            }
            "crb" => set_once(&mut self.created_before, name, timestamp(name, value)?)?,
            "cra" => set_once(&mut self.created_after, name, timestamp(name, value)?)?,
            "ms" => set_once(&mut self.modified_since, name, timestamp(name, value)?)?,
            "us" => set_once(&mut self.unmodified_since, name, timestamp(name, value)?)?,
            "exb" => set_once(&mut self.expire_before, name, timestamp(name, value)?)?,
            "exa" => set_once(&mut self.expire_after, name, timestamp(name, value)?)?,
            "sts" => set_once(&mut self.state_tag_smaller, name, number(name, value, 0)?)?,
            "stb" => set_once(&mut self.state_tag_bigger, name, number(name, value, 0)?)?,
            "sza" => set_once(&mut self.size_above, name, number(name, value, 0)?)?,
            "szb" => set_once(&mut self.size_below, name, number(name, value, 1)?)?,
            "lim" => set_once(&mut self.lim, name, count(name, value)?)?,
            "lvl" => set_once(&mut self.lvl, name, count(name, value)?)?,
            "ofst" => set_once(&mut self.ofst, name, count(name, value)?)?,
            "arp" => {
                let elements_ok = !value.is_empty()
                    && value.split('/').all(|element| {
                        !element.is_empty() && element != "." && element != ".." && crate::id::is_unreserved(element)
                    });
                if !elements_ok {
                    return Err(invalid(name, value, "a relative path of resource names like sub/la"));
                }
                set_once(&mut self.arp, name, value.to_string())?;
            }
            _ if UNSUPPORTED.contains(&name) => {
                return Err(Error::not_implemented(format!("filter criterion {name} is not supported")));
            }
            _ if is_attribute(name) => self.attributes.push((name.to_string(), value.to_string())),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Does `resource` satisfy the criteria? With no condition, everything does.
    pub fn matches(&self, resource: &Resource) -> bool {
        let held = self.held(resource);
        let true_count = held.iter().filter(|holds| **holds).count();
        match self.fo {
            _ if held.is_empty() => true,
            FilterOperation::And => true_count == held.len(),
            FilterOperation::Or => true_count > 0,
            FilterOperation::Xor => true_count % 2 == 1,
        }
    }

    /// Whether each condition that is set holds for `resource`. A resource without the
    /// attribute a condition is about does not satisfy it.
    fn held(&self, resource: &Resource) -> Vec<bool> {
        let mut held = Vec::new();
        if !self.ty.is_empty() {
            held.push(self.ty.contains(&u64::from(resource.ty.code())));
        }
        if !self.lbl.is_empty() {
            held.push(resource.str_list("lbl").iter().any(|label| self.lbl.contains(label)));
        }
        if !self.cty.is_empty() {
            let cnf = resource.str("cnf").filter(|_| resource.ty == ResourceType::Cin);
            held.push(cnf.is_some_and(|cnf| {
                let media = cnf.split(':').next().unwrap_or(cnf);
                self.cty.iter().any(|cty| cty == cnf || cty == media)
            }));
        }
        let time = |name: &str| resource.str(name).and_then(Timestamp::parse);
        let times = [
            ("ct", self.created_before, std::cmp::Ordering::Less),
            ("ct", self.created_after, std::cmp::Ordering::Greater),
            ("lt", self.modified_since, std::cmp::Ordering::Greater),
            ("lt", self.unmodified_since, std::cmp::Ordering::Less),
            ("et", self.expire_before, std::cmp::Ordering::Less),
            ("et", self.expire_after, std::cmp::Ordering::Greater),
        ];
        for (name, bound, wanted) in times {
            if let Some(bound) = bound {
                held.push(time(name).is_some_and(|time| time.cmp(&bound) == wanted));
            }
        }
        let number = |name: &str| resource.u64(name);
        if let Some(bound) = self.state_tag_smaller {
            held.push(number("st").is_some_and(|st| st < bound));
        }
        if let Some(bound) = self.state_tag_bigger {
            held.push(number("st").is_some_and(|st| st > bound));
        }
        if let Some(bound) = self.size_above {
            held.push(number("cs").is_some_and(|cs| cs >= bound));
        }
        if let Some(bound) = self.size_below {
            held.push(number("cs").is_some_and(|cs| cs < bound));
        }
        for (name, value) in &self.attributes {
            held.push(resource.attributes.get(name).is_some_and(|attribute| attribute_matches(attribute, value)));
        }
        held
    }
}

/// An attribute criterion: a string equal to the value, or matching it as a wildcard
/// pattern (`*`, `?`); a number or boolean written as the value; a list with an element
/// that matches.
fn attribute_matches(attribute: &Value, value: &str) -> bool {
    match attribute {
        Value::String(text) if value.contains(['*', '?']) => wildmatch::WildMatch::new(value).matches(text),
        Value::String(text) => text == value,
        Value::Number(number) => number.to_string() == value,
        Value::Bool(flag) => flag.to_string() == value,
        Value::Array(items) => items.iter().any(|item| attribute_matches(item, value)),
        Value::Null | Value::Object(_) => false,
    }
}

/// Is `name` an attribute of a resource type this CSE hosts?
fn is_attribute(name: &str) -> bool {
    ResourceType::ALL.into_iter().any(|ty| policy_of(ty, name).is_some())
}

/// The values of a multi-valued criterion: separated by `+` or spaces.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split([' ', '+']).filter(|item| !item.is_empty())
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<()> {
    if slot.is_some() {
        return Err(Error::bad_request(format!("filter criterion {name} is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

fn invalid(name: &str, value: &str, expected: &str) -> Error {
    Error::bad_request(format!("filter criterion {name} has an invalid value {value:?}: expected {expected}"))
}

fn timestamp(name: &str, value: &str) -> Result<Timestamp> {
    Timestamp::parse(value).ok_or_else(|| invalid(name, value, "a timestamp like 20301231T235959"))
}

fn number(name: &str, value: &str, min: u64) -> Result<u64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|number| *number >= min)
        .ok_or_else(|| invalid(name, value, if min == 0 { "a non-negative integer" } else { "a positive integer" }))
}

/// A positive count (`lim`, `lvl`, `ofst`).
fn count(name: &str, value: &str) -> Result<usize> {
    let number = number(name, value, 1)?;
    usize::try_from(number).map_err(|_| invalid(name, value, "a smaller positive integer"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(ty: ResourceType, attributes: Value) -> Resource {
        let Value::Object(attributes) = attributes else { unreachable!("test attributes are objects") };
        Resource { ty, attributes, path: "cse-in/x".into(), creator: None }
    }

    fn criteria(parameters: &[(&str, &str)]) -> FilterCriteria {
        let mut filter = FilterCriteria::default();
        for (name, value) in parameters {
            assert!(filter.set(name, value).expect("valid"), "{name} is a criterion");
        }
        filter
    }

    #[test]
    fn state_tags_and_sizes_compare_as_the_standard_says() {
        let cin = resource(ResourceType::Cin, json!({"st": 5, "cs": 10}));
        assert!(criteria(&[("sts", "6")]).matches(&cin), "st smaller than 6");
        assert!(!criteria(&[("sts", "5")]).matches(&cin));
        assert!(criteria(&[("stb", "4")]).matches(&cin), "st bigger than 4");
        assert!(criteria(&[("sza", "10"), ("szb", "11")]).matches(&cin), "sza inclusive, szb strict");
        assert!(!criteria(&[("szb", "10")]).matches(&cin));
        let container = resource(ResourceType::Cnt, json!({"st": 5}));
        assert!(!criteria(&[("sza", "0")]).matches(&container), "no content size, no match");
    }

    #[test]
    fn times_are_compared_as_times() {
        let cnt = resource(ResourceType::Cnt, json!({"ct": "20260101T000000,000000", "lt": "20260601T000000,000000"}));
        assert!(criteria(&[("cra", "20251231T235959")]).matches(&cnt));
        assert!(!criteria(&[("cra", "20260101T000000")]).matches(&cnt), "strictly after");
        assert!(criteria(&[("crb", "20260101T000001")]).matches(&cnt));
        assert!(criteria(&[("ms", "20260501T000000"), ("us", "20260701T000000")]).matches(&cnt));
        assert!(!criteria(&[("exb", "20990101T000000")]).matches(&cnt), "no expiration time, no match");
    }

    #[test]
    fn filter_operations_combine_the_criteria() {
        let cnt = resource(ResourceType::Cnt, json!({"lbl": ["a"], "rn": "temp1"}));
        let and = criteria(&[("ty", "3"), ("lbl", "b")]);
        assert!(!and.matches(&cnt));
        assert!(criteria(&[("ty", "3"), ("lbl", "b"), ("fo", "2")]).matches(&cnt));
        assert!(criteria(&[("ty", "3"), ("lbl", "b"), ("fo", "3")]).matches(&cnt), "exactly one holds");
        assert!(!criteria(&[("ty", "3"), ("lbl", "a"), ("fo", "3")]).matches(&cnt), "both hold");
        assert!(criteria(&[("ty", "4+3")]).matches(&cnt), "several values: any of them");
        assert!(criteria(&[("rn", "temp*")]).matches(&cnt));
        assert!(!criteria(&[("rn", "temp")]).matches(&cnt));
        assert!(FilterCriteria::default().matches(&cnt));
        assert!(criteria(&[("fo", "2")]).matches(&cnt), "no condition: everything");
    }

    #[test]
    fn invalid_and_unsupported_values_are_refused_naming_the_criterion() {
        for (name, value) in [
            ("fo", "4"),
            ("fu", "0"),
            ("szb", "-1"),
            ("szb", "0"),
            ("lim", "0"),
            ("ofst", "0"),
            ("lvl", "-1"),
            ("cra", "yesterday"),
            ("ty", "999"),
            ("arp", "../x"),
            ("arp", "/abs"),
        ] {
            let error = FilterCriteria::default().set(name, value).expect_err(name);
            assert_eq!(error.rsc, crate::error::Rsc::BadRequest, "{name}={value}");
            assert!(error.dbg.contains(name), "{}", error.dbg);
        }
        let error = FilterCriteria::default().set("lbq", "x").expect_err("lbq");
        assert_eq!(error.rsc, crate::error::Rsc::NotImplemented);
        let mut twice = criteria(&[("lim", "1")]);
        assert!(twice.set("lim", "2").is_err());
        assert!(!FilterCriteria::default().set("nonsense", "1").expect("not a criterion"));
    }
}
