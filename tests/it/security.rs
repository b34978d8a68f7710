//! HTTP authentication (Basic, Bearer) and TLS: single CSEs, and an MN registering to an
//! IN that requires credentials, over HTTP and over HTTPS with a test CA.

use std::path::PathBuf;
use std::time::Duration;

use acme_cse::config::{BasicUserSettings, BearerTokenSettings, CseKind, RegistreeSecuritySettings, Settings};
use acme_cse::remote::RegistrationStatus;
use acme_cse::security::Secret;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{Reply, TestAuth, TestCse, eventually, registrar_settings, registree_settings, test_settings};

const DEADLINE: Duration = Duration::from_secs(10);

/// The credentials of these tests: distinct, so that any of them is found wherever it leaks.
const MN_USER: &str = "mnUserQ7";
const MN_PASSWORD: &str = "mnPassZ3";
const IN_USER: &str = "inUserK5";
const IN_PASSWORD: &str = "inPassW9";
const TESTER: &str = "testerJ2";
const TESTER_PASSWORD: &str = "testerPassV4";
const TOKEN: &str = "tokenR8x";

/// A Basic user without an originator list: any originator but the admin.
fn user(username: &str, password: &str) -> BasicUserSettings {
    BasicUserSettings { username: username.into(), password: Secret::new(password), originators: None }
}

/// A Basic user that may act as these originators only.
fn user_as(username: &str, password: &str, originators: &[&str]) -> BasicUserSettings {
    BasicUserSettings {
        originators: Some(originators.iter().map(|o| o.to_string()).collect()),
        ..user(username, password)
    }
}

/// The tester of these tests: it administers the CSEs (acts as `CAdmin`).
fn tester(password: &str) -> BasicUserSettings {
    user_as(TESTER, password, &["CAdmin"])
}

fn basic(username: &str, password: &str) -> Option<TestAuth> {
    Some(TestAuth::Basic { username: username.into(), password: password.into() })
}

/// A CSE that requires Basic authentication of `users`.
fn with_basic_auth(mut settings: Settings, users: Vec<BasicUserSettings>) -> Settings {
    settings.http.security.enable_basic_auth = true;
    settings.http.security.basic_users = users;
    settings
}

/// Everything of a refusal that a client sees, but the `date` header.
fn refusal(reply: &Reply) -> (u16, Vec<(String, String)>, Value) {
    let mut headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_string()))
        .collect();
    headers.sort();
    (reply.status, headers, reply.body.clone())
}

async fn retrieve_with(cse: &TestCse, authorization: Option<&str>) -> Reply {
    let mut request = cse.request(Method::GET, "/cse-in", "CAdmin");
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    Reply::from(request.send().await).await
}

