//! oneM2M identifiers: resolving a request target, and the forms of an originator.
//!
//! [`Identity`] knows who this CSE is; [`Identity::resolve`] is the one place that decides
//! whether a target is hosted here (and how it is addressed) or on another CSE. Pure
//! functions, no I/O.

use crate::config::CseConfig;
use crate::error::{Error, Result};
use crate::id::{CseId, SpId, is_unreserved};

/// Who this CSE is, as far as addressing is concerned.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `/id-in`
    pub cse_id: CseId,
    /// `acme.example.com`
    pub sp_id: SpId,
    /// CSEBase `ri`
    pub resource_id: String,
    /// CSEBase `rn`
    pub resource_name: String,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A resource of this CSE.
    Local(LocalTarget),
    /// A resource of another CSE (transit).
    Remote(RemoteTarget),
}

/// A target hosted here: a resource, and perhaps a virtual child below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTarget {
    /// The resource addressed (or the parent of the virtual child).
    pub id: LocalId,
    /// A virtual child (`la`, `ol`) addressed below the resource.
    pub virtual_child: Option<VirtualChild>,
}

/// How a local resource is named in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalId {
    /// A structured path starting with the CSEBase `rn`: `cse-in/ae1/cnt1`.
    Structured(String),
    /// A resource ID.
    Unstructured(String),
}

/// A virtual child of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualChild {
    /// `la`: the newest content instance.
    Latest,
    /// `ol`: the oldest content instance.
    Oldest,
}

/// A target hosted by another CSE, reached by forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTarget {
    /// The target CSE: `/id-mn`.
    pub cse_id: String,
    /// The SP-ID (bare) when the target was absolute and names another SP.
    pub sp_id: Option<String>,
    /// The target as received, for forwarding unchanged.
    pub to: String,
}

impl Identity {
    /// Decide where `to` points. Malformed IDs are `4000`.
    pub fn resolve(&self, to: &str) -> Result<Target> {
        if to.is_empty() {
            return Err(Error::bad_request("empty target"));
        }
        let slashes = to.bytes().take_while(|&b| b == b'/').count();
        let rest = &to[slashes..];
        if rest.is_empty() || rest.ends_with('/') {
            return Err(Error::bad_request(format!("invalid target {to:?}: empty path element")));
        }
        let elements: Vec<&str> = rest.split('/').collect();
        for element in &elements {
            if element.is_empty() {
                return Err(Error::bad_request(format!("invalid target {to:?}: empty path element")));
            }
            if *element == "." || *element == ".." {
                return Err(Error::bad_request(format!("invalid target {to:?}: '.' and '..' are not IDs")));
            }
            if !is_unreserved(element) && *element != "-" {
                return Err(Error::bad_request(format!(
                    "invalid target {to:?}: {element:?} has characters outside letters, digits, '-', '.', '_', '~'"
                )));
            }
        }
        match slashes {
            0 => Ok(Target::Local(self.cse_relative(&elements))),
            1 => {
                if elements.len() < 2 {
                    return Err(Error::bad_request(format!(
                        "invalid target {to:?}: an SP-relative ID needs a resource after the CSE-ID"
                    )));
                }
                if elements[0] != self.cse_stem() {
                    return Ok(Target::Remote(RemoteTarget {
                        cse_id: format!("/{}", elements[0]),
                        sp_id: None,
                        to: to.to_string(),
                    }));
                }
                self.after_cse_id(to, &elements[1..]).map(Target::Local)
            }
            2 => {
                if elements.len() < 3 {
                    return Err(Error::bad_request(format!(
                        "invalid target {to:?}: an absolute ID needs an SP-ID, a CSE-ID and a resource"
                    )));
                }
                let own_sp = self.sp_id == *elements[0];
                if !own_sp || elements[1] != self.cse_stem() {
                    return Ok(Target::Remote(RemoteTarget {
                        cse_id: format!("/{}", elements[1]),
                        sp_id: (!own_sp).then(|| elements[0].to_string()),
                        to: to.to_string(),
                    }));
                }
                self.after_cse_id(to, &elements[2..]).map(Target::Local)
            }
            _ => Err(Error::bad_request(format!("invalid target {to:?}: too many leading slashes"))),
        }
    }

    /// This CSE's name in the `Via` header of forwarded requests: SP-ID and CSE-ID,
    /// unambiguous across service providers (`acme.example.com_id-in`).
    pub fn hop_name(&self) -> String {
        crate::id::hop_name(self.cse_id.as_str(), self.sp_id.as_str())
    }

