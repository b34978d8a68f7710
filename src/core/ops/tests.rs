//! The operations through [`Cse::handle`], without a binding: a real in-memory store, the
//! CSEBase made as at start, requests as a binding would hand them over.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::binding::http::{Client, tls};
use crate::bootstrap;
use crate::config::Settings;
use crate::core::Cse;
use crate::core::request::{Operation, Request, Response};
use crate::error::Rsc;
use crate::event::EventBus;
use crate::resource::Timestamp;
use crate::storage::Storage;

const ADMIN: &str = "CAdmin";

async fn cse() -> Cse {
    let mut settings = Settings::default();
    settings.database.in_memory = true;
    settings.http.listen = "127.0.0.1:0".into();
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    let config = settings.validate().expect("valid settings");
    let tls = tls::load(&config.http.tls).expect("no TLS files");
    let client = Client::new(&config.http, &tls);
    let storage = Storage::open(&config.database).expect("in-memory store");
    let cse = Cse::new(config, None, storage, EventBus::default(), Arc::new(client));
    bootstrap::ensure_cse_base(&cse, vec!["http://127.0.0.1:1".into()]).await.expect("CSEBase");
    cse
}

async fn send(cse: &Cse, op: Operation, to: &str, ty: Option<u64>, content: Option<Value>) -> Response {
    let mut request = Request::new(op, to, Some(ADMIN));
    request.ty = ty;
    request.content = content;
    cse.handle(request).await
}

async fn create(cse: &Cse, to: &str, ty: u64, content: Value) -> Response {
    send(cse, Operation::Create, to, Some(ty), Some(content)).await
}

async fn retrieve(cse: &Cse, to: &str) -> Response {
    send(cse, Operation::Retrieve, to, None, None).await
}

async fn update(cse: &Cse, to: &str, content: Value) -> Response {
    send(cse, Operation::Update, to, None, Some(content)).await
}

async fn delete(cse: &Cse, to: &str) -> Response {
    send(cse, Operation::Delete, to, None, None).await
}

/// `name` of the resource in a response.
fn attribute(response: &Response, wrapper: &str, name: &str) -> Value {
    response.content.as_ref().and_then(|content| content[wrapper].get(name)).cloned().unwrap_or(Value::Null)
}

async fn counters(cse: &Cse, container: &str) -> (Value, Value, Value) {
    let response = retrieve(cse, container).await;
    assert_eq!(response.rsc, Rsc::Ok, "{:?}", response.dbg());
    let get = |name| attribute(&response, "m2m:cnt", name);
    (get("cni"), get("cbs"), get("st"))
}

#[tokio::test]
async fn a_container_counts_its_instances_and_evicts_the_oldest_beyond_its_limits() {
    let cse = cse().await;
    assert_eq!(create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box", "mni": 2}})).await.rsc, Rsc::Created);
    for (name, con) in [("one", "a"), ("two", "bb"), ("three", "ccc")] {
        let created = create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": name, "con": con}})).await;
        assert_eq!(created.rsc, Rsc::Created, "{:?}", created.dbg());
        assert_eq!(attribute(&created, "m2m:cin", "cs"), json!(con.len()));
    }
    assert_eq!(counters(&cse, "cse-in/box").await, (json!(2), json!(5), json!(3)));
    assert_eq!(retrieve(&cse, "cse-in/box/one").await.rsc, Rsc::NotFound, "the oldest is evicted");
    assert_eq!(attribute(&retrieve(&cse, "cse-in/box/la").await, "m2m:cin", "rn"), json!("three"));
    assert_eq!(attribute(&retrieve(&cse, "cse-in/box/ol").await, "m2m:cin", "rn"), json!("two"));
}

#[tokio::test]
async fn a_failed_create_changes_nothing() {
    let cse = cse().await;
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box", "mbs": 4}})).await;
    let refused = create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"con": "too large"}})).await;
    assert_eq!(refused.rsc, Rsc::NotAcceptable);
    assert_eq!(counters(&cse, "cse-in/box").await, (json!(0), json!(0), json!(0)));
    let wrong = create(&cse, "cse-in/box", 2, json!({"m2m:ae": {"api": "Nx", "rr": false, "srv": ["4"]}})).await;
    assert_eq!(wrong.rsc, Rsc::InvalidChildResourceType);
}

