//! The announcer: makes the announced copies of this CSE's resources on the CSEs their
//! `at` names, keeps them current, and removes them, following what is committed.
//!
//! The `at` attribute is the durable state: a bare CSE-ID is an announcement still to
//! make, `<CSE-ID>/<ri>` one made (the announced copy's `ri` there). So nothing is lost
//! when the target cannot be reached, when this CSE is not registered yet or restarts:
//! what is bare is announced once it can be — at start, after every registration, and
//! every `check_interval` while some is waiting. Nothing of this runs inside a client's
//! request: a CREATE with `at` answers at once, and its `at` is rewritten when the
//! announcement is made.
//!
//! Placement: a copy goes below the copy of its parent on the same CSE when the parent
//! is announced there; otherwise below this CSE's `<remoteCSE>` on that CSE (the
//! registrar), so the registrar removes what a registree announced with its registration.
//! An instance whose parent is not announced there waits for it.
//!
//! Updates send what changed in the announced attributes since the last send (removed
//! ones as `null`; nothing when nothing announced changed); after a start (nothing sent
//! yet) and after each registration the whole set is sent once, and a copy found gone
//! (4004) is made again. Copies of resources deleted, or of `at` entries removed, are
//! deleted; one that cannot be deleted now is tried again every round.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod place;

use super::{Inner, RegistrarView, RegistrationStatus};
use crate::core::request::{Operation, Request, Response};
use crate::error::{Error, Result, Rsc};
use crate::event::Event;
use crate::id::cse_of;
use crate::resource::{Resource, ResourceType};
use crate::storage::{Change, ChangeSet};

/// The original types this CSE announces.
use crate::core::types::ANNOUNCEABLE;

/// What was last sent for one original.
struct Copies {
    /// Its structured path (its children's copies may hang below its copies).
    path: String,
    /// Per target CSE: the copy's `ri` there and the body last sent.
    targets: HashMap<String, (String, Map<String, Value>)>,
}

/// One `at` entry read: the target CSE and, once announced, the copy's `ri` there.
/// An entry whose copy part is more than one ID element was not written by an announcer
/// (`at` from before this CSE announced was stored as sent): not followed.
fn entry_parts(entry: &str) -> Option<(&str, Option<&str>)> {
    let csi = cse_of(entry)?;
    let remote = entry.get(csi.len() + 1..).filter(|rest| !rest.is_empty());
    if remote.is_some_and(|remote| remote.contains('/')) {
        return None;
    }
    Some((csi, remote))
}

struct Announcer {
    inner: Arc<Inner>,
    /// Cancelled when the manager stops: a request in flight is abandoned (a target that
    /// never answers must not hold up the stop).
    token: CancellationToken,
    copies: HashMap<String, Copies>,
    /// Originals to look at, in the order they came (parents before children).
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Originals with an entry still to announce.
    pending: HashSet<String>,
    /// Copies to delete (`<CSE-ID>/<ri>`).
    withdrawals: Vec<String>,
    /// Those that could not be deleted yet: tried again when the retry is due.
    withdrawals_waiting: Vec<String>,
    /// Of those, the ones whose original stays (its `at` changed): its path, so that the
    /// copies below it are looked at once it is gone.
    withdrawn_from: HashMap<String, String>,
    /// The announcing originals could not be read: read them all again next round.
    rescan_failed: bool,
    /// Per target CSE that is not a registrar: this CSE's announced CSEBase there
    /// (`<CSE-ID>/<ri>`), the parent of the copies whose parent is not announced there.
    anchors: HashMap<String, String>,
}

