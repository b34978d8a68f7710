//! Access control: may this originator perform this operation on this resource?
//!
//! The rules, first decisive one wins (the reference CSE's order, without its defects):
//! checks switched off → granted; the admin (when `full_access_admin`) and this CSE itself
//! → granted; AE/CSR registration is decided by the allowed-originator lists (the
//! registration rules of `core::types::{ae, csr}`); a RETRIEVE of the CSEBase is granted to
//! registrars, allowed CSR originators and registered AEs; an ACP is governed by its own
//! `pvs`; a resource without `acpi` belongs to its custodian (`cstn`) or else its creator,
//! and a resource that cannot carry `acpi` (a CIN) follows its parent; otherwise the `pv`
//! rules of the referenced ACPs decide.
//!
//! A `pv` rule applies when its `acop` has the operation's bit, one of its contexts
//! (`acco`: time windows `actw`, client addresses `acip`) holds, the request is
//! authenticated if `acaf` asks for it, the type being created is in its `acod`, and its
//! `acor` names the originator. A rule with `aca` then grants those attributes only: an
//! operation passes when everything it touches (the attributes retrieved, sent, or of the
//! resource deleted) is among the attributes the applying rules grant. Unlike the reference
//! CSE, attribute grants count only for rules whose `acor` names the originator.
//! Reads only; no async.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::config::Config;
use crate::core::address::Identity;
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType, TimeWindow};
use crate::storage::ReadTx;

/// One bit of `acop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Permission {
    /// CREATE (1).
    Create,
    /// RETRIEVE (2).
    Retrieve,
    /// UPDATE (4).
    Update,
    /// DELETE (8).
    Delete,
    /// NOTIFY (16).
    Notify,
    /// DISCOVERY (32).
    Discovery,
}

impl Permission {
    /// Its bit in `acop`.
    pub fn bit(self) -> u64 {
        match self {
            Permission::Create => 1,
            Permission::Retrieve => 2,
            Permission::Update => 4,
            Permission::Delete => 8,
            Permission::Notify => 16,
            Permission::Discovery => 32,
        }
    }

    /// Its name in capitals, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Create => "CREATE",
            Permission::Retrieve => "RETRIEVE",
            Permission::Update => "UPDATE",
            Permission::Delete => "DELETE",
            Permission::Notify => "NOTIFY",
            Permission::Discovery => "DISCOVERY",
        }
    }
}

/// Who asks, in the simplified (reception) form.
#[derive(Debug, Clone)]
pub struct Accessor {
    /// The originator, in reception form.
    pub originator: String,
    /// Passed HTTP authentication (for rules with `acaf`).
    pub authenticated: bool,
    /// The address the request came from (for rules with `acip`), when a binding knows it.
    pub address: Option<IpAddr>,
}

/// The access decisions of one request: who asks, and the rules that apply.
#[derive(Clone)]
pub struct Access {
    /// Who asks.
    pub accessor: Accessor,
    /// The configuration in force for this request.
    pub config: Arc<Config>,
    /// This CSE.
    pub identity: Arc<Identity>,
}

/// What an operation touches, for rules that grant single attributes (`aca`).
#[derive(Debug, Clone, Copy)]
pub enum Touches<'a> {
    /// Every attribute of the target (a RETRIEVE of it whole, a DELETE).
    Whole,
    /// These attributes (a partial RETRIEVE, the body of a CREATE or UPDATE).
    Attributes(&'a [String]),
}

/// What the applying rules of a policy grant.
#[derive(Debug, Default)]
struct Grant {
    /// A rule without `aca` applies: the whole operation.
    whole: bool,
    /// Attributes granted by rules with `aca`.
    attributes: BTreeSet<String>,
}