#[tokio::test]
async fn basic_auth_accepts_a_configured_user_and_refuses_everybody_else_with_the_same_401() {
    // Arrange
    let mut cse = TestCse::start(with_basic_auth(test_settings(), vec![tester(TESTER_PASSWORD)])).await;

    // Act + Assert: the right credentials pass.
    cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    let reply = cse.retrieve("/cse-in", "CAdmin").await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");

    // Everything else gets one and the same plain 401.
    cse.authenticate(basic(TESTER, "wrong"));
    let wrong_password = cse.retrieve("/cse-in", "CAdmin").await;
    cse.authenticate(basic("nobody", TESTER_PASSWORD));
    let wrong_user = cse.retrieve("/cse-in", "CAdmin").await;
    cse.authenticate(None);
    let missing = cse.retrieve("/cse-in", "CAdmin").await;
    let malformed = retrieve_with(&cse, Some("Basic not-base64!")).await;
    let other_scheme = retrieve_with(&cse, Some(&format!("Bearer {TESTER_PASSWORD}"))).await;

    assert_eq!(wrong_password.status, 401);
    assert_eq!(wrong_password.header("www-authenticate"), Some("Basic realm=\"acme-cse\", charset=\"UTF-8\""));
    assert!(wrong_password.headers.keys().all(|name| !name.as_str().starts_with("x-m2m-")), "{wrong_password:?}");
    assert_eq!(wrong_password.body, Value::Null, "no body");
    let expected = refusal(&wrong_password);
    for other in [&wrong_user, &missing, &malformed, &other_scheme] {
        assert_eq!(refusal(other), expected, "every refusal looks the same");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn bearer_auth_accepts_a_configured_token_only() {
    // Arrange
    let mut settings = test_settings();
    settings.http.security.enable_bearer_auth = true;
    settings.http.security.bearer_tokens = vec![
        BearerTokenSettings::Plain(Secret::new("other-token")),
        BearerTokenSettings::Bound { token: Secret::new(TOKEN), originators: vec!["CAdmin".into()] },
    ];
    let mut cse = TestCse::start(settings).await;

    // Act + Assert
    cse.authenticate(Some(TestAuth::Bearer { token: TOKEN.into() }));
    assert_eq!(cse.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
    cse.authenticate(Some(TestAuth::Bearer { token: format!("{TOKEN}x") }));
    let wrong = cse.retrieve("/cse-in", "CAdmin").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer realm=\"acme-cse\""));
    cse.authenticate(basic(TOKEN, TOKEN));
    let basic_instead = cse.retrieve("/cse-in", "CAdmin").await;
    cse.authenticate(None);
    let missing = cse.retrieve("/cse-in", "CAdmin").await;
    assert_eq!(refusal(&basic_instead), refusal(&wrong));
    assert_eq!(refusal(&missing), refusal(&wrong));
    cse.shutdown().await;
}

#[tokio::test]
async fn an_argon2_hashed_password_is_accepted() {
    // Arrange: a PHC string, as `acme.toml` would hold it.
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(4096, 1, 1, None).expect("argon2 parameters");
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"security test salt").expect("salt");
    let phc = hasher.hash_password(TESTER_PASSWORD.as_bytes(), &salt).expect("hash").to_string();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    let mut cse = TestCse::start(with_basic_auth(test_settings(), vec![tester(&phc)])).await;

    // Act + Assert
    cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    assert_eq!(cse.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
    cse.authenticate(basic(TESTER, &phc));
    assert_eq!(cse.retrieve("/cse-in", "CAdmin").await.status, 401, "the hash itself is not the password");
    cse.shutdown().await;
}

/// An IN that requires Basic auth (the MN's credentials and the tester's) and calls the MN
/// with the credentials of `[[cse.registration.registree_security]]` when `registree_credentials`.
fn secured_in(registree_credentials: bool) -> Settings {
    let mut settings = with_basic_auth(registrar_settings(), vec![user(MN_USER, MN_PASSWORD), tester(TESTER_PASSWORD)]);
    settings.cse.registration.liveliness_failures = 1;
    if registree_credentials {
        settings.cse.registration.registree_security = vec![RegistreeSecuritySettings {
            cse_id: "/id-mn".into(),
            username: Some(IN_USER.into()),
            password: Some(Secret::new(IN_PASSWORD)),
            token: None,
        }];
    }
    settings
}

/// An MN that registers to `registrar` with its credentials and itself requires Basic auth:
/// the tester's, and the registrar's (its self credentials).
fn secured_mn(registrar: &TestCse, password: &str) -> Settings {
    let mut settings = with_basic_auth(
        registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(registrar)),
        vec![tester(TESTER_PASSWORD)],
    );
    let security = &mut settings.cse.registrar.as_mut().expect("registrar settings").security;
    security.username = Some(MN_USER.into());
    security.password = Some(Secret::new(password));
    security.self_username = Some(IN_USER.into());
    security.self_password = Some(Secret::new(IN_PASSWORD));
    settings
}

/// No credential of these tests anywhere in `json`.
fn assert_no_credentials(what: &str, json: &Value) {
    let text = json.to_string();
    for secret in [MN_USER, MN_PASSWORD, IN_USER, IN_PASSWORD, TESTER, TESTER_PASSWORD, TOKEN] {
        assert!(!text.contains(secret), "{what} exposes {secret:?}: {text}");
    }
    assert!(!text.contains('@'), "{what} has a URL with user information: {text}");
}

