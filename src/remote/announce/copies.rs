//! The operations on copies at their targets: make one (and write its `ri` into `at`),
//! bring one up to date, delete one, and look again at those that hung below it.

use serde_json::{Map, Value, json};
use tracing::{debug, info, warn};

use super::{Announcer, entry_parts, refused};
use crate::core::request::Operation;
use crate::error::{Error, Result, Rsc};
use crate::resource::Resource;

impl Announcer {
    /// Make the copy of `original` on `csi`, and write its `ri` into `at`.
    pub(super) async fn create(&mut self, original: &Resource, csi: &str) -> Result<()> {
        let Some(announced) = original.ty.announced() else { return Ok(()) };
        let parent = self.placement(original, csi).await?;
        let identity = &self.inner.cse.identity;
        let body = self.body(original, csi);
        let mut request = self.request(Operation::Create, parent.clone());
        request.ty = Some(u64::from(announced.code()));
        request.content = Some(json!({ announced.wrapper(): body.clone() }));
        let response = self.send(request).await?;
        if response.rsc != Rsc::Created {
            if response.rsc == Rsc::NotFound {
                // The anchor there is gone: found or made again next time.
                self.anchors.retain(|_, anchor| *anchor != parent);
            }
            return Err(refused(&response, &parent));
        }
        let remote = response
            .content
            .as_ref()
            .and_then(|content| content.get(announced.wrapper()))
            .and_then(|copy| copy.get("ri"))
            .and_then(Value::as_str)
            .map(|ri| crate::id::last_element(ri).to_string())
            .ok_or_else(|| Error::internal(format!("{csi} created the announced resource without telling its ri")))?;
        let announced_entry = format!("{csi}/{remote}");
        let recorded = self
            .inner
            .cse
            .rewrite_announcement(original.ri().to_string(), csi.to_string(), announced_entry.clone())
            .await?;
        if !recorded {
            // The original changed or went meanwhile: its copy is not wanted.
            self.withdrawals.push(announced_entry);
            return Ok(());
        }
        info!(original = %original.path, copy = %announced_entry, by = %identity.cse_id, "announced");
        self.record(original, csi, remote, body);
        Ok(())
    }

    /// Send what changed in the announced attributes since the last send (the whole set
    /// when nothing was sent yet); a copy that is gone is made again.
    pub(super) async fn refresh(&mut self, original: &Resource, csi: &str, remote: &str) -> Result<()> {
        let Some(announced) = original.ty.announced() else { return Ok(()) };
        let body = self.body(original, csi);
        let last = self.copies.get(original.ri()).and_then(|copies| copies.targets.get(csi));
        let mut update: Map<String, Value> = match last {
            Some((_, sent)) => crate::resource::attribute_changes(sent, &body),
            None => body.clone(),
        };
        // Set once, at creation: the link, and what the original's type lets nobody change
        // (a peer refuses an update that carries it: `api`, `aei`, a CIN's content...).
        let original_rules = crate::core::types::policy_of;
        update.retain(|name, _| {
            name != "lnk"
                && original_rules(original.ty, name)
                    .is_some_and(|policy| policy.update != crate::resource::Need::NotPermitted)
        });
        if update.is_empty() {
            self.record(original, csi, remote.to_string(), body);
            return Ok(());
        }
        let to = format!("{csi}/{remote}");
        // `acpi` goes alone: an update that changes it may carry nothing else.
        let mut parts = Vec::new();
        if let Some(acpi) = update.remove("acpi") {
            parts.push(Map::from_iter([("acpi".to_string(), acpi)]));
        }
        if !update.is_empty() {
            parts.push(update);
        }
        for part in parts {
            let mut request = self.request(Operation::Update, to.clone());
            request.content = Some(json!({ announced.wrapper(): part }));
            let response = self.send(request).await?;
            match response.rsc {
                Rsc::Updated | Rsc::Ok => {}
                Rsc::NotFound => {
                    info!(original = %original.path, copy = %to, "announced copy gone; announcing again");
                    if let Some(copies) = self.copies.get_mut(original.ri()) {
                        copies.targets.remove(csi);
                    }
                    self.inner.cse.rewrite_announcement(original.ri().to_string(), to, csi.to_string()).await?;
                    return Ok(());
                }
                rsc if (4000..5000).contains(&rsc.code()) => {
                    // Refused for good: sending it again changes nothing.
                    warn!(copy = %to, rsc = rsc.code(), dbg = response.dbg().unwrap_or_default(), "update of an announced copy refused; not sent again");
                }
                _ => return Err(refused(&response, &to)),
            }
        }
        self.record(original, csi, remote.to_string(), body);
        Ok(())
    }

    /// Delete one copy; whether that is done (deleted, gone already, or refused for good:
    /// given up, logged). A copy on this CSE itself is deleted only if it is one: a copy
    /// linking to this CSE (this CSE's own requests pass every access rule here).
    pub(super) async fn withdraw(&mut self, copy: &str) -> bool {
        let identity = &self.inner.cse.identity;
        if let Some((csi, Some(ri))) = entry_parts(copy).filter(|(csi, _)| *csi == identity.cse_id.as_str()) {
            let own = format!("{csi}/");
            let ri = ri.to_string();
            let stored = self.inner.cse.storage.read(move |tx| tx.get(&ri)).await;
            let is_copy = |resource: &Resource| {
                resource.ty.is_announced() && resource.str("lnk").is_some_and(|lnk| lnk.starts_with(&own))
            };
            match stored {
                Ok(Some(resource)) if !is_copy(&resource) => {
                    warn!(copy = %copy, "an at entry names a resource here that is not an announced copy; not deleted");
                    return true;
                }
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(_) => return false,
            }
        }
        let request = self.request(Operation::Delete, copy.to_string());
        match self.send(request).await {
            Ok(response) if matches!(response.rsc, Rsc::Deleted | Rsc::Ok | Rsc::NotFound) => {
                info!(copy = %copy, "announcement withdrawn");
                if let Some(path) = self.withdrawn_from.remove(copy) {
                    self.orphaned(copy, &path);
                }
                true
            }
            Ok(response) if (4000..5000).contains(&response.rsc.code()) => {
                warn!(copy = %copy, rsc = response.rsc.code(), dbg = response.dbg().unwrap_or_default(), "announced copy not withdrawn: refused; given up");
                self.withdrawn_from.remove(copy);
                true
            }
            Ok(response) => {
                debug!(copy = %copy, rsc = response.rsc.code(), "announcement not withdrawn yet");
                false
            }
            Err(error) => {
                debug!(copy = %copy, error = %error.detail(), "announcement not withdrawn yet");
                false
            }
        }
    }

    /// The copies that hung below a withdrawn copy (of the original at `path`) may have
    /// gone with it: their originals send the whole set again, and one found gone is made
    /// again where it belongs now.
    fn orphaned(&mut self, copy: &str, path: &str) {
        let Some((csi, Some(_))) = entry_parts(copy) else { return };
        let below = format!("{path}/");
        let mut look: Vec<String> = Vec::new();
        for (ri, copies) in self.copies.iter_mut().filter(|(_, copies)| copies.path.starts_with(&below)) {
            if let Some((_, sent)) = copies.targets.get_mut(csi) {
                sent.clear();
                look.push(ri.clone());
            }
        }
        for ri in look {
            self.enqueue(&ri);
        }
    }
}
