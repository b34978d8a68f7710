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

use serde_json::{Map, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

mod copies;
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
    /// announceable types (`changes`, one receiver for all, in commit order), the
    /// registrations (`events`) and the registrars' states (`statuses`: what waits is
    /// tried again when one is reached again), all subscribed to before the monitor starts.
    pub(super) async fn announce(
        self: Arc<Self>,
        mut changes: broadcast::Receiver<Arc<ChangeSet>>,
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
        // At start nothing is known to be there: every copy is sent whole once, and the
        // copies owed a withdrawal from before the stop are swept.
        announcer.rescan(None, true).await;
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
            let open = tokio::select! {
                () = token.cancelled() => return,
                committed = changes.recv() => announcer.changed(committed).await,
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
            if resend {
                // Every other CSE announced to: copies there that no original names any
                // more (withdrawals owed from before a restart) go.
                let mut targets: Vec<String> = originals
                    .iter()
                    .flat_map(|original| original.str_list("at"))
                    .filter_map(|entry| entry_parts(&entry).map(|(csi, _)| csi.to_string()))
                    .filter(|csi| self.registrar(csi).is_none())
                    .collect();
                targets.sort();
                targets.dedup();
                for csi in targets {
                    if let Err(error) = self.sweep(&csi, &originals).await {
                        debug!(target = %csi, error = %error.detail(), "stale copies not swept");
                    }
                }
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
                // Not registered to that registrar (yet): the registration sends it all.
                Some(_) if self.unregistered_registrar(csi) => {
                    Err(Error::not_reachable(format!("not registered to {csi} yet")))
                }
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

    /// Whether `csi` is a registrar of this CSE that it is not registered to now.
    fn unregistered_registrar(&self, csi: &str) -> bool {
        self.registrar(csi).is_some() && !self.inner.cse.registry.is_registrar(csi)
    }

    /// The configured registrar `csi`, if it is one.
    fn registrar(&self, csi: &str) -> Option<Arc<super::Registrar>> {
        self.inner.registrars().iter().find(|registrar| registrar.info.cse_id == csi).cloned()
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
