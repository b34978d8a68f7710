//! Liveliness of registrees at the registrar: registrees that never answer must not delay
//! the verdict on the others.

use std::time::Duration;

use acme_cse::config::CseKind;
use serde_json::json;

use crate::harness::{TestCse, black_hole, registrar_settings, registree_settings};

/// A check round, which must end: the old monitor waited for every probe.
async fn round(cse: &TestCse) {
    tokio::time::timeout(Duration::from_secs(60), cse.remote.check_now())
        .await
        .expect("a round ends whatever the registrees do")
        .expect("monitor runs");
}

#[tokio::test]
async fn registrees_that_never_answer_do_not_delay_the_verdict_on_one_that_is_gone() {
    // Arrange: probes give up only after an hour, four at a time, removal after two
    // failures. Twelve registrees whose poa accepts connections and never answers.
    let mut settings = registrar_settings();
    settings.cse.registration.liveliness_timeout = Duration::from_secs(3600);
    settings.cse.registration.liveliness_parallelism = 4;
    settings.cse.registration.liveliness_failures = 2;
    let in_cse = TestCse::start(settings).await;
    let (hole, _hole) = black_hole().await;
    for n in 0..12 {
        let csi = format!("/id-mnhole{n}");
        let body = json!({"m2m:csr": {"cb": format!("{csi}/cse"), "rr": true, "srv": ["3"], "poa": [hole]}});
        let created = in_cse.create("/cse-in", &csi, 16, body).await;
        assert_eq!(created.rsc, 2001, "{created:?}");
    }
    // A real MN registers, then stops without deregistering: its poa now refuses.
    let mut mn_settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    mn_settings.cse.registration.unregister_when_stopping = false;
    let mn = TestCse::start(mn_settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    mn.shutdown().await;

    // Act: two rounds.
    round(&in_cse).await;
    round(&in_cse).await;

    // Assert: the MN is judged and removed; the silent ones are still being probed.
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004, "the gone MN is removed");
    for n in 0..12 {
        let kept = in_cse.retrieve(&format!("/cse-in/id-mnhole{n}"), "CAdmin").await;
        assert_eq!(kept.rsc, 2000, "no verdict yet on a registree that has not answered: {kept:?}");
    }
}
