//! Announcement: an MN's resources announced to its IN, kept current, withdrawn, and
//! made again whenever they were lost. Real CSEs on loopback.

use std::time::Duration;

use acme_cse::config::CseKind;
use acme_cse::core::request::{Operation, Request};
use serde_json::{Value, json};

use crate::harness::{Proxy, TestCse, eventually, on_disk, registrar_settings, registree_settings};

const DEADLINE: Duration = Duration::from_secs(10);

/// An IN and an MN registered to it.
async fn pair() -> (TestCse, TestCse) {
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert!(mn.remote.is_registered());
    (in_cse, mn)
}

/// The `at` of the resource at `path` on `cse` once its entry for the IN is announced:
/// the copy's ID there.
async fn announced_copy(cse: &TestCse, path: &str) -> String {
    announced_to(cse, path, "/id-in/").await
}

/// The same for the entry naming the CSE of `prefix` (`/id-mn/`).
async fn announced_to(cse: &TestCse, path: &str, prefix: &str) -> String {
    let entry = || async {
        let reply = cse.retrieve(path, "CAdmin").await;
        let resource = reply.body.as_object().and_then(|body| body.values().next()).cloned().unwrap_or_default();
        let entries: Vec<String> =
            resource["at"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
        entries.into_iter().find(|entry| entry.starts_with(prefix))
    };
    eventually(&format!("{path} announced to {prefix}"), DEADLINE, || async { entry().await.is_some() }).await;
    entry().await.unwrap_or_default()
}

/// The copy `id` (`/id-in/<ri>`) as the IN holds it, read by the admin.
async fn copy_at_in(in_cse: &TestCse, id: &str) -> (u16, Value) {
    let ri = id.trim_start_matches("/id-in/");
    let reply = in_cse.retrieve(&format!("/{ri}"), "CAdmin").await;
    let body = reply.body.as_object().and_then(|body| body.values().next()).cloned().unwrap_or_default();
    (reply.rsc, body)
}

async fn wait_for_copy(in_cse: &TestCse, id: &str, what: &str, check: impl Fn(u16, &Value) -> bool) {
    eventually(what, DEADLINE, || {
        let copy = copy_at_in(in_cse, id);
        let check = &check;
        async move {
            let (rsc, body) = copy.await;
            check(rsc, &body)
        }
    })
    .await;
}

#[tokio::test]
async fn an_mn_announces_to_its_in_keeps_the_copies_current_and_withdraws_them() {
    let (in_cse, mn) = pair().await;

    // An ACP: pv and pvs copied, IDs made SP-relative. It lets anybody read the AE below.
    let acp = mn
        .create(
            "/cse-mn",
            "CAdmin",
            1,
            json!({"m2m:acp": {"rn": "policy", "at": ["/id-in"],
                "pv": {"acr": [{"acor": ["Cfriend", "all"], "acop": 2}]},
                "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}}),
        )
        .await;
    assert_eq!(acp.rsc, 2001, "{acp:?}");
    let acp_copy = announced_copy(&mn, "/cse-mn/policy").await;
    let (_, copy) = copy_at_in(&in_cse, &acp_copy).await;
    assert_eq!(copy["ty"], 10001);
    assert_eq!(copy["pv"]["acr"][0]["acor"], json!(["/id-mn/Cfriend", "all"]));
    assert_eq!(copy["pvs"]["acr"][0]["acor"], json!(["/id-mn/CAdmin"]));

    let acp_ri = acp.body["m2m:acp"]["ri"].as_str().expect("ri").to_string();

    // An AE announced: MA attributes and the link, below the MN's CSR at the IN.
    let ae = mn
        .create(
            "/cse-mn",
            "Csensor",
            2,
            json!({"m2m:ae": {"rn": "sensor", "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"], "lbl": ["L"],
                "aa": ["api", "ri"], "acpi": [acp_ri]}}),
        )
        .await;
    assert_eq!(ae.rsc, 2001, "{ae:?}");
    assert_eq!(ae.body["m2m:ae"]["aa"], json!(["api"]), "unannounceable names are dropped from aa");
    let ae_ri = ae.body["m2m:ae"]["ri"].as_str().expect("ri").to_string();
    let ae_copy = announced_copy(&mn, "/cse-mn/sensor").await;
    let (rsc, copy) = copy_at_in(&in_cse, &ae_copy).await;
    assert_eq!(rsc, 2000);
    assert_eq!(copy["ty"], 10002);
    assert_eq!(copy["lnk"], format!("/id-mn/{ae_ri}"));
    assert_eq!(copy["lbl"], json!(["L"]));
    assert_eq!(copy["srv"], json!(["4"]));
    assert_eq!(copy["api"], "Nx");
    assert_eq!(copy["pi"], "id-mn", "below the MN's CSR at the IN");
    assert_eq!(copy["acpi"], json!([format!("/id-mn/{acp_ri}")]));
    assert!(copy.get("rr").is_none(), "rr is not listed in aa");

    // A container of that AE: below the AE's copy, with its OA attributes from aa.
    let cnt = mn
        .create(
            "/cse-mn/sensor",
            "CAdmin",
            3,
            json!({"m2m:cnt": {"rn": "temp", "mni": 5, "at": ["/id-in"], "aa": ["mni"]}}),
        )
        .await;
    assert_eq!(cnt.rsc, 2001, "{cnt:?}");
    let cnt_copy = announced_copy(&mn, "/cse-mn/sensor/temp").await;
    let (_, copy) = copy_at_in(&in_cse, &cnt_copy).await;
    assert_eq!(copy["ty"], 10003);
    assert_eq!(copy["mni"], 5);
    assert_eq!(copy["pi"], ae_copy.trim_start_matches("/id-in/"));
    assert!(copy.get("cni").is_none() && copy.get("st").is_none());

    // Discovery at the IN finds what the MN announced.
    let found = in_cse.retrieve("/cse-in?fu=1&ty=10002&drt=2", "CAdmin").await;
    assert!(found.uril().iter().any(|uri| uri.ends_with(ae_copy.trim_start_matches("/id-in/"))), "{found:?}");

    // rcn=7: the original, through the link, in the requester's name.
    let original = in_cse.retrieve(&format!("/{}?rcn=7", ae_copy.trim_start_matches("/id-in/")), "CAdmin").await;
    assert_eq!(original.rsc, 2000, "{original:?}");
    assert_eq!(original.body["m2m:ae"]["ri"], ae_ri.as_str());
    assert_eq!(original.body["m2m:ae"]["at"], json!([ae_copy]));

    // Access: the announcing CSE and the admin; nobody else.
    assert_eq!(in_cse.retrieve(&format!("/{}", ae_copy.trim_start_matches("/id-in/")), "Cother").await.rsc, 4103);
    let acp_copy_ri = acp_copy.trim_start_matches("/id-in/");
    assert_eq!(in_cse.retrieve(&format!("/{acp_copy_ri}"), "Cother").await.rsc, 4103, "an ACP's copy: its pvs");
    // The MN's admin (as /id-mn/CAdmin, through the MN) is named in the copied pvs.
    let by_mn_admin = mn.retrieve(&format!("/~/id-in/{acp_copy_ri}"), "CAdmin").await;
    assert_eq!(by_mn_admin.rsc, 2000, "{by_mn_admin:?}");
    assert_eq!(in_cse.retrieve(&format!("/{}", ae_copy.trim_start_matches("/id-in/")), "/id-mn").await.rsc, 2000);
    // Nobody but the MN announces for the MN.
    let forged = in_cse
        .create("/cse-in/id-mn", "/id-asn", 10002, json!({"m2m:aeA": {"lnk": "/id-mn/Cx", "lbl": ["forged"]}}))
        .await;
    assert_eq!(forged.rsc, 4103, "{forged:?}");
    let no_link = in_cse.create("/cse-in/id-mn", "/id-mn", 10002, json!({"m2m:aeA": {"lbl": ["x"]}})).await;
    assert_eq!(no_link.rsc, 4000, "lnk is mandatory: {no_link:?}");
    let unknown =
        in_cse.create("/cse-in/id-mn", "/id-mn", 10003, json!({"m2m:cntA": {"lnk": "/id-mn/cnt1", "cni": 3}})).await;
    assert_eq!(unknown.rsc, 4000, "cni is not announced: {unknown:?}");
    let csr_copy = in_cse
        .create(
            "/cse-in/id-mn",
            "/id-mn",
            10016,
            json!({"m2m:csrA": {"lnk": "/id-mn/id-asn", "csi": "/id-asn", "srv": ["4"]}}),
        )
        .await;
    assert_eq!(csr_copy.rsc, 2001, "a remoteCSE's copy: {csr_copy:?}");
    assert_eq!(csr_copy.body["m2m:csrA"]["ty"], 10016);

    // Updates reach the copies: announced attributes only, removed ones removed.
    assert_eq!(mn.update("/cse-mn/sensor", "CAdmin", json!({"m2m:ae": {"lbl": ["M"]}})).await.rsc, 2004);
    wait_for_copy(&in_cse, &ae_copy, "the new label at the IN", |_, copy| copy["lbl"] == json!(["M"])).await;
    assert_eq!(mn.update("/cse-mn/sensor/temp", "CAdmin", json!({"m2m:cnt": {"aa": null}})).await.rsc, 2004);
    wait_for_copy(&in_cse, &cnt_copy, "mni no longer announced", |_, copy| copy.get("mni").is_none()).await;

    // at removed: the copy goes; at again: a new copy.
    assert_eq!(mn.update("/cse-mn/sensor/temp", "CAdmin", json!({"m2m:cnt": {"at": null}})).await.rsc, 2004);
    wait_for_copy(&in_cse, &cnt_copy, "the container's copy withdrawn", |rsc, _| rsc == 4004).await;
    assert_eq!(mn.update("/cse-mn/sensor/temp", "CAdmin", json!({"m2m:cnt": {"at": ["/id-in"]}})).await.rsc, 2004);
    let again = announced_copy(&mn, "/cse-mn/sensor/temp").await;
    assert_ne!(again, cnt_copy);

    // Deleting the AE withdraws its copy (and with it the container's).
    assert_eq!(mn.delete("/cse-mn/sensor", "CAdmin").await.rsc, 2002);
    wait_for_copy(&in_cse, &ae_copy, "the AE's copy withdrawn", |rsc, _| rsc == 4004).await;
    wait_for_copy(&in_cse, &again, "the container's copy gone with it", |rsc, _| rsc == 4004).await;

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn announcements_wait_for_an_unreachable_registrar_and_are_made_again_after_it_lost_its_data() {
    let in_first = TestCse::start(registrar_settings()).await;
    let proxy = Proxy::start(in_first.addr).await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_first));
    if let Some(registrar) = settings.cse.registrar.as_mut() {
        registrar.address = vec![proxy.url.clone()];
    }
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert!(mn.remote.is_registered());

    // The registrar cannot be reached: the AE is created, its announcement waits.
    proxy.switch(false);
    let ae = mn
        .create(
            "/cse-mn",
            "Cwaiting",
            2,
            json!({"m2m:ae": {"rn": "waiting", "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"]}}),
        )
        .await;
    assert_eq!(ae.rsc, 2001, "{ae:?}");
    assert_eq!(ae.body["m2m:ae"]["at"], json!(["/id-in"]));
    mn.remote.check_now().await.expect("monitor runs");
    assert!(!in_first.retrieve("/cse-in/id-mn?fu=1&ty=10002", "CAdmin").await.uril().iter().any(|_| true));

    // Reached again: announced.
    proxy.switch(true);
    mn.remote.check_now().await.expect("monitor runs");
    let copy = announced_copy(&mn, "/cse-mn/waiting").await;
    assert_eq!(copy_at_in(&in_first, &copy).await.0, 2000);

    // The IN restarts on an empty database: the MN registers again and announces anew.
    let address = in_first.addr;
    in_first.shutdown().await;
    let mut settings = registrar_settings();
    settings.http.listen = address.to_string();
    let in_second = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    eventually("the AE announced to the new IN", DEADLINE, || {
        let reply = in_second.retrieve("/cse-in/id-mn?fu=1&ty=10002&drt=2", "CAdmin");
        async move { reply.await.uril().len() == 1 }
    })
    .await;
    let second = &in_second;
    eventually("the MN's at names a copy the new IN holds", DEADLINE, || {
        let reply = mn.retrieve("/cse-mn/waiting", "CAdmin");
        async move {
            let at = reply.await.body["m2m:ae"]["at"].clone();
            match at.as_array().map(Vec::as_slice) {
                Some([entry]) => copy_at_in(second, entry.as_str().unwrap_or_default()).await.0 == 2000,
                _ => false,
            }
        }
    })
    .await;

    mn.shutdown().await;
    in_second.shutdown().await;
}

#[tokio::test]
async fn a_restarted_mn_keeps_its_copies_without_duplicates_and_a_departed_one_leaves_none() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = || {
        let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
        on_disk(&mut settings, &dir.path().join("mn.db"));
        settings.cse.registration.unregister_when_stopping = false;
        settings
    };
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    let body = json!({"m2m:ae": {"rn": "kept", "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"]}});
    assert_eq!(mn.create("/cse-mn", "Ckept", 2, body).await.rsc, 2001);
    let copy = announced_copy(&mn, "/cse-mn/kept").await;
    mn.shutdown().await;

    // Restarted on its database: the same copy, current, and no second one.
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(mn.update("/cse-mn/kept", "Ckept", json!({"m2m:ae": {"lbl": ["after"]}})).await.rsc, 2004);
    wait_for_copy(&in_cse, &copy, "the label after the restart", |_, body| body["lbl"] == json!(["after"])).await;
    let copies = in_cse.retrieve("/cse-in/id-mn?fu=1&ty=10002&drt=2", "CAdmin").await.uril();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(announced_copy(&mn, "/cse-mn/kept").await, copy);

    // A CSE that announces the reference CSE's way (an announced CSEBase below the IN's
    // CSEBase) leaves nothing behind when its registration goes.
    let anchor = in_cse
        .create(
            "/cse-in",
            "/id-mn",
            10005,
            json!({"m2m:cbA": {"rn": "id-mn-anchor", "lnk": "/id-mn/cse-mn", "srv": ["4"]}}),
        )
        .await;
    assert_eq!(anchor.rsc, 2001, "{anchor:?}");
    let twice = in_cse.create("/cse-in", "/id-mn", 10005, json!({"m2m:cbA": {"lnk": "/id-mn/cse-mn"}})).await;
    assert_eq!(twice.rsc, 4105, "one announced CSEBase per CSE: {twice:?}");
    let below = in_cse
        .create("/cse-in/id-mn-anchor", "/id-mn", 10003, json!({"m2m:cntA": {"lnk": "/id-mn/cntX", "mni": 3}}))
        .await;
    assert_eq!(below.rsc, 2001, "{below:?}");
    mn.shutdown().await;
    assert_eq!(in_cse.delete("/cse-in/id-mn", "CAdmin").await.rsc, 2002);
    assert_eq!(in_cse.retrieve("/cse-in/id-mn-anchor", "CAdmin").await.rsc, 4004);
    assert_eq!(copy_at_in(&in_cse, &copy).await.0, 4004);
    in_cse.shutdown().await;
}

