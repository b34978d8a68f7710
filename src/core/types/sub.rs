//! `<subscription>` (ty 23): who is told (`nu`) about which events (`enc`) on its parent,
//! in which form (`nct`), how many times (`exc`), and who hears of its deletion (`su`).
//!
//! What this CSE serves is checked here and nothing else is taken: events 1–4 (update,
//! delete, child created, child deleted) with the `atr` and `chty` filters, `nct` 1–3,
//! `exc`, `su`, `cr`, `eeno`, batches (`bn`, `ln`), statistics (`nse`, `nsi`). Everything else the standard defines (blocking update,
//! operation monitoring, batches, statistics, the other filters) is refused with a reason
//! naming it, never stored to be ignored. The notifications themselves are made in
//! `core::notify`.

use serde_json::{Map, Value, json};

use super::{Context, Draft, TypeRules, policy, random_identity, regular};
use crate::error::{Error, Result};
use crate::resource::{AttrKind, Need, Policy, Resource, ResourceType};
use crate::security::HostPattern;
use crate::storage::ReadTx;

pub(super) struct Sub;

/// The events served: resourceUpdate, resourceDelete, createDirectChild,
/// deleteDirectChild, and (alone) blockingUpdate.
const SERVED_EVENTS: [u64; 4] = [1, 2, 3, 4];
pub(crate) const BLOCKING_UPDATE: u64 = 7;

/// What a blocking-update subscription may not carry.
const NOT_WITH_BLOCKING: [&str; 11] = ["exc", "gpi", "nfu", "bn", "rl", "psn", "pn", "nsp", "ln", "nec", "acrs"];

/// `enc` members taken; the filters of the standard not listed here are refused.
const ENC_MEMBERS: [&str; 3] = ["net", "atr", "chty"];

/// Attributes of the standard this CSE does not serve (yet): refused when set.
const NOT_SERVED: [(&str, &str); 2] =
    [("acrs", "cross-resource subscriptions (acrs)"), ("nfu", "notification forwarding (nfu)")];

impl TypeRules for Sub {
    fn policy(&self, name: &str) -> Option<Policy> {
        use AttrKind::*;
        use Need::{NotPermitted as NP, Optional as O};
        match name {
            "nu" => policy(NonEmptyStrList, O, O),
            "enc" | "rl" => policy(Object, O, O),
            "nct" | "exc" | "nsp" => policy(PosInt, O, O),
            "psn" => policy(PosInt, O, NP),
            "su" => policy(Str, O, NP),
            "cr" => policy(NullOnly, O, NP),
            "nsi" => policy(Any, NP, NP),
            "eeno" | "nse" | "ln" => policy(Bool, O, O),
            "nec" | "pn" => policy(NonNegInt, O, O),
            "bn" => policy(Object, O, O),
            "acrs" => policy(StrList, O, O),
            "nfu" | "gpi" => policy(Str, O, O),
            "acpi" | "daci" => policy(NonEmptyStrList, O, O),
            "cstn" => policy(Str, O, O),
            "at" | "aa" | "ast" => None,
            _ => regular(name),
        }
    }