impl Access {
    /// Decide whether the accessor may do `permission` on `target`; `created` is the type
    /// being created for a CREATE (checked against the parent). `Err(4103)` names what is
    /// missing.
    pub fn check(
        &self,
        tx: &dyn ReadTx,
        target: &Resource,
        permission: Permission,
        created: Option<ResourceType>,
        touches: Touches<'_>,
    ) -> Result<()> {
        if self.granted(tx, target, permission, created, touches)? {
            return Ok(());
        }
        let what = match created {
            Some(ty) => format!("{} ({}) privilege under", permission.name(), ty.wrapper()),
            None => format!("{} privilege for", permission.name()),
        };
        Err(Error::new(
            Rsc::OriginatorHasNoPrivilege,
            format!("originator {} has no {what} {}", display(&self.accessor.originator), target.path),
        ))
    }

    /// Like [`Access::check`] of the whole target, as a yes/no (for filtering results).
    pub fn allows(&self, tx: &dyn ReadTx, target: &Resource, permission: Permission) -> Result<bool> {
        self.granted(tx, target, permission, None, Touches::Whole)
    }

    /// The special rule for changing `acpi`: UPDATE in the `pvs` of an ACP the resource
    /// references now; without `acpi`, only its creator (or custodian).
    pub fn check_acpi_change(&self, tx: &dyn ReadTx, target: &Resource) -> Result<()> {
        if !self.config.security.enable_acp_checks || self.is_privileged() {
            return Ok(());
        }
        if target.ty.is_announced() && self.announced_by_originator(target) {
            return Ok(());
        }
        let acpi = target.str_list("acpi");
        let mut allowed = acpi.is_empty() && owner(target) == Some(self.accessor.originator.as_str());
        for ri in &acpi {
            if let Some(acp) = tx.get(ri)?
                && self.self_privileges_grant(&acp, Permission::Update)
            {
                allowed = true;
                break;
            }
        }
        if allowed {
            return Ok(());
        }
        Err(Error::new(
            Rsc::OriginatorHasNoPrivilege,
            format!(
                "originator {} may not change the acpi of {}: that needs UPDATE in the pvs of a referenced ACP",
                display(&self.accessor.originator),
                target.path
            ),
        ))
    }

    fn granted(
        &self,
        tx: &dyn ReadTx,
        target: &Resource,
        permission: Permission,
        created: Option<ResourceType>,
        touches: Touches<'_>,
    ) -> Result<bool> {
        let config = &self.config;
        if !config.security.enable_acp_checks || self.is_privileged() {
            return Ok(true);
        }
        let originator = self.accessor.originator.as_str();
        if target.ty.is_announced() && self.announced_by_originator(target) {
            return Ok(true);
        }
        if permission == Permission::Update && self.holds_copy(target, touches) {
            // A CSE holding a copy synchronised both ways writes changes back: of what it
            // was given, not more.
            return Ok(true);
        }
        if let Some(created) = created.filter(|created| created.is_announced()) {
            // A CSE announces below this CSEBase when it may register here, and below its
            // own CSR.
            let granted = match target.ty {
                ResourceType::CseBase => {
                    let registrar = config.registrar.iter().any(|registrar| registrar.cse_id == originator);
                    (registrar || crate::id::matches_any(&config.registration.allowed_csr_originators, originator))
                        && created != ResourceType::CinAnnc
                }
                ResourceType::Csr => target.str("csi") == Some(originator),
                _ => false,
            };
            if granted {
                return Ok(true);
            }
        }
        match target.ty {
            ResourceType::CseBase if permission == Permission::Retrieve => {
                let registrar = config.registrar.iter().any(|registrar| registrar.cse_id == originator)
                    || config.sp_registrars.iter().any(|registrar| registrar.absolute_cse_id() == originator);
                if registrar
                    || crate::id::matches_any(&config.registration.allowed_csr_originators, originator)
                    || is_registered_ae(tx, originator)?
                {
                    return Ok(true);
                }
            }
            ResourceType::Acp | ResourceType::AcpAnnc => return Ok(self.self_privileges_grant(target, permission)),
            ResourceType::Cin => {
                // A CIN has no acpi of its own: its container decides, for the instance's
                // attributes.
                let Some(parent) = tx.get(target.pi())? else {
                    return Ok(false);
                };
                let names: Vec<String>;
                let touches = match touches {
                    Touches::Whole => {
                        names = target.attributes.keys().cloned().collect();
                        Touches::Attributes(&names)
                    }
                    touches => touches,
                };
                return self.granted(tx, &parent, permission, created, touches);
            }
            _ => {}
        }
        let acpi = target.str_list("acpi");
        if acpi.is_empty() {
            return Ok(owner(target) == Some(originator));
        }
        let mut any_policy = false;
        let mut grant = Grant::default();
        for ri in &acpi {
            let Some(acp) = tx.get(ri)? else { continue };
            any_policy = true;
            self.privileges_grant(acp.attributes.get("pv"), permission, created, &mut grant);
            if grant.whole {
                return Ok(true);
            }
        }
        if !any_policy {
            // Every referenced ACP is gone: the creator rule applies again.
            return Ok(owner(target) == Some(originator));
        }
        if grant.attributes.is_empty() || matches!(permission, Permission::Discovery | Permission::Notify) {
            return Ok(false);
        }
        let covered = |name: &str| grant.attributes.contains(name);
        Ok(match touches {
            Touches::Whole => target.attributes.keys().all(|name| covered(name)),
            Touches::Attributes(names) => names.iter().all(|name| covered(name)),
        })
    }

