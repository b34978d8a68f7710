//! What a write changes, matched against the subscriptions inside its transaction: every
//! notification it causes goes into the outbox in the same commit as the change, or not
//! at all. Called by the operations for requests, by `types::remove` for every deletion
//! (request, expiry, `dcnt`, the manager) and by the manager's own writes.

use serde_json::{Map, Value, json};

use crate::core::types::{events_of, remove};
use crate::error::Result;
use crate::resource::{Resource, ResourceType, Timestamp, random_id};
use crate::storage::{Pending, WriteTx};

/// Length of a notification's request ID.
const RQI_LENGTH: usize = 12;

/// Event types (`net`).
const UPDATE: u64 = 1;
const DELETE: u64 = 2;
const CHILD_CREATED: u64 = 3;
const CHILD_DELETED: u64 = 4;

/// `child` was created under `parent`: the parent's subscriptions to created children
/// (the new subscription itself aside) are notified.
pub(crate) fn created(
    tx: &mut dyn WriteTx,
    parent: &Resource,
    child: &Resource,
    originator: Option<&str>,
) -> Result<()> {
    let event = Event { net: CHILD_CREATED, subject: child, modified: None, originator, skip: Some(child.ri()) };
    notify(tx, parent, &event)
}

/// `after` was updated from `before` by a request that sent `sent` (or by this CSE, with
/// `sent` empty): its subscriptions to updates are notified. The modified attributes are
/// those sent (even with the same value), those whose value changed or went, and `lt`.
pub(crate) fn updated(
    tx: &mut dyn WriteTx,
    before: &Resource,
    after: &Resource,
    sent: &Map<String, Value>,
    originator: Option<&str>,
) -> Result<()> {
    let mut modified = Map::new();
    for (name, value) in &after.attributes {
        if sent.contains_key(name) || before.attributes.get(name) != Some(value) || name == "lt" {
            modified.insert(name.clone(), value.clone());
        }
    }
    for name in before.attributes.keys().filter(|name| !after.attributes.contains_key(*name)) {
        modified.insert(name.clone(), Value::Null);
    }
    let event = Event { net: UPDATE, subject: after, modified: Some(&modified), originator, skip: None };
    notify(tx, after, &event)
}

/// `resource` is about to be deleted with its subtree: the subscriptions to the deleted
/// resources' deletion are notified, every subscription that goes with them sends its
/// deletion notification (`su`), then the parent's subscriptions to deleted children.
pub(crate) fn deleting(tx: &mut dyn WriteTx, resource: &Resource) -> Result<()> {
    let subscriptions = match resource.ty {
        ResourceType::Sub => vec![resource.clone()],
        ResourceType::Cin => Vec::new(),
        _ => tx.of_type_below(&resource.path, ResourceType::Sub)?,
    };
    let now = Timestamp::now().to_string();
    for subscription in &subscriptions {
        let with_its_resource = subscription.ri() != resource.ri();
        if with_its_resource
            && live(subscription, &now)
            && events_of(subscription.attributes.get("enc")).contains(&DELETE)
            && let Some(subject) = tx.get(subscription.pi())?
        {
            let event = Event { net: DELETE, subject: &subject, modified: None, originator: None, skip: None };
            send(tx, subscription.clone(), &event)?;
        }
        // What its batches hold goes out now, before its deletion notification.
        tx.release_batch(subscription.ri(), None, &now)?;
        if let Some(su) = subscription.str("su") {
            let mut sgn = json!({"sud": true});
            if let Some(cr) = subscription.str("cr") {
                sgn["cr"] = json!(cr);
            }
            enqueue(tx, su, subscription.ri(), json!({ "m2m:sgn": sgn }), None)?;
        }
    }
    if let Some(parent) = tx.get(resource.pi())? {
        let event = Event {
            net: CHILD_DELETED,
            subject: resource,
            modified: None,
            originator: None,
            skip: Some(resource.ri()),
        };
        notify(tx, &parent, &event)?;
    }
    Ok(())
}

/// One event on a subscribed-to resource.
struct Event<'a> {
    net: u64,
    /// The resource the representation shows: the subscribed-to resource, or the child.
    subject: &'a Resource,
    /// For an update: the modified attributes.
    modified: Option<&'a Map<String, Value>>,
    /// Who caused it (a request's originator), for `eeno`.
    originator: Option<&'a str>,
    /// A subscription not to notify (one about itself).
    skip: Option<&'a str>,
}

/// Notify the subscriptions of `on` that ask for `event`.
fn notify(tx: &mut dyn WriteTx, on: &Resource, event: &Event) -> Result<()> {
    if matches!(on.ty, ResourceType::Sub | ResourceType::Cin) {
        return Ok(());
    }
    let now = Timestamp::now().to_string();
    // Once a subscription went at the end of its `exc`, the deletion was an event too and may
    // have counted the others down or removed them: from then on each is read again.
    let mut cascaded = false;
    for listed in tx.children(on.ri(), Some(ResourceType::Sub))? {
        let subscription = match cascaded {
            true => match tx.get(listed.ri())? {
                Some(subscription) => subscription,
                None => continue,
            },
            false => listed,
        };
        if event.skip == Some(subscription.ri()) || !live(&subscription, &now) || !wants(&subscription, event) {
            continue;
        }
        let subscription = send(tx, subscription, event)?;
        cascaded |= count_down(tx, subscription)?;
    }
    Ok(())
}

/// Not expired at `now` (the expiry sweep may not have run yet).
fn live(subscription: &Resource, now: &str) -> bool {
    subscription.et().is_none_or(|et| et > now)
}

