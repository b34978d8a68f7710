//! Configuration: `acme.toml`, layered and validated once into typed values.
//!
//! Layers, later wins: built-in defaults (the `Default` impls), the TOML file (`--config`,
//! default `./acme.toml`), environment variables (`ACME_` prefix, `__` between levels, e.g.
//! `ACME_CSE__CSE_ID=/id-mn`), then the few command-line flags ([`Overrides`]). Unknown
//! keys and invalid values are errors that name the key; the rest of the program only ever
//! sees a valid [`Config`].
//!
//! One file per section: each holds the section as written (`...Settings`, the file
//! format: its field names are `acme.toml` keys, a contract) and as checked (`...Config`),
//! side by side. Nothing here reads files: the TLS module reads the PEM files it names.

mod admin;
mod cse;
mod database;
mod http;
mod registration;
mod reload;
mod subscription;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use admin::{AdminConfig, AdminSettings};
pub use cse::{AccessSettings, CseConfig, CseKind, CseSettings};
pub use database::{DatabaseConfig, DatabaseSettings, Durability, redacted};
pub use http::{
    BasicUserSettings, BearerTokenSettings, HttpConfig, HttpSecuritySettings, HttpSettings, TlsConfig, TlsFiles,
    TlsSettings,
};
pub use registration::{
    AddressGroup, AddressGroupSettings, DEFAULT_GROUP, RegistrarConfig, RegistrarSecuritySettings, RegistrarSettings,
    RegistrationConfig, RegistrationSettings, RegistreeSecuritySettings, SpSettings,
};
pub use reload::{Reload, Source, applies_at_run_time};
pub use subscription::{SubscriptionConfig, SubscriptionSettings};

use crate::security::Secret;
use reload::Fingerprints;

/// Problems found in the configuration; each names the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file cannot be read or parsed.
    #[error("cannot read configuration file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A key has a value it cannot have.
    #[error("invalid configuration key `{key}`: {reason}")]
    Invalid {
        /// The key (`cse.cse_id`).
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: key.to_string(), reason: reason.into() }
    }

    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::File { .. } => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The file format. Field names are the `acme.toml` keys (a contract: extend, never rename).
// ---------------------------------------------------------------------------------------

/// The whole `acme.toml`, as written (check it with [`Settings::validate`]).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[cse]` and its sub-sections (registration, registrar, service providers).
    pub cse: CseSettings,
    /// `[admin]`.
    pub admin: AdminSettings,
    /// `[http]`.
    pub http: HttpSettings,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[logging]`.
    pub logging: LoggingSettings,
    /// `[resource.*]`.
    pub resource: ResourceSettings,
    /// What the layered sources set, by key (to tell a reload what changed).
    #[serde(skip)]
    pub(crate) fingerprints: Fingerprints,
}

/// `[logging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// A level (one of [`LOG_LEVELS`]), or directives `target=level` after it, separated by
    /// commas (`"info,acme_cse::remote=debug"`); `RUST_LOG` wins when set.
    pub level: String,
    /// How each line is written (applies at start).
    pub format: LogFormat,
    /// One line per oneM2M request received over HTTP (target `acme_cse::access`, level
    /// info): method, path, originator, request ID, RSC, duration, client address.
    pub access_log: bool,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings { level: "info".into(), format: LogFormat::Text, access_log: false }
    }
}

/// The keys that take one of a few values, and those values (named when another is given).
const CHOICES: [(&str, &[&str]); 3] = [
    ("cse.type", &["IN", "MN", "ASN"]),
    ("database.durability", &["full", "normal"]),
    ("logging.format", &["text", "json"]),
];

/// The levels `logging.level` may name.
pub const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// How log lines are written (`logging.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// One readable line per event (colours only on a terminal, and not with `NO_COLOR`).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `message`, the event's
    /// fields), for log pipelines.
    Json,
}

