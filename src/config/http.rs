//! `[http]`: the HTTP binding: where it listens, its limits, who may call it
//! (`[http.security]`) and its TLS (`[http.tls]`; the PEM files named here are read by the
//! TLS module when the CSE starts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::registration::{RegistrarSettings, credentials};
use super::{ConfigError, check_token, check_url, check_username, positive};
use crate::security::{Authenticator, BasicUser, BearerToken, Credentials, Originators, Secret, StoredPassword};

/// `[http]` as written. Checked into [`HttpConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Socket address to listen on (`0.0.0.0:8080` by default).
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
    /// Serve the upper tester interface (TS-0019) at `POST /__ut__`, for conformance test
    /// systems. Off by default: it reads configuration values and runs requests as sent.
    pub enable_upper_tester: bool,
}

/// `[http.security]` as written: authentication of incoming requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSecuritySettings {
    /// Require HTTP Basic credentials (one of `basic_users`, or a registrar's self credentials).
    pub enable_basic_auth: bool,
    /// Require a Bearer token (one of `bearer_tokens`, or a registrar's self token).
    pub enable_bearer_auth: bool,
    /// Users accepted by Basic authentication.
    pub basic_users: Vec<BasicUserSettings>,
    /// Tokens accepted by Bearer authentication.
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

/// One entry of `http.security.basic_users`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUserSettings {
    /// The user name (no `:`).
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
    /// `"token"`: any originator except the admin.
    Plain(Secret),
    /// `{ token = "...", originators = [...] }`: only the originators listed (wildcards).
    Bound {
        /// The token.
        token: Secret,
        /// The originators it may act as.
        originators: Vec<String>,
    },
}

/// `[http.tls]` as written: HTTPS served and sent.
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
            enable_upper_tester: false,
        }
    }
}

/// `[http]`, checked: see [`HttpSettings`] for each key.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The socket address the oneM2M listener binds.
    pub listen: SocketAddr,
    /// The URL other CSEs reach this one at (an `http(s)://` URL), when set.
    pub public_url: Option<String>,
    /// The explicit `poa` list (URLs); empty: derived from `public_url` or `listen`.
    pub poa: Vec<String>,
    /// Largest accepted request body, in bytes; positive.
    pub max_body_size: usize,
    /// Longest time one incoming request may take; positive.
    pub request_timeout: Duration,
    /// Time-out of requests this CSE sends; positive.
    pub client_timeout: Duration,
    /// Time-out of establishing a connection to another CSE; positive.
    pub client_connect_timeout: Duration,
    /// Largest answer body read from another CSE, in bytes; positive.
    pub client_max_body_size: usize,
    /// Most incoming requests served at once; positive.
    pub max_concurrent_requests: usize,
    /// Most connections open at once; positive.
    pub max_connections: usize,
    /// Longest time to receive a request's headers (and to keep an idle connection).
    pub header_read_timeout: Duration,
    /// Largest request head, in bytes; at least 8 KiB.
    pub max_header_size: usize,
    /// Who may call this CSE (`[http.security]` and the registrars' self credentials).
    pub auth: Authenticator,
    /// Failed authentications per minute per client address before it is refused for a
    /// while; 0: no limit.
    pub max_auth_failures: u32,
    /// HTTPS served and trusted.
    pub tls: TlsConfig,
    /// `http.enable_upper_tester`.
    pub upper_tester: bool,
}

/// `[http.tls]`, checked.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `Some`: serve HTTPS with this certificate chain and key.
    pub server: Option<TlsFiles>,
    /// Extra CAs trusted for HTTPS peers (PEM bundle).
    pub ca_file: Option<PathBuf>,
    /// Verify HTTPS peers' certificates (false only for tests).
    pub verify: bool,
}

/// The PEM files of the server's certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key_file: PathBuf,
}

/// Smallest request-head buffer the HTTP server accepts.
const MIN_HEADER_SIZE: usize = 8 * 1024;

impl HttpSettings {
    /// Check `[http]`; `registrars` are the registrar sections, whose self credentials are
    /// accepted too.
    pub(super) fn validate(self, registrars: &[(String, &RegistrarSettings)]) -> Result<HttpConfig, ConfigError> {
        let http = self;
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
        let auth = authenticator(&http.security, registrars)?;
        let tls = http.tls.validate()?;
        Ok(HttpConfig {
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
            upper_tester: http.enable_upper_tester,
        })
    }
}

impl TlsSettings {
    /// `[http.tls]`: with `enable`, both files are named (they are read when the CSE
    /// starts, before any port is bound).
    fn validate(&self) -> Result<TlsConfig, ConfigError> {
        let given = |path: &Option<PathBuf>| path.clone().filter(|path| !path.as_os_str().is_empty());
        let server = if self.enable {
            let required = |key: &str| ConfigError::invalid(key, "is required when http.tls.enable = true");
            let cert_file = given(&self.cert_file).ok_or_else(|| required("http.tls.cert_file"))?;
            let key_file = given(&self.key_file).ok_or_else(|| required("http.tls.key_file"))?;
            Some(TlsFiles { cert_file, key_file })
        } else {
            None
        };
        Ok(TlsConfig { server, ca_file: given(&self.ca_file), verify: self.verify })
    }
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
