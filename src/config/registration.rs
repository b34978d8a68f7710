//! `[cse.registration]`, `[cse.registrar]`, `[cse.sp.registrar.NAME]`: who may register
//! here, and where this CSE registers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::cse::{CseConfig, CseKind, CseSettings, parse_cse_id, parse_sp_id};
use super::{ConfigError, check_name, check_token, check_url, check_username, positive};
use crate::id::{CseId, SpId};
use crate::security::{Credentials, HostPattern, Secret};

/// `[cse.registration]` as written: who may register here, and how the connection
/// monitor runs. Checked into [`RegistrationConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    /// Period of the connection monitor (registrar checks, registree probes).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Probe registree CSEs every round and remove the ones that stay unreachable.
    pub check_liveliness: bool,
    /// On shutdown, delete this CSE's CSR on its registrar and the local registrar CSR.
    pub unregister_when_stopping: bool,
    /// Originators allowed to register a CSE here (CSR CREATE): CSE-IDs with `*` and `?`.
    pub allowed_csr_originators: Vec<String>,
    /// Originators allowed to register an AE here, with the same wildcards.
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
    /// HTTP Basic user name presented to the registree (with `password`).
    pub username: Option<String>,
    /// HTTP Basic password presented to the registree (with `username`).
    pub password: Option<Secret>,
    /// HTTP Bearer token presented to the registree (not with `username`).
    pub token: Option<Secret>,
}

/// `[cse.registrar]` or `[cse.sp.registrar.NAME]` as written: a registrar this CSE
/// registers to. Checked into [`RegistrarConfig`].
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSettings {
    /// Base URLs of the registrar, most preferred first: its most preferred address group
    /// (named `default`).
    pub address: Vec<String>,
    /// `[[cse.registrar.groups]]`: further groups of addresses of the same registrar (a
    /// second site, a backup), in order of preference after `address`.
    pub groups: Vec<AddressGroupSettings>,
    /// Path prefix of the registrar's oneM2M HTTP binding (empty for none).
    pub root: String,
    /// The registrar's CSE-ID (required).
    pub cse_id: String,
    /// The registrar's CSEBase resource name (required).
    pub resource_name: String,
    /// The registrar's SP-ID: this CSE's own by default; another one for an SP peer.
    pub sp_id: Option<String>,
    /// Body format of registration traffic; `json` is the one supported.
    pub serialization: Option<String>,
    /// Attributes never sent in this CSE's CSR to this registrar (not `rn`, `rr`, `poa`).
    pub exclude_csr_attributes: Vec<String>,
    /// Originator of registration requests; this CSE's CSE-ID by default.
    pub originator: Option<String>,
    /// `[cse.registrar.security]`, `[cse.sp.registrar.NAME.security]`.
    pub security: RegistrarSecuritySettings,
}

/// One `[[cse.registrar.groups]]` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AddressGroupSettings {
    /// Named in logs and status reports.
    pub name: String,
    /// Base URLs, equally good: the one that answers is kept.
    pub address: Vec<String>,
}

/// Credentials towards one registrar: the ones this CSE presents to it, and the ones the
/// registrar presents when it calls back (accepted here, never sent anywhere).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSecuritySettings {
    /// HTTP Basic credentials for every request to the registrar (both or neither).
    pub username: Option<String>,
    /// The password of `username`.
    pub password: Option<Secret>,
    /// HTTP Bearer token for every request to the registrar (not with `username`).
    pub token: Option<Secret>,
    /// Basic credentials the registrar uses to call this CSE: added to the accepted users.
    pub self_username: Option<String>,
    /// The password of `self_username` (plain or an argon2 hash).
    pub self_password: Option<Secret>,
    /// Bearer token the registrar uses to call this CSE: added to the accepted tokens.
    pub self_token: Option<Secret>,
}

/// `[cse.sp]`: relations with other service providers.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpSettings {
    /// `[cse.sp.registrar.NAME]`: registrars in other service providers (IN-CSE only).
    pub registrar: BTreeMap<String, RegistrarSettings>,
}

