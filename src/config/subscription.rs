//! `[resource.sub]`: how subscriptions are verified and how their notifications are
//! delivered.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, positive};
use crate::security::HostPattern;

/// `[resource.sub]` as written. Checked into [`SubscriptionConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionSettings {
    /// Send a verification request to every notification target of a new subscription
    /// (and to new targets of an updated one) before storing it.
    pub verify: bool,
    /// Give a notification up after this long undelivered.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Give a notification up after this many failed attempts (0: no limit but `max_age`).
    pub max_attempts: u32,
    /// Most notifications waiting for one target; beyond, the oldest are dropped (and
    /// counted in the log).
    pub max_pending_per_target: usize,
    /// Longest wait between two attempts at one target (the waits double from a second).
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// How long a batch (`bn`) without its own `dur` gathers notifications.
    #[serde(with = "humantime_serde")]
    pub batch_duration: Duration,
    /// Hosts that URL notification targets (`nu`, `su`) may name (address blocks and host
    /// name patterns); empty: any host.
    pub allowed_target_hosts: Vec<String>,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            verify: true,
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: 0,
            max_pending_per_target: 10_000,
            max_retry_delay: Duration::from_secs(300),
            batch_duration: Duration::from_secs(60),
            allowed_target_hosts: Vec::new(),
        }
    }
}

/// `[resource.sub]`, checked: see [`SubscriptionSettings`] for each key.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    /// Whether new notification targets are verified before a subscription is stored.
    pub verify: bool,
    /// Age at which an undelivered notification is given up; positive.
    pub max_age: Duration,
    /// Failed attempts after which a notification is given up; 0: no limit.
    pub max_attempts: u32,
    /// Most notifications waiting for one target; positive.
    pub max_pending_per_target: usize,
    /// Longest wait between two attempts at one target; positive.
    pub max_retry_delay: Duration,
    /// How long a batch without its own `dur` gathers; at least a second.
    pub batch_duration: Duration,
    /// Hosts URL notification targets may name; empty: any host.
    pub allowed_target_hosts: Vec<HostPattern>,
}

impl SubscriptionSettings {
    pub(super) fn validate(&self) -> Result<SubscriptionConfig, ConfigError> {
        positive("resource.sub.max_age", self.max_age)?;
        positive("resource.sub.max_retry_delay", self.max_retry_delay)?;
        if self.batch_duration < Duration::from_secs(1) {
            return Err(ConfigError::invalid("resource.sub.batch_duration", "must be at least a second"));
        }
        if self.max_pending_per_target == 0 {
            return Err(ConfigError::invalid("resource.sub.max_pending_per_target", "must be at least 1"));
        }
        Ok(SubscriptionConfig {
            verify: self.verify,
            max_age: self.max_age,
            max_attempts: self.max_attempts,
            max_pending_per_target: self.max_pending_per_target,
            max_retry_delay: self.max_retry_delay,
            batch_duration: self.batch_duration,
            allowed_target_hosts: self
                .allowed_target_hosts
                .iter()
                .map(|text| HostPattern::parse(text))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|reason| ConfigError::invalid("resource.sub.allowed_target_hosts", reason))?,
        })
    }
}