#[tokio::test]
async fn copies_the_mn_could_not_withdraw_before_a_restart_are_swept_and_a_dead_mn_leaves_none() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let proxy = Proxy::start(in_cse.addr).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = || {
        let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
        on_disk(&mut settings, &dir.path().join("mn.db"));
        settings.cse.registration.unregister_when_stopping = false;
        if let Some(registrar) = settings.cse.registrar.as_mut() {
            registrar.address = vec![proxy.url.clone()];
        }
        settings
    };
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    for rn in ["gone", "stays"] {
        let body = json!({"m2m:ae": {"rn": rn, "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"]}});
        assert_eq!(mn.create("/cse-mn", &format!("C{rn}"), 2, body).await.rsc, 2001);
    }
    let gone = announced_copy(&mn, "/cse-mn/gone").await;
    let stays = announced_copy(&mn, "/cse-mn/stays").await;

    // Deleted while the IN cannot be reached, and the MN restarts before it can be: the
    // withdrawal it owed is found at the next registration.
    proxy.switch(false);
    assert_eq!(mn.delete("/cse-mn/gone", "Cgone").await.rsc, 2002);
    mn.shutdown().await;
    assert_eq!(copy_at_in(&in_cse, &gone).await.0, 2000, "still there: nobody told the IN");
    proxy.switch(true);
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    wait_for_copy(&in_cse, &gone, "the stale copy swept", |rsc, _| rsc == 4004).await;
    assert_eq!(copy_at_in(&in_cse, &stays).await.0, 2000);

    // The MN dies (no deregistration): the IN's liveliness rounds remove its CSR and with
    // it everything it announced.
    mn.shutdown().await;
    for _ in 0..3 {
        in_cse.remote.check_now().await.expect("monitor runs");
    }
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);
    assert_eq!(copy_at_in(&in_cse, &stays).await.0, 4004);
    in_cse.shutdown().await;
}

