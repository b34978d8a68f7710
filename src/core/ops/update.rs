//! UPDATE: the attributes sent, checked against the type's policy and rules, applied with
//! what the type changes besides, in one transaction.

use std::time::Duration;

use serde_json::{Map, Value};

use super::unwrap_content;
use crate::core::Cse;
use crate::core::access::{Access, Permission, Touches};
use crate::core::address::{LocalId, LocalTarget};
use crate::core::notify;
use crate::core::represent;
use crate::core::request::{Operation, Request, Response};
use crate::core::tree::{expiration, locate, resolve_acpi};
use crate::core::types::{self, Context, rules};
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType, Timestamp};
use crate::storage::WriteTx;

impl Cse {
    pub(in crate::core) async fn update(
        &self,
        request: &Request,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::not_allowed("la and ol cannot be updated"));
        }
        if let Some(targets) =
            request.content.as_ref().and_then(|content| content.get("m2m:sub")).and_then(|sub| sub.get("nu"))
        {
            self.verify_new_targets(&target.id, targets, &guard).await?;
        }
        // A blocking-update subscription on the target is asked first, once the update is
        // known to be valid; then the update is checked and applied again.
        let mut asked = false;
        let (before, resource, changes) = loop {
            let applied = self.apply_update(request, &target, &guard, asked).await?;
            match applied {
                Applied::Done(before, resource, changes) => break (before, resource, changes),
                Applied::Ask(blocking) => {
                    let sent = request.content.clone().unwrap_or_default();
                    self.ask_before_update(&blocking, &sent, &guard.accessor.originator).await?;
                    asked = true;
                }
            }
        };
        self.flow_back(&resource, &changes, &guard);
        let content = match request.rcn.unwrap_or(1) {
            0 => None,
            9 => Some(represent::modified_attributes(&resource, Some(&before), &changes)),
            _ => Some(resource.to_json()),
        };
        Ok(Response::new(request, Rsc::Updated, content))
    }

    /// An announced resource synchronised both ways (`ast` 2) changed by someone other than
    /// the CSE it links to: the change goes to the original, in the background (it is
    /// not the client's business whether that CSE is reachable; a failure is logged).
    fn flow_back(&self, announced: &Resource, changes: &Map<String, Value>, guard: &Access) {
        let (Some(original_ty), Some(lnk)) = (announced.ty.original(), announced.str("lnk")) else { return };
        if announced.u64("ast") != Some(2) || changes.is_empty() {
            return;
        }
        let originator = self.identity.simplify_originator(&guard.accessor.originator);
        let linked = self.identity.simplify_originator(lnk);
        if crate::id::cse_of(&linked) == Some(originator.as_str()) {
            return;
        }
        let mut request = Request::new(Operation::Update, lnk, Some(&self.identity.cse_id));
        request.rvi = guard.config.cse.release_version.clone();
        request.content = Some(serde_json::json!({ original_ty.wrapper(): changes }));
        let (cse, original) = (self.clone(), lnk.to_string());
        tokio::spawn(async move {
            let response = cse.handle(request).await;
            if !response.rsc.is_success() {
                tracing::warn!(
                    original = %original,
                    rsc = response.rsc.code(),
                    dbg = response.dbg().unwrap_or_default(),
                    "a change of an announced resource did not reach its original"
                );
            }
        });
    }

    /// The UPDATE in one transaction: checked and applied, unless (`asked` false) the target
    /// has a blocking-update subscription to ask first.
    async fn apply_update(
        &self,
        request: &Request,
        target: &LocalTarget,
        guard: &Access,
        asked: bool,
    ) -> Result<Applied> {
        let (target, guard) = (target.clone(), guard.clone());
        let content = request.content.clone();
        let identity = self.identity.clone();
        let registry = self.registry.clone();
        let originator = guard.accessor.originator.clone();
        self.storage
            .write(move |tx| {
                let config = guard.config.clone();
                let ctx = Context { config: &config, identity: &identity, registry: &registry };
                let mut resource = locate(tx, &target.id)?;
                let type_rules = rules(resource.ty);
                if let Some(refusal) = type_rules.refuses(Operation::Update) {
                    return Err(Error::not_allowed(refusal));
                }
                let changes = unwrap_content(content.as_ref(), resource.ty, Rsc::ContentsUnacceptable)?;
                if changes.contains_key("acpi") {
                    guard.check_acpi_change(tx, &resource)?;
                } else {
                    let sent: Vec<String> = changes.keys().cloned().collect();
                    guard.check(tx, &resource, Permission::Update, None, Touches::Attributes(&sent))?;
                }
                types::validate_update(resource.ty, &changes)?;
                type_rules.check_update(&*tx, &ctx, &resource, &changes)?;
                if !asked && let Some(blocking) = blocking_subscription(&*tx, &resource)? {
                    return Ok(Applied::Ask(blocking));
                }
                let before = resource.clone();
                apply(tx, &ctx, &mut resource, &before, &changes)?;
                notify::events::updated(tx, &before, &resource, &changes, Some(&originator))?;
                Ok(Applied::Done(before, resource, changes))
            })
            .await
    }
}

