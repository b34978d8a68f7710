//! The admin listener over real HTTP: health, metrics, the registration view, a refresh,
//! a reload, and the token.

use std::time::Duration;

use acme_cse::config::CseKind;
use serde_json::Value;

use crate::harness::{TestCse, registrar_settings, registree_settings};

async fn admin_get(cse: &TestCse, path: &str, token: Option<&str>) -> (u16, String, String) {
    let url = format!("{}{path}", cse.admin_url.as_deref().expect("an admin listener"));
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the admin listener answers");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
    (status, content_type, response.text().await.expect("a body"))
}

async fn admin_post(cse: &TestCse, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", cse.admin_url.as_deref().expect("an admin listener"));
    let response = reqwest::Client::new().post(url).send().await.expect("the admin listener answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The value of the sample `series` (name and labels, as written) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn health_metrics_and_the_registration_view_describe_an_in_and_its_mn() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");

    // Health: 200, the database takes writes, the registrar relation's state.
    let (status, content_type, body) = admin_get(&mn, "/health", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    let health: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"]["writable"], true);
    assert_eq!(health["registrars"][0]["cse_id"], "/id-in");
    assert_eq!(health["registrars"][0]["status"], "registered");
    assert_eq!(health["registrars"][0]["address"], in_cse.url.as_str());

    // The registration view of the IN: the MN, its address, its descendants.
    let (status, _, body) = admin_get(&in_cse, "/registrations", None).await;
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(view["cse_id"], "/id-in");
    assert_eq!(view["registrees"][0]["cse_id"], "/id-mn");
    assert_eq!(view["registrees"][0]["poa"][0], mn.url.as_str());

    // Metrics: the text format, names present, counts moving with requests.
    let (status, content_type, before) = admin_get(&in_cse, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let series = r#"acme_requests_total{operation="RETRIEVE",rsc="2000"}"#;
    let counted = sample(&before, series).unwrap_or(0.0);
    for _ in 0..3 {
        assert_eq!(in_cse.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
    }
    let (_, _, after) = admin_get(&in_cse, "/metrics", None).await;
    // At least those three (the MN's own requests may come in meanwhile).
    assert!(sample(&after, series).is_some_and(|now| now >= counted + 3.0), "{after}");
    assert_eq!(sample(&after, "acme_registrees"), Some(1.0), "{after}");
    assert!(after.contains("acme_request_duration_seconds_bucket"), "{after}");
    assert!(after.contains("acme_notifications_pending"), "{after}");
    // The registration committed writes: the database's commits are measured.
    assert!(sample(&after, "acme_database_commit_duration_seconds_count").is_some_and(|n| n >= 1.0), "{after}");
    assert!(sample(&after, "acme_database_commit_batch_size_count").is_some_and(|n| n >= 1.0), "{after}");
    let (_, _, mn_metrics) = admin_get(&mn, "/metrics", None).await;
    assert_eq!(
        sample(&mn_metrics, r#"acme_registration_state{registrar="/id-in",state="registered"}"#),
        Some(1.0),
        "{mn_metrics}"
    );
    // A request the MN forwards to the IN is counted by next hop.
    assert_eq!(mn.retrieve("/~/id-in/cse-in", "CAdmin").await.rsc, 2000);
    let (_, _, mn_metrics) = admin_get(&mn, "/metrics", None).await;
    assert!(sample(&mn_metrics, r#"acme_forwarded_requests_total{next_hop="/id-in"}"#).is_some_and(|n| n >= 1.0));

    // A refresh runs a monitor round: the IN probes the MN (a liveliness check), which
    // the registration view then shows.
    let (status, answer) = admin_post(&in_cse, "/registrations/refresh").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["done"], true);
    crate::harness::eventually("the probe shows in the registration view", Duration::from_secs(10), || async {
        let (_, _, body) = admin_get(&in_cse, "/registrations", None).await;
        let view: Value = serde_json::from_str(&body).unwrap_or_default();
        view["registrees"][0]["last_probe"].is_string() && view["registrees"][0]["failures"] == 0
    })
    .await;
    // A second refresh right away is refused: a burst of liveliness rounds would remove a
    // registree that is merely restarting.
    let (status, answer) = admin_post(&in_cse, "/registrations/refresh").await;
    assert_eq!(status, 429, "{answer}");
    // Reload: this CSE was handed its configuration, not a file.
    let (status, answer) = admin_post(&in_cse, "/reload").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["reloaded"], false);
    // Unknown path.
    assert_eq!(admin_get(&in_cse, "/nothing", None).await.0, 404);

    // The IN's liveliness failures and removals count once the MN is gone.
    mn.shutdown().await;
    let (_, _, metrics) = admin_get(&in_cse, "/metrics", None).await;
    assert_eq!(sample(&metrics, "acme_registrees"), Some(0.0), "deregistered: {metrics}");
    in_cse.shutdown().await;
}

#[tokio::test]
async fn with_a_token_the_admin_endpoints_answer_only_those_who_carry_it() {
    let cse = TestCse::spawn(|settings| {
        settings.admin.listen = "127.0.0.1:0".into();
        settings.admin.token = Some(acme_cse::security::Secret::new("s3cret-admin"));
    })
    .await;
    let (status, _, body) = admin_get(&cse, "/health", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(admin_get(&cse, "/metrics", Some("wrong")).await.0, 401);
    assert_eq!(admin_get(&cse, "/health", Some("s3cret-admin")).await.0, 200);
    assert_eq!(admin_get(&cse, "/metrics", Some("s3cret-admin")).await.0, 200);
    // In the query (what a browser page can send) for a GET, not for a POST.
    assert_eq!(admin_get(&cse, "/registrations?token=s3cret-admin", None).await.0, 200);
    assert_eq!(admin_post(&cse, "/reload?token=s3cret-admin").await.0, 401);
    cse.shutdown().await;
}

#[tokio::test]
async fn the_admin_endpoints_refuse_what_a_web_page_could_make_a_browser_send() {
    let cse = TestCse::start(registrar_settings()).await;
    let base = cse.admin_url.clone().expect("an admin listener");
    let client = reqwest::Client::new();
    // DNS rebinding: a name that resolved to 127.0.0.1 for a page of another site.
    let rebound = client.get(format!("{base}/registrations")).header("Host", "evil.example:9080").send().await;
    assert_eq!(rebound.expect("answered").status().as_u16(), 403);
    let local = client.get(format!("{base}/health")).header("Host", "localhost:9080").send().await;
    assert_eq!(local.expect("answered").status().as_u16(), 200);
    // A POST from a page of another origin.
    let forged = client.post(format!("{base}/reload")).header("Origin", "https://evil.example").send().await;
    assert_eq!(forged.expect("answered").status().as_u16(), 403);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_reload_through_the_admin_listener_reads_the_file_again_and_names_what_changed() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = crate::reload::spawn_mn(&crate::reload::mn_file(&in_cse, ""), |_| {}).await;
    crate::reload::write(&mn.file, &crate::reload::mn_file(&in_cse, "[logging]\nlevel = \"debug\"\n"));
    let (status, answer) = admin_post(&mn.cse, "/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reloaded"], true);
    assert!(answer["applied"].as_array().is_some_and(|keys| keys.iter().any(|key| key == "logging.level")), "{answer}");
    crate::reload::write(&mn.file, "[cse]\ntype = \"XX\"\n");
    let (status, answer) = admin_post(&mn.cse, "/reload").await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["key"], "cse.type");
    tokio::time::timeout(Duration::from_secs(30), mn.cse.shutdown()).await.expect("stops");
    in_cse.shutdown().await;
}

async fn upper_tester(cse: &TestCse, command: Option<&str>, body: Option<Value>) -> (u16, Option<String>, String) {
    let mut request = cse.client.post(format!("{}/__ut__", cse.url));
    if let Some(command) = command {
        request = request.header("X-M2M-UTCMD", command);
    }
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    let result = response.headers().get("x-m2m-utrsp").and_then(|value| value.to_str().ok()).map(str::to_string);
    (status, result, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_upper_tester_answers_status_configuration_and_request_primitives_only_when_enabled() {
    let off = TestCse::start(registrar_settings()).await;
    let (status, result, _) = upper_tester(&off, Some("Status"), None).await;
    assert!(result.is_none() && status != 200, "off by default: a plain oneM2M request to /__ut__ ({status})");
    off.shutdown().await;

    let mut settings = registrar_settings();
    settings.http.enable_upper_tester = true;
    let cse = TestCse::start(settings).await;
    assert_eq!(upper_tester(&cse, Some("Status"), None).await, (200, Some("RUNNING".into()), String::new()));
    assert_eq!(upper_tester(&cse, Some("GetConfig cse.cse_id"), None).await.1.as_deref(), Some("/id-in"));
    assert_eq!(upper_tester(&cse, Some("GetConfig cse.cseID"), None).await.1.as_deref(), Some("/id-in"));
    assert_eq!(upper_tester(&cse, Some("testCaseStart TC_CSE_REG_CRE_001"), None).await.0, 200);
    assert_eq!(upper_tester(&cse, Some("testCaseEnd TC_CSE_REG_CRE_001"), None).await.0, 200);
    let (status, reason, _) = upper_tester(&cse, Some("GetConfig no.such.key"), None).await;
    assert_eq!(status, 400);
    assert!(reason.is_some_and(|reason| reason.contains("no.such.key")));
    let (status, reason, _) = upper_tester(&cse, Some("Reboot"), None).await;
    assert_eq!(status, 400);
    assert!(reason.is_some_and(|reason| reason.contains("Status")), "names the commands it knows");

    // A request primitive, carried out as if received.
    let rqp = serde_json::json!({"m2m:rqp": {"op": 1, "to": "/id-in/cse-in", "fr": "CAdmin", "rqi": "ut-1", "rvi": "4",
        "ty": 3, "pc": {"m2m:cnt": {"rn": "fromUT"}}}});
    let (status, _, body) = upper_tester(&cse, None, Some(rqp)).await;
    assert_eq!(status, 200, "{body}");
    let rsp: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(rsp["m2m:rsp"]["rsc"], 2001, "{rsp}");
    assert_eq!(rsp["m2m:rsp"]["rqi"], "ut-1");
    assert_eq!(rsp["m2m:rsp"]["pc"]["m2m:cnt"]["rn"], "fromUT");
    assert_eq!(cse.retrieve("/cse-in/fromUT", "CAdmin").await.rsc, 2000);
    let (status, reason, _) = upper_tester(&cse, None, Some(serde_json::json!({"m2m:rqp": {"to": "x"}}))).await;
    assert_eq!(status, 400);
    assert!(reason.is_some_and(|reason| reason.contains("op")));
    cse.shutdown().await;
}