#[tokio::test]
async fn an_mn_registers_to_an_in_that_requires_basic_auth_and_no_credential_is_stored_in_a_resource() {
    // Arrange
    let mut in_cse = TestCse::start(secured_in(true)).await;
    in_cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    let mut mn = TestCse::start(secured_mn(&in_cse, MN_PASSWORD)).await;
    mn.authenticate(basic(TESTER, TESTER_PASSWORD));

    // Act: the MN registers with its credentials; the IN probes the MN with the registree
    // credentials (one refused probe would remove the MN).
    mn.remote.check_now().await.expect("MN monitor");
    in_cse.remote.check_now().await.expect("IN monitor");

    // Assert: registered on both sides, and still registered after the probe.
    assert!(mn.remote.is_registered());
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.rsc, 2000, "{csr:?}");
    assert_eq!(csr.body["m2m:csr"]["poa"], serde_json::json!([mn.url]));
    let local = mn.retrieve("/cse-mn/id-in", "CAdmin").await;
    assert_eq!(local.rsc, 2000, "{local:?}");
    // Forwarding carries the credentials of the next hop: down (IN → MN) and up (MN → IN).
    let down = in_cse.remote.retrieve_remote("/id-mn/cse-mn", None).await.expect("retrieve through the IN");
    assert_eq!(down.str("csi"), Some("/id-mn"));
    let up = mn.remote.retrieve_remote("/id-in/cse-in", None).await.expect("retrieve through the registrar");
    assert_eq!(up.str("csi"), Some("/id-in"));
    // No credential in any resource the two CSEs hold about each other.
    assert_no_credentials("the IN's CSR of the MN", &csr.body);
    assert_no_credentials("the MN's CSR of the IN", &local.body);
    assert_no_credentials("the IN's CSEBase", &in_cse.retrieve("/cse-in", "CAdmin").await.body);
    assert_no_credentials("the MN's CSEBase", &mn.retrieve("/cse-mn", "CAdmin").await.body);
    let everything = in_cse.retrieve("/cse-in?rcn=4", "CAdmin").await;
    assert_eq!(everything.rsc, 2000, "{everything:?}");
    assert_no_credentials("the IN's resource tree", &everything.body);

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_registrar_without_the_registrees_credentials_removes_it_after_refused_probes() {
    // Arrange: the IN has no credentials for the MN, which requires authentication.
    let mut in_cse = TestCse::start(secured_in(false)).await;
    in_cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    let mn = TestCse::start(secured_mn(&in_cse, MN_PASSWORD)).await;
    mn.remote.check_now().await.expect("MN monitor");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);

    // Act: one probe, refused with 401 (liveliness_failures = 1).
    in_cse.remote.check_now().await.expect("IN monitor");

    // Assert
    eventually("the IN removed the MN it cannot call", DEADLINE, || async {
        in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc == 4004
    })
    .await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_mn_with_a_wrong_password_is_refused_and_reports_an_error() {
    // Arrange
    let mut in_cse = TestCse::start(secured_in(true)).await;
    in_cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    let mn = TestCse::start(secured_mn(&in_cse, "not-the-password")).await;

    // Act
    mn.remote.check_now().await.expect("MN monitor");

    // Assert: not registered, with an error status (not "unreachable"), nothing at the IN.
    assert!(!mn.remote.is_registered());
    let statuses = mn.remote.statuses();
    assert!(
        matches!(&statuses[0].1, RegistrationStatus::Error(reason) if reason.contains("CSE /id-in refused this CSE's credentials")),
        "{statuses:?}"
    );
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);
    mn.shutdown().await;
    in_cse.shutdown().await;
}

/// A test CA and one server certificate it signed, for 127.0.0.1 and localhost, as PEM files.
pub(crate) struct TestPki {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub(crate) fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "acme-cse test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA certificate");
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("server parameters");
    params.distinguished_name.push(DnType::CommonName, "acme-cse test server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &ca).expect("server certificate");

    let dir = tempfile::tempdir().expect("temporary directory");
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    let ca = write("ca.pem", ca.pem());
    let cert = write("cert.pem", cert.pem());
    let key = write("key.pem", key.serialize_pem());
    TestPki { _dir: dir, ca, cert, key }
}

/// Serve HTTPS with the test certificate; trust the test CA when `trust_ca`.
fn with_tls(mut settings: Settings, pki: &TestPki, trust_ca: bool) -> Settings {
    settings.http.tls.enable = true;
    settings.http.tls.cert_file = Some(pki.cert.clone());
    settings.http.tls.key_file = Some(pki.key.clone());
    settings.http.tls.ca_file = trust_ca.then(|| pki.ca.clone());
    settings
}

#[tokio::test]
async fn an_mn_registers_to_an_in_over_https_trusting_the_test_ca() {
    // Arrange: both serve HTTPS; each trusts the test CA (the IN for its probes).
    let pki = test_pki();
    let mut in_settings = with_tls(registrar_settings(), &pki, true);
    in_settings.cse.registration.liveliness_failures = 1;
    let in_cse = TestCse::start(in_settings).await;
    assert!(in_cse.url.starts_with("https://"), "{}", in_cse.url);
    let mn =
        TestCse::start(with_tls(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse)), &pki, true)).await;

    // Act
    mn.remote.check_now().await.expect("MN monitor");
    in_cse.remote.check_now().await.expect("IN monitor");

    // Assert: registered, an https poa, and the IN's probe over HTTPS kept the MN.
    assert!(mn.remote.is_registered());
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.rsc, 2000, "{csr:?}");
    assert_eq!(csr.body["m2m:csr"]["poa"], serde_json::json!([mn.url]));
    assert!(mn.url.starts_with("https://"));
    let down = in_cse.remote.retrieve_remote("/id-mn/cse-mn", None).await.expect("retrieve over HTTPS");
    assert_eq!(down.str("csi"), Some("/id-mn"));
    // Plain HTTP is not served on the TLS port.
    let plain = reqwest::Client::new().get(format!("http://{}/cse-in", in_cse.addr)).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|reply| reply.headers().get("x-m2m-rsc").is_none()));

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_mn_that_does_not_trust_the_registrars_certificate_does_not_register_unless_verification_is_off() {
    // Arrange
    let pki = test_pki();
    let in_cse = TestCse::start(with_tls(registrar_settings(), &pki, true)).await;
    let untrusting = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;

    // Act + Assert: the handshake fails, so the registrar counts as unreachable.
    untrusting.remote.check_now().await.expect("MN monitor");
    assert!(!untrusting.remote.is_registered());
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);
    untrusting.shutdown().await;

    // With verification off (tests only), the same MN registers.
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.http.tls.verify = false;
    let careless = TestCse::start(settings).await;
    careless.remote.check_now().await.expect("MN monitor");
    assert!(careless.remote.is_registered());
    careless.shutdown().await;
    in_cse.shutdown().await;
}

