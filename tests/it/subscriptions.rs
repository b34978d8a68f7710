//! Subscriptions and notifications: real receivers (HTTP servers on 127.0.0.1:0 inside
//! the test) record what the CSE sends them.

use std::time::Duration;

use acme_cse::config::CseKind;
use serde_json::{Value, json};

use crate::harness::{
    Proxy, Receiver, TestCse, black_hole, eventually, on_disk, registrar_settings, registree_settings, test_settings,
};

const DEADLINE: Duration = Duration::from_secs(15);

/// An IN with an AE `Cae` owning the container `/cse-in/ae/box`.
async fn in_with_container(configure: impl FnOnce(&mut acme_cse::config::Settings)) -> TestCse {
    let mut settings = test_settings();
    configure(&mut settings);
    let cse = TestCse::start(settings).await;
    cse.register_ae("Cae", "ae").await;
    cse.create_container("/cse-in/ae", "Cae", json!({"rn": "box"})).await;
    cse
}

/// On `cse`, the AE `Cae` reached at `receiver`, which CSE `notifier` may notify (its ACP
/// grants NOTIFY, acop 16).
async fn ae_notified_by(cse: &TestCse, receiver: &Receiver, notifier: &str) {
    cse.register_ae("Cae", "ae").await;
    let acp = json!({"m2m:acp": {"rn": "notifiers", "pv": {"acr": [{"acor": [notifier], "acop": 16}]},
        "pvs": {"acr": [{"acor": ["Cae"], "acop": 63}]}}});
    let reply = cse.create("/cse-in/ae", "Cae", 1, acp).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let acp_ri = reply.body["m2m:acp"]["ri"].as_str().expect("ri").to_string();
    assert_eq!(cse.update("/cse-in/ae", "Cae", json!({"m2m:ae": {"poa": [receiver.url]}})).await.rsc, 2004);
    assert_eq!(cse.update("/cse-in/ae", "Cae", json!({"m2m:ae": {"acpi": [acp_ri]}})).await.rsc, 2004);
}

async fn subscribe(cse: &TestCse, parent: &str, sub: Value) -> crate::harness::Reply {
    cse.create(parent, "Cae", 23, json!({ "m2m:sub": sub })).await
}

#[tokio::test]
async fn a_subscription_is_verified_then_notifies_new_children_with_the_whole_resource() {
    // Arrange
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;

    // Act
    let created = subscribe(
        &cse,
        "/cse-in/ae/box",
        json!({"rn": "s", "nu": [format!("{}/n/", receiver.url)], "enc": {"net": [1, 3]}}),
    )
    .await;
    cse.create_instance("/cse-in/ae/box", "Cae", json!("hello")).await;

    // Assert: the verification request first, naming the subscription and the subscriber.
    assert_eq!(created.rsc, 2001, "{created:?}");
    let sub = &created.body["m2m:sub"];
    let ri = sub["ri"].as_str().expect("ri").to_string();
    assert_eq!(sub["ty"], 23);
    assert_eq!(sub["nct"], 1);
    assert_eq!(sub["enc"]["net"], json!([1, 3]));
    assert_eq!(sub["nu"], json!([format!("{}/n", receiver.url)]), "the trailing / is dropped");
    assert!(sub.get("cr").is_none());
    let first = receiver.notifications()[0].clone();
    assert_eq!(first, json!({"vrq": true, "sur": format!("/id-in/{ri}"), "cr": "Cae"}));
    eventually("the CIN notification arrives", DEADLINE, || async { receiver.events().len() == 1 }).await;
    let event = &receiver.events()[0];
    assert_eq!(event["nev"]["net"], 3);
    assert_eq!(event["nev"]["rep"]["m2m:cin"]["con"], "hello");
    assert_eq!(event["nev"]["rep"]["m2m:cin"]["ty"], 4);
    assert_eq!(event["sur"], format!("/id-in/{ri}"));
    assert!(event.get("cr").is_none(), "no cr without cr or eeno");
    let (headers, path, _) = receiver.received.lock().expect("lock")[1].clone();
    assert_eq!(path, "/n");
    assert_eq!(headers.get("x-m2m-origin").and_then(|value| value.to_str().ok()), Some("/id-in"));
    // The subscription reads back; a stranger may not.
    assert_eq!(cse.retrieve("/cse-in/ae/box/s", "Cae").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/ae/box/s", "Cwrong").await.rsc, 4103);
}

#[tokio::test]
async fn a_target_that_fails_verification_leaves_nothing_stored() {
    let cse = in_with_container(|_| {}).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [dead]})).await;
    assert_eq!(reply.rsc, 5204, "{reply:?}");
    assert!(reply.dbg().contains("verification"), "{reply:?}");
    assert_eq!(cse.retrieve("/cse-in/ae/box/s", "Cae").await.rsc, 4004);
}

