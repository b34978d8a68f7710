//! The foundation: CRUD over HTTP, addressing, discovery, persistence, bad input.

use acme_cse::config::Settings;
use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::{Reply, TestCse, on_disk};

#[tokio::test]
async fn the_csebase_is_retrievable_by_every_addressing_form() {
    let cse = TestCse::spawn(|_| {}).await;
    for path in ["/cse-in", "/id-in", "/~/id-in/cse-in", "/~/id-in/-", "/_/acme.example.com/id-in/cse-in", "/-"] {
        let reply = cse.retrieve(path, "CAdmin").await;
        assert_eq!(reply.rsc, 2000, "{path}: {reply:?}");
        let cb = &reply.body["m2m:cb"];
        assert_eq!(cb["csi"], "/id-in");
        assert_eq!(cb["ri"], "id-in");
        assert_eq!(cb["pi"], "");
        assert_eq!(cb["ty"], 5);
        assert!(cb["ctm"].is_string());
        assert_eq!(cb["poa"][0], cse.url.as_str());
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_a_container_and_instances_round_trip() {
    let cse = TestCse::spawn(|_| {}).await;
    let ae = cse.register_ae("Cmyapp", "myAE").await;
    assert_eq!(ae["aei"], "Cmyapp");
    assert_eq!(ae["ri"], "Cmyapp");
    assert_eq!(ae["pi"], "id-in");

    let reply = cse.create("/cse-in/myAE", "Cmyapp", 3, json!({"m2m:cnt": {"rn": "cnt", "mni": 2}})).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.header("content-location"), Some("cse-in/myAE/cnt"));
    for value in ["a", "b", "c"] {
        let reply = cse.create("/cse-in/myAE/cnt", "Cmyapp", 4, json!({"m2m:cin": {"con": value}})).await;
        assert_eq!(reply.rsc, 2001, "{reply:?}");
    }
    let container = cse.retrieve("/cse-in/myAE/cnt", "Cmyapp").await;
    assert_eq!(container.body["m2m:cnt"]["cni"], 2, "mni evicts the oldest");
    assert_eq!(container.body["m2m:cnt"]["cbs"], 2);
    assert_eq!(container.body["m2m:cnt"]["st"], 3);
    assert_eq!(cse.retrieve("/cse-in/myAE/cnt/la", "Cmyapp").await.body["m2m:cin"]["con"], "c");
    assert_eq!(cse.retrieve("/cse-in/myAE/cnt/ol", "Cmyapp").await.body["m2m:cin"]["con"], "b");
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Shared fixtures
// -----------------------------------------------------------------------------------------

const ADMIN: &str = "CAdmin";

fn ae_body(rn: &str) -> Value {
    json!({"m2m:ae": {"rn": rn, "api": "Ntest", "rr": true, "srv": ["4"]}})
}

/// An AE `Cowner` named `ae` with a container `cnt` (with `attributes`); returns the
/// container's attributes.
async fn owner_with_container(cse: &TestCse, attributes: Value) -> Value {
    cse.register_ae("Cowner", "ae").await;
    let mut attributes = attributes;
    attributes["rn"] = json!("cnt");
    cse.create_container("/cse-in/ae", "Cowner", attributes).await
}

fn str_of<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name].as_str().unwrap_or_else(|| panic!("{name} is not a string in {value}"))
}

