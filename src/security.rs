//! Credentials: the ones this CSE accepts from callers (HTTP Basic and Bearer
//! authentication, `[http.security]` plus the self credentials of the registrar sections)
//! and the ones it presents to other CSEs (`[cse.registrar.security]`,
//! `[cse.registration.registree_security]`).
//!
//! No HTTP here and no I/O: `http.rs` reads the `Authorization` header and asks the
//! [`Authenticator`]; `client.rs` writes the header from [`Credentials`]. Every password
//! and token is a [`Secret`], whose `Debug` prints `***`, so neither a configuration dump
//! nor a log line shows one. Credentials never go into a resource (no `user:pass@` in a
//! `poa`): a peer learns them from its own configuration.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A password or a token. `Debug` prints `***`; [`Secret::expose`] is the one way to read it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret text, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in a time that tells nothing about the secret,
    /// its length included: their SHA-256 digests are compared in constant time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        same_digest(self.0.as_bytes(), candidate)
    }

    /// Whether the secret is the empty text (configured as unset).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `a == b` by their SHA-256 digests, compared in constant time: the time depends on the
/// lengths hashed, never on where the two differ or on whether their lengths do.
fn same_digest(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).as_slice().ct_eq(Sha256::digest(b).as_slice()).into()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What this CSE presents to another CSE on every request: HTTP Basic or Bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// HTTP Basic: `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user name.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// HTTP Bearer: `Authorization: Bearer token`.
    Bearer {
        /// The token.
        token: Secret,
    },
}

/// A password this CSE accepts: plain text, or an argon2 hash in PHC form
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
#[derive(Debug, Clone)]
pub enum StoredPassword {
    /// The password itself, compared in constant time.
    Plain(Secret),
    /// An argon2 PHC string, verified with the parameters it carries.
    Hashed(Secret),
}

impl StoredPassword {
    /// Plain text, unless `text` is a PHC string. A PHC string of another algorithm than
    /// argon2, or a malformed `$argon2...` string, is an error (the reason).
    pub fn parse(text: Secret) -> Result<StoredPassword, String> {
        if !text.expose().starts_with('$') {
            return Ok(StoredPassword::Plain(text));
        }
        match PasswordHash::new(text.expose()) {
            Ok(hash) if hash.algorithm.as_str().starts_with("argon2") => {
                let complete = hash.salt.is_some() && hash.hash.is_some();
                if !complete || argon2::Params::try_from(&hash).is_err() {
                    return Err("is not a complete argon2 PHC string (parameters, salt and hash)".into());
                }
                Ok(StoredPassword::Hashed(text))
            }
            Ok(hash) => Err(format!("{} password hashes are not supported (use argon2)", hash.algorithm)),
            Err(_) if text.expose().starts_with("$argon2") => Err("is not a valid argon2 PHC string".into()),
            // A plain password that happens to start with '$'.
            Err(_) => Ok(StoredPassword::Plain(text)),
        }
    }

    /// Does `candidate` match? Plain passwords are compared in constant time; a hash is
    /// verified with the parameters it carries (slow by design: milliseconds).
    fn verify(&self, candidate: &[u8]) -> bool {
        match self {
            StoredPassword::Plain(password) => password.matches(candidate),
            StoredPassword::Hashed(phc) => PasswordHash::new(phc.expose())
                .is_ok_and(|hash| argon2::Argon2::default().verify_password(candidate, &hash).is_ok()),
        }
    }
}

/// The originators a credential may act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Originators {
    /// Any originator but this CSE's admin: credentials configured without a list.
    AnyButAdmin,
    /// Only these (exact IDs or wildcard patterns, `*` and `?`).
    Only(Vec<String>),
}

/// Who a request's accepted credentials name: a name for the log (never the secret) and
/// the originators they may act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The Basic username, or `bearer token #N` (its place in the configuration).
    pub name: String,
    /// The originators these credentials may act as.
    pub originators: Originators,
}

impl Principal {
    /// May this principal send requests as `originator` (in any of the forms given, e.g.
    /// as received and as simplified)? `admin` is this CSE's admin originator.
    pub fn may_act_as(&self, forms: &[&str], admin: &str) -> bool {
        match &self.originators {
            Originators::AnyButAdmin => !forms.contains(&admin),
            Originators::Only(patterns) => forms.iter().any(|form| crate::id::matches_any(patterns, form)),
        }
    }
}

/// A user accepted by HTTP Basic authentication.
#[derive(Debug, Clone)]
pub struct BasicUser {
    /// The user name.
    pub username: String,
    /// Its password, plain or hashed.
    pub password: StoredPassword,
    /// The originators this user may act as.
    pub originators: Originators,
}

/// A token accepted by HTTP Bearer authentication.
#[derive(Debug, Clone)]
pub struct BearerToken {
    /// The token.
    pub token: Secret,
    /// The originators its holder may act as.
    pub originators: Originators,
}

