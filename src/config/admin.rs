//! `[admin]`: the operations listener (health, metrics, topology, the management API),
//! apart from the oneM2M port so that no oneM2M path is shadowed.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, check_token};
use crate::security::Secret;

/// `[admin]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Where the admin endpoints listen (`host:port`); empty: no admin listener.
    pub listen: String,
    /// When set, every admin request must carry `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// Where the admin listener is unless configured.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9080";

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings { listen: DEFAULT_ADMIN_LISTEN.into(), token: None }
    }
}

/// `[admin]`, checked.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None`: off.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` is the built-in default: a CSE whose default admin port is taken
    /// (another CSE on this machine) starts without it, saying so; a configured address
    /// that cannot be bound stops the start.
    pub default_listen: bool,
    /// The bearer token every admin request must carry, if any.
    pub token: Option<Secret>,
}

impl AdminSettings {
    pub(super) fn validate(&self) -> Result<AdminConfig, ConfigError> {
        let listen = match self.listen.trim() {
            "" => None,
            text => Some(text.parse().map_err(|_| {
                ConfigError::invalid(
                    "admin.listen",
                    format!("{text:?} is not host:port (e.g. \"127.0.0.1:9080\"); empty turns the admin listener off"),
                )
            })?),
        };
        if let Some(token) = &self.token {
            check_token("admin.token", token)?;
        }
        Ok(AdminConfig {
            listen,
            default_listen: self.listen.trim() == DEFAULT_ADMIN_LISTEN,
            token: self.token.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_listener_is_on_loopback_by_default_off_when_empty_and_named_when_wrong() {
        let config = AdminSettings::default().validate().expect("valid");
        assert_eq!(config.listen, Some("127.0.0.1:9080".parse().expect("address")));
        let off = AdminSettings { listen: String::new(), token: None }.validate().expect("valid");
        assert_eq!(off.listen, None);
        let error = AdminSettings { listen: "localhost".into(), token: None }.validate().expect_err("no port");
        assert_eq!(error.key(), Some("admin.listen"));
        let error = AdminSettings { listen: "127.0.0.1:0".into(), token: Some(Secret::new("a b")) }
            .validate()
            .expect_err("blank in a token");
        assert_eq!(error.key(), Some("admin.token"));
    }
}
