//! Commits of other instances: each batch that changed a `<remoteCSE>` announces it on a
//! channel (`NOTIFY`, delivered with the commit), and every instance listens, reads what
//! changed and hands it to its observers (the routing registry). So a CSE that registered
//! through one instance is reachable through all of them.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tls::Tls;
use super::tx::{COLUMNS, resource_of};

use crate::error::Result;
use crate::resource::{Resource, ResourceType};
use crate::storage::{Change, ChangeSet};

/// The channel of the announcements.
pub(super) const CHANNEL: &str = "acme_changes";

/// The largest announcement (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7000;

/// After a lost connection, listen again after this long.
const RECONNECT: Duration = Duration::from_secs(1);

/// The announcements of what a batch changed that other instances follow: `{"from": id,
/// "changes": [{"k": "c"|"u"|"d", "ri": .., "csi": ..}], "enqueued": n}` (`enqueued`:
/// notifications it put in the outbox, which wakes the sender wherever it runs), cut to fit.
pub(super) fn announcements(instance: &str, outcomes: &[Result<ChangeSet>]) -> Vec<String> {
    let enqueued: usize = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).map(|set| set.enqueued).sum();
    let mut payloads = Vec::new();
    let mut entries: Vec<Value> = Vec::new();
    let mut size = 0;
    let changes = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).flat_map(|set| &set.changes);
    for change in changes.filter(|change| change.resource().ty == ResourceType::Csr) {
        let (kind, resource) = match change {
            Change::Created(resource) => ("c", resource),
            Change::Updated(resource) => ("u", resource),
            Change::Deleted(resource) => ("d", resource),
        };
        let entry = json!({"k": kind, "ri": resource.ri(), "csi": resource.str("csi")});
        let length = entry.to_string().len() + 1;
        if size + length > MAX_PAYLOAD && !entries.is_empty() {
            payloads.push(json!({"from": instance, "changes": std::mem::take(&mut entries)}).to_string());
            size = 0;
        }
        size += length;
        entries.push(entry);
    }
    if !entries.is_empty() || enqueued > 0 {
        payloads.push(json!({"from": instance, "changes": entries, "enqueued": enqueued}).to_string());
    }
    payloads
}

/// Listen to the announcements of the other instances until `stop`; what they changed, as
/// read from the database, goes to `observed`.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: Tls,
    pool: Pool,
    instance: String,
    observed: mpsc::UnboundedSender<ChangeSet>,
    stop: CancellationToken,
    name: String,
) {
    let mut reconnected = false;
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = tls.connect(&config) => connected,
        };
        let (client, driver, mut heard) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                tracing::debug!(%error, "{name}: cannot connect to listen to other instances");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT) => continue,
                }
            }
        };
        if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(%error, "{name}: cannot listen to other instances; trying again");
            driver.abort();
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONNECT) => continue,
            }
        }
        if std::mem::replace(&mut reconnected, true) {
            // Announcements may have been missed while not listening: every CSE as it is now.
            match current(&pool).await {
                Ok(changes) if !changes.changes.is_empty() => {
                    if observed.send(changes).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error.detail(), "{name}: cannot read the registered CSEs"),
            }
        }
        loop {
            let payload = tokio::select! {
                () = stop.cancelled() => return,
                payload = heard.recv() => payload,
            };
            let Some(payload) = payload else { break };
            match changes_of(&pool, &instance, payload.payload()).await {
                Ok(Some(changes)) => {
                    if observed.send(changes).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error.detail(), "{name}: cannot read what another instance changed")
                }
            }
        }
        tracing::warn!("{name}: the connection listening to other instances was lost; listening again");
        drop(client);
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Every `<remoteCSE>` as it is now, as updates.
async fn current(pool: &Pool) -> Result<ChangeSet> {
    let client = connection(pool).await?;
    let sql =
        format!("SELECT {COLUMNS} FROM resources WHERE ty = $1{}", crate::storage::by_type_index(ResourceType::Csr));
    let rows = client.query(&sql, &[&i32::from(ResourceType::Csr.code())]).await?;
    let changes = rows.iter().map(|row| Ok(Change::Updated(Arc::new(resource_of(row)?)))).collect::<Result<_>>()?;
    Ok(ChangeSet { changes, enqueued: 0 })
}

async fn connection(pool: &Pool) -> Result<deadpool_postgres::Object> {
    pool.get().await.map_err(|error| crate::error::Error::internal(format!("no connection to the database: {error}")))
}

/// What an announcement of another instance says changed, read from the database (`None`:
/// this instance's own, or nothing followed).
async fn changes_of(pool: &Pool, instance: &str, payload: &str) -> Result<Option<ChangeSet>> {
    let Ok(announcement) = serde_json::from_str::<Value>(payload) else { return Ok(None) };
    if announcement["from"].as_str() == Some(instance) {
        return Ok(None);
    }
    let entries = announcement["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE ri = $1");
    let mut client = None;
    let mut changes = Vec::new();
    for entry in entries {
        let (Some(kind), Some(ri)) = (entry["k"].as_str(), entry["ri"].as_str()) else { continue };
        if kind == "d" {
            // Gone: what the observers need to forget it.
            let mut attributes = Map::new();
            attributes.insert("ri".into(), json!(ri));
            attributes.insert("csi".into(), entry["csi"].clone());
            let resource = Resource { ty: ResourceType::Csr, attributes, path: String::new(), creator: None };
            changes.push(Change::Deleted(Arc::new(resource)));
            continue;
        }
        // As it is now (a later announcement tells of what came after).
        if client.is_none() {
            client = Some(connection(pool).await?);
        }
        let Some(client) = client.as_ref() else { continue };
        let Some(row) = client.query_opt(&sql, &[&ri]).await? else { continue };
        let resource = resource_of(&row)?;
        changes.push(if kind == "c" {
            Change::Created(Arc::new(resource))
        } else {
            Change::Updated(Arc::new(resource))
        });
    }
    let enqueued = announcement["enqueued"].as_u64().map_or(0, |count| usize::try_from(count).unwrap_or(usize::MAX));
    Ok((!changes.is_empty() || enqueued > 0).then_some(ChangeSet { changes, enqueued }))
}
