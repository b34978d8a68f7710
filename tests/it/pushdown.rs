//! Push-down: what registrees copy from their registrar reaches them when it changes,
//! not at their next monitor round (an hour away in these tests).

use std::time::Duration;

use acme_cse::config::CseKind;
use serde_json::Value;

use crate::harness::{TestCse, eventually, registrar_settings, registree_settings};

const DEADLINE: Duration = Duration::from_secs(10);

/// A loopback URL where nothing listens (a port bound, read and released).
fn nobody_listens() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    format!("http://{}", listener.local_addr().expect("local address"))
}

async fn ici(cse: &TestCse) -> Option<String> {
    let cse_base = cse.cse.cse_base().await.expect("the CSEBase");
    cse_base.attributes.get("ici").and_then(Value::as_str).map(str::to_string)
}

async fn stored_ici(cse: &TestCse, ri: &str) -> Option<String> {
    let csr = cse.cse.stored(ri).await.expect("read")?;
    csr.attributes.get("ici").and_then(Value::as_str).map(str::to_string)
}

#[tokio::test]
async fn a_new_ici_reaches_an_asn_two_levels_down_without_waiting_for_rounds() {
    // Arrange: IN ← MN1 ← MN2 ← ASN, every check interval an hour. MN1 cannot reach the
    // IN yet (a wrong address), so nobody below it knows the IN-CSE.
    let in_cse = TestCse::start(registrar_settings()).await;
    let mut mn1_settings = registree_settings(CseKind::Mn, "/id-mn1", "cse-mn1", Some(&in_cse));
    let real_address = in_cse.url.clone();
    if let Some(registrar) = mn1_settings.cse.registrar.as_mut() {
        registrar.address = vec![nobody_listens()];
    }
    let mn1 = TestCse::start(mn1_settings.clone()).await;
    let mn2 = TestCse::start(registree_settings(CseKind::Mn, "/id-mn2", "cse-mn2", Some(&mn1))).await;
    mn2.remote.check_now().await.expect("monitor runs");
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn2))).await;
    asn.remote.check_now().await.expect("monitor runs");
    assert!(asn.remote.is_registered() && mn2.remote.is_registered());
    assert_eq!(ici(&mn2).await, None);
    assert_eq!(ici(&asn).await, None);

    // Act: MN1 gets the right address and registers (one round, at once).
    if let Some(registrar) = mn1_settings.cse.registrar.as_mut() {
        registrar.address = vec![real_address];
    }
    let config = mn1_settings.validate().expect("valid");
    mn1.remote.apply_config(config).await.expect("applied");

    // Assert: the IN's ID travels down two levels: into MN2's and the ASN's CSEBase and
    // into their copies of their registrar's CSR. Nobody below MN1 ran a round.
    eventually("MN1 learns the IN-CSE", DEADLINE, || async { ici(&mn1).await.as_deref() == Some("/id-in") }).await;
    eventually("the ASN two levels down learns it too", DEADLINE, || async {
        ici(&asn).await.as_deref() == Some("/id-in")
    })
    .await;
    assert_eq!(ici(&mn2).await.as_deref(), Some("/id-in"));
    assert_eq!(stored_ici(&mn2, "id-mn1").await.as_deref(), Some("/id-in"), "MN2's CSR for MN1");
    assert_eq!(stored_ici(&asn, "id-mn2").await.as_deref(), Some("/id-in"), "the ASN's CSR for MN2");
}

#[tokio::test]
async fn only_the_registrar_of_a_cse_sets_its_ici() {
    // Arrange: an MN registered to an IN; another registree of the MN.
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn))).await;
    asn.remote.check_now().await.expect("monitor runs");

    // Act: the ASN (a registree, not the registrar) updates the MN's copy of the IN's CSR
    // and its own CSR at the MN with an ici.
    let through_copy = mn.update("/cse-mn/id-in", "/id-asn", serde_json::json!({"m2m:csr": {"ici": "/id-evil"}})).await;
    let own = mn.update("/cse-mn/id-asn", "/id-asn", serde_json::json!({"m2m:csr": {"ici": "/id-evil"}})).await;

    // Assert: refused, or taken without touching the MN's CSEBase.
    assert_ne!(through_copy.rsc, 2004, "{through_copy:?}");
    assert_eq!(own.rsc, 2004, "{own:?}");
    assert_eq!(ici(&mn).await.as_deref(), Some("/id-in"));
}