    fn mandatory(&self) -> &'static [&'static str] {
        &["nu"]
    }

    fn check_body(&self, attributes: &Map<String, Value>, create: bool) -> Result<()> {
        for (name, what) in NOT_SERVED {
            let set = attributes.get(name).is_some_and(|value| !value.is_null() && *value != Value::Bool(false));
            if set {
                return Err(Error::bad_request(format!("{what} is not supported by this CSE")));
            }
        }
        if !create {
            for name in ["nu", "nct"] {
                if attributes.get(name).is_some_and(Value::is_null) {
                    return Err(Error::bad_request(format!("{name} cannot be removed from a subscription")));
                }
            }
        }
        if let Some(entries) = attributes.get("nu").and_then(Value::as_array)
            && entries.iter().any(|entry| entry.as_str().is_none_or(|entry| entry.trim_end_matches('/').is_empty()))
        {
            return Err(Error::bad_request("nu entries must be non-empty URLs or IDs"));
        }
        if let Some(enc) = attributes.get("enc").filter(|enc| !enc.is_null()) {
            check_enc(enc)?;
        }
        if let Some(bn) = attributes.get("bn").filter(|bn| !bn.is_null()) {
            check_batch(bn)?;
        }
        if create && attributes.get("ln") == Some(&Value::Bool(true)) && attributes.get("bn").is_none_or(Value::is_null)
        {
            return Err(Error::bad_request("ln (latest notify) needs bn (batch notify)"));
        }
        if let Some(nct) = attributes.get("nct").and_then(Value::as_u64) {
            match nct {
                1..=3 => {}
                4 => return Err(Error::bad_request("nct 4 (trigger payload) is not supported by this CSE")),
                5 => return Err(Error::bad_request("nct 5 (time-series notification) is not supported by this CSE")),
                other => return Err(Error::bad_request(format!("nct {other} is not a notification content type"))),
            }
        }
        let events = events_of(attributes.get("enc"));
        if events.contains(&BLOCKING_UPDATE) {
            if !create {
                return Err(Error::bad_request(
                    "enc.net 7 (blocking update) is set when the subscription is created only",
                ));
            }
            check_blocking(attributes, &events)?;
        }
        if create && let Some(nct) = attributes.get("nct").and_then(Value::as_u64) {
            check_grid(nct, &events)?;
        }
        Ok(())
    }

    /// `chty` names types its parent takes as children; one blocking update per parent;
    /// URL targets name allowed hosts.
    fn check_create(&self, tx: &dyn ReadTx, ctx: &Context, parent: &Resource, draft: &Draft) -> Result<()> {
        check_target_hosts(&ctx.config.subscription.allowed_target_hosts, &draft.attributes)?;
        check_child_types(draft.attributes.get("enc"), parent.ty)?;
        if events_of(draft.attributes.get("enc")).contains(&BLOCKING_UPDATE) {
            let taken = tx
                .children(parent.ri(), Some(ResourceType::Sub))?
                .iter()
                .any(|other| events_of(other.attributes.get("enc")).contains(&BLOCKING_UPDATE));
            if taken {
                return Err(Error::bad_request(format!("{} already has a blocking-update subscription", parent.ri())));
            }
        }
        Ok(())
    }

    /// A verification request goes out before the SUB is stored, naming it: its `ri` may
    /// be chosen beforehand.
    fn identify(&self, tx: &dyn ReadTx, draft: &mut Draft) -> Result<(String, String)> {
        let (ri, rn) = random_identity(tx, draft)?;
        match draft.ri.clone() {
            Some(chosen) => {
                let rn = if draft.attributes.contains_key("rn") { rn } else { chosen.clone() };
                Ok((chosen, rn))
            }
            None => Ok((ri, rn)),
        }
    }

    /// Defaults: `enc` `{"net": [1]}`, `nct` from the first event (1 for events 1–4);
    /// trailing `/` of the targets removed.
    fn complete(&self, ctx: &Context, _parent: &Resource, draft: &mut Draft) -> Result<()> {
        let attributes = &mut draft.attributes;
        if attributes.get("enc").is_none_or(Value::is_null) {
            attributes.insert("enc".into(), json!({"net": [1]}));
        }
        let blocking = events_of(attributes.get("enc")).contains(&BLOCKING_UPDATE);
        attributes.entry("nct").or_insert(json!(if blocking { 2 } else { 1 }));
        normalize_targets(attributes);
        default_batch_window(attributes, ctx.config.subscription.batch_duration);
        Ok(())
    }

    fn check_update(&self, tx: &dyn ReadTx, ctx: &Context, sub: &Resource, changes: &Map<String, Value>) -> Result<()> {
        check_target_hosts(&ctx.config.subscription.allowed_target_hosts, changes)?;
        let enc = match changes.get("enc") {
            Some(Value::Null) => json!({"net": [1]}),
            Some(enc) => enc.clone(),
            None => sub.attributes.get("enc").cloned().unwrap_or_else(|| json!({"net": [1]})),
        };
        let nct = changes.get("nct").or_else(|| sub.attributes.get("nct")).and_then(Value::as_u64).unwrap_or(1);
        if events_of(sub.attributes.get("enc")).contains(&BLOCKING_UPDATE)
            && (changes.contains_key("enc") || changes.contains_key("nu"))
        {
            return Err(Error::bad_request("a blocking-update subscription keeps its enc and its one target"));
        }
        check_grid(nct, &events_of(Some(&enc)))?;
        if changes.contains_key("enc") {
            let parent = tx.get(sub.pi())?.ok_or_else(|| Error::not_found("the subscribed-to resource is gone"))?;
            check_child_types(Some(&enc), parent.ty)?;
        }
        Ok(())
    }

    fn after_update(
        &self,
        _tx: &mut dyn crate::storage::WriteTx,
        ctx: &Context,
        sub: &mut Resource,
        _before: &Resource,
        changes: &Map<String, Value>,
    ) -> Result<()> {
        if changes.get("enc").is_some_and(Value::is_null) {
            sub.attributes.insert("enc".into(), json!({"net": [1]}));
        }
        // Statistics: switched on, they start afresh; removed, they go.
        match changes.get("nse") {
            Some(Value::Bool(true)) | Some(Value::Null) => {
                sub.attributes.remove("nsi");
            }
            _ => {}
        }
        normalize_targets(&mut sub.attributes);
        default_batch_window(&mut sub.attributes, ctx.config.subscription.batch_duration);
        Ok(())
    }
}

