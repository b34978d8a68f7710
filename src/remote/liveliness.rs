//! The registrar side: are the registrees still there? Every full monitor round probes
//! each registree's CSEBase; a registree that fails `liveliness_failures` probes in a row
//! is removed (its CSR deleted, which the change follower reports), unless its CSR changed
//! while it was probed (it re-registered or pushed an update: it is there).
//!
//! One slow registree never delays the verdict on the others:
//! - a probe holds one of the round's `liveliness_parallelism` permits for [`QUICK`] at
//!   most; a probe still running then goes on in the background (within
//!   `liveliness_timeout`) and its verdict is applied when it ends, between rounds;
//! - a registree whose last probe took longer than that is probed in a lane of its own
//!   (its own permits), so a thousand black holes (connections accepted, never answered)
//!   cannot hold the permits that the answering registrees need;
//! - a registree whose probe is still running is not probed again.
//!
//! So a round takes about `registrees / liveliness_parallelism × QUICK` at most, whatever
//! the registrees do. A registree that keeps coming back after being removed (it can
//! reach this CSE, this CSE cannot reach its `poa`) is named at warn with the reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Inner, RegistreeProbe, lock};
use crate::core::Cse;
use crate::core::request::{Operation, Request};
use crate::resource::Resource;

/// How long a round waits for one probe before the probe goes on in the background.
pub(super) const QUICK: Duration = Duration::from_secs(1);

/// A removal of the same registree again within this many check intervals (at least an
/// hour) makes it a flapping registree.
const FLAPPING_INTERVALS: u32 = 10;

/// What a probe found.
#[derive(Debug)]
pub(super) struct Verdict {
    csr: Arc<Resource>,
    /// `None`: it answered; else why not (the last failure).
    failure: Option<String>,
    /// It took longer than [`QUICK`].
    slow: bool,
}

/// What the monitor knows about its registrees between rounds.
pub(super) struct Liveliness {
    /// Consecutive failed probes, by CSE-ID.
    failures: HashMap<String, u32>,
    /// Registrees whose last probe took longer than [`QUICK`]: probed in their own lane.
    slow: HashSet<String>,
    /// Registrees with a probe under way.
    probing: HashSet<String>,
    /// Removals by liveliness: how many in a row came back, and when the last one was.
    removed: HashMap<String, (u32, Instant)>,
    /// The lane of slow registrees (permits kept across rounds), and its size.
    slow_permits: Arc<Semaphore>,
    slow_lane_size: usize,
    /// The probes under way (aborted when the monitor stops).
    tasks: JoinSet<()>,
    verdicts: mpsc::UnboundedSender<Verdict>,
    /// Verdicts of every probe, in the order they end; the monitor applies them.
    pub(super) outcomes: mpsc::UnboundedReceiver<Verdict>,
}

impl Liveliness {
    pub(super) fn new(parallelism: usize) -> Liveliness {
        let (verdicts, outcomes) = mpsc::unbounded_channel();
        Liveliness {
            failures: HashMap::new(),
            slow: HashSet::new(),
            probing: HashSet::new(),
            removed: HashMap::new(),
            slow_permits: Arc::new(Semaphore::new(parallelism.max(1))),
            slow_lane_size: parallelism.max(1),
            tasks: JoinSet::new(),
            verdicts,
            outcomes,
        }
    }
}

impl Inner {
    /// Probe every registree not being probed already. Returns once every probe of the
    /// fast lane has ended or gone on in the background; applies the verdicts that came
    /// meanwhile.
    pub(super) async fn probe_registrees(&self, live: &mut Liveliness) {
        let config = self.cse.config();
        let registration = &config.registration;
        let csrs = self.cse.registry.registree_csrs();
        let present: HashSet<&str> = csrs.iter().filter_map(|csr| csr.str("csi")).collect();
        live.failures.retain(|csi, _| present.contains(csi.as_str()));
        lock(&self.probes).retain(|csi, _| present.contains(csi.as_str()));
        live.slow.retain(|csi| present.contains(csi.as_str()));
        live.removed.retain(|_, (_, last)| last.elapsed() <= flapping_window(registration));
        while live.tasks.try_join_next().is_some() {}
        let parallelism = registration.liveliness_parallelism.max(1);
        if live.slow_lane_size != parallelism {
            // A reload changed it: probes under way keep their permits of the old lane.
            live.slow_permits = Arc::new(Semaphore::new(parallelism));
            live.slow_lane_size = parallelism;
        }
        let round_permits = Arc::new(Semaphore::new(parallelism));
        // Each fast-lane probe holds a sender until it ends or goes on in the background.
        let (waiting, mut released) = mpsc::channel::<()>(1);
        for csr in csrs {
            let Some(csi) = csr.str("csi").map(str::to_string) else { continue };
            if !live.probing.insert(csi.clone()) {
                continue;
            }
            let slow_lane = live.slow.contains(&csi);
            let permits = if slow_lane { live.slow_permits.clone() } else { round_permits.clone() };
            let waiting = (!slow_lane).then(|| waiting.clone());
            let (cse, verdicts, timeout) = (self.cse.clone(), live.verdicts.clone(), registration.liveliness_timeout);
            live.tasks.spawn(async move {
                let permit = permits.acquire_owned().await;
                let started = Instant::now();
                let failure = {
                    let probe = probe(&cse, &csr, timeout);
                    tokio::pin!(probe);
                    match tokio::time::timeout(QUICK, &mut probe).await {
                        Ok(failure) => failure,
                        Err(_) => {
                            // Too slow for the round: free its permit and its wait.
                            drop((permit, waiting));
                            probe.await
                        }
                    }
                };
                let slow = started.elapsed() > QUICK;
                let _ = verdicts.send(Verdict { csr, failure, slow });
            });
        }
        drop(waiting);
        loop {
            tokio::select! {
                biased;
                Some(verdict) = live.outcomes.recv() => self.judge(live, verdict).await,
                None = released.recv() => break,
            }
        }
        while let Ok(verdict) = live.outcomes.try_recv() {
            self.judge(live, verdict).await;
        }
    }