// -----------------------------------------------------------------------------------------
// AE
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn an_ae_registering_as_c_gets_an_assigned_ae_id_as_aei_and_ri() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let reply = cse.create("/cse-in", "C", 2, ae_body("app")).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (2001, 201), "{reply:?}");
    let ae = &reply.body["m2m:ae"];
    let aei = str_of(ae, "aei");
    assert!(aei.starts_with('C') && aei.len() > 1, "aei {aei}");
    assert_eq!(ae["ri"], aei);
    assert_eq!(ae["rn"], "app");
    assert_eq!(ae["pi"], "id-in");
    assert_eq!(ae["ty"], 2);
    assert_eq!(ae["api"], "Ntest");
    assert_eq!(ae["rr"], true);
    assert_eq!(ae["srv"], json!(["4"]));
    assert!(str_of(ae, "ct") <= str_of(ae, "lt"));
    assert!(str_of(ae, "ct") < str_of(ae, "et"));
    assert!(ae.get("st").is_none());
    let stored = cse.retrieve("/cse-in/app", aei).await;
    assert_eq!(stored.rsc, 2000, "{stored:?}");
    assert_eq!(stored.body, reply.body);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_registering_with_its_own_ae_id_keeps_it() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let reply = cse.create("/cse-in", "Cxyz", 2, ae_body("xyz")).await;
    // Assert
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.body["m2m:ae"]["aei"], "Cxyz");
    assert_eq!(reply.body["m2m:ae"]["ri"], "Cxyz");
    let by_ri = cse.retrieve("/Cxyz", "Cxyz").await;
    assert_eq!(by_ri.rsc, 2000, "{by_ri:?}");
    assert_eq!(by_ri.body["m2m:ae"]["rn"], "xyz");
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_registering_as_s_gets_an_s_ae_id_and_a_generated_name() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let reply = cse.create("/cse-in", "S", 2, json!({"m2m:ae": {"api": "Ntest", "rr": false, "srv": ["3"]}})).await;
    // Assert
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    let ae = &reply.body["m2m:ae"];
    let aei = str_of(ae, "aei");
    assert!(aei.starts_with('S') && aei.len() > 1, "aei {aei}");
    let rn = str_of(ae, "rn");
    assert!(rn.starts_with("ae_") && rn != aei, "rn {rn}");
    let stored = cse.retrieve(&format!("/cse-in/{rn}"), aei).await;
    assert_eq!(stored.body, reply.body);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_registration_from_a_disallowed_originator_needs_a_security_association() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let reply = cse.create("/cse-in", "Xapp", 2, ae_body("xapp")).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4107, 403), "{reply:?}");
    assert!(reply.dbg().contains("Xapp"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/xapp", ADMIN).await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_with_an_invalid_app_id_or_serialization_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let cases = [
        (json!({"api": "Xapp"}), "api"),
        (json!({"api": "N"}), "api"),
        (json!({"api": "Rabc"}), "api"),
        (json!({"api": "rabc.com.example"}), "api"),
        (json!({"csz": ["text/plain"]}), "csz"),
        (json!({"poa": []}), "poa"),
        (json!({"cr": null}), "cr"),
    ];
    for (change, keyword) in cases {
        let mut body = ae_body("invalid");
        for (name, value) in change.as_object().expect("object") {
            body["m2m:ae"][name] = value.clone();
        }
        // Act
        let reply = cse.create("/cse-in", "Cinvalid", 2, body).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{change}: {reply:?}");
        assert!(reply.dbg().contains(keyword), "{change}: {}", reply.dbg());
        assert_eq!(cse.retrieve("/Cinvalid", ADMIN).await.rsc, 4004);
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_without_api_rr_or_srv_is_rejected_and_not_stored() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    for missing in ["api", "rr", "srv"] {
        let mut body = ae_body("incomplete");
        body["m2m:ae"].as_object_mut().expect("object").remove(missing);
        // Act
        let reply = cse.create("/cse-in", "Cincomplete", 2, body).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{missing}: {reply:?}");
        assert!(reply.dbg().contains(missing), "{missing}: {}", reply.dbg());
        assert_eq!(cse.retrieve("/cse-in/incomplete", ADMIN).await.rsc, 4004);
        assert_eq!(cse.retrieve("/Cincomplete", ADMIN).await.rsc, 4004);
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_cannot_be_created_under_another_ae() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cparent", "parent").await;
    // Act
    let reply = cse.create("/cse-in/parent", "Cchild", 2, ae_body("child")).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4108, 403), "{reply:?}");
    assert!(!reply.dbg().is_empty());
    assert_eq!(cse.retrieve("/cse-in/parent/child", ADMIN).await.rsc, 4004);
    assert_eq!(cse.retrieve("/Cchild", ADMIN).await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn registering_an_ae_id_that_is_already_registered_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let first = cse.register_ae("Cdup", "first").await;
    // Act
    let reply = cse.create("/cse-in", "Cdup", 2, ae_body("second")).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4117, 403), "{reply:?}");
    assert!(reply.dbg().contains("Cdup"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/second", ADMIN).await.rsc, 4004);
    let stored = cse.retrieve("/Cdup", "Cdup").await;
    assert_eq!(stored.body["m2m:ae"], first);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_with_a_name_already_taken_is_a_conflict() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cone", "app").await;
    // Act
    let reply = cse.create("/cse-in", "Ctwo", 2, ae_body("app")).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4105, 409), "{reply:?}");
    assert!(reply.dbg().contains("app"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/Ctwo", ADMIN).await.rsc, 4004);
    assert_eq!(cse.retrieve("/cse-in/app", ADMIN).await.body["m2m:ae"]["aei"], "Cone");
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_is_updated_and_deleted_with_its_children() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let container = owner_with_container(&cse, json!({})).await;
    let before = cse.retrieve("/cse-in/ae", "Cowner").await.body["m2m:ae"].clone();
    // Act
    let updated = cse.update("/cse-in/ae", "Cowner", json!({"m2m:ae": {"lbl": ["blue"], "rr": false}})).await;
    // Assert
    assert_eq!((updated.rsc, updated.status), (2004, 200), "{updated:?}");
    let ae = &updated.body["m2m:ae"];
    assert_eq!(ae["lbl"], json!(["blue"]));
    assert_eq!(ae["rr"], false);
    assert_eq!(ae["ct"], before["ct"]);
    assert!(str_of(ae, "lt") >= str_of(&before, "lt"));
    assert_eq!(cse.retrieve("/cse-in/ae", "Cowner").await.body["m2m:ae"], *ae);
    // Act
    let deleted = cse.delete("/cse-in/ae", "Cowner").await;
    // Assert
    assert_eq!((deleted.rsc, deleted.status), (2002, 200), "{deleted:?}");
    assert_eq!(deleted.body, Value::Null);
    assert_eq!(cse.retrieve("/cse-in/ae", "Cowner").await.rsc, 4004);
    let child = format!("/{}", str_of(&container, "ri"));
    assert_eq!(cse.retrieve(&child, "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Container
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_container_starts_empty_and_every_update_increments_its_state_tag() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let created = cse.create("/cse-in/ae", "Cowner", 3, json!({"m2m:cnt": {"rn": "cnt", "cr": null}})).await;
    // Assert
    assert_eq!(created.rsc, 2001, "{created:?}");
    let cnt = &created.body["m2m:cnt"];
    assert!(str_of(cnt, "ri").starts_with("cnt"));
    assert_eq!(cnt["pi"], "Cowner");
    assert_eq!(cnt["ty"], 3);
    assert_eq!(cnt["cr"], "Cowner");
    assert_eq!((cnt["cni"].clone(), cnt["cbs"].clone()), (json!(0), json!(0)));
    assert_eq!(cnt["st"], 0);
    for (round, change) in [json!({"mni": 5}), json!({"lbl": ["x"]})].into_iter().enumerate() {
        // Act
        let reply = cse.update("/cse-in/ae/cnt", "Cowner", json!({ "m2m:cnt": change })).await;
        // Assert
        assert_eq!(reply.rsc, 2004, "{reply:?}");
        assert_eq!(reply.body["m2m:cnt"]["st"], round + 1);
    }
    let stored = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!(stored["st"], 2);
    assert_eq!(stored["mni"], 5);
    assert_eq!(stored["lbl"], json!(["x"]));
    let deleted = cse.delete("/cse-in/ae/cnt", "Cowner").await;
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    assert_eq!(cse.retrieve("/cse-in/ae/cnt", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_container_over_its_mbs_deletes_the_oldest_instances() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({"mbs": 10})).await;
    // Act
    for con in ["aaaa", "bbbb", "cccc"] {
        cse.create_instance("/cse-in/ae/cnt", "Cowner", json!(con)).await;
    }
    // Assert
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!(cnt["cni"], 2);
    assert_eq!(cnt["cbs"], 8);
    let oldest = cse.retrieve("/cse-in/ae/cnt/ol", "Cowner").await;
    assert_eq!(oldest.body["m2m:cin"]["con"], "bbbb");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_container_over_its_mni_after_an_update_deletes_the_oldest_instances() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    for con in ["a", "b", "c"] {
        cse.create_instance("/cse-in/ae/cnt", "Cowner", json!(con)).await;
    }
    // Act
    let reply = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": {"mni": 1}})).await;
    // Assert
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    assert_eq!(reply.body["m2m:cnt"]["cni"], 1);
    assert_eq!(reply.body["m2m:cnt"]["cbs"], 1);
    let oldest = cse.retrieve("/cse-in/ae/cnt/ol", "Cowner").await;
    assert_eq!(oldest.body["m2m:cin"]["con"], "c");
    cse.shutdown().await;
}

#[tokio::test]
async fn an_instance_bigger_than_mbs_is_not_acceptable_and_not_stored() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({"mbs": 5})).await;
    // Act
    let reply = cse.create("/cse-in/ae/cnt", "Cowner", 4, json!({"m2m:cin": {"con": "123456"}})).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (5207, 406), "{reply:?}");
    assert!(reply.dbg().contains("mbs"), "{}", reply.dbg());
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!((cnt["cni"].clone(), cnt["cbs"].clone()), (json!(0), json!(0)));
    assert_eq!(cnt["st"], 0);
    assert_eq!(cse.retrieve("/cse-in/ae/cnt/la", "Cowner").await.rsc, 4004);
    // An instance of exactly mbs bytes fits.
    let exact = cse.create("/cse-in/ae/cnt", "Cowner", 4, json!({"m2m:cin": {"con": "12345"}})).await;
    assert_eq!(exact.rsc, 2001, "{exact:?}");
    cse.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instance_creations_keep_the_container_counters_exact() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let mut requests = tokio::task::JoinSet::new();
    for index in 0..20 {
        let request = cse
            .request(Method::POST, "/cse-in/ae/cnt", "Cowner")
            .header("Content-Type", "application/json;ty=4")
            .body(json!({"m2m:cin": {"con": format!("v{index:02}")}}).to_string());
        // Act
        requests.spawn(async move { Reply::from(request.send().await).await });
    }
    // Assert
    while let Some(reply) = requests.join_next().await {
        let reply = reply.expect("request task");
        assert_eq!(reply.rsc, 2001, "{reply:?}");
    }
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!(cnt["cni"], 20);
    assert_eq!(cnt["cbs"], 60);
    assert_eq!(cnt["st"], 20);
    let instances = cse.retrieve("/cse-in/ae/cnt?fu=1&ty=4", "Cowner").await;
    assert_eq!(instances.uril().len(), 20);
    cse.shutdown().await;
}

#[tokio::test]
async fn deleting_an_instance_decrements_count_and_size_but_not_the_state_tag() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let first = cse.create_instance("/cse-in/ae/cnt", "Cowner", json!("ab")).await;
    cse.create_instance("/cse-in/ae/cnt", "Cowner", json!("cde")).await;
    let before = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!((before["cni"].clone(), before["cbs"].clone()), (json!(2), json!(5)));
    // Act
    let reply = cse.delete(&format!("/{}", str_of(&first, "ri")), "Cowner").await;
    // Assert
    assert_eq!(reply.rsc, 2002, "{reply:?}");
    let after = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!((after["cni"].clone(), after["cbs"].clone()), (json!(1), json!(3)));
    assert_eq!(after["st"], before["st"]);
    cse.shutdown().await;
}

#[tokio::test]
async fn while_retrieval_is_disabled_instances_cannot_be_read_and_re_enabling_deletes_them() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let instance = cse.create_instance("/cse-in/ae/cnt", "Cowner", json!("secret")).await;
    let instance_path = format!("/{}", str_of(&instance, "ri"));
    // Act
    let disabled = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": {"disr": true}})).await;
    // Assert
    assert_eq!(disabled.rsc, 2004, "{disabled:?}");
    for path in [instance_path.as_str(), "/cse-in/ae/cnt/la", "/cse-in/ae/cnt/ol"] {
        let reply = cse.retrieve(path, "Cowner").await;
        assert_eq!((reply.rsc, reply.status), (4005, 405), "{path}: {reply:?}");
        assert!(reply.dbg().contains("disr"), "{}", reply.dbg());
    }
    let delete = cse.delete(&instance_path, "Cowner").await;
    assert_eq!(delete.rsc, 4005, "{delete:?}");
    let with_children = cse.retrieve("/cse-in/ae/cnt?rcn=4", "Cowner").await;
    assert!(with_children.body["m2m:cnt"].get("m2m:cin").is_none());
    assert_eq!(with_children.body["m2m:cnt"]["cni"], 1);
    // Act
    let enabled = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": {"disr": false}})).await;
    // Assert
    assert_eq!(enabled.rsc, 2004, "{enabled:?}");
    assert_eq!(enabled.body["m2m:cnt"]["cni"], 0);
    assert_eq!(enabled.body["m2m:cnt"]["cbs"], 0);
    assert_eq!(cse.retrieve(&instance_path, "Cowner").await.rsc, 4004);
    assert_eq!(cse.retrieve("/cse-in/ae/cnt/la", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Content instance
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_content_instance_records_its_container_state_and_cannot_be_updated() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let container = owner_with_container(&cse, json!({})).await;
    let created = cse
        .create(
            "/cse-in/ae/cnt",
            "Cowner",
            4,
            json!({"m2m:cin": {"rn": "first", "con": "hello", "cnf": "text/plain:0"}}),
        )
        .await;
    assert_eq!(created.rsc, 2001, "{created:?}");
    let cin = &created.body["m2m:cin"];
    assert!(str_of(cin, "ri").starts_with("cin"));
    assert_eq!(cin["pi"], container["ri"]);
    assert_eq!(cin["ty"], 4);
    assert_eq!(cin["cs"], 5);
    assert_eq!(cin["st"], 1);
    // Act
    let reply = cse.update("/cse-in/ae/cnt/first", "Cowner", json!({"m2m:cin": {"con": "changed"}})).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4005, 405), "{reply:?}");
    assert!(reply.dbg().contains("contentInstance"), "{}", reply.dbg());
    let stored = cse.retrieve("/cse-in/ae/cnt/first", "Cowner").await;
    assert_eq!(stored.body, created.body);
    cse.shutdown().await;
}

