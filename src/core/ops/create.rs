//! CREATE: a new resource under the target, with what its type changes in its parent, in
//! one transaction.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::unwrap_content;
use crate::config::Config;
use crate::core::Cse;
use crate::core::access::{Access, Permission, Touches};
use crate::core::address::{Identity, LocalId, LocalTarget};
use crate::core::notify;
use crate::core::registry::Registry;
use crate::core::represent;
use crate::core::request::{Operation, Request, Response};
use crate::core::tree::{expiration, locate, resolve_acpi};
use crate::core::types::{self, Context, Draft, rules};
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType, Timestamp, known_unsupported_type};
use crate::storage::WriteTx;

/// Longest structured path of a resource (the tree cannot grow without bound in depth).
const MAX_PATH_LENGTH: usize = 4096;

impl Cse {
    pub(in crate::core) async fn create(
        &self,
        request: &Request,
        originator: Option<String>,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::not_allowed("resources cannot be created under la or ol"));
        }
        let code = request.ty.ok_or_else(|| Error::bad_request("CREATE needs a resource type (ty)"))?;
        let ty = match ResourceType::from_code(code) {
            Some(ty) => ty,
            None => match known_unsupported_type(code) {
                Some(name) => {
                    return Err(Error::not_implemented(format!("resource type {code} ({name}) is not supported")));
                }
                None => return Err(Error::bad_request(format!("unknown resource type {code}"))),
            },
        };
        let type_rules = rules(ty);
        if let Some(refusal) = type_rules.refuses(Operation::Create) {
            return Err(Error::not_allowed(refusal));
        }
        let mut attributes = unwrap_content(request.content.as_ref(), ty, Rsc::BadRequest)?;
        if ty.is_announced() {
            // What the original lacks may come as null (the reference CSE sends `"et": null`
            // for an announced CSEBase): not there.
            attributes.retain(|_, value| !value.is_null());
        }
        let ctx = Context { config: &guard.config, identity: &self.identity, registry: &self.registry };
        let originator = type_rules.originator(&ctx, originator.as_deref())?;
        let ri = match ty {
            ResourceType::Sub => Some(self.verify_subscription(&target.id, &attributes, &originator, &guard).await?),
            _ => None,
        };
        let plan = CreatePlan {
            ri,
            target: target.id,
            ty,
            attributes,
            originator,
            rvi: request.rvi.clone(),
            config: guard.config.clone(),
            identity: self.identity.clone(),
            registry: self.registry.clone(),
            guard,
        };
        let resource = self.storage.write(move |tx| plan.clone().apply(tx)).await?;
        let address = self.address_of(&resource, request.drt);
        let content = match request.rcn.unwrap_or(1) {
            0 => None,
            2 => Some(json!({ "m2m:uri": address })),
            3 => Some(json!({ "m2m:rce": { "uri": address, ty.wrapper(): resource.attributes } })),
            9 => {
                // What was sent, to tell it from what the CSE set (read only for rcn 9).
                let sent = request.content.as_ref().and_then(|content| content.get(ty.wrapper()));
                let empty = Map::new();
                Some(represent::modified_attributes(&resource, None, sent.and_then(Value::as_object).unwrap_or(&empty)))
            }
            _ => Some(resource.to_json()),
        };
        let mut response = Response::new(request, Rsc::Created, content);
        response.content_location = Some(address);
        Ok(response)
    }
}

impl Cse {
    /// Before a subscription is stored: what can be checked without storing it (in the
    /// order of the standard: access, parent, content), then a verification request to
    /// each of its targets naming the `ri` it will have. Returns that `ri`.
    async fn verify_subscription(
        &self,
        target: &LocalId,
        attributes: &Map<String, Value>,
        originator: &str,
        guard: &Access,
    ) -> Result<String> {
        let (target, checked, guard) = (target.clone(), attributes.clone(), guard.clone());
        self.storage
            .read(move |tx| {
                let parent = locate(tx, &target)?;
                let sent: Vec<String> = checked.keys().cloned().collect();
                guard.check(tx, &parent, Permission::Create, Some(ResourceType::Sub), Touches::Attributes(&sent))?;
                check_child_type(ResourceType::Sub, &parent)?;
                types::validate_create(ResourceType::Sub, &checked)?;
                types::check_target_hosts(&guard.config.subscription.allowed_target_hosts, &checked)?;
                types::check_subscription_parent(checked.get("enc"), parent.ty)
            })
            .await?;
        let ri = format!("{}{}", ResourceType::Sub.short_name(), crate::resource::random_id(types::ID_LENGTH));
        let targets: Vec<String> = attributes
            .get("nu")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|entry| entry.trim_end_matches('/').to_string())
            .collect();
        let sur = format!("{}/{ri}", self.identity.cse_id);
        self.verify_targets(&targets, &sur, originator).await?;
        Ok(ri)
    }
}