    /// `/id-in` without the slash.
    pub fn cse_stem(&self) -> &str {
        self.cse_id.stem()
    }

    /// A request's originator, read once (see [`Originator`]).
    pub fn originator(&self, received: &str) -> Originator {
        Originator { received: received.to_string(), simplified: self.simplify_originator(received) }
    }

    /// The reception form of an originator (TS-0004 §7.3 as the reference does it): an
    /// absolute ID of this SP becomes SP-relative; an SP-relative ID below this CSE becomes
    /// CSE-relative (`/id-in/Cabc` → `Cabc`).
    pub fn simplify_originator(&self, originator: &str) -> String {
        let mut originator = originator;
        let own_sp_prefix = format!("//{}/", self.sp_id);
        let sp_relative;
        if let Some(rest) = originator.strip_prefix(&own_sp_prefix) {
            sp_relative = format!("/{rest}");
            originator = &sp_relative;
        }
        let own_cse_prefix = format!("{}/", self.cse_id);
        match originator.strip_prefix(&own_cse_prefix) {
            Some(local) if !local.is_empty() => local.to_string(),
            _ => originator.to_string(),
        }
    }

    /// The SP-relative form of a CSE-relative ID (`CAdmin` → `/id-in/CAdmin`).
    pub fn sp_relative(&self, id: &str) -> String {
        if id.starts_with('/') { id.to_string() } else { format!("{}/{id}", self.cse_id) }
    }

    fn cse_relative(&self, elements: &[&str]) -> LocalTarget {
        let (elements, virtual_child) = split_virtual(elements);
        let id = match elements {
            [single] if *single != self.resource_name && *single != "-" => LocalId::Unstructured((*single).to_string()),
            _ => LocalId::Structured(self.structured(elements)),
        };
        LocalTarget { id, virtual_child }
    }

    /// The part of an SP-relative or absolute ID after this CSE's CSE-ID.
    fn after_cse_id(&self, to: &str, elements: &[&str]) -> Result<LocalTarget> {
        let (elements, virtual_child) = split_virtual(elements);
        let id = match elements {
            [] => {
                return Err(Error::bad_request(format!("invalid target {to:?}: no resource")));
            }
            [first, ..] if *first == "-" || *first == self.resource_name => {
                LocalId::Structured(self.structured(elements))
            }
            [single] => LocalId::Unstructured((*single).to_string()),
            _ => {
                return Err(Error::bad_request(format!(
                    "invalid target {to:?}: a structured ID must start with the CSEBase name {:?}",
                    self.resource_name
                )));
            }
        };
        Ok(LocalTarget { id, virtual_child })
    }

    fn structured(&self, elements: &[&str]) -> String {
        let mut path = String::new();
        for (index, element) in elements.iter().enumerate() {
            if index > 0 {
                path.push('/');
            }
            if index == 0 && *element == "-" {
                path.push_str(&self.resource_name);
            } else {
                path.push_str(element);
            }
        }
        path
    }
}

impl From<&CseConfig> for Identity {
    fn from(cse: &CseConfig) -> Identity {
        Identity {
            cse_id: cse.cse_id.clone(),
            sp_id: cse.sp_id.clone(),
            resource_id: cse.resource_id.clone(),
            resource_name: cse.resource_name.clone(),
        }
    }
}

/// A request's originator, read once when the request arrives: as received, and in this
/// CSE's reception form, which every decision uses (access, who may speak for whom, the
/// form a forwarded request carries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originator {
    received: String,
    simplified: String,
}

impl Originator {
    /// As the request carried it.
    pub fn received(&self) -> &str {
        &self.received
    }

    /// CSE-relative for this CSE's own (`Cabc`), SP-relative for others of its service
    /// provider (`/id-mn/Cabc`), absolute for other service providers.
    pub fn simplified(&self) -> &str {
        &self.simplified
    }

    /// The CSE it belongs to (`/id-mn` for `/id-mn/Cabc`); `None` for this CSE's own.
    pub fn cse(&self) -> Option<&str> {
        crate::id::cse_of(&self.simplified)
    }
}

