//! oneM2M identifiers as types, and every piece of ID string surgery the CSE needs: the
//! CSE an ID belongs to, a CSE-ID as a resource name or as a `Via` hop, the last element of
//! an ID, originator patterns (`/id-mn*`). At the bottom of the module graph: it depends
//! on nothing of this crate.

use std::fmt;

/// Unreserved characters of RFC 3986: letters, digits, `-`, `.`, `_`, `~`.
pub fn is_unreserved(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A service provider ID, kept bare (`acme.example.com`); written `//acme.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpId(String);

impl SpId {
    /// `acme.example.com` or `//acme.example.com`.
    pub fn parse(text: &str) -> Option<SpId> {
        let bare = text.strip_prefix("//").unwrap_or(text);
        (!bare.is_empty() && is_unreserved(bare)).then(|| SpId(bare.to_string()))
    }

    /// The SP-ID without its leading `//`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CSE-ID in the form this CSE keeps it: SP-relative (`/id-mn`) for a CSE of its own
/// service provider, absolute (`//sp/id-in`) for one of another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CseId(String);

impl CseId {
    /// `/csi` or `//sp/csi`, each element of unreserved characters.
    pub fn parse(text: &str) -> Option<CseId> {
        is_cse_id(text).then(|| CseId(text.to_string()))
    }

    /// The SP-relative CSE-ID of the CSE named `stem` (`id-mn` → `/id-mn`).
    pub fn relative(stem: &str) -> Option<CseId> {
        CseId::parse(&format!("/{stem}"))
    }

    /// The CSE-ID as written (`/id-in`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its last element: `id-mn` of `/id-mn` and of `//sp/id-mn`.
    pub fn stem(&self) -> &str {
        last_element(&self.0)
    }

    /// The service provider of an absolute CSE-ID.
    pub fn sp(&self) -> Option<&str> {
        self.0.strip_prefix("//").and_then(|rest| rest.split('/').next())
    }

    /// Its absolute form, given the service provider it belongs to when it is SP-relative.
    pub fn absolute(&self, own_sp: &SpId) -> String {
        match self.sp() {
            Some(_) => self.0.clone(),
            None => format!("//{own_sp}{}", self.0),
        }
    }
}

impl fmt::Display for CseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for CseId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for CseId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for CseId {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<CseId> for String {
    fn eq(&self, other: &CseId) -> bool {
        *self == other.0
    }
}

impl PartialEq<CseId> for str {
    fn eq(&self, other: &CseId) -> bool {
        self == other.0
    }
}

impl PartialEq<CseId> for &str {
    fn eq(&self, other: &CseId) -> bool {
        *self == other.0
    }
}

/// A CSE-ID reads as the text it is (`/id-mn`), like a `String`'s `str`.
impl std::ops::Deref for CseId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// An SP-ID reads as its bare text (`acme.example.com`).
impl std::ops::Deref for SpId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for CseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for CseId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl PartialEq<str> for SpId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for SpId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// `/csi` or `//sp/csi`: one CSE element (after the SP-ID of an absolute one), each element
/// of unreserved characters.
pub fn is_cse_id(text: &str) -> bool {
    let (elements, wanted): (Vec<&str>, usize) = match text.strip_prefix("//") {
        Some(rest) => (rest.split('/').collect(), 2),
        None => match text.strip_prefix('/') {
            Some(rest) => (rest.split('/').collect(), 1),
            None => return false,
        },
    };
    elements.len() == wanted && elements.iter().all(|element| !element.is_empty() && is_unreserved(element))
}

/// The CSE part of an SP-relative or absolute ID (`/id-mn/Cae` → `/id-mn`,
/// `//sp/id-in/x` → `//sp/id-in`); `None` for a CSE-relative ID (`Cae`).
pub fn cse_of(id: &str) -> Option<&str> {
    if let Some(rest) = id.strip_prefix("//") {
        let sp = rest.split('/').next()?;
        let csi = rest[sp.len()..].strip_prefix('/')?.split('/').next()?;
        return Some(&id[..2 + sp.len() + 1 + csi.len()]);
    }
    let rest = id.strip_prefix('/')?;
    let csi = rest.split('/').next()?;
    Some(&id[..1 + csi.len()])
}

/// The last element of an ID (`/id-mn/Cae` → `Cae`; `Cae` → `Cae`).
pub fn last_element(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// A CSE-ID as a resource name (of its `<remoteCSE>`): `/id-mn` → `id-mn`,
/// `//sp/id-mn` → `sp_id-mn`.
pub fn resource_name_of(cse_id: &str) -> String {
    cse_id.replace('/', "_").trim_matches('_').to_string()
}

/// A CSE's name in `Via` headers: SP-ID and CSE stem (`acme.example.com_id-mn`), for a
/// CSE-ID as stored here (`/id-mn` of the own service provider `own_sp`, or `//sp/id-mn`).
pub fn hop_name(cse_id: &str, own_sp: &str) -> String {
    match cse_id.strip_prefix("//") {
        Some(rest) => rest.replacen('/', "_", 1),
        None => format!("{own_sp}_{}", cse_id.trim_start_matches('/')),
    }
}

/// Does `originator` match one of the wildcard `patterns` (`*` any run, `?` one character)?
pub fn matches_any(patterns: &[String], originator: &str) -> bool {
    patterns.iter().any(|pattern| wildmatch::WildMatch::new(pattern).matches(originator))
}

#[cfg(test)]
mod tests {

    #[test]
    fn originator_patterns_are_wildcards() {
        let patterns = ["/id-mn*".to_string(), "C?x".to_string()];
        assert!(matches_any(&patterns, "/id-mn"));
        assert!(matches_any(&patterns, "/id-mn-7"));
        assert!(matches_any(&patterns, "Cax"));
        assert!(!matches_any(&patterns, "/id-asn"));
        assert!(!matches_any(&patterns, "Caax"));
        assert!(!matches_any(&[], "/id-mn"));
        let exact = ["/id-mn".to_string(), "/id-asn*".to_string()];
        assert!(matches_any(&exact, "/id-asn42"));
        assert!(!matches_any(&exact, "/id-mn2"), "a pattern matches the whole originator");
    }
    use super::*;

    #[test]
    fn cse_ids_have_one_cse_element() {
        for valid in ["/id-mn", "//other.example.net/id-in", "/a.b~c_d"] {
            assert!(CseId::parse(valid).is_some(), "{valid}");
        }
        for invalid in ["id-mn", "/", "//sp", "//sp/", "/id-mn/Cae", "//sp/id/x", "/a b", "", "///x"] {
            assert!(CseId::parse(invalid).is_none(), "{invalid}");
        }
        let absolute = CseId::parse("//b.example.com/id-in").expect("valid");
        assert_eq!((absolute.stem(), absolute.sp()), ("id-in", Some("b.example.com")));
        let sp = SpId::parse("//acme.example.com").expect("valid");
        assert_eq!(CseId::relative("id-mn").expect("valid").absolute(&sp), "//acme.example.com/id-mn");
    }

    #[test]
    fn the_cse_an_id_belongs_to() {
        assert_eq!(cse_of("/id-mn/Cae"), Some("/id-mn"));
        assert_eq!(cse_of("/id-mn"), Some("/id-mn"));
        assert_eq!(cse_of("//sp/id-in/x/y"), Some("//sp/id-in"));
        assert_eq!(cse_of("//sp/id-in"), Some("//sp/id-in"));
        assert_eq!(cse_of("//sp"), None);
        assert_eq!(cse_of("Cae"), None);
        assert_eq!(last_element("/id-mn/Cae"), "Cae");
    }

    #[test]
    fn cse_ids_as_names_and_hops() {
        assert_eq!(resource_name_of("/id-mn"), "id-mn");
        assert_eq!(resource_name_of("//sp/id-mn"), "sp_id-mn");
        assert_eq!(hop_name("/id-mn", "acme.example.com"), "acme.example.com_id-mn");
        assert_eq!(hop_name("//b.example.com/id-in", "acme.example.com"), "b.example.com_id-in");
    }
}
