//! The connection monitor: one round at start, then every
//! `cse.registration.check_interval` or at once on request (`check_now`): every
//! registrar checked, then (on IN and MN CSEs, with `check_liveliness`) the registrees
//! probed.
//!
//! After a round in which a registrar could not be reached or refused a step, the
//! registrars are checked again sooner: after about a second, then ever later (doubling,
//! with jitter so that many registrees do not retry in step), up to `check_interval`.
//! An MN started before its IN so registers seconds after the IN comes up. Retries check
//! the registrars only; liveliness keeps its own pace (one probe per full round).

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::liveliness::Liveliness;
use super::{Inner, lock};
use crate::config::CseKind;

/// The first retry after a failed registration step (then doubling, jittered).
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What a round checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The registrars, then the registrees' liveliness.
    Full,
    /// The registrars only (a retry after a failure).
    Registrars,
}

impl Inner {
    pub(super) async fn monitor(
        self: Arc<Self>,
        mut commands: mpsc::Receiver<oneshot::Sender<()>>,
        token: CancellationToken,
    ) {
        let mut check_interval = self.cse.config().registration.check_interval;
        let mut ticks = ticks_every(check_interval);
        let mut live = Liveliness::new(self.cse.config().registration.liveliness_parallelism);
        let mut retries = retries_up_to(check_interval);
        let mut backoff: Option<ExponentialBackoff> = None;
        // The first round runs at once, before any check-now request is taken, so that a
        // check-now always means "a full round after this call".
        let mut next: Option<(Round, Option<oneshot::Sender<()>>)> = Some((Round::Full, None));
        loop {
            if let Some((round, asked)) = next.take() {
                // A round stops where it is when the manager stops (shutdown stays bounded);
                // the next start begins with a clean registration.
                tokio::select! {
                    () = token.cancelled() => return,
                    () = self.round(round, &mut live) => {}
                }
                if let Some(done) = asked {
                    let _ = done.send(());
                }
            }
            // A reload may have changed the interval: the next tick is one new interval away.
            let configured = self.cse.config().registration.check_interval;
            if configured != check_interval {
                debug!(?configured, "check interval changed");
                check_interval = configured;
                ticks = ticks_every(check_interval);
                retries = retries_up_to(check_interval);
                backoff = None;
            }
            let retry_at = if self.registrars_failing() {
                let delays = backoff.get_or_insert_with(|| retries.build());
                let delay = delays.next().unwrap_or(check_interval).min(check_interval);
                debug!(?delay, "registrar checks failed; retrying");
                Some(Instant::now() + delay)
            } else {
                backoff = None;
                None
            };
            next = tokio::select! {
                () = token.cancelled() => return,
                _ = ticks.tick() => Some((Round::Full, None)),
                Some(done) = commands.recv() => Some((Round::Full, Some(done))),
                () = sleep_until(retry_at), if retry_at.is_some() => Some((Round::Registrars, None)),
                // A probe that outlasted its round ends.
                Some(verdict) = live.outcomes.recv() => {
                    let _round = self.rounds.lock().await;
                    self.judge(&mut live, verdict).await;
                    None
                }
            };
        }
    }

    async fn round(&self, round: Round, live: &mut Liveliness) {
        // One instance of a shared database registers and probes: the lease holder.
        if !self.cse.storage.lease().is_held() {
            return;
        }
        let _round = self.rounds.lock().await;
        for registrar in self.registrars().iter() {
            self.check_registrar(registrar).await;
        }
        let config = self.cse.config();
        if round == Round::Full && config.registration.check_liveliness && config.cse.kind != CseKind::Asn {
            self.probe_registrees(live).await;
        }
    }

    /// Did the last check of a registrar fail (not reached, or a step refused)?
    fn registrars_failing(&self) -> bool {
        self.registrars().iter().any(|registrar| lock(&registrar.state).failing)
    }
}

/// Ticks every `period`, the first one a period from now.
fn ticks_every(period: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Retry delays after a failure: from [`FIRST_RETRY`], doubling with jitter, up to `max`.
fn retries_up_to(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::new().with_min_delay(FIRST_RETRY).with_max_delay(max).with_jitter().without_max_times()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