#[tokio::test]
async fn what_this_cse_does_not_serve_is_refused_with_a_reason() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let nu = json!([receiver.url]);
    for (sub, reason) in [
        (json!({"nu": nu, "enc": {"net": [9]}}), "blocking retrieve"),
        (json!({"nu": nu, "enc": {"net": [5]}}), "not served"),
        (json!({"nu": nu, "enc": {"net": [11]}}), "not an event type"),
        (json!({"nu": nu, "enc": {"om": [{"ops": 3}]}}), "operation monitoring"),
        (json!({"nu": nu, "enc": {"sza": 10}}), "enc.sza"),
        (json!({"nu": nu, "bn": {"num": 5, "dur": 60}}), "bn.dur"),
        (json!({"nu": nu, "bn": {"num": 5, "dur": "PT0.1S"}}), "at least a second"),
        (json!({"nu": nu, "ln": true}), "ln (latest notify) needs bn"),
        (json!({"nu": nu, "nct": 4}), "trigger payload"),
        (json!({"nu": nu, "nct": 2, "enc": {"net": [3]}}), "nct 2 does not go with enc.net 3"),
        (json!({"nu": nu, "enc": {"net": [1, 3], "chty": [2]}}), "chty 2"),
        (json!({"nu": []}), "nu"),
        (json!({"nu": nu, "exc": 0}), "exc"),
        (json!({"nu": nu, "cr": "Cwrong"}), "cr"),
    ] {
        let reply = subscribe(&cse, "/cse-in/ae/box", sub.clone()).await;
        assert_eq!(reply.rsc, 4000, "{sub}: {reply:?}");
        assert!(reply.dbg().contains(reason), "{sub}: {reply:?}");
    }
    cse.create_instance("/cse-in/ae/box", "Cae", json!("x")).await;
    let under_instance = cse.create("/cse-in/ae/box/la", "Cae", 23, json!({"m2m:sub": {"nu": nu}})).await;
    assert_eq!(under_instance.rsc, 4005, "{under_instance:?}");
    let instance = cse.retrieve("/cse-in/ae/box/la", "Cae").await.body["m2m:cin"]["rn"].clone();
    let under_cin =
        subscribe(&cse, &format!("/cse-in/ae/box/{}", instance.as_str().unwrap_or_default()), json!({"nu": nu})).await;
    assert_eq!(under_cin.rsc, 5203, "{under_cin:?}");
    assert_eq!(receiver.count(), 0, "nothing was verified for a refused subscription");
}

#[tokio::test]
async fn updates_notify_the_modified_attributes_as_filtered_and_shaped() {
    // Arrange: one subscription to lbl changes (modified attributes), one to every
    // update (resource ID only).
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let labels = subscribe(
        &cse,
        "/cse-in/ae/box",
        json!({"rn": "lbl", "nu": [receiver.url], "nct": 2, "enc": {"net": [1], "atr": ["lbl"]}}),
    )
    .await;
    let ids = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "ids", "nu": [receiver.url], "nct": 3, "cr": null})).await;
    assert_eq!((labels.rsc, ids.rsc), (2001, 2001), "{labels:?} {ids:?}");
    assert_eq!(ids.body["m2m:sub"]["cr"], "Cae");

    // Act
    assert_eq!(cse.update("/cse-in/ae/box", "Cae", json!({"m2m:cnt": {"mni": 5}})).await.rsc, 2004);
    assert_eq!(cse.update("/cse-in/ae/box", "Cae", json!({"m2m:cnt": {"lbl": ["a"]}})).await.rsc, 2004);

    // Assert: three notifications (ids twice, lbl once), each as asked.
    eventually("three notifications", DEADLINE, || async { receiver.events().len() == 3 }).await;
    let events = receiver.events();
    let by = |sub: &str| -> Vec<Value> {
        events.iter().filter(|event| event["sur"].as_str().is_some_and(|sur| sur.ends_with(sub))).cloned().collect()
    };
    let lbl_ri = labels.body["m2m:sub"]["ri"].as_str().expect("ri").to_string();
    let ids_ri = ids.body["m2m:sub"]["ri"].as_str().expect("ri").to_string();
    let lbl_events = by(&lbl_ri);
    assert_eq!(lbl_events.len(), 1, "{events:?}");
    let rep = &lbl_events[0]["nev"]["rep"]["m2m:cnt"];
    assert_eq!(rep["lbl"], json!(["a"]));
    assert!(rep.get("ty").is_none() && rep.get("mni").is_none(), "only what changed: {rep}");
    let id_events = by(&ids_ri);
    assert_eq!(id_events.len(), 2);
    assert!(id_events.iter().all(|event| event["nev"]["rep"]["m2m:uri"].is_string() && event["cr"] == "Cae"));
}

