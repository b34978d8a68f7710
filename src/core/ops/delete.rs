//! DELETE: a resource and its subtree (or a container's newest or oldest instance), with
//! what its type changes elsewhere, in one transaction.

use super::below;
use crate::core::Cse;
use crate::core::access::{Access, Permission, Touches};
use crate::core::address::LocalTarget;
use crate::core::request::{FilterCriteria, Operation, Request, Response};
use crate::core::tree::locate;
use crate::core::types::{edge_instance, remove, rules};
use crate::error::{Error, Result, Rsc};

impl Cse {
    pub(in crate::core) async fn delete(
        &self,
        request: &Request,
        target: LocalTarget,
        guard: Access,
    ) -> Result<Response> {
        let rcn = match target.virtual_child {
            // DELETE of la/ol answers with the deleted instance.
            Some(_) => 1,
            None => request.rcn.unwrap_or(0),
        };
        let bounds = self.bounds();
        let (resource, selected) = self
            .storage
            .write(move |tx| {
                let resource = match target.virtual_child {
                    Some(which) => edge_instance(tx, &target.id, which)?,
                    None => locate(tx, &target.id)?,
                };
                let type_rules = rules(resource.ty);
                if let Some(refusal) = type_rules.refuses(Operation::Delete) {
                    return Err(Error::not_allowed(refusal));
                }
                guard.check(tx, &resource, Permission::Delete, None, Touches::Whole)?;
                type_rules.check_read(tx, &resource)?;
                // What is shown of the deleted subtree is what the originator may read.
                let selected = below(tx, &resource, rcn, &FilterCriteria::default(), &guard, bounds)?;
                remove(tx, &resource)?;
                Ok((resource, selected))
            })
            .await?;
        let partial = selected.as_ref().and_then(|selected| selected.partial);
        let content = match (rcn, selected) {
            (0, _) => None,
            (_, Some(selected)) => Some(self.with_below(request, &resource, rcn, selected)),
            (_, None) => Some(resource.to_json()),
        };
        let mut response = Response::new(request, Rsc::Deleted, content);
        response.partial = partial;
        Ok(response)
    }
}
