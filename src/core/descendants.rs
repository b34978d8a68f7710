//! What a registree may claim about the CSEs below it: the `dcse` of its `<remoteCSE>`.
//!
//! This CSE routes to every CSE a registree lists and reports them to its own registrar,
//! so the list is not taken on trust: every entry must be a well-formed CSE-ID, must not be
//! this CSE, its registrar, a CSE registered here directly (the registree itself included)
//! or one that another registree already claims, must appear once, and the list is bounded
//! (`cse.registration.max_descendants`). A list that breaks a rule is refused whole (4000),
//! naming the entry.

use std::collections::HashSet;

use serde_json::Value;

use crate::config::Config;
use crate::core::address::Identity;
use crate::core::registry::Registry;
use crate::error::{Error, Result};
use crate::id::{is_cse_id, resource_name_of};
use crate::resource::ResourceType;
use crate::storage::ReadTx;

/// Check the `dcse` that the registree `registree` (its CSE-ID) sends.
pub(crate) fn check_dcse(
    tx: &dyn ReadTx,
    registry: &Registry,
    identity: &Identity,
    config: &Config,
    registree: &str,
    dcse: &Value,
) -> Result<()> {
    let entries: Vec<&str> = dcse.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let max = config.registration.max_descendants;
    if entries.len() > max {
        return Err(Error::bad_request(format!(
            "dcse lists {} CSEs; at most {max} are accepted (cse.registration.max_descendants)",
            entries.len()
        )));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    for entry in entries {
        let refuse = |why: &str| Err(Error::bad_request(format!("dcse entry {entry:?} {why}")));
        if !is_cse_id(entry) {
            return refuse("is not a CSE-ID (/csi or //sp/csi)");
        }
        let csi = identity.simplify_originator(entry);
        if !seen.insert(csi.clone()) {
            return refuse("is listed twice");
        }
        if csi == identity.cse_id {
            return refuse("is this CSE");
        }
        if is_registrar(config, identity, &csi) {
            return refuse("is this CSE's registrar");
        }
        if csi == registree {
            return refuse("is the registree itself");
        }
        let registered_here = tx.get(&resource_name_of(&csi))?.is_some_and(|resource| resource.ty == ResourceType::Csr);
        if registered_here {
            return refuse("is registered here directly");
        }
        if registry.descendant(&csi).is_some_and(|descendant| descendant.via != registree) {
            return refuse("is below another registree already");
        }
    }
    Ok(())
}

fn is_registrar(config: &Config, identity: &Identity, csi: &str) -> bool {
    config.registrar.iter().any(|registrar| registrar.cse_id == csi)
        || config
            .sp_registrars
            .iter()
            .any(|registrar| identity.simplify_originator(&format!("//{}{}", registrar.sp_id, registrar.cse_id)) == csi)
}
