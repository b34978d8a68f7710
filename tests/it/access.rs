//! Access control policies: who may do what, decided on every operation.

use serde_json::json;

use crate::harness::TestCse;

/// An owner AE with a container `cnt` (with one instance) under it.
async fn owned_container(cse: &TestCse) {
    cse.register_ae("Cowner", "owner").await;
    cse.register_ae("Cother", "other").await;
    assert_eq!(cse.create("/cse-in/owner", "Cowner", 3, json!({"m2m:cnt": {"rn": "cnt"}})).await.rsc, 2001);
    assert_eq!(cse.create("/cse-in/owner/cnt", "Cowner", 4, json!({"m2m:cin": {"con": "v"}})).await.rsc, 2001);
}

/// An ACP under the owner AE granting `acop` to `acor`, with `pvs` for the owner.
async fn policy(cse: &TestCse, rn: &str, acor: serde_json::Value, acop: u64) {
    let acp = json!({"m2m:acp": {"rn": rn, "pv": {"acr": [{"acor": acor, "acop": acop}]},
                                 "pvs": {"acr": [{"acor": ["Cowner"], "acop": 63}]}}});
    let reply = cse.create("/cse-in/owner", "Cowner", 1, acp).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
}

#[tokio::test]
async fn a_resource_without_acpi_belongs_to_its_creator_and_the_admin() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    for (op, reply) in [
        ("RETRIEVE", cse.retrieve("/cse-in/owner/cnt", "Cother").await),
        ("UPDATE", cse.update("/cse-in/owner/cnt", "Cother", json!({"m2m:cnt": {"lbl": ["x"]}})).await),
        ("CREATE", cse.create("/cse-in/owner/cnt", "Cother", 4, json!({"m2m:cin": {"con": "w"}})).await),
        ("DELETE", cse.delete("/cse-in/owner/cnt", "Cother").await),
    ] {
        assert_eq!((reply.rsc, reply.status), (4103, 403), "{op}: {reply:?}");
        assert!(reply.dbg().contains(op) && reply.dbg().contains("Cother"), "{op}: {reply:?}");
    }
    // Instances follow their container.
    assert_eq!(cse.retrieve("/cse-in/owner/cnt/la", "Cother").await.rsc, 4103);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt/la", "Cowner").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "CAdmin").await.rsc, 2000);
    let impostor = cse.retrieve("/cse-in/owner/cnt", "/id-in").await;
    assert_eq!(impostor.rsc, 4103, "a client claiming to be the CSE itself: {impostor:?}");
    assert!(impostor.dbg().contains("this CSE itself"), "{impostor:?}");
    assert_eq!(
        cse.retrieve("/cse-in/owner/cnt", "Cowner").await.body["m2m:cnt"]["lbl"],
        json!(null),
        "nothing changed"
    );
    cse.shutdown().await;
}

#[tokio::test]
async fn an_acp_grants_exactly_the_operations_of_its_rules() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    policy(&cse, "readers", json!(["Cother"]), 2).await;
    let reply = cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/readers"]}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");

    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt/la", "Cother").await.rsc, 2000);
    let reply = cse.update("/cse-in/owner/cnt", "Cother", json!({"m2m:cnt": {"lbl": ["x"]}})).await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("UPDATE"), "{reply:?}");
    assert_eq!(cse.delete("/cse-in/owner/cnt", "Cother").await.rsc, 4103);
    // With acpi set, the creator counts no more: only the rules do.
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cowner").await.rsc, 4103);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "CAdmin").await.rsc, 2000);
    cse.shutdown().await;
}

#[tokio::test]
async fn acp_originators_match_by_wildcard() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    policy(&cse, "friends", json!(["Cfriend*", "Cexact"]), 2).await;
    cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/friends"]}})).await;
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cfriend1").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cfriend-of-a-friend").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cexact").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cexact2").await.rsc, 4103);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cfoe").await.rsc, 4103);
    cse.shutdown().await;
}

#[tokio::test]
async fn discovery_leaves_out_what_the_originator_may_not_discover() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    assert_eq!(cse.create("/cse-in/owner", "Cowner", 3, json!({"m2m:cnt": {"rn": "hidden"}})).await.rsc, 2001);
    policy(&cse, "finders", json!(["Cother"]), 32).await;
    cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/finders"]}})).await;

    let reply = cse.retrieve("/cse-in/owner?fu=1&ty=3", "Cother").await;
    assert_eq!(reply.rsc, 2000, "{reply:?}");
    assert_eq!(reply.uril(), ["cse-in/owner/cnt"]);
    // Discovery rights are not retrieve rights.
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 4103);
    let reply = cse.retrieve("/cse-in/owner?fu=1&ty=3", "Cowner").await;
    assert_eq!(reply.uril().len(), 1, "with acpi set the owner lost discovery of cnt: {reply:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn changing_acpi_needs_update_in_the_self_privileges_of_a_referenced_acp() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    // Cother may update the container, but the ACP's pvs names only Cowner.
    policy(&cse, "editors", json!(["Cother"]), 6).await;
    cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/editors"]}})).await;
    assert_eq!(cse.update("/cse-in/owner/cnt", "Cother", json!({"m2m:cnt": {"lbl": ["ok"]}})).await.rsc, 2004);
    let reply = cse.update("/cse-in/owner/cnt", "Cother", json!({"m2m:cnt": {"acpi": ["cse-in/owner/editors"]}})).await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("pvs"), "{reply:?}");
    assert_eq!(
        cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/editors"]}})).await.rsc,
        2004
    );
    cse.shutdown().await;
}

