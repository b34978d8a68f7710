//! Registration of CSEs to each other: two and three real CSEs on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acme_cse::config::{CseKind, RegistrarSettings};
use acme_cse::remote::RegistrationStatus;
use serde_json::json;

use crate::harness::{Proxy, TestCse, eventually, on_disk, registrar_settings, registree_settings};

const DEADLINE: Duration = Duration::from_secs(10);

async fn spawn_in() -> TestCse {
    TestCse::start(registrar_settings()).await
}

async fn spawn_mn(registrar: &TestCse) -> TestCse {
    TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(registrar))).await
}

#[tokio::test]
async fn an_mn_registers_to_an_in_and_both_csrs_carry_the_specified_attributes() {
    // Arrange: the IN reports CSR changes; the MN reports its status.
    let in_csrs = Arc::new(Mutex::new(Vec::new()));
    let seen = in_csrs.clone();
    let in_cse = TestCse::start_hooked(registrar_settings(), move |remote| {
        remote.on_csr_update(move |record, added| seen.lock().expect("lock").push((record.csi.clone(), added)));
    })
    .await;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let mn = TestCse::start_hooked(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse)), move |remote| {
        remote.on_status(move |registrar, status, address| {
            seen.lock().expect("lock").push((registrar.cse_id.clone(), status.clone(), address.map(str::to_string)));
        });
    })
    .await;

    // Act
    mn.remote.check_now().await.expect("monitor runs");

    // Assert: the MN's CSR on the IN.
    assert!(mn.remote.is_registered());
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.rsc, 2000, "{csr:?}");
    let csr = &csr.body["m2m:csr"];
    assert_eq!(csr["ty"], 16);
    assert_eq!(csr["rn"], "id-mn");
    assert_eq!(csr["ri"], "id-mn");
    assert_eq!(csr["csi"], "/id-mn");
    assert_eq!(csr["cb"], "/id-mn/cse-mn");
    assert_eq!(csr["poa"], json!([mn.url]));
    assert_eq!(csr["dcse"], json!([]));
    assert_eq!(csr["rr"], true);
    assert_eq!(csr["cst"], 2);
    // The IN's CSR on the MN.
    let local = mn.retrieve("/cse-mn/id-in", "CAdmin").await;
    assert_eq!(local.rsc, 2000, "{local:?}");
    let local = &local.body["m2m:csr"];
    assert_eq!(local["rn"], "id-in");
    assert_eq!(local["ri"], "id-in");
    assert_eq!(local["csi"], "/id-in");
    assert_eq!(local["cb"], "/id-in/cse-in");
    assert_eq!(local["poa"], json!([in_cse.url]));
    assert!(local.get("dcse").is_none(), "the registrar's CSR does not carry this CSE's dcse");
    // The MN learned the IN-CSE-ID.
    assert_eq!(mn.retrieve("/cse-mn", "CAdmin").await.body["m2m:cb"]["ici"], "/id-in");
    // Lookups.
    assert_eq!(in_cse.remote.csr_for("/id-mn/cse-mn/ae1").map(|record| record.ri), Some("id-mn".to_string()));
    assert_eq!(mn.remote.csr_for("/id-in/cse-in").map(|record| record.registrar), Some(true));
    assert_eq!(in_cse.remote.cse_base_address("/id-mn").as_deref(), Some("/id-mn/cse-mn"));
    let fetched = mn.remote.retrieve_remote("/id-in/cse-in", None).await.expect("remote retrieve");
    assert_eq!(fetched.str("csi"), Some("/id-in"));
    // Callbacks.
    eventually("the IN's callback saw the MN's CSR", DEADLINE, || {
        let seen = in_csrs.lock().expect("lock").contains(&("/id-mn".to_string(), true));
        async move { seen }
    })
    .await;
    eventually("the MN's status callback saw Registered", DEADLINE, || {
        let seen = statuses.lock().expect("lock").iter().any(|(csi, status, address)| {
            csi == "/id-in"
                && *status == RegistrationStatus::Registered
                && address.as_deref() == Some(in_cse.url.as_str())
        });
        async move { seen }
    })
    .await;
    let mut registrars = Vec::new();
    mn.remote.for_each_csr(|record| registrars.push((record.csi.clone(), record.registrar)));
    assert_eq!(registrars, [("/id-in".to_string(), true)]);

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_mn_re_registers_within_one_check_when_the_registrar_lost_its_data() {
    let in_cse = spawn_in().await;
    let mn = spawn_mn(&in_cse).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);

    // The IN restarts on an empty database, on the same address.
    let address = in_cse.addr;
    in_cse.shutdown().await;
    let mut settings = registrar_settings();
    settings.http.listen = address.to_string();
    let in_cse = TestCse::start(settings).await;
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);

    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    assert!(mn.remote.is_registered());

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_restarted_mn_keeps_one_csr_and_updates_its_poa() {
    let in_cse = spawn_in().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = || {
        let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
        on_disk(&mut settings, &dir.path().join("mn.db"));
        settings.cse.registration.unregister_when_stopping = false;
        settings
    };
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    mn.shutdown().await;

    // Restart on the same database, on another port.
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    mn.remote.check_now().await.expect("monitor runs");

    let found = in_cse.request(reqwest::Method::GET, "/cse-in?fu=1&ty=16", "CAdmin").send().await.expect("discovery");
    let found: serde_json::Value = found.json().await.expect("JSON");
    assert_eq!(found["m2m:uril"], json!(["cse-in/id-mn"]), "exactly one CSR for the MN");
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.body["m2m:csr"]["poa"], json!([mn.url]), "the new address was pushed");
    assert!(mn.remote.is_registered());
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_vanished_registree_is_removed_after_the_configured_rounds_and_a_brief_outage_is_survived() {
    let in_cse = spawn_in().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.cse.registration.unregister_when_stopping = false;
    // The MN keeps its registration in its database across the outage (an MN with an
    // in-memory store would re-register from scratch, racing with the assertions below).
    on_disk(&mut settings, &dir.path().join("mn.db"));
    let mn = TestCse::start(settings.clone()).await;
    mn.remote.check_now().await.expect("monitor runs");
    let address = mn.addr;

    // A brief outage: one failed probe, then the MN is back on the same address.
    mn.shutdown().await;
    in_cse.remote.check_now().await.expect("probe");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000, "one failure is not enough");
    settings.http.listen = address.to_string();
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    in_cse.remote.check_now().await.expect("probe");
    in_cse.remote.check_now().await.expect("probe");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000, "the failure count was reset");

    // Gone for good: removed after two failed rounds.
    mn.shutdown().await;
    in_cse.remote.check_now().await.expect("probe");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    in_cse.remote.check_now().await.expect("probe");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);
    assert!(in_cse.remote.csr_for("/id-mn").is_none());
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_graceful_stop_deregisters_on_both_sides_unless_configured_not_to() {
    let in_cse = spawn_in().await;
    let mn = spawn_mn(&in_cse).await;
    mn.remote.check_now().await.expect("monitor runs");
    let mn = mn.shutdown().await;
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);
    assert!(mn.stored("id-in").await.expect("store").is_none());

    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.cse.registration.unregister_when_stopping = false;
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    let mn = mn.shutdown().await;
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    assert!(mn.stored("id-in").await.expect("store").is_some());
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_three_level_chain_reports_descendants_upward_at_once() {
    let in_cse = spawn_in().await;
    let mn = spawn_mn(&in_cse).await;
    mn.remote.check_now().await.expect("monitor runs");
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn))).await;
    asn.remote.check_now().await.expect("monitor runs");

    eventually("the IN lists the ASN below the MN", DEADLINE, || async {
        in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.body["m2m:csr"]["dcse"] == json!(["/id-asn"])
    })
    .await;
    eventually("the IN routes the ASN through the MN", DEADLINE, || async {
        in_cse.remote.csr_for("/id-asn/cse-asn").map(|record| record.csi) == Some("/id-mn".to_string())
    })
    .await;
    assert_eq!(in_cse.remote.cse_base_address("/id-asn").as_deref(), Some("/id-asn/-"));
    assert!(in_cse.remote.csr_for("/id-as").is_none(), "CSE-IDs match exactly");

    asn.shutdown().await;
    eventually("the IN forgets the ASN", DEADLINE, || async {
        in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.body["m2m:csr"]["dcse"] == json!([])
    })
    .await;
    eventually("the IN no longer routes the ASN", DEADLINE, || async { in_cse.remote.csr_for("/id-asn").is_none() })
        .await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_csr_update_without_dcse_keeps_the_descendants() {
    let in_cse = spawn_in().await;
    let reply = in_cse
        .create(
            "/cse-in",
            "/id-mn",
            16,
            json!({"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"], "poa": ["http://127.0.0.1:9"], "dcse": ["/id-asn"]}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    eventually("the registry knows the ASN", DEADLINE, || async { in_cse.remote.csr_for("/id-asn").is_some() }).await;
    let reply = in_cse.update("/cse-in/id-mn", "/id-mn", json!({"m2m:csr": {"lbl": ["x"]}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    let reply = in_cse.update("/cse-in/id-mn", "/id-mn", json!({"m2m:csr": {"dcse": ["/id-asn2"]}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    eventually("the registry follows the new dcse", DEADLINE, || async {
        in_cse.remote.csr_for("/id-asn2").is_some() && in_cse.remote.csr_for("/id-asn").is_none()
    })
    .await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn the_registree_table_is_rebuilt_from_the_store_on_an_in_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = || {
        let mut settings = registrar_settings();
        on_disk(&mut settings, &dir.path().join("in.db"));
        settings
    };
    let in_cse = TestCse::start(settings()).await;
    let reply = in_cse
        .create(
            "/cse-in",
            "/id-mn",
            16,
            json!({"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"], "poa": ["http://127.0.0.1:9"], "dcse": ["/id-asn"]}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001);
    in_cse.shutdown().await;
    let in_cse = TestCse::start(settings()).await;
    assert_eq!(in_cse.remote.csr_for("/id-asn/cse-asn").map(|record| record.csi), Some("/id-mn".to_string()));
    in_cse.shutdown().await;
}

#[tokio::test]
async fn registration_fails_over_between_registrar_addresses_and_stays_on_the_one_that_works() {
    let in_cse = spawn_in().await;
    // The preferred address is a proxy to the IN that is down at first.
    let proxy = Proxy::start(in_cse.addr).await;
    proxy.switch(false);
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.cse.registrar.as_mut().expect("registrar").address = vec![proxy.url.clone(), in_cse.url.clone()];
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert!(mn.remote.is_registered());
    assert_eq!(active_address(&mn), Some(in_cse.url.clone()), "fell over to the second address");

    // The addresses of one list are one group: the one that works is kept (a return to a
    // preferred address is what groups are for, see failover.rs).
    proxy.switch(true);
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(active_address(&mn), Some(in_cse.url.clone()), "stays on the address that works");

    // When that one fails, the other address of the group takes over.
    let direct = Proxy::start(in_cse.addr).await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn2", "cse-mn2", Some(&in_cse));
    settings.cse.registrar.as_mut().expect("registrar").address = vec![proxy.url.clone(), direct.url.clone()];
    let mn2 = TestCse::start(settings).await;
    mn2.remote.check_now().await.expect("monitor runs");
    assert_eq!(active_address(&mn2), Some(proxy.url.clone()));
    proxy.switch(false);
    mn2.remote.check_now().await.expect("monitor runs");
    assert_eq!(active_address(&mn2), Some(direct.url.clone()), "failed over within the group");
    assert!(mn2.remote.is_registered());
    mn.shutdown().await;
    mn2.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_registrar_keeps_the_registration() {
    let in_cse = spawn_in().await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.cse.registration.unregister_when_stopping = false;
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    in_cse.shutdown().await;
    mn.remote.check_now().await.expect("monitor runs");
    assert!(mn.remote.is_registered(), "an unreachable registrar does not end the registration");
    let statuses = mn.remote.statuses();
    assert_eq!(statuses[0].1, RegistrationStatus::Unreachable);
    assert_eq!(mn.retrieve("/cse-mn/id-in", "CAdmin").await.rsc, 2000, "the local CSR is kept");
    mn.shutdown().await;
}

#[tokio::test]
async fn csr_registrations_are_checked() {
    let in_cse = spawn_in().await;
    let csr = |csi: &str| json!({"m2m:csr": {"csi": csi, "cb": format!("{csi}/cse"), "rr": true, "srv": ["3"], "poa": ["http://127.0.0.1:9"]}});
    // Not an allowed originator.
    let reply = in_cse.create("/cse-in", "/id-other", 16, csr("/id-other")).await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("/id-other"));
    // Missing cb / cb not an address.
    let reply =
        in_cse.create("/cse-in", "/id-mn", 16, json!({"m2m:csr": {"csi": "/id-mn", "rr": true, "srv": ["3"]}})).await;
    assert_eq!(reply.rsc, 4000, "{reply:?}");
    assert!(reply.dbg().contains("cb"));
    let reply = in_cse
        .create(
            "/cse-in",
            "/id-mn",
            16,
            json!({"m2m:csr": {"csi": "/id-mn", "cb": "id-mn/cse", "rr": true, "srv": ["3"]}}),
        )
        .await;
    assert_eq!(reply.rsc, 4000, "{reply:?}");
    // Twice.
    assert_eq!(in_cse.create("/cse-in", "/id-mn", 16, csr("/id-mn")).await.rsc, 2001);
    assert_eq!(in_cse.create("/cse-in", "/id-mn", 16, csr("/id-mn")).await.rsc, 4105);
    // On an ASN.
    let mut settings = registree_settings(CseKind::Asn, "/id-asn", "cse-asn", None);
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn".into()];
    let asn = TestCse::start(settings).await;
    let reply = asn.create("/cse-asn", "/id-mn", 16, csr("/id-mn")).await;
    assert_eq!(reply.rsc, 4005, "{reply:?}");
    asn.shutdown().await;
    in_cse.shutdown().await;
}

fn active_address(cse: &TestCse) -> Option<String> {
    cse.remote.statuses().into_iter().next().and_then(|(_, _, address)| address)
}

#[tokio::test]
async fn the_in_cse_id_reaches_the_bottom_of_the_tree_with_the_next_rounds() {
    // The ASN registers to the MN before the MN is registered anywhere: the MN is the top of
    // its tree then.
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", None);
    settings.cse.registration.allowed_csr_originators = vec!["/id-asn*".into()];
    let lonely_mn = TestCse::start(settings).await;
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&lonely_mn))).await;
    asn.remote.check_now().await.expect("monitor");
    assert!(asn.remote.is_registered());
    assert_eq!(asn.retrieve("/cse-asn", "CAdmin").await.body["m2m:cb"]["ici"], "/id-mn");

    // The MN restarts on its address, now with the IN as registrar.
    let address = lonely_mn.addr;
    lonely_mn.shutdown().await;
    let in_cse = spawn_in().await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.http.listen = address.to_string();
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor");
    assert_eq!(mn.retrieve("/cse-mn", "CAdmin").await.body["m2m:cb"]["ici"], "/id-in");

    // The ASN's next round re-registers at the restarted MN and takes the IN-CSE-ID over.
    asn.remote.check_now().await.expect("monitor");
    assert_eq!(asn.retrieve("/cse-asn", "CAdmin").await.body["m2m:cb"]["ici"], "/id-in");
    assert_eq!(asn.retrieve("/cse-asn/id-mn", "CAdmin").await.body["m2m:csr"]["ici"], "/id-in");
    asn.shutdown().await;
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_restart_reports_nothing_new_and_a_graceful_stop_reports_the_registrars_csr_removed() {
    // Arrange: the MN reports CSR changes (csi, registrar, added).
    let in_cse = spawn_in().await;
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let mn = TestCse::start_hooked(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse)), move |remote| {
        remote.on_csr_update(move |record, added| {
            seen.lock().expect("lock").push((record.csi.clone(), record.registrar, added));
        });
    })
    .await;
    mn.remote.check_now().await.expect("monitor runs");

    // Act: restart the manager (no second addition), then stop (deregistering, the default).
    mn.remote.restart().await.expect("restart");
    mn.remote.check_now().await.expect("monitor runs");
    mn.shutdown().await;

    // Assert: the registrar's CSR came and went, reported as the registrar's.
    eventually("the MN's callback saw its registrar's CSR removed", DEADLINE, || {
        let seen = changes.lock().expect("lock").clone();
        async move { seen == [("/id-in".to_string(), true, true), ("/id-in".to_string(), true, false)] }
    })
    .await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_mn_started_before_its_in_registers_seconds_after_the_in_comes_up() {
    // Arrange: an address where the IN will be reached, nothing behind it yet (a proxy
    // that holds its port, so no other test can take it meanwhile); check interval 1 h.
    let address = Proxy::unaimed().await;
    let in_settings = registrar_settings();
    let registrar = RegistrarSettings {
        address: vec![address.url.clone()],
        cse_id: in_settings.cse.cse_id.clone(),
        resource_name: in_settings.cse.resource_name.clone(),
        ..RegistrarSettings::default()
    };
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", None);
    settings.cse.registrar = Some(registrar);
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("a round that cannot reach the IN");
    assert!(!mn.remote.is_registered());

    // Act: the IN comes up; nobody calls check_now.
    let in_cse = TestCse::start(in_settings).await;
    address.aim(in_cse.addr);

    // Assert: registered by a retry, long before the hour is up.
    eventually("the MN registered by itself", DEADLINE, || {
        let registered = mn.remote.is_registered();
        async move { registered }
    })
    .await;
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn registrees_joining_while_the_registrar_is_silent_are_reported_and_routed_at_once() {
    // Arrange: an MN registered to an IN that then goes silent (connections accepted,
    // never answered) — and an MN that would wait an hour for an answer.
    let in_cse = spawn_in().await;
    let added = Arc::new(Mutex::new(Vec::new()));
    let seen = added.clone();
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.http.client_timeout = Duration::from_secs(3600);
    settings.cse.registration.unregister_when_stopping = false;
    let mn = TestCse::start_hooked(settings, move |remote| {
        remote.on_csr_update(move |record, is_added| {
            if is_added && !record.registrar {
                seen.lock().expect("lock").push(record.csi.clone());
            }
        });
    })
    .await;
    mn.remote.check_now().await.expect("monitor runs");
    assert!(mn.remote.is_registered());
    let address = in_cse.addr;
    in_cse.shutdown().await;
    let silent = tokio::net::TcpListener::bind(address).await.expect("the IN's address again");
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            connections.push(connection);
        }
    });

    // Act: three ASNs register at the MN; each pushes a new dcse towards the silent IN.
    let mut asns = Vec::new();
    for index in 1..=3 {
        let settings =
            registree_settings(CseKind::Asn, &format!("/id-asn{index}"), &format!("cse-asn{index}"), Some(&mn));
        let asn = TestCse::start(settings).await;
        asn.remote.check_now().await.expect("monitor runs");
        asns.push(asn);
    }

    // Assert: all three routed and reported, though no push has come back.
    eventually("the MN reported all three registrees", DEADLINE, || {
        let count = added.lock().expect("lock").len();
        async move { count == 3 }
    })
    .await;
    for index in 1..=3 {
        assert!(mn.remote.csr_for(&format!("/id-asn{index}")).is_some());
    }
    for asn in asns {
        asn.shutdown().await;
    }
    mn.shutdown().await;
    held.abort();
}

#[tokio::test]
async fn reports_come_as_a_snapshot_a_stream_and_callbacks_that_can_be_unregistered() {
    // Arrange: an IN with a CSR callback and a change stream.
    let in_cse = spawn_in().await;
    let called = Arc::new(Mutex::new(Vec::new()));
    let seen = called.clone();
    let handle = in_cse.remote.on_csr_update(move |record, added| {
        seen.lock().expect("lock").push((record.csi.clone(), added));
    });
    let mut stream = in_cse.remote.subscribe();
    let mn1 = TestCse::start(registree_settings(CseKind::Mn, "/id-mn1", "cse-mn1", Some(&in_cse))).await;
    let mut mn1_registrars = mn1.remote.watch_registrars();
    mn1.remote.check_now().await.expect("monitor runs");
    eventually("the callback saw MN1", DEADLINE, || async {
        called.lock().expect("lock").contains(&("/id-mn1".to_string(), true))
    })
    .await;

    // Act: unregister the callback; another MN registers.
    handle.unregister();
    let mn2 = TestCse::start(registree_settings(CseKind::Mn, "/id-mn2", "cse-mn2", Some(&in_cse))).await;
    mn2.remote.check_now().await.expect("monitor runs");

    // Assert: the stream has both, in order; the callback only the first.
    let mut added = Vec::new();
    while added.len() < 2 {
        let change = tokio::time::timeout(DEADLINE, stream.recv()).await.expect("a report").expect("open");
        if let acme_cse::remote::RemoteChange::Csr { record, added: true } = change {
            added.push(record.csi);
        }
    }
    assert_eq!(added, ["/id-mn1", "/id-mn2"]);
    assert_eq!(*called.lock().expect("lock"), [("/id-mn1".to_string(), true)]);
    // The MN's snapshot shows its registrar registered, through the address in use.
    let views = mn1_registrars.borrow_and_update().clone();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].registrar.cse_id, "/id-in");
    assert_eq!(views[0].status, RegistrationStatus::Registered);
    assert_eq!(views[0].address.as_deref(), Some(in_cse.url.as_str()));
    assert_eq!(views[0].group.as_deref(), Some("default"));
}