/// A `bn`: `num` a non-negative count, `dur` an ISO 8601 duration of at least a second.
fn check_batch(bn: &Value) -> Result<()> {
    let Some(members) = bn.as_object() else {
        return Err(Error::bad_request("bn must be an object {num, dur}"));
    };
    if let Some(name) = members.keys().find(|name| !matches!(name.as_str(), "num" | "dur")) {
        return Err(Error::bad_request(format!("bn.{name} is not a member of batchNotify (num, dur)")));
    }
    if members.get("num").is_some_and(|num| !num.is_u64()) {
        return Err(Error::bad_request("bn.num must be a non-negative integer"));
    }
    if let Some(dur) = members.get("dur") {
        let window = dur.as_str().and_then(batch_window);
        if window.is_none_or(|window| window < std::time::Duration::from_secs(1)) {
            return Err(Error::bad_request(format!(
                "bn.dur {dur} must be an ISO 8601 duration of at least a second, like \"PT5S\""
            )));
        }
    }
    Ok(())
}

/// An ISO 8601 duration (`PT5S`, `PT1M30S`, `P1D`), whole.
pub(crate) fn batch_window(text: &str) -> Option<std::time::Duration> {
    match iso8601::parsers::parse_duration(text.as_bytes()) {
        Ok((&[], duration)) => Some(duration.into()),
        _ => None,
    }
}

/// A `bn` without `dur` waits `resource.sub.batch_duration`.
fn default_batch_window(attributes: &mut Map<String, Value>, window: std::time::Duration) {
    if let Some(Value::Object(bn)) = attributes.get_mut("bn") {
        bn.entry("dur").or_insert_with(|| json!(format!("PT{}S", window.as_secs().max(1))));
    }
}

/// URL targets (`nu`, `su`) must name a host of `resource.sub.allowed_target_hosts`, when
/// that is set: a subscriber must not make this CSE call anything it can reach.
pub(crate) fn check_target_hosts(allowed: &[HostPattern], attributes: &Map<String, Value>) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    let targets = attributes.get("nu").and_then(Value::as_array).into_iter().flatten().chain(attributes.get("su"));
    for target in targets.filter_map(Value::as_str) {
        let Ok(url) = url::Url::parse(target) else { continue };
        if !allowed.iter().any(|pattern| pattern.matches(&url)) {
            return Err(Error::bad_request(format!(
                "notification target {target:?} names a host this CSE does not notify (resource.sub.allowed_target_hosts)"
            )));
        }
    }
    Ok(())
}

/// The events a subscription's `enc` asks for.
pub(crate) fn events_of(enc: Option<&Value>) -> Vec<u64> {
    match enc.and_then(|enc| enc.get("net")) {
        Some(net) => net.as_array().into_iter().flatten().filter_map(Value::as_u64).collect(),
        None => vec![1],
    }
}