#[tokio::test]
async fn deleting_an_instance_uncounts_it_and_la_deletes_the_newest() {
    let cse = cse().await;
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box"}})).await;
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "old", "con": "xy"}})).await;
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "new", "con": "xyz"}})).await;
    let deleted = delete(&cse, "cse-in/box/la").await;
    assert_eq!(deleted.rsc, Rsc::Deleted);
    assert_eq!(attribute(&deleted, "m2m:cin", "rn"), json!("new"), "la answers with the instance");
    assert_eq!(counters(&cse, "cse-in/box").await, (json!(1), json!(2), json!(2)));
    assert_eq!(delete(&cse, "cse-in/box/old").await.rsc, Rsc::Deleted);
    assert_eq!(counters(&cse, "cse-in/box").await, (json!(0), json!(0), json!(2)));
}

#[tokio::test]
async fn an_instance_with_a_delete_count_goes_after_that_many_reads() {
    let cse = cse().await;
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box"}})).await;
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "twice", "con": "x", "dcnt": 2}})).await;
    assert_eq!(attribute(&retrieve(&cse, "cse-in/box/twice").await, "m2m:cin", "dcnt"), json!(2));
    assert_eq!(attribute(&retrieve(&cse, "cse-in/box/twice").await, "m2m:cin", "dcnt"), json!(1));
    assert_eq!(retrieve(&cse, "cse-in/box/twice").await.rsc, Rsc::NotFound);
    assert_eq!(counters(&cse, "cse-in/box").await.0, json!(0));
}

#[tokio::test]
async fn a_container_update_counts_in_st_and_lowered_limits_evict() {
    let cse = cse().await;
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box"}})).await;
    for con in ["a", "b", "c"] {
        create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"con": con}})).await;
    }
    let updated = update(&cse, "cse-in/box", json!({"m2m:cnt": {"mni": 1}})).await;
    assert_eq!(updated.rsc, Rsc::Updated, "{:?}", updated.dbg());
    assert_eq!(counters(&cse, "cse-in/box").await, (json!(1), json!(1), json!(4)));
    assert_eq!(attribute(&retrieve(&cse, "cse-in/box/la").await, "m2m:cin", "con"), json!("c"));
}

#[tokio::test]
async fn disabled_retrieval_hides_instances_and_enabling_it_again_removes_them() {
    let cse = cse().await;
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box", "disr": true}})).await;
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "secret", "con": "x"}})).await;
    assert_eq!(retrieve(&cse, "cse-in/box/secret").await.rsc, Rsc::OperationNotAllowed);
    assert_eq!(delete(&cse, "cse-in/box/secret").await.rsc, Rsc::OperationNotAllowed);
    assert_eq!(update(&cse, "cse-in/box", json!({"m2m:cnt": {"disr": false}})).await.rsc, Rsc::Updated);
    assert_eq!(retrieve(&cse, "cse-in/box/secret").await.rsc, Rsc::NotFound);
    assert_eq!(counters(&cse, "cse-in/box").await.0, json!(0));
}

#[tokio::test]
async fn what_a_type_never_allows_is_refused_before_anything_else() {
    let cse = cse().await;
    let cb = json!({"m2m:cb": {}});
    assert_eq!(create(&cse, "cse-in", 5, cb.clone()).await.rsc, Rsc::OperationNotAllowed);
    assert_eq!(update(&cse, "cse-in", cb).await.rsc, Rsc::OperationNotAllowed);
    assert_eq!(delete(&cse, "cse-in").await.rsc, Rsc::OperationNotAllowed);
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box"}})).await;
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "fixed", "con": "x"}})).await;
    let changed = update(&cse, "cse-in/box/fixed", json!({"m2m:cin": {"con": "y"}})).await;
    assert_eq!(changed.rsc, Rsc::OperationNotAllowed);
    assert!(retrieve(&cse, "cse-in").await.content.is_some_and(|cb| cb["m2m:cb"]["ctm"].is_string()));
}

