//! What registrees (AEs and CSEs) may claim about themselves: the `poa` this CSE will send
//! requests to, the name of a CSR, the CSEs below a registree (`dcse`), and originators
//! in another CSE's name.

use serde_json::{Value, json};

use crate::harness::{TestCse, registrar_settings};

fn ae(poa: Value) -> Value {
    json!({"m2m:ae": {"rn": "app", "api": "Napp", "rr": true, "srv": ["3"], "poa": poa}})
}

fn csr(csi: &str, poa: Value) -> Value {
    json!({"m2m:csr": {"csi": csi, "cb": format!("{csi}/cse"), "rr": true, "srv": ["3"], "poa": poa}})
}

#[tokio::test]
async fn a_poa_must_be_an_http_url_this_cse_can_reach() {
    // Arrange
    let cse = TestCse::start(registrar_settings()).await;
    let unreachable = [
        json!(["ftp://files.example.net/x"]),
        json!(["mqtt://broker.example.net:1883"]),
        json!(["http://user:secret@gw.example.net"]),
        json!(["not a url"]),
        json!(["/relative/path"]),
        json!(["http://"]),
        json!(["http://gw.example.net/#fragment"]),
        json!(["http://ok.example.net", "file:///etc/passwd"]),
        json!([]),
        json!("http://not-a-list.example.net"),
    ];
    for poa in unreachable {
        // Act
        let for_ae = cse.create("/cse-in", "Capp", 2, ae(poa.clone())).await;
        let for_csr = cse.create("/cse-in", "/id-mn", 16, csr("/id-mn", poa.clone())).await;
        // Assert
        for reply in [&for_ae, &for_csr] {
            assert_eq!(reply.rsc, 4000, "{poa}: {reply:?}");
            assert!(reply.dbg().contains("poa"), "{poa}: {reply:?}");
        }
    }
    let registered = cse.create("/cse-in", "Capp", 2, ae(json!(["https://gw.example.net:8443/onem2m"]))).await;
    assert_eq!(registered.rsc, 2001, "{registered:?}");
    let update = cse.update("/cse-in/app", "Capp", json!({"m2m:ae": {"poa": ["gopher://x.example.net"]}})).await;
    assert_eq!(update.rsc, 4000, "{update:?}");
    assert!(update.dbg().contains("poa"), "{update:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn only_the_configured_hosts_may_be_advertised_in_a_poa() {
    // Arrange
    let mut settings = registrar_settings();
    settings.cse.registration.allowed_poa_hosts = vec!["127.0.0.0/8".into(), "*.gateways.example.net".into()];
    let cse = TestCse::start(settings).await;
    // Act
    let elsewhere = cse.create("/cse-in", "Capp", 2, ae(json!(["http://10.1.2.3:8080"]))).await;
    let named = cse.create("/cse-in", "Capp", 2, ae(json!(["http://gw1.gateways.example.net:8080"]))).await;
    let loopback = cse.create("/cse-in", "/id-mn", 16, csr("/id-mn", json!(["http://127.0.0.1:9"]))).await;
    let moved = cse.update("/cse-in/id-mn", "/id-mn", json!({"m2m:csr": {"poa": ["http://192.168.1.1"]}})).await;
    let lookalike =
        cse.update("/cse-in/app", "Capp", json!({"m2m:ae": {"poa": ["http://gateways.example.net.evil.com"]}})).await;
    // Assert
    assert_eq!(elsewhere.rsc, 4000, "{elsewhere:?}");
    assert!(elsewhere.dbg().contains("allowed_poa_hosts"), "{elsewhere:?}");
    assert_eq!((named.rsc, loopback.rsc), (2001, 2001), "{named:?} {loopback:?}");
    assert_eq!((moved.rsc, lookalike.rsc), (4000, 4000), "{moved:?} {lookalike:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_request_forwarded_by_a_registree_carries_an_originator_of_its_own_namespace() {
    // Arrange: an IN with a registree /id-mn.
    let cse = TestCse::start(registrar_settings()).await;
    let reply = cse.create("/cse-in", "/id-mn", 16, csr("/id-mn", json!(["http://127.0.0.1:9"]))).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let via_mn = |originator: &str| {
        cse.request(reqwest::Method::GET, "/cse-in", originator).header("Via", "1.1 acme.example.com_id-mn").send()
    };
    // Act
    let cse_relative = crate::harness::Reply::from(via_mn("CAdmin").await).await;
    let own = crate::harness::Reply::from(via_mn("/id-in/CAdmin").await).await;
    let its_own = crate::harness::Reply::from(via_mn("/id-mn/CAdmin").await).await;
    // Assert: "CAdmin" from the MN would read as this IN's admin; the MN only speaks for
    // itself and the CSEs below it.
    assert_eq!((cse_relative.rsc, own.rsc), (4103, 4103), "{cse_relative:?} {own:?}");
    assert!(cse_relative.dbg().contains("may only forward"), "{cse_relative:?}");
    assert_eq!(its_own.rsc, 2000, "{its_own:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_csr_is_named_after_the_cse_that_registers_so_no_cse_can_take_another_name() {
    // Arrange: the shipped originator patterns let /id-asn-evil register.
    let mut settings = registrar_settings();
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn".into(), "/id-asn*".into()];
    let cse = TestCse::start(settings).await;
    let squatting = json!({"m2m:csr": {"rn": "id-mn", "cb": "/id-asn-evil/cse", "rr": true, "srv": ["3"]}});
    // Act
    let squatter = cse.create("/cse-in", "/id-asn-evil", 16, squatting).await;
    let unnamed = cse
        .create("/cse-in", "/id-asn1", 16, json!({"m2m:csr": {"cb": "/id-asn1/cse", "rr": true, "srv": ["3"]}}))
        .await;
    let real = cse.create("/cse-in", "/id-mn", 16, csr("/id-mn", json!(["http://127.0.0.1:9"]))).await;
    // Assert: before the fix the squatter got the name id-mn and the real /id-mn never registered.
    assert_eq!(squatter.rsc, 4000, "{squatter:?}");
    assert!(squatter.dbg().contains("id-asn-evil"), "{squatter:?}");
    assert_eq!(unnamed.rsc, 2001, "{unnamed:?}");
    assert_eq!(
        (unnamed.body["m2m:csr"]["rn"].as_str(), unnamed.body["m2m:csr"]["csi"].as_str()),
        (Some("id-asn1"), Some("/id-asn1"))
    );
    assert_eq!(real.rsc, 2001, "{real:?}");
    assert_eq!(real.body["m2m:csr"]["rn"], "id-mn");
    cse.shutdown().await;
}

#[tokio::test]
async fn the_descendants_a_registree_lists_are_checked_and_bounded() {
    // Arrange: an MN registrar (/id-mn, registrar /id-in) with a registree /id-asn1 below /id-mn.
    let mut settings = registrar_settings();
    settings.cse.kind = acme_cse::config::CseKind::Mn;
    settings.cse.cse_id = "/id-mn".into();
    settings.cse.resource_name = "cse-mn".into();
    settings.cse.registration.allowed_csr_originators = vec!["/id-asn*".into()];
    settings.cse.registration.max_descendants = 3;
    settings.cse.registrar = Some(acme_cse::config::RegistrarSettings {
        address: vec!["http://127.0.0.1:9".into()],
        cse_id: "/id-in".into(),
        resource_name: "cse-in".into(),
        ..Default::default()
    });
    let cse = TestCse::start(settings).await;
    let with_dcse = |csi: &str, dcse: Value| {
        let mut body = csr(csi, json!(["http://127.0.0.1:9"]));
        body["m2m:csr"]["dcse"] = dcse;
        body
    };
    let first = cse.create("/cse-mn", "/id-asn1", 16, with_dcse("/id-asn1", json!(["/id-asn9"]))).await;
    assert_eq!(first.rsc, 2001, "{first:?}");
    crate::harness::eventually("the MN routes to /id-asn9", std::time::Duration::from_secs(10), || async {
        cse.remote.csr_for("/id-asn9").is_some()
    })
    .await;
    // Act + Assert
    for (dcse, why) in [
        (json!(["id-x"]), "not a CSE-ID"),
        (json!(["/id-x/Cae"]), "not a CSE-ID"),
        (json!(["/id-mn"]), "this CSE"),
        (json!(["//acme.example.com/id-mn"]), "this CSE"),
        (json!(["/id-in"]), "registrar"),
        (json!(["/id-asn2"]), "registree itself"),
        (json!(["/id-asn1"]), "registered here directly"),
        (json!(["/id-asn9"]), "another registree"),
        (json!(["/id-x", "/id-x"]), "twice"),
        (json!(["/id-a", "/id-b", "/id-c", "/id-d"]), "max_descendants"),
    ] {
        let reply = cse.create("/cse-mn", "/id-asn2", 16, with_dcse("/id-asn2", dcse.clone())).await;
        assert_eq!(reply.rsc, 4000, "{dcse}: {reply:?}");
        assert!(reply.dbg().contains(why), "{dcse}: {reply:?}");
    }
    let second = cse.create("/cse-mn", "/id-asn2", 16, with_dcse("/id-asn2", json!(["/id-a", "/id-b", "/id-c"]))).await;
    assert_eq!(second.rsc, 2001, "{second:?}");
    let update = cse.update("/cse-mn/id-asn2", "/id-asn2", json!({"m2m:csr": {"dcse": ["/id-asn9"]}})).await;
    assert_eq!(update.rsc, 4000, "the same rules on update: {update:?}");
    cse.shutdown().await;
}