#[tokio::test]
async fn deleting_the_resource_notifies_its_deletion_and_the_subscription_says_goodbye() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let su = format!("{}/su", receiver.url);
    let reply =
        subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [receiver.url], "su": su, "enc": {"net": [2]}}))
            .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let parent =
        subscribe(&cse, "/cse-in/ae", json!({"rn": "p", "nu": [receiver.url], "enc": {"net": [4], "chty": [3]}})).await;
    assert_eq!(parent.rsc, 2001, "{parent:?}");

    assert_eq!(cse.delete("/cse-in/ae/box", "Cae").await.rsc, 2002);

    eventually("deletion, goodbye and child-deleted notifications", DEADLINE, || async { receiver.count() == 5 }).await;
    let sent = receiver.notifications();
    let kinds: Vec<Value> =
        sent[2..].iter().map(|sgn| sgn.get("sud").cloned().unwrap_or_else(|| sgn["nev"]["net"].clone())).collect();
    assert!(kinds.contains(&json!(2)) && kinds.contains(&json!(true)) && kinds.contains(&json!(4)), "{sent:?}");
    assert_eq!(cse.retrieve("/cse-in/ae/box/s", "Cae").await.rsc, 4004, "the subscription went with it");
}

#[tokio::test]
async fn the_expiration_counter_ends_a_subscription_after_its_events() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let reply =
        subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [receiver.url], "enc": {"net": [3]}, "exc": 2}))
            .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    cse.create_instance("/cse-in/ae/box", "Cae", json!("1")).await;
    assert_eq!(cse.retrieve("/cse-in/ae/box/s", "Cae").await.body["m2m:sub"]["exc"], 1);
    cse.create_instance("/cse-in/ae/box", "Cae", json!("2")).await;
    cse.create_instance("/cse-in/ae/box", "Cae", json!("3")).await;
    assert_eq!(cse.retrieve("/cse-in/ae/box/s", "Cae").await.rsc, 4004);
    eventually("everything sent", DEADLINE, || async {
        cse.cse.pending_notifications(&receiver.url).await.expect("outbox") == 0
    })
    .await;
    assert_eq!(receiver.events().len(), 2, "no third");
}

