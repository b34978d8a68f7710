//! `<container>` (ty 3): holds content instances within its limits (`mni` instances, `mbs`
//! bytes, `mia` seconds of age), counts them (`cni`, `cbs`) and its changes (`st`), and
//! has the virtual children `la` and `ol` (newest and oldest instance). With `disr` the
//! instances cannot be read; switching it off again removes them.

use serde_json::{Map, Value, json};

use super::{Context, Draft, TypeRules, access_controlled, policy};
use crate::core::address::{LocalId, VirtualChild};
use crate::core::tree::locate;
use crate::error::{Error, Result};
use crate::resource::{AttrKind, Need, Policy, Resource, ResourceType};
use crate::storage::{ReadTx, WriteTx};

pub(super) struct Cnt;

impl TypeRules for Cnt {
    fn policy(&self, name: &str) -> Option<Policy> {
        use AttrKind::*;
        use Need::{NotPermitted as NP, Optional as O};
        match name {
            "cr" => policy(NullOnly, O, NP),
            "st" | "cni" | "cbs" => policy(NonNegInt, NP, NP),
            "mni" | "mbs" => policy(NonNegInt, O, O),
            "mia" => policy(Seconds, O, O),
            "li" => policy(Str, NP, NP),
            "disr" => policy(Bool, O, O),
            "or" => policy(Str, O, O),
            _ => access_controlled(name),
        }
    }

    fn children(&self) -> &'static [ResourceType] {
        &[ResourceType::Cnt, ResourceType::Cin, ResourceType::Sub]
    }

    /// Empty, with the configured default limits (`[cse.container]`) when enabled.
    fn complete(&self, ctx: &Context, _parent: &Resource, draft: &mut Draft) -> Result<()> {
        let attributes = &mut draft.attributes;
        attributes.insert("cni".into(), json!(0));
        attributes.insert("cbs".into(), json!(0));
        attributes.insert("st".into(), json!(0));
        let limits = &ctx.config.container;
        if limits.enable_limits {
            attributes.entry("mni").or_insert(json!(limits.mni));
            attributes.entry("mbs").or_insert(json!(limits.mbs));
        }
        Ok(())
    }

    /// Every update counts in `st`; `disr` switched off removes the instances; lowered
    /// limits evict the oldest instances.
    fn after_update(
        &self,
        tx: &mut dyn WriteTx,
        _ctx: &Context,
        container: &mut Resource,
        before: &Resource,
        changes: &Map<String, Value>,
    ) -> Result<()> {
        container.set("st", container.u64("st").unwrap_or(0) + 1);
        let retrieval_was_disabled = before.bool("disr") == Some(true);
        if retrieval_was_disabled && changes.get("disr") == Some(&Value::Bool(false)) {
            for instance in tx.children(container.ri(), Some(ResourceType::Cin))? {
                tx.delete_subtree(&instance)?;
            }
            container.set("cni", 0);
            container.set("cbs", 0);
        }
        enforce_limits(tx, container)
    }
}

/// The newest or oldest CIN of the container `id` (its `la` or `ol`).
pub(crate) fn edge_instance(tx: &dyn ReadTx, id: &LocalId, which: VirtualChild) -> Result<Resource> {
    let container = locate(tx, id)?;
    if container.ty != ResourceType::Cnt {
        return Err(Error::not_found(format!("{} is not a container: it has no la/ol", container.path)));
    }
    let newest = which == VirtualChild::Latest;
    tx.edge_child(container.ri(), ResourceType::Cin, newest)?
        .ok_or_else(|| Error::not_found(format!("container {} has no content instances", container.path)))
}

/// Delete the oldest CINs of `container` until it is within its `mni` and `mbs` (the
/// caller stores the container).
pub(crate) fn enforce_limits(tx: &mut dyn WriteTx, container: &mut Resource) -> Result<()> {
    let mni = container.u64("mni");
    let mbs = container.u64("mbs");
    loop {
        let cni = container.u64("cni").unwrap_or(0);
        let cbs = container.u64("cbs").unwrap_or(0);
        let over = mni.is_some_and(|mni| cni > mni) || mbs.is_some_and(|mbs| cbs > mbs);
        if !over {
            return Ok(());
        }
        let Some(oldest) = tx.edge_child(container.ri(), ResourceType::Cin, false)? else {
            return Ok(());
        };
        let size = oldest.u64("cs").unwrap_or(0);
        tx.delete_subtree(&oldest)?;
        container.set("cni", cni.saturating_sub(1));
        container.set("cbs", cbs.saturating_sub(size));
    }
}
