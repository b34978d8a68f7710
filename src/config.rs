//! Configuration: `acme.toml`, layered and validated once into typed values.
//!
//! Layers, later wins: built-in defaults (the `Default` impls below), the TOML file
//! (`--config`, default `./acme.toml`), environment variables (`ACME_` prefix, `__` between
//! levels, e.g. `ACME_CSE__CSE_ID=/id-mn`), then the few command-line flags
//! ([`Overrides`]). Unknown keys and invalid values are errors that name the key; the
//! rest of the program only ever sees a valid [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::security::{
    Authenticator, BasicUser, BearerToken, Credentials, HostPattern, Originators, Secret, StoredPassword,
};
use crate::tls::ServerTls;

/// Problems found in the configuration; each names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
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

/// The CSE type (`cst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CseKind {
    #[serde(rename = "IN", alias = "in")]
    In,
    #[serde(rename = "MN", alias = "mn")]
    Mn,
    #[serde(rename = "ASN", alias = "asn")]
    Asn,
}

impl CseKind {
    /// The `cst` number: 1 IN, 2 MN, 3 ASN.
    pub fn cst(self) -> u8 {
        match self {
            CseKind::In => 1,
            CseKind::Mn => 2,
            CseKind::Asn => 3,
        }
    }

    pub fn parse(text: &str) -> Option<CseKind> {
        match text.to_ascii_uppercase().as_str() {
            "IN" => Some(CseKind::In),
            "MN" => Some(CseKind::Mn),
            "ASN" => Some(CseKind::Asn),
            _ => None,
        }
    }
}

/// How hard a commit is pushed to disk (SQLite `synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every commit: an acknowledged CREATE survives a power loss.
    Full,
    /// fsync at checkpoints only: survives a crash of the process, not of the machine.
    Normal,
}

// ---------------------------------------------------------------------------------------
// The file format. Field names are the `acme.toml` keys (a contract: extend, never rename).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub cse: CseSettings,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub logging: LoggingSettings,
    pub resource: ResourceSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CseSettings {
    #[serde(rename = "type")]
    pub kind: CseKind,
    pub cse_id: String,
    /// CSEBase `ri`; default: the CSE-ID without its slash.
    pub resource_id: Option<String>,
    pub resource_name: String,
    pub sp_id: String,
    pub admin_originator: String,
    pub release_versions: Vec<String>,
    /// `X-M2M-RVI` of requests this CSE sends to a configured URL.
    pub release_version: String,
    #[serde(with = "humantime_serde")]
    pub max_expiration_delta: Duration,
    #[serde(with = "humantime_serde")]
    pub expiration_check_interval: Duration,
    /// Most resources in one answer (discovery, `rcn` 4, 5, 6, 8).
    pub max_results: usize,
    /// Largest answer of that kind, in bytes (the stored size of the resources it carries).
    pub max_result_size: usize,
    pub registration: RegistrationSettings,
    pub registrar: Option<RegistrarSettings>,
    pub sp: SpSettings,
    pub security: AccessSettings,
}

/// `[cse.security]`: access control.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSettings {
    /// Evaluate access control policies (off: everybody may do everything).
    pub enable_acp_checks: bool,
    /// The admin originator may do everything.
    pub full_access_admin: bool,
}

impl Default for AccessSettings {
    fn default() -> Self {
        AccessSettings { enable_acp_checks: true, full_access_admin: true }
    }
}