#[tokio::test]
async fn a_remote_cse_is_named_after_its_cse_id_and_registers_only_itself() {
    let cse = cse().await;
    let body = |extra: Value| {
        let mut csr = json!({"cb": "/id-mn/cse-mn", "rr": true, "srv": ["4"], "poa": ["http://127.0.0.1:2"]});
        if let (Some(csr), Value::Object(extra)) = (csr.as_object_mut(), extra) {
            csr.extend(extra);
        }
        json!({ "m2m:csr": csr })
    };
    let mut request = Request::new(Operation::Create, "cse-in", Some("/id-mn"));
    request.ty = Some(16);
    request.content = Some(body(json!({"rn": "elsewhere"})));
    assert_eq!(cse.handle(request.clone()).await.rsc, Rsc::BadRequest, "named after the CSE-ID");
    request.content = Some(body(json!({"csi": "/id-mn2"})));
    assert_eq!(cse.handle(request.clone()).await.rsc, Rsc::OriginatorHasNoPrivilege, "a CSE registers itself");
    request.content = Some(body(json!({})));
    let created = cse.handle(request).await;
    assert_eq!(created.rsc, Rsc::Created, "{:?}", created.dbg());
    assert_eq!(attribute(&created, "m2m:csr", "ri"), json!("id-mn"));
    assert_eq!(attribute(&created, "m2m:csr", "csi"), json!("/id-mn"));
    assert!(cse.registry().route("/id-mn").is_some(), "the commit reached the registry");
}

#[tokio::test]
async fn expired_instances_are_removed_and_their_container_counts_right() {
    let cse = cse().await;
    create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box"}})).await;
    let soon = Timestamp::now().saturating_add(Duration::from_millis(300)).to_string();
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "brief", "con": "xy", "et": soon}})).await;
    create(&cse, "cse-in/box", 4, json!({"m2m:cin": {"rn": "kept", "con": "x"}})).await;
    assert_eq!(cse.remove_expired().await.expect("sweep"), 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(cse.remove_expired().await.expect("sweep"), 1);
    assert_eq!(retrieve(&cse, "cse-in/box/brief").await.rsc, Rsc::NotFound);
    assert_eq!(counters(&cse, "cse-in/box").await.0, json!(1));
}

#[tokio::test]
async fn an_unreachable_registree_is_removed_only_if_its_csr_is_the_one_probed() {
    let cse = cse().await;
    let mut request = Request::new(Operation::Create, "cse-in", Some("/id-mn"));
    request.ty = Some(16);
    request.content =
        Some(json!({"m2m:csr": {"cb": "/id-mn/cse-mn", "rr": true, "srv": ["4"], "poa": ["http://127.0.0.1:2"]}}));
    assert_eq!(cse.handle(request).await.rsc, Rsc::Created);
    let probed = cse.stored("id-mn").await.expect("store").expect("the CSR");
    // It pushes an update while the probe is under way.
    let mut update = Request::new(Operation::Update, "cse-in/id-mn", Some("/id-mn"));
    update.content = Some(json!({"m2m:csr": {"dcse": []}}));
    assert_eq!(cse.handle(update).await.rsc, Rsc::Updated);
    assert!(!cse.delete_local_unchanged(&probed).await.expect("store"), "a changed CSR is kept");
    assert!(cse.registry().route("/id-mn").is_some());
    let current = cse.stored("id-mn").await.expect("store").expect("the CSR");
    assert!(cse.delete_local_unchanged(&current).await.expect("store"));
    assert!(cse.registry().route("/id-mn").is_none());
}

