//! RETRIEVE: one resource (whole or the attributes asked for), with the resources below
//! it as `rcn` asks; and discovery, the resources below a target that match the filter.

use serde_json::{Value, json};

use super::below;
use crate::core::Cse;
use crate::core::access::{Access, Permission, Touches};
use crate::core::address::LocalTarget;
use crate::core::represent;
use crate::core::request::{Request, Response};
use crate::core::select::{Measure, select};
use crate::core::tree::locate;
use crate::core::types::{edge_instance, rules};
use crate::error::{Error, Result, Rsc};
use crate::resource::Resource;

impl Cse {
    pub(in crate::core) async fn retrieve(
        &self,
        request: &Request,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
        if request.filter.is_discovery() {
            return self.discover(request, target, guard).await;
        }
        let rcn = request.rcn.unwrap_or(1);
        if !request.atrl.is_empty() && rcn != 1 {
            return Err(Error::bad_request(format!("a partial retrieve (atrl) is for rcn 1 only, not rcn {rcn}")));
        }
        let filter = request.filter.clone();
        let atrl = request.atrl.clone();
        let bounds = self.bounds();
        let (mut resource, selected) = self
            .storage
            .read(move |tx| {
                let resource = match target.virtual_child {
                    Some(which) => edge_instance(tx, &target.id, which)?,
                    None => locate(tx, &target.id)?,
                };
                let touches = if atrl.is_empty() { Touches::Whole } else { Touches::Attributes(&atrl) };
                guard.check(tx, &resource, Permission::Retrieve, None, touches)?;
                rules(resource.ty).check_read(tx, &resource)?;
                if rcn == 7 {
                    return Err(Error::bad_request(format!(
                        "{} is not an announced resource: it has no original (rcn 7)",
                        resource.path
                    )));
                }
                let selected = below(tx, &resource, rcn, &filter, &guard, bounds)?;
                Ok((resource, selected))
            })
            .await?;
        let type_rules = rules(resource.ty);
        if type_rules.writes_on_retrieve(&resource) {
            let ri = resource.ri().to_string();
            self.storage.write(move |tx| type_rules.retrieved(tx, &ri)).await?;
        }
        type_rules.present(&mut resource);
        let partial = selected.as_ref().and_then(|selected| selected.partial);
        let content = match selected {
            Some(selected) => self.with_below(request, &resource, rcn, selected),
            None if !request.atrl.is_empty() => represent::partial(&resource, &request.atrl)?,
            None => resource.to_json(),
        };
        let mut response = Response::new(request, Rsc::Ok, Some(content));
        response.partial = partial;
        Ok(response)
    }

    async fn discover(&self, request: &Request, target: LocalTarget, guard: Access) -> Result<Response> {
        if target.virtual_child.is_some() {
            return Err(Error::bad_request("discovery cannot start at la or ol"));
        }
        let filter = request.filter.clone();
        let bounds = self.bounds();
        let selected = self
            .storage
            .read(move |tx| {
                // The target only has to exist: what is found is checked one by one.
                let root = locate(tx, &target.id)?;
                select(tx, &root, &filter, &guard, Permission::Discovery, Measure::Reference, bounds)
            })
            .await?;
        let address = |resource: &Resource| self.scoped(request, self.address_of(resource, request.drt));
        let content = match request.rcn.unwrap_or(11) {
            6 => json!({ "m2m:rrl": { "rrf": represent::references(&selected.resources, address) } }),
            _ => {
                let uris: Vec<Value> =
                    selected.resources.iter().map(|resource| Value::String(address(resource))).collect();
                json!({ "m2m:uril": uris })
            }
        };
        let mut response = Response::new(request, Rsc::Ok, Some(content));
        response.partial = selected.partial;
        Ok(response)
    }
}