/// Who may call this CSE. Built once from the configuration; with neither scheme
/// enabled, every request is let through unauthenticated.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// `Some` when Basic authentication is enabled: the accepted users (never empty).
    basic: Option<Vec<BasicUser>>,
    /// `Some` when Bearer authentication is enabled: the accepted tokens (never empty).
    bearer: Option<Vec<BearerToken>>,
}

impl Authenticator {
    /// Basic authentication with `basic`'s users when `Some`, Bearer with `bearer`'s
    /// tokens when `Some`; neither: every request is let through.
    pub fn new(basic: Option<Vec<BasicUser>>, bearer: Option<Vec<BearerToken>>) -> Authenticator {
        Authenticator { basic, bearer }
    }

    /// True when requests must authenticate.
    pub fn is_enabled(&self) -> bool {
        self.basic.is_some() || self.bearer.is_some()
    }

    /// True when HTTP Basic credentials are accepted.
    pub fn accepts_basic(&self) -> bool {
        self.basic.is_some()
    }

    /// True when HTTP Bearer tokens are accepted.
    pub fn accepts_bearer(&self) -> bool {
        self.bearer.is_some()
    }

    /// True when a Basic check may verify an argon2 hash, which takes milliseconds of CPU:
    /// the caller should run [`Authenticator::check_basic`] off the async threads.
    pub fn has_hashed_passwords(&self) -> bool {
        self.basic.iter().flatten().any(|user| matches!(user.password, StoredPassword::Hashed(_)))
    }

    /// Does this username and password pair pass, and as whom? An unknown user costs about
    /// as much as a wrong password (a password is verified in either case), so timing tells
    /// little about which of the two was wrong.
    pub fn check_basic(&self, username: &str, password: &str) -> Option<Principal> {
        let users = self.basic.as_ref()?;
        let mut accepted = None;
        let mut known = false;
        for user in users {
            if same_digest(user.username.as_bytes(), username.as_bytes()) {
                known = true;
                // No short cut: the same username may be configured twice (a user and a
                // registrar's self credentials), and either password passes.
                if user.password.verify(password.as_bytes()) && accepted.is_none() {
                    accepted = Some(Principal { name: user.username.clone(), originators: user.originators.clone() });
                }
            }
        }
        if !known {
            // Spend what a known user would cost: a hash verification if any user has one.
            let decoy = users.iter().find(|user| matches!(user.password, StoredPassword::Hashed(_))).or(users.first());
            if let Some(user) = decoy {
                let _ = user.password.verify(password.as_bytes());
            }
        }
        accepted
    }

    /// Is this one of the accepted tokens, and whose? Every token is compared, in constant
    /// time.
    pub fn check_bearer(&self, token: &str) -> Option<Principal> {
        let tokens = self.bearer.as_ref()?;
        let mut accepted = None;
        for (index, known) in tokens.iter().enumerate() {
            if known.token.matches(token.as_bytes()) && accepted.is_none() {
                accepted =
                    Some(Principal { name: format!("bearer token #{index}"), originators: known.originators.clone() });
            }
        }
        accepted
    }
}

/// A host that registrees may advertise in their `poa`
/// (`cse.registration.allowed_poa_hosts`): a block of addresses (`10.0.0.0/8`, `fd00::/8`,
/// or a single address), or a host name pattern (`*.example.net`; `*` any run, `?` one
/// character), matched without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// An address block (a single address is a block of one).
    Network(ipnet::IpNet),
    /// A host name pattern, in lower case.
    Name(String),
}