/// `[cse.registration]`, checked: see [`RegistrationSettings`] for each key.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationConfig {
    /// Period of the connection monitor; positive.
    pub check_interval: Duration,
    /// Whether registrees are probed and removed when they stay unreachable.
    pub check_liveliness: bool,
    /// Whether a stop deregisters (remote CSR and local registrar CSR deleted).
    pub unregister_when_stopping: bool,
    /// Patterns of the originators that may register a CSE here.
    pub allowed_csr_originators: Vec<String>,
    /// Patterns of the originators that may register an AE here.
    pub allowed_ae_originators: Vec<String>,
    /// Hosts a `poa` may name; empty: any host.
    pub allowed_poa_hosts: Vec<HostPattern>,
    /// Most CSEs a registree may list in `dcse`.
    pub max_descendants: usize,
    /// Consecutive failed probes after which a registree is removed; at least 1.
    pub liveliness_failures: u32,
    /// Time-out of one registree probe.
    pub liveliness_timeout: Duration,
    /// Most registree probes in flight at once; at least 1.
    pub liveliness_parallelism: usize,
    /// Credentials for calling a registree, by its CSE-ID as stored here.
    pub registree_credentials: BTreeMap<String, Credentials>,
}

/// A registrar relation, checked: where and as whom this CSE registers.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrarConfig {
    /// The config section this came from (`cse.registrar` or `cse.sp.registrar.NAME`).
    pub section: String,
    /// Base URLs (no trailing slash) of every group, most preferred first; never empty.
    pub addresses: Vec<String>,
    /// The address groups in order of preference (`address` first, as `default`); their
    /// addresses, in order, are `addresses`.
    pub groups: Vec<AddressGroup>,
    /// Path prefix of the registrar's HTTP binding (empty, or starting with `/`).
    pub root: String,
    /// The registrar's CSE-ID, SP-relative.
    pub cse_id: CseId,
    /// The registrar's CSEBase resource name.
    pub resource_name: String,
    /// The registrar's service provider.
    pub sp_id: SpId,
    /// Attributes left out of the CSR this CSE creates there.
    pub exclude_csr_attributes: Vec<String>,
    /// Originator of the registration requests.
    pub originator: String,
    /// Presented on every request to this registrar (registration and forwarding).
    pub credentials: Option<Credentials>,
}

/// Addresses of one registrar that are reached together, with a name for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressGroup {
    /// `default` for `address`, else the group's configured name.
    pub name: String,
    /// Base URLs without a trailing slash, equally preferred.
    pub addresses: Vec<String>,
}

impl AddressGroup {
    /// In `groups` (whose addresses, in order, are one list), the position of the group
    /// that holds the address at `index` of that list.
    pub fn position_of(groups: &[AddressGroup], index: usize) -> Option<usize> {
        let mut end = 0;
        groups.iter().position(|group| {
            end += group.addresses.len();
            index < end
        })
    }
}

/// The name of the group that `address` forms.
pub const DEFAULT_GROUP: &str = "default";

impl RegistrarConfig {
    /// The position of the group that the address at `index` (into `addresses`) is in.
    pub fn group_of(&self, index: usize) -> Option<usize> {
        AddressGroup::position_of(&self.groups, index)
    }

    /// The order in which to try the addresses (indexes into `addresses`): the one in use
    /// (`active`), the others of its group, then every other group's by preference.
    pub fn attempt_order(&self, active: Option<usize>) -> Vec<usize> {
        let all = 0..self.addresses.len();
        let Some(active) = active.filter(|active| *active < self.addresses.len()) else {
            return all.collect();
        };
        let group = self.group_of(active);
        let mut order = vec![active];
        order.extend(all.clone().filter(|index| *index != active && self.group_of(*index) == group));
        order.extend(all.filter(|index| self.group_of(*index) != group));
        order
    }

    /// Its CSE-ID in absolute form (`//sp/id-in`): how this CSE names the registrar of
    /// another service provider.
    pub fn absolute_cse_id(&self) -> String {
        self.cse_id.absolute(&self.sp_id)
    }
}

impl CseSettings {
    /// Check the registration subsections of `[cse]`, given the checked `[cse]` itself:
    /// who may register, the same-SP registrar, the registrars of other service providers.
    pub(super) fn validate_registration(
        &self,
        own: &CseConfig,
    ) -> Result<(RegistrationConfig, Option<RegistrarConfig>, Vec<RegistrarConfig>), ConfigError> {
        let cse = self;
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
                Some(registrar_config("cse.registrar", settings, own, false)?)
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
            sp_registrars.push(registrar_config(&section, settings, own, true)?);
        }
        let registree_credentials = registree_credentials(&registration.registree_security, &own.sp_id)?;
        let config = RegistrationConfig {
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
        };
        Ok((config, registrar, sp_registrars))
    }

    /// The registrar sections (`cse.registrar`, `cse.sp.registrar.NAME`) with their keys.
    pub(super) fn registrar_sections(&self) -> Vec<(String, &RegistrarSettings)> {
        self.registrar
            .iter()
            .map(|settings| ("cse.registrar".to_string(), settings))
            .chain(self.sp.registrar.iter().map(|(name, settings)| (format!("cse.sp.registrar.{name}"), settings)))
            .collect()
    }
}