/// Does `subscription` ask for `event` (its `net`, `atr` and `chty`)?
fn wants(subscription: &Resource, event: &Event) -> bool {
    let enc = subscription.attributes.get("enc");
    if !events_of(enc).contains(&event.net) {
        return false;
    }
    let listed =
        |name: &str| enc.and_then(|enc| enc.get(name)).and_then(Value::as_array).filter(|list| !list.is_empty());
    match event.net {
        UPDATE => listed("atr").is_none_or(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .any(|name| event.modified.is_some_and(|modified| modified.contains_key(name)))
        }),
        CHILD_CREATED | CHILD_DELETED => listed("chty").is_none_or(|types| {
            types.iter().filter_map(Value::as_u64).any(|code| code == u64::from(event.subject.ty.code()))
        }),
        _ => true,
    }
}

/// Put the notification of `event` for every target of `subscription` in the outbox.
/// Returns the subscription as stored now (its statistics counted).
fn send(tx: &mut dyn WriteTx, subscription: Resource, event: &Event) -> Result<Resource> {
    let subject = event.subject;
    let rep = match subscription.u64("nct").unwrap_or(1) {
        2 => json!({ subject.ty.wrapper(): event.modified.cloned().unwrap_or_default() }),
        3 => json!({ "m2m:uri": subject.ri() }),
        _ => subject.to_json(),
    };
    let mut sgn = json!({"nev": {"net": event.net, "rep": rep}});
    let eeno = subscription.attributes.get("eeno") == Some(&Value::Bool(true));
    if let Some(cr) = subscription.str("cr").or(event.originator.filter(|_| eeno)) {
        sgn["cr"] = json!(cr);
    }
    let content = json!({ "m2m:sgn": sgn });
    let subscription = count_event(tx, subscription)?;
    let batch = subscription.attributes.get("bn").and_then(Batch::of);
    for target in subscription.str_list("nu") {
        let Some(batch) = &batch else {
            enqueue(tx, &target, subscription.ri(), content.clone(), None)?;
            continue;
        };
        // Held with the rest of its batch: due when the first of it has waited `dur`,
        // or at once when it is full.
        let (held, due) = tx.outbox_batch(&target, subscription.ri())?;
        let due = due.unwrap_or_else(|| Timestamp::now().saturating_add(batch.window).to_string());
        enqueue(tx, &target, subscription.ri(), content.clone(), Some(due))?;
        if batch.size > 0 && held + 1 >= batch.size {
            tx.release_batch(subscription.ri(), Some(&target), &Timestamp::now().to_string())?;
        }
    }
    Ok(subscription)
}

/// A subscription's `bn`: how many notifications a batch holds (0: no limit), and how long
/// the first of them waits at most.
struct Batch {
    size: usize,
    window: std::time::Duration,
}

impl Batch {
    fn of(bn: &Value) -> Option<Batch> {
        let size = bn.get("num").and_then(Value::as_u64).unwrap_or(0);
        let window = bn.get("dur").and_then(Value::as_str).and_then(crate::core::types::batch_window)?;
        Some(Batch { size: usize::try_from(size).unwrap_or(usize::MAX), window })
    }
}

/// With `nse`: one more event for each target (`noec`), counted in the stored subscription.
fn count_event(tx: &mut dyn WriteTx, mut subscription: Resource) -> Result<Resource> {
    if subscription.attributes.get("nse") != Some(&Value::Bool(true)) {
        return Ok(subscription);
    }
    for target in subscription.str_list("nu") {
        add_statistics(&mut subscription, &target, 0, 0, 1);
    }
    tx.update(&subscription)?;
    Ok(subscription)
}

/// Add to the statistics (`nsi`) of `subscription` for `target`: requests sent,
/// responses received, events.
pub(crate) fn add_statistics(subscription: &mut Resource, target: &str, requests: u64, responses: u64, events: u64) {
    let nsi = subscription.attributes.entry("nsi").or_insert_with(|| json!([]));
    let Some(entries) = nsi.as_array_mut() else { return };
    let index = match entries.iter().position(|entry| entry["tg"] == target) {
        Some(index) => index,
        None => {
            entries.push(json!({"tg": target, "rqs": 0, "rsr": 0, "noec": 0}));
            entries.len() - 1
        }
    };
    let entry = &mut entries[index];
    for (name, add) in [("rqs", requests), ("rsr", responses), ("noec", events)] {
        entry[name] = json!(entry[name].as_u64().unwrap_or(0) + add);
    }
}

/// One event notified: `exc` counts down; at the last one the subscription goes (with
/// its deletion notification).
/// Returns whether it went.
fn count_down(tx: &mut dyn WriteTx, mut subscription: Resource) -> Result<bool> {
    match subscription.u64("exc") {
        Some(0 | 1) => remove(tx, &subscription).map(|()| true),
        Some(left) => {
            subscription.set("exc", left - 1);
            tx.update(&subscription).map(|()| false)
        }
        None => Ok(false),
    }
}

/// Put one notification in the outbox: due now, or held in a batch until `batch_due`.
fn enqueue(
    tx: &mut dyn WriteTx,
    target: &str,
    subscription: &str,
    content: Value,
    batch_due: Option<String>,
) -> Result<()> {
    let now = Timestamp::now().to_string();
    tx.enqueue(&Pending {
        seq: 0,
        target: target.to_string(),
        subscription: subscription.to_string(),
        rqi: random_id(RQI_LENGTH),
        content,
        created: now.clone(),
        batch: batch_due.is_some(),
        due: batch_due.unwrap_or(now),
        attempts: 0,
    })
}