impl HostPattern {
    /// A CIDR block, an address, or a name pattern; the reason when it is none of them.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim();
        if let Ok(network) = text.parse::<ipnet::IpNet>() {
            return Ok(HostPattern::Network(network));
        }
        if let Ok(address) = text.parse::<std::net::IpAddr>() {
            return Ok(HostPattern::Network(address.into()));
        }
        let name_like = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*' | b'?');
        if text.is_empty() || !text.bytes().all(name_like) {
            return Err(format!("{text:?} is neither an address block like 10.0.0.0/8 nor a host name pattern"));
        }
        Ok(HostPattern::Name(text.to_ascii_lowercase()))
    }

    /// Does the host of `url` match?
    pub fn matches(&self, url: &url::Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        let address = match host {
            url::Host::Ipv4(address) => Some(std::net::IpAddr::V4(address)),
            url::Host::Ipv6(address) => Some(std::net::IpAddr::V6(address)),
            url::Host::Domain(_) => None,
        };
        match (self, address) {
            (HostPattern::Network(network), Some(address)) => network.contains(&address),
            (HostPattern::Network(_), None) => false,
            (HostPattern::Name(pattern), _) => {
                wildmatch::WildMatch::new(pattern).matches(&host.to_string().to_ascii_lowercase())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, SaltString};

    use super::*;

    #[test]
    fn a_secret_matches_itself_only() {
        let secret = Secret::new("s3cret-token");
        assert!(secret.matches(b"s3cret-token"));
        for other in ["", "s3cret", "s3cret-token ", "s3cret-tokeN", "s3cret-token-and-more"] {
            assert!(!secret.matches(other.as_bytes()), "{other:?}");
        }
        assert!(Secret::new("").matches(b""));
    }

    fn user(username: &str, password: &str) -> BasicUser {
        BasicUser {
            username: username.into(),
            password: StoredPassword::parse(Secret::new(password)).expect("valid password"),
            originators: Originators::AnyButAdmin,
        }
    }

    fn token(text: &str) -> BearerToken {
        BearerToken { token: Secret::new(text), originators: Originators::AnyButAdmin }
    }

    fn argon2_hash(password: &str) -> String {
        let params = argon2::Params::new(1024, 1, 1, None).expect("valid parameters");
        let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"fixed test salt!").expect("valid salt");
        hasher.hash_password(password.as_bytes(), &salt).expect("hash").to_string()
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let credentials = Credentials::Basic { username: "mn".into(), password: Secret::new("hunter2") };
        let text = format!("{credentials:?} {:?}", user("admin", "s3cret"));
        assert!(!text.contains("hunter2") && !text.contains("s3cret"), "{text}");
        assert!(text.contains("***"), "{text}");
    }

    #[test]
    fn plain_and_hashed_passwords_are_checked() {
        let hash = argon2_hash("correct horse");
        let authenticator = Authenticator::new(Some(vec![user("plain", "pw"), user("hashed", &hash)]), None);
        assert!(authenticator.has_hashed_passwords());
        assert!(authenticator.check_basic("plain", "pw").is_some());
        assert!(authenticator.check_basic("hashed", "correct horse").is_some());
        assert!(authenticator.check_basic("plain", "pw ").is_none());
        assert!(authenticator.check_basic("hashed", "wrong").is_none());
        assert!(authenticator.check_basic("nobody", "pw").is_none());
        assert!(authenticator.check_bearer("pw").is_none(), "bearer is not enabled");
    }

    #[test]
    fn a_username_configured_twice_accepts_either_password() {
        let authenticator = Authenticator::new(Some(vec![user("in", "one"), user("in", "two")]), None);
        assert!(authenticator.check_basic("in", "one").is_some());
        assert!(authenticator.check_basic("in", "two").is_some());
        assert!(authenticator.check_basic("in", "three").is_none());
    }

    #[test]
    fn principals_act_only_as_their_originators_and_never_as_the_admin_by_default() {
        let unbound = Principal { name: "u".into(), originators: Originators::AnyButAdmin };
        assert!(unbound.may_act_as(&["Csensor"], "CAdmin"));
        assert!(!unbound.may_act_as(&["/id-in/CAdmin", "CAdmin"], "CAdmin"));
        let bound =
            Principal { name: "b".into(), originators: Originators::Only(vec!["Csensor*".into(), "/id-mn".into()]) };
        assert!(bound.may_act_as(&["Csensor1"], "CAdmin"));
        assert!(bound.may_act_as(&["/id-in/Csensor1", "Csensor1"], "CAdmin"));
        assert!(bound.may_act_as(&["/id-mn"], "CAdmin"));
        assert!(!bound.may_act_as(&["/id-mn/Cx"], "CAdmin"));
        assert!(!bound.may_act_as(&["CAdmin"], "CAdmin"));
        let admin = Principal { name: "a".into(), originators: Originators::Only(vec!["CAdmin".into()]) };
        assert!(admin.may_act_as(&["CAdmin"], "CAdmin"));
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let authenticator = Authenticator::new(None, Some(vec![token("t1"), token("t2")]));
        assert!(authenticator.is_enabled() && !authenticator.accepts_basic());
        assert!(authenticator.check_bearer("t2").is_some());
        assert!(authenticator.check_bearer("t3").is_none());
        assert!(authenticator.check_bearer("").is_none());
        assert!(authenticator.check_basic("t1", "t1").is_none());
    }

    #[test]
    fn host_patterns_match_address_blocks_and_names() {
        let host = |text: &str| url::Url::parse(&format!("http://{text}/")).expect("URL");
        let matches =
            |pattern: &str, text: &str| HostPattern::parse(pattern).expect("valid pattern").matches(&host(text));
        assert!(matches("10.0.0.0/8", "10.1.2.3"));
        assert!(!matches("10.0.0.0/8", "11.0.0.1"));
        assert!(matches("127.0.0.1", "127.0.0.1:8080"));
        assert!(matches("fd00::/8", "[fd12::1]"));
        assert!(matches("*.Example.NET", "gw1.example.net"));
        assert!(!matches("*.example.net", "example.net.evil.com"));
        assert!(!matches("10.0.0.0/8", "ten.example.net"));
        assert!(HostPattern::parse("http://x").is_err());
        assert!(HostPattern::parse("").is_err());
    }

    #[test]
    fn only_argon2_hashes_are_accepted_as_hashes() {
        assert!(matches!(StoredPassword::parse(Secret::new("$plain$")), Ok(StoredPassword::Plain(_))));
        assert!(StoredPassword::parse(Secret::new("$argon2id$nonsense")).is_err());
        let scrypt = "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E";
        assert!(StoredPassword::parse(Secret::new(scrypt)).is_err());
    }
}
