//! The result content (`rcn`) of an answer: a resource with the resources below it nested
//! or referenced, the attributes a CSE set itself (`rcn=9`), or the attributes a partial
//! RETRIEVE (`atrl`) asks for. Pure: the resources come from `select.rs`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::core::types::{policy_of, rules};
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType, Timestamp};
use crate::storage::Representation;

/// The JSON text a whole RETRIEVE answers for `resource` (as its type presents it), made to
/// be kept with a held resource: the attribute that says the time of reading, if its type
/// has one, holds a placeholder of the same width whose place is kept, to be overwritten
/// per answer ([`Representation::stamped`]). `None` if it cannot be serialised.
pub(crate) fn text(resource: &Resource) -> Option<Representation> {
    let type_rules = rules(resource.ty);
    let mut presented = resource.clone();
    type_rules.present(&mut presented);
    let placeholder = Timestamp::max().to_string();
    let now = type_rules.now_attribute();
    if let Some(name) = now {
        presented.set(name, placeholder.clone());
    }
    let json = serde_json::to_vec(&presented.into_json()).ok()?;
    let now_at = match now {
        Some(name) => {
            let needle = format!("\"{name}\":\"{placeholder}\"");
            let at = json.windows(needle.len()).position(|window| window == needle.as_bytes())?;
            Some(at + needle.len() - placeholder.len() - 1)
        }
        None => None,
    };
    Some(Representation { json: json.into(), now_at })
}

/// `{"m2m:xx": {attributes?, "m2m:yy": [{..., "m2m:zz": [...]}, ...]}}`: each selected
/// resource nested under its nearest selected ancestor (the root when none is selected, so
/// that nothing selected is lost when an ancestor is left out), siblings in creation order.
pub(crate) fn tree(root: &Resource, selected: Vec<Resource>, with_root_attributes: bool) -> Value {
    // Path order puts every ancestor before its descendants.
    let index: HashMap<&str, usize> =
        selected.iter().enumerate().map(|(position, resource)| (resource.path.as_str(), position)).collect();
    let parents: Vec<Option<usize>> = selected
        .iter()
        .map(|resource| {
            let mut path = resource.path.as_str();
            while let Some((ancestor, _)) = path.rsplit_once('/') {
                if ancestor.len() <= root.path.len() {
                    return None;
                }
                if let Some(position) = index.get(ancestor) {
                    return Some(*position);
                }
                path = ancestor;
            }
            None
        })
        .collect();
    drop(index);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); selected.len()];
    let mut top = Vec::new();
    for (position, parent) in parents.iter().enumerate() {
        match parent {
            Some(parent) => children[*parent].push(position),
            None => top.push(position),
        }
    }
    let creation = |position: &usize| (selected[*position].ct().to_string(), selected[*position].ri().to_string());
    for siblings in children.iter_mut().chain(std::iter::once(&mut top)) {
        siblings.sort_by_cached_key(creation);
    }
    let wrappers: Vec<&'static str> = selected.iter().map(|resource| resource.ty.wrapper()).collect();
    let mut maps: Vec<Option<Map<String, Value>>> =
        selected.into_iter().map(|resource| Some(resource.attributes)).collect();
    // Descendants come later in path order: complete them first, bottom up.
    for position in (0..maps.len()).rev() {
        let nested: Vec<(usize, Map<String, Value>)> = std::mem::take(&mut children[position])
            .into_iter()
            .filter_map(|child| maps[child].take().map(|map| (child, map)))
            .collect();
        if let Some(map) = maps[position].as_mut() {
            for (child, child_map) in nested {
                push_child(map, wrappers[child], child_map);
            }
        }
    }
    let mut map = if with_root_attributes { root.attributes.clone() } else { Map::new() };
    for position in top {
        if let Some(child_map) = maps[position].take() {
            push_child(&mut map, wrappers[position], child_map);
        }
    }
    json!({ root.ty.wrapper(): map })
}

fn push_child(map: &mut Map<String, Value>, wrapper: &str, child: Map<String, Value>) {
    if let Value::Array(list) = map.entry(wrapper.to_string()).or_insert_with(|| Value::Array(Vec::new())) {
        list.push(Value::Object(child));
    }
}