/// What an UPDATE's transaction did.
enum Applied {
    /// Applied: the resource before and after, the attributes sent.
    Done(Resource, Resource, Map<String, Value>),
    /// Nothing yet: this blocking-update subscription is to be asked first.
    Ask(Resource),
}

/// The blocking-update subscription of `resource`, if it has one.
fn blocking_subscription(tx: &dyn crate::storage::ReadTx, resource: &Resource) -> Result<Option<Resource>> {
    if matches!(resource.ty, ResourceType::Sub | ResourceType::Cin) {
        return Ok(None);
    }
    let subscriptions = tx.children(resource.ri(), Some(ResourceType::Sub))?;
    Ok(subscriptions
        .into_iter()
        .find(|subscription| types::events_of(subscription.attributes.get("enc")).contains(&types::BLOCKING_UPDATE)))
}

impl Cse {
    /// An UPDATE of a subscription's targets: the new ones are verified before anything is
    /// stored (a failure, 5204, leaves the subscription as it was).
    async fn verify_new_targets(&self, target: &LocalId, sent: &Value, guard: &Access) -> Result<()> {
        let (target, checker) = (target.clone(), guard.clone());
        let mut only_targets = Map::new();
        only_targets.insert("nu".into(), sent.clone());
        let subscription = self
            .storage
            .read(move |tx| {
                let Some(subscription) = tx_locate(tx, &target)? else { return Ok(None) };
                if subscription.ty != ResourceType::Sub {
                    return Ok(None);
                }
                // Who may not update it, or what is not a target list, is refused first.
                checker.check(tx, &subscription, Permission::Update, None, Touches::Attributes(&["nu".to_string()]))?;
                types::validate_update(ResourceType::Sub, &only_targets)?;
                types::check_target_hosts(&checker.config.subscription.allowed_target_hosts, &only_targets)?;
                Ok(Some(subscription))
            })
            .await?;
        let Some(subscription) = subscription else { return Ok(()) };
        let originator = guard.accessor.originator.as_str();
        let sent: Vec<String> = sent
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|entry| entry.trim_end_matches('/').to_string())
            .collect();
        let fresh = notify::deliver::new_targets(&sent, &subscription.str_list("nu"));
        let sur = format!("{}/{}", self.identity.cse_id, subscription.ri());
        self.verify_targets(&fresh, &sur, originator).await
    }
}

/// The resource at `target`, if there is one.
fn tx_locate(tx: &dyn crate::storage::ReadTx, target: &LocalId) -> Result<Option<Resource>> {
    match locate(tx, target) {
        Ok(resource) => Ok(Some(resource)),
        Err(error) if error.rsc == Rsc::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Apply an UPDATE's attributes to `resource` and store it (with the type's side effects).
fn apply(
    tx: &mut dyn WriteTx,
    ctx: &Context,
    resource: &mut Resource,
    before: &Resource,
    changes: &Map<String, Value>,
) -> Result<()> {
    let announced = resource.ty.is_announced();
    if changes.contains_key("acpi") && changes.len() > 1 && !announced {
        return Err(Error::bad_request("acpi must be the only attribute of an update"));
    }
    let max_et: Duration = ctx.config.cse.max_expiration_delta;
    let parent = tx.get(resource.pi())?;
    for (name, value) in changes {
        if value.is_null() {
            if name == "et" {
                resource.set("et", expiration(None, parent.as_ref(), max_et)?);
            } else {
                resource.attributes.remove(name);
            }
            continue;
        }
        let value = match name.as_str() {
            "et" => expiration(Some(value), parent.as_ref(), max_et)?.into(),
            _ => value.clone(),
        };
        resource.attributes.insert(name.clone(), value);
    }
    if let Some(acpi) = changes.get("acpi").filter(|value| !value.is_null() && !announced) {
        let resolved = resolve_acpi(&*tx, ctx.identity, acpi)?;
        resource.set("acpi", resolved);
    }
    if changes.contains_key("at") || changes.contains_key("aa") {
        types::settle_announcement(resource.ty, &mut resource.attributes, Some(before), ctx.identity)?;
    }
    resource.set("lt", Timestamp::now());
    rules(resource.ty).after_update(tx, ctx, resource, before, changes)?;
    tx.update(resource)
}
