//! The foundation: CRUD over HTTP, addressing, discovery, persistence, bad input.

use serde_json::json;

use crate::harness::TestCse;

#[tokio::test]
async fn the_csebase_is_retrievable_by_every_addressing_form() {
    let cse = TestCse::spawn(|_| {}).await;
    for path in [
        "/cse-in",
        "/id-in",
        "/~/id-in/cse-in",
        "/~/id-in/-",
        "/_/acme.example.com/id-in/cse-in",
        "/-",
    ] {
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

    let reply = cse
        .create(
            "/cse-in/myAE",
            "Cmyapp",
            3,
            json!({"m2m:cnt": {"rn": "cnt", "mni": 2}}),
        )
        .await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    assert_eq!(reply.header("content-location"), Some("cse-in/myAE/cnt"));
    for value in ["a", "b", "c"] {
        let reply = cse
            .create(
                "/cse-in/myAE/cnt",
                "Cmyapp",
                4,
                json!({"m2m:cin": {"con": value}}),
            )
            .await;
        assert_eq!(reply.rsc, 2001, "{reply:?}");
    }
    let container = cse.retrieve("/cse-in/myAE/cnt", "Cmyapp").await;
    assert_eq!(container.body["m2m:cnt"]["cni"], 2, "mni evicts the oldest");
    assert_eq!(container.body["m2m:cnt"]["cbs"], 2);
    assert_eq!(container.body["m2m:cnt"]["st"], 3);
    assert_eq!(
        cse.retrieve("/cse-in/myAE/cnt/la", "Cmyapp").await.body["m2m:cin"]["con"],
        "c"
    );
    assert_eq!(
        cse.retrieve("/cse-in/myAE/cnt/ol", "Cmyapp").await.body["m2m:cin"]["con"],
        "b"
    );
    cse.shutdown().await;
}
