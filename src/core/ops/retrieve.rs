//! RETRIEVE: one resource (whole or the attributes asked for), with the resources below
//! it as `rcn` asks. A RETRIEVE with filter usage "discovery" is `discover`.

use super::below;
use crate::core::Cse;
use crate::core::access::{Access, Permission, Touches};
use crate::core::address::{LocalId, LocalTarget};
use crate::core::represent;
use crate::core::request::{Operation, Request, Response};
use crate::core::tree::locate;
use crate::core::types::{edge_instance, rules};
use crate::error::{Error, Result, Rsc};
use crate::resource::Resource;
use crate::storage::Representation;

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
        if request.text_answer
            && rcn == 1
            && request.atrl.is_empty()
            && target.virtual_child.is_none()
            && let Some(answer) = self.retrieve_held(request, &target, &guard)
        {
            return answer;
        }
        let filter = request.filter.clone();
        let atrl = request.atrl.clone();
        let bounds = self.bounds();
        // Mostly reads by name (the target, its policies, a container): answered from
        // memory when they are held.
        let (mut resource, selected) = self
            .storage
            .read_cached(move |tx| {
                let resource = match target.virtual_child {
                    Some(which) => edge_instance(tx, &target.id, which)?,
                    None => locate(tx, &target.id)?,
                };
                let touches = if atrl.is_empty() { Touches::Whole } else { Touches::Attributes(&atrl) };
                guard.check(tx, &resource, Permission::Retrieve, None, touches)?;
                rules(resource.ty).check_read(tx, &resource)?;
                if rcn == 7 && !resource.ty.is_announced() {
                    return Err(Error::bad_request(format!(
                        "{} is not an announced resource: it has no original (rcn 7)",
                        resource.path
                    )));
                }
                let selected = if rcn == 7 { None } else { below(tx, &resource, rcn, &filter, &guard, bounds)? };
                Ok((resource, selected))
            })
            .await?;
        if rcn == 7 {
            return self.original_of(request, &resource).await;
        }
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
            None => resource.into_json(),
        };
        let mut response = Response::new(request, Rsc::Ok, Some(content));
        response.partial = partial;
        Ok(response)
    }

    /// A whole RETRIEVE of a resource held in memory, answered with its JSON text (made once
    /// per version of it, `ctm` and the like written anew). The access decision is made
    /// for this request like any other. `None` when the resource is not held, when the
    /// decision needs what is not held, or when reading it changes it: the caller reads.
    fn retrieve_held(&self, request: &Request, target: &LocalTarget, guard: &Access) -> Option<Result<Response>> {
        let (name, structured) = match &target.id {
            LocalId::Structured(path) => (path.as_str(), true),
            LocalId::Unstructured(ri) => (ri.as_str(), false),
        };
        let text = self.storage.with_held(name, structured, |tx, held| {
            let resource = &held.resource;
            guard.check(tx, resource, Permission::Retrieve, None, Touches::Whole)?;
            let type_rules = rules(resource.ty);
            type_rules.check_read(tx, resource)?;
            if type_rules.writes_on_retrieve(resource) {
                return Ok(None);
            }
            Ok(held.text.get_or_init(|| represent::text(resource)).as_ref().map(Representation::stamped))
        });
        match text? {
            Ok(Some(text)) => {
                let mut response = Response::new(request, Rsc::Ok, None);
                response.text = Some(text);
                Some(Ok(response))
            }
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }

    /// `rcn` 7 on an announced resource: the original, retrieved through its link in the
    /// requester's name (the original's CSE decides whether it may see it).
    async fn original_of(&self, request: &Request, announced: &Resource) -> Result<Response> {
        let lnk = announced
            .str("lnk")
            .ok_or_else(|| Error::internal(format!("the announced resource {} has no lnk", announced.path)))?;
        let mut forwarded = Request::new(Operation::Retrieve, lnk, request.originator.as_deref());
        forwarded.rvi = request.rvi.clone();
        forwarded.caller = request.caller.clone();
        let answer = Box::pin(self.handle(forwarded)).await;
        let mut response = Response::new(request, answer.rsc, answer.content);
        response.vsi = request.vsi.clone();
        Ok(response)
    }
}