    /// Whether the originator is the CSE that announced `target` (its `lnk` names a
    /// resource of that CSE): it keeps its copies current, the access rules of this CSE
    /// aside.
    fn announced_by_originator(&self, target: &Resource) -> bool {
        let originator = self.identity.simplify_originator(&self.accessor.originator);
        let lnk = target.str("lnk").map(|lnk| self.identity.simplify_originator(lnk));
        originator.starts_with('/') && lnk.as_deref().and_then(crate::id::cse_of) == Some(originator.as_str())
    }

    /// Whether the originator is a CSE that holds an announced copy of `target` (an `at`
    /// entry `<its CSE-ID>/<copy>`) kept in step both ways (`ast` 2), and the update
    /// touches only what the copy was given (its mandatory announced attributes and those
    /// `aa` lists) — never `at`, `aa`, `ast` or `acpi`, and nothing of an ACP.
    fn holds_copy(&self, target: &Resource, touches: Touches<'_>) -> bool {
        let originator = self.identity.simplify_originator(&self.accessor.originator);
        let prefix = format!("{originator}/");
        let holder = target.u64("ast") == Some(2)
            && target.ty != ResourceType::Acp
            && originator.starts_with('/')
            && target.str_list("at").iter().any(|entry| entry.starts_with(&prefix));
        let Touches::Attributes(names) = touches else { return false };
        let Some((mandatory, optional)) = crate::core::types::announced_attributes(target.ty) else { return false };
        let listed = target.str_list("aa");
        holder
            && names.iter().all(|name| {
                !matches!(name.as_str(), "at" | "aa" | "ast" | "acpi" | "rn")
                    && (mandatory.contains(&name.as_str())
                        || (optional.contains(&name.as_str()) && listed.contains(name)))
            })
    }

    /// The admin (with `full_access_admin`) and this CSE itself may do everything.
    fn is_privileged(&self) -> bool {
        let originator = self.accessor.originator.as_str();
        let identity = &self.identity;
        (self.config.security.full_access_admin && originator == self.config.cse.admin_originator)
            || originator == identity.cse_id
            || originator == identity.cse_id.absolute(&identity.sp_id)
    }

    /// An ACP's own `pvs`: `acop` and `acor` decide (contexts, `acaf`, `acod` and `aca` do
    /// not apply to self-privileges).
    fn self_privileges_grant(&self, acp: &Resource, permission: Permission) -> bool {
        rules(acp.attributes.get("pvs")).any(|rule| operations(rule) & permission.bit() != 0 && self.named_by(rule))
    }