#[tokio::test]
async fn a_second_cse_with_the_same_cse_id_leaves_the_registration_to_the_first_until_it_is_gone() {
    // Arrange: MN A registered; B, a clone with the same CSE-ID on another address.
    let in_cse = spawn_in().await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.cse.registration.unregister_when_stopping = false;
    let first = TestCse::start(settings.clone()).await;
    first.remote.check_now().await.expect("monitor runs");
    let twin = TestCse::start(settings).await;

    // Act: the twin's rounds, then the first's.
    twin.remote.check_now().await.expect("monitor runs");
    first.remote.check_now().await.expect("monitor runs");

    // Assert: the registration stays with the first; the twin says why it stays off.
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.body["m2m:csr"]["poa"], json!([first.url]), "{csr:?}");
    assert!(first.remote.is_registered());
    let status = twin.remote.statuses()[0].1.clone();
    let RegistrationStatus::Error(reason) = status else { panic!("the twin is not registered: {status:?}") };
    assert!(reason.contains("Two CSEs share one cse.cse_id") && reason.contains(&first.url), "{reason}");

    // When the first is gone (crashed: its CSR stays), the twin registers.
    first.shutdown().await;
    twin.remote.check_now().await.expect("monitor runs");
    assert!(twin.remote.is_registered());
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.body["m2m:csr"]["poa"], json!([twin.url]), "{csr:?}");
}

#[tokio::test]
async fn an_old_address_that_leads_back_to_the_same_cse_is_no_twin() {
    // Arrange: the IN's CSR for the MN names another address of the MN itself, and the
    // MN must register anew (its local CSR for the IN is gone).
    let in_cse = spawn_in().await;
    let mn = spawn_mn(&in_cse).await;
    mn.remote.check_now().await.expect("monitor runs");
    let alias = mn.url.replace("127.0.0.1", "localhost");
    let moved = in_cse.update("/cse-in/id-mn", "CAdmin", json!({"m2m:csr": {"poa": [alias]}})).await;
    assert_eq!(moved.rsc, 2004, "{moved:?}");
    assert_eq!(mn.delete("/cse-mn/id-in", "CAdmin").await.rsc, 2002);

    // Act
    mn.remote.check_now().await.expect("monitor runs");

    // Assert: registered again, with its own address.
    assert!(mn.remote.is_registered(), "{:?}", mn.remote.statuses());
    let csr = in_cse.retrieve("/cse-in/id-mn", "CAdmin").await;
    assert_eq!(csr.body["m2m:csr"]["poa"], json!([mn.url]), "{csr:?}");
}
