//! Where an announced copy goes on a target CSE, what it carries, and which copies there
//! are stale.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tracing::info;

use super::{Announcer, entry_parts, refused};
use crate::core::request::Operation;
use crate::core::types::{ANNOUNCEABLE, announced_attributes, announced_body};
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType};

impl Announcer {
    /// Delete the copies below this CSE's CSR at the registrar `csi` (or below its anchor
    /// there, for another CSE) that no original
    /// names any more (their originals were deleted, or their `at` changed, while this CSE
    /// could not tell the registrar: it was down, or unreachable).
    pub(super) async fn sweep(&mut self, csi: &str, originals: &[Resource]) -> Result<()> {
        let registrar = self.registrar(csi);
        let at_registrar = registrar.is_some();
        let base = match registrar {
            Some(registrar) => registrar.own_csr_path(),
            None => match self.find_anchor(csi).await? {
                Some(anchor) => anchor,
                None => return Ok(()),
            },
        };
        let named: HashSet<String> = originals
            .iter()
            .flat_map(|original| original.str_list("at"))
            .filter_map(|entry| match entry_parts(&entry) {
                Some((target, Some(remote))) if target == csi => Some(remote.to_string()),
                _ => None,
            })
            .collect();
        for ty in ANNOUNCEABLE {
            let Some(announced) = ty.announced() else { continue };
            let mut request = self.request(Operation::Retrieve, base.clone());
            let code = announced.code().to_string();
            for (name, value) in [("fu", "1"), ("drt", "2"), ("ty", code.as_str())] {
                request.set_parameter(name, value)?;
            }
            // As it goes on the wire to the registrar.
            request.query = Some(format!("fu=1&drt=2&ty={code}"));
            let response = self.send(request).await?;
            if response.rsc == Rsc::NotFound && !at_registrar {
                // The anchor went (the target lost its data): found or made anew next time.
                self.anchors.remove(csi);
                return Ok(());
            }
            if response.rsc != Rsc::Ok {
                return Err(refused(&response, &base));
            }
            let found: Vec<String> = response
                .content
                .as_ref()
                .and_then(|content| content.get("m2m:uril"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|id| crate::id::last_element(id).to_string())
                .filter(|ri| !named.contains(ri))
                .collect();
            for ri in found {
                info!(target = %csi, copy = %ri, "copy of an original that no longer names it: withdrawing");
                self.withdrawals.push(format!("{csi}/{ri}"));
            }
        }
        Ok(())
    }

    /// Where the copy of `original` goes on `csi`: below its parent's copy there, or
    /// below this CSE's CSR there. `Err` while that is not possible yet.
    pub(super) async fn placement(&mut self, original: &Resource, csi: &str) -> Result<String> {
        let cse = &self.inner.cse;
        let pi = original.pi().to_string();
        let parent = cse.storage.read(move |tx| tx.get(&pi)).await?;
        if let Some(parent) = parent.filter(|parent| parent.ty != ResourceType::CseBase) {
            for entry in parent.str_list("at") {
                match entry_parts(&entry) {
                    Some((target, Some(_))) if target == csi => return Ok(entry),
                    Some((target, None)) if target == csi => {
                        return Err(Error::not_reachable(format!("the parent {} is not announced yet", parent.path)));
                    }
                    _ => {}
                }
            }
            if original.ty == ResourceType::Cin {
                return Err(Error::bad_request(format!(
                    "a contentInstance is announced below its container's copy: {} is not announced to {csi}",
                    parent.path
                )));
            }
        }
        let registrar = self.registrar(csi);
        let Some(registrar) = registrar else {
            return self.anchor(csi).await;
        };
        // Registered there: the local CSR of the registrar exists (in a database shared by
        // instances, whichever instance's monitor registered).
        if !self.inner.cse.registry.is_registrar(csi) {
            return Err(Error::not_reachable(format!("not registered to {csi} yet")));
        }
        Ok(registrar.own_csr_path())
    }

    /// The announced attributes of `original` as `csi` is to store them: the link and the
    /// IDs of this CSE's resources SP-relative, or absolute for a CSE of another service
    /// provider.
    pub(super) fn body(&self, original: &Resource, csi: &str) -> Map<String, Value> {
        let identity = &self.inner.cse.identity;
        let other_sp = csi.starts_with("//");
        let own = if other_sp { identity.cse_id.absolute(&identity.sp_id) } else { identity.cse_id.to_string() };
        let id = |text: &str| {
            let sp_relative = identity.sp_relative(text);
            match sp_relative.strip_prefix(identity.cse_id.as_str()).filter(|_| other_sp) {
                Some(rest) => format!("{own}{rest}"),
                None => sp_relative,
            }
        };
        let mut body = announced_body(original, &format!("{own}/{}", original.ri()));
        if let Some(acpi) = body.get_mut("acpi").and_then(Value::as_array_mut) {
            for entry in acpi.iter_mut() {
                if let Some(text) = entry.as_str() {
                    *entry = Value::String(id(text));
                }
            }
        }
        if original.ty == ResourceType::Acp {
            for set in ["pv", "pvs"] {
                for rule in body
                    .get_mut(set)
                    .and_then(|set| set.get_mut("acr"))
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for originator in rule.get_mut("acor").and_then(Value::as_array_mut).into_iter().flatten() {
                        if let Some(text) = originator.as_str().filter(|text| *text != "all") {
                            *originator = Value::String(id(text));
                        }
                    }
                }
            }
        }
        debug_assert!(announced_attributes(original.ty).is_some());
        body
    }