#[tokio::test]
async fn an_acp_is_governed_by_its_self_privileges_only() {
    let cse = TestCse::spawn(|_| {}).await;
    cse.register_ae("Cowner", "owner").await;
    let acp = json!({"m2m:acp": {"rn": "selfless", "pv": {"acr": [{"acor": ["Cowner"], "acop": 63}]},
                                 "pvs": {"acr": [{"acor": ["Cauditor"], "acop": 2}]}}});
    assert_eq!(cse.create("/cse-in/owner", "Cowner", 1, acp).await.rsc, 2001);
    assert_eq!(cse.retrieve("/cse-in/owner/selfless", "Cowner").await.rsc, 4103, "its creator has no pvs rule");
    assert_eq!(cse.retrieve("/cse-in/owner/selfless", "Cauditor").await.rsc, 2000);
    assert_eq!(cse.delete("/cse-in/owner/selfless", "Cauditor").await.rsc, 4103);
    cse.shutdown().await;
}

#[tokio::test]
async fn child_type_and_authentication_conditions_restrict_a_rule() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    let acp = json!({"m2m:acp": {"rn": "conditions", "pv": {"acr": [
        {"acor": ["Cother"], "acop": 1, "acod": [{"chty": [4]}]},
        {"acor": ["Cother"], "acop": 2, "acaf": true}
    ]}, "pvs": {"acr": [{"acor": ["Cowner"], "acop": 63}]}}});
    assert_eq!(cse.create("/cse-in/owner", "Cowner", 1, acp).await.rsc, 2001);
    cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/conditions"]}})).await;
    // CREATE of instances only.
    assert_eq!(cse.create("/cse-in/owner/cnt", "Cother", 4, json!({"m2m:cin": {"con": "w"}})).await.rsc, 2001);
    assert_eq!(cse.create("/cse-in/owner/cnt", "Cother", 3, json!({"m2m:cnt": {"rn": "sub"}})).await.rsc, 4103);
    // RETRIEVE only when authenticated (this request is not).
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 4103);
    cse.shutdown().await;
}

#[tokio::test]
async fn the_csebase_is_readable_by_registered_aes_and_cses_that_may_register() {
    let cse =
        TestCse::spawn(|settings| settings.cse.registration.allowed_csr_originators = vec!["/id-mn".into()]).await;
    cse.register_ae("Cknown", "known").await;
    assert_eq!(cse.retrieve("/cse-in", "Cknown").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in", "/id-mn").await.rsc, 2000);
    let reply = cse.retrieve("/cse-in", "Cstranger").await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    // Anybody may create an ACP under the CSEBase (init/20-acp-create-acps.json), nothing else.
    let acp = json!({"m2m:acp": {"pv": {}, "pvs": {"acr": [{"acor": ["Cknown"], "acop": 63}]}}});
    assert_eq!(cse.create("/cse-in", "Cknown", 1, acp).await.rsc, 2001);
    assert_eq!(cse.create("/cse-in", "Cknown", 3, json!({"m2m:cnt": {}})).await.rsc, 4103);
    cse.shutdown().await;
}

#[tokio::test]
async fn access_checks_can_be_switched_off() {
    let cse = TestCse::spawn(|settings| settings.cse.security.enable_acp_checks = false).await;
    owned_container(&cse).await;
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in", "Cstranger").await.rsc, 2000);
    cse.shutdown().await;
}

/// Let the owner's container `cnt` be governed by an ACP with these `pv` rules (the owner
/// keeps everything through `pvs` and a rule of its own).
async fn governed_by(cse: &TestCse, rules: serde_json::Value) -> u16 {
    let mut rules = rules.as_array().cloned().unwrap_or_default();
    rules.push(json!({"acor": ["Cowner"], "acop": 63}));
    let acp =
        json!({"m2m:acp": {"rn": "rules", "pv": {"acr": rules}, "pvs": {"acr": [{"acor": ["Cowner"], "acop": 63}]}}});
    let reply = cse.create("/cse-in/owner", "Cowner", 1, acp).await;
    if reply.rsc == 2001 {
        let update =
            cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"acpi": ["cse-in/owner/rules"]}})).await;
        assert_eq!(update.rsc, 2004, "{update:?}");
    }
    reply.rsc
}

