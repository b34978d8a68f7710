//! Configuration reloads at run time: an MN configured by a file, the file changed, the
//! configuration read again (what SIGHUP does in the binary, see `binary.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acme_cse::config::{Overrides, Source};
use acme_cse::event::Event;
use acme_cse::remote::RegistrationStatus;

use crate::harness::{TestCse, eventually, registrar_settings};

const DEADLINE: Duration = Duration::from_secs(10);

/// The configuration file of an MN registering to `registrar`, with `extra` appended.
pub(crate) fn mn_file(registrar: &TestCse, extra: &str) -> String {
    let config = registrar.cse.config();
    format!(
        "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n\
         [cse.registrar]\naddress = [\"{}\"]\ncse_id = \"{}\"\nresource_name = \"{}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[database]\nin_memory = true\n{extra}",
        registrar.url, config.cse.cse_id, config.cse.resource_name
    )
}

pub(crate) fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the configuration file");
}

/// A second IN: `/id-in2`, CSEBase `cse-in2`.
async fn spawn_second_in() -> TestCse {
    let mut settings = registrar_settings();
    settings.cse.cse_id = "/id-in2".into();
    settings.cse.resource_name = "cse-in2".into();
    TestCse::start(settings).await
}

pub(crate) struct Mn {
    pub cse: TestCse,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

pub(crate) async fn spawn_mn(text: &str, hook: impl FnOnce(&acme_cse::remote::RemoteCseManager)) -> Mn {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("acme.toml");
    write(&file, text);
    let cse = TestCse::start_from(Source::new(&file, true, Overrides::default()), hook).await;
    Mn { cse, file, _dir: dir }
}

#[tokio::test]
async fn a_reload_moves_an_mn_from_one_in_to_another_at_once() {
    // Arrange: the MN registered at IN1, its status callback recording.
    let in1 = TestCse::start(registrar_settings()).await;
    let in2 = spawn_second_in().await;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let mn = spawn_mn(&mn_file(&in1, "[cse.registration]\ncheck_interval = \"1h\"\n"), move |remote| {
        remote.on_status(move |registrar, status, _| {
            seen.lock().expect("lock").push((registrar.cse_id.clone(), status.clone()));
        });
    })
    .await;
    mn.cse.remote.check_now().await.expect("monitor runs");
    assert_eq!(in1.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    let mut events = mn.cse.cse.events().subscribe();

    // Act: the file names IN2; read it again.
    write(&mn.file, &mn_file(&in2, "[cse.registration]\ncheck_interval = \"1h\"\n"));
    let reload = mn.cse.remote.reload().await.expect("a valid configuration");

    // Assert: the changed keys, applied.
    assert_eq!(
        reload.applied,
        ["cse.registrar.address", "cse.registrar.cse_id", "cse.registrar.resource_name"],
        "{reload:?}"
    );
    assert!(reload.restart_needed.is_empty(), "{reload:?}");
    let keys = loop {
        match tokio::time::timeout(DEADLINE, events.recv()).await.expect("an event").expect("no lag") {
            Event::ConfigUpdated { keys } => break keys,
            _ => continue,
        }
    };
    assert_eq!(keys, reload.applied);
    // Gone from IN1 at once (the reload deregistered), registered at IN2 without waiting
    // for the hour-long interval.
    assert_eq!(in1.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004, "the MN's CSR is gone from IN1");
    eventually("the MN is registered at IN2", DEADLINE, || async {
        in2.retrieve("/cse-in2/id-mn", "CAdmin").await.rsc == 2000
    })
    .await;
    eventually("the MN reports IN2 registered", DEADLINE, || async {
        let statuses = mn.cse.remote.statuses();
        statuses.len() == 1 && statuses[0].0.cse_id == "/id-in2" && statuses[0].1 == RegistrationStatus::Registered
    })
    .await;
    assert!(mn.cse.cse.stored("id-in").await.expect("read").is_none(), "the local CSR of IN1 is gone");
    assert!(mn.cse.cse.stored("id-in2").await.expect("read").is_some(), "the local CSR of IN2 is there");
    let seen = statuses.lock().expect("lock").clone();
    assert!(seen.contains(&("/id-in".to_string(), RegistrationStatus::Deregistered)), "{seen:?}");
    assert!(seen.contains(&("/id-in2".to_string(), RegistrationStatus::Registered)), "{seen:?}");
    // Requests go up through IN2 now.
    let forwarded = mn.cse.retrieve("/~/id-in2/cse-in2", "CAdmin").await;
    assert_eq!(forwarded.rsc, 2000, "{forwarded:?}");
}

#[tokio::test]
async fn an_invalid_file_changes_nothing_and_the_error_names_the_key() {
    // Arrange
    let in_cse = TestCse::start(registrar_settings()).await;
    let valid = mn_file(&in_cse, "[cse.registration]\ncheck_interval = \"1h\"\n");
    let mn = spawn_mn(&valid, |_| {}).await;
    mn.cse.remote.check_now().await.expect("monitor runs");

    // Act: a bad value, then a file that is not TOML.
    write(&mn.file, &mn_file(&in_cse, "[cse.registration]\ncheck_interval = \"0s\"\n"));
    let error = mn.cse.remote.reload().await.expect_err("an invalid value");
    write(&mn.file, "[cse\ntype = ");
    let broken = mn.cse.remote.reload().await.expect_err("not TOML");

    // Assert
    assert_eq!(error.key(), Some("cse.registration.check_interval"), "{error}");
    assert!(broken.to_string().contains("acme.toml"), "{broken}");
    assert_eq!(mn.cse.cse.config().registration.check_interval, Duration::from_secs(3600));
    mn.cse.remote.check_now().await.expect("monitor runs");
    assert!(mn.cse.remote.is_registered());
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
}

#[tokio::test]
async fn a_reload_takes_the_new_check_interval_and_names_the_keys_that_need_a_restart() {
    // Arrange: an MN checking once an hour.
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = spawn_mn(&mn_file(&in_cse, "[cse.registration]\ncheck_interval = \"1h\"\n"), |_| {}).await;
    mn.cse.remote.check_now().await.expect("monitor runs");
    let max_body_size = mn.cse.cse.config().http.max_body_size;

    // Act: every 200 ms now; a restart-only key changed too.
    write(
        &mn.file,
        &mn_file(&in_cse, "[cse.registration]\ncheck_interval = \"200ms\"\n")
            .replace("[database]", "max_body_size = 1000\n[database]"),
    );
    let reload = mn.cse.remote.reload().await.expect("valid");
    // The IN loses the MN's CSR; only the monitor's own rounds can notice.
    let deleted = in_cse.delete("/cse-in/id-mn", "CAdmin").await;

    // Assert
    assert_eq!(reload.applied, ["cse.registration.check_interval"]);
    assert_eq!(reload.restart_needed, ["http.max_body_size"]);
    assert_eq!(mn.cse.cse.config().http.max_body_size, max_body_size, "not applied");
    assert_eq!(deleted.rsc, 2002, "{deleted:?}");
    eventually("the MN registers again on its own within seconds", DEADLINE, || async {
        in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc == 2000
    })
    .await;
}

#[tokio::test]
async fn restart_reads_the_configuration_again() {
    // Arrange
    let in1 = TestCse::start(registrar_settings()).await;
    let in2 = spawn_second_in().await;
    let mn = spawn_mn(&mn_file(&in1, ""), |_| {}).await;
    mn.cse.remote.check_now().await.expect("monitor runs");

    // Act
    write(&mn.file, &mn_file(&in2, ""));
    mn.cse.remote.restart().await.expect("restarts");
    mn.cse.remote.check_now().await.expect("monitor runs");

    // Assert
    assert_eq!(in2.retrieve("/cse-in2/id-mn", "CAdmin").await.rsc, 2000);
    assert_eq!(in1.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 4004);
}