    /// The announced CSEBase of this CSE on `csi` (a CSE it is not registered to): the
    /// parent of its copies there, the way the reference CSE places them. Found by
    /// discovery (`ty=10005`, `lnk` naming this CSEBase), else created.
    async fn anchor(&mut self, csi: &str) -> Result<String> {
        if let Some(anchor) = self.find_anchor(csi).await? {
            return Ok(anchor);
        }
        let cse = &self.inner.cse;
        let identity = &cse.identity;
        let link = self.own_link(csi);
        let base = format!("{csi}/-");
        let cse_base = cse.cse_base().await?;
        let mut body = Map::new();
        body.insert("rn".into(), Value::String(format!("{}_{}", identity.sp_id, identity.resource_name)));
        body.insert("lnk".into(), Value::String(link));
        if let Some(srv) = cse_base.attributes.get("srv") {
            body.insert("srv".into(), srv.clone());
        }
        let mut request = self.request(Operation::Create, base.clone());
        request.ty = Some(u64::from(ResourceType::CseBaseAnnc.code()));
        request.content = Some(serde_json::json!({ ResourceType::CseBaseAnnc.wrapper(): body.clone() }));
        let mut response = self.send(request.clone()).await?;
        if response.rsc == Rsc::Conflict {
            // The name is taken (by anyone: it is predictable): let the target name it.
            body.remove("rn");
            request.rqi = crate::resource::random_id(10);
            request.content = Some(serde_json::json!({ ResourceType::CseBaseAnnc.wrapper(): body }));
            response = self.send(request).await?;
        }
        if response.rsc != Rsc::Created {
            return Err(refused(&response, &base));
        }
        let ri = response
            .content
            .as_ref()
            .and_then(|content| content.get(ResourceType::CseBaseAnnc.wrapper()))
            .and_then(|anchor| anchor.get("ri"))
            .and_then(Value::as_str)
            .map(|ri| crate::id::last_element(ri).to_string())
            .ok_or_else(|| Error::internal(format!("{csi} created the announced CSEBase without telling its ri")))?;
        let anchor = format!("{csi}/{ri}");
        info!(target = %csi, anchor = %anchor, "announced CSEBase made");
        self.anchors.insert(csi.to_string(), anchor.clone());
        Ok(anchor)
    }

    /// This CSE's CSEBase as `csi` is to link to it (absolute for another SP).
    fn own_link(&self, csi: &str) -> String {
        let identity = &self.inner.cse.identity;
        let own =
            if csi.starts_with("//") { identity.cse_id.absolute(&identity.sp_id) } else { identity.cse_id.to_string() };
        format!("{own}/{}", identity.resource_id)
    }

    /// This CSE's announced CSEBase on `csi`, if there is one (by discovery of its `lnk`).
    async fn find_anchor(&mut self, csi: &str) -> Result<Option<String>> {
        if let Some(anchor) = self.anchors.get(csi) {
            return Ok(Some(anchor.clone()));
        }
        let link = self.own_link(csi);
        let base = format!("{csi}/-");
        let mut request = self.request(Operation::Retrieve, base.clone());
        let code = ResourceType::CseBaseAnnc.code().to_string();
        for (name, value) in [("fu", "1"), ("drt", "2"), ("ty", code.as_str()), ("lnk", link.as_str())] {
            request.set_parameter(name, value)?;
        }
        request.query = Some(format!("fu=1&drt=2&ty={code}&lnk={link}"));
        let response = self.send(request).await?;
        let found = response
            .content
            .as_ref()
            .and_then(|content| content.get("m2m:uril"))
            .and_then(Value::as_array)
            .and_then(|uris| uris.first())
            .and_then(Value::as_str)
            .map(|id| crate::id::last_element(id).to_string());
        let Some(ri) = found.filter(|_| response.rsc == Rsc::Ok) else { return Ok(None) };
        let anchor = format!("{csi}/{ri}");
        self.anchors.insert(csi.to_string(), anchor.clone());
        Ok(Some(anchor))
    }
}
