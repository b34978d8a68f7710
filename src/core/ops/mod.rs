//! The operations on local resources: one module each for CREATE, RETRIEVE, discovery,
//! UPDATE and DELETE. Each runs in one storage transaction and asks the
//! target's type (`core::types`) for what is particular to it; what others must hear about
//! leaves the commit as a change set (`storage::ChangeSet`), never from here.
//!
//! Shared here: the content of a request, the bounds of an answer, and how the resources
//! below a target are shown (`rcn` 4, 5, 6, 8) and addressed.

mod create;
mod delete;
mod discover;
mod notify;
mod retrieve;
mod update;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value, json};

use crate::core::Cse;
use crate::core::access::{Access, Permission};
use crate::core::represent;
use crate::core::request::{FilterCriteria, IdForm, Request};
use crate::core::select::{Bounds, Measure, Selected, select};
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType};
use crate::storage::ReadTx;

impl Cse {
    /// The bounds of one answer: `cse.max_results`, `cse.max_result_size`, and the time a
    /// request may take.
    fn bounds(&self) -> Bounds {
        let config = self.config.load();
        Bounds {
            max_results: config.cse.max_results,
            max_size: config.cse.max_result_size,
            deadline: std::time::Instant::now() + config.http.request_timeout,
        }
    }

    /// `resource` with what `rcn` (4, 5, 6 or 8) asks for of the resources below it.
    fn with_below(&self, request: &Request, resource: &Resource, rcn: u8, selected: Selected) -> Value {
        let address = |resource: &Resource| self.scoped(request, self.address_of(resource, request.drt));
        match rcn {
            4 | 8 => represent::tree(resource, selected.resources, rcn == 4),
            5 => {
                let mut json = resource.to_json();
                if let Some(Value::Object(attributes)) = json.get_mut(resource.ty.wrapper()) {
                    let references = represent::references(&selected.resources, address);
                    attributes.insert("ch".into(), Value::Array(references));
                }
                json
            }
            _ => json!({ "m2m:rrl": { "rrf": represent::references(&selected.resources, address) } }),
        }
    }

    /// The address of a resource in the requested form: structured path, or `ri`.
    fn address_of(&self, resource: &Resource, form: IdForm) -> String {
        match form {
            IdForm::Structured => resource.path.clone(),
            IdForm::Unstructured => format!("{}/{}", self.identity.cse_id, resource.ri()),
        }
    }

    /// Express a CSE-relative ID in the scope the originator used (SP-relative or absolute).
    fn scoped(&self, request: &Request, id: String) -> String {
        if id.starts_with('/') {
            return id;
        }
        match request.originator.as_deref() {
            Some(o) if o.starts_with("//") => {
                format!("//{}{}/{id}", self.identity.sp_id, self.identity.cse_id)
            }
            Some(o) if o.starts_with('/') => format!("{}/{id}", self.identity.cse_id),
            _ => id,
        }
    }
}

/// The attribute map inside `{"m2m:xxx": {...}}`, checked against the expected type.
fn unwrap_content(content: Option<&Value>, ty: ResourceType, wrong_type: Rsc) -> Result<Map<String, Value>> {
    let Some(content) = content else {
        return Err(Error::bad_request("missing content"));
    };
    let Value::Object(wrapper) = content else {
        return Err(Error::bad_request("content must be a JSON object like {\"m2m:cnt\": {...}}"));
    };
    let mut entries = wrapper.iter();
    let (Some((key, value)), None) = (entries.next(), entries.next()) else {
        return Err(Error::bad_request("content must have exactly one member like \"m2m:cnt\""));
    };
    if key != ty.wrapper() {
        return Err(Error::new(
            wrong_type,
            format!("content {key} does not match the resource type (expected {})", ty.wrapper()),
        ));
    }
    match value {
        Value::Object(attributes) => Ok(attributes.clone()),
        _ => Err(Error::bad_request(format!("{key} must be a JSON object"))),
    }
}

/// The resources below `resource` that `rcn` shows: with 4 and 8 their attributes (the
/// originator needs RETRIEVE on each), with 5 and 6 references (DISCOVERY on each).
fn below(
    tx: &dyn ReadTx,
    resource: &Resource,
    rcn: u8,
    filter: &FilterCriteria,
    guard: &Access,
    bounds: Bounds,
) -> Result<Option<Selected>> {
    let (permission, measure) = match rcn {
        4 | 8 => (Permission::Retrieve, Measure::Attributes),
        5 | 6 => (Permission::Discovery, Measure::Reference),
        _ => return Ok(None),
    };
    select(tx, resource, filter, guard, permission, measure, bounds).map(Some)
}
