//! `<contentInstance>` (ty 4): immutable once created. Its container counts it (`cni`,
//! `cbs`, `st`) and bounds it (`mbs` refuses one too large, `mia` shortens its life,
//! `mni`/`mbs` evict the oldest); with `dcnt` it is deleted after that many reads; under a
//! container with `disr` it cannot be read.

use std::time::Duration;

use serde_json::json;

use super::{Context, Draft, TypeRules, enforce_limits, policy, regular, remove};
use crate::core::request::Operation;
use crate::error::{Error, Result, Rsc};
use crate::resource::{AttrKind, Need, Policy, Resource, content_size};
use crate::storage::{ReadTx, WriteTx};

pub(super) struct Cin;

impl TypeRules for Cin {
    fn policy(&self, name: &str) -> Option<Policy> {
        use AttrKind::*;
        use Need::{NotPermitted as NP, Optional as O};
        match name {
            "cr" => policy(NullOnly, O, NP),
            "st" | "cs" => policy(NonNegInt, NP, NP),
            "con" | "dgt" => policy(Any, O, NP),
            "cnf" => policy(ContentInfo, O, NP),
            "dcnt" => policy(PosInt, O, NP),
            "conr" | "or" => policy(Str, O, NP),
            "loc" => policy(Any, O, O),
            _ => regular(name),
        }
    }

    fn refuses(&self, op: Operation) -> Option<&'static str> {
        (op == Operation::Update).then_some("a contentInstance cannot be updated")
    }

    fn check_create(&self, _tx: &dyn ReadTx, _ctx: &Context, container: &Resource, draft: &Draft) -> Result<()> {
        let size = content_size(draft.attributes.get("con"));
        if let Some(mbs) = container.u64("mbs")
            && size > mbs
        {
            return Err(Error::new(
                Rsc::NotAcceptable,
                format!("content size {size} exceeds the container's mbs {mbs}"),
            ));
        }
        Ok(())
    }

    /// Its size, its place in the container's changes, and a life within the container's
    /// `mia` (itself at most the longest lifetime, so never past the calendar).
    fn complete(&self, ctx: &Context, container: &Resource, draft: &mut Draft) -> Result<()> {
        let size = content_size(draft.attributes.get("con"));
        draft.attributes.insert("cs".into(), json!(size));
        draft.attributes.insert("st".into(), json!(container.u64("st").unwrap_or(0) + 1));
        if let Some(mia) = container.u64("mia") {
            let age = Duration::from_secs(mia).min(ctx.config.cse.max_expiration_delta);
            draft.et = draft.et.min(draft.now.saturating_add(age));
        }
        Ok(())
    }

    /// The container counts the new instance and evicts the oldest beyond its limits.
    fn after_create(&self, tx: &mut dyn WriteTx, mut container: Resource, instance: &Resource) -> Result<()> {
        container.set("st", instance.u64("st").unwrap_or(0));
        container.set("cni", container.u64("cni").unwrap_or(0) + 1);
        container.set("cbs", container.u64("cbs").unwrap_or(0) + instance.u64("cs").unwrap_or(0));
        enforce_limits(tx, &mut container)?;
        tx.update(&container)
    }

    /// Instances of a container with `disr` = true cannot be read or deleted.
    fn check_read(&self, tx: &dyn ReadTx, instance: &Resource) -> Result<()> {
        let container = tx.get(instance.pi())?;
        if container.is_some_and(|container| container.bool("disr") == Some(true)) {
            return Err(Error::not_allowed("retrieval of instances is disabled for this container (disr)"));
        }
        Ok(())
    }

    fn writes_on_retrieve(&self, instance: &Resource) -> bool {
        instance.u64("dcnt").is_some()
    }

    /// A read of an instance with `dcnt` counts down; at the last one it is deleted.
    fn retrieved(&self, tx: &mut dyn WriteTx, ri: &str) -> Result<()> {
        let Some(mut instance) = tx.get(ri)? else {
            return Ok(());
        };
        let Some(count) = instance.u64("dcnt") else {
            return Ok(());
        };
        if count <= 1 {
            return remove(tx, &instance);
        }
        instance.set("dcnt", count - 1);
        tx.update(&instance)
    }

    /// The container no longer counts it.
    fn on_delete(&self, tx: &mut dyn WriteTx, instance: &Resource) -> Result<()> {
        if let Some(mut container) = tx.get(instance.pi())? {
            let size = instance.u64("cs").unwrap_or(0);
            container.set("cni", container.u64("cni").unwrap_or(0).saturating_sub(1));
            container.set("cbs", container.u64("cbs").unwrap_or(0).saturating_sub(size));
            tx.update(&container)?;
        }
        Ok(())
    }
}