/// A RETRIEVE as the HTTP binding sends it: the answer may come as JSON text.
async fn retrieve_text(cse: &Cse, to: &str, originator: &str) -> Response {
    let mut request = Request::new(Operation::Retrieve, to, Some(originator));
    request.text_answer = true;
    cse.handle(request).await
}

fn text_of(response: &Response) -> Value {
    match (&response.text, &response.content) {
        (Some(text), _) => serde_json::from_slice(text).expect("the text is JSON"),
        (None, Some(content)) => content.clone(),
        (None, None) => Value::Null,
    }
}

#[tokio::test]
async fn a_text_answer_says_what_a_value_answer_says_follows_updates_and_is_decided_per_request() {
    let cse = cse().await;
    assert_eq!(create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "box", "lbl": ["a"]}})).await.rsc, Rsc::Created);
    // The first read holds the container, the next ones answer with its text.
    for _ in 0..3 {
        let answer = retrieve_text(&cse, "cse-in/box", ADMIN).await;
        assert_eq!(answer.rsc, Rsc::Ok);
        assert_eq!(text_of(&answer), retrieve(&cse, "cse-in/box").await.content.expect("content"));
    }
    assert!(retrieve_text(&cse, "cse-in/box", ADMIN).await.text.is_some(), "a held resource is answered with text");
    assert!(retrieve(&cse, "cse-in/box").await.text.is_none(), "only when the request allows it");
    assert_eq!(update(&cse, "cse-in/box", json!({"m2m:cnt": {"lbl": ["b"]}})).await.rsc, Rsc::Updated);
    assert_eq!(text_of(&retrieve_text(&cse, "cse-in/box", ADMIN).await)["m2m:cnt"]["lbl"], json!(["b"]));
    let refused = retrieve_text(&cse, "cse-in/box", "Cstranger").await;
    assert_eq!(refused.rsc, Rsc::OriginatorHasNoPrivilege, "the text held changes no access decision");
    assert!(refused.text.is_none());

    // The CSEBase says the time of reading in each answer (`ctm`), the rest as held.
    let before = Timestamp::now().to_string();
    for _ in 0..3 {
        let mut text = text_of(&retrieve_text(&cse, "cse-in", ADMIN).await);
        let mut value = retrieve(&cse, "cse-in").await.content.expect("content");
        let ctm = text["m2m:cb"]["ctm"].as_str().map(str::to_string).expect("ctm");
        assert!(Timestamp::parse(&ctm).is_some() && ctm >= before && ctm <= Timestamp::now().to_string(), "{ctm}");
        text["m2m:cb"]["ctm"] = Value::Null;
        value["m2m:cb"]["ctm"] = Value::Null;
        assert_eq!(text, value);
    }
}

#[tokio::test]
async fn a_resource_not_found_is_found_as_soon_as_it_is_created() {
    let cse = cse().await;
    for _ in 0..3 {
        assert_eq!(retrieve(&cse, "cse-in/late").await.rsc, Rsc::NotFound);
        assert_eq!(retrieve_text(&cse, "cse-in/late", ADMIN).await.rsc, Rsc::NotFound);
    }
    let created = create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "late"}})).await;
    assert_eq!(created.rsc, Rsc::Created);
    let ri = attribute(&created, "m2m:cnt", "ri").as_str().map(str::to_string).expect("ri");
    assert_eq!(retrieve(&cse, "cse-in/late").await.rsc, Rsc::Ok, "no absence outlives the creation");
    assert_eq!(retrieve_text(&cse, &ri, ADMIN).await.rsc, Rsc::Ok);
    assert_eq!(delete(&cse, "cse-in/late").await.rsc, Rsc::Deleted);
    assert_eq!(retrieve(&cse, "cse-in/late").await.rsc, Rsc::NotFound);
    assert_eq!(create(&cse, "cse-in", 3, json!({"m2m:cnt": {"rn": "late"}})).await.rsc, Rsc::Created);
    assert_eq!(retrieve_text(&cse, "cse-in/late", ADMIN).await.rsc, Rsc::Ok, "nor one of a name used again");
}