/// Check a `logging.level` value: every comma-separated directive names a level, alone or
/// after `target=`; returns the filter as the log subscriber takes it (no blanks, levels
/// in lower case). (A log filter takes a bare word for a target, so a misspelt level,
/// `warning` say, would silently log nothing.)
fn check_log_level(filter: &str) -> Result<String, ConfigError> {
    let refused = |why: String| {
        Err(ConfigError::invalid(
            "logging.level",
            format!(
                "{why}: use one of {}, or target=level after it (e.g. \"info,acme_cse=debug\")",
                LOG_LEVELS.join(", ")
            ),
        ))
    };
    let mut directives = Vec::new();
    for directive in filter.split(',').map(str::trim) {
        let (target, level) = directive.rsplit_once('=').unwrap_or(("", directive));
        let (target, level) = (target.trim(), level.trim());
        if directive.contains('=') && target.is_empty() {
            return refused(format!("{directive:?} names no target before '='"));
        }
        if !LOG_LEVELS.iter().any(|known| known.eq_ignore_ascii_case(level)) {
            return refused(format!("{level:?} is not a log level"));
        }
        let level = level.to_ascii_lowercase();
        directives.push(if target.is_empty() { level } else { format!("{target}={level}") });
    }
    let filter = directives.join(",");
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&filter) {
        return refused(format!("{filter:?} is not a log filter ({error})"));
    }
    Ok(filter)
}

/// `[resource.*]`: settings of resource types.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceSettings {
    /// `[resource.cnt]`.
    pub cnt: ContainerSettings,
    /// `[resource.sub]`.
    pub sub: SubscriptionSettings,
}

/// `[resource.cnt]`: default limits of containers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerSettings {
    /// Give containers without limits the default `mni`/`mbs` below.
    pub enable_limits: bool,
    /// Default maximum number of instances.
    pub mni: u64,
    /// Default maximum total size of the instances, in bytes.
    pub mbs: u64,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        ContainerSettings { enable_limits: false, mni: 10, mbs: 10_000 }
    }
}

/// The command-line flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--http-port`: the port of `http.listen`.
    pub http_port: Option<u16>,
    /// `--cse-id`: `cse.cse_id`.
    pub cse_id: Option<String>,
    /// `--cse-type`: `cse.type`.
    pub cse_type: Option<CseKind>,
    /// `--db-path`: `database.path`.
    pub db_path: Option<PathBuf>,
    /// `--in-memory`: `database.in_memory`.
    pub in_memory: bool,
    /// `--log-level`: `logging.level`.
    pub log_level: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The validated configuration the program runs with.
// ---------------------------------------------------------------------------------------