fn registrar_config(
    section: &str,
    settings: &RegistrarSettings,
    own: &CseConfig,
    other_sp: bool,
) -> Result<RegistrarConfig, ConfigError> {
    let own_sp = &own.sp_id;
    let key = |name: &str| format!("{section}.{name}");
    let groups = address_groups(section, settings)?;
    let addresses = groups.iter().flat_map(|group| group.addresses.iter().cloned()).collect();
    if settings.cse_id.is_empty() {
        return Err(ConfigError::invalid(&key("cse_id"), "the registrar's CSE-ID is required"));
    }
    let cse_id = parse_cse_id(&key("cse_id"), &settings.cse_id)?;
    if cse_id.sp().is_some() {
        return Err(ConfigError::invalid(&key("cse_id"), "must be SP-relative, like /id-in (sp_id names the SP)"));
    }
    if settings.resource_name.is_empty() {
        return Err(ConfigError::invalid(&key("resource_name"), "the registrar's CSEBase name is required"));
    }
    check_name(&key("resource_name"), &settings.resource_name)?;
    let sp_id = match &settings.sp_id {
        Some(sp) => parse_sp_id(&key("sp_id"), sp)?,
        None if other_sp => {
            return Err(ConfigError::invalid(&key("sp_id"), "the SP-ID of the other service provider is required"));
        }
        None => own_sp.clone(),
    };
    if other_sp && sp_id == *own_sp {
        return Err(ConfigError::invalid(&key("sp_id"), "names this CSE's own service provider"));
    }
    if !other_sp && sp_id != *own_sp {
        return Err(ConfigError::invalid(
            &key("sp_id"),
            "a same-SP registrar must be in this CSE's service provider (use [cse.sp.registrar.NAME] on an IN-CSE)",
        ));
    }
    if !other_sp && cse_id == own.cse_id {
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
        _ if other_sp => own.cse_id.absolute(own_sp),
        _ => own.cse_id.to_string(),
    };
    Ok(RegistrarConfig {
        section: section.to_string(),
        addresses,
        groups,
        root,
        cse_id,
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

/// `address` (the `default` group) and `groups`, checked: at least one address in all,
/// every group named once and not empty, every URL valid and listed once.
fn address_groups(section: &str, settings: &RegistrarSettings) -> Result<Vec<AddressGroup>, ConfigError> {
    let mut groups = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut check = |key: &str, urls: &[String]| -> Result<Vec<String>, ConfigError> {
        let mut addresses = Vec::new();
        for url in urls {
            check_url(key, url)?;
            let address = url.trim_end_matches('/').to_string();
            if !seen.insert(address.clone()) {
                return Err(ConfigError::invalid(key, format!("{url:?} is listed twice")));
            }
            addresses.push(address);
        }
        Ok(addresses)
    };
    if !settings.address.is_empty() {
        let addresses = check(&format!("{section}.address"), &settings.address)?;
        groups.push(AddressGroup { name: DEFAULT_GROUP.to_string(), addresses });
    }
    for (index, group) in settings.groups.iter().enumerate() {
        let key = format!("{section}.groups[{index}]");
        check_name(&format!("{key}.name"), &group.name)?;
        if groups.iter().any(|known: &AddressGroup| known.name == group.name) {
            return Err(ConfigError::invalid(&format!("{key}.name"), format!("{:?} names two groups", group.name)));
        }
        if group.address.is_empty() {
            return Err(ConfigError::invalid(&format!("{key}.address"), "a group needs at least one URL"));
        }
        let addresses = check(&format!("{key}.address"), &group.address)?;
        groups.push(AddressGroup { name: group.name.clone(), addresses });
    }
    if groups.is_empty() {
        return Err(ConfigError::invalid(
            &format!("{section}.address"),
            "at least one registrar URL is required (address, or groups)",
        ));
    }
    Ok(groups)
}

/// Credentials of one section: `{prefix}username` with `{prefix}password` (both or
/// neither), or `{prefix}token` (not both kinds). Empty values count as absent, so an
/// unset environment variable does not configure anything.
pub(super) fn credentials(
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
    own_sp: &SpId,
) -> Result<BTreeMap<String, Credentials>, ConfigError> {
    let mut by_cse = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let section = format!("cse.registration.registree_security[{index}]");
        let key = format!("{section}.cse_id");
        // As the registry keeps it: SP-relative in this service provider.
        let parsed = parse_cse_id(&key, &entry.cse_id)?;
        let cse_id = match parsed.sp() {
            Some(sp) if sp == own_sp.as_str() => format!("/{}", parsed.stem()),
            _ => parsed.to_string(),
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