    /// Add what the `pv` rules of one policy grant for `permission` to `grant`.
    fn privileges_grant(
        &self,
        privileges: Option<&Value>,
        permission: Permission,
        created: Option<ResourceType>,
        grant: &mut Grant,
    ) {
        for rule in rules(privileges) {
            if operations(rule) & permission.bit() == 0 || !self.context_holds(rule) {
                continue;
            }
            if rule.get("acaf").and_then(Value::as_bool) == Some(true) && !self.accessor.authenticated {
                continue;
            }
            if !creates_allowed_type(rule, created) || !self.named_by(rule) {
                continue;
            }
            match rule.get("aca").and_then(Value::as_array) {
                Some(attributes) => {
                    grant.attributes.extend(attributes.iter().filter_map(Value::as_str).map(str::to_string))
                }
                None => grant.whole = true,
            }
        }
    }

    /// Does the rule's `acor` name the accessor (`all`, an exact ID, a wildcard pattern)?
    fn named_by(&self, rule: &Value) -> bool {
        let originators = rule.get("acor").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        let accessor = &self.accessor.originator;
        originators.into_iter().any(|pattern| {
            pattern == "all" || wildmatch::WildMatch::new(&self.identity.simplify_originator(pattern)).matches(accessor)
        })
    }

    /// A rule without `acco` holds in every context; with it, one of its contexts must hold:
    /// every time window list (`actw`) has a window containing now, and every address list
    /// (`acip`) holds the request's address. Contexts of other kinds (a location, `aclr`)
    /// cannot be checked here and never hold, so such a rule grants nothing rather than
    /// granting everywhere.
    fn context_holds(&self, rule: &Value) -> bool {
        let Some(contexts) = rule.get("acco") else {
            return true;
        };
        let now = chrono::Utc::now();
        contexts.as_array().into_iter().flatten().any(|context| {
            let Some(context) = context.as_object().filter(|context| !context.is_empty()) else {
                return false;
            };
            context.iter().all(|(kind, value)| match kind.as_str() {
                "actw" => value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|window| TimeWindow::parse(window).is_ok_and(|window| window.contains(now))),
                "acip" => self.accessor.address.is_some_and(|address| address_listed(value, address)),
                _ => false,
            })
        })
    }
}

/// The rules of a privileges value (`{"acr": [...]}`).
fn rules(privileges: Option<&Value>) -> impl Iterator<Item = &Value> {
    privileges.and_then(|privileges| privileges.get("acr")).and_then(Value::as_array).into_iter().flatten()
}

fn operations(rule: &Value) -> u64 {
    rule.get("acop").and_then(Value::as_u64).unwrap_or(0)
}

/// With `acod`, a CREATE applies only to the child types one of its entries lists.
fn creates_allowed_type(rule: &Value, created: Option<ResourceType>) -> bool {
    let (Some(created), Some(Value::Array(objects))) = (created, rule.get("acod")) else {
        return true;
    };
    let code = u64::from(created.code());
    objects.iter().any(|object| {
        object
            .get("chty")
            .and_then(Value::as_array)
            .is_some_and(|types| types.iter().any(|ty| ty.as_u64() == Some(code)))
    })
}

/// `acip`: `{"ipv4": [...], "ipv6": [...]}`, each an address or a block like 10.0.0.0/8.
fn address_listed(acip: &Value, address: IpAddr) -> bool {
    ["ipv4", "ipv6"]
        .iter()
        .filter_map(|family| acip.get(*family))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .any(|entry| {
            entry.parse::<ipnet::IpNet>().is_ok_and(|network| network.contains(&address))
                || entry.parse::<IpAddr>().is_ok_and(|listed| listed == address)
        })
}

/// The custodian if set, else the creator.
fn owner(resource: &Resource) -> Option<&str> {
    resource.str("cstn").or(resource.creator.as_deref())
}

fn is_registered_ae(tx: &dyn ReadTx, originator: &str) -> Result<bool> {
    let ri = originator.rsplit('/').next().unwrap_or(originator);
    if ri.is_empty() {
        return Ok(false);
    }
    Ok(tx.get(ri)?.is_some_and(|ae| ae.ty == ResourceType::Ae && ae.str("aei") == Some(originator)))
}

fn display(originator: &str) -> &str {
    if originator.is_empty() { "(none)" } else { originator }
}
