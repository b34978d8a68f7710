//! Reads answered from memory (the resource cache of a CSE that alone writes its
//! database) never show what an acknowledged write replaced or removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::json;

use crate::harness::{TestCse, on_disk};

/// The number in a container's label `n<N>`.
fn labelled(body: &serde_json::Value) -> Option<u64> {
    body["m2m:cnt"]["lbl"][0].as_str()?.strip_prefix('n')?.parse().ok()
}

#[tokio::test]
async fn a_read_after_an_acknowledged_write_never_sees_what_it_replaced() {
    // Arrange: the durable default (SQLite in a file: reads on their own connections,
    // beside the writer), a container, and its ri.
    let dir = tempfile::tempdir().expect("temp dir");
    let cse = Arc::new(TestCse::spawn(|settings| on_disk(settings, &dir.path().join("acme.db"))).await);
    let container = cse.create_container("/cse-in", "CAdmin", json!({"rn": "hot", "lbl": ["n0"]})).await;
    let ri = container["ri"].as_str().expect("ri").to_string();
    // What the last acknowledged write made the container: its `cni` and label number.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    // Act: one writer, one acknowledged write after the other (a CIN, which updates the
    // container's counters, then a label); four readers, by path and by ri, all along.
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (cse, acknowledged, done, ri) = (cse.clone(), acknowledged.clone(), done.clone(), ri.clone());
            tokio::spawn(async move {
                let target = if reader % 2 == 0 { "/cse-in/hot".to_string() } else { format!("/{ri}") };
                let mut reads = 0;
                while !done.load(Ordering::Acquire) {
                    let floor = acknowledged.load(Ordering::Acquire);
                    let reply = cse.retrieve(&target, "CAdmin").await;
                    assert_eq!(reply.rsc, 2000, "{reply:?}");
                    let cni = reply.body["m2m:cnt"]["cni"].as_u64().expect("cni");
                    let label = labelled(&reply.body).expect("label");
                    assert!(cni >= floor && label >= floor, "read {cni}/{label} after write {floor} was acknowledged");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for n in 1..=150u64 {
        cse.create_instance("/cse-in/hot", "CAdmin", json!(n)).await;
        let reply = cse.update("/cse-in/hot", "CAdmin", json!({"m2m:cnt": {"lbl": [format!("n{n}")]}})).await;
        assert_eq!(reply.rsc, 2004, "{reply:?}");
        acknowledged.store(n, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let mut reads = 0;
    for reader in readers {
        reads += reader.await.expect("reader");
    }

    // Assert: the readers ran along, mostly from memory; a deletion acknowledged is seen
    // at once by path and by ri.
    assert!(reads > 0);
    let stats = cse.cse.cache_stats();
    assert!(stats.hits > 0 && stats.held > 0, "{stats:?}");
    let deleted = cse.delete("/cse-in/hot", "CAdmin").await;
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    assert_eq!(cse.retrieve("/cse-in/hot", "CAdmin").await.rsc, 4004);
    assert_eq!(cse.retrieve(&format!("/{ri}"), "CAdmin").await.rsc, 4004);
    // Made again under the same name: the new one, not the old one.
    cse.create_container("/cse-in", "CAdmin", json!({"rn": "hot", "lbl": ["again"]})).await;
    let again = cse.retrieve("/cse-in/hot", "CAdmin").await;
    assert_eq!(again.body["m2m:cnt"]["lbl"], json!(["again"]), "{again:?}");
    assert_eq!(again.body["m2m:cnt"]["cni"], 0, "{again:?}");
    let Ok(cse) = Arc::try_unwrap(cse) else { panic!("readers still hold the CSE") };
    cse.shutdown().await;
}

#[tokio::test]
async fn access_decisions_follow_a_policy_changed_a_moment_ago() {
    // Arrange: a container whose policy lets an AE read it; read once, so that the
    // container and its policy are held in memory.
    let cse = TestCse::spawn(|_| {}).await;
    let acp = cse
        .create(
            "/cse-in",
            "CAdmin",
            1,
            json!({"m2m:acp": {"rn": "readers", "pv": {"acr": [{"acor": ["Creader"], "acop": 2}]},
                "pvs": {"acr": [{"acor": ["CAdmin"], "acop": 63}]}}}),
        )
        .await;
    assert_eq!(acp.rsc, 2001, "{acp:?}");
    let acp_ri = acp.body["m2m:acp"]["ri"].as_str().expect("ri").to_string();
    cse.create_container("/cse-in", "CAdmin", json!({"rn": "guarded", "acpi": [acp_ri]})).await;
    assert_eq!(cse.retrieve("/cse-in/guarded", "Creader").await.rsc, 2000);
    assert_eq!(cse.retrieve("/cse-in/guarded", "Creader").await.rsc, 2000);

    // Act: the policy no longer names the reader.
    let changed = cse
        .update("/cse-in/readers", "CAdmin", json!({"m2m:acp": {"pv": {"acr": [{"acor": ["Cother"], "acop": 2}]}}}))
        .await;
    assert_eq!(changed.rsc, 2004, "{changed:?}");

    // Assert: refused at once, though the container itself did not change.
    assert_eq!(cse.retrieve("/cse-in/guarded", "Creader").await.rsc, 4103);
    assert_eq!(cse.retrieve("/cse-in/guarded", "Cother").await.rsc, 2000);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_second_cse_on_the_same_database_file_is_refused_naming_the_key() {
    // Arrange: a CSE keeps its data in a file.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("acme.db");
    let first = TestCse::spawn(|settings| on_disk(settings, &path)).await;

    // Act: a second one is built on the same file.
    let mut settings = crate::harness::test_settings();
    on_disk(&mut settings, &path);
    let config = settings.validate().expect("valid");
    let second = acme_cse::App::build_from(config, None, Some(crate::harness::init_dir())).await;

    // Assert: refused (one process per database file: the cache and the singleton work
    // rely on it), naming the key; the first goes on serving.
    let error = second.err().expect("refused").to_string();
    assert!(error.contains("database.path") && error.contains("in use"), "{error}");
    assert_eq!(first.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
    first.shutdown().await;
}
