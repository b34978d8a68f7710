//! What the remote-CSE manager and the start-up code change in the local tree directly,
//! not as a request: the CSEBase's attributes learned from a registrar, the CSR that
//! describes a registrar, deletions of local CSRs. Each is one transaction whose changes
//! leave the commit like a request's.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::core::Cse;
use crate::core::notify::events;
use crate::core::tree::expiration;
use crate::core::types::{ANNOUNCEABLE, remove, remove_registrar_record};
use crate::error::{Error, Result};
use crate::id::resource_name_of;
use crate::resource::{Resource, ResourceType, Timestamp};

/// An instance of a shared database that has not said it is alive for this long is gone
/// (each says so every [`INSTANCE_HEARTBEAT`]).
pub(crate) const INSTANCE_STALE: Duration = Duration::from_secs(10);
/// How often an instance of a shared database says it is alive.
pub(crate) const INSTANCE_HEARTBEAT: Duration = Duration::from_secs(2);

impl Cse {
    /// Fill the routing table from the `<remoteCSE>` resources stored now (at start).
    pub(crate) async fn load_registry(&self) -> Result<()> {
        let csrs = self.storage.read(|tx| tx.by_type(ResourceType::Csr)).await?;
        self.registry.load(csrs);
        Ok(())
    }

    /// The CSEBase.
    pub async fn cse_base(&self) -> Result<Resource> {
        let ri = self.config().cse.resource_id.clone();
        self.storage.read(move |tx| tx.get(&ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))).await
    }

    /// Set attributes of the CSEBase (what this CSE learns from its registrar). Returns
    /// whether anything changed.
    pub(crate) async fn update_cse_base(&self, changes: Map<String, Value>) -> Result<bool> {
        let ri = self.config().cse.resource_id.clone();
        self.storage
            .write(move |tx| {
                let mut cse_base = tx.get(&ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))?;
                let changed = changes.iter().any(|(name, value)| cse_base.attributes.get(name) != Some(value));
                if changed {
                    let before = cse_base.clone();
                    cse_base.attributes.extend(changes.clone());
                    cse_base.set("lt", Timestamp::now());
                    tx.update(&cse_base)?;
                    events::updated(tx, &before, &cse_base, &Map::new(), None)?;
                }
                Ok(changed)
            })
            .await
    }

    /// This instance serves the database at `poa` (`None`: it is leaving): record that,
    /// forget the instances not heard of for [`INSTANCE_STALE`] (every other one when the
    /// database is this process's alone), and make the CSEBase `poa` the addresses of all,
    /// sorted (so it does not change with the order of starts). Returns whether the CSEBase
    /// changed.
    pub(crate) async fn advertise(&self, poa: Option<Vec<String>>) -> Result<bool> {
        let ri = self.config().cse.resource_id.clone();
        let id = self.instance().to_string();
        let stale = if self.storage.lease().is_shared() { INSTANCE_STALE } else { Duration::ZERO };
        self.storage
            .write(move |tx| {
                let now = Timestamp::now();
                if let Some(poa) = &poa {
                    tx.set_instance(&id, poa, &now.to_string())?;
                }
                let before = now.checked_sub(stale).unwrap_or(now).to_string();
                tx.forget_instances(&before, poa.is_none().then_some(id.as_str()))?;
                let addresses = tx.instance_addresses()?;
                let mut cse_base = tx.get(&ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))?;
                if addresses.is_empty() || cse_base.attributes.get("poa") == Some(&serde_json::json!(addresses)) {
                    return Ok(false);
                }
                let unchanged = cse_base.clone();
                cse_base.set("poa", addresses);
                cse_base.set("lt", now);
                tx.update(&cse_base)?;
                events::updated(tx, &unchanged, &cse_base, &Map::new(), None)?;
                Ok(true)
            })
            .await
    }

    /// Create or refresh the local CSR that describes a registrar (`attributes` as copied
    /// from the registrar's CSEBase, with `csi`, `cb`, `rr`). Returns the stored CSR and
    /// whether it was created.
    pub(crate) async fn put_registrar_csr(&self, attributes: Map<String, Value>) -> Result<(Resource, bool)> {
        let csi = attributes
            .get("csi")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::internal("a registrar CSR needs a csi"))?
            .to_string();
        let max_et = self.config().cse.max_expiration_delta;
        let cse_base_ri = self.config().cse.resource_id.clone();
        self.storage
            .write(move |tx| {
                let name = resource_name_of(&csi);
                let parent = tx.get(&cse_base_ri)?.ok_or_else(|| Error::internal("the CSEBase is missing"))?;
                let now = Timestamp::now();
                if let Some(mut existing) = tx.get(&name)? {
                    if existing.ty != ResourceType::Csr {
                        return Err(Error::conflict(format!("resource {name} exists and is not a CSR")));
                    }
                    let changed = attributes.iter().any(|(key, value)| existing.attributes.get(key) != Some(value));
                    if changed {
                        let before = existing.clone();
                        existing.attributes.extend(attributes.clone());
                        existing.set("lt", now);
                        tx.update(&existing)?;
                        events::updated(tx, &before, &existing, &Map::new(), None)?;
                    }
                    return Ok((existing, false));
                }
                let path = format!("{}/{name}", parent.path);
                if tx.get_by_path(&path)?.is_some() {
                    return Err(Error::conflict(format!(
                        "a resource named {name} already exists under {}",
                        parent.path
                    )));
                }
                let mut csr = Resource {
                    ty: ResourceType::Csr,
                    attributes: attributes.clone(),
                    path,
                    creator: Some(csi.clone()),
                };
                csr.set("ri", name.clone());
                csr.set("rn", name);
                csr.set("pi", parent.ri().to_string());
                csr.set("ty", ResourceType::Csr.code());
                csr.set("ct", now);
                csr.set("lt", now);
                csr.set("et", expiration(None, Some(&parent), max_et)?);
                tx.insert(&csr)?;
                events::created(tx, &parent, &csr, None)?;
                Ok((csr, true))
            })
            .await
    }

    /// Delete the local CSR that describes a registrar (see `types::remove_registrar_record`).
    pub(crate) async fn delete_registrar_record(&self, ri: &str) -> Result<()> {
        let ri = ri.to_string();
        self.storage
            .write(move |tx| match tx.get(&ri)? {
                Some(csr) => remove_registrar_record(tx, &csr),
                None => Ok(()),
            })
            .await
    }

    /// Delete the local resource `expected` (and its subtree) only if it is still stored as
    /// it was read: a registree found unreachable is removed only if the CSR that was
    /// probed is the one stored, not one it re-registered or updated since. Returns
    /// whether it was deleted.
    pub(crate) async fn delete_local_unchanged(&self, expected: &Resource) -> Result<bool> {
        let expected = expected.clone();
        self.storage
            .write(move |tx| match tx.get(expected.ri())? {
                Some(stored) if stored == expected => {
                    remove(tx, &stored)?;
                    Ok(true)
                }
                _ => Ok(false),
            })
            .await
    }
}