impl Inner {
    /// Run the announcer until `token` is cancelled, following the commits of the
    /// announceable types (`receivers`, in the order of [`ANNOUNCEABLE`]), the
    /// registrations (`events`) and the registrars' states (`statuses`: what waits is
    /// tried again when one is reached again), all subscribed to before the monitor starts.
    pub(super) async fn announce(
        self: Arc<Self>,
        mut receivers: [broadcast::Receiver<Arc<ChangeSet>>; 5],
        mut events: broadcast::Receiver<Event>,
        mut statuses: watch::Receiver<Arc<Vec<RegistrarView>>>,
        token: CancellationToken,
    ) {
        let mut reached = registered_count(&statuses.borrow_and_update());
        let mut announcer = Announcer {
            inner: self.clone(),
            token: token.clone(),
            copies: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            pending: HashSet::new(),
            withdrawals: Vec::new(),
            withdrawals_waiting: Vec::new(),
            withdrawn_from: HashMap::new(),
            rescan_failed: false,
            anchors: HashMap::new(),
        };
        announcer.rescan(None, false).await;
        // When what waits is tried again: set once something waits, not moved by what
        // happens meanwhile (a busy CSE would otherwise never get there).
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            announcer.work(&token).await;
            let waiting =
                !announcer.pending.is_empty() || !announcer.withdrawals_waiting.is_empty() || announcer.rescan_failed;
            if !waiting {
                retry_at = None;
            } else if retry_at.is_none() {
                retry_at = Some(tokio::time::Instant::now() + self.cse.config().registration.check_interval);
            }
            let due = retry_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            let [acp, ae, cnt, cin, csr] = &mut receivers;
            let open = tokio::select! {
                () = token.cancelled() => return,
                changes = acp.recv() => announcer.changed(changes).await,
                changes = ae.recv() => announcer.changed(changes).await,
                changes = cnt.recv() => announcer.changed(changes).await,
                changes = cin.recv() => announcer.changed(changes).await,
                changes = csr.recv() => announcer.changed(changes).await,
                event = events.recv() => match event {
                    Ok(Event::RegisteredToRegistrar { registrar_csi, .. }) => {
                        // A new place in the tree: the registrar may have lost what it had,
                        // and the copies elsewhere, carried by the registrations above, may
                        // have gone with an old place: every copy is sent whole once.
                        announcer.anchors.clear();
                        announcer.rescan(Some(registrar_csi), true).await;
                        announcer.rescan(None, true).await;
                        true
                    }
                    Ok(Event::RemoteCseRegistered { csr }) => {
                        // A registree that registers anew may have lost what it held.
                        if let Some(csi) = csr.str("csi") {
                            announcer.rescan(Some(csi.to_string()), true).await;
                        }
                        true
                    }
                    Ok(_) => true,
                    Err(RecvError::Lagged(_)) => {
                        announcer.rescan(None, false).await;
                        true
                    }
                    Err(RecvError::Closed) => false,
                },
                changed = statuses.changed() => {
                    if changed.is_ok() {
                        let now = registered_count(&statuses.borrow_and_update());
                        if now > reached {
                            retry_at = None;
                            announcer.retry().await;
                        }
                        reached = now;
                    }
                    changed.is_ok()
                }
                () = tokio::time::sleep_until(due) => {
                    retry_at = None;
                    announcer.retry().await;
                    true
                }
            };
            if !open {
                // The CSE is going away.
                return;
            }
        }
    }
}

impl Announcer {
    /// Look at every original announcing (to `target`, or anywhere) again, sending the
    /// whole announced set once: after a registration the registrar may have lost what
    /// it had.
    async fn rescan(&mut self, target: Option<String>, resend: bool) {
        let originals = match self.inner.cse.announcing(target.clone()).await {
            Ok(originals) => originals,
            Err(error) => {
                warn!(error = %error.detail(), "cannot read the announced resources; trying again later");
                self.rescan_failed = true;
                return;
            }
        };
        // What was sent is no longer known to be there: the next send is the whole set.
        for copies in self.copies.values_mut().filter(|_| resend) {
            for (csi, (_, sent)) in copies.targets.iter_mut() {
                if target.as_ref().is_none_or(|target| target == csi) {
                    sent.clear();
                }
            }
        }
        if let Some(csi) = &target {
            debug!(target = %csi, originals = originals.len(), "announcing again after the registration");
            if let Err(error) = self.sweep(csi, &originals).await {
                debug!(target = %csi, error = %error.detail(), "stale copies not swept");
            }
        } else {
            // Originals deleted meanwhile are known by their copies only.
            let known: Vec<String> = self.copies.keys().cloned().collect();
            for ri in known {
                self.enqueue(&ri);
            }
        }
        for original in originals {
            self.enqueue(original.ri());
        }
    }

