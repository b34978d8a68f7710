//! How a resource lies in a row of either backend: its JSON body, the columns beside it
//! that indexes serve, and the way back to a [`Resource`].

use serde_json::Value;

use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType};

/// What a read of every resource of type `ty` adds to `WHERE ty = ?` so that the index by
/// type, which leaves content instances out (migration 5), may serve it: the index's own
/// condition, for every type but the content instance.
pub(crate) fn by_type_index(ty: ResourceType) -> &'static str {
    if ty == ResourceType::Cin { "" } else { " AND ty <> 4" }
}

/// Whether `resource` belongs in the index of announced resources (its `at` lists
/// something): the `announced` column of its row.
pub(crate) fn is_announced(resource: &Resource) -> bool {
    !resource.str_list("at").is_empty()
}

/// A resource from its stored columns (`ty`, `path`, `creator`, the JSON `body`).
pub(crate) fn stored_resource(ty: i64, path: String, creator: Option<String>, body: &str) -> Result<Resource> {
    let ty = u64::try_from(ty)
        .ok()
        .and_then(ResourceType::from_code)
        .ok_or_else(|| Error::internal(format!("stored resource {path} has unknown type {ty}")))?;
    let attributes: serde_json::Map<String, Value> = serde_json::from_str(body)
        .map_err(|error| Error::internal(format!("stored resource {path} is not valid JSON: {error}")))?;
    Ok(Resource { ty, attributes, path, creator })
}