impl Cse {
    /// The announceable resources with an `at` entry (all of them, or those naming the CSE
    /// `target`), parents before children.
    pub(crate) async fn announcing(&self, target: Option<String>) -> Result<Vec<Resource>> {
        let mut found = self.storage.read(move |tx| announcing_in(tx, target.as_deref())).await?;
        found.sort_by_key(|resource| resource.path.matches('/').count());
        Ok(found)
    }

    /// Replace the `at` entry `from` of the resource `ri` with `to` (an announcement made:
    /// `<CSE-ID>/<announced ri>`; or lost: the bare CSE-ID again). Bookkeeping of this CSE,
    /// not a change of the resource by anyone: `lt` stays, no notification. Returns whether
    /// the entry was there (the resource may have changed or gone meanwhile).
    pub(crate) async fn rewrite_announcement(&self, ri: String, from: String, to: String) -> Result<bool> {
        self.storage
            .write(move |tx| {
                let Some(mut resource) = tx.get(&ri)? else { return Ok(false) };
                let mut entries = resource.str_list("at");
                let Some(entry) = entries.iter_mut().find(|entry| **entry == from) else { return Ok(false) };
                entry.clone_from(&to);
                resource.set("at", entries);
                tx.update(&resource)?;
                Ok(true)
            })
            .await
    }

    /// The copies on the CSE `csi` are gone (this CSE's registration there ended, and
    /// with it what hung below it): every `at` entry naming a copy there reads the bare
    /// CSE-ID again, an announcement to make once registered anew.
    pub(crate) async fn announcements_lost(&self, csi: String) -> Result<()> {
        self.storage
            .write(move |tx| {
                let prefix = format!("{csi}/");
                for mut resource in announcing_in(&*tx, Some(&csi))? {
                    let entries = resource.str_list("at");
                    if !entries.iter().any(|entry| entry.starts_with(&prefix)) {
                        continue;
                    }
                    let bare: Vec<String> = entries
                        .into_iter()
                        .map(|entry| if entry.starts_with(&prefix) { csi.clone() } else { entry })
                        .collect();
                    resource.set("at", bare);
                    tx.update(&resource)?;
                }
                Ok(())
            })
            .await
    }

    /// Whether the database takes writes now: a write transaction with a statement that
    /// needs write access and changes nothing (for health checks).
    pub(crate) async fn probe_writable(&self) -> Result<()> {
        self.storage.write(|tx| tx.forget_instances("00010101T000000", None)).await
    }

    /// How many notifications wait in the outbox.
    pub(crate) async fn notifications_pending(&self) -> Result<usize> {
        self.storage.read(|tx| tx.outbox_total()).await
    }

    /// What the resource cache holds and how often it answered (for `/metrics`).
    pub fn cache_stats(&self) -> crate::storage::CacheStats {
        self.storage.cache_stats()
    }
}

/// The announceable resources with an `at` entry (naming the CSE `target`, when given).
fn announcing_in(tx: &dyn crate::storage::ReadTx, target: Option<&str>) -> Result<Vec<Resource>> {
    let mut found: Vec<Resource> = tx
        .announced()?
        .into_iter()
        .filter(|resource| ANNOUNCEABLE.contains(&resource.ty))
        .filter(|resource| match target {
            None => true,
            Some(csi) => resource.str_list("at").iter().any(|entry| crate::id::cse_of(entry) == Some(csi)),
        })
        .collect();
    // By type in the order of ANNOUNCEABLE, each in creation order (stable).
    found.sort_by_key(|resource| ANNOUNCEABLE.iter().position(|ty| *ty == resource.ty));
    Ok(found)
}