#[tokio::test]
async fn time_windows_grant_inside_and_not_outside() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    cse.register_ae("Cguest", "guest").await;
    let rules = json!([
        {"acor": ["Cother"], "acop": 2, "acco": [{"actw": ["* * * * * * *"]}]},
        {"acor": ["Cguest"], "acop": 2, "acco": [{"actw": ["0 0 0 1 1 * 2020", "0 0 0 1 1 * 2021"]}]}
    ]);
    assert_eq!(governed_by(&cse, rules).await, 2001);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 2000, "inside its window");
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cguest").await.rsc, 4103, "windows in the past");
    cse.shutdown().await;
}

#[tokio::test]
async fn address_contexts_check_where_the_request_came_from() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    cse.register_ae("Cguest", "guest").await;
    let rules = json!([
        {"acor": ["Cother"], "acop": 2, "acco": [{"acip": {"ipv4": ["127.0.0.0/8"]}}]},
        {"acor": ["Cguest"], "acop": 2, "acco": [{"acip": {"ipv4": ["10.0.0.0/8"], "ipv6": ["fd00::/8"]}}]}
    ]);
    assert_eq!(governed_by(&cse, rules).await, 2001);
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 2000, "from loopback");
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cguest").await.rsc, 4103, "not from its network");
    cse.shutdown().await;
}

#[tokio::test]
async fn contexts_and_object_details_are_checked_when_an_acp_is_created() {
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    for (rule, rsc, keyword) in [
        (json!({"acco": [{"actw": ["bogus"]}]}), 4000, "7 fields"),
        (json!({"acco": [{"actw": ["*/0 * * * * * *"]}]}), 4000, "step"),
        (json!({"acco": [{"actw": []}]}), 4000, "actw"),
        (json!({"acco": [{}]}), 4000, "acco"),
        (json!({"acco": [{"acip": {"ipv4": ["not-an-ip"]}}]}), 4000, "acip"),
        (json!({"acco": [{"acip": {"ipv4": ["fd00::1"]}}]}), 4000, "acip"),
        (json!({"acco": [{"aclr": {"accc": ["JP"]}}]}), 5001, "aclr"),
        (json!({"acod": [{"chty": null}]}), 4000, "chty"),
        (json!({"acod": [{"chty": [999]}]}), 4000, "chty"),
        (json!({"acod": [{"ty": 3}]}), 4000, "chty"),
        (json!({"acod": [{"chty": [3], "foo": 1}]}), 4000, "foo"),
        (json!({"aca": []}), 4000, "aca"),
    ] {
        let mut rule = rule.as_object().cloned().unwrap_or_default();
        rule.insert("acor".into(), json!(["Cother"]));
        rule.insert("acop".into(), json!(2));
        let acp =
            json!({"m2m:acp": {"pv": {"acr": [rule.clone()]}, "pvs": {"acr": [{"acor": ["Cowner"], "acop": 63}]}}});
        let reply = cse.create("/cse-in/owner", "Cowner", 1, acp).await;
        assert_eq!(reply.rsc, rsc, "{rule:?}: {reply:?}");
        assert!(reply.dbg().contains(keyword), "{rule:?}: {reply:?}");
    }
    cse.shutdown().await;
}

#[tokio::test]
async fn attribute_level_rules_grant_only_their_attributes_and_only_to_their_originators() {
    // Arrange: Cother may read and update the labels of the container, nothing else.
    let cse = TestCse::spawn(|_| {}).await;
    owned_container(&cse).await;
    cse.register_ae("Cstranger", "stranger").await;
    let update = cse.update("/cse-in/owner/cnt", "Cowner", json!({"m2m:cnt": {"lbl": ["kitchen"]}})).await;
    assert_eq!(update.rsc, 2004);
    let rules = json!([{"acor": ["Cother"], "acop": 6, "aca": ["lbl"]}]);
    assert_eq!(governed_by(&cse, rules).await, 2001);
    // Act + Assert
    assert_eq!(cse.retrieve("/cse-in/owner/cnt", "Cother").await.rsc, 4103, "not the whole container");
    let labels = cse.retrieve("/cse-in/owner/cnt?atrl=lbl", "Cother").await;
    assert_eq!(labels.rsc, 2000, "{labels:?}");
    assert_eq!(labels.body, json!({"m2m:cnt": {"lbl": ["kitchen"]}}));
    assert_eq!(cse.retrieve("/cse-in/owner/cnt?atrl=lbl+mni", "Cother").await.rsc, 4103);
    assert_eq!(cse.update("/cse-in/owner/cnt", "Cother", json!({"m2m:cnt": {"lbl": ["hall"]}})).await.rsc, 2004);
    assert_eq!(cse.update("/cse-in/owner/cnt", "Cother", json!({"m2m:cnt": {"mni": 3}})).await.rsc, 4103);
    assert_eq!(cse.delete("/cse-in/owner/cnt", "Cother").await.rsc, 4103);
    // The reference CSE grants these attributes to anybody; here only to the rule's acor.
    assert_eq!(cse.retrieve("/cse-in/owner/cnt?atrl=lbl", "Cstranger").await.rsc, 4103);
    // Attribute grants never make a resource discoverable.
    assert!(cse.retrieve("/cse-in/owner?fu=1", "Cother").await.uril().is_empty());
    cse.shutdown().await;
}