#[tokio::test]
async fn announcements_reach_csees_that_are_not_the_registrar_below_an_announced_csebase() {
    // IN ← MN ← ASN.
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn))).await;
    asn.remote.check_now().await.expect("monitor runs");
    eventually("the IN routes to the ASN", DEADLINE, || {
        let known = in_cse.remote.csr_for("/id-asn").is_some();
        async move { known }
    })
    .await;
    let ae = |rn: &str, target: &str| json!({"m2m:ae": {"rn": rn, "api": "Nx", "rr": false, "srv": ["4"], "at": [target], "lbl": [rn]}});

    // The MN announces to its registrar (below its CSR); the ASN to the IN, two hops up
    // (below its announced CSEBase there); the IN down to the MN (likewise).
    assert_eq!(mn.create("/cse-mn", "Cmnae", 2, ae("mnae", "/id-in")).await.rsc, 2001);
    assert_eq!(asn.create("/cse-asn", "Casnae", 2, ae("asnae", "/id-in")).await.rsc, 2001);
    assert_eq!(in_cse.create("/cse-in", "Cinae", 2, ae("inae", "/id-mn")).await.rsc, 2001);
    let mn_copy = announced_copy(&mn, "/cse-mn/mnae").await;
    let asn_copy = announced_copy(&asn, "/cse-asn/asnae").await;
    let (_, copy) = copy_at_in(&in_cse, &asn_copy).await;
    assert_eq!(
        copy["lnk"],
        format!(
            "/id-asn/{}",
            asn.retrieve("/cse-asn/asnae", "CAdmin").await.body["m2m:ae"]["ri"].as_str().unwrap_or_default()
        )
    );
    let anchor = in_cse.retrieve(&format!("/{}", copy["pi"].as_str().unwrap_or_default()), "CAdmin").await;
    assert_eq!(anchor.body["m2m:cbA"]["lnk"], "/id-asn/id-asn", "its CSEBase, by ri: {anchor:?}");
    assert_eq!(anchor.body["m2m:cbA"]["ty"], 10005);

    let down = announced_to(&in_cse, "/cse-in/inae", "/id-mn/").await;
    let copy = mn.retrieve(&format!("/{}", down.trim_start_matches("/id-mn/")), "CAdmin").await;
    assert_eq!(copy.rsc, 2000, "{copy:?}");
    assert_eq!(copy.body["m2m:aeA"]["lbl"], json!(["inae"]));

    // Discovery at the IN finds what the whole tree announced to it.
    let found = in_cse.retrieve("/cse-in?fu=1&ty=10002&drt=2", "CAdmin").await.uril();
    for copy in [&mn_copy, &asn_copy] {
        let ri = copy.trim_start_matches("/id-in/");
        assert!(found.iter().any(|uri| uri.ends_with(ri)), "{ri} not in {found:?}");
    }

    // The MN registers anew (the IN dropped its CSR): what the IN announced to the MN
    // stays there (the MN's record of its registrar is replaced, not what hangs on it).
    assert_eq!(in_cse.delete("/cse-in/id-mn", "CAdmin").await.rsc, 2002);
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000, "registered again");
    let kept = mn.retrieve(&format!("/{}", down.trim_start_matches("/id-mn/")), "CAdmin").await;
    assert_eq!(kept.rsc, 2000, "{kept:?}");
    let mn_copy = announced_copy(&mn, "/cse-mn/mnae").await;

    // The MN's registration goes, and what it announced with it; not what the ASN
    // announced through it (a registree's dcse is its claim, not proof: it must not be
    // able to remove what another CSE announced).
    asn.shutdown().await;
    mn.shutdown().await;
    assert_eq!(copy_at_in(&in_cse, &mn_copy).await.0, 4004);
    assert_eq!(copy_at_in(&in_cse, &asn_copy).await.0, 2000);
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_resource_announced_to_its_own_cse_gets_a_local_copy_that_follows_it() {
    let cse = TestCse::start(registrar_settings()).await;
    let body = json!({"m2m:cnt": {"rn": "here", "at": ["/id-in"], "lbl": ["one"]}});
    assert_eq!(cse.create("/cse-in", "CAdmin", 3, body).await.rsc, 2001);
    let copy = announced_copy(&cse, "/cse-in/here").await;
    let (rsc, body) = copy_at_in(&cse, &copy).await;
    assert_eq!(rsc, 2000);
    assert_eq!(body["ty"], 10003);
    assert_eq!(body["lbl"], json!(["one"]));
    let anchor = cse.retrieve(&format!("/{}", body["pi"].as_str().unwrap_or_default()), "CAdmin").await;
    assert_eq!(anchor.body["m2m:cbA"]["lnk"], "/id-in/id-in", "{anchor:?}");

    assert_eq!(cse.update("/cse-in/here", "CAdmin", json!({"m2m:cnt": {"lbl": ["two"]}})).await.rsc, 2004);
    wait_for_copy(&cse, &copy, "the local copy updated", |_, body| body["lbl"] == json!(["two"])).await;
    assert_eq!(cse.delete("/cse-in/here", "CAdmin").await.rsc, 2002);
    wait_for_copy(&cse, &copy, "the local copy withdrawn", |rsc, _| rsc == 4004).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn a_copy_synchronised_both_ways_writes_its_changes_back_to_the_original() {
    let (in_cse, mn) = pair().await;
    let body = json!({"m2m:cnt": {"rn": "both", "at": ["/id-in"], "ast": 2, "mni": 5, "aa": ["mni"]}});
    assert_eq!(mn.create("/cse-mn", "CAdmin", 3, body).await.rsc, 2001);
    let copy = announced_copy(&mn, "/cse-mn/both").await;
    let copy_ri = copy.trim_start_matches("/id-in/");
    let changed =
        in_cse.update(&format!("/{copy_ri}"), "CAdmin", json!({"m2m:cntA": {"lbl": ["from the IN"], "mni": 9}})).await;
    assert_eq!(changed.rsc, 2004, "{changed:?}");
    eventually("the original follows its copy", DEADLINE, || {
        let reply = mn.retrieve("/cse-mn/both", "CAdmin");
        async move {
            let original = reply.await.body["m2m:cnt"].clone();
            original["lbl"] == json!(["from the IN"]) && original["mni"] == 9
        }
    })
    .await;

    // The IN may write back what the copy was given, and nothing more.
    let cnt_ri =
        mn.retrieve("/cse-mn/both", "CAdmin").await.body["m2m:cnt"]["ri"].as_str().unwrap_or_default().to_string();
    let as_the_in = |content: serde_json::Value| {
        let mut request = Request::new(Operation::Update, format!("/id-mn/{cnt_ri}"), Some("/id-in"));
        request.content = Some(content);
        in_cse.cse.handle(request)
    };
    assert_eq!(as_the_in(json!({"m2m:cnt": {"mni": 3}})).await.rsc.code(), 2004, "mni is in aa");
    for beyond in
        [json!({"m2m:cnt": {"mbs": 5}}), json!({"m2m:cnt": {"at": ["/id-evil"]}}), json!({"m2m:cnt": {"ast": 1}})]
    {
        let refused = as_the_in(beyond.clone()).await;
        assert_eq!(refused.rsc.code(), 4103, "{beyond}: {refused:?}");
    }

    // at entries must name CSEs.
    for wrong in [json!(["/"]), json!(["/id in"]), json!(["Cae"])] {
        let body = json!({"m2m:cnt": {"at": wrong}});
        assert_eq!(mn.create("/cse-mn", "CAdmin", 3, body).await.rsc, 4000, "{wrong}");
    }

    // One way only (no ast): the original stays as it is.
    let body = json!({"m2m:cnt": {"rn": "one", "at": ["/id-in"], "lbl": ["mine"]}});
    assert_eq!(mn.create("/cse-mn", "CAdmin", 3, body).await.rsc, 2001);
    let copy = announced_copy(&mn, "/cse-mn/one").await;
    let changed = in_cse
        .update(&format!("/{}", copy.trim_start_matches("/id-in/")), "CAdmin", json!({"m2m:cntA": {"lbl": ["x"]}}))
        .await;
    assert_eq!(changed.rsc, 2004);
    // The next change the MN makes shows its value again, and nothing came back.
    assert_eq!(mn.update("/cse-mn/one", "CAdmin", json!({"m2m:cnt": {"lbl": ["still mine"]}})).await.rsc, 2004);
    wait_for_copy(&in_cse, &copy, "the copy follows the original", |_, body| body["lbl"] == json!(["still mine"]))
        .await;
    assert_eq!(mn.retrieve("/cse-mn/one", "CAdmin").await.body["m2m:cnt"]["lbl"], json!(["still mine"]));
    // The MN may not be written to by the IN without ast 2.
    let refused = in_cse.update("/~/id-mn/cse-mn/one", "CAdmin", json!({"m2m:cnt": {"lbl": ["y"]}})).await;
    assert_eq!(refused.rsc, 4103, "{refused:?}");

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn instances_announce_below_their_containers_copy_and_copies_can_be_subscribed_to() {
    let (in_cse, mn) = pair().await;
    let receiver = crate::harness::Receiver::start().await;

    // A container announced to the IN and to the MN itself; an instance below it.
    let body = json!({"m2m:cnt": {"rn": "box", "at": ["/id-in", "/id-mn"], "lbl": ["a"]}});
    assert_eq!(mn.create("/cse-mn", "CAdmin", 3, body).await.rsc, 2001);
    let box_copy = announced_copy(&mn, "/cse-mn/box").await;
    let local = announced_to(&mn, "/cse-mn/box", "/id-mn/").await;
    let body = json!({"m2m:cin": {"rn": "reading", "con": "21.5", "at": ["/id-in"], "aa": ["con"]}});
    assert_eq!(mn.create("/cse-mn/box", "CAdmin", 4, body).await.rsc, 2001);
    let cin_copy = announced_copy(&mn, "/cse-mn/box/reading").await;
    let (_, copy) = copy_at_in(&in_cse, &cin_copy).await;
    assert_eq!(copy["ty"], 10004);
    assert_eq!(copy["con"], "21.5");
    assert_eq!(copy["pi"], box_copy.trim_start_matches("/id-in/"), "below the container's copy");

    // A subscription on the container's copy at the IN hears the original's changes.
    let box_ri = box_copy.trim_start_matches("/id-in/");
    let subscription = json!({"m2m:sub": {"rn": "watch", "nu": [receiver.url], "enc": {"net": [1]}}});
    let created = in_cse.create(&format!("/{box_ri}"), "CAdmin", 23, subscription).await;
    assert_eq!(created.rsc, 2001, "{created:?}");
    assert_eq!(mn.update("/cse-mn/box", "CAdmin", json!({"m2m:cnt": {"lbl": ["b"]}})).await.rsc, 2004);
    eventually("the copy's subscriber notified", DEADLINE, || {
        let heard = receiver.events().iter().any(|sgn| sgn["nev"]["rep"]["m2m:cntA"]["lbl"] == json!(["b"]));
        async move { heard }
    })
    .await;

    // One entry of two removed from at: that copy goes, the other stays.
    let at = json!({"m2m:cnt": {"at": [local]}});
    assert_eq!(mn.update("/cse-mn/box", "CAdmin", at).await.rsc, 2004);
    wait_for_copy(&in_cse, &box_copy, "the IN's copy withdrawn", |rsc, _| rsc == 4004).await;
    let local_ri = local.trim_start_matches("/id-mn/");
    assert_eq!(mn.retrieve(&format!("/{local_ri}"), "CAdmin").await.rsc, 2000, "the local copy stays");
    // The instance's copy went with the container's; the instance waits for its container.
    assert_eq!(copy_at_in(&in_cse, &cin_copy).await.0, 4004);
    eventually("the instance's entry is pending again", DEADLINE, || async {
        mn.retrieve("/cse-mn/box/reading", "CAdmin").await.body["m2m:cin"]["at"] == json!(["/id-in"])
    })
    .await;

    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn after_deregistering_no_at_entry_names_a_copy_that_went_with_the_registration() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let proxy = Proxy::start(in_cse.addr).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = || {
        let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
        on_disk(&mut settings, &dir.path().join("mn.db"));
        if let Some(registrar) = settings.cse.registrar.as_mut() {
            registrar.address = vec![proxy.url.clone()];
        }
        settings
    };
    let mn = TestCse::start(settings()).await;
    mn.remote.check_now().await.expect("monitor runs");
    let body = json!({"m2m:ae": {"rn": "left", "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"]}});
    assert_eq!(mn.create("/cse-mn", "Cleft", 2, body).await.rsc, 2001);
    let copy = announced_copy(&mn, "/cse-mn/left").await;

    // A graceful stop deregisters: the copy goes with the CSR, and `at` says so.
    mn.shutdown().await;
    assert_eq!(copy_at_in(&in_cse, &copy).await.0, 4004);
    proxy.switch(false);
    let mn = TestCse::start(settings()).await;
    assert_eq!(mn.retrieve("/cse-mn/left", "CAdmin").await.body["m2m:ae"]["at"], json!(["/id-in"]));

    // Registered again: announced anew.
    proxy.switch(true);
    mn.remote.check_now().await.expect("monitor runs");
    let again = announced_copy(&mn, "/cse-mn/left").await;
    assert_ne!(again, copy);
    assert_eq!(copy_at_in(&in_cse, &again).await.0, 2000);
    mn.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_registrar_that_never_answers_does_not_hold_up_the_stop() {
    let in_cse = TestCse::start(registrar_settings()).await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.http.client_timeout = Duration::from_secs(3600);
    settings.cse.registration.unregister_when_stopping = false;
    let mn = TestCse::start(settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    // The IN goes silent: connections accepted, never answered.
    let address = in_cse.addr;
    in_cse.shutdown().await;
    let silent = tokio::net::TcpListener::bind(address).await.expect("the IN's address again");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            connections.push(connection);
        }
    });
    let body = json!({"m2m:ae": {"rn": "stuck", "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"]}});
    assert_eq!(mn.create("/cse-mn", "Cstuck", 2, body).await.rsc, 2001);
    eventually("the announcer is waiting for the silent IN", DEADLINE, || {
        let count = accepted.load(std::sync::atomic::Ordering::SeqCst);
        async move { count > 0 }
    })
    .await;
    // The harness fails the test unless the stop ends within 20 s.
    mn.shutdown().await;
    held.abort();
}

