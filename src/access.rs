//! Access control: may this originator perform this operation on this resource?
//!
//! The rules, first decisive one wins (the reference CSE's order, without its defects):
//! checks switched off → granted; the admin (when `full_access_admin`) and this CSE itself
//! → granted; AE/CSR registration is decided by the allowed-originator lists (in the
//! dispatcher); a RETRIEVE of the CSEBase is granted to registrars, allowed CSR originators
//! and registered AEs; an ACP is governed by its own `pvs`; a resource without `acpi` belongs
//! to its custodian (`cstn`) or else its creator, and a resource that cannot carry `acpi` (a
//! CIN) follows its parent; otherwise the `pv` rules of the referenced ACPs decide.
//! Reads only; no async.

use std::sync::Arc;

use serde_json::Value;

use crate::address::Identity;
use crate::config::Config;
use crate::error::{Error, Result, Rsc};
use crate::resource::{Resource, ResourceType};
use crate::storage::ReadTx;

/// One bit of `acop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Create,
    Retrieve,
    Update,
    Delete,
    Notify,
    Discovery,
}

impl Permission {
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
    pub originator: String,
    /// Passed HTTP authentication (for rules with `acaf`).
    pub authenticated: bool,
}

/// The access decisions of one request: who asks, and the rules that apply.
#[derive(Clone)]
pub struct Access {
    pub accessor: Accessor,
    pub config: Arc<Config>,
    pub identity: Arc<Identity>,
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
    ) -> Result<()> {
        if self.granted(tx, target, permission, created)? {
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

    /// Like [`Access::check`], as a yes/no (for filtering discovery results).
    pub fn allows(&self, tx: &dyn ReadTx, target: &Resource, permission: Permission) -> Result<bool> {
        self.granted(tx, target, permission, None)
    }

    /// The special rule for changing `acpi`: UPDATE in the `pvs` of an ACP the resource
    /// references now; without `acpi`, only its creator (or custodian).
    pub fn check_acpi_change(&self, tx: &dyn ReadTx, target: &Resource) -> Result<()> {
        if !self.config.security.enable_acp_checks || self.is_privileged() {
            return Ok(());
        }
        let acpi = target.str_list("acpi");
        let mut allowed = acpi.is_empty() && owner(target) == Some(self.accessor.originator.as_str());
        for ri in &acpi {
            if let Some(acp) = tx.get(ri)? {
                if self.rules_grant(acp.attributes.get("pvs"), Permission::Update, None) {
                    allowed = true;
                    break;
                }
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
    ) -> Result<bool> {
        let config = &self.config;
        if !config.security.enable_acp_checks || self.is_privileged() {
            return Ok(true);
        }
        let originator = self.accessor.originator.as_str();
        match target.ty {
            ResourceType::CseBase if permission == Permission::Retrieve => {
                let registrar = config.registrar.iter().any(|registrar| registrar.cse_id == originator)
                    || config
                        .sp_registrars
                        .iter()
                        .any(|registrar| format!("//{}{}", registrar.sp_id, registrar.cse_id) == originator);
                if registrar
                    || crate::address::matches_any(&config.registration.allowed_csr_originators, originator)
                    || is_registered_ae(tx, originator)?
                {
                    return Ok(true);
                }
            }
            ResourceType::Acp => {
                return Ok(self.rules_grant(target.attributes.get("pvs"), permission, created));
            }
            ResourceType::Cin => {
                // A CIN has no acpi of its own: its container decides.
                return match tx.get(target.pi())? {
                    Some(parent) => self.granted(tx, &parent, permission, created),
                    None => Ok(false),
                };
            }
            _ => {}
        }
        let acpi = target.str_list("acpi");
        if acpi.is_empty() {
            return Ok(owner(target) == Some(originator));
        }
        let mut any_policy = false;
        for ri in &acpi {
            let Some(acp) = tx.get(ri)? else { continue };
            any_policy = true;
            if self.rules_grant(acp.attributes.get("pv"), permission, created) {
                return Ok(true);
            }
        }
        // Every referenced ACP is gone: the creator rule applies again.
        Ok(!any_policy && owner(target) == Some(originator))
    }

    /// The admin (with `full_access_admin`) and this CSE itself may do everything.
    fn is_privileged(&self) -> bool {
        let originator = self.accessor.originator.as_str();
        let identity = &self.identity;
        (self.config.security.full_access_admin && originator == self.config.cse.admin_originator)
            || originator == identity.cse_id
            || originator == format!("//{}{}", identity.sp_id, identity.cse_id)
    }

    /// Does any rule of `privileges` (`{"acr": [...]}`) grant `permission`?
    fn rules_grant(&self, privileges: Option<&Value>, permission: Permission, created: Option<ResourceType>) -> bool {
        let Some(rules) = privileges.and_then(|privileges| privileges.get("acr")).and_then(Value::as_array) else {
            return false;
        };
        rules.iter().any(|rule| rule_grants(rule, &self.identity, &self.accessor, permission, created))
    }
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

fn rule_grants(
    rule: &Value,
    identity: &Identity,
    accessor: &Accessor,
    permission: Permission,
    created: Option<ResourceType>,
) -> bool {
    let operations = rule.get("acop").and_then(Value::as_u64).unwrap_or(0);
    if operations & permission.bit() == 0 {
        return false;
    }
    // Attribute-level rules grant access to some attributes only, never a whole operation.
    if rule.get("aca").is_some() {
        return false;
    }
    // Time windows (`acco`/`actw`) are not evaluated yet: such a rule grants nothing rather
    // than granting outside its window. Other context kinds do not restrict.
    let time_windows = rule.get("acco").and_then(Value::as_array).into_iter().flatten().any(|context| {
        context.get("actw").is_some_and(|windows| windows.as_array().is_none_or(|windows| !windows.is_empty()))
    });
    if time_windows {
        return false;
    }
    if rule.get("acaf").and_then(Value::as_bool) == Some(true) && !accessor.authenticated {
        return false;
    }
    if let (Some(created), Some(Value::Array(objects))) = (created, rule.get("acod")) {
        let code = u64::from(created.code());
        let allowed = objects.iter().any(|object| {
            object
                .get("chty")
                .and_then(Value::as_array)
                .is_some_and(|types| types.iter().any(|ty| ty.as_u64() == Some(code)))
        });
        if !allowed {
            return false;
        }
    }
    let originators = rule.get("acor").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    originators.into_iter().any(|pattern| {
        pattern == "all"
            || wildmatch::WildMatch::new(&identity.simplify_originator(pattern)).matches(&accessor.originator)
    })
}

fn display(originator: &str) -> &str {
    if originator.is_empty() { "(none)" } else { originator }
}
