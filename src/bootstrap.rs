//! Start-up resources: the CSEBase from the configuration, and the `init/` files imported
//! into an empty database.
//!
//! An init file is JSON, either a resource to create (through `Cse::handle`, with all
//! its checks):
//! `{"create": {"parent": "${CSE_RN}", "originator": "${ADMIN}", "resource": {"m2m:acp": {...}}}}`
//! or attributes to set on the CSEBase: `{"csebase": {"lbl": [...], "acpi": [...]}}`.
//! `${ADMIN}`, `${CSE_ID}`, `${CSE_RN}` and `${CSE_RI}` are replaced by configured values.
//! Files are applied in file-name order, once, when the database is new.

use std::path::Path;

use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::core::request::{Operation, Request, SUPPORTED_MEDIA_TYPES};
use crate::core::{Cse, resolve_acpi};
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType, Timestamp};

/// CSEBase attributes an init file may set.
const CSEBASE_INIT_ATTRIBUTES: [&str; 5] = ["lbl", "acpi", "nl", "cstn", "loc"];

/// Create the CSEBase, or bring a stored one in line with the configuration.
/// Returns true when the database was new (the CSEBase had to be created).
pub async fn ensure_cse_base(cse: &Cse, poa: Vec<String>) -> Result<bool> {
    let config = cse.config().clone();
    cse.storage
        .write(move |tx| {
            let cse_config = &config.cse;
            let now = Timestamp::now().to_string();
            let mut attributes = Map::new();
            attributes.insert("csi".into(), json!(cse_config.cse_id));
            attributes.insert("spi".into(), json!(format!("//{}", cse_config.sp_id)));
            attributes.insert("cst".into(), json!(cse_config.kind.cst()));
            attributes.insert("csz".into(), json!(SUPPORTED_MEDIA_TYPES));
            attributes.insert("srt".into(), json!(ResourceType::ALL.map(ResourceType::code)));
            attributes.insert("srv".into(), json!(cse_config.release_versions));
            if config.registrar.is_none() {
                attributes.insert("ici".into(), json!(cse_config.cse_id));
            }
            let root = tx.children("", Some(ResourceType::CseBase))?;
            match root.into_iter().next() {
                Some(mut existing) => {
                    if existing.ri() != cse_config.resource_id || existing.rn() != cse_config.resource_name {
                        return Err(Error::internal(format!(
                            "the database holds the CSEBase {} (ri {}), but the configuration names {} (ri {}); use another database.path",
                            existing.rn(),
                            existing.ri(),
                            cse_config.resource_name,
                            cse_config.resource_id
                        )));
                    }
                    let changed = attributes.iter().any(|(name, value)| existing.attributes.get(name) != Some(value));
                    if changed {
                        existing.attributes.extend(attributes);
                        existing.set("lt", now);
                        tx.update(&existing)?;
                    }
                    Ok(false)
                }
                None => {
                    // Later, `Cse::advertise` keeps it the addresses of every instance.
                    attributes.insert("poa".into(), json!(poa));
                    attributes.insert("ri".into(), json!(cse_config.resource_id));
                    attributes.insert("rn".into(), json!(cse_config.resource_name));
                    attributes.insert("pi".into(), json!(""));
                    attributes.insert("ty".into(), json!(ResourceType::CseBase.code()));
                    attributes.insert("ct".into(), json!(now));
                    attributes.insert("lt".into(), json!(now));
                    let cse_base = Resource {
                        ty: ResourceType::CseBase,
                        attributes,
                        path: cse_config.resource_name.clone(),
                        creator: Some(cse_config.admin_originator.clone()),
                    };
                    tx.insert(&cse_base)?;
                    Ok(true)
                }
            }
        })
        .await
}

/// Apply the `init/` files in name order. A broken file stops the start-up with its name.
pub async fn import_init_dir(cse: &Cse, dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            warn!(dir = %dir.display(), %error, "no init directory; starting with the CSEBase only");
            return Ok(0);
        }
    };
    let mut files: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|error| Error::internal(format!("cannot read init file {}: {error}", file.display())))?;
        apply_init(cse, &substitute(cse, &text))
            .await
            .map_err(|error| Error::internal(format!("init file {}: {}", file.display(), error.detail())))?;
        info!(file = %file.display(), "imported init file");
    }
    Ok(files.len())
}

fn substitute(cse: &Cse, text: &str) -> String {
    let config = &cse.config().cse;
    text.replace("${ADMIN}", &config.admin_originator)
        .replace("${CSE_ID}", &config.cse_id)
        .replace("${CSE_RN}", &config.resource_name)
        .replace("${CSE_RI}", &config.resource_id)
}

async fn apply_init(cse: &Cse, text: &str) -> Result<()> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| Error::bad_request(format!("not valid JSON: {error}")))?;
    if let Some(create) = value.get("create") {
        let config = cse.config();
        let parent = create.get("parent").and_then(Value::as_str).unwrap_or(&config.cse.resource_name);
        let originator = create.get("originator").and_then(Value::as_str).unwrap_or(&config.cse.admin_originator);
        let resource = create.get("resource").cloned().ok_or_else(|| Error::bad_request("create needs a resource"))?;
        let ty = resource
            .as_object()
            .and_then(|map| map.keys().next())
            .and_then(|wrapper| ResourceType::from_wrapper(wrapper))
            .ok_or_else(|| Error::bad_request("resource must be wrapped like {\"m2m:acp\": {...}}"))?;
        let mut request = Request::new(Operation::Create, parent, Some(originator));
        request.rvi = cse.config().cse.release_version.clone();
        request.ty = Some(u64::from(ty.code()));
        request.content = Some(resource);
        request.rcn = Some(0);
        let response = cse.handle(request).await;
        if response.rsc != Rsc::Created {
            return Err(Error::new(response.rsc, response.dbg().unwrap_or("creation failed").to_string()));
        }
        return Ok(());
    }
    if let Some(Value::Object(attributes)) = value.get("csebase") {
        if let Some(name) = attributes.keys().find(|name| !CSEBASE_INIT_ATTRIBUTES.contains(&name.as_str())) {
            return Err(Error::bad_request(format!(
                "csebase attribute {name} cannot be set from init (allowed: {CSEBASE_INIT_ATTRIBUTES:?})"
            )));
        }
        let attributes = attributes.clone();
        let ri = cse.config().cse.resource_id.clone();
        let identity = cse.identity.clone();
        return cse
            .storage
            .write(move |tx| {
                let mut attributes = attributes.clone();
                if let Some(acpi) = attributes.get("acpi") {
                    let resolved = resolve_acpi(&*tx, &identity, acpi)?;
                    attributes.insert("acpi".into(), resolved);
                }
                let mut cse_base = tx.get(&ri)?.ok_or_else(|| Error::internal("no CSEBase"))?;
                cse_base.attributes.extend(attributes);
                cse_base.set("lt", Timestamp::now());
                tx.update(&cse_base)
            })
            .await;
    }
    Err(Error::bad_request("an init file holds {\"create\": ...} or {\"csebase\": ...}"))
}
