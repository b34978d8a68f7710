//! Property-based fuzzing: the parsing and validation entry points, and the whole HTTP
//! handler, never panic and answer every input with a oneM2M result, hostile input with a
//! client error.
//!
//! Case counts come from `PROPTEST_CASES`. Unset (plain `cargo test`), each property runs a
//! few dozen to a few thousand cases from a fixed seed, so the suite stays fast and
//! deterministic; `fuzz/run.sh` runs many more cases from random seeds (or
//! `PROPTEST_RNG_SEED`). Every property prints how many cases and executions (cases plus
//! shrinking) it ran and how long it took.
//!

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use acme_cse::config::Settings;
use acme_cse::core::address::{Identity, LocalId, Target};
use acme_cse::core::types::{self, policy_of};
use acme_cse::id::is_unreserved;
use acme_cse::resource::{self, Need, ResourceType};
use acme_cse::{App, Cse, Rsc};
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Uri};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::harness::{init_dir, test_settings};

// -----------------------------------------------------------------------------------------
// Running properties
// -----------------------------------------------------------------------------------------

/// The seed of plain `cargo test` runs.
const FIXED_SEED: u64 = 0x0acc_e55e_d5ee_d001;

/// Run `property` on values of `strategy` and print what ran. `PROPTEST_CASES` sets the
/// number of cases (random seed unless `PROPTEST_RNG_SEED` is set); without it,
/// `default_cases` from a fixed seed.
fn fuzz<S>(name: &str, default_cases: u32, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: fmt::Debug,
{
    let requested: Option<u32> = std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok());
    let seed: Option<u64> = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|seed| seed.parse().ok());
    let rng_seed = match (requested, seed) {
        (_, Some(seed)) => RngSeed::Fixed(seed),
        (Some(_), None) => RngSeed::Random,
        (None, None) => RngSeed::Fixed(FIXED_SEED),
    };
    let config = Config {
        cases: requested.unwrap_or(default_cases),
        rng_seed,
        failure_persistence: None,
        max_shrink_time: 120_000,
        ..Config::default()
    };
    let cases = config.cases;
    let executions = Cell::new(0_u64);
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |value| {
        executions.set(executions.get() + 1);
        property(value)
    });
    let seconds = start.elapsed().as_secs_f64();
    let outcome = if result.is_ok() { "passed" } else { "FAILED" };
    println!("fuzz {name}: {outcome}: {cases} cases, {} executions in {seconds:.1} s", executions.get());
    if let Err(failure) = result {
        panic!("fuzz {name}: {failure}");
    }
}

// -----------------------------------------------------------------------------------------
// Generators
// -----------------------------------------------------------------------------------------

/// Bytes, shown escaped.
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

const ATTRIBUTES: &[&str] = &[
    "ty", "ri", "rn", "pi", "ct", "lt", "et", "lbl", "acpi", "daci", "cstn", "at", "aa", "ast", "loc", "cr", "st",
    "api", "aei", "apn", "nl", "or", "mei", "regs", "trps", "scp", "tren", "ape", "esi", "rr", "srv", "poa", "csz",
    "csi", "cb", "cst", "dcse", "spi", "ici", "tri", "trn", "egid", "mtcc", "mni", "mbs", "mia", "cni", "cbs", "li",
    "disr", "con", "cnf", "cs", "dcnt", "conr", "dgt", "pv", "pvs", "adri", "apri", "airi", "acr", "acor", "acop",
    "acaf", "aca", "acco", "acod", "chty",
];

const WRAPPERS: &[&str] =
    &["m2m:ae", "m2m:cnt", "m2m:cin", "m2m:acp", "m2m:csr", "m2m:cb", "m2m:sub", "m2m:cnt ", "cnt", ""];

const STRINGS: &[&str] = &[
    "",
    "x",
    "n1",
    "Cowner",
    "CAdmin",
    "C",
    "cse-in/ae",
    "/id-in/cse-in",
    "/id-in",
    "/id-mn",
    "//acme.example.com/id-in/cse-in",
    "acpCreateRootResources",
    "20301231T235959",
    "20000101T000000",
    "99991231T235959,999999",
    "text/plain:0",
    "application/json",
    "N",
    "Nx",
    "Rabc.com.x",
    "http://127.0.0.1:1",
    "..",
    "la",
    "all",
    "4",
    "2a",
];

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        3 => select(&[0_i64, 1, -1, 2, 3, 5, 10, 63, 64, 255, 256, 65_535, 2_147_483_647, i64::MAX, i64::MIN][..])
            .prop_map(Value::from),
        1 => select(&[u64::MAX, 1 << 53, 10_000_000_000_000][..]).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => select(&[0.5, -0.0, 1e300, f64::MAX, f64::MIN_POSITIVE, -1.5][..]).prop_map(Value::from),
        4 => select(STRINGS).prop_map(Value::from),
        1 => "\\PC{0,12}".prop_map(Value::from),
    ]
    .boxed()
}

