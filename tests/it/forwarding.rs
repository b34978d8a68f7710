//! Forwarding requests between CSEs: three real CSEs (ASN → MN → IN) and two service
//! providers, on loopback.

use std::time::Duration;

use acme_cse::config::{CseKind, RegistrarSettings};
use serde_json::json;

use crate::harness::{TestCse, black_hole, eventually, registrar_settings, registree_settings};

const DEADLINE: Duration = Duration::from_secs(10);

/// The ASN's admin, in the SP-relative form: only the ASN may act in its name.
const ASN_ADMIN: &str = "/id-asn/CAdmin";

/// An application of the IN (`Capp`) as other CSEs see it.
const IN_APP: &str = "/id-in/Capp";

/// An IN, an MN registered to it, an ASN registered to the MN; the IN knows the ASN.
async fn chain() -> (TestCse, TestCse, TestCse) {
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("MN monitor");
    let mut settings = registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn));
    settings.cse.registration.unregister_when_stopping = false;
    let asn = TestCse::start(settings).await;
    asn.remote.check_now().await.expect("ASN monitor");
    eventually("the IN knows the ASN below the MN", DEADLINE, || async { in_cse.remote.csr_for("/id-asn").is_some() })
        .await;
    (in_cse, mn, asn)
}

#[tokio::test]
async fn an_ae_on_the_asn_creates_and_reads_resources_on_the_in_through_the_mn() {
    let (in_cse, mn, asn) = chain().await;
    let reply = asn
        .create("/cse-asn", "Casn", 2, json!({"m2m:ae": {"rn": "sensor", "api": "Nsensor", "rr": true, "srv": ["4"]}}))
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");

    // Act: the ASN's AE registers at the IN too, then creates a container and an instance
    // there — all sent to the ASN.
    let reply = asn
        .create(
            "/~/id-in/cse-in",
            "Casn",
            2,
            json!({"m2m:ae": {"rn": "asnApp", "api": "Nasn", "rr": false, "srv": ["4"]}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.body["m2m:ae"]["aei"], "/id-asn/Casn", "the AE-ID is SP-relative at the IN");
    let reply = asn.create("/~/id-in/cse-in/asnApp", "Casn", 3, json!({"m2m:cnt": {"rn": "fromAsn"}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.header("content-location"), Some("cse-in/asnApp/fromAsn"), "relayed unchanged");
    let reply = asn.create("/~/id-in/cse-in/asnApp/fromAsn", "Casn", 4, json!({"m2m:cin": {"con": "21.5"}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");

    // Assert: it is on the IN, created by the ASN's AE in SP-relative form.
    let local = in_cse.retrieve("/cse-in/asnApp/fromAsn/la", "CAdmin").await;
    assert_eq!(local.body["m2m:cin"]["con"], "21.5");
    let reply = in_cse.retrieve("/cse-in/asnApp/fromAsn", "CAdmin").await;
    let ri = reply.body["m2m:cnt"]["ri"].as_str().unwrap_or_default().to_string();
    let container = in_cse.cse.stored(&ri).await;
    assert_eq!(container.expect("store").expect("container").creator.as_deref(), Some("/id-asn/Casn"));
    // And it reads back through the chain, with the same request identifier.
    let reply = asn
        .client
        .get(format!("{}/~/id-in/cse-in/asnApp/fromAsn/la", asn.url))
        .header("X-M2M-Origin", "Casn")
        .header("X-M2M-RI", "trace-1")
        .header("X-M2M-RVI", "4")
        .send()
        .await;
    let reply = crate::harness::Reply::from(reply).await;
    assert_eq!(reply.rsc, 2000);
    assert_eq!(reply.body["m2m:cin"]["con"], "21.5");
    assert_eq!(reply.header("x-m2m-ri"), Some("trace-1"));
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_on_the_in_reads_updates_and_deletes_a_resource_on_the_asn_two_hops_down() {
    let (in_cse, mn, asn) = chain().await;
    // The ASN shares `local` with an application of the IN, by its SP-relative AE-ID.
    let acp = json!({"m2m:acp": {"rn": "acpIn", "pv": {"acr": [{"acor": [IN_APP], "acop": 63}]},
                                 "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}});
    assert_eq!(asn.create("/cse-asn", "CAdmin", 1, acp).await.rsc, 2001);
    let container = json!({"m2m:cnt": {"rn": "local", "lbl": ["a"], "acpi": ["cse-asn/acpIn"]}});
    let reply = asn.create("/cse-asn", "CAdmin", 3, container).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");

    let reply = in_cse.retrieve("/~/id-asn/cse-asn/local", "Capp").await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    assert_eq!(reply.body["m2m:cnt"]["lbl"], json!(["a"]));
    let reply = in_cse.update("/~/id-asn/cse-asn/local", "Capp", json!({"m2m:cnt": {"lbl": ["b"]}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    assert_eq!(asn.retrieve("/cse-asn/local", "CAdmin").await.body["m2m:cnt"]["lbl"], json!(["b"]));
    // Discovery is forwarded with its filter.
    let reply = in_cse.retrieve("/~/id-asn/cse-asn?fu=1&ty=3", "Capp").await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    assert!(reply.uril().iter().any(|uri| uri.ends_with("cse-asn/local")), "{reply:?}");
    // The library path is the same.
    let local = in_cse.remote.retrieve_remote("/id-asn/cse-asn/local", Some("Capp")).await.expect("remote retrieve");
    assert_eq!(local.str("rn"), Some("local"));
    let reply = in_cse.delete("/_/acme.example.com/id-asn/cse-asn/local", "Capp").await;
    assert_eq!(reply.rsc, 2002, "{reply:?}");
    assert_eq!(asn.retrieve("/cse-asn/local", "CAdmin").await.rsc, 4004);
    // The IN's own admin is not the ASN's admin: the ASN's resources are private to it.
    let reply = asn.create("/cse-asn", "CAdmin", 3, json!({"m2m:cnt": {"rn": "private"}})).await;
    assert_eq!(reply.rsc, 2001);
    let reply = in_cse.retrieve("/~/id-asn/cse-asn/private", "CAdmin").await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("/id-in/CAdmin"), "{reply:?}");
    // Nor can a client of the IN claim to be the ASN's admin (before the fix, the ASN took
    // this for its own admin and created the container).
    let forged = in_cse.create("/~/id-asn/cse-asn", ASN_ADMIN, 3, json!({"m2m:cnt": {"rn": "forged"}})).await;
    assert_eq!(forged.rsc, 4103, "{forged:?}");
    assert_eq!(asn.retrieve("/cse-asn/forged", "CAdmin").await.rsc, 4004);
    // Whatever the IN itself sends down in the ASN's name is refused below it.
    let relayed = in_cse.remote.retrieve_remote("/id-asn/cse-asn/private", Some(ASN_ADMIN)).await;
    assert_eq!(relayed.map(|_| ()).map_err(|error| error.rsc), Err(acme_cse::Rsc::OriginatorHasNoPrivilege));
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn errors_of_the_far_cse_reach_the_client_unchanged() {
    let (in_cse, mn, asn) = chain().await;
    let reply = asn.retrieve("/~/id-in/cse-in/nothing-here", "CAdmin").await;
    assert_eq!((reply.rsc, reply.status), (4004, 404), "{reply:?}");
    assert!(reply.dbg().contains("nothing-here"), "{reply:?}");
    let ae = json!({"m2m:ae": {"rn": "errApp", "api": "Nerr", "rr": false, "srv": ["4"]}});
    assert_eq!(asn.create("/~/id-in/cse-in", "Cerr", 2, ae).await.rsc, 2001);
    let body = json!({"m2m:cnt": {"rn": "twice"}});
    assert_eq!(asn.create("/~/id-in/cse-in/errApp", "Cerr", 3, body.clone()).await.rsc, 2001);
    let reply = asn.create("/~/id-in/cse-in/errApp", "Cerr", 3, body).await;
    assert_eq!((reply.rsc, reply.status), (4105, 409), "{reply:?}");
    assert!(reply.dbg().contains("twice"), "{reply:?}");
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_or_unknown_target_is_answered_5103_and_the_cse_stays_healthy() {
    let (in_cse, mn, asn) = chain().await;
    // No route at all.
    let reply = in_cse.retrieve("/~/id-nowhere/cse-x", "CAdmin").await;
    assert_eq!((reply.rsc, reply.status), (5103, 404), "{reply:?}");
    assert!(reply.dbg().contains("/id-nowhere"), "{reply:?}");
    // The ASN is down (it did not deregister): the MN cannot reach it.
    asn.shutdown().await;
    let reply = in_cse.retrieve("/~/id-asn/cse-asn", "CAdmin").await;
    assert_eq!(reply.rsc, 5103, "{reply:?}");
    assert_eq!(reply.dbg(), "CSE /id-asn is not reachable", "no address or error chain: {reply:?}");
    // Both CSEs still serve.
    assert_eq!(in_cse.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
    assert_eq!(mn.retrieve("/cse-mn", "CAdmin").await.rsc, 2000);
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_next_hop_that_never_answers_is_a_timeout_not_a_hang() {
    // A registree whose poa accepts connections and never answers.
    let (silent_url, hold) = black_hole().await;
    let mut settings = registrar_settings();
    settings.http.client_timeout = Duration::from_millis(300);
    let in_cse = TestCse::start(settings).await;
    let reply = in_cse
        .create(
            "/cse-in",
            "/id-mn",
            16,
            json!({"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"], "poa": [silent_url]}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001);
    eventually("the IN routes to the MN", DEADLINE, || async { in_cse.remote.csr_for("/id-mn").is_some() }).await;
    let reply = in_cse.retrieve("/~/id-mn/cse-mn", "CAdmin").await;
    assert_eq!((reply.rsc, reply.status), (4008, 504), "{reply:?}");
    assert!(reply.dbg().contains("/id-mn"), "{reply:?}");
    hold.abort();
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_request_that_comes_back_to_a_cse_is_refused_as_a_loop() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let reply = in_cse
        .request(reqwest::Method::GET, "/~/id-mn/cse-mn", "CAdmin")
        .header("Via", "1.1 acme.example.com_id-asn, 1.1 acme.example.com_id-in")
        .send()
        .await;
    let reply = crate::harness::Reply::from(reply).await;
    assert_eq!(reply.rsc, 5103, "{reply:?}");
    assert!(reply.dbg().contains("loop"), "{reply:?}");
    in_cse.shutdown().await;
}

#[tokio::test]
async fn two_mns_misconfigured_as_each_others_registrar_answer_a_loop_error_instead_of_bouncing() {
    // MN1 registers to MN2 and MN2 to MN1: every unknown target goes "up" in a circle.
    let mut settings = registree_settings(CseKind::Mn, "/id-mn1", "cse-mn1", None);
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    let mn1 = TestCse::start(settings).await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn2", "cse-mn2", Some(&mn1));
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    let mn2 = TestCse::start(settings).await;
    mn2.remote.check_now().await.expect("monitor");
    // Now point MN1 at MN2: restart it with MN2 as registrar, on its address.
    let address = mn1.addr;
    mn1.shutdown().await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn1", "cse-mn1", Some(&mn2));
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    settings.http.listen = address.to_string();
    let mn1 = TestCse::start(settings).await;
    mn1.remote.check_now().await.expect("monitor");
    mn2.remote.check_now().await.expect("monitor");

    let reply = mn1.retrieve("/~/id-elsewhere/cse-x", "CAdmin").await;
    assert_eq!(reply.rsc, 5103, "{reply:?}");
    assert!(reply.dbg().contains("loop") || reply.dbg().contains("came from"), "{reply:?}");
    mn1.shutdown().await;
    mn2.shutdown().await;
}

#[tokio::test]
async fn a_registree_cannot_forward_in_the_name_of_a_cse_it_does_not_serve() {
    let (in_cse, mn, asn) = chain().await;
    let reply = mn.retrieve("/~/id-in/cse-in", "/id-other/Cx").await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("/id-other/Cx"), "{reply:?}");
    // In its own name and in the name of a CSE below it, it may.
    let own = mn.retrieve("/~/id-in/cse-in", "/id-mn/CAdmin").await;
    assert_eq!(own.rsc, 2000, "{own:?}");
    let below = asn.retrieve("/~/id-in/cse-in", "Cx").await;
    assert_eq!(below.rsc, 2000, "{below:?}");
    // A client of the MN cannot claim to be somebody of the ASN: that comes from the ASN.
    let forged = mn.retrieve("/~/id-in/cse-in", "/id-asn/Cx").await;
    assert_eq!(forged.rsc, 4103, "{forged:?}");
    assert!(forged.dbg().contains("CSE /id-asn"), "{forged:?}");
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_of_a_registree_cannot_register_as_a_cse() {
    let (in_cse, mn, asn) = chain().await;
    let body = json!({"m2m:csr": {"csi": "/id-mn/Cae", "cb": "/id-mn/Cae/x", "rr": true, "srv": ["3"]}});
    // The MN forwards its AE's request as /id-mn/Cae, which the IN's patterns (/id-mn*) allow.
    let reply = mn.create("/~/id-in/cse-in", "Cae", 16, body).await;
    assert_eq!((reply.rsc, reply.status), (4005, 405), "{reply:?}");
    assert!(reply.dbg().contains("not a CSE-ID"), "{reply:?}");
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn absolute_ids_reach_a_peer_service_provider_through_its_in() {
    // IN-B of b.example.com accepts IN-A of a.example.com.
    let mut settings = registrar_settings();
    settings.cse.sp_id = "b.example.com".into();
    settings.cse.registration.allowed_csr_originators = vec!["//a.example.com/id-in".into()];
    let in_b = TestCse::start(settings).await;
    let mut settings = registrar_settings();
    settings.cse.sp_id = "a.example.com".into();
    settings.cse.sp.registrar.insert(
        "b".into(),
        RegistrarSettings {
            address: vec![in_b.url.clone()],
            cse_id: "/id-in".into(),
            resource_name: "cse-in".into(),
            sp_id: Some("b.example.com".into()),
            ..RegistrarSettings::default()
        },
    );
    let in_a = TestCse::start(settings).await;
    in_a.remote.check_now().await.expect("monitor");
    let csr = in_b.retrieve("/cse-in/a.example.com_id-in", "CAdmin").await;
    assert_eq!(csr.rsc, 2000, "{csr:?}");
    assert_eq!(csr.body["m2m:csr"]["csi"], "//a.example.com/id-in");
    let local = in_a.retrieve("/cse-in/b.example.com_id-in", "CAdmin").await;
    assert_eq!(local.body["m2m:csr"]["csi"], "//b.example.com/id-in");
    eventually("IN-B routes to IN-A", DEADLINE, || async { in_b.remote.csr_for("//a.example.com/id-in").is_some() })
        .await;

    // A → B: B shares a container with A's user through an ACP.
    let acp = json!({"m2m:acp": {"rn": "shareWithA", "pv": {"acr": [{"acor": ["//a.example.com/id-in/Cuser"], "acop": 2}]},
                                  "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}});
    assert_eq!(in_b.create("/cse-in", "CAdmin", 1, acp).await.rsc, 2001);
    let reply =
        in_b.create("/cse-in", "CAdmin", 3, json!({"m2m:cnt": {"rn": "onB", "acpi": ["cse-in/shareWithA"]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    in_a.register_ae("Cuser", "user").await;
    let reply = in_a.retrieve("/_/b.example.com/id-in/cse-in/onB", "Cuser").await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    assert_eq!(reply.body["m2m:cnt"]["rn"], "onB");
    // A's user registers at B and creates there, in its absolute name.
    let ae = json!({"m2m:ae": {"rn": "userFromA", "api": "Nuser", "rr": false, "srv": ["4"]}});
    let reply = in_a.create("/_/b.example.com/id-in/cse-in", "Cuser", 2, ae).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let reply =
        in_a.create("/_/b.example.com/id-in/cse-in/userFromA", "Cuser", 3, json!({"m2m:cnt": {"rn": "fromA"}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let reply = in_b.retrieve("/cse-in/userFromA/fromA", "CAdmin").await;
    let created = reply.body["m2m:cnt"]["ri"].as_str().unwrap_or_default().to_string();
    let stored = in_b.cse.stored(&created).await.expect("store").expect("resource");
    assert_eq!(stored.creator.as_deref(), Some("//a.example.com/id-in/Cuser"), "absolute originator across SPs");
    // B → A: A shares a container with B's operator.
    let acp = json!({"m2m:acp": {"rn": "shareWithB", "pv": {"acr": [{"acor": ["//b.example.com/id-in/Cops"], "acop": 2}]},
                                  "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}});
    assert_eq!(in_a.create("/cse-in", "CAdmin", 1, acp).await.rsc, 2001);
    let container = json!({"m2m:cnt": {"rn": "onA", "acpi": ["cse-in/shareWithB"]}});
    assert_eq!(in_a.create("/cse-in", "CAdmin", 3, container).await.rsc, 2001);
    let reply = in_b.retrieve("/_/a.example.com/id-in/cse-in/onA", "Cops").await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    // A client of B cannot act as A's admin: B refuses to send it, A to take it.
    let forged = in_b.retrieve("/_/a.example.com/id-in/cse-in/onA", "//a.example.com/id-in/CAdmin").await;
    assert_eq!(forged.rsc, 4103, "{forged:?}");
    // An SP nobody knows (as the reference CSE answers: 4004, with a reason).
    let reply = in_a.retrieve("/_/c.example.com/id-in/cse-in", "CAdmin").await;
    assert_eq!((reply.rsc, reply.status), (4004, 404), "{reply:?}");
    assert!(reply.dbg().contains("c.example.com is unknown"), "{reply:?}");
    in_a.shutdown().await;
    in_b.shutdown().await;
}

#[tokio::test]
async fn the_points_of_access_of_a_next_hop_are_tried_in_order_and_the_release_version_is_kept() {
    let in_cse = TestCse::start(registrar_settings()).await;
    // The MN advertises a dead address first, then its real one.
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("port");
    let (dead, live) = (free(), free());
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.http.listen = live.to_string();
    settings.http.poa = vec![format!("http://{dead}"), format!("http://{live}")];
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor");
    eventually("the IN knows both points of access", DEADLINE, || async {
        in_cse.remote.csr_for("/id-mn").is_some_and(|record| record.poa.len() == 2)
    })
    .await;

    // The MN shares a container with the IN's admin.
    let acp = json!({"m2m:acp": {"rn": "acpIn", "pv": {"acr": [{"acor": ["/id-in/CAdmin"], "acop": 2}]},
                                 "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}});
    assert_eq!(mn.create("/cse-mn", "CAdmin", 1, acp).await.rsc, 2001);
    let container = json!({"m2m:cnt": {"rn": "shared", "acpi": ["cse-mn/acpIn"]}});
    assert_eq!(mn.create("/cse-mn", "CAdmin", 3, container).await.rsc, 2001);

    let reply = in_cse
        .client
        .get(format!("{}/~/id-mn/cse-mn/shared", in_cse.url))
        .header("X-M2M-Origin", "CAdmin")
        .header("X-M2M-RI", "poa-1")
        .header("X-M2M-RVI", "3")
        .send()
        .await;
    let reply = crate::harness::Reply::from(reply).await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    assert_eq!(reply.body["m2m:cnt"]["rn"], "shared");
    assert_eq!(reply.header("x-m2m-rvi"), Some("3"), "the originator's release version is kept");
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_notification_is_forwarded_like_any_request() {
    let (in_cse, mn, asn) = chain().await;
    let reply = in_cse
        .request(reqwest::Method::POST, "/~/id-asn/cse-asn", "CAdmin")
        .header("Content-Type", "application/json")
        .body(json!({"m2m:sgn": {"vrq": true}}).to_string())
        .send()
        .await;
    let reply = crate::harness::Reply::from(reply).await;
    // The ASN answers (its CSEBase takes no notifications); the answer is relayed unchanged.
    assert_eq!(reply.rsc, 4000, "{reply:?}");
    assert!(reply.dbg().contains("the CSEBase does not take notifications"), "{reply:?}");
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}
