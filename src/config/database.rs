//! `[database]`: where and how durably the resources are stored.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

/// How hard a commit is pushed to disk (SQLite `synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Durability {
    /// fsync on every commit: an acknowledged CREATE survives a power loss.
    Full,
    /// fsync at checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub path: PathBuf,
    pub in_memory: bool,
    pub durability: Durability,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { path: PathBuf::from("./data/acme.db"), in_memory: false, durability: Durability::Full }
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None`: a throw-away in-memory store.
    pub path: Option<PathBuf>,
    pub durability: Durability,
}

impl DatabaseSettings {
    pub(super) fn validate(self) -> Result<DatabaseConfig, ConfigError> {
        if !self.in_memory && self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("database.path", "must not be empty unless database.in_memory = true"));
        }
        Ok(DatabaseConfig { path: (!self.in_memory).then_some(self.path), durability: self.durability })
    }
}