    /// Apply one probe's verdict: count a failure, remove after enough in a row.
    pub(super) async fn judge(&self, live: &mut Liveliness, verdict: Verdict) {
        let Verdict { csr, failure, slow } = verdict;
        let csi = csr.str("csi").unwrap_or_default().to_string();
        live.probing.remove(&csi);
        if slow {
            live.slow.insert(csi.clone());
        } else {
            live.slow.remove(&csi);
        }
        let probed = crate::resource::Timestamp::now().to_string();
        let Some(reason) = failure else {
            live.failures.remove(&csi);
            lock(&self.probes).insert(csi, RegistreeProbe { last_probe: probed, failures: 0, last_error: None });
            return;
        };
        let config = self.cse.config();
        let registration = &config.registration;
        self.cse.metrics.liveliness_failure();
        let count = live.failures.entry(csi.clone()).or_insert(0);
        *count += 1;
        lock(&self.probes).insert(
            csi.clone(),
            RegistreeProbe { last_probe: probed, failures: *count, last_error: Some(reason.clone()) },
        );
        warn!(%csi, failures = *count, %reason, "registree did not answer");
        if *count < registration.liveliness_failures {
            return;
        }
        live.failures.remove(&csi);
        match self.cse.delete_local_unchanged(&csr).await {
            Ok(true) => {
                self.cse.metrics.liveliness_removal();
                info!(%csi, "removed unreachable registree");
                let now = Instant::now();
                let again = match live.removed.get(&csi) {
                    Some((count, last)) if now.duration_since(*last) <= flapping_window(registration) => count + 1,
                    _ => 0,
                };
                live.removed.insert(csi.clone(), (again, now));
                if again > 0 {
                    warn!(
                        %csi,
                        removals_in_a_row = again + 1,
                        poa = ?csr.str_list("poa"),
                        %reason,
                        "registree keeps registering and being removed: it reaches this CSE, but this CSE cannot reach its poa; check the poa it advertises"
                    );
                }
            }
            Ok(false) => info!(%csi, "registree re-registered or updated while probed; kept"),
            Err(error) => warn!(%csi, error = %error.detail(), "cannot remove the registree's CSR"),
        }
    }
}

/// How close two removals of one registree make it flapping.
fn flapping_window(registration: &crate::config::RegistrationConfig) -> Duration {
    (registration.check_interval * FLAPPING_INTERVALS).max(Duration::from_secs(3600))
}

/// Is the registree behind `csr` answering? Any oneM2M answer counts; only transport
/// failures on every `poa` count as down, and so does a refusal of this CSE's credentials
/// (`registree_security`): a registree this CSE cannot call is not reachable from here.
/// Returns the last failure when it is down.
async fn probe(cse: &Cse, csr: &Resource, timeout: Duration) -> Option<String> {
    let target = csr.str("cb").unwrap_or_default().to_string();
    let csi = csr.str("csi").unwrap_or_default();
    let config = cse.config();
    let credentials = config.registration.registree_credentials.get(csi);
    let identity = &cse.identity;
    let originator =
        if csi.starts_with("//") { identity.cse_id.absolute(&identity.sp_id) } else { identity.cse_id.to_string() };
    let mut request = Request::new(Operation::Retrieve, target, Some(&originator));
    request.rvi = config.cse.release_version.clone();
    let mut last_failure = "no poa".to_string();
    for poa in csr.str_list("poa") {
        match cse.outbound.send(&poa, &request, timeout, credentials).await {
            Ok(_) => return None,
            Err(failure) => {
                debug!(%csi, %poa, error = %failure, "probe failed");
                last_failure = failure.to_string();
            }
        }
    }
    Some(last_failure)
}