fn check_enc(enc: &Value) -> Result<()> {
    let Some(members) = enc.as_object() else {
        return Err(Error::bad_request("enc must be an object (eventNotificationCriteria)"));
    };
    for name in members.keys() {
        if !ENC_MEMBERS.contains(&name.as_str()) {
            let what = match name.as_str() {
                "om" => "operation monitoring (enc.om)".to_string(),
                "md" => "missing-data notifications (enc.md)".to_string(),
                other => format!("the filter enc.{other}"),
            };
            return Err(Error::bad_request(format!("{what} is not supported by this CSE")));
        }
    }
    if let Some(net) = members.get("net") {
        let Some(events) = net.as_array() else {
            return Err(Error::bad_request("enc.net must be a list of event types"));
        };
        for event in events {
            match event.as_u64() {
                Some(event) if SERVED_EVENTS.contains(&event) || event == BLOCKING_UPDATE => {}
                Some(event @ 5..=10) => {
                    return Err(Error::bad_request(format!(
                        "enc.net {event} ({}) is not served by this CSE (served: 1 update, 2 delete, 3 child created, 4 child deleted, 7 blocking update)",
                        event_name(event)
                    )));
                }
                _ => return Err(Error::bad_request(format!("enc.net {event} is not an event type"))),
            }
        }
    }
    for (name, what) in [("atr", "attribute names"), ("chty", "resource types")] {
        if let Some(list) = members.get(name) {
            let valid = list.as_array().is_some_and(|items| {
                items.iter().all(|item| if name == "atr" { item.is_string() } else { item.is_u64() })
            });
            if !valid {
                return Err(Error::bad_request(format!("enc.{name} must be a list of {what}")));
            }
        }
    }
    Ok(())
}

fn event_name(event: u64) -> &'static str {
    match event {
        5 => "retrieve of a container without child",
        6 => "trigger received for an AE",
        8 => "missing data points",
        9 => "blocking retrieve",
        _ => "blocking retrieve of a direct child",
    }
}

/// A blocking update is alone: `net` `[7]`, one target, `enc` with `net` and `atr` only,
/// `nct` 2, none of the batch and rate attributes.
fn check_blocking(attributes: &Map<String, Value>, events: &[u64]) -> Result<()> {
    let refuse = |why: &str| Err(Error::bad_request(format!("a blocking-update subscription (enc.net 7) {why}")));
    if events != [BLOCKING_UPDATE] {
        return refuse("has no other event");
    }
    if attributes.get("nu").and_then(Value::as_array).is_none_or(|targets| targets.len() != 1) {
        return refuse("has exactly one target (nu)");
    }
    if let Some(name) =
        NOT_WITH_BLOCKING.iter().find(|name| attributes.get(**name).is_some_and(|value| !value.is_null()))
    {
        return refuse(&format!("takes no {name}"));
    }
    let enc = attributes.get("enc").and_then(Value::as_object);
    if enc.is_some_and(|enc| enc.keys().any(|name| name != "net" && name != "atr")) {
        return refuse("filters by enc.atr only");
    }
    Ok(())
}

/// `nct` must fit every event: 1 and 3 for events 1–4, 2 for updates (blocking or not).
fn check_grid(nct: u64, events: &[u64]) -> Result<()> {
    let fits = |event: &u64| match nct {
        2 => *event == 1 || *event == BLOCKING_UPDATE,
        _ => SERVED_EVENTS.contains(event),
    };
    if let Some(event) = events.iter().find(|event| !fits(event)) {
        return Err(Error::bad_request(format!("nct {nct} does not go with enc.net {event}")));
    }
    Ok(())
}

/// `enc.chty` entries must be types that `parent` takes as children.
pub(crate) fn check_child_types(enc: Option<&Value>, parent: ResourceType) -> Result<()> {
    let types = enc.and_then(|enc| enc.get("chty")).and_then(Value::as_array).into_iter().flatten();
    for code in types.filter_map(Value::as_u64) {
        let allowed = ResourceType::from_code(code).is_some_and(|child| super::allowed_under(child, parent));
        if !allowed {
            return Err(Error::bad_request(format!(
                "enc.chty {code} is not a type of child that a {} takes",
                parent.wrapper()
            )));
        }
    }
    Ok(())
}

fn normalize_targets(attributes: &mut Map<String, Value>) {
    if let Some(Value::Array(entries)) = attributes.get_mut("nu") {
        for entry in entries.iter_mut() {
            if let Some(text) = entry.as_str() {
                *entry = Value::String(text.trim_end_matches('/').to_string());
            }
        }
    }
}