/// RETRIEVE the CSEBase with `auth`, as `originator`.
async fn retrieve_as(cse: &mut TestCse, auth: Option<TestAuth>, originator: &str) -> Reply {
    cse.authenticate(auth);
    cse.retrieve("/cse-in", originator).await
}

#[tokio::test]
async fn credentials_act_only_as_the_originators_they_are_bound_to() {
    // Arrange: a sensor bound to its own AE-IDs, a legacy user and a plain token without a
    // list (anything but the admin), an operator token bound to the admin.
    let mut settings = with_basic_auth(
        test_settings(),
        vec![user_as("sensor", "sensorPw", &["Csensor*"]), user("legacy", "legacyPw")],
    );
    settings.http.security.enable_bearer_auth = true;
    settings.http.security.bearer_tokens = vec![
        BearerTokenSettings::Plain(Secret::new("plainToken")),
        BearerTokenSettings::Bound { token: Secret::new("operatorToken"), originators: vec!["CAdmin".into()] },
    ];
    let mut cse = TestCse::start(settings).await;
    let sensor = || basic("sensor", "sensorPw");
    let legacy = || basic("legacy", "legacyPw");
    let token = |token: &str| Some(TestAuth::Bearer { token: token.into() });

    // Act + Assert
    for (who, auth, originator) in [
        ("sensor as another AE", sensor(), "Cother"),
        ("sensor as the admin", sensor(), "CAdmin"),
        ("legacy user as the admin", legacy(), "CAdmin"),
        ("legacy user as the admin, SP-relative", legacy(), "/id-in/CAdmin"),
        ("plain token as the admin", token("plainToken"), "CAdmin"),
    ] {
        let reply = retrieve_as(&mut cse, auth, originator).await;
        assert_eq!(reply.rsc, 4103, "{who}: {reply:?}");
        assert!(reply.dbg().contains("may not act as originator"), "{who}: {reply:?}");
        assert!(!reply.dbg().contains("Pw") && !reply.dbg().contains("Token"), "no secret: {reply:?}");
    }
    // What they may do: the sensor registers its AE, the legacy user reads it, the
    // operator token administers.
    cse.authenticate(sensor());
    cse.register_ae("Csensor1", "sensor1").await;
    let reply = retrieve_as(&mut cse, legacy(), "Cx").await;
    assert_eq!(reply.rsc, 4103, "legacy user as Cx: no ACP grants it the CSEBase: {reply:?}");
    assert!(!reply.dbg().contains("may not act as"), "{reply:?}");
    assert_eq!(retrieve_as(&mut cse, token("operatorToken"), "CAdmin").await.rsc, 2000);
    assert_eq!(retrieve_as(&mut cse, sensor(), "Csensor1").await.rsc, 2000, "a registered AE reads the CSEBase");
    cse.shutdown().await;
}

#[tokio::test]
async fn an_address_that_keeps_failing_authentication_is_refused_for_a_while() {
    // Arrange
    let mut settings = with_basic_auth(test_settings(), vec![tester(TESTER_PASSWORD)]);
    settings.http.security.max_auth_failures = 3;
    let mut cse = TestCse::start(settings).await;
    cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    assert_eq!(cse.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
    // Act: the quota of failures, and one more.
    cse.authenticate(basic(TESTER, "guess"));
    for _ in 0..4 {
        assert_eq!(cse.retrieve("/cse-in", "CAdmin").await.status, 401);
    }
    // Assert: from this address even the right password is refused now, the same way.
    cse.authenticate(basic(TESTER, TESTER_PASSWORD));
    let refused = cse.retrieve("/cse-in", "CAdmin").await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.header("www-authenticate"), Some("Basic realm=\"acme-cse\", charset=\"UTF-8\""));
    cse.shutdown().await;
}