    /// Try again what waits.
    async fn retry(&mut self) {
        if std::mem::take(&mut self.rescan_failed) {
            self.rescan(None, false).await;
        }
        self.withdrawals.append(&mut self.withdrawals_waiting);
        let pending: Vec<String> = self.pending.drain().collect();
        for ri in pending {
            self.enqueue(&ri);
        }
    }

    fn enqueue(&mut self, ri: &str) {
        if self.queued.insert(ri.to_string()) {
            self.queue.push_back(ri.to_string());
        }
    }

    /// What a commit changed in announceable resources; `false` once no commit can come.
    async fn changed(&mut self, changes: std::result::Result<Arc<ChangeSet>, RecvError>) -> bool {
        let changes = match changes {
            Ok(changes) => changes,
            Err(RecvError::Lagged(_)) => {
                self.rescan(None, false).await;
                return true;
            }
            Err(RecvError::Closed) => return false,
        };
        for change in &changes.changes {
            let resource = change.resource();
            if !ANNOUNCEABLE.contains(&resource.ty) {
                continue;
            }
            match change {
                Change::Created(_) | Change::Updated(_) => {
                    if resource.attributes.contains_key("at") || self.copies.contains_key(resource.ri()) {
                        self.enqueue(resource.ri());
                    }
                }
                Change::Deleted(_) => self.deleted(resource),
            }
        }
        true
    }

    /// The original (and what was below it) is gone: so go its copies.
    fn deleted(&mut self, resource: &Resource) {
        let mut gone: Vec<String> = Vec::new();
        if resource.ty == ResourceType::Cin {
            gone.extend(self.copies.contains_key(resource.ri()).then(|| resource.ri().to_string()));
        } else {
            let below = format!("{}/", resource.path);
            gone.extend(
                self.copies
                    .iter()
                    .filter(|(_, copies)| copies.path == resource.path || copies.path.starts_with(&below))
                    .map(|(ri, _)| ri.clone()),
            );
        }
        let mut withdrawn: HashSet<String> = HashSet::new();
        for ri in gone {
            if let Some(copies) = self.copies.remove(&ri) {
                withdrawn.extend(copies.targets.into_iter().map(|(csi, (remote, _))| format!("{csi}/{remote}")));
            }
        }
        for entry in resource.str_list("at") {
            if matches!(entry_parts(&entry), Some((_, Some(_)))) {
                withdrawn.insert(entry);
            }
        }
        self.withdrawals.extend(withdrawn);
    }

    /// Work through the queue and the withdrawals; what fails waits for the next round.
    /// Every instance of a shared database runs an announcer for what is committed
    /// through it; should two make a copy of one original (rescans), the one whose `ri`
    /// did not make it into `at` is withdrawn again.
    async fn work(&mut self, token: &CancellationToken) {
        loop {
            while let Some(ri) = self.queue.pop_front() {
                self.queued.remove(&ri);
                if token.is_cancelled() {
                    return;
                }
                if let Err(error) = self.reconcile(&ri).await {
                    debug!(ri = %ri, error = %error.detail(), "announcement waits");
                    self.pending.insert(ri);
                }
            }
            let withdrawals = std::mem::take(&mut self.withdrawals);
            if withdrawals.is_empty() {
                break;
            }
            for copy in withdrawals {
                if token.is_cancelled() || !self.withdraw(&copy).await {
                    self.withdrawals_waiting.push(copy);
                }
            }
        }
    }

