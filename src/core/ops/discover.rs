//! Discovery: the addresses of the resources below a target that match the filter
//! criteria and that the originator may discover (each checked on its own), as a list
//! (`rcn` 11) or references (`rcn` 6), within the bounds of one answer.

use serde_json::{Value, json};

use crate::core::Cse;
use crate::core::access::{Access, Permission};
use crate::core::address::LocalTarget;
use crate::core::represent;
use crate::core::request::{Request, Response};
use crate::core::select::{Measure, select};
use crate::core::tree::locate;
use crate::error::{Error, Result, Rsc};
use crate::resource::Resource;

impl Cse {
    pub(in crate::core) async fn discover(
        &self,
        request: &Request,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
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
