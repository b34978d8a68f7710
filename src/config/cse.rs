//! `[cse]`: who this CSE is, and the rules of its resources.

use std::time::Duration;

use serde::Deserialize;

use super::registration::{RegistrarSettings, RegistrationSettings, SpSettings};
use super::{ConfigError, check_name, positive};
use crate::id::{CseId, SpId};

/// The CSE type (`cst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CseKind {
    /// Infrastructure node.
    #[serde(rename = "IN", alias = "in")]
    In,
    /// Middle node.
    #[serde(rename = "MN", alias = "mn")]
    Mn,
    /// Application service node.
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

    /// `IN`, `MN` or `ASN`, as `cse.type` names it.
    pub fn name(self) -> &'static str {
        match self {
            CseKind::In => "IN",
            CseKind::Mn => "MN",
            CseKind::Asn => "ASN",
        }
    }

    /// `IN`, `MN` or `ASN` (any case).
    pub fn parse(text: &str) -> Option<CseKind> {
        match text.to_ascii_uppercase().as_str() {
            "IN" => Some(CseKind::In),
            "MN" => Some(CseKind::Mn),
            "ASN" => Some(CseKind::Asn),
            _ => None,
        }
    }
}

/// `[cse]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CseSettings {
    /// `type`: the CSE type.
    #[serde(rename = "type")]
    pub kind: CseKind,
    /// The CSE-ID (`/id-in`).
    pub cse_id: String,
    /// CSEBase `ri`; default: the CSE-ID without its slash.
    pub resource_id: Option<String>,
    /// CSEBase `rn`.
    pub resource_name: String,
    /// The service provider's ID (`acme.example.com`).
    pub sp_id: String,
    /// The originator with every right (with `[cse.security] full_access_admin`).
    pub admin_originator: String,
    /// The release versions accepted in `X-M2M-RVI` (and advertised in `srv`).
    pub release_versions: Vec<String>,
    /// `X-M2M-RVI` of requests this CSE sends to a configured URL.
    pub release_version: String,
    /// Longest lifetime a resource may be given (`et`).
    #[serde(with = "humantime_serde")]
    pub max_expiration_delta: Duration,
    /// How often expired resources are removed.
    #[serde(with = "humantime_serde")]
    pub expiration_check_interval: Duration,
    /// Most resources in one answer (discovery, `rcn` 4, 5, 6, 8).
    pub max_results: usize,
    /// Largest answer of that kind, in bytes (the stored size of the resources it carries).
    pub max_result_size: usize,
    /// `[cse.registration]`.
    pub registration: RegistrationSettings,
    /// `[cse.registrar]`: the same-SP registrar of an MN or ASN.
    pub registrar: Option<RegistrarSettings>,
    /// `[cse.sp.registrar.NAME]`: registrars in other service providers (IN only).
    pub sp: SpSettings,
    /// `[cse.security]`.
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

/// `[cse]`, checked.
#[derive(Debug, Clone)]
pub struct CseConfig {
    /// The CSE type.
    pub kind: CseKind,
    /// `/id-in`
    pub cse_id: CseId,
    /// CSEBase `ri`
    pub resource_id: String,
    /// CSEBase `rn`
    pub resource_name: String,
    /// SP-ID without the leading slashes: `acme.example.com`.
    pub sp_id: SpId,
    /// `admin_originator`.
    pub admin_originator: String,
    /// `release_versions`.
    pub release_versions: Vec<String>,
    /// `release_version`.
    pub release_version: String,
    /// `max_expiration_delta`.
    pub max_expiration_delta: Duration,
    /// `expiration_check_interval`.
    pub expiration_check_interval: Duration,
    /// `max_results`.
    pub max_results: usize,
    /// `max_result_size`.
    pub max_result_size: usize,
}

/// Longest resource lifetime: 1,000 years (timestamps must stay within four-digit years).
const MAX_EXPIRATION_DELTA: Duration = Duration::from_secs(1000 * 365 * 86_400);

const KNOWN_RELEASES: [&str; 6] = ["1", "2", "2a", "3", "4", "5"];

impl CseSettings {
    /// Check `[cse]` (without its subsections) into a [`CseConfig`].
    pub(super) fn validate(&self) -> Result<CseConfig, ConfigError> {
        let cse = self;
        let cse_id = parse_cse_id("cse.cse_id", &cse.cse_id)?;
        if cse_id.sp().is_some() {
            return Err(ConfigError::invalid("cse.cse_id", "must be SP-relative, like /id-in"));
        }
        let stem = cse_id.stem().to_string();
        let resource_id = cse.resource_id.clone().unwrap_or_else(|| stem.clone());
        check_name("cse.resource_id", &resource_id)?;
        check_name("cse.resource_name", &cse.resource_name)?;
        if cse.resource_name == stem {
            return Err(ConfigError::invalid("cse.resource_name", "must differ from the CSE-ID without its slash"));
        }
        let sp_id = parse_sp_id("cse.sp_id", &cse.sp_id)?;
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
        Ok(CseConfig {
            kind: cse.kind,
            cse_id,
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
        })
    }
}

/// A CSE-ID (`/` followed by unreserved characters, or `//sp/csi`), naming the key.
pub(super) fn parse_cse_id(key: &str, text: &str) -> Result<CseId, ConfigError> {
    CseId::parse(text).ok_or_else(|| {
        ConfigError::invalid(
            key,
            format!("{text:?} is not a CSE-ID: '/' followed by letters, digits, '-', '.', '_' or '~'"),
        )
    })
}

/// `acme.example.com` or `//acme.example.com`, naming the key.
pub(super) fn parse_sp_id(key: &str, text: &str) -> Result<SpId, ConfigError> {
    SpId::parse(text)
        .ok_or_else(|| ConfigError::invalid(key, format!("{text:?} is not an SP-ID like acme.example.com")))
}