fn attribute_name() -> BoxedStrategy<String> {
    prop_oneof![8 => select(ATTRIBUTES).prop_map(str::to_string), 1 => "\\PC{0,6}"].boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map(attribute_name(), inner, 0..4).prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
        .boxed()
}

fn attribute_map() -> BoxedStrategy<Map<String, Value>> {
    btree_map(attribute_name(), json_value(), 0..6).prop_map(|map| map.into_iter().collect()).boxed()
}

/// A oneM2M-shaped JSON document: usually one wrapper around attributes.
fn onem2m_json() -> BoxedStrategy<Value> {
    prop_oneof![
        8 => (select(WRAPPERS), attribute_map()).prop_map(|(wrapper, attributes)| json!({ wrapper: attributes })),
        1 => json_value(),
        1 => (attribute_map(), attribute_map())
            .prop_map(|(first, second)| json!({"m2m:cnt": first, "m2m:cin": second})),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum FuzzBody {
    Empty,
    Raw(Bytes),
    Json(Value),
}

impl FuzzBody {
    fn bytes(&self) -> Vec<u8> {
        match self {
            FuzzBody::Empty => Vec::new(),
            FuzzBody::Raw(bytes) => bytes.0.clone(),
            FuzzBody::Json(value) => serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

fn body() -> BoxedStrategy<FuzzBody> {
    prop_oneof![
        2 => Just(FuzzBody::Empty),
        1 => vec(any::<u8>(), 0..64).prop_map(|bytes| FuzzBody::Raw(Bytes(bytes))),
        7 => onem2m_json().prop_map(FuzzBody::Json),
        1 => (onem2m_json(), any::<proptest::sample::Index>(), any::<u8>()).prop_map(|(value, at, byte)| {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            if !bytes.is_empty() {
                let index = at.index(bytes.len());
                bytes[index] = byte;
            }
            FuzzBody::Raw(Bytes(bytes))
        }),
    ]
    .boxed()
}

/// A header value: usually a plausible one, sometimes absent, printable junk or any bytes.
fn header(plausible: &'static [&'static str]) -> BoxedStrategy<Option<Bytes>> {
    prop_oneof![
        1 => Just(None),
        8 => select(plausible).prop_map(|value| Some(Bytes(value.as_bytes().to_vec()))),
        1 => "[ -~]{0,40}".prop_map(|value| Some(Bytes(value.into_bytes()))),
        1 => vec(any::<u8>(), 0..24).prop_map(|value| Some(Bytes(value))),
    ]
    .boxed()
}

fn request_expiration() -> BoxedStrategy<Option<Bytes>> {
    prop_oneof![
        3 => Just(None),
        2 => header(&["-1", "1000", "60000", "20000101T000000", "20991231T235959", "99991231T235959,999999", "x"]),
        1 => any::<i64>().prop_map(|millis| Some(Bytes(millis.to_string().into_bytes()))),
    ]
    .boxed()
}

const PATHS: &[&str] = &[
    "/cse-in",
    "/cse-in/ae",
    "/cse-in/ae/cnt",
    "/cse-in/ae/cnt/la",
    "/cse-in/ae/cnt/ol",
    "/cse-in/ae/n1",
    "/cse-in/ae/cnt/n1",
    "/cse-in/n1",
    "/id-in",
    "/Cowner",
    "/-/ae/cnt",
    "/~/id-in/cse-in/ae/cnt",
    "/_/acme.example.com/id-in/cse-in/ae",
    "/~/id-mn/cse-mn",
    "/_/other.sp/id-in/cse-in",
    "/cse-in/acpCreateRootResources",
    "/cse-in/CAdmin",
];

/// A request path of URI characters: known segments, separators, escapes of any byte.
fn uri_path() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        3 => select(&["/", "~/", "_/", "-", ".", "..", "cse-in", "id-in", "ae", "cnt", "la", "ol", "acme.example.com"][..])
            .prop_map(str::to_string),
        2 => any::<u8>().prop_map(|byte| format!("%{byte:02X}")),
        2 => "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,6}",
    ];
    vec(piece, 0..10).prop_map(|pieces| format!("/{}", pieces.concat())).boxed()
}

fn query() -> BoxedStrategy<String> {
    let name = prop_oneof![
        6 => select(&["rcn", "drt", "fu", "ty", "lbl", "rn", "lim", "lvl", "ofst", "rt", "atrl", "fo"][..])
            .prop_map(str::to_string),
        3 => select(&["cra", "crb", "ms", "us", "exa", "exb", "sts", "stb", "sza", "szb", "cty", "arp", "cni", "con", "lbq"][..])
            .prop_map(str::to_string),
        1 => "[A-Za-z0-9%]{0,5}",
    ];
    let value = prop_oneof![
        6 => select(
            &["1", "0", "-1", "2", "3", "4", "5", "6", "7", "8", "9", "11", "12", "256", "99999999999", "3+4", "", "a", "%00", "%ff", "1e3", "20260101T000000", "99991231T235959", "cnt", "cnt/la", "../x", "x*", "text/plain:0"][..]
        )
        .prop_map(str::to_string),
        1 => "[A-Za-z0-9%+]{0,6}",
    ];
    vec((name, value), 0..4)
        .prop_map(|pairs| pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&"))
        .boxed()
}

/// One request, as the handler sees it.
#[derive(Clone, Debug)]
struct FuzzRequest {
    method: &'static str,
    path: String,
    query: String,
    origin: Option<Bytes>,
    rqi: Option<Bytes>,
    rvi: Option<Bytes>,
    content_type: Option<Bytes>,
    ret: Option<Bytes>,
    via: Option<Bytes>,
    body: FuzzBody,
}

fn fuzz_request() -> BoxedStrategy<FuzzRequest> {
    let method = prop_oneof![
        4 => Just("GET"),
        4 => Just("POST"),
        3 => Just("PUT"),
        2 => Just("DELETE"),
        1 => select(&["PATCH", "OPTIONS", "HEAD", "TRACE", "FOO", "get"][..]),
    ];
    let path = prop_oneof![8 => select(PATHS).prop_map(str::to_string), 3 => uri_path()];
    let origin = header(&[
        "Cowner",
        "CAdmin",
        "C",
        "S",
        "Cother",
        "/id-in/Cowner",
        "//acme.example.com/id-in/CAdmin",
        "/id-mn",
        "",
    ]);
    let content_type = header(&[
        "application/json;ty=1",
        "application/json;ty=2",
        "application/json;ty=3",
        "application/json;ty=4",
        "application/json;ty=4",
        "application/json;ty=16",
        "application/json;ty=5",
        "application/json;ty=23",
        "application/json",
        "application/vnd.onem2m-res+json;ty=3",
        "application/json; ty=4",
        "application/xml;ty=3",
        "application/json;ty=-1",
        "application/json;ty=18446744073709551615",
        "application/json;ty=",
    ]);
    let via =
        prop_oneof![6 => Just(None), 1 => header(&["1.1 acme.example.com_id-mn", "1.1 acme.example.com_id-in", "x"])];
    let head = (method, path, query(), origin, header(&["rqi", "r"]), header(&["4", "3", "2a", "5", "1", "9"]));
    (head, content_type, request_expiration(), via, body())
        .prop_map(|((method, path, query, origin, rqi, rvi), content_type, ret, via, body)| FuzzRequest {
            method,
            path,
            query,
            origin,
            rqi,
            rvi,
            content_type,
            ret,
            via,
            body,
        })
        .boxed()
}

// -----------------------------------------------------------------------------------------
// Pure entry points
// -----------------------------------------------------------------------------------------

fn identity() -> Identity {
    Identity::from(&acme_cse::config::Config::defaults().cse)
}

/// `Ok` targets are well-formed; errors are `4000`.
fn check_resolution(to: &str) -> Result<(), TestCaseError> {
    match identity().resolve(to) {
        Ok(Target::Local(local)) => {
            let (LocalId::Structured(id) | LocalId::Unstructured(id)) = &local.id;
            prop_assert!(!id.is_empty(), "empty local ID for {to:?}");
            prop_assert!(id.split('/').all(|element| !element.is_empty() && is_unreserved(element)), "{id:?}");
        }
        Ok(Target::Remote(remote)) => {
            let stem = remote.cse_id.strip_prefix('/').unwrap_or_default();
            prop_assert!(!stem.is_empty() && is_unreserved(stem), "remote CSE-ID {:?} for {to:?}", remote.cse_id);
            prop_assert_eq!(&remote.to, to);
        }
        Err(error) => {
            prop_assert_eq!(error.rsc, Rsc::BadRequest, "{:?}: {}", to, error.dbg);
            prop_assert!(!error.dbg.is_empty());
        }
    }
    Ok(())
}

#[test]
fn request_paths_become_targets_or_bad_requests() {
    fuzz("target_of + resolve (paths)", 2_000, uri_path(), |path| {
        match acme_cse::binding::http::wire::target_of(&path) {
            Ok(to) => check_resolution(&to)?,
            Err(error) => prop_assert_eq!(error.rsc, Rsc::BadRequest, "{:?}: {}", path, error.dbg),
        }
        Ok(())
    });
}

#[test]
fn any_target_text_resolves_or_is_a_bad_request() {
    let text = prop_oneof![
        "\\PC{0,40}",
        vec(
            select(&["/", "//", "~", "_", "-", ".", "..", "cse-in", "id-in", "acme.example.com", "la", "ol", "x"][..]),
            0..8
        )
        .prop_map(|pieces| pieces.concat()),
        any::<String>(),
    ];
    fuzz("resolve (any text)", 2_000, text, |to| check_resolution(&to));
}

#[test]
fn attribute_validation_never_panics_and_rejects_with_bad_request() {
    fuzz("validate_create + validate_update", 1_000, attribute_map(), |attributes| {
        for ty in ResourceType::ALL {
            match types::validate_create(ty, &attributes) {
                Ok(()) => {
                    for name in attributes.keys() {
                        let policy = policy_of(ty, name);
                        prop_assert!(policy.is_some_and(|policy| policy.create != Need::NotPermitted), "{ty:?} {name}");
                    }
                }
                Err(error) => {
                    prop_assert_eq!(error.rsc, Rsc::BadRequest, "{:?}: {}", ty, error.dbg);
                    prop_assert!(!error.dbg.is_empty());
                }
            }
            match types::validate_update(ty, &attributes) {
                Ok(()) => {
                    prop_assert!(!attributes.is_empty());
                    for name in attributes.keys() {
                        let policy = policy_of(ty, name);
                        prop_assert!(policy.is_some_and(|policy| policy.update != Need::NotPermitted), "{ty:?} {name}");
                    }
                }
                Err(error) => {
                    prop_assert_eq!(error.rsc, Rsc::BadRequest, "{:?}: {}", ty, error.dbg);
                    prop_assert!(!error.dbg.is_empty());
                }
            }
        }
        Ok(())
    });
}

#[test]
fn timestamps_parse_or_not_and_normalising_is_idempotent() {
    let text = prop_oneof![
        "\\PC{0,30}",
        "[+-]?[0-9]{0,9}T[0-9]{0,7}([,.][0-9]{0,12})?Z?",
        (0_u32..=300_000, 0_u32..14, 0_u32..33, 0_u32..25, 0_u32..61, 0_u32..62, "[0-9]{0,10}").prop_map(
            |(year, month, day, hour, minute, second, fraction)| {
                format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02},{fraction}")
            }
        ),
    ];
    fuzz("Timestamp::parse + to_string", 2_000, text, |text| {
        if let Some(parsed) = resource::Timestamp::parse(&text) {
            let normal = parsed.to_string();
            // Fixed width, so stored timestamps compare as strings in time order.
            prop_assert_eq!(normal.len(), 22, "{:?} -> {:?}", text, normal);
            prop_assert_eq!(resource::Timestamp::parse(&normal), Some(parsed), "{:?}", text);
        }
        Ok(())
    });
}

/// A TOML document of known keys with values of any TOML kind.
fn settings_toml() -> BoxedStrategy<String> {
    let value = prop_oneof![
        2 => "\"[ -~]{0,12}\"",
        2 => select(
            &["\"0s\"", "\"1ms\"", "\"1s\"", "\"5years\"", "\"500000years\"", "\"99999999999999years\"", "\"-1s\""][..]
        )
        .prop_map(str::to_string),
        2 => select(&["\"/id-in\"", "\"cse-in\"", "\"id-in\"", "\"//acme.example.com\"", "\"CAdmin\"", "\"127.0.0.1:0\""][..])
            .prop_map(str::to_string),
        1 => any::<i64>().prop_map(|number| number.to_string()),
        1 => select(&["0", "-1", "1", "18446744073709551615", "1.5", "nan", "inf"][..]).prop_map(str::to_string),
        1 => any::<bool>().prop_map(|value| value.to_string()),
        1 => select(&["[]", "[\"4\"]", "[\"/id-mn*\"]", "[1, 2]", "{}", "[\"\"]"][..]).prop_map(str::to_string),
    ];
    let key = select(
        &[
            "cse.kind",
            "cse.cse_id",
            "cse.resource_id",
            "cse.resource_name",
            "cse.sp_id",
            "cse.admin_originator",
            "cse.release_versions",
            "cse.release_version",
            "cse.max_expiration_delta",
            "cse.expiration_check_interval",
            "cse.registration.check_interval",
            "cse.registration.liveliness_failures",
            "cse.registration.liveliness_timeout",
            "cse.registration.liveliness_parallelism",
            "cse.registration.allowed_csr_originators",
            "cse.registration.allowed_ae_originators",
            "http.listen",
            "http.public_url",
            "http.poa",
            "http.max_body_size",
            "http.request_timeout",
            "http.client_timeout",
            "http.max_concurrent_requests",
            "database.in_memory",
            "database.path",
            "logging.level",
            "resource.cnt.enable_limits",
            "resource.cnt.mni",
            "resource.cnt.mbs",
            "unknown.key",
        ][..],
    );
    btree_map(key, value, 0..8)
        .prop_map(|entries| {
            // Dotted keys in one table: TOML's own way to name nested tables.
            entries.iter().map(|(key, value)| format!("{key} = {value}\n")).collect()
        })
        .boxed()
}

#[test]
fn configuration_text_is_accepted_or_refused_naming_a_key() {
    let text = prop_oneof![3 => settings_toml(), 1 => "\\PC{0,80}", 1 => any::<String>()];
    fuzz("Settings::from_toml + validate", 500, text, |text| {
        match Settings::from_toml(&text).and_then(Settings::validate) {
            Ok(_) => {}
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
        Ok(())
    });
}

// -----------------------------------------------------------------------------------------
// The HTTP handler
// -----------------------------------------------------------------------------------------

/// A fresh CSE (in memory, nothing bound but an unused loopback port) with the owner AE
/// `ae` and its container `cnt` (with `container` attributes, if valid) holding one
/// instance.
async fn fresh_cse(container: &Map<String, Value>) -> Cse {
    let config = test_settings().validate().expect("valid test settings");
    let app = App::build(config, Some(init_dir())).await.expect("CSE builds");
    let cse = app.cse().clone();
    drop(app);
    let mut attributes = container.clone();
    attributes.insert("rn".into(), json!("cnt"));
    let seed = [
        seed_request(
            "POST",
            "/cse-in",
            "application/json;ty=2",
            json!({"m2m:ae": {"rn": "ae", "api": "Nx", "rr": true, "srv": ["4"]}}),
        ),
        seed_request("POST", "/cse-in/ae", "application/json;ty=3", json!({ "m2m:cnt": attributes })),
        seed_request("POST", "/cse-in/ae", "application/json;ty=3", json!({"m2m:cnt": {"rn": "cnt"}})),
        seed_request("POST", "/cse-in/ae/cnt", "application/json;ty=4", json!({"m2m:cin": {"con": "first"}})),
    ];
    for request in seed {
        acme_cse::binding::http::router(cse.clone()).expect("router").oneshot(request).await.expect("infallible");
    }
    cse
}

fn seed_request(method: &str, path: &str, content_type: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("X-M2M-Origin", "Cowner")
        .header("X-M2M-RI", "seed")
        .header("X-M2M-RVI", "4")
        .header("Content-Type", content_type)
        .body(Body::from(body.to_string()))
        .expect("valid seed request")
}

fn http_request(request: &FuzzRequest) -> Request<Body> {
    let target =
        if request.query.is_empty() { request.path.clone() } else { format!("{}?{}", request.path, request.query) };
    let uri = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
    let mut http = Request::new(Body::from(request.body.bytes()));
    *http.method_mut() = Method::from_bytes(request.method.as_bytes()).unwrap_or(Method::GET);
    *http.uri_mut() = uri;
    let headers = http.headers_mut();
    for (name, value) in [
        ("x-m2m-origin", &request.origin),
        ("x-m2m-ri", &request.rqi),
        ("x-m2m-rvi", &request.rvi),
        ("content-type", &request.content_type),
        ("x-m2m-ret", &request.ret),
        ("via", &request.via),
    ] {
        // What hyper would refuse never reaches the handler.
        if let Some(value) = value.as_ref().and_then(|value| HeaderValue::from_bytes(&value.0).ok()) {
            headers.insert(name, value);
        }
    }
    http
}

/// Send `request` to the handler; a panic fails the property (proptest catches it).
async fn answer(cse: &Cse, request: Request<Body>) -> Result<(u16, Option<u16>, Vec<u8>), TestCaseError> {
    let sent = acme_cse::binding::http::router(cse.clone()).expect("router").oneshot(request);
    let response = tokio::time::timeout(Duration::from_secs(10), sent)
        .await
        .map_err(|_| TestCaseError::fail("no answer within 10 s"))?
        .expect("infallible");
    let status = response.status().as_u16();
    let rsc = response.headers().get("x-m2m-rsc").and_then(|value| value.to_str().ok()?.parse().ok());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    Ok((status, rsc, body.to_vec()))
}

/// Every answer is a oneM2M answer: a known RSC, the HTTP status that belongs to it, never
/// an internal error, and an `m2m:dbg` with every error.
fn check_answer(head: bool, status: u16, rsc: Option<u16>, body: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    prop_assert!(status < 500 || status == 501 || status == 504, "HTTP {status}, RSC {rsc:?}: {text}");
    let rsc = rsc.and_then(Rsc::from_code);
    prop_assert!(rsc.is_some(), "HTTP {status} without a known X-M2M-RSC: {text}");
    let rsc = rsc.unwrap_or(Rsc::InternalServerError);
    prop_assert_ne!(rsc, Rsc::InternalServerError, "{}", text);
    prop_assert_eq!(status, rsc.http_status(), "{}", text);
    // A response to HEAD has no body.
    if !rsc.is_success() && !head {
        let dbg =
            serde_json::from_slice::<Value>(body).ok().and_then(|body| body["m2m:dbg"].as_str().map(str::to_string));
        prop_assert!(dbg.is_some_and(|dbg| !dbg.is_empty()), "RSC {rsc:?} without m2m:dbg: {text}");
    }
    Ok(())
}

/// The seeded container's attributes: limits and flags with interesting values.
fn container_seed() -> BoxedStrategy<Map<String, Value>> {
    let limit = prop_oneof![
        select(&[0_u64, 1, 2, 5, 1_000, 4_294_967_295, 1 << 53, 10_000_000_000_000, u64::MAX][..])
            .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ];
    btree_map(select(&["mni", "mbs", "mia"][..]), limit, 0..3)
        .prop_flat_map(|limits| {
            (Just(limits), any::<Option<bool>>()).prop_map(|(limits, disr)| {
                let mut attributes: Map<String, Value> =
                    limits.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
                if let Some(disr) = disr {
                    attributes.insert("disr".into(), json!(disr));
                }
                match Value::Object(attributes) {
                    Value::Object(attributes) => attributes,
                    _ => Map::new(),
                }
            })
        })
        .boxed()
}

#[test]
fn the_http_handler_answers_every_request_with_a_onem2m_result() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let strategy = (container_seed(), vec(fuzz_request(), 1..6));
    let runtime = Arc::new(runtime);
    fuzz("HTTP handler (random request sequences)", 48, strategy, |(container, requests)| {
        runtime.block_on(async {
            let cse = fresh_cse(&container).await;
            for request in &requests {
                let (status, rsc, body) = answer(&cse, http_request(request)).await?;
                check_answer(request.method == "HEAD", status, rsc, &body)
                    .map_err(|failure| TestCaseError::fail(format!("{failure} for {request:?}")))?;
            }
            // The CSE still reads and writes.
            let probe = seed_request("GET", "/cse-in", "application/json", json!({}));
            let (_, rsc, body) = answer(&cse, with_origin(probe, "CAdmin")).await?;
            prop_assert_eq!(rsc, Some(2000), "RETRIEVE after the sequence: {}", String::from_utf8_lossy(&body));
            let probe =
                seed_request("POST", "/cse-in", "application/json;ty=3", json!({"m2m:cnt": {"rn": "fuzz-probe"}}));
            let (_, rsc, body) = answer(&cse, with_origin(probe, "CAdmin")).await?;
            prop_assert_eq!(rsc, Some(2001), "CREATE after the sequence: {}", String::from_utf8_lossy(&body));
            Ok(())
        })
    });
}

fn with_origin(mut request: Request<Body>, origin: &'static str) -> Request<Body> {
    if request.method() == Method::GET {
        *request.body_mut() = Body::empty();
    }
    request.headers_mut().insert("x-m2m-origin", HeaderValue::from_static(origin));
    request
}
