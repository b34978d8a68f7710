//! `[database]`: where and how durably the resources are stored: a SQLite file (the
//! default), SQLite in memory, or a PostgreSQL server (`url`).

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::security::Secret;

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

/// `[database]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// The SQLite database file (created with its directory).
    pub path: PathBuf,
    /// Keep everything in memory: nothing survives a restart.
    pub in_memory: bool,
    /// SQLite: what an acknowledged write survives.
    pub durability: Durability,
    /// `postgresql://user:password@host:port/database`: PostgreSQL instead of SQLite. A
    /// secret (it may hold the password): never logged or printed whole.
    pub url: Option<Secret>,
    /// The most connections to PostgreSQL: one for the writer, the rest for reads.
    pub pool_size: usize,
    /// PEM certificates of CAs trusted for the PostgreSQL server's certificate (with
    /// `sslmode=require`), besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            path: PathBuf::from("./data/acme.db"),
            in_memory: false,
            durability: Durability::Full,
            url: None,
            pool_size: 8,
            ca_file: None,
        }
    }
}

/// `[database]`, checked.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None`: a throw-away in-memory store (unless `url` is set).
    pub path: Option<PathBuf>,
    /// `durability`.
    pub durability: Durability,
    /// A PostgreSQL server: when set, `path` and `durability` do not apply.
    pub url: Option<Secret>,
    /// `pool_size`.
    pub pool_size: usize,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    /// SQLite in memory.
    fn default() -> Self {
        DatabaseConfig { path: None, durability: Durability::Full, url: None, pool_size: 8, ca_file: None }
    }
}

impl DatabaseConfig {
    /// Where the data is, for the log: the file, "in memory", or the URL without its password.
    pub fn describe(&self) -> String {
        match (&self.url, &self.path) {
            (Some(url), _) => redacted(url),
            (None, Some(path)) => path.display().to_string(),
            (None, None) => "in memory".into(),
        }
    }
}

/// `url` with its password (if any) replaced by `***`.
pub fn redacted(url: &Secret) -> String {
    match url::Url::parse(url.expose()) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(an invalid URL)".into(),
    }
}

impl DatabaseSettings {
    pub(super) fn validate(self) -> Result<DatabaseConfig, ConfigError> {
        let url = self.url.filter(|url| !url.is_empty());
        if let Some(url) = &url {
            check_url(url)?;
            if self.in_memory {
                return Err(ConfigError::invalid(
                    "database.in_memory",
                    "must be false when database.url names a PostgreSQL server",
                ));
            }
            if !(2..=1000).contains(&self.pool_size) {
                return Err(ConfigError::invalid(
                    "database.pool_size",
                    format!("must be between 2 and 1000 (one writer and readers), not {}", self.pool_size),
                ));
            }
        } else if !self.in_memory && self.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("database.path", "must not be empty unless database.in_memory = true"));
        }
        Ok(DatabaseConfig {
            path: (!self.in_memory && url.is_none()).then_some(self.path),
            durability: self.durability,
            url,
            pool_size: self.pool_size,
            ca_file: self.ca_file,
        })
    }
}

/// A `postgresql://` URL (the message never repeats the URL, which may hold a password).
fn check_url(url: &Secret) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::invalid("database.url", reason);
    let parsed = url::Url::parse(url.expose()).map_err(|error| {
        invalid(&format!("is not a URL ({error}); expected postgresql://user:password@host:port/database"))
    })?;
    if !matches!(parsed.scheme(), "postgresql" | "postgres") {
        return Err(invalid(&format!("has the scheme {:?}; only postgresql:// is supported", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("names no host"));
    }
    let sslmode = parsed.query_pairs().find(|(key, _)| key == "sslmode").map(|(_, value)| value.into_owned());
    if let Some(mode) = sslmode.filter(|mode| !matches!(mode.as_str(), "disable" | "prefer" | "require")) {
        return Err(invalid(&format!(
            "asks for sslmode={mode}: use sslmode=require for TLS (the server's certificate is always verified, \
             against the system's CAs and database.ca_file), or disable"
        )));
    }
    Ok(())
}
