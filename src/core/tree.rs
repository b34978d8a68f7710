//! Lookups and values over the stored tree that every operation shares: finding a target,
//! the `et` a resource may have, `acpi` references resolved to ACPs. Run inside a storage
//! transaction; no async.

use std::time::Duration;

use serde_json::Value;

use crate::core::address::{Identity, LocalId, Target};
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType, Timestamp};
use crate::storage::ReadTx;

/// Find the target resource; 4004 when it does not exist.
pub(crate) fn locate(tx: &dyn ReadTx, id: &LocalId) -> Result<Resource> {
    let found = match id {
        LocalId::Structured(path) => tx.get_by_path(path)?,
        LocalId::Unstructured(ri) => tx.get(ri)?,
    };
    found.ok_or_else(|| {
        let id = match id {
            LocalId::Structured(path) | LocalId::Unstructured(path) => path,
        };
        Error::not_found(format!("resource {id} does not exist"))
    })
}

/// The `et` of a new or updated resource: the requested one, clipped to the parent's (for a
/// non-CSEBase parent) and to the maximum; the default is the parent's or the maximum.
pub(crate) fn expiration(
    requested: Option<&Value>,
    parent: Option<&Resource>,
    max_delta: Duration,
) -> Result<Timestamp> {
    let now = Timestamp::now();
    let max = now.saturating_add(max_delta);
    let parent_et = parent
        .filter(|parent| parent.ty != ResourceType::CseBase)
        .and_then(|parent| parent.et())
        .and_then(Timestamp::parse);
    let limit = parent_et.map_or(max, |parent_et| parent_et.min(max));
    let Some(requested) = requested.and_then(Value::as_str) else {
        return Ok(limit);
    };
    let requested = Timestamp::parse(requested)
        .ok_or_else(|| Error::bad_request(format!("et {requested:?} is not a timestamp (YYYYMMDDTHHMMSS)")))?;
    if requested < now {
        return Err(Error::bad_request("et is in the past"));
    }
    Ok(requested.min(limit))
}

/// Resolve `acpi` entries to the `ri`s of existing ACPs (4000 when one is not an ACP).
pub(crate) fn resolve_acpi(tx: &dyn ReadTx, identity: &Identity, value: &Value) -> Result<Value> {
    let mut resolved = Vec::new();
    for entry in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
        let acp = match identity.resolve(entry) {
            Ok(Target::Local(target)) if target.virtual_child.is_none() => match locate(tx, &target.id) {
                Ok(resource) => Some(resource),
                Err(error) if error.rsc == Rsc::NotFound => None,
                Err(error) => return Err(error),
            },
            _ => None,
        };
        match acp {
            Some(acp) if acp.ty == ResourceType::Acp => resolved.push(Value::String(acp.ri().to_string())),
            _ => {
                return Err(Error::bad_request(format!("acpi entry {entry} is not an existing accessControlPolicy")));
            }
        }
    }
    Ok(Value::Array(resolved))
}
