//! A registrar reached through groups of addresses: fail over within and between groups,
//! stay on an address that works, go back to a preferred group when it answers again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use acme_cse::config::{AddressGroupSettings, CseKind};

use crate::harness::{Proxy, TestCse, eventually, registrar_settings, registree_settings};

const DEADLINE: Duration = Duration::from_secs(20);

/// The address the MN uses for its registrar now.
fn in_use(mn: &TestCse) -> Option<String> {
    mn.remote.statuses().first().and_then(|(_, _, address)| address.clone())
}

/// The address group the MN uses for its registrar now.
fn group_in_use(mn: &TestCse) -> Option<String> {
    mn.remote.registrar_views().first().and_then(|view| view.group.clone())
}

#[tokio::test]
async fn a_registrar_behind_address_groups_is_left_kept_and_returned_to_in_order_of_preference() {
    // Arrange: one IN behind three addresses: `a` (the preferred group), `b1` and `b2`
    // (a backup group). The MN checks every 300 ms and reports the addresses it uses.
    let in_cse = TestCse::start(registrar_settings()).await;
    let a = Proxy::start(in_cse.addr).await;
    let b1 = Proxy::start(in_cse.addr).await;
    let b2 = Proxy::start(in_cse.addr).await;
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    settings.cse.registration.check_interval = Duration::from_millis(300);
    if let Some(registrar) = settings.cse.registrar.as_mut() {
        registrar.address = vec![a.url.clone()];
        registrar.groups =
            vec![AddressGroupSettings { name: "backup".into(), address: vec![b1.url.clone(), b2.url.clone()] }];
    }
    let reported = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let seen = reported.clone();
    let mn = TestCse::start_hooked(settings, move |remote| {
        remote.on_status(move |registrar, _, address| {
            let mut seen = seen.lock().expect("lock");
            if let Some(address) =
                address.filter(|address| seen.last().map(|(last, _)| last.as_str()) != Some(*address))
            {
                let group = registrar.group_of_address(address).unwrap_or_default().to_string();
                seen.push((address.to_string(), group));
            }
        });
    })
    .await;
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_use(&mn).as_deref(), Some(a.url.as_str()));
    assert_eq!(group_in_use(&mn).as_deref(), Some("default"));

    // Act and assert: the preferred group goes away: the backup group's first address.
    a.switch(false);
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_use(&mn).as_deref(), Some(b1.url.as_str()));
    assert_eq!(group_in_use(&mn).as_deref(), Some("backup"));
    assert!(mn.remote.is_registered());

    // Within a group: on to the next address, and stay there when the first comes back.
    b1.switch(false);
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_use(&mn).as_deref(), Some(b2.url.as_str()));
    b1.switch(true);
    mn.remote.check_now().await.expect("monitor runs");
    mn.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_use(&mn).as_deref(), Some(b2.url.as_str()), "sticky within a group");
    // Requests forwarded up take the address in use too, not the first that answers.
    let through_b1 = b1.connections();
    let forwarded = mn.retrieve("/~/id-in/cse-in", "CAdmin").await;
    assert_eq!(forwarded.rsc, 2000, "{forwarded:?}");
    assert_eq!(b1.connections(), through_b1, "forwarding went through the address in use");

    // The preferred group answers again: back to it (tries spaced with backoff).
    a.switch(true);
    eventually("the MN is back on the preferred group", DEADLINE, || async {
        in_use(&mn).as_deref() == Some(a.url.as_str())
    })
    .await;
    assert!(mn.remote.is_registered());
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000, "one registration all along");
    eventually("the callback reported every address in use", DEADLINE, || async {
        let expected = [(&a.url, "default"), (&b1.url, "backup"), (&b2.url, "backup"), (&a.url, "default")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(url, group)| (url.to_string(), group.to_string())).collect();
        *reported.lock().expect("lock") == expected
    })
    .await;
}
