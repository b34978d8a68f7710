//! Delivery: the sender drains the outbox, and NOTIFY requests are sent and received.
//!
//! The sender takes the oldest notifications of every target and sends them in one run
//! per target, concurrently: each target gets its notifications in order, and a dead or
//! slow one holds up nobody else (a new run starts for any target no run is at, without
//! waiting for the others). It deletes what was delivered and tries the rest again
//! later: after a second, doubling with jitter up to `resource.sub.max_retry_delay`. It
//! gives a notification up only when the target refused it (a 4xxx answer), after
//! `max_attempts` or `max_age`; a target with more than `max_pending_per_target` waiting
//! loses its oldest. Each of these is logged. Every attempt at one notification carries
//! the same request ID, so that a receiver can drop a repeat (delivery is at least once).
//!
//! Targets: a URL gets the NOTIFY as is; an ID (an AE-ID, a resource, a CSE or a resource
//! on another CSE) is a NOTIFY request to that ID, handled like any other request: a
//! local AE gets it at its `poa` (see [`Cse::receive_notify`]), another CSE through the
//! registration tree.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::events;
use crate::core::Cse;
use crate::core::request::{Operation, Request, Response};
use crate::core::types::BLOCKING_UPDATE;
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType, Timestamp};
use crate::storage::{Busy, Pending};

/// Notifications taken from the outbox at once, and at most per target.
const BATCH: usize = 4096;
const RUN: usize = 256;

/// How much longer than one send a claim on notifications lasts (see
/// [`Cse::deliver_due`]).
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// The first retry of a notification.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// How often the outbox is read at least when other instances share the database: their
/// commits wake this sender through the database's announcements, and this catches what a
/// lost announcement would have told.
const SHARED_POLL: Duration = Duration::from_secs(1);

/// The runs of sends under way, one per target at most, and the target of each.
#[derive(Default)]
struct Sends {
    runs: JoinSet<Result<()>>,
    targets: HashMap<tokio::task::Id, String>,
}

impl Sends {
    /// A run ended: its target is free for the next.
    fn ended(&mut self, ended: std::result::Result<(tokio::task::Id, Result<()>), tokio::task::JoinError>) {
        let (id, outcome) = match ended {
            Ok((id, outcome)) => (id, outcome),
            Err(failure) => (failure.id(), Err(Error::internal(format!("a notification run failed: {failure}")))),
        };
        self.targets.remove(&id);
        if let Err(error) = outcome {
            warn!(error = %error.detail(), "cannot update the notification outbox");
        }
    }
}

/// How a delivery attempt ended.
enum Outcome {
    Delivered,
    /// Not now: try again later.
    Retry(String),
    /// Never: the target refused it.
    Refused(String),
}