/// A valid configuration. Built only by [`Settings::validate`].
#[derive(Debug, Clone)]
pub struct Config {
    /// `[cse]`.
    pub cse: CseConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[cse.registration]`.
    pub registration: RegistrationConfig,
    /// The same-SP registrar (MN/ASN only).
    pub registrar: Option<RegistrarConfig>,
    /// Registrars in other service providers (IN only), by section name.
    pub sp_registrars: Vec<RegistrarConfig>,
    /// `logging.level`, as the log filter takes it.
    pub log_level: String,
    /// `logging.format`.
    pub log_format: LogFormat,
    /// `logging.access_log`.
    pub access_log: bool,
    /// `[resource.cnt]`.
    pub container: ContainerSettings,
    /// `[resource.sub]`.
    pub subscription: SubscriptionConfig,
    /// `[cse.security]`.
    pub security: AccessSettings,
    /// What the sources set, by key; compared by [`Config::reload`].
    pub(crate) fingerprints: Fingerprints,
}

impl Config {
    /// Built-in defaults only, validated (tests start from here).
    pub fn defaults() -> Config {
        Settings::default().validate().expect("the built-in defaults are valid")
    }
}

impl Settings {
    /// Read the layers: defaults, the file (if it exists, or fail if it was named
    /// explicitly), then `ACME_*__*` environment variables from `env`.
    pub fn load(
        path: &Path,
        path_required: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if path.exists() {
            builder = builder.add_source(config::File::from(path.to_path_buf()).format(config::FileFormat::Toml));
        } else if path_required {
            return Err(ConfigError::File { path: path.to_path_buf(), reason: "no such file".into() });
        }
        // Only ACME_ variables with a level separator are configuration: others (ACME_WORK,
        // ...) belong to other tools and must not be rejected as unknown keys.
        let mut secrets = Vec::new();
        let mut plain = config::Map::new();
        for (name, value) in env.into_iter().filter(|(name, _)| name.starts_with("ACME_") && name.contains("__")) {
            let upper = name.to_ascii_uppercase();
            if upper.contains("__SECURITY__") || upper == "ACME_ADMIN__TOKEN" {
                secrets.push((name, value));
            } else {
                plain.insert(name, value);
            }
        }
        let mut environment = config::Environment::with_prefix("ACME")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(plain));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        builder = builder.add_source(environment);
        // Security values (passwords, tokens) are taken as text, never guessed into numbers
        // ("0123" stays "0123"); the switches among them still read "true" as true.
        for (name, value) in secrets {
            let key = name["ACME_".len()..].to_ascii_lowercase().replace("__", ".");
            let set = if SECRET_LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value.split(',').map(str::to_string).collect();
                builder.set_override(&key, items)
            } else {
                builder.set_override(&key, value)
            };
            builder = set.map_err(|error| ConfigError::invalid(&key, error.to_string()))?;
        }
        let layered = builder
            .build()
            .map_err(|error| ConfigError::File { path: path.to_path_buf(), reason: error.to_string() })?;
        Settings::from_layered(layered)
    }

    /// Deserialize the layered sources, remembering what they set.
    fn from_layered(layered: config::Config) -> Result<Settings, ConfigError> {
        let mut settings: Settings = serde_path_to_error::deserialize(layered.clone()).map_err(|error| {
            let key = error.path().to_string();
            let mut reason = error.into_inner().to_string();
            if let Some((_, values)) = CHOICES.iter().find(|(choice, _)| *choice == key) {
                reason = format!("{reason}; the valid values are {}", values.join(", "));
            }
            ConfigError::invalid(&key, reason)
        })?;
        let tree: serde_json::Value =
            layered.try_deserialize().map_err(|error| ConfigError::invalid(".", error.to_string()))?;
        settings.fingerprints = Fingerprints::of(&tree);
        Ok(settings)
    }

    /// Parse a TOML text on top of the defaults (for tests and embedders).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let layered = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|error| ConfigError::invalid(".", error.to_string()))?;
        Settings::from_layered(layered)
    }

    /// Take the command-line flags over the file and the environment.
    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(port) = overrides.http_port {
            let host = match self.http.listen.rsplit_once(':') {
                Some((host, _)) => host.to_string(),
                None => "0.0.0.0".to_string(),
            };
            self.http.listen = format!("{host}:{port}");
        }
        if let Some(cse_id) = &overrides.cse_id {
            self.cse.cse_id = cse_id.clone();
        }
        if let Some(kind) = overrides.cse_type {
            self.cse.kind = kind;
        }
        if let Some(path) = &overrides.db_path {
            self.database.path = path.clone();
        }
        if overrides.in_memory {
            self.database.in_memory = true;
        }
        if let Some(level) = &overrides.log_level {
            self.logging.level = level.clone();
        }
    }

    /// Check every rule and build the typed [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let Settings { cse, admin, http, database, logging, resource, fingerprints } = self;
        let own = cse.validate()?;
        let (registration, registrar, sp_registrars) = cse.validate_registration(&own)?;
        let http = http.validate(&cse.registrar_sections())?;
        let database = database.validate()?;
        let log_level = check_log_level(&logging.level)?;
        Ok(Config {
            cse: own,
            admin: admin.validate()?,
            http,
            database,
            registration,
            registrar,
            sp_registrars,
            log_level,
            log_format: logging.format,
            access_log: logging.access_log,
            subscription: resource.sub.validate()?,
            container: resource.cnt,
            security: cse.security.clone(),
            fingerprints,
        })
    }
}

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: [&str; 7] = [
    "cse.release_versions",
    "cse.registration.allowed_csr_originators",
    "cse.registration.allowed_ae_originators",
    "cse.registration.allowed_poa_hosts",
    "cse.registrar.address",
    "cse.registrar.exclude_csr_attributes",
    "http.poa",
];

/// Security keys whose environment value is a comma-separated list.
const SECRET_LIST_KEYS: [&str; 1] = ["http.security.bearer_tokens"];

/// A Basic username: not empty, no ':' (it separates the password on the wire).
pub(super) fn check_username(key: &str, username: &str) -> Result<(), ConfigError> {
    if username.is_empty() || username.contains(':') {
        return Err(ConfigError::invalid(key, "must be non-empty and must not contain ':'"));
    }
    Ok(())
}

/// A Bearer token: printable ASCII without spaces (it travels in a header).
pub(super) fn check_token(key: &str, token: &Secret) -> Result<(), ConfigError> {
    if token.is_empty() || !token.expose().bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ConfigError::invalid(key, "must be non-empty printable ASCII without spaces"));
    }
    Ok(())
}

pub(super) fn positive(key: &str, duration: Duration) -> Result<(), ConfigError> {
    if duration.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

pub(super) fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !crate::id::is_unreserved(name) {
        return Err(ConfigError::invalid(key, format!("{name:?} must be letters, digits, '-', '.', '_' or '~'")));
    }
    Ok(())
}

pub(super) fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Err(ConfigError::invalid(key, format!("{url:?} is not a URL")));
    };
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ConfigError::invalid(key, format!("{url:?} must be an http:// or https:// URL with a host")));
    }
    // Credentials belong in the security sections, never in a URL that may be stored or
    // advertised (a poa).
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "a URL must not carry credentials (user:password@): use a security section",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{Credentials, Originators};

    fn error_key(text: &str) -> String {
        let error =
            Settings::from_toml(text).and_then(Settings::validate).expect_err("configuration should be rejected");
        error.key().unwrap_or_default().to_string()
    }

    #[test]
    fn the_defaults_follow_onem2m_conventions() {
        let config = Config::defaults();
        assert_eq!(config.cse.kind, CseKind::In);
        assert_eq!(config.cse.cse_id, "/id-in");
        assert_eq!(config.cse.resource_id, "id-in");
        assert_eq!(config.cse.resource_name, "cse-in");
        assert_eq!(config.cse.sp_id, "acme.example.com");
        assert_eq!(config.cse.admin_originator, "CAdmin");
        assert_eq!(config.cse.release_versions, ["2a", "3", "4", "5"]);
        assert_eq!(config.http.listen.port(), 8080);
        assert!(config.registrar.is_none());
    }

    #[test]
    fn the_shipped_acme_toml_is_valid() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/acme.toml"))
            .expect("acme.toml at the repository root");
        Settings::from_toml(&text).and_then(Settings::validate).expect("acme.toml is valid");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let error = Settings::from_toml("[cse]\ncse_idd = \"/x\"\n").expect_err("unknown key");
        let text = error.to_string();
        assert!(text.contains("cse_idd"), "{text}");
        assert_eq!(error_key("[cse.registration]\nbogus = 1\n"), "cse.registration.bogus");
    }

    #[test]
    fn invalid_values_name_their_key() {
        assert_eq!(error_key("[cse]\ncse_id = \"id-in\"\n"), "cse.cse_id");
        assert_eq!(error_key("[cse]\ntype = \"XYZ\"\n"), "cse.type");
        assert_eq!(error_key("[http]\nlisten = \"localhost\"\n"), "http.listen");
        assert_eq!(error_key("[cse.registration]\ncheck_interval = \"0s\"\n"), "cse.registration.check_interval");
        assert_eq!(error_key("[cse.registration]\ncheck_interval = \"soon\"\n"), "cse.registration.check_interval");
        assert_eq!(
            error_key("[cse.registration]\nallowed_csr_originators = [\"id-mn\"]\n"),
            "cse.registration.allowed_csr_originators"
        );
        assert_eq!(error_key("[cse]\nresource_name = \"id-in\"\n"), "cse.resource_name");
        assert_eq!(error_key("[cse]\nrelease_versions = [\"9\"]\n"), "cse.release_versions");
    }

    #[test]
    fn registrar_rules_are_enforced() {
        // An IN has no same-SP registrar.
        let text =
            "[cse.registrar]\naddress = [\"http://127.0.0.1:8080\"]\ncse_id = \"/id-x\"\nresource_name = \"cse-x\"\n";
        assert_eq!(error_key(text), "cse.registrar");
        // An MN has no SP registrars.
        let text = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.sp.registrar.peer]\naddress = [\"http://127.0.0.1:9\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nsp_id = \"other.com\"\n";
        assert_eq!(error_key(text), "cse.sp.registrar.peer");
        // Required fields.
        let text = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.registrar]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n";
        assert_eq!(error_key(text), "cse.registrar.address");
        let text = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.registrar]\naddress = [\"http://127.0.0.1:8080\"]\nresource_name = \"cse-in\"\n";
        assert_eq!(error_key(text), "cse.registrar.cse_id");
        let text = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.registrar]\naddress = [\"ftp://x\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n";
        assert_eq!(error_key(text), "cse.registrar.address");
    }

    #[test]
    fn address_groups_follow_the_address_list_in_order_of_preference() {
        let groups = "[[cse.registrar.groups]]\nname = \"backup\"\naddress = [\"http://127.0.0.2:8080/\", \"http://127.0.0.3:8080\"]\n";
        let config = Settings::from_toml(&format!("{MN}{groups}")).and_then(Settings::validate).expect("valid");
        let registrar = config.registrar.expect("registrar");
        let names: Vec<&str> = registrar.groups.iter().map(|group| group.name.as_str()).collect();
        assert_eq!(names, [DEFAULT_GROUP, "backup"]);
        assert_eq!(registrar.addresses, ["http://127.0.0.1:8080", "http://127.0.0.2:8080", "http://127.0.0.3:8080"]);
        // Groups alone are enough; each needs a name, an address, and no URL twice.
        let only = MN.replace("address = [\"http://127.0.0.1:8080\"]\n", "");
        Settings::from_toml(&format!("{only}{groups}")).and_then(Settings::validate).expect("groups alone");
        assert_eq!(error_key(&only), "cse.registrar.address");
        let twice = "[[cse.registrar.groups]]\nname = \"b\"\naddress = [\"http://127.0.0.1:8080\"]\n";
        assert_eq!(error_key(&format!("{MN}{twice}")), "cse.registrar.groups[0].address");
        let empty = "[[cse.registrar.groups]]\nname = \"b\"\n";
        assert_eq!(error_key(&format!("{MN}{empty}")), "cse.registrar.groups[0].address");
        let unnamed = "[[cse.registrar.groups]]\naddress = [\"http://127.0.0.9:1\"]\n";
        assert_eq!(error_key(&format!("{MN}{unnamed}")), "cse.registrar.groups[0].name");
        let dup = "[[cse.registrar.groups]]\nname = \"default\"\naddress = [\"http://127.0.0.9:1\"]\n";
        assert_eq!(error_key(&format!("{MN}{dup}")), "cse.registrar.groups[0].name");
        // The order of tries: the address in use, its group, then the other groups.
        assert_eq!(registrar.attempt_order(None), [0, 1, 2]);
        assert_eq!(registrar.attempt_order(Some(2)), [2, 1, 0]);
        assert_eq!(registrar.attempt_order(Some(0)), [0, 1, 2]);
        assert_eq!(registrar.attempt_order(Some(9)), [0, 1, 2]);
    }

    #[test]
    fn a_valid_mn_configuration_is_accepted() {
        let text = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.registrar]\naddress = [\"http://127.0.0.1:8080/\", \"http://127.0.0.2:8080\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n";
        let config = Settings::from_toml(text).and_then(Settings::validate).expect("valid");
        let registrar = config.registrar.expect("registrar");
        assert_eq!(registrar.addresses, ["http://127.0.0.1:8080", "http://127.0.0.2:8080"]);
        assert_eq!(registrar.originator, "/id-mn");
        assert_eq!(registrar.sp_id, "acme.example.com");
    }

    #[test]
    fn environment_variables_override_the_file_and_cli_flags_override_both() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("acme.toml");
        std::fs::write(&path, "[cse]\ncse_id = \"/id-file\"\n[http]\nlisten = \"127.0.0.1:9000\"\n").expect("write");
        let env = [
            ("ACME_CSE__CSE_ID".to_string(), "/id-env".to_string()),
            ("ACME_CSE__REGISTRATION__ALLOWED_CSR_ORIGINATORS".to_string(), "/id-mn,/id-asn*".to_string()),
            ("ACME_WORK".to_string(), "/tmp/not-config".to_string()),
        ];
        let mut settings = Settings::load(&path, true, env).expect("load");
        assert_eq!(settings.cse.cse_id, "/id-env");
        assert_eq!(settings.cse.registration.allowed_csr_originators, ["/id-mn", "/id-asn*"]);
        settings.apply(&Overrides { http_port: Some(9100), cse_id: Some("/id-cli".into()), ..Overrides::default() });
        let config = settings.validate().expect("valid");
        assert_eq!(config.cse.cse_id, "/id-cli");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9100");

        let env = [("ACME_HTTP__LISTEN_PORT".to_string(), "1".to_string())];
        let error = Settings::load(&path, true, env).expect_err("unknown env key");
        assert!(error.to_string().contains("listen_port"), "{error}");
    }

    #[test]
    fn a_named_but_missing_file_is_an_error() {
        let error = Settings::load(Path::new("/nonexistent/acme.toml"), true, []).expect_err("missing");
        assert!(matches!(error, ConfigError::File { .. }));
    }

    const MN: &str = "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n[cse.registrar]\naddress = [\"http://127.0.0.1:8080\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n";

    #[test]
    fn registrar_credentials_come_in_pairs_of_one_kind() {
        let with = |security: &str| format!("{MN}[cse.registrar.security]\n{security}");
        assert_eq!(error_key(&with("username = \"mn\"\n")), "cse.registrar.security.password");
        assert_eq!(error_key(&with("password = \"pw\"\n")), "cse.registrar.security.username");
        assert_eq!(
            error_key(&with("username = \"mn\"\npassword = \"pw\"\ntoken = \"t\"\n")),
            "cse.registrar.security.token"
        );
        assert_eq!(error_key(&with("username = \"mn\"\ntoken = \"t\"\n")), "cse.registrar.security.token");
        assert_eq!(error_key(&with("self_username = \"in\"\n")), "cse.registrar.security.self_password");
        assert_eq!(
            error_key(&with("self_token = \"t\"\nself_password = \"pw\"\n")),
            "cse.registrar.security.self_token"
        );
        assert_eq!(error_key(&with("token = \"two words\"\n")), "cse.registrar.security.token");
        assert_eq!(error_key(&with("username = \"a:b\"\npassword = \"pw\"\n")), "cse.registrar.security.username");
        let text = "[cse]\ntype = \"IN\"\n[cse.sp.registrar.peer]\naddress = [\"http://127.0.0.1:9\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\nsp_id = \"other.com\"\n[cse.sp.registrar.peer.security]\nusername = \"in\"\n";
        assert_eq!(error_key(text), "cse.sp.registrar.peer.security.password");
    }

    #[test]
    fn registrar_credentials_are_validated_into_the_config() {
        let text = format!(
            "{MN}[cse.registrar.security]\nusername = \"mn\"\npassword = \"pw\"\nself_token = \"back\"\n[http.security]\nenable_bearer_auth = true\n"
        );
        let config = Settings::from_toml(&text).and_then(Settings::validate).expect("valid");
        let registrar = config.registrar.expect("registrar");
        assert_eq!(
            registrar.credentials,
            Some(Credentials::Basic { username: "mn".into(), password: Secret::new("pw") })
        );
        assert!(config.http.auth.check_bearer("back").is_some(), "the self token is accepted");
        assert!(!config.http.auth.accepts_basic());
        assert!(!format!("{:?}", config.http.auth).contains("back"), "no secret in Debug output");
    }

    #[test]
    fn registree_credentials_are_keyed_by_cse_id() {
        let text = "[[cse.registration.registree_security]]\ncse_id = \"/id-mn\"\nusername = \"in\"\npassword = \"pw\"\n[[cse.registration.registree_security]]\ncse_id = \"//acme.example.com/id-asn\"\ntoken = \"t\"\n[[cse.registration.registree_security]]\ncse_id = \"//other.com/id-in\"\ntoken = \"u\"\n";
        let config = Settings::from_toml(text).and_then(Settings::validate).expect("valid");
        let ids: Vec<&str> = config.registration.registree_credentials.keys().map(String::as_str).collect();
        assert_eq!(ids, ["//other.com/id-in", "/id-asn", "/id-mn"]);
        let text = "[[cse.registration.registree_security]]\ncse_id = \"id-mn\"\ntoken = \"t\"\n";
        assert_eq!(error_key(text), "cse.registration.registree_security[0].cse_id");
        let text = "[[cse.registration.registree_security]]\ncse_id = \"/id-mn\"\nusername = \"in\"\n";
        assert_eq!(error_key(text), "cse.registration.registree_security[0].password");
        let text = "[[cse.registration.registree_security]]\ncse_id = \"/id-mn\"\n";
        assert_eq!(error_key(text), "cse.registration.registree_security[0]");
        let text = "[[cse.registration.registree_security]]\ncse_id = \"/id-mn\"\ntoken = \"t\"\n[[cse.registration.registree_security]]\ncse_id = \"/id-mn\"\ntoken = \"u\"\n";
        assert_eq!(error_key(text), "cse.registration.registree_security[1].cse_id");
    }

    #[test]
    fn enabled_authentication_needs_someone_to_accept() {
        assert_eq!(error_key("[http.security]\nenable_basic_auth = true\n"), "http.security.basic_users");
        assert_eq!(error_key("[http.security]\nenable_bearer_auth = true\n"), "http.security.bearer_tokens");
        let text =
            "[http.security]\nenable_basic_auth = true\nbasic_users = [{ username = \"\", password = \"pw\" }]\n";
        assert_eq!(error_key(text), "http.security.basic_users[0].username");
        let text = "[http.security]\nenable_basic_auth = true\nbasic_users = [{ username = \"u\", password = \"$argon2id$broken\" }]\n";
        assert_eq!(error_key(text), "http.security.basic_users[0].password");
        let text = "[http.security]\nenable_bearer_auth = true\nbearer_tokens = [\"\"]\n";
        assert_eq!(error_key(text), "http.security.bearer_tokens[0]");
        let text =
            "[http.security]\nenable_basic_auth = true\nbasic_users = [{ username = \"u\", password = \"pw\" }]\n";
        let config = Settings::from_toml(text).and_then(Settings::validate).expect("valid");
        assert!(config.http.auth.check_basic("u", "pw").is_some());
    }

    #[test]
    fn credentials_name_the_originators_they_may_act_as() {
        let text = "[http.security]\nenable_basic_auth = true\nenable_bearer_auth = true\nbasic_users = [{ username = \"u\", password = \"pw\", originators = [\"Cu*\"] }, { username = \"v\", password = \"pw\" }]\nbearer_tokens = [\"plain\", { token = \"bound\", originators = [\"CAdmin\"] }]\n";
        let config = Settings::from_toml(text).and_then(Settings::validate).expect("valid");
        let auth = &config.http.auth;
        let bound = |principal: Option<crate::security::Principal>| principal.map(|principal| principal.originators);
        assert_eq!(bound(auth.check_basic("u", "pw")), Some(Originators::Only(vec!["Cu*".into()])));
        assert_eq!(bound(auth.check_basic("v", "pw")), Some(Originators::AnyButAdmin));
        assert_eq!(bound(auth.check_bearer("plain")), Some(Originators::AnyButAdmin));
        assert_eq!(bound(auth.check_bearer("bound")), Some(Originators::Only(vec!["CAdmin".into()])));
        let empty = "[http.security]\nenable_basic_auth = true\nbasic_users = [{ username = \"u\", password = \"pw\", originators = [] }]\n";
        assert_eq!(error_key(empty), "http.security.basic_users[0].originators");
        let blank =
            "[http.security]\nenable_bearer_auth = true\nbearer_tokens = [{ token = \"t\", originators = [\" \"] }]\n";
        assert_eq!(error_key(blank), "http.security.bearer_tokens[0].originators");
    }

    #[test]
    fn tls_needs_both_files_named() {
        assert_eq!(error_key("[http.tls]\nenable = true\n"), "http.tls.cert_file");
        assert_eq!(
            error_key("[http.tls]\nenable = true\ncert_file = \"/nonexistent/cert.pem\"\n"),
            "http.tls.key_file"
        );
        let text = "[http.tls]\nenable = true\ncert_file = \"/some/cert.pem\"\nkey_file = \"/some/key.pem\"\n";
        let config = Settings::from_toml(text).and_then(Settings::validate).expect("valid: files are read later");
        assert!(config.http.tls.server.is_some());
        assert!(config.http.tls.verify);
    }

    #[test]
    fn https_urls_are_accepted_and_urls_with_credentials_are_not() {
        let text = "[http]\npublic_url = \"https://cse.example.net:8443\"\npoa = [\"https://10.0.0.2:8443\"]\n";
        Settings::from_toml(text).and_then(Settings::validate).expect("https is fine");
        let text = "[http]\npoa = [\"http://user:secret@10.0.0.2:8080\"]\n";
        let error = Settings::from_toml(text).and_then(Settings::validate).expect_err("credentials in a URL");
        assert_eq!(error.key(), Some("http.poa"));
        assert!(!error.to_string().contains("secret"), "{error}");
        let mn_https = MN.replace("http://127.0.0.1:8080", "https://127.0.0.1:8443");
        Settings::from_toml(&mn_https).and_then(Settings::validate).expect("an https registrar is fine");
    }

    #[test]
    fn security_values_from_the_environment_stay_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("acme.toml");
        std::fs::write(&path, MN).expect("write");
        let env = [
            ("ACME_HTTP__SECURITY__ENABLE_BEARER_AUTH".to_string(), "true".to_string()),
            ("ACME_HTTP__SECURITY__BEARER_TOKENS".to_string(), "0123,abc".to_string()),
            ("ACME_CSE__REGISTRAR__SECURITY__USERNAME".to_string(), "mn".to_string()),
            ("ACME_CSE__REGISTRAR__SECURITY__PASSWORD".to_string(), "1e3".to_string()),
        ];
        let config = Settings::load(&path, true, env).and_then(Settings::validate).expect("valid");
        assert!(config.http.auth.check_bearer("0123").is_some() && config.http.auth.check_bearer("abc").is_some());
        assert_eq!(
            config.registrar.expect("registrar").credentials,
            Some(Credentials::Basic { username: "mn".into(), password: Secret::new("1e3") })
        );
    }

    #[test]
    fn a_log_level_that_names_no_level_is_refused_with_the_accepted_ones() {
        // `warning` was taken as a target name before, and silenced everything.
        for level in ["warning", "acme_cse=loud", "info,=debug", "", "info,,debug"] {
            let error = Settings::from_toml(&format!("[logging]\nlevel = {level:?}\n"))
                .and_then(Settings::validate)
                .expect_err(level);
            assert_eq!(error.key(), Some("logging.level"), "{level}");
            let text = error.to_string();
            assert!(text.contains("trace, debug, info, warn, error, off"), "{text}");
        }
        for level in ["warn", "INFO", "info,acme_cse::remote=debug", " debug , hyper=off "] {
            Settings::from_toml(&format!("[logging]\nlevel = {level:?}\n"))
                .and_then(Settings::validate)
                .unwrap_or_else(|error| panic!("{level:?}: {error}"));
        }
    }

    #[test]
    fn a_log_format_is_text_or_json_and_another_names_both() {
        let config = |text: &str| Settings::from_toml(text).and_then(Settings::validate);
        assert_eq!(Config::defaults().log_format, LogFormat::Text);
        assert_eq!(config("[logging]\nformat = \"json\"\n").expect("json").log_format, LogFormat::Json);
        let text = config("[logging]\nformat = \"xml\"\n").expect_err("xml").to_string();
        assert!(text.contains("logging.format") && text.contains("text") && text.contains("json"), "{text}");
    }

    #[test]
    fn an_invalid_choice_names_its_key_and_the_valid_values() {
        let refused = |text: &str| Settings::from_toml(text).and_then(Settings::validate).expect_err(text).to_string();
        let text = refused("[cse]\ntype = \"XYZ\"\n");
        assert!(text.contains("cse.type") && ["IN", "MN", "ASN"].iter().all(|kind| text.contains(kind)), "{text}");
        let text = refused("[database]\ndurability = \"extra\"\n");
        assert!(text.contains("database.durability") && text.contains("full") && text.contains("normal"), "{text}");
    }
}