fn split_virtual<'a, 'b>(elements: &'a [&'b str]) -> (&'a [&'b str], Option<VirtualChild>) {
    match elements.split_last() {
        Some((&"la", parent)) if !parent.is_empty() => (parent, Some(VirtualChild::Latest)),
        Some((&"ol", parent)) if !parent.is_empty() => (parent, Some(VirtualChild::Oldest)),
        _ => (elements, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default identity: `/id-in`, `cse-in`, `acme.example.com`.
    fn identity() -> Identity {
        let cse_id = CseId::parse("/id-in").expect("valid");
        let sp_id = SpId::parse("acme.example.com").expect("valid");
        Identity { cse_id, sp_id, resource_id: "id-in".into(), resource_name: "cse-in".into() }
    }

    fn local(to: &str) -> LocalTarget {
        match identity().resolve(to) {
            Ok(Target::Local(local)) => local,
            other => panic!("{to}: expected a local target, got {other:?}"),
        }
    }

    fn structured(path: &str) -> LocalId {
        LocalId::Structured(path.into())
    }

    #[test]
    fn cse_relative_ids() {
        assert_eq!(local("cse-in/ae1/cnt1").id, structured("cse-in/ae1/cnt1"));
        assert_eq!(local("-/ae1").id, structured("cse-in/ae1"));
        assert_eq!(local("cse-in").id, structured("cse-in"));
        assert_eq!(local("cnt123").id, LocalId::Unstructured("cnt123".into()));
        let latest = local("cse-in/ae1/cnt1/la");
        assert_eq!(latest.id, structured("cse-in/ae1/cnt1"));
        assert_eq!(latest.virtual_child, Some(VirtualChild::Latest));
        assert_eq!(local("cnt123/ol").virtual_child, Some(VirtualChild::Oldest));
    }

    #[test]
    fn sp_relative_and_absolute_ids_of_this_cse() {
        assert_eq!(local("/id-in/cse-in/ae1").id, structured("cse-in/ae1"));
        assert_eq!(local("/id-in/-/ae1").id, structured("cse-in/ae1"));
        assert_eq!(local("/id-in/cnt1").id, LocalId::Unstructured("cnt1".into()));
        assert_eq!(local("//acme.example.com/id-in/cse-in/ae1").id, structured("cse-in/ae1"));
        assert_eq!(local("//acme.example.com/id-in/cnt1").id, LocalId::Unstructured("cnt1".into()));
    }

    #[test]
    fn ids_of_other_cses_are_remote() {
        let Ok(Target::Remote(remote)) = identity().resolve("/id-mn/cse-mn/ae1") else { panic!() };
        assert_eq!(remote.cse_id, "/id-mn");
        assert_eq!(remote.sp_id, None);
        let Ok(Target::Remote(remote)) = identity().resolve("//other.com/id-in/cse-in") else { panic!() };
        assert_eq!(remote.sp_id.as_deref(), Some("other.com"));
        let Ok(Target::Remote(remote)) = identity().resolve("//acme.example.com/id-mn/cse-mn") else { panic!() };
        assert_eq!((remote.cse_id.as_str(), remote.sp_id), ("/id-mn", None));
    }

    #[test]
    fn malformed_ids_are_bad_requests() {
        for to in [
            "",
            "/id-in",
            "cse-in/",
            "cse-in//ae",
            "///x/y/z",
            "cse-in/a b",
            "cse-in/a?b",
            "//acme.example.com/id-in",
            "/id-in/cnt1/cnt2",
        ] {
            let error = identity().resolve(to).expect_err(to);
            assert_eq!(error.rsc, crate::error::Rsc::BadRequest, "{to}");
        }
    }

    #[test]
    fn originators_are_simplified_on_reception() {
        let identity = identity();
        assert_eq!(identity.simplify_originator("/id-in/Cabc"), "Cabc");
        assert_eq!(identity.simplify_originator("//acme.example.com/id-in/Cabc"), "Cabc");
        assert_eq!(identity.simplify_originator("//acme.example.com/id-mn"), "/id-mn");
        assert_eq!(identity.simplify_originator("//other.com/id-mn"), "//other.com/id-mn");
        assert_eq!(identity.simplify_originator("/id-mn/CAdmin"), "/id-mn/CAdmin");
        assert_eq!(identity.simplify_originator("Cabc"), "Cabc");
    }

    #[test]
    fn an_originator_is_read_once_and_knows_its_cse() {
        let identity = identity();
        let own = identity.originator("//acme.example.com/id-in/Cabc");
        assert_eq!((own.received(), own.simplified(), own.cse()), ("//acme.example.com/id-in/Cabc", "Cabc", None));
        let below = identity.originator("/id-mn/Cae");
        assert_eq!((below.simplified(), below.cse()), ("/id-mn/Cae", Some("/id-mn")));
        let other_sp = identity.originator("//other.com/id-x/Cae");
        assert_eq!(other_sp.simplified(), "//other.com/id-x/Cae");
    }
}
