//! Selecting the resources below a target for a discovery, a conditional retrieval
//! (`rcn` 4, 5, 6, 8) or the answer to a DELETE: the filter criteria, the originator's own
//! access to each resource, `ofst`/`lim`, and the bounds of one answer.
//!
//! The store is walked in path order and the walk stops as soon as the answer is full, so
//! a request never holds more than it returns. What one answer may hold is bounded by
//! count (`cse.max_results`), by size (`cse.max_result_size`, the stored size of the
//! resources it carries, or their addresses for references) and by time (the request's
//! time limit); a result cut short says so, with the offset at which the rest begins.
//! Resources the originator may not see are left out, never the whole answer.

use std::collections::HashSet;
use std::time::Instant;

use crate::core::access::{Access, Permission};
use crate::core::filter::FilterCriteria;
use crate::error::Result;
use crate::resource::{Resource, ResourceType};
use crate::storage::ReadTx;

/// What one answer may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_results: usize,
    pub max_size: usize,
    /// When the walk gives up and answers with what it has.
    pub deadline: Instant,
}

/// What a selected resource costs in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Measure {
    /// Its attributes are carried: its stored size.
    Attributes,
    /// A reference to it is carried: its address.
    Reference,
}

/// The selected resources, in path order.
#[derive(Debug, Default)]
pub(crate) struct Selected {
    /// Whole for [`Measure::Attributes`]; for [`Measure::Reference`] with `ri` and `rn`
    /// only.
    pub resources: Vec<Resource>,
    /// `Some(ofst)` when more resources matched than the answer holds: where the rest begins.
    pub partial: Option<usize>,
}

/// Select what the originator may see (`permission` on each resource) below `root` that
/// the filter criteria match, with `ofst` and `lim` applied, within `bounds`. `arp`
/// applies when `follow_arp` (discovery).
pub(crate) fn select(
    tx: &dyn ReadTx,
    root: &Resource,
    filter: &FilterCriteria,
    guard: &Access,
    permission: Permission,
    measure: Measure,
    bounds: Bounds,
) -> Result<Selected> {
    let first = filter.ofst.unwrap_or(1);
    let limit = filter.lim.map_or(bounds.max_results, |lim| lim.min(bounds.max_results));
    let arp = filter.arp.as_deref().filter(|_| permission == Permission::Discovery);
    // Containers whose instances may not be read (`disr`): their instances are left out.
    let mut hidden: HashSet<String> = HashSet::new();
    if root.bool("disr") == Some(true) {
        hidden.insert(root.ri().to_string());
    }
    let mut seen = HashSet::new();
    let mut selected = Selected::default();
    let mut matched = 0;
    let mut size = 0;
    let mut next = None;
    tx.walk_below(&root.path, filter.lvl, &mut |resource, stored| {
        // Out of time: answer with what was found; the rest may begin after it.
        if Instant::now() >= bounds.deadline {
            next = Some(first + selected.resources.len());
            return Ok(false);
        }
        if resource.bool("disr") == Some(true) {
            hidden.insert(resource.ri().to_string());
        }
        if resource.ty == ResourceType::Cin && hidden.contains(resource.pi()) {
            return Ok(true);
        }
        if !filter.matches(&resource) {
            return Ok(true);
        }
        let (resource, stored) = match arp {
            Some(arp) => match follow(tx, &resource, arp)? {
                Some(target) if seen.insert(target.ri().to_string()) => {
                    let stored = target.path.len();
                    (target, stored)
                }
                _ => return Ok(true),
            },
            None => (resource, stored),
        };
        if !guard.allows(tx, &resource, permission)? {
            return Ok(true);
        }
        matched += 1;
        if matched < first {
            return Ok(true);
        }
        let cost = match measure {
            Measure::Attributes => stored,
            Measure::Reference => resource.path.len() + 16,
        };
        let full =
            selected.resources.len() >= limit || (!selected.resources.is_empty() && size + cost > bounds.max_size);
        if full {
            // More matched than the answer holds: the rest begins after what it holds.
            next = Some(first + selected.resources.len());
            return Ok(false);
        }
        size += cost;
        selected.resources.push(match measure {
            Measure::Attributes => resource,
            Measure::Reference => reference_to(resource),
        });
        Ok(true)
    })?;
    selected.partial = next;
    Ok(selected)
}

/// What a reference needs of a resource (its name, type and address): a discovery of a
/// hundred thousand instances holds their names, not their contents.
fn reference_to(mut resource: Resource) -> Resource {
    resource.attributes.retain(|name, _| matches!(name.as_str(), "ri" | "rn"));
    resource.creator = None;
    resource
}

/// The resource at `arp` below `resource` (`la`/`ol` as the last element: the newest or
/// oldest instance of that container), if there is one.
fn follow(tx: &dyn ReadTx, resource: &Resource, arp: &str) -> Result<Option<Resource>> {
    let (path, edge) = match arp.rsplit_once('/').map_or((None, arp), |(head, last)| (Some(head), last)) {
        (head, "la") => (head, Some(true)),
        (head, "ol") => (head, Some(false)),
        _ => (Some(arp), None),
    };
    let base = match path {
        Some(path) => tx.get_by_path(&format!("{}/{path}", resource.path))?,
        None => Some(resource.clone()),
    };
    match (base, edge) {
        (Some(container), Some(newest)) if container.ty == ResourceType::Cnt => {
            tx.edge_child(container.ri(), ResourceType::Cin, newest)
        }
        (_, Some(_)) => Ok(None),
        (base, None) => Ok(base),
    }
}