/// May a `ty` be created under `parent`? A subscription to what cannot be subscribed to
/// is 5203, any other misplaced child 4108.
fn check_child_type(ty: ResourceType, parent: &Resource) -> Result<()> {
    if types::allowed_under(ty, parent.ty) {
        return Ok(());
    }
    let rsc = if ty == ResourceType::Sub { Rsc::TargetNotSubscribable } else { Rsc::InvalidChildResourceType };
    Err(Error::new(rsc, format!("a {} cannot be created under a {}", ty.wrapper(), parent.ty.wrapper())))
}

/// Everything a CREATE needs, moved onto the storage thread (cloned for each run of the
/// write job).
#[derive(Clone)]
struct CreatePlan {
    /// Chosen before the transaction (a subscription's, named in its verification).
    ri: Option<String>,
    target: LocalId,
    ty: ResourceType,
    attributes: Map<String, Value>,
    /// For an AE its AE-ID, for a CSR its CSE-ID (see `TypeRules::originator`).
    originator: String,
    rvi: String,
    config: Arc<Config>,
    identity: Arc<Identity>,
    registry: Registry,
    guard: Access,
}

impl CreatePlan {
    fn apply(self, tx: &mut dyn WriteTx) -> Result<Resource> {
        let CreatePlan { ri: chosen, target, ty, attributes, originator, rvi, config, identity, registry, guard } =
            self;
        // Taken on the writer thread, so creation times follow the order of the commits.
        let now = Timestamp::now();
        let mut draft = Draft { ty, attributes, originator, rvi, now, et: now, ri: chosen };
        let ctx = Context { config: &config, identity: &identity, registry: &registry };
        let type_rules = rules(ty);
        let parent = locate(&*tx, &target)?;
        // AE and CSR registration are decided by the allowed-originator lists (checked
        // before); everything else by the parent's access rules.
        if !type_rules.is_registration() {
            let sent: Vec<String> = draft.attributes.keys().cloned().collect();
            guard.check(&*tx, &parent, Permission::Create, Some(ty), Touches::Attributes(&sent))?;
        }
        type_rules.check_registrant(&*tx, &draft.originator)?;
        check_child_type(ty, &parent)?;
        // The request's attributes as sent (a non-string rn is an error, not replaced).
        types::validate_create(ty, &draft.attributes)?;
        type_rules.check_create(&*tx, &ctx, &parent, &draft)?;

        let (ri, rn) = type_rules.identify(&*tx, &mut draft)?;
        let path = format!("{}/{}", parent.path, rn);
        if path.len() > MAX_PATH_LENGTH {
            return Err(Error::bad_request(format!(
                "the structured path of the new resource would be longer than {MAX_PATH_LENGTH} characters"
            )));
        }
        if tx.get(&ri)?.is_some() {
            return Err(Error::conflict(format!("a resource with ri {ri} already exists")));
        }
        if tx.get_by_path(&path)?.is_some() {
            return Err(Error::conflict(format!("a resource named {rn} already exists under {}", parent.path)));
        }

        let attributes = &mut draft.attributes;
        attributes.insert("rn".into(), Value::String(rn));
        // An announced copy's acpi names the policies of its original's CSE, as sent.
        if let Some(acpi) = attributes.get("acpi").filter(|_| !ty.is_announced()) {
            let resolved = resolve_acpi(&*tx, &identity, acpi)?;
            attributes.insert("acpi".into(), resolved);
        }
        if attributes.contains_key("cr") {
            attributes.insert("cr".into(), Value::String(draft.originator.clone()));
        }
        draft.et = expiration(attributes.get("et"), Some(&parent), config.cse.max_expiration_delta)?;
        attributes.insert("ri".into(), Value::String(ri));
        attributes.insert("pi".into(), Value::String(parent.ri().to_string()));
        attributes.insert("ty".into(), json!(ty.code()));
        attributes.insert("ct".into(), draft.now.into());
        attributes.insert("lt".into(), draft.now.into());
        type_rules.complete(&ctx, &parent, &mut draft)?;
        types::settle_announcement(ty, &mut draft.attributes, None, &identity)?;
        draft.attributes.insert("et".into(), draft.et.into());

        let resource = Resource { ty, attributes: draft.attributes, path, creator: Some(draft.originator) };
        tx.insert(&resource)?;
        notify::events::created(tx, &parent, &resource, resource.creator.as_deref())?;
        type_rules.after_create(tx, parent, &resource)?;
        Ok(resource)
    }
}