impl Default for CseSettings {
    fn default() -> Self {
        CseSettings {
            kind: CseKind::In,
            cse_id: "/id-in".into(),
            resource_id: None,
            resource_name: "cse-in".into(),
            sp_id: "acme.example.com".into(),
            admin_originator: "CAdmin".into(),
            release_versions: ["2a", "3", "4", "5"].map(String::from).to_vec(),
            release_version: "5".into(),
            max_expiration_delta: Duration::from_secs(157_680_000),
            expiration_check_interval: Duration::from_secs(60),
            max_results: 10_000,
            max_result_size: 8 * 1024 * 1024,
            registration: RegistrationSettings::default(),
            registrar: None,
            sp: SpSettings::default(),
            security: AccessSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    pub check_liveliness: bool,
    pub unregister_when_stopping: bool,
    pub allowed_csr_originators: Vec<String>,
    pub allowed_ae_originators: Vec<String>,
    /// Hosts that AEs and registree CSEs may advertise in their `poa` (address blocks and
    /// host name patterns); empty: any host.
    pub allowed_poa_hosts: Vec<String>,
    /// Most CSEs a registree may list below it (`dcse`).
    pub max_descendants: usize,
    /// Consecutive failed probes after which a registree is removed.
    pub liveliness_failures: u32,
    /// Time-out of one registree probe.
    #[serde(with = "humantime_serde")]
    pub liveliness_timeout: Duration,
    /// Most registree probes in flight at once.
    pub liveliness_parallelism: usize,
    /// `[[cse.registration.registree_security]]`: credentials this CSE presents when it
    /// calls a registree (probes, forwarding down), one entry per registree CSE-ID.
    pub registree_security: Vec<RegistreeSecuritySettings>,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        RegistrationSettings {
            check_interval: Duration::from_secs(60),
            check_liveliness: true,
            unregister_when_stopping: true,
            allowed_csr_originators: Vec::new(),
            allowed_ae_originators: ["C*", "S*", "/*/C*", "/*/S*"].map(String::from).to_vec(),
            allowed_poa_hosts: Vec::new(),
            max_descendants: 10_000,
            liveliness_failures: 2,
            liveliness_timeout: Duration::from_secs(3),
            liveliness_parallelism: 64,
            registree_security: Vec::new(),
        }
    }
}

/// One `[[cse.registration.registree_security]]` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistreeSecuritySettings {
    /// The registree's CSE-ID as stored here (`/id-mn`, or `//sp/id-in` for an SP peer).
    pub cse_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSettings {
    /// Base URLs of the registrar, most preferred first.
    pub address: Vec<String>,
    pub root: String,
    pub cse_id: String,
    pub resource_name: String,
    pub sp_id: Option<String>,
    pub serialization: Option<String>,
    pub exclude_csr_attributes: Vec<String>,
    pub originator: Option<String>,
    /// `[cse.registrar.security]`, `[cse.sp.registrar.NAME.security]`.
    pub security: RegistrarSecuritySettings,
}

/// Credentials towards one registrar: the ones this CSE presents to it, and the ones the
/// registrar presents when it calls back (accepted here, never sent anywhere).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSecuritySettings {
    /// HTTP Basic credentials for every request to the registrar (both or neither).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// HTTP Bearer token for every request to the registrar (not with `username`).
    pub token: Option<Secret>,
    /// Basic credentials the registrar uses to call this CSE: added to the accepted users.
    pub self_username: Option<String>,
    pub self_password: Option<Secret>,
    /// Bearer token the registrar uses to call this CSE: added to the accepted tokens.
    pub self_token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpSettings {
    /// `[cse.sp.registrar.NAME]`: registrars in other service providers (IN-CSE only).
    pub registrar: BTreeMap<String, RegistrarSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub listen: String,
    /// The URL other CSEs reach this one at, when the listen address is not it.
    pub public_url: Option<String>,
    /// Explicit `poa` list; wins over `public_url` and the listen address.
    pub poa: Vec<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_size: usize,
    /// Longest time one incoming request may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time-out of requests this CSE sends.
    #[serde(with = "humantime_serde")]
    pub client_timeout: Duration,
    /// Time-out of establishing a connection to another CSE.
    #[serde(with = "humantime_serde")]
    pub client_connect_timeout: Duration,
    /// Largest answer body read from another CSE, in bytes.
    pub client_max_body_size: usize,
    /// Most incoming requests served at once.
    pub max_concurrent_requests: usize,
    /// Most connections open at once; at the limit, new connections wait.
    pub max_connections: usize,
    /// Longest time to receive a request's headers; also how long an idle keep-alive
    /// connection stays open.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_size: usize,
    /// `[http.security]`: authentication of incoming requests.
    pub security: HttpSecuritySettings,
    /// `[http.tls]`: HTTPS, served and sent.
    pub tls: TlsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSecuritySettings {
    /// Require HTTP Basic credentials (one of `basic_users`, or a registrar's self credentials).
    pub enable_basic_auth: bool,
    /// Require a Bearer token (one of `bearer_tokens`, or a registrar's self token).
    pub enable_bearer_auth: bool,
    pub basic_users: Vec<BasicUserSettings>,
    pub bearer_tokens: Vec<BearerTokenSettings>,
    /// Failed authentications a client address may make per minute before it is refused
    /// without verification for a minute; 0: no limit.
    pub max_auth_failures: u32,
}

impl Default for HttpSecuritySettings {
    fn default() -> Self {
        HttpSecuritySettings {
            enable_basic_auth: false,
            enable_bearer_auth: false,
            basic_users: Vec::new(),
            bearer_tokens: Vec::new(),
            max_auth_failures: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUserSettings {
    pub username: String,
    /// Plain text, or an argon2 PHC string (`$argon2id$...`).
    pub password: Secret,
    /// The originators this user may act as (exact IDs, `*` and `?` wildcards); without
    /// the list, any originator except the admin.
    #[serde(default)]
    pub originators: Option<Vec<String>>,
}

/// One accepted Bearer token: the token alone (any originator except the admin), or the
/// token with the originators it may act as.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BearerTokenSettings {
    Plain(Secret),
    Bound { token: Secret, originators: Vec<String> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// Serve HTTPS (with `cert_file` and `key_file`) instead of HTTP.
    pub enable: bool,
    /// PEM certificate chain of this CSE, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key_file: Option<PathBuf>,
    /// PEM bundle of CAs trusted for HTTPS peers, on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// Verify HTTPS peers' certificates; false is for tests only.
    pub verify: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings { enable: false, cert_file: None, key_file: None, ca_file: None, verify: true }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "0.0.0.0:8080".into(),
            public_url: None,
            poa: Vec::new(),
            max_body_size: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            client_timeout: Duration::from_secs(10),
            client_connect_timeout: Duration::from_secs(3),
            client_max_body_size: 4 * 1024 * 1024,
            max_concurrent_requests: 1024,
            max_connections: 1000,
            header_read_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            security: HttpSecuritySettings::default(),
            tls: TlsSettings::default(),
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        LoggingSettings { level: "info".into() }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ResourceSettings {
    pub cnt: ContainerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerSettings {
    /// Give containers without limits the default `mni`/`mbs` below.
    pub enable_limits: bool,
    pub mni: u64,
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
    pub http_port: Option<u16>,
    pub cse_id: Option<String>,
    pub cse_type: Option<CseKind>,
    pub db_path: Option<PathBuf>,
    pub in_memory: bool,
    pub log_level: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The validated configuration the program runs with.
// ---------------------------------------------------------------------------------------

/// A valid configuration. Built only by [`Settings::validate`].
#[derive(Debug, Clone)]
pub struct Config {
    pub cse: CseConfig,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    /// The same-SP registrar (MN/ASN only).
    pub registrar: Option<RegistrarConfig>,
    /// Registrars in other service providers (IN only), by section name.
    pub sp_registrars: Vec<RegistrarConfig>,
    pub log_level: String,
    pub container: ContainerSettings,
    pub security: AccessSettings,
}

#[derive(Debug, Clone)]
pub struct CseConfig {
    pub kind: CseKind,
    /// `/id-in`
    pub cse_id: String,
    /// CSEBase `ri`
    pub resource_id: String,
    /// CSEBase `rn`
    pub resource_name: String,
    /// SP-ID without the leading slashes: `acme.example.com`.
    pub sp_id: String,
    pub admin_originator: String,
    pub release_versions: Vec<String>,
    pub release_version: String,
    pub max_expiration_delta: Duration,
    pub expiration_check_interval: Duration,
    pub max_results: usize,
    pub max_result_size: usize,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub poa: Vec<String>,
    pub max_body_size: usize,
    pub request_timeout: Duration,
    pub client_timeout: Duration,
    pub client_connect_timeout: Duration,
    pub client_max_body_size: usize,
    pub max_concurrent_requests: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_size: usize,
    /// Who may call this CSE (`[http.security]` and the registrars' self credentials).
    pub auth: Authenticator,
    /// Failed authentications per minute per client address before it is refused for a
    /// while; 0: no limit.
    pub max_auth_failures: u32,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `Some`: serve HTTPS with this certificate and key.
    pub server: Option<ServerTls>,
    /// Extra CAs trusted for HTTPS peers (`ca_file`), DER.
    pub ca_certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Verify HTTPS peers' certificates (false only for tests).
    pub verify: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None`: a throw-away in-memory store.
    pub path: Option<PathBuf>,
    pub durability: Durability,
}

#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    pub check_interval: Duration,
    pub check_liveliness: bool,
    pub unregister_when_stopping: bool,
    pub allowed_csr_originators: Vec<String>,
    pub allowed_ae_originators: Vec<String>,
    /// Empty: any host.
    pub allowed_poa_hosts: Vec<HostPattern>,
    pub max_descendants: usize,
    pub liveliness_failures: u32,
    pub liveliness_timeout: Duration,
    pub liveliness_parallelism: usize,
    /// Credentials for calling a registree, by its CSE-ID as stored here.
    pub registree_credentials: BTreeMap<String, Credentials>,
}

#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// The config section this came from (`cse.registrar` or `cse.sp.registrar.NAME`).
    pub section: String,
    /// Base URLs (no trailing slash), most preferred first; never empty.
    pub addresses: Vec<String>,
    pub root: String,
    pub cse_id: String,
    pub resource_name: String,
    /// SP-ID without slashes.
    pub sp_id: String,
    pub exclude_csr_attributes: Vec<String>,
    pub originator: String,
    /// Presented on every request to this registrar (registration and forwarding).
    pub credentials: Option<Credentials>,
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
            if name.to_ascii_uppercase().contains("__SECURITY__") {
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
        serde_path_to_error::deserialize(layered).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::invalid(&key, error.into_inner().to_string())
        })
    }

    /// Parse a TOML text on top of the defaults (for tests and embedders).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let layered = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|error| ConfigError::invalid(".", error.to_string()))?;
        serde_path_to_error::deserialize(layered).map_err(|error| {
            let key = error.path().to_string();
            ConfigError::invalid(&key, error.into_inner().to_string())
        })
    }

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
        let Settings { cse, http, database, logging, resource } = self;

        check_cse_id("cse.cse_id", &cse.cse_id)?;
        let stem = cse.cse_id.trim_start_matches('/').to_string();
        let resource_id = cse.resource_id.clone().unwrap_or_else(|| stem.clone());
        check_name("cse.resource_id", &resource_id)?;
        check_name("cse.resource_name", &cse.resource_name)?;
        if cse.resource_name == stem {
            return Err(ConfigError::invalid("cse.resource_name", "must differ from the CSE-ID without its slash"));
        }
        let sp_id = normalize_sp_id("cse.sp_id", &cse.sp_id)?;
        if cse.admin_originator.is_empty() || cse.admin_originator.contains(char::is_whitespace) {
            return Err(ConfigError::invalid("cse.admin_originator", "must be a non-empty ID"));
        }
        if cse.release_versions.is_empty() {
            return Err(ConfigError::invalid("cse.release_versions", "must not be empty"));
        }
        for version in &cse.release_versions {
            if !KNOWN_RELEASES.contains(&version.as_str()) {
                return Err(ConfigError::invalid(
                    "cse.release_versions",
                    format!("unknown release version {version:?} (known: {KNOWN_RELEASES:?})"),
                ));
            }
        }
        if !cse.release_versions.contains(&cse.release_version) {
            return Err(ConfigError::invalid("cse.release_version", "must be one of cse.release_versions"));
        }
        positive("cse.max_expiration_delta", cse.max_expiration_delta)?;
        if cse.max_expiration_delta > MAX_EXPIRATION_DELTA {
            return Err(ConfigError::invalid(
                "cse.max_expiration_delta",
                format!("must be at most {}", humantime::format_duration(MAX_EXPIRATION_DELTA)),
            ));
        }
        positive("cse.expiration_check_interval", cse.expiration_check_interval)?;
        if cse.max_results == 0 {
            return Err(ConfigError::invalid("cse.max_results", "must be greater than 0"));
        }
        if cse.max_result_size == 0 {
            return Err(ConfigError::invalid("cse.max_result_size", "must be greater than 0"));
        }

        let registration = &cse.registration;
        positive("cse.registration.check_interval", registration.check_interval)?;
        for pattern in &registration.allowed_csr_originators {
            if !pattern.starts_with('/') {
                return Err(ConfigError::invalid(
                    "cse.registration.allowed_csr_originators",
                    format!("{pattern:?} must be an SP-relative (/id-mn) or absolute (//sp/id-mn) CSE-ID pattern"),
                ));
            }
        }
        if registration.liveliness_failures == 0 {
            return Err(ConfigError::invalid("cse.registration.liveliness_failures", "must be at least 1"));
        }
        positive("cse.registration.liveliness_timeout", registration.liveliness_timeout)?;
        if registration.liveliness_parallelism == 0 {
            return Err(ConfigError::invalid("cse.registration.liveliness_parallelism", "must be at least 1"));
        }
        for pattern in &registration.allowed_ae_originators {
            if pattern.is_empty() {
                return Err(ConfigError::invalid(
                    "cse.registration.allowed_ae_originators",
                    "entries must not be empty",
                ));
            }
        }
        let allowed_poa_hosts = registration
            .allowed_poa_hosts
            .iter()
            .map(|text| HostPattern::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::invalid("cse.registration.allowed_poa_hosts", reason))?;

        let registrar = match &cse.registrar {
            None => None,
            Some(settings) => {
                if cse.kind == CseKind::In {
                    return Err(ConfigError::invalid(
                        "cse.registrar",
                        "an IN-CSE has no registrar in its own service provider (use [cse.sp.registrar.NAME])",
                    ));
                }
                Some(registrar_config("cse.registrar", settings, &cse, &sp_id, false)?)
            }
        };
        let mut sp_registrars = Vec::new();
        for (name, settings) in &cse.sp.registrar {
            let section = format!("cse.sp.registrar.{name}");
            if cse.kind != CseKind::In {
                return Err(ConfigError::invalid(
                    &section,
                    "only an IN-CSE may have registrars in other service providers",
                ));
            }
            sp_registrars.push(registrar_config(&section, settings, &cse, &sp_id, true)?);
        }
        let registree_credentials = registree_credentials(&registration.registree_security, &sp_id)?;

        let listen: SocketAddr = http.listen.parse().map_err(|_| {
            ConfigError::invalid("http.listen", format!("{:?} is not a socket address like 0.0.0.0:8080", http.listen))
        })?;
        if let Some(url) = &http.public_url {
            check_url("http.public_url", url)?;
        }
        for url in &http.poa {
            check_url("http.poa", url)?;
        }
        if http.max_body_size == 0 {
            return Err(ConfigError::invalid("http.max_body_size", "must be greater than 0"));
        }
        positive("http.request_timeout", http.request_timeout)?;
        positive("http.client_timeout", http.client_timeout)?;
        positive("http.client_connect_timeout", http.client_connect_timeout)?;
        if http.client_max_body_size == 0 {
            return Err(ConfigError::invalid("http.client_max_body_size", "must be greater than 0"));
        }
        if http.max_concurrent_requests == 0 {
            return Err(ConfigError::invalid("http.max_concurrent_requests", "must be greater than 0"));
        }
        if http.max_connections == 0 {
            return Err(ConfigError::invalid("http.max_connections", "must be greater than 0"));
        }
        positive("http.header_read_timeout", http.header_read_timeout)?;
        if http.max_header_size < MIN_HEADER_SIZE {
            return Err(ConfigError::invalid(
                "http.max_header_size",
                format!("must be at least {MIN_HEADER_SIZE} bytes"),
            ));
        }
        let registrar_sections: Vec<(String, &RegistrarSettings)> = cse
            .registrar
            .iter()
            .map(|settings| ("cse.registrar".to_string(), settings))
            .chain(cse.sp.registrar.iter().map(|(name, settings)| (format!("cse.sp.registrar.{name}"), settings)))
            .collect();
        let auth = authenticator(&http.security, &registrar_sections)?;
        let tls = tls_config(&http.tls)?;

        if !database.in_memory && database.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("database.path", "must not be empty unless database.in_memory = true"));
        }
        if tracing_subscriber::EnvFilter::try_new(&logging.level).is_err() {
            return Err(ConfigError::invalid(
                "logging.level",
                format!("{:?} is not a log filter (e.g. \"info\", \"acme_cse=debug\")", logging.level),
            ));
        }

        Ok(Config {
            cse: CseConfig {
                kind: cse.kind,
                cse_id: cse.cse_id.clone(),
                resource_id,
                resource_name: cse.resource_name.clone(),
                sp_id,
                admin_originator: cse.admin_originator.clone(),
                release_versions: cse.release_versions.clone(),
                release_version: cse.release_version.clone(),
                max_expiration_delta: cse.max_expiration_delta,
                expiration_check_interval: cse.expiration_check_interval,
                max_results: cse.max_results,
                max_result_size: cse.max_result_size,
            },
            http: HttpConfig {
                listen,
                public_url: http.public_url.map(|url| url.trim_end_matches('/').to_string()),
                poa: http.poa.iter().map(|url| url.trim_end_matches('/').to_string()).collect(),
                max_body_size: http.max_body_size,
                request_timeout: http.request_timeout,
                client_timeout: http.client_timeout,
                client_connect_timeout: http.client_connect_timeout,
                client_max_body_size: http.client_max_body_size,
                max_concurrent_requests: http.max_concurrent_requests,
                max_connections: http.max_connections,
                header_read_timeout: http.header_read_timeout,
                max_header_size: http.max_header_size,
                auth,
                max_auth_failures: http.security.max_auth_failures,
                tls,
            },
            database: DatabaseConfig {
                path: (!database.in_memory).then_some(database.path),
                durability: database.durability,
            },
            registration: RegistrationConfig {
                check_interval: registration.check_interval,
                check_liveliness: registration.check_liveliness,
                unregister_when_stopping: registration.unregister_when_stopping,
                allowed_csr_originators: registration.allowed_csr_originators.clone(),
                allowed_ae_originators: registration.allowed_ae_originators.clone(),
                allowed_poa_hosts,
                max_descendants: registration.max_descendants,
                liveliness_failures: registration.liveliness_failures,
                liveliness_timeout: registration.liveliness_timeout,
                liveliness_parallelism: registration.liveliness_parallelism,
                registree_credentials,
            },
            registrar,
            sp_registrars,
            log_level: logging.level,
            container: resource.cnt,
            security: cse.security.clone(),
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

/// Longest resource lifetime: 1,000 years (timestamps must stay within four-digit years).
const MAX_EXPIRATION_DELTA: Duration = Duration::from_secs(1000 * 365 * 86_400);

/// Smallest request-head buffer the HTTP server accepts.
const MIN_HEADER_SIZE: usize = 8 * 1024;

const KNOWN_RELEASES: [&str; 6] = ["1", "2", "2a", "3", "4", "5"];

fn registrar_config(
    section: &str,
    settings: &RegistrarSettings,
    cse: &CseSettings,
    own_sp: &str,
    other_sp: bool,
) -> Result<RegistrarConfig, ConfigError> {
    let key = |name: &str| format!("{section}.{name}");
    if settings.address.is_empty() {
        return Err(ConfigError::invalid(&key("address"), "at least one registrar URL is required"));
    }
    let mut addresses = Vec::new();
    for address in &settings.address {
        check_url(&key("address"), address)?;
        addresses.push(address.trim_end_matches('/').to_string());
    }
    if settings.cse_id.is_empty() {
        return Err(ConfigError::invalid(&key("cse_id"), "the registrar's CSE-ID is required"));
    }
    check_cse_id(&key("cse_id"), &settings.cse_id)?;
    if settings.resource_name.is_empty() {
        return Err(ConfigError::invalid(&key("resource_name"), "the registrar's CSEBase name is required"));
    }
    check_name(&key("resource_name"), &settings.resource_name)?;
    let sp_id = match &settings.sp_id {
        Some(sp) => normalize_sp_id(&key("sp_id"), sp)?,
        None if other_sp => {
            return Err(ConfigError::invalid(&key("sp_id"), "the SP-ID of the other service provider is required"));
        }
        None => own_sp.to_string(),
    };
    if other_sp && sp_id == own_sp {
        return Err(ConfigError::invalid(&key("sp_id"), "names this CSE's own service provider"));
    }
    if !other_sp && sp_id != own_sp {
        return Err(ConfigError::invalid(
            &key("sp_id"),
            "a same-SP registrar must be in this CSE's service provider (use [cse.sp.registrar.NAME] on an IN-CSE)",
        ));
    }
    if !other_sp && settings.cse_id == cse.cse_id {
        return Err(ConfigError::invalid(&key("cse_id"), "is this CSE's own CSE-ID"));
    }
    match settings.serialization.as_deref() {
        None | Some("json") => {}
        Some(other) => {
            return Err(ConfigError::invalid(
                &key("serialization"),
                format!("{other:?} is not supported (supported: \"json\")"),
            ));
        }
    }
    for name in &settings.exclude_csr_attributes {
        if matches!(name.as_str(), "rn" | "rr" | "poa") {
            return Err(ConfigError::invalid(&key("exclude_csr_attributes"), format!("{name:?} cannot be excluded")));
        }
    }
    let root = settings.root.trim_end_matches('/');
    let root = if root.is_empty() || root.starts_with('/') { root.to_string() } else { format!("/{root}") };
    let originator = match &settings.originator {
        Some(originator) if !originator.is_empty() => originator.clone(),
        _ if other_sp => format!("//{own_sp}{}", cse.cse_id),
        _ => cse.cse_id.clone(),
    };
    Ok(RegistrarConfig {
        section: section.to_string(),
        addresses,
        root,
        cse_id: settings.cse_id.clone(),
        resource_name: settings.resource_name.clone(),
        sp_id,
        exclude_csr_attributes: settings.exclude_csr_attributes.clone(),
        originator,
        credentials: credentials(
            &key("security"),
            "",
            &settings.security.username,
            &settings.security.password,
            &settings.security.token,
        )?,
    })
}

/// Credentials of one section: `{prefix}username` with `{prefix}password` (both or
/// neither), or `{prefix}token` (not both kinds). Empty values count as absent, so an
/// unset environment variable does not configure anything.
fn credentials(
    section: &str,
    prefix: &str,
    username: &Option<String>,
    password: &Option<Secret>,
    token: &Option<Secret>,
) -> Result<Option<Credentials>, ConfigError> {
    let key = |name: &str| format!("{section}.{prefix}{name}");
    let username = username.as_ref().filter(|username| !username.is_empty());
    let password = password.as_ref().filter(|password| !password.is_empty());
    let token = token.as_ref().filter(|token| !token.is_empty());
    if token.is_some() && (username.is_some() || password.is_some()) {
        return Err(ConfigError::invalid(
            &key("token"),
            format!("cannot be combined with {prefix}username/{prefix}password: configure one kind of credentials"),
        ));
    }
    match (username, password, token) {
        (Some(_), None, _) => {
            Err(ConfigError::invalid(&key("password"), format!("is required with {prefix}username (both or neither)")))
        }
        (None, Some(_), _) => {
            Err(ConfigError::invalid(&key("username"), format!("is required with {prefix}password (both or neither)")))
        }
        (Some(username), Some(password), _) => {
            check_username(&key("username"), username)?;
            Ok(Some(Credentials::Basic { username: username.clone(), password: password.clone() }))
        }
        (None, None, Some(token)) => {
            check_token(&key("token"), token)?;
            Ok(Some(Credentials::Bearer { token: token.clone() }))
        }
        (None, None, None) => Ok(None),
    }
}

/// `[[cse.registration.registree_security]]` by registree CSE-ID, in the form the
/// registry stores it (`/id-mn`; `//sp/id-in` for another service provider).
fn registree_credentials(
    entries: &[RegistreeSecuritySettings],
    own_sp: &str,
) -> Result<BTreeMap<String, Credentials>, ConfigError> {
    let mut by_cse = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let section = format!("cse.registration.registree_security[{index}]");
        let key = format!("{section}.cse_id");
        let cse_id = match entry.cse_id.strip_prefix("//") {
            Some(rest) => {
                let (sp, csi) = rest.split_once('/').unwrap_or((rest, ""));
                let sp = normalize_sp_id(&key, sp)?;
                check_cse_id(&key, &format!("/{csi}"))?;
                if sp == own_sp { format!("/{csi}") } else { format!("//{sp}/{csi}") }
            }
            None => {
                check_cse_id(&key, &entry.cse_id)?;
                entry.cse_id.clone()
            }
        };
        let Some(credentials) = credentials(&section, "", &entry.username, &entry.password, &entry.token)? else {
            return Err(ConfigError::invalid(&section, "needs username and password, or token"));
        };
        if by_cse.insert(cse_id.clone(), credentials).is_some() {
            return Err(ConfigError::invalid(&key, format!("{cse_id:?} has credentials twice")));
        }
    }
    Ok(by_cse)
}

/// Who may call this CSE: `[http.security]` plus the self credentials of every registrar
/// section, each kind only while its scheme is enabled.
fn authenticator(
    security: &HttpSecuritySettings,
    registrars: &[(String, &RegistrarSettings)],
) -> Result<Authenticator, ConfigError> {
    let mut users = Vec::new();
    for (index, user) in security.basic_users.iter().enumerate() {
        let key = |name: &str| format!("http.security.basic_users[{index}].{name}");
        check_username(&key("username"), &user.username)?;
        if user.password.is_empty() {
            return Err(ConfigError::invalid(&key("password"), "must not be empty"));
        }
        let password = StoredPassword::parse(user.password.clone())
            .map_err(|reason| ConfigError::invalid(&key("password"), reason))?;
        let originators = originators(&key("originators"), user.originators.as_deref())?;
        users.push(BasicUser { username: user.username.clone(), password, originators });
    }
    let mut tokens = Vec::new();
    for (index, token) in security.bearer_tokens.iter().enumerate() {
        let key = format!("http.security.bearer_tokens[{index}]");
        let (token, originators) = match token {
            BearerTokenSettings::Plain(token) => (token, originators(&key, None)?),
            BearerTokenSettings::Bound { token, originators: list } => {
                (token, originators(&format!("{key}.originators"), Some(list))?)
            }
        };
        check_token(&key, token)?;
        tokens.push(BearerToken { token: token.clone(), originators });
    }
    for (section, settings) in registrars {
        let section = format!("{section}.security");
        let own = &settings.security;
        match credentials(&section, "self_", &own.self_username, &own.self_password, &own.self_token)? {
            None => {}
            Some(Credentials::Basic { username, password }) => {
                let password = StoredPassword::parse(password)
                    .map_err(|reason| ConfigError::invalid(&format!("{section}.self_password"), reason))?;
                users.push(BasicUser { username, password, originators: Originators::AnyButAdmin });
            }
            Some(Credentials::Bearer { token }) => {
                tokens.push(BearerToken { token, originators: Originators::AnyButAdmin });
            }
        }
    }
    if security.enable_basic_auth && users.is_empty() {
        return Err(ConfigError::invalid(
            "http.security.basic_users",
            "Basic authentication is enabled but no user is configured (basic_users or a registrar's self_username)",
        ));
    }
    if security.enable_bearer_auth && tokens.is_empty() {
        return Err(ConfigError::invalid(
            "http.security.bearer_tokens",
            "Bearer authentication is enabled but no token is configured (bearer_tokens or a registrar's self_token)",
        ));
    }
    Ok(Authenticator::new(security.enable_basic_auth.then_some(users), security.enable_bearer_auth.then_some(tokens)))
}

/// The originators a credential may act as: the listed patterns (not empty, none blank),
/// or without a list any originator except the admin.
fn originators(key: &str, list: Option<&[String]>) -> Result<Originators, ConfigError> {
    let Some(list) = list else {
        return Ok(Originators::AnyButAdmin);
    };
    if list.is_empty() {
        return Err(ConfigError::invalid(key, "must name at least one originator (or be left out)"));
    }
    if let Some(blank) = list.iter().find(|pattern| pattern.trim().is_empty() || pattern.contains(char::is_whitespace))
    {
        return Err(ConfigError::invalid(key, format!("{blank:?} is not an originator pattern")));
    }
    Ok(Originators::Only(list.to_vec()))
}

/// `[http.tls]`: the certificate and key are read and checked now, so that a bad file
/// stops the start before any port is bound.
fn tls_config(tls: &TlsSettings) -> Result<TlsConfig, ConfigError> {
    let given = |path: &Option<PathBuf>| path.clone().filter(|path| !path.as_os_str().is_empty());
    let server = if tls.enable {
        let required = |key: &str| ConfigError::invalid(key, "is required when http.tls.enable = true");
        let cert_file = given(&tls.cert_file).ok_or_else(|| required("http.tls.cert_file"))?;
        let key_file = given(&tls.key_file).ok_or_else(|| required("http.tls.key_file"))?;
        let chain = crate::tls::load_certificates(&cert_file)
            .map_err(|reason| ConfigError::invalid("http.tls.cert_file", reason))?;
        let key = crate::tls::load_private_key(&key_file)
            .map_err(|reason| ConfigError::invalid("http.tls.key_file", reason))?;
        Some(ServerTls::new(chain, key).map_err(|reason| ConfigError::invalid("http.tls.key_file", reason))?)
    } else {
        None
    };
    let ca_certificates = match given(&tls.ca_file) {
        Some(path) => {
            crate::tls::load_certificates(&path).map_err(|reason| ConfigError::invalid("http.tls.ca_file", reason))?
        }
        None => Vec::new(),
    };
    Ok(TlsConfig { server, ca_certificates, verify: tls.verify })
}

/// A Basic username: not empty, no ':' (it separates the password on the wire).
fn check_username(key: &str, username: &str) -> Result<(), ConfigError> {
    if username.is_empty() || username.contains(':') {
        return Err(ConfigError::invalid(key, "must be non-empty and must not contain ':'"));
    }
    Ok(())
}

/// A Bearer token: printable ASCII without spaces (it travels in a header).
fn check_token(key: &str, token: &Secret) -> Result<(), ConfigError> {
    if token.is_empty() || !token.expose().bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ConfigError::invalid(key, "must be non-empty printable ASCII without spaces"));
    }
    Ok(())
}

fn positive(key: &str, duration: Duration) -> Result<(), ConfigError> {
    if duration.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// `/` followed by unreserved characters.
fn check_cse_id(key: &str, cse_id: &str) -> Result<(), ConfigError> {
    match cse_id.strip_prefix('/') {
        Some(stem) if !stem.is_empty() && crate::address::is_unreserved(stem) => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("{cse_id:?} is not a CSE-ID: '/' followed by letters, digits, '-', '.', '_' or '~'"),
        )),
    }
}

fn check_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || !crate::address::is_unreserved(name) {
        return Err(ConfigError::invalid(key, format!("{name:?} must be letters, digits, '-', '.', '_' or '~'")));
    }
    Ok(())
}

/// Accept `acme.example.com` and `//acme.example.com`; keep the bare form.
fn normalize_sp_id(key: &str, sp_id: &str) -> Result<String, ConfigError> {
    let bare = sp_id.trim_start_matches('/');
    if bare.is_empty() || !crate::address::is_unreserved(bare) {
        return Err(ConfigError::invalid(key, format!("{sp_id:?} is not an SP-ID like acme.example.com")));
    }
    Ok(bare.to_string())
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
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
    fn tls_needs_a_certificate_and_a_matching_key() {
        assert_eq!(error_key("[http.tls]\nenable = true\n"), "http.tls.cert_file");
        assert_eq!(
            error_key("[http.tls]\nenable = true\ncert_file = \"/nonexistent/cert.pem\"\n"),
            "http.tls.key_file"
        );
        let text =
            "[http.tls]\nenable = true\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n";
        assert_eq!(error_key(text), "http.tls.cert_file");
        assert_eq!(error_key("[http.tls]\nca_file = \"/nonexistent/ca.pem\"\n"), "http.tls.ca_file");

        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path.display().to_string()
        };
        let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let second = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = write("cert.pem", &first.cert.pem());
        let key = write("key.pem", &first.signing_key.serialize_pem());
        let other_key = write("other.pem", &second.signing_key.serialize_pem());
        let tls =
            |cert: &str, key: &str| format!("[http.tls]\nenable = true\ncert_file = {cert:?}\nkey_file = {key:?}\n");
        assert_eq!(error_key(&tls(&cert, &other_key)), "http.tls.key_file");
        assert_eq!(error_key(&tls(&key, &key)), "http.tls.cert_file");
        let config = Settings::from_toml(&tls(&cert, &key)).and_then(Settings::validate).expect("valid");
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
}