#[tokio::test]
async fn a_withdrawal_owed_to_a_cse_that_is_not_the_registrar_is_made_after_a_restart() {
    // The IN announces down to its MN, reaching it through a proxy it can lose.
    let dir = tempfile::tempdir().expect("temp dir");
    let in_settings = |listen: &str| {
        let mut settings = registrar_settings();
        on_disk(&mut settings, &dir.path().join("in.db"));
        settings.http.listen = listen.into();
        settings
    };
    let in_cse = TestCse::start(in_settings("127.0.0.1:0")).await;
    let address = in_cse.addr.to_string();
    // The MN advertises the proxy as its address.
    let mn_address: std::net::SocketAddr =
        format!("127.0.0.1:{}", crate::binary::free_port()).parse().expect("an address");
    let proxy = Proxy::start(mn_address).await;
    let mut mn_settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    mn_settings.cse.registration.unregister_when_stopping = false;
    mn_settings.http.listen = mn_address.to_string();
    mn_settings.http.public_url = Some(proxy.url.clone());
    let mn = TestCse::start(mn_settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    for rn in ["down", "kept"] {
        let body = json!({"m2m:ae": {"rn": rn, "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-mn"]}});
        assert_eq!(in_cse.create("/cse-in", &format!("C{rn}"), 2, body).await.rsc, 2001);
    }
    let copy = announced_to(&in_cse, "/cse-in/down", "/id-mn/").await;
    let kept = announced_to(&in_cse, "/cse-in/kept", "/id-mn/").await;
    let copy_path = format!("/{}", copy.trim_start_matches("/id-mn/"));
    assert_eq!(mn.retrieve(&copy_path, "CAdmin").await.rsc, 2000);

    // Deleted while the MN cannot be reached; the IN stops before it can be.
    proxy.switch(false);
    assert_eq!(in_cse.delete("/cse-in/down", "Cdown").await.rsc, 2002);
    in_cse.shutdown().await;
    assert_eq!(mn.retrieve(&copy_path, "CAdmin").await.rsc, 2000, "nobody told the MN");

    // Back on its database: the copy no original names is swept from the MN (which
    // another original still names, so the IN looks there).
    proxy.switch(true);
    let in_cse = TestCse::start(in_settings(&address)).await;
    eventually("the stale copy swept from the MN", DEADLINE, || {
        let reply = mn.retrieve(&copy_path, "CAdmin");
        async move { reply.await.rsc == 4004 }
    })
    .await;
    assert_eq!(mn.retrieve(&format!("/{}", kept.trim_start_matches("/id-mn/")), "CAdmin").await.rsc, 2000);
    mn.shutdown().await;
    in_cse.shutdown().await;
}