/// `[{"nm": rn, "typ": ty, "val": address}]`
pub(crate) fn references(selected: &[Resource], address: impl Fn(&Resource) -> String) -> Vec<Value> {
    selected
        .iter()
        .map(|resource| json!({ "nm": resource.rn(), "typ": resource.ty.code(), "val": address(resource) }))
        .collect()
}

/// `rcn=9`: the attributes of `after` that the CSE set itself: those a request sent but
/// that are stored otherwise (an `et` clipped, say), and those it did not send that are new
/// or changed since `before` (`ri`, `ct` on a CREATE; `lt`, `st` on an UPDATE).
pub(crate) fn modified_attributes(
    resource: &Resource,
    before: Option<&Resource>,
    requested: &Map<String, Value>,
) -> Value {
    let modified: Map<String, Value> = resource
        .attributes
        .iter()
        .filter(|(name, value)| match requested.get(*name) {
            Some(sent) => sent != *value,
            None => before.is_none_or(|before| before.attributes.get(*name) != Some(*value)),
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    json!({ resource.ty.wrapper(): modified })
}

/// A partial RETRIEVE: only the attributes `names` (those the resource has); a name its
/// type does not define is a 4000.
pub(crate) fn partial(resource: &Resource, names: &[String]) -> Result<Value> {
    // The CSEBase has no attribute policy (it is never sent by a client): any name is looked up.
    let unknown =
        names.iter().find(|name| resource.ty != ResourceType::CseBase && policy_of(resource.ty, name).is_none());
    if let Some(unknown) = unknown {
        return Err(Error::bad_request(format!(
            "atrl names {unknown}, which a {} does not have",
            resource.ty.wrapper()
        )));
    }
    let chosen: Map<String, Value> = resource
        .attributes
        .iter()
        .filter(|(name, _)| names.contains(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Ok(json!({ resource.ty.wrapper(): chosen }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(ty: ResourceType, path: &str, ct: &str) -> Resource {
        let rn = path.rsplit('/').next().unwrap_or(path);
        let Value::Object(attributes) = json!({"rn": rn, "ri": rn, "ct": ct}) else { unreachable!() };
        Resource { ty, attributes, path: path.into(), creator: None }
    }

    #[test]
    fn selected_resources_nest_under_their_nearest_selected_ancestor() {
        let root = resource(ResourceType::Ae, "cse-in/ae", "1");
        let selected = vec![
            resource(ResourceType::Cnt, "cse-in/ae/b", "2"),
            resource(ResourceType::Cin, "cse-in/ae/b/i1", "4"),
            // Its parent (cse-in/ae/c) was not selected: it hangs under the root.
            resource(ResourceType::Cin, "cse-in/ae/c/i2", "5"),
            resource(ResourceType::Cnt, "cse-in/ae/a", "3"),
        ];
        let mut selected = selected;
        selected.sort_by(|x, y| x.path.cmp(&y.path));
        let value = tree(&root, selected, false);
        let ae = &value["m2m:ae"];
        assert!(ae.get("rn").is_none(), "rcn=8: no attributes of the root");
        let containers: Vec<&str> =
            ae["m2m:cnt"].as_array().expect("list").iter().filter_map(|c| c["rn"].as_str()).collect();
        assert_eq!(containers, ["b", "a"], "creation order");
        assert_eq!(ae["m2m:cnt"][0]["m2m:cin"][0]["rn"], "i1");
        assert_eq!(ae["m2m:cin"][0]["rn"], "i2");
    }

    #[test]
    fn modified_attributes_are_what_the_cse_set() {
        let Value::Object(before) = json!({"lbl": ["a"], "lt": "1", "st": 1, "mni": 5}) else { unreachable!() };
        let Value::Object(after) = json!({"lbl": ["b"], "lt": "2", "st": 2, "mni": 5, "et": "9"}) else {
            unreachable!()
        };
        let Value::Object(requested) = json!({"lbl": ["b"], "et": "99"}) else { unreachable!() };
        let before = Resource { ty: ResourceType::Cnt, attributes: before, path: "p".into(), creator: None };
        let after = Resource { attributes: after, ..before.clone() };
        let modified = modified_attributes(&after, Some(&before), &requested);
        assert_eq!(modified, json!({"m2m:cnt": {"lt": "2", "st": 2, "et": "9"}}));
    }
}