#[tokio::test]
async fn latest_and_oldest_retrieve_and_delete_the_newest_and_oldest_instance() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    for con in ["a", "b", "c"] {
        cse.create_instance("/cse-in/ae/cnt", "Cowner", json!(con)).await;
    }
    // Act + Assert
    let latest = cse.retrieve("/cse-in/ae/cnt/la", "Cowner").await;
    assert_eq!(latest.rsc, 2000, "{latest:?}");
    assert_eq!(latest.body["m2m:cin"]["con"], "c");
    let oldest = cse.retrieve("/cse-in/ae/cnt/ol", "Cowner").await;
    assert_eq!(oldest.body["m2m:cin"]["con"], "a");

    let deleted = cse.delete("/cse-in/ae/cnt/la", "Cowner").await;
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    assert_eq!(deleted.body["m2m:cin"], latest.body["m2m:cin"]);
    let deleted = cse.delete("/cse-in/ae/cnt/ol?rcn=0", "Cowner").await;
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    assert_eq!(deleted.body["m2m:cin"], oldest.body["m2m:cin"]);

    let remaining = cse.retrieve("/cse-in/ae/cnt/la", "Cowner").await;
    assert_eq!(remaining.body["m2m:cin"]["con"], "b");
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!((cnt["cni"].clone(), cnt["cbs"].clone()), (json!(1), json!(1)));
    cse.shutdown().await;
}

