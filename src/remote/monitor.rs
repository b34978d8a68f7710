//! The connection monitor: one round at start, then every
//! `cse.registration.check_interval` or at once on request (`check_now`): every
//! registrar checked, then (on IN and MN CSEs, with `check_liveliness`) the registrees
//! probed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::config::CseKind;

impl Inner {
    pub(super) async fn monitor(
        self: Arc<Self>,
        mut commands: mpsc::Receiver<oneshot::Sender<()>>,
        token: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(self.cse.config.registration.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures: HashMap<String, u32> = HashMap::new();
        // The first round runs at once, before any check-now request is taken, so that a
        // check-now always means "a full round after this call".
        ticks.tick().await;
        tokio::select! {
            () = token.cancelled() => return,
            () = self.round(&mut failures) => {}
        }
        loop {
            let asked = tokio::select! {
                () = token.cancelled() => return,
                _ = ticks.tick() => None,
                Some(done) = commands.recv() => Some(done),
            };
            // A round stops where it is when the manager stops (shutdown stays bounded);
            // the next start begins with a clean registration.
            tokio::select! {
                () = token.cancelled() => return,
                () = self.round(&mut failures) => {}
            }
            if let Some(done) = asked {
                let _ = done.send(());
            }
        }
    }

    async fn round(&self, failures: &mut HashMap<String, u32>) {
        for registrar in &self.registrars {
            self.check_registrar(registrar).await;
        }
        let kind = self.cse.config.cse.kind;
        if self.cse.config.registration.check_liveliness && kind != CseKind::Asn {
            self.probe_registrees(failures).await;
        }
    }
}
