//! Configuration changes at run time: read the sources again, validate the whole
//! reading first (an invalid one changes nothing), apply what can change while running,
//! name what needs a restart, and move the registrations to match.
//!
//! A registrar whose CSE-ID is no longer configured is left first (this CSE's CSR there
//! and the local CSR describing it are deleted, while the registry still knows it as a
//! registrar); then the CSE runs with the new configuration; then a round registers at
//! the new registrars at once. A registrar whose CSE-ID stays keeps its registration:
//! new addresses or credentials are used from the next request on.

use std::sync::Arc;

use tracing::{info, warn};

use super::registrar::Registrar;
use super::relation::Step;
use super::{Inner, RegistrationStatus, RemoteCseManager, lock};
use crate::config::{Config, ConfigError, Reload};
use crate::event::Event;

impl RemoteCseManager {
    /// Read the configuration again from where it came from (the file, the environment of
    /// this moment, the same flags) and apply it (see [`RemoteCseManager::apply_config`]).
    /// An invalid reading changes nothing; the error names the key.
    pub async fn reload(&self) -> Result<Reload, ConfigError> {
        let Some(source) = self.inner.cse.config_source() else {
            return Err(ConfigError::invalid(".", "this CSE was given its configuration, not a file to read again"));
        };
        let path = source.path().display().to_string();
        let config = source.load().inspect_err(|error| {
            warn!(file = %path, %error, "configuration not reloaded; nothing changed");
        })?;
        self.apply_config(config).await
    }

    /// Run with `config` (a valid configuration) from now on, as far as it can change
    /// while running: the registration settings, the registrars and the log level. Keys
    /// that need a restart are logged and left as they are; a new CSE identity is refused
    /// as a whole. Fires [`Event::ConfigUpdated`] with the applied keys.
    pub async fn apply_config(&self, config: Config) -> Result<Reload, ConfigError> {
        let inner = &self.inner;
        let reload = {
            // No round runs while the registrars change.
            let _no_round = inner.rounds.lock().await;
            let reload = inner.cse.config().reload(config).inspect_err(|error| {
                warn!(%error, "configuration not reloaded; nothing changed");
            })?;
            if !reload.restart_needed.is_empty() {
                warn!(keys = ?reload.restart_needed, "changed keys that take effect only after a restart; not applied");
            }
            if reload.applied.is_empty() {
                info!("configuration reloaded; nothing to apply");
                return Ok(reload);
            }
            inner.move_registrations(&reload).await;
            reload
        };
        info!(keys = ?reload.applied, "configuration reloaded");
        inner.cse.events.emit(Event::ConfigUpdated { keys: reload.applied.clone() });
        // A round at once: register at new registrars, take the new interval.
        if let Some(commands) = self.commands().await {
            let (done, _) = tokio::sync::oneshot::channel();
            let _ = commands.try_send(done);
        }
        Ok(reload)
    }
}

impl Inner {
    /// Leave the registrars `reload` drops, run with its configuration, and keep the state
    /// of the registrars that stay.
    async fn move_registrations(&self, reload: &Reload) {
        let before = self.registrars();
        let mut after = Vec::new();
        for registrar in Registrar::all(&reload.config) {
            let kept = before.iter().find(|old| old.info.cse_id == registrar.info.cse_id);
            let section_changed = |old: &Registrar| {
                let section = &old.info.section;
                reload.applied.iter().any(|key| {
                    key.strip_prefix(section.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                })
            };
            after.push(match kept {
                Some(old) if !section_changed(old) => old.clone(),
                Some(old) => {
                    registrar.take_state(old);
                    Arc::new(registrar)
                }
                None => Arc::new(registrar),
            });
        }
        let running = self.running.lock().await.is_some();
        for old in before.iter().filter(|old| !after.iter().any(|new| new.info.cse_id == old.info.cse_id)) {
            info!(registrar = %old.info.cse_id, "registrar no longer configured; deregistering");
            let grace = self.cse.outbound.timeout() * 2;
            if tokio::time::timeout(grace, self.deregister(old)).await.is_err() {
                warn!(registrar = %old.info.cse_id, ?grace, "deregistration did not finish in time");
            }
        }
        self.cse.replace_config(reload.config.clone());
        self.registrars.store(Arc::new(after));
        self.refresh_view();
        if running {
            for registrar in self.registrars().iter() {
                let status = lock(&registrar.state).status.clone();
                if matches!(status, RegistrationStatus::Disabled | RegistrationStatus::Deregistered) {
                    self.step(registrar, Step::Started);
                }
            }
        }
    }
}