#[tokio::test]
async fn notifications_wait_for_a_target_that_is_down_and_arrive_all_in_order() {
    // Arrange: the receiver behind a proxy that can be switched off; retries at most a
    // second apart.
    let receiver = Receiver::start().await;
    let proxy = Proxy::start(receiver.addr).await;
    let cse = in_with_container(|settings| settings.resource.sub.max_retry_delay = Duration::from_secs(1)).await;
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [proxy.url], "enc": {"net": [3]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");

    // Act: the receiver goes away; 100 instances; it comes back.
    proxy.switch(false);
    for n in 0..100 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.switch(true);

    // Assert: all 100, in order, none twice.
    eventually("all 100 notifications", Duration::from_secs(30), || async { receiver.events().len() >= 100 }).await;
    let contents: Vec<String> = receiver
        .events()
        .iter()
        .map(|event| event["nev"]["rep"]["m2m:cin"]["con"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: Vec<String> = (0..100).map(|n: i32| n.to_string()).collect();
    assert_eq!(contents, expected);
}

#[tokio::test]
async fn pending_notifications_survive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let receiver = Receiver::start().await;
    let proxy = Proxy::start(receiver.addr).await;
    let settings = || {
        let mut settings = test_settings();
        on_disk(&mut settings, &dir.path().join("in.db"));
        settings.resource.sub.max_retry_delay = Duration::from_secs(1);
        settings
    };
    let cse = TestCse::start(settings()).await;
    cse.register_ae("Cae", "ae").await;
    cse.create_container("/cse-in/ae", "Cae", json!({"rn": "box"})).await;
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [proxy.url], "enc": {"net": [3]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    proxy.switch(false);
    for n in 0..10 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }
    cse.shutdown().await;

    // The CSE comes back; so does the receiver.
    let cse = TestCse::start(settings()).await;
    proxy.switch(true);
    eventually("the 10 pending notifications", Duration::from_secs(30), || async { receiver.events().len() >= 10 })
        .await;
    let contents: Vec<Value> =
        receiver.events().iter().map(|event| event["nev"]["rep"]["m2m:cin"]["con"].clone()).collect();
    assert_eq!(contents, (0..10).map(|n: i32| json!(n.to_string())).collect::<Vec<_>>());
    cse.shutdown().await;
}

#[tokio::test]
async fn an_application_subscribed_to_the_cse_base_sees_cses_register_and_go() {
    // Arrange: on the IN, an AE subscribed to CSR children of the CSEBase.
    let receiver = Receiver::start().await;
    let in_cse = TestCse::start(registrar_settings()).await;
    in_cse.register_ae("Cae", "ae").await;
    let reply = in_cse
        .create(
            "/cse-in",
            "CAdmin",
            23,
            json!({"m2m:sub": {"rn": "csrs", "nu": [receiver.url], "enc": {"net": [3, 4], "chty": [16]}}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");

    // Act: an MN registers, then stops (and deregisters).
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    mn.shutdown().await;

    // Assert
    eventually("registered and deregistered", DEADLINE, || async { receiver.events().len() == 2 }).await;
    let events = receiver.events();
    assert_eq!(events[0]["nev"]["net"], 3);
    assert_eq!(events[0]["nev"]["rep"]["m2m:csr"]["csi"], "/id-mn");
    assert_eq!(events[1]["nev"]["net"], 4);
    assert_eq!(events[1]["nev"]["rep"]["m2m:csr"]["csi"], "/id-mn");
}

#[tokio::test]
async fn a_notification_to_an_ae_goes_to_its_point_of_access() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let reply = cse.update("/cse-in/ae", "Cae", json!({"m2m:ae": {"poa": [receiver.url]}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": ["Cae"], "enc": {"net": [3]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(receiver.count(), 0, "no verification of the subscriber itself");

    cse.create_instance("/cse-in/ae/box", "Cae", json!("to the AE")).await;

    eventually("the AE gets it", DEADLINE, || async { receiver.events().len() == 1 }).await;
    let (headers, path, body) = receiver.received.lock().expect("lock")[0].clone();
    assert_eq!(path, "/Cae");
    assert_eq!(body["m2m:sgn"]["nev"]["rep"]["m2m:cin"]["con"], "to the AE");
    assert_eq!(headers.get("x-m2m-origin").and_then(|value| value.to_str().ok()), Some("/id-in"));
}

#[tokio::test]
async fn a_target_that_stays_away_keeps_only_its_newest_notifications() {
    let receiver = Receiver::start().await;
    let proxy = Proxy::start(receiver.addr).await;
    let cse = in_with_container(|settings| {
        settings.resource.sub.max_retry_delay = Duration::from_secs(1);
        settings.resource.sub.max_pending_per_target = 5;
    })
    .await;
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [proxy.url], "enc": {"net": [3]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    proxy.switch(false);
    for n in 0..10 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }
    // A failed attempt trims the queue to its bound.
    eventually("the queue is trimmed to five", DEADLINE, || async {
        cse.cse.pending_notifications(&proxy.url).await.expect("outbox") == 5
    })
    .await;
    proxy.switch(true);
    eventually("nothing left to send", DEADLINE, || async {
        cse.cse.pending_notifications(&proxy.url).await.expect("outbox") == 0
    })
    .await;
    let contents: Vec<Value> =
        receiver.events().iter().map(|event| event["nev"]["rep"]["m2m:cin"]["con"].clone()).collect();
    assert_eq!(contents, ["5", "6", "7", "8", "9"].map(|n| json!(n)).to_vec());
}

#[tokio::test]
async fn an_application_on_the_in_hears_of_a_container_on_an_mn() {
    // Arrange: an AE on the IN that lets the MN notify it (NOTIFY, acop 16).
    let receiver = Receiver::start().await;
    let in_cse = TestCse::start(registrar_settings()).await;
    ae_notified_by(&in_cse, &receiver, "/id-mn").await;
    // On the MN, a container the IN's AE may subscribe to (CREATE, acop 1).
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    let acp = json!({"m2m:acp": {"rn": "subscribers", "pv": {"acr": [{"acor": ["/id-in/Cae"], "acop": 1}]},
        "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}});
    let reply = mn.create("/cse-mn", "CAdmin", 1, acp).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let acp_ri = reply.body["m2m:acp"]["ri"].as_str().expect("ri").to_string();
    mn.create_container("/cse-mn", "CAdmin", json!({"rn": "box", "acpi": [acp_ri]})).await;

    // Act: the IN's AE subscribes, through the IN, to the MN's container, naming itself.
    let reply = in_cse
        .create(
            "/~/id-mn/cse-mn/box",
            "Cae",
            23,
            json!({"m2m:sub": {"rn": "s", "nu": ["/id-in/Cae"], "enc": {"net": [3]}}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    mn.create_instance("/cse-mn/box", "CAdmin", json!("from the MN")).await;

    // Assert: delivered through the IN to the AE's point of access, from the MN.
    eventually("the notification crosses to the IN's AE", DEADLINE, || async {
        receiver.events().iter().any(|event| event["nev"]["rep"]["m2m:cin"]["con"] == "from the MN")
    })
    .await;
    let (headers, path, _) = receiver.received.lock().expect("lock").last().cloned().expect("one");
    assert_eq!(path, "/~/id-in/Cae");
    assert_eq!(headers.get("x-m2m-origin").and_then(|value| value.to_str().ok()), Some("/id-mn"));
}

impl Receiver {
    /// The batches received (`m2m:agn`), each as its list of notifications, with the
    /// `X-M2M-EC` header.
    fn batches(&self) -> Vec<(Vec<Value>, Option<String>)> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(headers, _, body)| {
                let list = body.get("m2m:agn")?.get("m2m:sgn")?.as_array()?.clone();
                let ec = headers.get("x-m2m-ec").and_then(|value| value.to_str().ok()).map(str::to_string);
                Some((list, ec))
            })
            .collect()
    }
}

#[tokio::test]
async fn a_batch_goes_out_when_full_when_its_window_ends_or_when_it_is_deleted() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let nu = json!([receiver.url]);
    // Full after three: one aggregated notification, oldest first; the default window.
    let full =
        subscribe(&cse, "/cse-in/ae/box", json!({"rn": "full", "nu": nu, "enc": {"net": [3]}, "bn": {"num": 3}})).await;
    assert_eq!(full.rsc, 2001, "{full:?}");
    assert_eq!(full.body["m2m:sub"]["bn"], json!({"num": 3, "dur": "PT60S"}));
    for n in 0..3 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }
    eventually("one batch of three", DEADLINE, || async { receiver.batches().len() == 1 }).await;
    let (list, ec) = receiver.batches()[0].clone();
    let contents: Vec<Value> = list.iter().map(|sgn| sgn["nev"]["rep"]["m2m:cin"]["con"].clone()).collect();
    assert_eq!(contents, [json!("0"), json!("1"), json!("2")]);
    assert!(list.iter().all(|sgn| sgn["sur"].as_str().is_some_and(|sur| sur.starts_with("/id-in/sub"))));
    assert_eq!(ec, None);
    assert_eq!(cse.delete("/cse-in/ae/box/full", "Cae").await.rsc, 2002);

    // A window of a second, latest only: nothing at once, then the newest, marked latest.
    let latest = subscribe(
        &cse,
        "/cse-in/ae/box",
        json!({"rn": "latest", "nu": nu, "enc": {"net": [3]}, "bn": {"dur": "PT1S"}, "ln": true}),
    )
    .await;
    assert_eq!(latest.rsc, 2001, "{latest:?}");
    cse.create_instance("/cse-in/ae/box", "Cae", json!("a")).await;
    cse.create_instance("/cse-in/ae/box", "Cae", json!("b")).await;
    assert_eq!(cse.cse.pending_notifications(&receiver.url).await.expect("outbox"), 2, "held while the window is open");
    assert_eq!(receiver.batches().len(), 1, "the window is still open");
    eventually("the window closes", DEADLINE, || async { receiver.batches().len() == 2 }).await;
    let (list, ec) = receiver.batches()[1].clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["nev"]["rep"]["m2m:cin"]["con"], "b");
    assert_eq!(ec.as_deref(), Some("4"));
    assert_eq!(cse.delete("/cse-in/ae/box/latest", "Cae").await.rsc, 2002);

    // Deleted with one waiting: it goes out at once, with the deletion notification.
    let su = format!("{}/su", receiver.url);
    let flushed = subscribe(
        &cse,
        "/cse-in/ae/box",
        json!({"rn": "flushed", "nu": nu, "su": su, "enc": {"net": [3]}, "bn": {"num": 5}}),
    )
    .await;
    assert_eq!(flushed.rsc, 2001, "{flushed:?}");
    cse.create_instance("/cse-in/ae/box", "Cae", json!("last")).await;
    assert_eq!(cse.delete("/cse-in/ae/box/flushed", "Cae").await.rsc, 2002);
    // (Two targets, so in no particular order between them.)
    eventually("the batch of one and the goodbye", DEADLINE, || async {
        receiver.batches().len() == 3 && receiver.notifications().iter().any(|sgn| sgn["sud"] == true)
    })
    .await;
    assert_eq!(receiver.batches()[2].0[0]["nev"]["rep"]["m2m:cin"]["con"], "last");
}

#[tokio::test]
async fn statistics_count_events_requests_and_answers_per_target() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let reply =
        subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [receiver.url], "enc": {"net": [3]}, "nse": true}))
            .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert!(reply.body["m2m:sub"].get("nsi").is_none(), "nothing counted yet");
    cse.create_instance("/cse-in/ae/box", "Cae", json!("x")).await;
    let nsi = || async { cse.retrieve("/cse-in/ae/box/s", "Cae").await.body["m2m:sub"]["nsi"].clone() };
    eventually("one event, one request, one answer", DEADLINE, || async {
        nsi().await == json!([{"tg": receiver.url, "rqs": 1, "rsr": 1, "noec": 1}])
    })
    .await;
    // Switched off: kept, no longer counted; on again: afresh; removed: gone.
    assert_eq!(cse.update("/cse-in/ae/box/s", "Cae", json!({"m2m:sub": {"nse": false}})).await.rsc, 2004);
    cse.create_instance("/cse-in/ae/box", "Cae", json!("y")).await;
    eventually("the second notification", DEADLINE, || async { receiver.events().len() == 2 }).await;
    assert_eq!(nsi().await, json!([{"tg": receiver.url, "rqs": 1, "rsr": 1, "noec": 1}]));
    let on = cse.update("/cse-in/ae/box/s", "Cae", json!({"m2m:sub": {"nse": true}})).await;
    assert!(on.body["m2m:sub"].get("nsi").is_none(), "{on:?}");
    let off = cse.update("/cse-in/ae/box/s", "Cae", json!({"m2m:sub": {"nse": null}})).await;
    assert!(off.body["m2m:sub"].get("nse").is_none() && off.body["m2m:sub"].get("nsi").is_none(), "{off:?}");
}

#[tokio::test]
async fn a_blocking_update_asks_its_target_before_anything_changes() {
    let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(2000));
    let receiver = Receiver::start_answering(answer.clone()).await;
    let cse = in_with_container(|_| {}).await;
    let nu = json!([receiver.url]);
    for (sub, reason) in [
        (json!({"nu": nu, "enc": {"net": [7, 1]}}), "no other event"),
        (json!({"nu": [receiver.url, format!("{}/2", receiver.url)], "enc": {"net": [7]}}), "exactly one target"),
        (json!({"nu": nu, "enc": {"net": [7]}, "bn": {"num": 2}}), "takes no bn"),
        (json!({"nu": nu, "enc": {"net": [7]}, "nct": 1}), "nct 1 does not go with enc.net 7"),
    ] {
        let reply = subscribe(&cse, "/cse-in/ae/box", sub.clone()).await;
        assert_eq!(reply.rsc, 4000, "{sub}: {reply:?}");
        assert!(reply.dbg().contains(reason), "{sub}: {reply:?}");
    }
    let reply =
        subscribe(&cse, "/cse-in/ae/box", json!({"rn": "gate", "nu": nu, "enc": {"net": [7], "atr": ["lbl"]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.body["m2m:sub"]["nct"], 2);
    let second = subscribe(&cse, "/cse-in/ae/box", json!({"nu": nu, "enc": {"net": [7]}})).await;
    assert_eq!(second.rsc, 4000, "one per resource: {second:?}");
    let before = receiver.count();

    // Asked and agreed: applied; the target saw the request's content, from the updater.
    let reply = cse.update("/cse-in/ae/box", "Cae", json!({"m2m:cnt": {"lbl": ["ok"]}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    let (headers, _, body) = receiver.received.lock().expect("lock").last().cloned().expect("asked");
    assert_eq!(body["m2m:sgn"]["nev"], json!({"net": 7, "rep": {"m2m:cnt": {"lbl": ["ok"]}}}));
    assert_eq!(headers.get("x-m2m-origin").and_then(|value| value.to_str().ok()), Some("Cae"));
    // Not among its attributes: not asked.
    assert_eq!(cse.update("/cse-in/ae/box", "Cae", json!({"m2m:cnt": {"mni": 3}})).await.rsc, 2004);
    assert_eq!(receiver.count(), before + 1);
    // Refused by the target: 4127, nothing changed.
    answer.store(4005, std::sync::atomic::Ordering::SeqCst);
    let reply = cse.update("/cse-in/ae/box", "Cae", json!({"m2m:cnt": {"lbl": ["no"]}})).await;
    assert_eq!(reply.rsc, 4127, "{reply:?}");
    assert_eq!(cse.retrieve("/cse-in/ae/box", "Cae").await.body["m2m:cnt"]["lbl"], json!(["ok"]));
}

#[tokio::test]
async fn an_application_on_the_in_hears_of_a_container_two_hops_down() {
    // Arrange: IN ← MN ← ASN; an AE on the IN that lets the ASN notify it.
    let receiver = Receiver::start().await;
    let in_cse = TestCse::start(registrar_settings()).await;
    ae_notified_by(&in_cse, &receiver, "/id-asn").await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn))).await;
    asn.remote.check_now().await.expect("monitor runs");
    asn.create_container("/cse-asn", "CAdmin", json!({"rn": "box"})).await;
    // The ASN's admin subscribes the IN's AE (a target on another CSE, two hops up).
    let reply = asn
        .create(
            "/cse-asn/box",
            "CAdmin",
            23,
            json!({"m2m:sub": {"rn": "s", "nu": ["/id-in/Cae"], "enc": {"net": [3]}}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "verified through two hops: {reply:?}");

    // Act
    asn.create_instance("/cse-asn/box", "CAdmin", json!("from the ASN")).await;

    // Assert
    eventually("the notification climbs two hops", DEADLINE, || async {
        receiver.events().iter().any(|event| event["nev"]["rep"]["m2m:cin"]["con"] == "from the ASN")
    })
    .await;
    let (headers, _, _) = receiver.received.lock().expect("lock").last().cloned().expect("one");
    assert_eq!(headers.get("x-m2m-origin").and_then(|value| value.to_str().ok()), Some("/id-asn"));
}

#[tokio::test]
async fn a_dead_target_holds_up_no_other_target() {
    // Nothing listens at the dead target (so it is not verified: it could not be).
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let live = Receiver::start().await;
    let cse = in_with_container(|settings| settings.resource.sub.verify = false).await;
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "dead", "nu": [dead], "enc": {"net": [3]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "live", "nu": [live.url], "enc": {"net": [3]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    for n in 0..20 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }
    eventually("the live target has all 20", DEADLINE, || async { contents(&live).len() == 20 }).await;
}

#[tokio::test]
async fn a_target_that_never_answers_holds_up_no_other_target() {
    // The silent target takes connections and never answers: each send to it lasts the
    // whole client time-out, far longer than the test waits.
    let (silent_url, hold) = black_hole().await;
    let live = Receiver::start().await;
    let cse = in_with_container(|settings| {
        settings.resource.sub.verify = false;
        settings.http.client_timeout = Duration::from_secs(600);
    })
    .await;
    for (rn, target) in [("silent", &silent_url), ("live", &live.url)] {
        let reply = subscribe(&cse, "/cse-in/ae/box", json!({"rn": rn, "nu": [target], "enc": {"net": [3]}})).await;
        assert_eq!(reply.rsc, 2001, "{reply:?}");
    }

    for n in 0..20 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }

    eventually("the live target has all 20 while the silent one still holds its first", DEADLINE, || async {
        contents(&live).len() == 20
    })
    .await;
    let heard: Vec<String> = live.events().iter().filter_map(content_of).collect();
    let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    assert_eq!(heard, expected, "in order, once each");
    hold.abort();
}

/// The content of the instance a notification carries.
fn content_of(sgn: &Value) -> Option<String> {
    sgn["nev"]["rep"]["m2m:cin"]["con"].as_str().map(str::to_string)
}

/// The contents of the instances `receiver` heard of, each once (delivery is at least
/// once: a notification whose answer came too late for the sender is sent again).
fn contents(receiver: &Receiver) -> std::collections::BTreeSet<String> {
    receiver.events().iter().filter_map(content_of).collect()
}

#[tokio::test]
async fn url_targets_are_limited_to_the_allowed_hosts() {
    let receiver = Receiver::start().await;
    let cse =
        in_with_container(|settings| settings.resource.sub.allowed_target_hosts = vec!["127.0.0.0/8".into()]).await;
    let outside = subscribe(&cse, "/cse-in/ae/box", json!({"nu": ["http://10.1.2.3:8080/hook"]})).await;
    assert_eq!(outside.rsc, 4000, "{outside:?}");
    assert!(outside.dbg().contains("allowed_target_hosts"), "{outside:?}");
    let su_outside = subscribe(&cse, "/cse-in/ae/box", json!({"nu": [receiver.url], "su": "http://10.1.2.3/su"})).await;
    assert_eq!(su_outside.rsc, 4000, "{su_outside:?}");
    let inside = subscribe(&cse, "/cse-in/ae/box", json!({"rn": "s", "nu": [receiver.url]})).await;
    assert_eq!(inside.rsc, 2001, "{inside:?}");
    let moved = cse.update("/cse-in/ae/box/s", "Cae", json!({"m2m:sub": {"nu": ["http://10.1.2.3/x"]}})).await;
    assert_eq!(moved.rsc, 4000, "{moved:?}");
    assert_eq!(receiver.count(), 1, "only the allowed target was ever called (its verification)");
}

#[tokio::test]
async fn a_subscription_that_ends_is_an_event_for_the_others_on_the_same_resource() {
    let receiver = Receiver::start().await;
    let cse = in_with_container(|_| {}).await;
    let url = |path: &str| format!("{}/{path}", receiver.url);
    let last = subscribe(
        &cse,
        "/cse-in/ae/box",
        json!({"rn": "last", "nu": [url("last")], "enc": {"net": [3], "chty": [4]}, "exc": 1}),
    )
    .await;
    assert_eq!(last.rsc, 2001, "{last:?}");
    let watcher = subscribe(
        &cse,
        "/cse-in/ae/box",
        json!({"rn": "watcher", "nu": [url("watcher")], "enc": {"net": [3, 4], "chty": [4, 23]}, "exc": 5}),
    )
    .await;
    assert_eq!(watcher.rsc, 2001, "{watcher:?}");

    // A CIN: `last` is notified and ends; its deletion is an event for `watcher` too, which
    // so counts two events (the CIN and the deletion).
    cse.create_instance("/cse-in/ae/box", "Cae", json!("x")).await;

    assert_eq!(cse.retrieve("/cse-in/ae/box/last", "Cae").await.rsc, 4004);
    assert_eq!(cse.retrieve("/cse-in/ae/box/watcher", "Cae").await.body["m2m:sub"]["exc"], 3);
    eventually("the watcher hears that last went", DEADLINE, || async {
        receiver.received.lock().expect("lock").iter().any(|(_, path, body)| {
            path == "/watcher"
                && body["m2m:sgn"]["nev"]["net"] == 4
                && body["m2m:sgn"]["nev"]["rep"]["m2m:sub"]["rn"] == "last"
        })
    })
    .await;
}
