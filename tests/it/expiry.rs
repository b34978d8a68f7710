//! Resource expiration: the background task removes resources whose `et` has passed.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestCse, eventually, registrar_settings};

#[tokio::test]
async fn expired_resources_are_removed_with_their_bookkeeping() {
    let mut settings = registrar_settings();
    settings.cse.expiration_check_interval = Duration::from_millis(50);
    let cse = TestCse::start(settings).await;
    cse.register_ae("Cexp", "ae").await;
    let reply = cse.create("/cse-in/ae", "Cexp", 3, json!({"m2m:cnt": {"rn": "cnt"}})).await;
    assert_eq!(reply.rsc, 2001);
    let soon = acme_cse::resource::Timestamp::now().saturating_add(Duration::from_millis(300)).to_string();
    let reply = cse.create("/cse-in/ae/cnt", "Cexp", 4, json!({"m2m:cin": {"con": "abc", "et": soon}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(cse.retrieve("/cse-in/ae/cnt", "Cexp").await.body["m2m:cnt"]["cni"], 1);

    eventually("the instance expired", Duration::from_secs(10), || async {
        cse.retrieve("/cse-in/ae/cnt/la", "Cexp").await.rsc == 4004
    })
    .await;
    let container = cse.retrieve("/cse-in/ae/cnt", "Cexp").await;
    assert_eq!(container.body["m2m:cnt"]["cni"], 0, "the container's counters follow");
    assert_eq!(container.body["m2m:cnt"]["cbs"], 0);

    // An expiring CSR deregisters its CSE.
    let soon = acme_cse::resource::Timestamp::now().saturating_add(Duration::from_millis(500)).to_string();
    let reply = cse
        .create(
            "/cse-in",
            "/id-mn",
            16,
            json!({"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"],
                   "poa": ["http://127.0.0.1:9"], "dcse": ["/id-asn"], "et": soon}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    eventually("the registry knows the CSR's descendant", Duration::from_secs(10), || async {
        cse.remote.csr_for("/id-asn").is_some()
    })
    .await;
    eventually("the CSR expired and its CSEs are forgotten", Duration::from_secs(10), || async {
        cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc == 4004 && cse.remote.csr_for("/id-asn").is_none()
    })
    .await;
    cse.shutdown().await;
}

#[tokio::test]
async fn an_expiration_time_in_the_past_is_rejected() {
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cpast", "ae").await;
    let reply = cse.create("/cse-in/ae", "Cpast", 3, json!({"m2m:cnt": {"et": "20000101T000000"}})).await;
    assert_eq!(reply.rsc, 4000);
    assert!(reply.dbg().contains("et"), "{reply:?}");
    cse.shutdown().await;
}