#[tokio::test]
async fn latest_and_oldest_of_an_empty_container_are_not_found() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    // Act + Assert
    for path in ["/cse-in/ae/cnt/la", "/cse-in/ae/cnt/ol"] {
        let retrieved = cse.retrieve(path, "Cowner").await;
        assert_eq!((retrieved.rsc, retrieved.status), (4004, 404), "{retrieved:?}");
        assert!(retrieved.dbg().contains("no content instances"), "{}", retrieved.dbg());
        let deleted = cse.delete(path, "Cowner").await;
        assert_eq!(deleted.rsc, 4004, "{deleted:?}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn latest_and_oldest_cannot_be_created_or_updated() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    cse.create_instance("/cse-in/ae/cnt", "Cowner", json!("a")).await;
    // Act
    let created = cse.create("/cse-in/ae/cnt/la", "Cowner", 4, json!({"m2m:cin": {"con": "x"}})).await;
    let updated = cse.update("/cse-in/ae/cnt/la", "Cowner", json!({"m2m:cin": {"con": "x"}})).await;
    // Assert
    assert_eq!(created.rsc, 4005, "{created:?}");
    assert_eq!(updated.rsc, 4005, "{updated:?}");
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!(cnt["cni"], 1);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_content_instance_cannot_be_created_under_an_ae() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let reply = cse.create("/cse-in/ae", "Cowner", 4, json!({"m2m:cin": {"rn": "stray", "con": "x"}})).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4108, 403), "{reply:?}");
    assert!(reply.dbg().contains("m2m:cin"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/stray", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn the_content_size_is_counted_like_the_reference_cse() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let cases = [
        (json!("héllo€"), 6),
        (json!({"a": "xy", "b": [1, 2.5, true]}), 18),
        (json!(42), 4),
        (json!(1.5), 8),
        (json!(true), 4),
        (json!([]), 0),
    ];
    let mut total = 0;
    for (con, size) in cases {
        // Act
        let cin = cse.create_instance("/cse-in/ae/cnt", "Cowner", con.clone()).await;
        // Assert
        assert_eq!(cin["cs"], size, "cs of {con}");
        assert_eq!(cin["con"], con);
        total += size;
    }
    let without_content = cse.create("/cse-in/ae/cnt", "Cowner", 4, json!({"m2m:cin": {}})).await;
    assert_eq!(without_content.body["m2m:cin"]["cs"], 0, "{without_content:?}");
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!(cnt["cbs"], total);
    assert_eq!(cnt["cni"], 7);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_instance_with_a_deletion_count_is_deleted_by_its_last_allowed_retrieve() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let created =
        cse.create("/cse-in/ae/cnt", "Cowner", 4, json!({"m2m:cin": {"rn": "once", "con": "x", "dcnt": 5}})).await;
    assert_eq!(created.body["m2m:cin"]["dcnt"], 5, "{created:?}");
    // Act + Assert
    for shown in (1..=5).rev() {
        let reply = cse.retrieve("/cse-in/ae/cnt/once", "Cowner").await;
        assert_eq!(reply.rsc, 2000, "{reply:?}");
        assert_eq!(reply.body["m2m:cin"]["dcnt"], shown);
    }
    let gone = cse.retrieve("/cse-in/ae/cnt/once", "Cowner").await;
    assert_eq!(gone.rsc, 4004, "{gone:?}");
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!((cnt["cni"].clone(), cnt["cbs"].clone()), (json!(0), json!(0)));
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// remoteCSE (local CRUD only)
// -----------------------------------------------------------------------------------------

fn allow_id_mn(settings: &mut Settings) {
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn".into()];
}

fn csr_body() -> Value {
    json!({"m2m:csr": {
        "csi": "/id-mn",
        "cb": "/id-mn/cse-mn",
        "rr": true,
        "cst": 2,
        "csz": ["application/json"],
        "srv": ["2a", "3", "4", "5"],
        "poa": ["http://127.0.0.1:9"],
        "spi": "//acme.example.com",
        "dcse": []
    }})
}

#[tokio::test]
async fn an_allowed_cse_registers_with_a_csr_named_after_its_cse_id() {
    // Arrange
    let cse = TestCse::spawn(allow_id_mn).await;
    // Act
    let reply = cse.create("/cse-in", "/id-mn", 16, csr_body()).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (2001, 201), "{reply:?}");
    let csr = &reply.body["m2m:csr"];
    assert_eq!(csr["ri"], "id-mn");
    assert_eq!(csr["rn"], "id-mn");
    assert_eq!(csr["csi"], "/id-mn");
    assert_eq!(csr["cb"], "/id-mn/cse-mn");
    assert_eq!(csr["pi"], "id-in");
    assert_eq!(csr["ty"], 16);
    assert!(csr["et"].is_string());
    let stored = cse.retrieve("/cse-in/id-mn", "/id-mn").await;
    assert_eq!(stored.rsc, 2000, "{stored:?}");
    assert_eq!(stored.body, reply.body);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_csr_accepts_a_dcse_update_but_not_a_csi_update_and_can_be_deleted() {
    // Arrange
    let cse = TestCse::spawn(allow_id_mn).await;
    let created = cse.create("/cse-in", "/id-mn", 16, csr_body()).await;
    assert_eq!(created.rsc, 2001, "{created:?}");
    // Act
    let dcse = cse.update("/cse-in/id-mn", "/id-mn", json!({"m2m:csr": {"dcse": ["/id-asn"]}})).await;
    let csi = cse.update("/cse-in/id-mn", "/id-mn", json!({"m2m:csr": {"csi": "/id-other"}})).await;
    // Assert
    assert_eq!(dcse.rsc, 2004, "{dcse:?}");
    assert_eq!(dcse.body["m2m:csr"]["dcse"], json!(["/id-asn"]));
    assert_eq!((csi.rsc, csi.status), (4000, 400), "{csi:?}");
    assert!(csi.dbg().contains("csi"), "{}", csi.dbg());
    let stored = cse.retrieve("/cse-in/id-mn", "/id-mn").await;
    assert_eq!(stored.body, dcse.body);
    // Act
    let deleted = cse.delete("/cse-in/id-mn", "/id-mn").await;
    // Assert
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    assert_eq!(cse.retrieve("/cse-in/id-mn", "/id-mn").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_cse_not_in_the_allowed_originators_cannot_register() {
    // Arrange
    let cse = TestCse::spawn(allow_id_mn).await;
    let mut body = csr_body();
    body["m2m:csr"]["csi"] = json!("/id-other");
    // Act
    let reply = cse.create("/cse-in", "/id-other", 16, body).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4103, 403), "{reply:?}");
    assert!(reply.dbg().contains("/id-other"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/id-other", ADMIN).await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_id_cannot_register_as_a_cse() {
    // Arrange: "/id-mn/*" lets the SP-relative AE-ID pass the originator check.
    let cse = TestCse::spawn(|settings| {
        settings.cse.registration.allowed_csr_originators = vec!["/id-mn".into(), "/id-mn/*".into()];
    })
    .await;
    // Act
    let plain = cse.create("/cse-in", "Cae", 16, csr_body()).await;
    let sp_relative = cse.create("/cse-in", "/id-mn/Cae", 16, csr_body()).await;
    // Assert (an AE of the MN that registers through the MN gets 4005: see forwarding.rs)
    assert_eq!(plain.rsc, 4103, "not an allowed originator at all: {plain:?}");
    assert_eq!(sp_relative.rsc, 4103, "an AE of the MN, but not sent by the MN: {sp_relative:?}");
    for path in ["/cse-in/id-mn", "/Cae", "/id-mn_Cae"] {
        assert_eq!(cse.retrieve(path, ADMIN).await.rsc, 4004, "{path}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_csr_needs_a_cse_base_address_with_a_leading_slash() {
    // Arrange
    let cse = TestCse::spawn(allow_id_mn).await;
    let mut missing = csr_body();
    missing["m2m:csr"].as_object_mut().expect("object").remove("cb");
    let mut relative = csr_body();
    relative["m2m:csr"]["cb"] = json!("id-mn/cse-mn");
    for body in [missing, relative] {
        // Act
        let reply = cse.create("/cse-in", "/id-mn", 16, body.clone()).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{body}: {reply:?}");
        assert!(reply.dbg().contains("cb"), "{}", reply.dbg());
        assert_eq!(cse.retrieve("/cse-in/id-mn", ADMIN).await.rsc, 4004);
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn registering_the_same_cse_twice_is_a_conflict() {
    // Arrange
    let cse = TestCse::spawn(allow_id_mn).await;
    let first = cse.create("/cse-in", "/id-mn", 16, csr_body()).await;
    assert_eq!(first.rsc, 2001, "{first:?}");
    let mut second = csr_body();
    second["m2m:csr"]["poa"] = json!(["http://127.0.0.1:10"]);
    // Act
    let reply = cse.create("/cse-in", "/id-mn", 16, second).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4105, 409), "{reply:?}");
    assert!(reply.dbg().contains("id-mn"), "{}", reply.dbg());
    let stored = cse.retrieve("/cse-in/id-mn", "/id-mn").await;
    assert_eq!(stored.body, first.body);
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Access control policy (storage and validation; no access decisions here)
// -----------------------------------------------------------------------------------------

fn acp_body(rn: &str) -> Value {
    json!({"m2m:acp": {
        "rn": rn,
        "pv": {"acr": [{"acor": ["Cowner"], "acop": 63}]},
        "pvs": {"acr": [{"acor": ["Cowner", "CAdmin"], "acop": 63}]}
    }})
}

#[tokio::test]
async fn an_acp_is_stored_and_returned_with_its_privileges() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let created = cse.create("/cse-in", "Cowner", 1, acp_body("acp1")).await;
    // Assert
    assert_eq!(created.rsc, 2001, "{created:?}");
    let acp = &created.body["m2m:acp"];
    assert!(str_of(acp, "ri").starts_with("acp"));
    assert_eq!(acp["ty"], 1);
    assert_eq!(acp["pv"], acp_body("acp1")["m2m:acp"]["pv"]);
    assert_eq!(acp["pvs"], acp_body("acp1")["m2m:acp"]["pvs"]);
    let stored = cse.retrieve("/cse-in/acp1", "Cowner").await;
    assert_eq!(stored.body, created.body);
    // Act
    let new_pv = json!({"acr": [{"acor": ["all"], "acop": 2}]});
    let updated = cse.update("/cse-in/acp1", "Cowner", json!({"m2m:acp": {"pv": new_pv}})).await;
    // Assert
    assert_eq!(updated.rsc, 2004, "{updated:?}");
    assert_eq!(updated.body["m2m:acp"]["pv"], new_pv);
    let deleted = cse.delete("/cse-in/acp1", "Cowner").await;
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    assert_eq!(cse.retrieve("/cse-in/acp1", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_acp_needs_self_privileges_with_at_least_one_rule() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    for pvs in [json!({"acr": []}), json!({}), Value::Null] {
        let mut body = acp_body("badacp");
        if pvs.is_null() {
            body["m2m:acp"].as_object_mut().expect("object").remove("pvs");
        } else {
            body["m2m:acp"]["pvs"] = pvs.clone();
        }
        // Act
        let reply = cse.create("/cse-in", "Cowner", 1, body).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "pvs {pvs}: {reply:?}");
        assert!(reply.dbg().contains("pvs"), "{}", reply.dbg());
        assert_eq!(cse.retrieve("/cse-in/badacp", ADMIN).await.rsc, 4004);
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_container_referencing_an_acp_by_address_stores_the_acps_resource_id() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    let acp = cse.create("/cse-in", "Cowner", 1, acp_body("acp1")).await;
    let acp_ri = acp.body["m2m:acp"]["ri"].clone();
    // Act
    let cnt = cse.create_container("/cse-in/ae", "Cowner", json!({"rn": "cnt", "acpi": ["cse-in/acp1"]})).await;
    // Assert
    assert_eq!(cnt["acpi"], json!([acp_ri]));
    let stored = cse.retrieve("/cse-in/ae/cnt", "Cowner").await;
    assert_eq!(stored.body["m2m:cnt"]["acpi"], json!([acp_ri]));
    cse.shutdown().await;
}

#[tokio::test]
async fn an_acpi_naming_something_that_is_not_an_acp_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    for acpi in ["cse-in/ae", "cse-in/noSuchAcp"] {
        // Act
        let reply = cse.create("/cse-in/ae", "Cowner", 3, json!({"m2m:cnt": {"rn": "cnt", "acpi": [acpi]}})).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{acpi}: {reply:?}");
        assert!(reply.dbg().contains("acpi"), "{}", reply.dbg());
        assert_eq!(cse.retrieve("/cse-in/ae/cnt", "Cowner").await.rsc, 4004);
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn acpi_must_be_the_only_attribute_of_an_update() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let acp = cse.create("/cse-in", "Cowner", 1, acp_body("acp1")).await;
    let acp_ri = acp.body["m2m:acp"]["ri"].clone();
    let before = cse.retrieve("/cse-in/ae/cnt", "Cowner").await;
    // Act
    let mixed =
        cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/acp1"], "lbl": ["x"]}})).await;
    // Assert
    assert_eq!((mixed.rsc, mixed.status), (4000, 400), "{mixed:?}");
    assert!(mixed.dbg().contains("acpi"), "{}", mixed.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body, before.body);
    // Act
    let alone = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/acp1"]}})).await;
    // Assert
    assert_eq!(alone.rsc, 2004, "{alone:?}");
    assert_eq!(alone.body["m2m:cnt"]["acpi"], json!([acp_ri]));
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Addressing
// -----------------------------------------------------------------------------------------

/// Every HTTP path form that addresses the resource with path `cse-in/<rest>` and `ri`.
fn addressing_forms(rest: &str, ri: &str) -> Vec<String> {
    vec![
        format!("/cse-in/{rest}"),
        format!("/-/{rest}"),
        format!("/{ri}"),
        format!("/~/id-in/cse-in/{rest}"),
        format!("/~/id-in/-/{rest}"),
        format!("/~/id-in/{ri}"),
        format!("/_/acme.example.com/id-in/cse-in/{rest}"),
        format!("/_/acme.example.com/id-in/-/{rest}"),
        format!("/_/acme.example.com/id-in/{ri}"),
    ]
}

#[tokio::test]
async fn a_resource_is_retrieved_through_every_addressing_form() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let cnt = owner_with_container(&cse, json!({})).await;
    let ri = str_of(&cnt, "ri");
    for path in addressing_forms("ae/cnt", ri) {
        // Act
        let reply = cse.retrieve(&path, "Cowner").await;
        // Assert
        assert_eq!(reply.rsc, 2000, "{path}: {reply:?}");
        assert_eq!(reply.body["m2m:cnt"], cnt, "{path}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_resource_is_updated_through_every_addressing_form() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let cnt = owner_with_container(&cse, json!({})).await;
    let ri = str_of(&cnt, "ri");
    for (round, path) in addressing_forms("ae/cnt", ri).into_iter().enumerate() {
        let label = format!("round{round}");
        // Act
        let reply = cse.update(&path, "Cowner", json!({"m2m:cnt": {"lbl": [label]}})).await;
        // Assert
        assert_eq!(reply.rsc, 2004, "{path}: {reply:?}");
        let stored = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
        assert_eq!(stored["lbl"], json!([label]), "{path}");
        assert_eq!(stored["st"], round + 1, "{path}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_resource_is_deleted_through_every_addressing_form() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    for form in 0..addressing_forms("x", "x").len() {
        let rn = format!("cnt{form}");
        let cnt = cse.create_container("/cse-in/ae", "Cowner", json!({ "rn": rn })).await;
        let path = addressing_forms(&format!("ae/{rn}"), str_of(&cnt, "ri")).remove(form);
        // Act
        let reply = cse.delete(&path, "Cowner").await;
        // Assert
        assert_eq!(reply.rsc, 2002, "{path}: {reply:?}");
        let gone = cse.retrieve(&format!("/cse-in/ae/{rn}"), "Cowner").await;
        assert_eq!(gone.rsc, 4004, "{path}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_target_on_another_cse_is_not_reachable_and_names_that_cse() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let requests = [
        cse.request(Method::GET, "/~/id-mn/cse-mn", ADMIN),
        cse.request(Method::PUT, "/~/id-mn/cse-mn/ae", ADMIN)
            .header("Content-Type", "application/json")
            .body(json!({"m2m:ae": {"lbl": ["x"]}}).to_string()),
        cse.request(Method::DELETE, "/~/id-mn/cse-mn/ae", ADMIN),
        cse.request(Method::GET, "/_/acme.example.com/id-mn/cse-mn", ADMIN),
    ];
    for request in requests {
        // Act
        let reply = Reply::from(request.send().await).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (5103, 404), "{reply:?}");
        assert!(reply.dbg().contains("/id-mn"), "{}", reply.dbg());
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_target_without_a_resource_or_with_a_trailing_slash_is_a_bad_request() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    for path in ["/~/id-in", "/_/acme.example.com/id-in", "/cse-in/", "/cse-in/ae/", "/~/id-in/cse-in/ae/"] {
        // Act
        let reply = cse.retrieve(path, ADMIN).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{path}: {reply:?}");
        assert!(reply.dbg().contains("invalid target"), "{path}: {}", reply.dbg());
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn the_csebase_cannot_be_created_updated_or_deleted() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let before = cse.retrieve("/cse-in", ADMIN).await.body["m2m:cb"].clone();
    // Act
    let created = cse.create("/cse-in", ADMIN, 5, json!({"m2m:cb": {"rn": "other"}})).await;
    let updated = cse.update("/cse-in", ADMIN, json!({"m2m:cb": {"lbl": ["x"]}})).await;
    let deleted = cse.delete("/cse-in", ADMIN).await;
    // Assert
    for reply in [&created, &updated, &deleted] {
        assert_eq!((reply.rsc, reply.status), (4005, 405), "{reply:?}");
        assert!(reply.dbg().contains("CSEBase"), "{}", reply.dbg());
    }
    let after = cse.retrieve("/cse-in", ADMIN).await.body["m2m:cb"].clone();
    assert_eq!(after["lbl"], before["lbl"]);
    assert_eq!(after["lt"], before["lt"]);
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Discovery
// -----------------------------------------------------------------------------------------

/// `ae` with containers a (lbl red), a/a1, b (lbl blue), c (lbl red, blue) and one CIN in a.
/// Returns the `ri` of each, by structured path.
async fn discovery_tree(cse: &TestCse) -> Vec<(String, String)> {
    cse.register_ae("Cowner", "ae").await;
    let mut made = Vec::new();
    for (parent, attributes) in [
        ("/cse-in/ae", json!({"rn": "a", "lbl": ["red"]})),
        ("/cse-in/ae/a", json!({"rn": "a1"})),
        ("/cse-in/ae", json!({"rn": "b", "lbl": ["blue"]})),
        ("/cse-in/ae", json!({"rn": "c", "lbl": ["red", "blue"]})),
    ] {
        let cnt = cse.create_container(parent, "Cowner", attributes).await;
        made.push((format!("{}/{}", &parent[1..], str_of(&cnt, "rn")), str_of(&cnt, "ri").to_string()));
    }
    let cin = cse.create("/cse-in/ae/a", "Cowner", 4, json!({"m2m:cin": {"rn": "i", "con": "x"}})).await;
    made.push(("cse-in/ae/a/i".into(), str_of(&cin.body["m2m:cin"], "ri").to_string()));
    made
}

fn sorted(mut entries: Vec<String>) -> Vec<String> {
    entries.sort();
    entries
}

#[tokio::test]
async fn discovery_filters_by_type_label_and_name() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    discovery_tree(&cse).await;
    let cases: [(&str, &[&str]); 6] = [
        ("ty=3", &["cse-in/ae/a", "cse-in/ae/a/a1", "cse-in/ae/b", "cse-in/ae/c"]),
        ("ty=4", &["cse-in/ae/a/i"]),
        ("ty=4+2", &["cse-in/ae/a/i"]),
        ("lbl=red", &["cse-in/ae/a", "cse-in/ae/c"]),
        ("rn=b", &["cse-in/ae/b"]),
        ("ty=3&lbl=blue", &["cse-in/ae/b", "cse-in/ae/c"]),
    ];
    for (query, expected) in cases {
        // Act
        let reply = cse.retrieve(&format!("/cse-in/ae?fu=1&{query}"), "Cowner").await;
        // Assert
        assert_eq!(reply.rsc, 2000, "{query}: {reply:?}");
        assert_eq!(sorted(reply.uril()), expected, "{query}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn discovery_without_filters_finds_everything_below_the_target() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let tree = discovery_tree(&cse).await;
    // Act
    let reply = cse.retrieve("/cse-in/ae?fu=1", "Cowner").await;
    // Assert
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    let expected = sorted(tree.into_iter().map(|(path, _)| path).collect());
    assert_eq!(sorted(reply.uril()), expected);
    cse.shutdown().await;
}

#[tokio::test]
async fn discovery_honours_level_limit_and_offset() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    discovery_tree(&cse).await;
    let all = cse.retrieve("/cse-in/ae?fu=1&ty=3", "Cowner").await.uril();
    assert_eq!(all.len(), 4);
    // Act
    let level = cse.retrieve("/cse-in/ae?fu=1&ty=3&lvl=1", "Cowner").await;
    let limited = cse.retrieve("/cse-in/ae?fu=1&ty=3&lim=2", "Cowner").await;
    let first = cse.retrieve("/cse-in/ae?fu=1&ty=3&ofst=1", "Cowner").await;
    let offset = cse.retrieve("/cse-in/ae?fu=1&ty=3&ofst=2", "Cowner").await;
    let both = cse.retrieve("/cse-in/ae?fu=1&ty=3&ofst=2&lim=2", "Cowner").await;
    let rest = cse.retrieve("/cse-in/ae?fu=1&ty=3&ofst=4&lim=2", "Cowner").await;
    // Assert: ofst counts from 1; a result cut by lim says where the rest begins.
    assert_eq!(sorted(level.uril()), ["cse-in/ae/a", "cse-in/ae/b", "cse-in/ae/c"]);
    assert_eq!(limited.uril(), all[..2]);
    assert_eq!((limited.header("x-m2m-cts"), limited.header("x-m2m-cto")), (Some("1"), Some("3")));
    assert_eq!(first.uril(), all);
    assert_eq!(first.header("x-m2m-cts"), None, "a complete result");
    assert_eq!(offset.uril(), all[1..]);
    assert_eq!(both.uril(), all[1..3]);
    assert_eq!(both.header("x-m2m-cto"), Some("4"));
    assert_eq!(rest.uril(), all[3..]);
    assert_eq!(rest.header("x-m2m-cts"), None);
    cse.shutdown().await;
}

#[tokio::test]
async fn discovery_results_follow_the_scope_of_the_originator() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    discovery_tree(&cse).await;
    // Act
    let sp_relative = cse.retrieve("/cse-in/ae?fu=1&ty=3&lvl=1", "/id-in/Cowner").await;
    let absolute = cse.retrieve("/cse-in/ae?fu=1&ty=3&lvl=1", "//acme.example.com/id-in/Cowner").await;
    let cse_relative = cse.retrieve("/cse-in/ae?fu=1&ty=3&lvl=1", "Cowner").await;
    // Assert
    assert_eq!(sp_relative.rsc, 2000, "{sp_relative:?}");
    assert_eq!(sorted(sp_relative.uril()), ["/id-in/cse-in/ae/a", "/id-in/cse-in/ae/b", "/id-in/cse-in/ae/c"]);
    assert_eq!(absolute.rsc, 2000, "{absolute:?}");
    assert_eq!(
        sorted(absolute.uril()),
        [
            "//acme.example.com/id-in/cse-in/ae/a",
            "//acme.example.com/id-in/cse-in/ae/b",
            "//acme.example.com/id-in/cse-in/ae/c"
        ]
    );
    assert_eq!(sorted(cse_relative.uril()), ["cse-in/ae/a", "cse-in/ae/b", "cse-in/ae/c"]);
    cse.shutdown().await;
}

#[tokio::test]
async fn discovery_with_unstructured_result_type_returns_sp_relative_resource_ids() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let tree = discovery_tree(&cse).await;
    let expected = sorted(
        tree.iter().filter(|(path, _)| path.matches('/').count() == 2).map(|(_, ri)| format!("/id-in/{ri}")).collect(),
    );
    for origin in ["Cowner", "/id-in/Cowner"] {
        // Act
        let reply = cse.retrieve("/cse-in/ae?fu=1&ty=3&lvl=1&drt=2", origin).await;
        // Assert
        assert_eq!(reply.rsc, 2000, "{reply:?}");
        assert_eq!(sorted(reply.uril()), expected, "{origin}");
    }
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Result content (rcn)
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn create_returns_what_the_result_content_asks_for() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    let create = async |rcn: u8, rn: &str| {
        cse.create(&format!("/cse-in/ae?rcn={rcn}"), "Cowner", 3, json!({"m2m:cnt": {"rn": rn}})).await
    };
    // Act
    let nothing = create(0, "c0").await;
    let attributes = create(1, "c1").await;
    let address = create(2, "c2").await;
    let both = create(3, "c3").await;
    // Assert
    assert_eq!((nothing.rsc, nothing.body.clone()), (2001, Value::Null), "{nothing:?}");
    assert_eq!(cse.retrieve("/cse-in/ae/c0", "Cowner").await.rsc, 2000);
    assert_eq!(attributes.rsc, 2001, "{attributes:?}");
    assert_eq!(attributes.body["m2m:cnt"]["rn"], "c1");
    assert_eq!(address.rsc, 2001, "{address:?}");
    assert_eq!(address.body, json!({"m2m:uri": "cse-in/ae/c2"}));
    assert_eq!(both.rsc, 2001, "{both:?}");
    assert_eq!(both.body["m2m:rce"]["uri"], "cse-in/ae/c3");
    let stored = cse.retrieve("/cse-in/ae/c3", "Cowner").await;
    assert_eq!(both.body["m2m:rce"]["m2m:cnt"], stored.body["m2m:cnt"]);
    cse.shutdown().await;
}

/// `ae` with containers c1 (holding one CIN) and c2.
async fn rcn_tree(cse: &TestCse) {
    cse.register_ae("Cowner", "ae").await;
    cse.create_container("/cse-in/ae", "Cowner", json!({"rn": "c1"})).await;
    cse.create_container("/cse-in/ae", "Cowner", json!({"rn": "c2"})).await;
    cse.create_instance("/cse-in/ae/c1", "Cowner", json!("x")).await;
}

fn names(list: &Value) -> Vec<String> {
    sorted(
        list.as_array()
            .unwrap_or_else(|| panic!("not a list: {list}"))
            .iter()
            .map(|entry| str_of(entry, "rn").to_string())
            .collect(),
    )
}

fn references(list: &Value) -> Vec<(String, u64, String)> {
    let mut references: Vec<_> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|entry| {
            (str_of(entry, "nm").to_string(), entry["typ"].as_u64().expect("typ"), str_of(entry, "val").to_string())
        })
        .collect();
    references.sort();
    references
}

#[tokio::test]
async fn retrieve_returns_attributes_children_or_references_as_the_result_content_asks() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    rcn_tree(&cse).await;
    let plain = cse.retrieve("/cse-in/ae", "Cowner").await.body["m2m:ae"].clone();
    let instance = cse.retrieve("/cse-in/ae/c1/la", "Cowner").await.body["m2m:cin"]["rn"].as_str().map(str::to_string);
    let instance = instance.expect("the instance of c1");
    // References cover the whole subtree (as in the reference CSE), unless lvl limits it.
    let mut expected_refs = vec![
        ("c1".to_string(), 3, "cse-in/ae/c1".to_string()),
        ("c2".to_string(), 3, "cse-in/ae/c2".to_string()),
        (instance.clone(), 4, format!("cse-in/ae/c1/{instance}")),
    ];
    expected_refs.sort();
    // Act
    let rcn1 = cse.retrieve("/cse-in/ae?rcn=1", "Cowner").await;
    let rcn4 = cse.retrieve("/cse-in/ae?rcn=4", "Cowner").await;
    let rcn5 = cse.retrieve("/cse-in/ae?rcn=5", "Cowner").await;
    let rcn6 = cse.retrieve("/cse-in/ae?rcn=6", "Cowner").await;
    let rcn8 = cse.retrieve("/cse-in/ae?rcn=8", "Cowner").await;
    // Assert
    for reply in [&rcn1, &rcn4, &rcn5, &rcn6, &rcn8] {
        assert_eq!(reply.rsc, 2000, "{reply:?}");
    }
    assert_eq!(rcn1.body["m2m:ae"], plain);
    assert!(plain.get("m2m:cnt").is_none() && plain.get("ch").is_none());

    let ae = &rcn4.body["m2m:ae"];
    assert_eq!(ae["ri"], plain["ri"]);
    assert_eq!(names(&ae["m2m:cnt"]), ["c1", "c2"]);
    let c1 = ae["m2m:cnt"].as_array().expect("list").iter().find(|cnt| cnt["rn"] == "c1").expect("c1 nested");
    assert_eq!(c1["m2m:cin"].as_array().map(Vec::len), Some(1));
    assert_eq!(c1["m2m:cin"][0]["con"], "x");

    assert_eq!(rcn5.body["m2m:ae"]["ri"], plain["ri"]);
    assert_eq!(references(&rcn5.body["m2m:ae"]["ch"]), expected_refs);

    assert!(rcn6.body.get("m2m:ae").is_none(), "{:?}", rcn6.body);
    assert_eq!(references(&rcn6.body["m2m:rrl"]["rrf"]), expected_refs);

    let children_only = &rcn8.body["m2m:ae"];
    assert!(children_only.get("ri").is_none(), "{children_only}");
    assert_eq!(names(&children_only["m2m:cnt"]), ["c1", "c2"]);
    cse.shutdown().await;
}

#[tokio::test]
async fn update_and_delete_return_a_body_only_when_the_result_content_asks_for_it() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    rcn_tree(&cse).await;
    // Act
    let silent_update = cse.update("/cse-in/ae/c1?rcn=0", "Cowner", json!({"m2m:cnt": {"lbl": ["quiet"]}})).await;
    let full_update = cse.update("/cse-in/ae/c1?rcn=1", "Cowner", json!({"m2m:cnt": {"lbl": ["loud"]}})).await;
    let silent_delete = cse.delete("/cse-in/ae/c1?rcn=0", "Cowner").await;
    let full_delete = cse.delete("/cse-in/ae/c2?rcn=1", "Cowner").await;
    // Assert
    assert_eq!((silent_update.rsc, silent_update.body.clone()), (2004, Value::Null));
    assert_eq!(full_update.rsc, 2004, "{full_update:?}");
    assert_eq!(full_update.body["m2m:cnt"]["lbl"], json!(["loud"]));
    assert_eq!(full_update.body["m2m:cnt"]["st"], 3, "one instance and both updates counted");
    assert_eq!((silent_delete.rsc, silent_delete.body.clone()), (2002, Value::Null));
    assert_eq!(full_delete.rsc, 2002, "{full_delete:?}");
    assert_eq!(full_delete.body["m2m:cnt"]["rn"], "c2");
    assert_eq!(cse.retrieve("/cse-in/ae/c1", "Cowner").await.rsc, 4004);
    assert_eq!(cse.retrieve("/cse-in/ae/c2", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_result_content_not_allowed_for_the_operation_is_a_bad_request() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    rcn_tree(&cse).await;
    let before = cse.retrieve("/cse-in/ae/c1", "Cowner").await;
    // Act
    let create = cse.create("/cse-in/ae?rcn=4", "Cowner", 3, json!({"m2m:cnt": {"rn": "c3"}})).await;
    let retrieve = cse.retrieve("/cse-in/ae/c1?rcn=2", "Cowner").await;
    let update = cse.update("/cse-in/ae/c1?rcn=4", "Cowner", json!({"m2m:cnt": {"lbl": ["x"]}})).await;
    let delete = cse.delete("/cse-in/ae/c1?rcn=3", "Cowner").await;
    let discovery = cse.retrieve("/cse-in/ae?fu=1&rcn=1", "Cowner").await;
    // Assert
    for reply in [&create, &retrieve, &update, &delete, &discovery] {
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
        assert!(reply.dbg().contains("rcn"), "{}", reply.dbg());
    }
    assert_eq!(cse.retrieve("/cse-in/ae/c3", "Cowner").await.rsc, 4004);
    assert_eq!(cse.retrieve("/cse-in/ae/c1", "Cowner").await.body, before.body);
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Persistence
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn resources_survive_a_restart_on_the_same_database_file() {
    // Arrange
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = dir.path().join("acme.db");
    let first = TestCse::spawn(|settings| on_disk(settings, &database)).await;
    let ae = first.register_ae("Cowner", "ae").await;
    let cnt = first.create_container("/cse-in/ae", "Cowner", json!({"rn": "cnt", "mni": 3})).await;
    let cin = first.create_instance("/cse-in/ae/cnt", "Cowner", json!({"temp": 21.5})).await;
    let mut before = Vec::new();
    for path in ["/cse-in/ae", "/cse-in/ae/cnt", "/cse-in/ae/cnt/la"] {
        before.push(first.retrieve(path, "Cowner").await.body);
    }
    let acps_before = first.retrieve("/cse-in?fu=1&ty=1", ADMIN).await.uril();
    first.shutdown().await;
    // Act
    let second = TestCse::spawn(|settings| on_disk(settings, &database)).await;
    // Assert
    for (path, expected) in ["/cse-in/ae", "/cse-in/ae/cnt", "/cse-in/ae/cnt/la"].into_iter().zip(&before) {
        let reply = second.retrieve(path, "Cowner").await;
        assert_eq!(reply.rsc, 2000, "{path}: {reply:?}");
        assert_eq!(&reply.body, expected, "{path}");
    }
    let stored_cnt = &before[1]["m2m:cnt"];
    assert_eq!(stored_cnt["ri"], cnt["ri"]);
    assert_eq!(stored_cnt["ct"], cnt["ct"]);
    assert_eq!(stored_cnt["cni"], 1);
    assert_eq!(before[0]["m2m:ae"]["ct"], ae["ct"]);
    assert_eq!(before[2]["m2m:cin"]["ri"], cin["ri"]);
    assert_eq!(before[2]["m2m:cin"]["con"], json!({"temp": 21.5}));
    let acps_after = second.retrieve("/cse-in?fu=1&ty=1", ADMIN).await.uril();
    assert_eq!(acps_after, acps_before, "init/ is imported only once");
    let cse_base = second.retrieve("/cse-in", ADMIN).await;
    assert_eq!(cse_base.body["m2m:cb"]["poa"][0], second.url.as_str());
    second.shutdown().await;
}

/// Turn a database this build wrote back into what acme-cse wrote before schema versions
/// (version 1): resources keyed by `ri`, their order of creation only in SQLite's rowid,
/// no table of instances, no claims on notifications, no version recorded.
fn back_to_version_1(path: &std::path::Path) {
    let connection = rusqlite::Connection::open(path).expect("open the database");
    connection
        .execute_batch(
            "CREATE TABLE resources_v1 (ri TEXT PRIMARY KEY NOT NULL, pi TEXT NOT NULL, ty INTEGER NOT NULL, \
                 path TEXT NOT NULL UNIQUE, et TEXT, creator TEXT, body TEXT NOT NULL);
             INSERT INTO resources_v1 SELECT ri, pi, ty, path, et, creator, body FROM resources ORDER BY ord;
             DROP TABLE resources;
             ALTER TABLE resources_v1 RENAME TO resources;
             CREATE INDEX resources_by_parent ON resources(pi, ty);
             CREATE INDEX resources_by_type ON resources(ty);
             CREATE INDEX resources_by_expiry ON resources(et) WHERE et IS NOT NULL;
             DROP TABLE instances;
             ALTER TABLE outbox DROP COLUMN claimant;
             ALTER TABLE outbox DROP COLUMN claimed_until;
             DELETE FROM meta WHERE key = 'schema_version';",
        )
        .expect("back to version 1");
}

#[tokio::test]
async fn a_database_of_an_older_version_is_upgraded_at_start_and_one_of_a_newer_version_is_refused() {
    // Arrange: a database with a container of three instances, as an older acme-cse wrote it.
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = dir.path().join("acme.db");
    let first = TestCse::spawn(|settings| on_disk(settings, &database)).await;
    first.register_ae("Cowner", "ae").await;
    first.create_container("/cse-in/ae", "Cowner", json!({"rn": "cnt"})).await;
    for con in ["one", "two", "three"] {
        first.create_instance("/cse-in/ae/cnt", "Cowner", json!(con)).await;
    }
    first.shutdown().await;
    back_to_version_1(&database);
    // Act
    let second = TestCse::spawn(|settings| on_disk(settings, &database)).await;
    // Assert: the oldest and newest instances are the same, and the order goes on.
    let oldest = second.retrieve("/cse-in/ae/cnt/ol", "Cowner").await;
    assert_eq!(oldest.body["m2m:cin"]["con"], "one", "{oldest:?}");
    let newest = second.retrieve("/cse-in/ae/cnt/la", "Cowner").await;
    assert_eq!(newest.body["m2m:cin"]["con"], "three", "{newest:?}");
    second.create_instance("/cse-in/ae/cnt", "Cowner", json!("four")).await;
    let newest = second.retrieve("/cse-in/ae/cnt/la", "Cowner").await;
    assert_eq!(newest.body["m2m:cin"]["con"], "four", "{newest:?}");
    let cnt = second.retrieve("/cse-in/ae/cnt", "Cowner").await;
    assert_eq!(cnt.body["m2m:cnt"]["cni"], 4, "{cnt:?}");
    second.shutdown().await;
    // A database from a newer build stops the start, naming the key; nothing is changed.
    let connection = rusqlite::Connection::open(&database).expect("open the database");
    connection.execute("UPDATE meta SET value = '1000' WHERE key = 'schema_version'", []).expect("a future version");
    drop(connection);
    let mut settings = crate::harness::test_settings();
    on_disk(&mut settings, &database);
    let config = settings.validate().expect("valid settings");
    let refused = acme_cse::App::build(config, None).await.err().expect("refused");
    let text = format!("{refused:#}");
    assert!(text.contains("database.path") && text.contains("schema version 1000") && text.contains("newer"), "{text}");
}

// -----------------------------------------------------------------------------------------
// Bad input
// -----------------------------------------------------------------------------------------

async fn send(builder: reqwest::RequestBuilder) -> Reply {
    Reply::from(builder.send().await).await
}

#[tokio::test]
async fn a_body_that_is_not_json_is_rejected_and_nothing_is_stored() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let reply = send(
        cse.request(Method::POST, "/cse-in/ae", "Cowner")
            .header("Content-Type", "application/json;ty=3")
            .body(r#"{"m2m:cnt": {"rn": "broken""#),
    )
    .await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
    assert!(reply.dbg().contains("JSON"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/broken", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_body_wrapped_for_another_type_is_rejected_and_nothing_is_stored() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let reply = cse
        .create("/cse-in", "Cwrapped", 2, json!({"m2m:cnt": {"rn": "wrapped", "api": "Nx", "rr": true, "srv": ["4"]}}))
        .await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
    assert!(reply.dbg().contains("m2m:ae"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/wrapped", ADMIN).await.rsc, 4004);
    assert_eq!(cse.retrieve("/Cwrapped", ADMIN).await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_update_wrapped_for_another_type_is_unacceptable() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let before = cse.retrieve("/cse-in/ae/cnt", "Cowner").await;
    // Act
    let reply = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:ae": {"lbl": ["x"]}})).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4102, 400), "{reply:?}");
    assert!(reply.dbg().contains("m2m:cnt"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body, before.body);
    cse.shutdown().await;
}

#[tokio::test]
async fn unknown_missing_and_malformed_attributes_are_rejected_and_nothing_is_stored() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let cases = [
        (3, json!({"m2m:cnt": {"rn": "bad", "foo": 1}}), "foo"),
        (3, json!({"m2m:cnt": {"rn": "bad", "mni": -1}}), "mni"),
        (3, json!({"m2m:cnt": {"rn": "bad", "lbl": []}}), "lbl"),
        (3, json!({"m2m:cnt": {"rn": "bad", "ri": "mine"}}), "ri"),
        (3, json!({"m2m:cnt": {"rn": "a b"}}), "rn"),
        (3, json!({"m2m:cnt": {"rn": "test?"}}), "rn"),
        (4, json!({"m2m:cin": {"rn": "bad", "cnf": "text"}}), "cnf"),
        (4, json!({"m2m:cin": {"rn": "bad", "acpi": ["x"]}}), "acpi"),
        (3, json!({"m2m:cnt": {"rn": "bad", "et": "20000101T000000"}}), "et"),
        (3, json!({"m2m:cnt": {"rn": "bad", "cr": "Cowner"}}), "cr"),
    ];
    for (ty, body, keyword) in cases {
        // Act
        let reply = cse.create("/cse-in/ae/cnt", "Cowner", ty, body.clone()).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{body}: {reply:?}");
        assert!(reply.dbg().contains(keyword), "{body}: {}", reply.dbg());
    }
    let everything = cse.retrieve("/cse-in/ae/cnt?fu=1", "Cowner").await;
    assert_eq!(everything.uril(), Vec::<String>::new());
    let cnt = cse.retrieve("/cse-in/ae/cnt", "Cowner").await.body["m2m:cnt"].clone();
    assert_eq!((cnt["cni"].clone(), cnt["st"].clone()), (json!(0), json!(0)));
    cse.shutdown().await;
}

#[tokio::test]
async fn updating_a_read_only_attribute_is_rejected_and_changes_nothing() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let before = cse.retrieve("/cse-in/ae/cnt", "Cowner").await;
    for (name, value) in [
        ("ri", json!("cntMine")),
        ("ct", json!("20200101T000000")),
        ("cni", json!(7)),
        ("st", json!(9)),
        ("ty", json!(4)),
        ("rn", json!("renamed")),
    ] {
        // Act
        let reply = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": { name: value, "lbl": ["x"] }})).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{name}: {reply:?}");
        assert!(reply.dbg().contains(name), "{name}: {}", reply.dbg());
        let after = cse.retrieve("/cse-in/ae/cnt", "Cowner").await;
        assert_eq!(after.body, before.body, "{name}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_request_without_originator_is_rejected_except_an_ae_registration() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let container = cse.create("/cse-in/ae", "", 3, json!({"m2m:cnt": {"rn": "orphan"}})).await;
    let retrieve = cse.retrieve("/cse-in/ae", "").await;
    let ae = cse.create("/cse-in", "", 2, ae_body("anonymous")).await;
    // Assert
    for reply in [&container, &retrieve] {
        assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
        assert!(reply.dbg().contains("X-M2M-Origin"), "{}", reply.dbg());
    }
    assert_eq!(cse.retrieve("/cse-in/ae/orphan", "Cowner").await.rsc, 4004);
    assert_eq!(ae.rsc, 2001, "{ae:?}");
    let aei = str_of(&ae.body["m2m:ae"], "aei");
    assert!(aei.starts_with('C') && aei.len() > 1, "{aei}");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_request_without_request_identifier_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let reply = send(
        cse.raw(Method::POST, "/cse-in/ae")
            .header("X-M2M-Origin", "Cowner")
            .header("X-M2M-RVI", "4")
            .header("Content-Type", "application/json;ty=3")
            .body(json!({"m2m:cnt": {"rn": "norqi"}}).to_string()),
    )
    .await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
    assert!(reply.dbg().contains("X-M2M-RI"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/norqi", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_unsupported_release_version_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    for rvi in [Some("9"), None] {
        let mut request = cse
            .raw(Method::POST, "/cse-in/ae")
            .header("X-M2M-Origin", "Cowner")
            .header("X-M2M-RI", "rvi-check")
            .header("Content-Type", "application/json;ty=3")
            .body(json!({"m2m:cnt": {"rn": "future"}}).to_string());
        if let Some(rvi) = rvi {
            request = request.header("X-M2M-RVI", rvi);
        }
        // Act
        let reply = send(request).await;
        // Assert
        assert_eq!((reply.rsc, reply.status), (4001, 501), "{rvi:?}: {reply:?}");
        assert!(reply.dbg().contains("release version"), "{}", reply.dbg());
        assert_eq!(reply.header("x-m2m-ri"), Some("rvi-check"));
        assert_eq!(cse.retrieve("/cse-in/ae/future", "Cowner").await.rsc, 4004);
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_rejected_and_the_cse_keeps_serving() {
    // Arrange
    let cse = TestCse::spawn(|settings| settings.http.max_body_size = 1000).await;
    cse.register_ae("Cowner", "ae").await;
    let mut body = json!({"m2m:cnt": {"rn": "big", "lbl": [""]}}).to_string();
    let padding = "x".repeat(2000 - body.len());
    body = body.replace(r#"[""]"#, &format!(r#"["{padding}"]"#));
    assert_eq!(body.len(), 2000);
    // Act
    let reply = send(
        cse.request(Method::POST, "/cse-in/ae", "Cowner").header("Content-Type", "application/json;ty=3").body(body),
    )
    .await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
    assert!(reply.dbg().contains("1000 bytes"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/big", "Cowner").await.rsc, 4004);
    let small = cse.create("/cse-in/ae", "Cowner", 3, json!({"m2m:cnt": {"rn": "small"}})).await;
    assert_eq!(small.rsc, 2001, "{small:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_non_numeric_resource_type_in_the_content_type_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let reply = send(
        cse.request(Method::POST, "/cse-in/ae", "Cowner")
            .header("Content-Type", "application/json;ty=cnt")
            .body(json!({"m2m:cnt": {"rn": "typed"}}).to_string()),
    )
    .await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4000, 400), "{reply:?}");
    assert!(reply.dbg().contains("ty"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/typed", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_unsupported_content_type_is_rejected() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let reply = send(
        cse.request(Method::POST, "/cse-in/ae", "Cowner")
            .header("Content-Type", "application/xml;ty=3")
            .body(r#"<m2m:cnt rn="xml"/>"#),
    )
    .await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4015, 415), "{reply:?}");
    assert!(reply.dbg().contains("application/xml"), "{}", reply.dbg());
    assert_eq!(cse.retrieve("/cse-in/ae/xml", "Cowner").await.rsc, 4004);
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Response headers
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn responses_echo_the_request_identifier_and_carry_the_release_version() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    let requests = [
        cse.raw(Method::POST, "/cse-in")
            .header("X-M2M-Origin", "Cecho")
            .header("X-M2M-RI", "rqi-create")
            .header("X-M2M-RVI", "3")
            .header("Content-Type", "application/json;ty=2")
            .body(ae_body("echo").to_string()),
        cse.raw(Method::GET, "/cse-in/echo")
            .header("X-M2M-Origin", "Cecho")
            .header("X-M2M-RI", "rqi-retrieve")
            .header("X-M2M-RVI", "3"),
        cse.raw(Method::GET, "/cse-in/nothing")
            .header("X-M2M-Origin", "Cecho")
            .header("X-M2M-RI", "rqi-error")
            .header("X-M2M-RVI", "3"),
    ];
    for (request, rqi) in requests.into_iter().zip(["rqi-create", "rqi-retrieve", "rqi-error"]) {
        // Act
        let reply = send(request).await;
        // Assert
        assert_eq!(reply.header("x-m2m-ri"), Some(rqi), "{reply:?}");
        assert_eq!(reply.header("x-m2m-rvi"), Some("3"), "{reply:?}");
        assert_eq!(reply.header("x-m2m-rsc"), Some(reply.rsc.to_string().as_str()));
        assert!(reply.rsc != 0, "{reply:?}");
        assert!(reply.header("x-m2m-ot").is_some(), "{reply:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn a_create_response_carries_the_new_resources_location() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    // Act
    let reply = cse.create("/cse-in/ae", "Cowner", 3, json!({"m2m:cnt": {"rn": "here"}})).await;
    // Assert
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.header("content-location"), Some("cse-in/ae/here"));
    let retrieved = cse.retrieve("/cse-in/ae", "Cowner").await;
    assert!(retrieved.header("content-location").is_none());
    cse.shutdown().await;
}

#[tokio::test]
async fn the_http_status_follows_the_response_status_code() {
    // Arrange
    let cse = TestCse::spawn(allow_id_mn).await;
    // Act
    let created = cse.create("/cse-in", "Cstatus", 2, ae_body("status")).await;
    let retrieved = cse.retrieve("/cse-in/status", "Cstatus").await;
    let updated = cse.update("/cse-in/status", "Cstatus", json!({"m2m:ae": {"lbl": ["x"]}})).await;
    let conflict = cse.create("/cse-in", "Cother", 2, ae_body("status")).await;
    let not_found = cse.retrieve("/cse-in/missing", "Cstatus").await;
    let unreachable = cse.retrieve("/~/id-mn/cse-mn", "Cstatus").await;
    let no_privilege = cse.create("/cse-in", "/id-nope", 16, csr_body()).await;
    let deleted = cse.delete("/cse-in/status", "Cstatus").await;
    // Assert
    let observed: Vec<(u16, u16)> =
        [&created, &retrieved, &updated, &conflict, &not_found, &unreachable, &no_privilege, &deleted]
            .iter()
            .map(|reply| (reply.rsc, reply.status))
            .collect();
    assert_eq!(
        observed,
        [(2001, 201), (2000, 200), (2004, 200), (4105, 409), (4004, 404), (5103, 404), (4103, 403), (2002, 200),]
    );
    cse.shutdown().await;
}

#[tokio::test]
async fn setting_disr_false_on_a_container_whose_retrieval_was_never_disabled_keeps_its_instances() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    owner_with_container(&cse, json!({})).await;
    let instance = cse.create_instance("/cse-in/ae/cnt", "Cowner", json!("kept")).await;
    // Act
    let reply = cse.update("/cse-in/ae/cnt", "Cowner", json!({"m2m:cnt": {"disr": false}})).await;
    // Assert
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    assert_eq!(reply.body["m2m:cnt"]["cni"], 1, "{reply:?}");
    let retrieved = cse.retrieve(&format!("/{}", str_of(&instance, "ri")), "Cowner").await;
    assert_eq!(retrieved.rsc, 2000, "{retrieved:?}");
    assert_eq!(retrieved.body["m2m:cin"]["con"], "kept");
    cse.shutdown().await;
}

/// The reference CSE mistakes CSE-IDs starting with C or S for AE-IDs (its defect list,
/// item 18); here the shape of the ID decides: `/Ctest` is a CSE-ID.
#[tokio::test]
async fn a_cse_id_starting_with_c_registers_as_a_cse() {
    // Arrange
    let cse = TestCse::spawn(|settings| {
        settings.cse.registration.allowed_csr_originators = vec!["/C*".into()];
    })
    .await;
    let mut body = csr_body();
    body["m2m:csr"]["csi"] = json!("/Ctest");
    body["m2m:csr"]["cb"] = json!("/Ctest/cse-test");
    // Act
    let reply = cse.create("/cse-in", "/Ctest", 16, body).await;
    // Assert
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(cse.retrieve("/cse-in/Ctest", ADMIN).await.body["m2m:csr"]["csi"], "/Ctest");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_cse_cannot_register_in_the_name_of_another_cse() {
    // Arrange
    let cse = TestCse::spawn(|settings| {
        settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    })
    .await;
    let mut body = csr_body();
    body["m2m:csr"]["csi"] = json!("/id-mn2");
    // Act
    let reply = cse.create("/cse-in", "/id-mn", 16, body).await;
    // Assert
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("/id-mn2"), "{reply:?}");
    assert_eq!(cse.retrieve("/cse-in/id-mn", ADMIN).await.rsc, 4004);
    assert_eq!(cse.retrieve("/cse-in/id-mn2", ADMIN).await.rsc, 4004);
    cse.shutdown().await;
}

#[tokio::test]
async fn delete_accepts_every_result_content_the_spec_allows() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "ae").await;
    for rcn in [4, 5, 6, 8] {
        let rn = format!("c{rcn}");
        cse.create_container("/cse-in/ae", "Cowner", json!({ "rn": rn })).await;
        cse.create_instance(&format!("/cse-in/ae/{rn}"), "Cowner", json!("x")).await;
        // Act
        let reply = cse.delete(&format!("/cse-in/ae/{rn}?rcn={rcn}"), "Cowner").await;
        // Assert
        assert_eq!(reply.rsc, 2002, "rcn {rcn}: {reply:?}");
        let children = match rcn {
            4 => &reply.body["m2m:cnt"]["m2m:cin"],
            5 => &reply.body["m2m:cnt"]["ch"],
            6 => &reply.body["m2m:rrl"]["rrf"],
            _ => &reply.body["m2m:cnt"]["m2m:cin"],
        };
        assert_eq!(children.as_array().map(Vec::len), Some(1), "rcn {rcn}: {reply:?}");
        assert_eq!(cse.retrieve(&format!("/cse-in/ae/{rn}"), "Cowner").await.rsc, 4004, "rcn {rcn}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn an_absolute_target_in_an_unknown_service_provider_is_not_found() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    // Act
    let reply = cse.retrieve("/_/unknown.example.org/id-in/cse-in", ADMIN).await;
    // Assert: 4004 as the reference CSE answers (its test suite), with the reason.
    assert_eq!((reply.rsc, reply.status), (4004, 404), "{reply:?}");
    assert!(reply.dbg().contains("//unknown.example.org/id-in"), "{reply:?}");
    assert!(reply.dbg().contains("service provider unknown.example.org is unknown"), "{reply:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn an_already_registered_ae_id_is_reported_before_a_wrong_parent() {
    // Arrange
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cdup", "parent").await;
    // Act
    let reply = cse.create("/cse-in/parent", "Cdup", 2, ae_body("child")).await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (4117, 403), "{reply:?}");
    assert_eq!(cse.retrieve("/cse-in/parent/child", ADMIN).await.rsc, 4004);
    cse.shutdown().await;
}