    /// Bring the copies of one original in line with it.
    async fn reconcile(&mut self, ri: &str) -> Result<()> {
        let cse = &self.inner.cse;
        let owned = ri.to_string();
        let Some(original) = cse.storage.read(move |tx| tx.get(&owned)).await? else {
            // Deleted while its change was not heard (the follower lagged): so go its copies.
            if let Some(copies) = self.copies.remove(ri) {
                self.withdrawals.extend(copies.targets.into_iter().map(|(csi, (remote, _))| format!("{csi}/{remote}")));
            }
            return Ok(());
        };
        let entries = original.str_list("at");
        let mut waiting = false;
        // Copies whose entry is gone from `at`.
        if let Some(copies) = self.copies.get_mut(ri) {
            let dropped: Vec<String> = copies
                .targets
                .iter()
                .filter(|(csi, (remote, _))| !entries.contains(&format!("{csi}/{remote}")))
                .map(|(csi, _)| csi.clone())
                .collect();
            for csi in dropped {
                if let Some((remote, _)) = copies.targets.remove(&csi) {
                    let copy = format!("{csi}/{remote}");
                    self.withdrawn_from.insert(copy.clone(), original.path.clone());
                    self.withdrawals.push(copy);
                }
            }
        }
        let path = original.path.clone();
        for entry in entries {
            let Some((csi, remote)) = entry_parts(&entry) else { continue };
            let outcome = match remote {
                Some(remote) => self.refresh(&original, csi, remote).await,
                None => self.create(&original, csi).await,
            };
            if let Err(error) = outcome {
                debug!(original = %path, target = %csi, error = %error.detail(), "not announced yet");
                waiting = true;
            }
        }
        if self.copies.get(ri).is_some_and(|copies| copies.targets.is_empty()) {
            self.copies.remove(ri);
        }
        if waiting {
            return Err(Error::not_reachable(format!("{path}: an announcement waits")));
        }
        Ok(())
    }

    /// Make the copy of `original` on `csi`, and write its `ri` into `at`.
    async fn create(&mut self, original: &Resource, csi: &str) -> Result<()> {
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
    async fn refresh(&mut self, original: &Resource, csi: &str, remote: &str) -> Result<()> {
        let Some(announced) = original.ty.announced() else { return Ok(()) };
        let body = self.body(original, csi);
        let last = self.copies.get(original.ri()).and_then(|copies| copies.targets.get(csi));
        let mut update: Map<String, Value> = match last {
            Some((_, sent)) => {
                let mut changed: Map<String, Value> = body
                    .iter()
                    .filter(|(name, value)| sent.get(*name) != Some(value))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect();
                for name in sent.keys().filter(|name| !body.contains_key(*name)) {
                    changed.insert(name.clone(), Value::Null);
                }
                changed
            }
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
    async fn withdraw(&mut self, copy: &str) -> bool {
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

    fn record(&mut self, original: &Resource, csi: &str, remote: String, body: Map<String, Value>) {
        let copies = self
            .copies
            .entry(original.ri().to_string())
            .or_insert_with(|| Copies { path: original.path.clone(), targets: HashMap::new() });
        copies.targets.insert(csi.to_string(), (remote, body));
    }

    fn request(&self, op: Operation, to: String) -> Request {
        let cse = &self.inner.cse;
        let mut request = Request::new(op, to, Some(&cse.identity.cse_id));
        request.rvi = cse.config().cse.release_version.clone();
        request
    }

    /// Send a request the way any request to another CSE goes (routed, bounded by the
    /// client time-out).
    async fn send(&self, request: Request) -> Result<Response> {
        let response = tokio::select! {
            () = self.token.cancelled() => return Err(Error::not_reachable("stopping: request abandoned")),
            response = self.inner.cse.handle(request) => response,
        };
        if matches!(response.rsc, Rsc::TargetNotReachable | Rsc::RequestTimeout) {
            return Err(Error::new(response.rsc, response.dbg().unwrap_or("not reachable").to_string()));
        }
        Ok(response)
    }
}

/// How many registrars this CSE is registered to and reaches.
fn registered_count(views: &[RegistrarView]) -> usize {
    views.iter().filter(|view| view.status == RegistrationStatus::Registered).count()
}

/// An answer that is not what the step needs, as an error naming where.
fn refused(response: &Response, to: &str) -> Error {
    Error::new(
        response.rsc,
        format!("{to} answered {}: {}", response.rsc.code(), response.dbg().unwrap_or("no details")),
    )
}
