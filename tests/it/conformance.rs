//! Validation the reference CSE does, checked the same way here (where the reference is
//! wrong, the test says what is done instead).

use reqwest::Method;
use serde_json::json;

use crate::harness::{Reply, TestCse};

#[tokio::test]
async fn a_resource_type_in_the_content_type_belongs_to_a_create_only() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "owner").await;
    cse.create_container("/cse-in/owner", "Cowner", json!({"rn": "c"})).await;
    let with_ty = |method: Method| {
        cse.request(method, "/cse-in/owner/c", "Cowner").header("Content-Type", "application/json;ty=3")
    };
    // Act
    let update =
        Reply::from(with_ty(Method::PUT).body(json!({"m2m:cnt": {"lbl": ["x"]}}).to_string()).send().await).await;
    let retrieve = Reply::from(with_ty(Method::GET).send().await).await;
    let delete = Reply::from(with_ty(Method::DELETE).send().await).await;
    // Assert: before, the update was carried out with the ty silently ignored.
    for (what, reply) in [("UPDATE", &update), ("RETRIEVE", &retrieve), ("DELETE", &delete)] {
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{what}: {reply:?}");
        assert!(reply.dbg().contains("ty") && reply.dbg().contains(what), "{what}: {reply:?}");
    }
    assert_eq!(cse.retrieve("/cse-in/owner/c", "Cowner").await.body["m2m:cnt"]["lbl"], json!(null));
    cse.shutdown().await;
}

#[tokio::test]
async fn labels_are_tokens() {
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "owner").await;
    for labels in [json!([""]), json!(["a  b"]), json!(["a\tb"]), json!(["a\nb"]), json!(["a\rb"]), json!([])] {
        let reply = cse.create("/cse-in/owner", "Cowner", 3, json!({"m2m:cnt": {"lbl": labels}})).await;
        assert_eq!(reply.rsc, 4000, "{labels}: {reply:?}");
        assert!(reply.dbg().contains("lbl"), "{labels}: {reply:?}");
    }
    let reply = cse.create("/cse-in/owner", "Cowner", 3, json!({"m2m:cnt": {"lbl": ["key:value", "a b", " x"]}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn the_app_id_rules_follow_the_release_version() {
    let cse = TestCse::spawn(|_| {}).await;
    let register = |api: &str, rvi: &str, origin: &str| {
        let body = json!({"m2m:ae": {"api": api, "rr": false, "srv": ["3"]}});
        cse.raw(Method::POST, "/cse-in")
            .header("X-M2M-Origin", origin)
            .header("X-M2M-RI", "api")
            .header("X-M2M-RVI", rvi)
            .header("Content-Type", "application/json;ty=2")
            .body(body.to_string())
            .send()
    };
    for (index, (api, rvi, rsc, keyword)) in [
        ("Nx", "4", 2001, ""),
        ("R1.2.3", "5", 2001, ""),
        ("rlegacy", "3", 2001, ""),
        ("rlegacy", "2a", 2001, ""),
        ("rlegacy", "4", 4000, "lower-case r"),
        ("R1.2", "4", 4000, "three dot-separated parts"),
        ("N", "4", 4000, "two characters"),
        ("xabc", "4", 4000, "must start with N"),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = Reply::from(register(api, rvi, &format!("Capi{index}")).await).await;
        assert_eq!(reply.rsc, rsc, "{api} with rvi {rvi}: {reply:?}");
        assert!(reply.dbg().contains(keyword), "{api} with rvi {rvi}: {reply:?}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn an_update_without_attributes_is_a_bad_request() {
    // The reference refuses no body and `{}`, and takes `{"m2m:cnt": {}}` as an update of
    // nothing that still bumps `st` and `lt`; here that is refused too: it changes nothing.
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "owner").await;
    cse.create_container("/cse-in/owner", "Cowner", json!({"rn": "c"})).await;
    let before = cse.retrieve("/cse-in/owner/c", "Cowner").await.body;
    for body in ["", "{}", r#"{"m2m:cnt": {}}"#, "[]"] {
        let request = cse.request(Method::PUT, "/cse-in/owner/c", "Cowner").header("Content-Type", "application/json");
        let reply = Reply::from(request.body(body).send().await).await;
        assert_eq!(reply.rsc, 4000, "{body:?}: {reply:?}");
    }
    assert_eq!(cse.retrieve("/cse-in/owner/c", "Cowner").await.body, before, "nothing changed");
    cse.shutdown().await;
}