impl Cse {
    /// Deliver the outbox until `token` is cancelled, while this instance holds the lease
    /// (one sender per database).
    pub(crate) async fn deliver_notifications(self, token: CancellationToken) {
        let lease = self.storage.lease();
        let mut sends = Sends::default();
        loop {
            if !lease.is_held() {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = lease.acquired() => {}
                    Some(ended) = sends.runs.join_next_with_id(), if !sends.runs.is_empty() => {
                        sends.ended(ended);
                        continue;
                    }
                }
            }
            let next = self.deliver_due(&token, &mut sends).await;
            if token.is_cancelled() {
                break;
            }
            let wait = match next {
                Ok(Some(wait)) => wait,
                Ok(None) => Duration::from_secs(3600),
                Err(error) => {
                    warn!(error = %error.detail(), "cannot read the notification outbox; trying again");
                    Duration::from_secs(1)
                }
            };
            if wait.is_zero() {
                continue;
            }
            let wait = if lease.is_shared() { wait.min(SHARED_POLL) } else { wait };
            tokio::select! {
                () = token.cancelled() => break,
                () = self.storage.outbox_filled() => {}
                () = tokio::time::sleep(wait) => {}
                // A target's run ended: what waits for it may go now (with what waits for
                // any other run that ended meanwhile: one reading for all of them).
                Some(ended) = sends.runs.join_next_with_id(), if !sends.runs.is_empty() => {
                    sends.ended(ended);
                    while let Some(ended) = sends.runs.try_join_next_with_id() {
                        sends.ended(ended);
                    }
                }
            }
        }
        // Not cancelled midway: a stop lets the sends in flight end and records them (each
        // run stops before its next send), so the instance that takes over does not repeat
        // what was delivered.
        while let Some(ended) = sends.runs.join_next_with_id().await {
            sends.ended(ended);
        }
    }

    /// Start sending what is due now to every target no run is at already: per target, its
    /// notifications in order up to the first that waits for a retry, one after the other
    /// until one fails, in a run of its own, so that a slow target holds up no other.
    /// Returns how long until the next one is due (`None`: nothing waits; zero: look again
    /// at once, more was due than one reading takes).
    ///
    /// On a database shared by instances the notifications are first claimed for this
    /// instance (for the send time-out and [`CLAIM_MARGIN`]), skipping what another
    /// instance holds; a run sends only while its claim outlasts one more send, so that a
    /// sender that lost the lease finishes before the one that took it over may send the
    /// same notification.
    async fn deliver_due(&self, token: &CancellationToken, sends: &mut Sends) -> Result<Option<Duration>> {
        let now = Timestamp::now();
        let busy: Busy = sends.targets.values().cloned().collect();
        let (rows, next, claim_ends) = if self.storage.lease().is_shared() {
            let claim = self.outbound.timeout() + CLAIM_MARGIN;
            let claim_ends = Instant::now() + claim;
            let (now, until) = (now.to_string(), now.saturating_add(claim).to_string());
            let claimant = self.instance().to_string();
            let (rows, next) =
                self.storage.write(move |tx| tx.claim_due(&now, RUN, BATCH, &busy, &claimant, &until)).await?;
            (rows, next, Some(claim_ends))
        } else {
            let now = now.to_string();
            let (rows, next) = self.storage.read(move |tx| tx.outbox_due(&now, RUN, BATCH, &busy)).await?;
            (rows, next, None)
        };
        let full = rows.len() >= BATCH;
        let mut runs: Vec<Vec<Pending>> = Vec::new();
        for row in rows {
            match runs.last_mut() {
                Some(run) if run[0].target == row.target => run.push(row),
                _ => runs.push(vec![row]),
            }
        }
        for run in runs {
            let target = run[0].target.clone();
            let (cse, token) = (self.clone(), token.clone());
            let started = sends.runs.spawn(async move { cse.deliver_run(run, &token, claim_ends).await });
            sends.targets.insert(started.id(), target);
        }
        Ok(if full { Some(Duration::ZERO) } else { next.as_deref().map(until) })
    }

    /// Send the notifications of one target in order, until one is not delivered, the
    /// CSE stops, the lease is lost or the claim (`claim_ends`) would end during the next
    /// send; then record in one write what went, when to try the first that did not, and
    /// release the claim on the rest.
    async fn deliver_run(
        &self,
        run: Vec<Pending>,
        token: &CancellationToken,
        claim_ends: Option<Instant>,
    ) -> Result<()> {
        let config = self.config();
        let limits = &config.subscription;
        let target = run[0].target.clone();
        let lease = self.storage.lease();
        let mut done = Vec::new();
        let mut retry = None;
        let mut unsent = Vec::new();
        // Per subscription: notifications sent, answers received (for `nse`).
        let mut statistics: HashMap<String, (u64, u64)> = HashMap::new();
        let mut rows = run.into_iter().peekable();
        while let Some(pending) = rows.next() {
            let claim_too_short = claim_ends.is_some_and(|end| Instant::now() + self.outbound.timeout() > end);
            if token.is_cancelled() || !lease.is_held() || claim_too_short {
                // Claims are given back below (alone on the database, nothing was claimed).
                unsent.extend(claim_ends.map(|_| pending.seq));
                break;
            }
            // A batch due goes as one aggregated notification.
            let mut batch = Vec::new();
            while pending.batch
                && rows.peek().is_some_and(|next| next.batch && next.subscription == pending.subscription)
            {
                batch.extend(rows.next());
            }
            let outcome = if pending.batch {
                self.send_batch(&pending, &batch).await
            } else {
                self.send_notification(&pending).await
            };
            let seqs = std::iter::once(pending.seq).chain(batch.iter().map(|row| row.seq));
            let counted = statistics.entry(pending.subscription.clone()).or_default();
            counted.0 += 1 + batch.len() as u64;
            counted.1 += u64::from(matches!(outcome, Outcome::Delivered | Outcome::Refused(_)));
            match outcome {
                Outcome::Delivered => self.metrics.notifications_sent(1 + batch.len() as u64),
                _ => self.metrics.notifications_failed(1 + batch.len() as u64),
            }
            match outcome {
                Outcome::Delivered => {
                    debug!(%target, rqi = %pending.rqi, "notification delivered");
                    done.extend(seqs);
                }
                Outcome::Refused(reason) => {
                    warn!(%target, subscription = %pending.subscription, %reason, "notification refused by its target; dropped");
                    done.extend(seqs);
                }
                Outcome::Retry(reason) => {
                    let attempts = pending.attempts + 1;
                    let age = Timestamp::parse(&pending.created)
                        .map(|created| Timestamp::now().duration_since(created))
                        .unwrap_or_default();
                    let give_up = age >= limits.max_age || (limits.max_attempts > 0 && attempts >= limits.max_attempts);
                    if give_up {
                        warn!(%target, subscription = %pending.subscription, attempts, %reason, "notification undeliverable; given up (resource.sub.max_age / max_attempts)");
                        done.extend(seqs);
                    } else {
                        if attempts == 1 {
                            info!(%target, %reason, "notification target not reachable; retrying");
                        } else {
                            debug!(%target, attempts, %reason, "notification still not delivered");
                        }
                        let due = Timestamp::now().saturating_add(retry_delay(attempts, limits.max_retry_delay));
                        retry = Some((pending.seq, attempts, due.to_string()));
                    }
                    break;
                }
            }
        }
        if claim_ends.is_some() {
            unsent.extend(rows.map(|pending| pending.seq));
        }
        let keep = limits.max_pending_per_target;
        self.storage
            .write(move |tx| {
                for &seq in &done {
                    tx.dequeue(seq)?;
                }
                tx.claim(&unsent, None)?;
                if let Some((seq, attempts, due)) = &retry {
                    tx.reschedule(*seq, *attempts, due)?;
                }
                let dropped = tx.trim_outbox(&target, keep)?;
                if dropped > 0 {
                    warn!(%target, dropped, "too many notifications waiting for one target; the oldest were dropped (resource.sub.max_pending_per_target)");
                }
                for (ri, &(requests, responses)) in &statistics {
                    let Some(mut subscription) = tx.get(ri)? else { continue };
                    if subscription.attributes.get("nse") == Some(&Value::Bool(true)) {
                        events::add_statistics(&mut subscription, &target, requests, responses, 0);
                        tx.update(&subscription)?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// One attempt at a batch: `first` and the rest of it, as one `m2m:agn` (only the newest
    /// with `ln`, marked as latest with `X-M2M-EC: 4`).
    async fn send_batch(&self, first: &Pending, rest: &[Pending]) -> Outcome {
        let sur = format!("{}/{}", self.identity.cse_id, first.subscription);
        let mut notifications: Vec<Value> = std::iter::once(first)
            .chain(rest)
            .map(|pending| {
                let mut sgn = pending.content.get("m2m:sgn").cloned().unwrap_or_default();
                if let Some(sgn) = sgn.as_object_mut() {
                    sgn.insert("sur".into(), json!(sur));
                }
                sgn
            })
            .collect();
        let latest = self
            .storage
            .get(&first.subscription)
            .await
            .ok()
            .flatten()
            .is_some_and(|subscription| subscription.attributes.get("ln") == Some(&Value::Bool(true)));
        if latest {
            notifications.drain(..notifications.len().saturating_sub(1));
        }
        let content = json!({"m2m:agn": {"m2m:sgn": notifications}});
        let category = latest.then_some(LATEST);
        outcome_of(self.notify_target_as(&first.target, content, &first.rqi, None, category).await)
    }

    /// One attempt at `pending`.
    async fn send_notification(&self, pending: &Pending) -> Outcome {
        let mut content = pending.content.clone();
        if let Some(sgn) = content.get_mut("m2m:sgn").and_then(Value::as_object_mut) {
            sgn.insert("sur".into(), json!(format!("{}/{}", self.identity.cse_id, pending.subscription)));
        }
        outcome_of(self.notify_target(&pending.target, content, &pending.rqi, None).await)
    }

    /// Send a NOTIFY with `content` to `target` (a URL or an ID), as this CSE.
    pub(crate) async fn notify_target(
        &self,
        target: &str,
        content: Value,
        rqi: &str,
        originator: Option<&str>,
    ) -> Result<Response> {
        self.notify_target_as(target, content, rqi, originator, None).await
    }

    /// [`Cse::notify_target`] with an event category (`X-M2M-EC`).
    async fn notify_target_as(
        &self,
        target: &str,
        content: Value,
        rqi: &str,
        originator: Option<&str>,
        category: Option<u8>,
    ) -> Result<Response> {
        let from = originator.map_or_else(|| self.identity.cse_id.to_string(), str::to_string);
        let url = split_url(target);
        let to = url.as_ref().map_or(target, |(_, path, _)| path.as_str());
        let mut request = Request::new(Operation::Notify, to, Some(&from));
        request.rqi = rqi.to_string();
        request.rvi = self.config().cse.release_version.clone();
        request.content = Some(content);
        request.ec = category;
        match url {
            // A URL: sent as it is.
            Some((base, _, query)) => {
                request.query = query;
                self.outbound
                    .send(&base, &request, self.outbound.timeout(), None)
                    .await
                    .map_err(|failure| failure.into_error(target))
            }
            // An ID: a request like any other (boxed: a subscription's verification is a
            // request handled inside a request).
            None => Ok(Box::pin(self.handle(request)).await),
        }
    }

    /// Verify the targets of a subscription before it is stored: a NOTIFY with `vrq` to
    /// each, but to the subscriber itself. Any answer but a success fails it (5204),
    /// naming the target.
    pub(crate) async fn verify_targets(&self, targets: &[String], sur: &str, subscriber: &str) -> Result<()> {
        if !self.config().subscription.verify {
            return Ok(());
        }
        let own = self.identity.originator(subscriber);
        for target in targets {
            let is_subscriber =
                split_url(target).is_none() && self.identity.originator(target).simplified() == own.simplified();
            if is_subscriber {
                continue;
            }
            let content = json!({"m2m:sgn": {"vrq": true, "sur": sur, "cr": subscriber}});
            let rqi = crate::resource::random_id(12);
            let failure = match self.notify_target(target, content, &rqi, None).await {
                Ok(response) if response.rsc.is_success() => continue,
                Ok(response) => format!("answered {} {}", response.rsc, response.dbg().unwrap_or_default()),
                Err(error) => error.dbg,
            };
            return Err(Error::new(
                Rsc::SubscriptionVerificationInitiationFailed,
                format!("the verification request to notification target {target} failed: {failure}"),
            ));
        }
        Ok(())
    }

    /// A NOTIFY for a local resource: an AE gets it at its `poa` (what it answers is the
    /// answer); a CSR's CSE likewise. Anything else cannot take notifications (4000).
    pub(crate) async fn receive_notify(&self, request: &Request, target: &Resource) -> Result<Response> {
        let content = request.content.as_ref();
        if !content.is_some_and(|content| content.get("m2m:sgn").is_some() || content.get("m2m:rsp").is_some()) {
            return Err(Error::bad_request("a NOTIFY carries m2m:sgn (or m2m:rsp)"));
        }
        if !matches!(target.ty, ResourceType::Ae | ResourceType::Csr) {
            return Err(Error::bad_request(format!(
                "a {} does not take notifications (an AE or a CSE does)",
                target.ty.wrapper()
            )));
        }
        if target.attributes.get("rr") == Some(&Value::Bool(false)) {
            return Err(Error::bad_request(format!("{} is not request-reachable (rr is false)", target.ri())));
        }
        let poa = target.str_list("poa");
        if poa.is_empty() {
            return Err(Error::bad_request(format!("{} has no point of access (poa) to notify", target.ri())));
        }
        let mut relayed = request.clone();
        relayed.originator = request.originator.as_deref().map(|originator| self.identity.sp_relative(originator));
        if let Some(highest) = target.str_list("srv").into_iter().max() {
            relayed.rvi = highest;
        }
        let mut last = None;
        for address in &poa {
            match self.outbound.send(address, &relayed, self.outbound.timeout(), None).await {
                Ok(response) => return Ok(Response { rqi: request.rqi.clone(), ..response }),
                Err(failure) => last = Some(failure),
            }
        }
        Err(last.map_or_else(|| Error::not_reachable("no poa answered"), |failure| failure.into_error(target.ri())))
    }
}

impl Cse {
    /// Before an UPDATE (whose request sent `sent`) is applied to the resource of the
    /// blocking-update subscription `blocking`: if its `atr` names something sent, its
    /// target is asked first, as the UPDATE's originator; anything but a success stops the
    /// UPDATE (the target unreachable: 5107; refusing the operation: 4127; else its answer).
    pub(crate) async fn ask_before_update(&self, blocking: &Resource, sent: &Value, originator: &str) -> Result<()> {
        let names: Vec<&str> = sent
            .as_object()
            .and_then(|wrapper| wrapper.values().next())
            .and_then(Value::as_object)
            .map(|attributes| attributes.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let atr = blocking
            .attributes
            .get("enc")
            .and_then(|enc| enc.get("atr"))
            .and_then(Value::as_array)
            .filter(|atr| !atr.is_empty());
        if atr.is_some_and(|atr| !atr.iter().filter_map(Value::as_str).any(|name| names.contains(&name))) {
            return Ok(());
        }
        let Some(target) = blocking.str_list("nu").into_iter().next() else { return Ok(()) };
        let sur = format!("{}/{}", self.identity.cse_id, blocking.ri());
        let content = json!({"m2m:sgn": {"nev": {"net": BLOCKING_UPDATE, "rep": sent}, "sur": sur}});
        let rqi = crate::resource::random_id(12);
        let answer = self.notify_target(&target, content, &rqi, Some(originator)).await;
        let refused =
            |rsc: Rsc, why: String| Err(Error::new(rsc, format!("the blocking-update target {target} {why}")));
        match answer {
            Ok(response) if response.rsc.is_success() => Ok(()),
            Ok(response) if response.rsc == Rsc::OperationNotAllowed => {
                refused(Rsc::OperationDeniedByRemoteEntity, "denied the update".into())
            }
            Ok(response) if response.rsc == Rsc::TargetNotReachable => {
                refused(Rsc::RemoteEntityNotReachable, "is not reachable".into())
            }
            Ok(response) => refused(response.rsc, format!("answered {}", response.rsc)),
            Err(error) if matches!(error.rsc, Rsc::TargetNotReachable | Rsc::RequestTimeout) => {
                refused(Rsc::RemoteEntityNotReachable, "is not reachable".into())
            }
            Err(error) => refused(error.rsc, error.dbg),
        }
    }
}

/// The event category of a latest-notify batch (`X-M2M-EC: 4`).
const LATEST: u8 = 4;

/// What an answer (or a failure to get one) means for a notification.
fn outcome_of(answer: Result<Response>) -> Outcome {
    match answer {
        Ok(response) if response.rsc.is_success() => Outcome::Delivered,
        Ok(response) if retryable(response.rsc) => Outcome::Retry(format!("answered {}", response.rsc)),
        Ok(response) => Outcome::Refused(format!("answered {} {}", response.rsc, response.dbg().unwrap_or_default())),
        Err(error) if retryable(error.rsc) => Outcome::Retry(error.detail().to_string()),
        Err(error) => Outcome::Refused(error.detail().to_string()),
    }
}

/// Is a failure worth another attempt (the target may come back)?
fn retryable(rsc: Rsc) -> bool {
    matches!(rsc, Rsc::TargetNotReachable | Rsc::RequestTimeout) || rsc.code() >= 5000
}

/// The wait before attempt `attempts + 1`: a second, doubling, at most `max`, with up to
/// a fifth of jitter.
fn retry_delay(attempts: u32, max: Duration) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let base = doubled.min(max);
    let jitter = base.mul_f64(rand::random::<f64>() / 5.0);
    (base + jitter).max(FIRST_RETRY)
}

/// How long until `due` (stored timestamp form); zero if past or unreadable.
fn until(due: &str) -> Duration {
    Timestamp::parse(due)
        .map(|due| due.duration_since(Timestamp::now()).max(Duration::from_millis(50)))
        .unwrap_or(Duration::from_millis(50))
}

/// A URL target as the base address, the path (as a request's `to`) and the query.
fn split_url(target: &str) -> Option<(String, String, Option<String>)> {
    let url = url::Url::parse(target).ok().filter(|url| matches!(url.scheme(), "http" | "https"))?;
    let base = format!("{}://{}", url.scheme(), url.host_str()?)
        + &url.port().map(|port| format!(":{port}")).unwrap_or_default();
    let path = url.path().trim_start_matches('/').to_string();
    Some((base, path, url.query().map(str::to_string)))
}

/// Targets of `nu` not among `known` (for an update: only new targets are verified).
pub(crate) fn new_targets(nu: &[String], known: &[String]) -> Vec<String> {
    let known: HashSet<&String> = known.iter().collect();
    nu.iter().filter(|target| !known.contains(target)).cloned().collect()
}
