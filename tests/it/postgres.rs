//! The PostgreSQL backend (`[database] url`) against a real server: the one
//! `ACME_TEST_POSTGRES_URL` names (a URL whose user may create databases), or else a
//! throw-away one started here from the installed server binaries (its own data directory
//! and a free port on 127.0.0.1, run as the `postgres` user when the tests run as root, and
//! stopped once this test process has ended). Every test gets a database of its own. Where
//! no server can be had, each test prints that it was SKIPPED and why; `.ci/run` installs
//! the server so that in CI they always run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use acme_cse::config::Settings;
use acme_cse::security::Secret;
use serde_json::{Value, json};

use acme_cse::config::CseKind;

use crate::harness::{Receiver, TestCse, eventually, registrar_settings, registree_settings, test_settings};

const DEADLINE: Duration = Duration::from_secs(20);

/// A server this process may create databases on.
struct Server {
    /// `postgresql://user[:password]@host:port` (no database).
    base: String,
    /// How it was found, for the log.
    origin: String,
    /// The CA of the server's certificate, when it serves TLS (the throw-away server does).
    ca: Option<PathBuf>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

fn server() -> &'static Result<Server, String> {
    SERVER.get_or_init(|| {
        let server = match std::env::var("ACME_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => {
                let base = url.trim_end_matches('/').rsplit_once('/').map_or(url.clone(), |(base, _)| base.into());
                Ok(Server { base, origin: "ACME_TEST_POSTGRES_URL".into(), ca: None })
            }
            _ => throwaway_server(),
        };
        match &server {
            Ok(server) => loud(&format!("postgres tests: using {}", server.origin)),
            Err(reason) => loud(&format!("postgres tests: no PostgreSQL server: {reason}")),
        }
        server
    })
}

/// A line on the real standard error: the test harness captures `eprintln!` of passing
/// tests, and a skip must not pass silently.
fn loud(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A new, empty database on the test server, as a `[database] url`; `None` (and a loud
/// SKIPPED line naming `test`) where there is no server.
pub async fn database(test: &str) -> Option<String> {
    let server = match server() {
        Ok(server) => server,
        Err(reason) => {
            loud(&format!("SKIPPED {test}: no PostgreSQL server ({reason})"));
            return None;
        }
    };
    let name = format!("acme_test_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::SeqCst));
    let admin = connect(&format!("{}/postgres", server.base)).await;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a test database");
    Some(format!("{}/{name}", server.base))
}

/// A client on `url` whose connection is served by a task of this runtime (a server that
/// has just started may refuse for a moment: "the database system is starting up").
async fn connect(url: &str) -> tokio_postgres::Client {
    let started = Instant::now();
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot connect to the test server: {error}"),
        }
    }
}

fn on_postgres(settings: &mut Settings, url: &str) {
    settings.database.in_memory = false;
    settings.database.url = Some(Secret::new(url));
}

/// The newest `bin` directory of the distribution's PostgreSQL server packages.
fn server_binaries() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|error| format!("{} cannot be read ({error}); install the postgresql package", root.display()))?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| format!("no server binaries under {}", root.display()))
}

/// `program` with `args`, as the `postgres` user when we are root (the server refuses root).
fn as_server_user(program: &Path, args: &[&str]) -> Command {
    if crate::harness::is_root() {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(program).args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

fn throwaway_server() -> Result<Server, String> {
    let bin = server_binaries()?;
    let dir = std::env::temp_dir().join(format!("acme-test-pg-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    if crate::harness::is_root() {
        let chown = Command::new("chown").arg("postgres:").arg(&dir).status();
        if !chown.is_ok_and(|status| status.success()) {
            return Err(format!("cannot give {} to the postgres user", dir.display()));
        }
    }
    let (dir_text, data_text) = (dir.display().to_string(), data.display().to_string());
    let initdb = as_server_user(
        &bin.join("initdb"),
        &["-D", &data_text, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
    )
    .output()
    .map_err(|error| format!("cannot run initdb: {error}"))?;
    if !initdb.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)));
    }
    // TLS too, with a certificate of a test CA for 127.0.0.1 (the key readable by the
    // server's user only, as the server demands).
    let pki = crate::security::test_pki();
    let (cert, key, ca) = (dir.join("server.crt"), dir.join("server.key"), dir.join("ca.pem"));
    for (from, to) in [(&pki.cert, &cert), (&pki.key, &key), (&pki.ca, &ca)] {
        std::fs::copy(from, to).map_err(|error| format!("cannot copy {}: {error}", from.display()))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).map_err(|error| error.to_string())?;
    }
    if crate::harness::is_root() {
        let chown = Command::new("chown").arg("postgres:").arg(&cert).arg(&key).status();
        if !chown.is_ok_and(|status| status.success()) {
            return Err("cannot give the server's key to the postgres user".into());
        }
    }
    let (ssl_cert, ssl_key) = (format!("ssl_cert_file={}", cert.display()), format!("ssl_key_file={}", key.display()));
    let port = crate::binary::free_port().to_string();
    let log = std::fs::File::create(dir.join("server.log")).map_err(|error| format!("cannot create a log: {error}"))?;
    let server = as_server_user(
        &bin.join("postgres"),
        &[
            "-D",
            &data_text,
            "-p",
            &port,
            "-k",
            &dir_text,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=400",
            "-c",
            "ssl=on",
            "-c",
            &ssl_cert,
            "-c",
            &ssl_key,
        ],
    )
    .stdin(Stdio::null())
    .stdout(log.try_clone().map_err(|error| error.to_string())?)
    .stderr(log)
    .spawn()
    .map_err(|error| format!("cannot start postgres: {error}"))?;
    // Stopped (and its directory removed) once this test process has ended.
    let watchdog = format!(
        "while kill -0 {tests} 2>/dev/null; do sleep 0.5; done; kill -INT {server}; sleep 5; rm -rf '{dir_text}'",
        tests = std::process::id(),
        server = server.id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(watchdog)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start the watchdog: {error}"))?;
    let started = Instant::now();
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("postgres did not listen on 127.0.0.1:{port} within 30 s (see {dir_text}/server.log)"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server {
        base: format!("postgresql://postgres@127.0.0.1:{port}"),
        origin: format!("a throw-away server in {dir_text}"),
        ca: Some(ca),
    })
}

async fn on(url: &str) -> TestCse {
    TestCse::spawn(|settings| on_postgres(settings, url)).await
}

#[tokio::test]
async fn resources_and_their_order_survive_a_restart_on_postgresql() {
    let Some(url) = database("resources_and_their_order_survive_a_restart_on_postgresql").await else { return };
    // Arrange
    let first = on(&url).await;
    first.register_ae("Cowner", "ae").await;
    first.create_container("/cse-in/ae", "Cowner", json!({"rn": "cnt", "mni": 3})).await;
    for con in ["one", "two", "three", "four"] {
        first.create_instance("/cse-in/ae/cnt", "Cowner", json!(con)).await;
    }
    let acps = first.retrieve("/cse-in?fu=1&ty=1", "CAdmin").await.uril();
    first.shutdown().await;
    // Act
    let second = on(&url).await;
    // Assert: the oldest instance went at `mni`, the order is kept, and goes on.
    let con = |reply: crate::harness::Reply| reply.body["m2m:cin"]["con"].clone();
    assert_eq!(con(second.retrieve("/cse-in/ae/cnt/ol", "Cowner").await), "two");
    assert_eq!(con(second.retrieve("/cse-in/ae/cnt/la", "Cowner").await), "four");
    second.create_instance("/cse-in/ae/cnt", "Cowner", json!("five")).await;
    assert_eq!(con(second.retrieve("/cse-in/ae/cnt/ol", "Cowner").await), "three");
    assert_eq!(con(second.retrieve("/cse-in/ae/cnt/la", "Cowner").await), "five");
    let cnt = second.retrieve("/cse-in/ae/cnt", "Cowner").await;
    assert_eq!((cnt.body["m2m:cnt"]["cni"].clone(), cnt.body["m2m:cnt"]["cbs"].clone()), (json!(3), json!(13)));
    let found = second.retrieve("/cse-in/ae?fu=1&ty=4", "Cowner").await.uril();
    assert_eq!(found.len(), 3, "{found:?}");
    assert_eq!(second.retrieve("/cse-in?fu=1&ty=1", "CAdmin").await.uril(), acps, "init/ is imported only once");
    // A subtree goes with its root, and only it.
    second.create_container("/cse-in/ae", "Cowner", json!({"rn": "cnt0"})).await;
    second.create_container("/cse-in/ae", "Cowner", json!({"rn": "cnt-x"})).await;
    assert_eq!(second.delete("/cse-in/ae/cnt", "Cowner").await.rsc, 2002);
    let left: Vec<String> = second.retrieve("/cse-in/ae?fu=1", "Cowner").await.uril();
    assert_eq!(left, ["cse-in/ae/cnt-x", "cse-in/ae/cnt0"]);
    second.shutdown().await;
}

#[tokio::test]
async fn a_notification_waits_in_the_postgresql_outbox_until_its_target_answers() {
    let Some(url) = database("a_notification_waits_in_the_postgresql_outbox_until_its_target_answers").await else {
        return;
    };
    // Arrange
    let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(2000));
    let receiver = Receiver::start_answering(answer.clone()).await;
    let cse = TestCse::spawn(|settings| {
        on_postgres(settings, &url);
        settings.resource.sub.max_retry_delay = Duration::from_millis(200);
    })
    .await;
    cse.register_ae("Cae", "ae").await;
    cse.create_container("/cse-in/ae", "Cae", json!({"rn": "box"})).await;
    let sub = json!({"m2m:sub": {"rn": "s", "nu": [receiver.url], "enc": {"net": [3]}}});
    assert_eq!(cse.create("/cse-in/ae/box", "Cae", 23, sub).await.rsc, 2001);
    // Act: the target refuses for a while.
    answer.store(5000, std::sync::atomic::Ordering::SeqCst);
    for n in 0..3 {
        cse.create_instance("/cse-in/ae/box", "Cae", json!(n.to_string())).await;
    }
    eventually("an attempt failed", DEADLINE, || async {
        !receiver.events().is_empty() && cse.cse.pending_notifications(&receiver.url).await.expect("outbox") == 3
    })
    .await;
    answer.store(2000, std::sync::atomic::Ordering::SeqCst);
    // Assert: all three, in order, once accepted.
    eventually("nothing left to send", DEADLINE, || async {
        cse.cse.pending_notifications(&receiver.url).await.expect("outbox") == 0
    })
    .await;
    let mut delivered: Vec<Value> =
        receiver.events().iter().map(|event| event["nev"]["rep"]["m2m:cin"]["con"].clone()).collect();
    delivered.dedup();
    assert_eq!(delivered, ["0", "1", "2"].map(|n| json!(n)).to_vec());
    cse.shutdown().await;
}

#[tokio::test]
async fn a_notification_another_instance_claimed_is_not_sent_until_the_claim_ends() {
    let test = "a_notification_another_instance_claimed_is_not_sent_until_the_claim_ends";
    let Some(url) = database(test).await else { return };
    // Arrange: a notification whose target failed once (due again in a second or so).
    let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(5000));
    let receiver = Receiver::start_answering(answer.clone()).await;
    let cse = on(&url).await;
    cse.create_container("/cse-in", "CAdmin", json!({"rn": "box"})).await;
    let sub = json!({"m2m:sub": {"rn": "s", "nu": [receiver.url], "enc": {"net": [3]}}});
    answer.store(2000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(cse.create("/cse-in/box", "CAdmin", 23, sub).await.rsc, 2001);
    answer.store(5000, std::sync::atomic::Ordering::SeqCst);
    cse.create_instance("/cse-in/box", "CAdmin", json!("claimed")).await;
    let client = connect(&url).await;
    eventually("the first attempt is recorded", DEADLINE, || async {
        let row = client.query_one("SELECT attempts FROM outbox", &[]).await.expect("outbox row");
        row.get::<_, i32>(0) >= 1
    })
    .await;
    // Act: another instance claims it for 3 s, and it is due now; the target accepts.
    let now = acme_cse::resource::Timestamp::now();
    let until = now.saturating_add(Duration::from_secs(3)).to_string();
    client
        .execute("UPDATE outbox SET claimant = 'another', claimed_until = $1, due = $2", &[&until, &now.to_string()])
        .await
        .expect("claim");
    answer.store(2000, std::sync::atomic::Ordering::SeqCst);
    let attempts = receiver.events().len();
    // Assert: not sent while the claim lasts (an absence: watched for 2 s), sent once it ended.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.events().len(), attempts, "sent while another instance held it");
    eventually("sent after the claim", DEADLINE, || async {
        cse.cse.pending_notifications(&receiver.url).await.expect("outbox") == 0
    })
    .await;
    assert_eq!(receiver.events().len(), attempts + 1);
    cse.shutdown().await;
}

#[tokio::test]
async fn an_upgrade_to_schema_6_indexes_the_resources_already_announced_on_postgresql() {
    let Some(url) = database("an_upgrade_to_schema_6_indexes_the_resources_already_announced_on_postgresql").await
    else {
        return;
    };
    // Arrange: a database as schema version 5 left it, holding an announced AE, one whose
    // `at` is empty, and one without `at`.
    on(&url).await.shutdown().await;
    let client = connect(&url).await;
    client
        .batch_execute(
            "ALTER TABLE resources DROP COLUMN announced; \
             UPDATE meta SET value = '5' WHERE key = 'schema_version'",
        )
        .await
        .expect("back to version 5");
    for (ri, at) in [("announcedAe", r#","at":["/id-mn"]"#), ("emptyAe", r#","at":[]"#), ("plainAe", "")] {
        let body = format!(r#"{{"ri":"{ri}","pi":"id-in","rn":"{ri}","ty":2,"api":"Nx","rr":false{at}}}"#);
        client
            .execute(
                "INSERT INTO resources (ri, pi, ty, path, body) VALUES ($1, 'id-in', 2, $2, $3)",
                &[&ri, &format!("cse-in/{ri}"), &body],
            )
            .await
            .expect("insert");
    }
    // Act
    let cse = on(&url).await;
    // Assert: the upgrade marked the announced one only, and the index serves the query.
    let announced: Vec<String> = client
        .query("SELECT ri FROM resources WHERE announced ORDER BY ord", &[])
        .await
        .expect("query")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(announced, ["announcedAe"]);
    let version: String =
        client.query_one("SELECT value FROM meta WHERE key = 'schema_version'", &[]).await.expect("version").get(0);
    assert_eq!(version, "6");
    let indexed: i64 = client
        .query_one("SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'resources_announced'", &[])
        .await
        .expect("indexes")
        .get(0);
    assert_eq!(indexed, 1);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_postgresql_database_of_a_newer_build_is_refused_without_showing_the_password() {
    let Some(url) = database("a_postgresql_database_of_a_newer_build_is_refused_without_showing_the_password").await
    else {
        return;
    };
    // Arrange: a database this build set up, then marked as written by a future one. The
    // URL carries a password (the test server trusts loopback, so it is not checked).
    let with_password = url.replacen("postgresql://postgres@", "postgresql://postgres:pw-1234-secret@", 1);
    on(&with_password).await.shutdown().await;
    let client = connect(&url).await;
    client.batch_execute("UPDATE meta SET value = '1000' WHERE key = 'schema_version'").await.expect("future version");
    let mut settings = test_settings();
    on_postgres(&mut settings, &with_password);
    // Act
    let refused =
        acme_cse::App::build(settings.validate().expect("valid settings"), None).await.err().expect("refused");
    // Assert
    let text = format!("{refused:#}");
    assert!(text.contains("database.url") && text.contains("schema version 1000") && text.contains("newer"), "{text}");
    assert!(!text.contains("pw-1234-secret") && text.contains("***"), "{text}");
}

#[tokio::test]
async fn an_unreachable_postgresql_server_stops_the_start_naming_database_url_but_not_the_password() {
    // Arrange: a port nobody listens on.
    let port = crate::binary::free_port();
    let mut settings = test_settings();
    on_postgres(&mut settings, &format!("postgresql://acme:pw-5678-secret@127.0.0.1:{port}/acme"));
    // Act
    let refused =
        acme_cse::App::build(settings.validate().expect("valid settings"), None).await.err().expect("refused");
    // Assert
    let text = format!("{refused:#}");
    assert!(text.contains("database.url") && text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("pw-5678-secret"), "{text}");
}

#[test]
fn a_database_url_that_postgresql_cannot_use_is_refused_naming_the_key() {
    for (url, reason) in [
        ("mysql://acme:pw-secret@127.0.0.1/acme", "only postgresql://"),
        ("postgresql://acme:pw-secret@127.0.0.1/acme?sslmode=verify-full", "use sslmode=require"),
        ("not a url", "is not a URL"),
    ] {
        let mut settings = test_settings();
        on_postgres(&mut settings, url);
        let error = settings.validate().expect_err("refused").to_string();
        assert!(error.contains("database.url") && error.contains(reason), "{url}: {error}");
        assert!(!error.contains("pw-secret"), "{url}: {error}");
    }
    let mut settings = test_settings();
    on_postgres(&mut settings, "postgresql://acme@127.0.0.1/acme");
    settings.database.pool_size = 1;
    let error = settings.validate().expect_err("refused").to_string();
    assert!(error.contains("database.pool_size"), "{error}");
}

#[tokio::test]
async fn results_below_a_target_are_read_in_pages_while_each_resource_is_checked() {
    let Some(url) = database("results_below_a_target_are_read_in_pages_while_each_resource_is_checked").await else {
        return;
    };
    // Arrange: more large instances than one page of the walk holds. Each selected
    // resource costs an access check on the same connection while the walk is under way
    // (before reading in pages, this waited forever behind the unread rows).
    let cse = TestCse::spawn(|settings| {
        on_postgres(settings, &url);
        settings.cse.max_result_size = 64 * 1024;
    })
    .await;
    cse.register_ae("Cowner", "owner").await;
    cse.create_container("/cse-in/owner", "Cowner", json!({"rn": "big", "mni": 1000, "mbs": 100_000_000})).await;
    for n in 0..300 {
        cse.create_instance("/cse-in/owner/big", "Cowner", json!(format!("{n:03}{}", "x".repeat(8 * 1024)))).await;
    }
    // Act
    let tree = cse.retrieve("/cse-in/owner/big?rcn=4", "Cowner").await;
    let all = cse.retrieve("/cse-in/owner/big?fu=1", "Cowner").await;
    let rest = cse.retrieve("/cse-in/owner/big?fu=1&ofst=291", "Cowner").await;
    // Assert
    assert_eq!(tree.rsc, 2000, "{:?}", tree.status);
    assert_eq!(tree.body["m2m:cnt"]["m2m:cin"].as_array().map(Vec::len), Some(7), "64 KiB hold 7 of 8 KiB");
    assert_eq!(tree.header("x-m2m-cts"), Some("1"));
    assert_eq!(all.uril().len(), 300);
    assert_eq!(rest.uril().len(), 10);
    cse.shutdown().await;
}

#[tokio::test]
async fn two_instances_on_one_database_lose_no_update_of_a_container_both_write_to() {
    let Some(url) = database("two_instances_on_one_database_lose_no_update_of_a_container_both_write_to").await else {
        return;
    };
    // Arrange: two CSEs on one database, a container both write to.
    let first = on(&url).await;
    first.create_container("/cse-in", "CAdmin", json!({"rn": "shared", "mni": 100_000, "mbs": 100_000_000})).await;
    let second = on(&url).await;
    // Act: 16 writers on each instance (32 at once), 12 instances each. Each CREATE reads
    // the container and writes its counters back: without row versions, the two
    // instances' commits would overwrite each other's counts.
    let writers = [&first, &second].into_iter().flat_map(|cse| {
        (0..16).map(move |writer| async move {
            for n in 0..12 {
                let reply = cse
                    .create("/cse-in/shared", "CAdmin", 4, json!({"m2m:cin": {"con": format!("{writer:02}-{n:02}")}}))
                    .await;
                assert_eq!(reply.rsc, 2001, "{reply:?}");
            }
        })
    });
    futures_util::future::join_all(writers).await;
    // Assert: both instances see every instance counted once.
    for cse in [&first, &second] {
        let cnt = cse.retrieve("/cse-in/shared", "CAdmin").await;
        assert_eq!(cnt.body["m2m:cnt"]["cni"], 384, "{cnt:?}");
        assert_eq!(cnt.body["m2m:cnt"]["cbs"], 384 * 5, "{cnt:?}");
        assert_eq!(cnt.body["m2m:cnt"]["st"], 384, "{cnt:?}");
        assert_eq!(cse.retrieve("/cse-in/shared?fu=1&ty=4", "CAdmin").await.uril().len(), 384);
    }
    // A write acknowledged by one instance is read through the other at once.
    second.create_instance("/cse-in/shared", "CAdmin", json!("after")).await;
    let latest = first.retrieve("/cse-in/shared/la", "CAdmin").await;
    assert_eq!(latest.body["m2m:cin"]["con"], "after", "{latest:?}");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn one_instance_sends_the_notifications_of_both_and_the_other_takes_over_when_it_stops() {
    let Some(url) =
        database("one_instance_sends_the_notifications_of_both_and_the_other_takes_over_when_it_stops").await
    else {
        return;
    };
    // Arrange: two instances on one database, a subscription to a container.
    let receiver = Receiver::start().await;
    let first = on(&url).await;
    let second = on(&url).await;
    first.create_container("/cse-in", "CAdmin", json!({"rn": "box"})).await;
    let sub = json!({"m2m:sub": {"rn": "s", "nu": [receiver.url], "enc": {"net": [3]}}});
    assert_eq!(first.create("/cse-in/box", "CAdmin", 23, sub).await.rsc, 2001);
    let delivered = || {
        let mut rqis: Vec<String> = receiver
            .notifications()
            .iter()
            .filter_map(|sgn| sgn["nev"]["rep"]["m2m:cin"]["con"].as_str().map(str::to_string))
            .collect();
        let all = rqis.len();
        rqis.sort();
        rqis.dedup();
        (all, rqis.len())
    };
    // Act: instances created through both.
    for n in 0..10 {
        first.create_instance("/cse-in/box", "CAdmin", json!(format!("first-{n}"))).await;
        second.create_instance("/cse-in/box", "CAdmin", json!(format!("second-{n}"))).await;
    }
    // Assert: each notification once: one sender for the database, whichever instance
    // committed the change.
    eventually("all 20 delivered", DEADLINE, || async { delivered().1 == 20 }).await;
    // An absence: a second sender would repeat some at its next read of the outbox; give it time.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(delivered(), (20, 20), "no notification sent twice");
    // The holder stops: the other takes the lease and sends what comes next.
    drop(first.shutdown().await);
    for n in 0..5 {
        second.create_instance("/cse-in/box", "CAdmin", json!(format!("later-{n}"))).await;
    }
    eventually("the other instance sends", DEADLINE, || async { delivered().1 == 25 }).await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_cse_registered_through_one_instance_is_routed_by_the_other() {
    let Some(url) = database("a_cse_registered_through_one_instance_is_routed_by_the_other").await else { return };
    // Arrange: two IN instances on one database; an MN registers through the first.
    let in_settings = || {
        let mut settings = registrar_settings();
        on_postgres(&mut settings, &url);
        settings
    };
    let first = TestCse::start(in_settings()).await;
    let second = TestCse::start(in_settings()).await;
    let mut reports = second.remote.subscribe();
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&first))).await;
    mn.remote.check_now().await.expect("monitor runs");
    assert!(first.remote.csr_for("/id-mn").is_some(), "registered through the first");
    // The second reports it to its embedder like a registration of its own.
    let reported = tokio::time::timeout(DEADLINE, async {
        loop {
            match reports.recv().await {
                Some(acme_cse::remote::RemoteChange::Csr { record, added }) => break (record.csi, added),
                Some(_) => continue,
                None => panic!("the manager stopped"),
            }
        }
    })
    .await
    .expect("the second instance reports the MN");
    assert_eq!(reported, ("/id-mn".to_string(), true));
    // Assert: the second learned it from the first's commit, and forwards to the MN.
    eventually("the second instance routes to the MN", DEADLINE, || async {
        second.remote.csr_for("/id-mn").is_some()
    })
    .await;
    // The MN itself answers (its access rules do not let the IN's admin read its CSEBase).
    let reply = second.retrieve("/~/id-mn/cse-mn", "CAdmin").await;
    assert_eq!(reply.rsc, 4103, "{reply:?}");
    assert!(reply.dbg().contains("cse-mn"), "{reply:?}");
    // The MN's CSR removed through the first: the second forgets it too.
    assert_eq!(first.delete("/cse-in/id-mn", "CAdmin").await.rsc, 2002);
    eventually("the second instance forgets the MN", DEADLINE, || async { second.remote.csr_for("/id-mn").is_none() })
        .await;
    mn.shutdown().await;
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn an_mn_stays_registered_through_either_instance_and_the_other_one_probes_it_once_the_first_stops() {
    let test = "an_mn_stays_registered_through_either_instance_and_the_other_one_probes_it_once_the_first_stops";
    let Some(url) = database(test).await else { return };
    // Arrange: two IN instances on one database, one address group of the MN's registrar
    // naming both; removal after one failed probe.
    let in_settings = || {
        let mut settings = registrar_settings();
        settings.cse.registration.liveliness_failures = 1;
        on_postgres(&mut settings, &url);
        settings
    };
    let first = TestCse::start(in_settings()).await;
    let second = TestCse::start(in_settings()).await;
    let mut mn_settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&first));
    if let Some(registrar) = mn_settings.cse.registrar.as_mut() {
        registrar.address.push(second.url.clone());
    }
    mn_settings.cse.registration.unregister_when_stopping = false;
    let mn = TestCse::start(mn_settings).await;
    mn.remote.check_now().await.expect("monitor runs");
    let in_use = || mn.remote.registrar_views().first().and_then(|view| view.address.clone());
    assert_eq!(in_use(), Some(first.url.clone()), "registered through the first");
    async fn csrs(cse: &TestCse) -> Vec<String> {
        cse.retrieve("/cse-in?fu=1&ty=16", "CAdmin").await.uril()
    }
    // Act: the first instance stops (it held the lease); the MN checks its registration.
    first.shutdown().await;
    mn.remote.check_now().await.expect("monitor runs");
    // Assert: registered through the second, on the same CSR (none created twice).
    assert_eq!(in_use(), Some(second.url.clone()), "the other address of the group");
    assert!(mn.remote.is_registered());
    assert_eq!(csrs(&second).await, ["cse-in/id-mn"]);
    // The MN goes away without a word: the second instance, now holding the lease, probes
    // it and removes its CSR.
    mn.shutdown().await;
    eventually("the second instance removes the gone MN", DEADLINE, || async {
        second.remote.check_now().await.expect("monitor runs");
        csrs(&second).await.is_empty()
    })
    .await;
    second.shutdown().await;
}

#[tokio::test]
async fn the_registration_of_an_mn_served_by_two_instances_is_kept_by_the_other_once_the_first_stops() {
    let test = "the_registration_of_an_mn_served_by_two_instances_is_kept_by_the_other_once_the_first_stops";
    let Some(url) = database(test).await else { return };
    // Arrange: an IN, and an MN served by two instances on one database; the first holds
    // the lease and registers.
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn_settings = || {
        let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
        settings.cse.registration.unregister_when_stopping = false;
        on_postgres(&mut settings, &url);
        settings
    };
    let first = TestCse::start(mn_settings()).await;
    let second = TestCse::start(mn_settings()).await;
    first.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000, "registered by the first");
    // Act: the first stops; the IN loses the MN's CSR.
    first.shutdown().await;
    assert_eq!(in_cse.delete("/cse-in/id-mn", "CAdmin").await.rsc, 2002);
    // Assert: the second instance, holding the lease now, registers the MN again.
    eventually("the second instance registers the MN again", DEADLINE, || async {
        second.remote.check_now().await.expect("monitor runs");
        in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc == 2000
    })
    .await;
    assert!(second.remote.is_registered());
    let csrs = in_cse.retrieve("/cse-in?fu=1&ty=16", "CAdmin").await.uril();
    assert_eq!(csrs, ["cse-in/id-mn"], "one CSR for the MN");
    second.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn when_the_process_holding_the_lease_is_killed_another_takes_over_the_liveliness_probes() {
    let test = "when_the_process_holding_the_lease_is_killed_another_takes_over_the_liveliness_probes";
    let Some(url) = database(test).await else { return };
    // Arrange: two acme-cse processes on one database, checking registrees every 300 ms
    // and removing one after a single failed probe; the first holds the lease.
    let config = |port: u16| {
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"{url}\"\n\n[logging]\nlevel = \"info\"\n\n\
             [cse.registration]\ncheck_interval = \"300ms\"\nliveliness_failures = 1\nliveliness_timeout = \"500ms\"\n\
             allowed_csr_originators = [\"/id-mn*\"]\n"
        )
    };
    let (one, two) = (tempfile::tempdir().expect("directory"), tempfile::tempdir().expect("directory"));
    let mut first = crate::binary::start(one.path(), &config(0));
    let first_log = crate::binary::collect_stdout(&mut first);
    let holds = |log: &std::sync::Arc<std::sync::Mutex<String>>| log.lock().expect("log").contains("holds the lease");
    eventually("the first process holds the lease", DEADLINE, || async { holds(&first_log) }).await;
    let mut second = crate::binary::start(two.path(), &config(0));
    let second_log = crate::binary::collect_stdout(&mut second);
    let port = crate::binary::serving_port(&mut second, &second_log).await;
    // Serving means its first try failed; an absence again: give it another try (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !holds(&second_log),
        "one holder at a time:\nfirst:\n{}\nsecond:\n{}",
        first_log.lock().expect("log"),
        second_log.lock().expect("log")
    );
    // Act: kill -9 (no goodbye to the server: it notices the closed connection).
    let killed = Instant::now();
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("the first process ends");
    // Assert: the second takes the lease, and with it the probes: a registree whose poa
    // nobody answers at is removed.
    eventually("the second process takes the lease", DEADLINE, || async { holds(&second_log) }).await;
    println!("lease taken over {:?} after kill -9", killed.elapsed());
    let client = reqwest::Client::new();
    let csr = format!("http://127.0.0.1:{port}/cse-in/id-mn");
    let body = json!({"m2m:csr": {"cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"],
        "poa": [format!("http://127.0.0.1:{}", crate::binary::free_port())]}});
    let base = format!("http://127.0.0.1:{port}/cse-in");
    let (rsc, reply) = crate::binary::request_as(&client, reqwest::Method::POST, &base, "/id-mn", Some(16), Some(body))
        .await
        .expect("CREATE");
    assert_eq!(rsc, "2001", "{reply}");
    eventually("the gone registree is removed by the second process", DEADLINE, || async {
        let get = reqwest::Method::GET;
        let (rsc, _) = crate::binary::request_as(&client, get, &csr, "CAdmin", None, None).await.expect("RETRIEVE");
        rsc == "4004"
    })
    .await;
    second.start_kill().expect("stop the second process");
}

#[tokio::test]
async fn acknowledged_writes_survive_a_kill_9_on_postgresql() {
    let Some(url) = database("acknowledged_writes_survive_a_kill_9_on_postgresql").await else { return };
    crate::binary::acknowledged_writes_survive_a_kill_9(&format!("url = \"{url}\"")).await;
}

#[tokio::test]
async fn with_sslmode_require_the_connection_is_encrypted_and_the_server_verified() {
    let test = "with_sslmode_require_the_connection_is_encrypted_and_the_server_verified";
    let Some(url) = database(test).await else { return };
    let Some(ca) = server().as_ref().ok().and_then(|server| server.ca.clone()) else {
        loud(&format!("SKIPPED {test}: the test server (ACME_TEST_POSTGRES_URL) has no test CA"));
        return;
    };
    let tls_url = format!("{url}?sslmode=require");
    // Arrange: the server's certificate is signed by the test CA, which the system does not trust.
    let mut settings = test_settings();
    on_postgres(&mut settings, &tls_url);
    // Act 1: without the CA, the start is refused (a server that merely claims the name
    // never gets the password).
    let refused = acme_cse::App::build(settings.clone().validate().expect("valid"), None).await.err().expect("refused");
    let text = format!("{refused:#}");
    assert!(text.contains("database.url"), "{text}");
    // Act 2: trusting the test CA.
    let cse = TestCse::spawn(|settings| {
        on_postgres(settings, &tls_url);
        settings.database.ca_file = Some(ca.clone());
    })
    .await;
    cse.create_container("/cse-in", "CAdmin", json!({"rn": "secret"})).await;
    // Assert: the CSE's sessions are encrypted (as the server sees them).
    let client = connect(&url).await;
    let rows = client
        .query(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("query pg_stat_ssl");
    let (encrypted, clear): (i64, i64) = (rows[0].get(0), rows[0].get(1));
    assert!(encrypted >= 2 && clear == 0, "sessions with TLS {encrypted}, without {clear}");
    cse.shutdown().await;
}

#[tokio::test]
async fn the_cse_base_lists_every_instance_serving_the_database_and_forgets_one_that_stops() {
    let Some(url) = database("the_cse_base_lists_every_instance_serving_the_database_and_forgets_one_that_stops").await
    else {
        return;
    };
    // Arrange
    let first = on(&url).await;
    let second = on(&url).await;
    let poa = |cse: &TestCse| {
        let cse = cse.cse.clone();
        async move { cse.cse_base().await.expect("CSEBase").attributes.get("poa").cloned().unwrap_or_default() }
    };
    let mut both = vec![first.url.clone(), second.url.clone()];
    both.sort();
    // Assert: both addresses, in one order whichever started first (no flapping).
    eventually("the CSEBase lists both instances", DEADLINE, || async { poa(&first).await == json!(both) }).await;
    assert_eq!(first.retrieve("/cse-in", "CAdmin").await.body["m2m:cb"]["poa"], json!(both));
    // Act: the second stops.
    second.shutdown().await;
    // Assert
    eventually("the CSEBase lists the first only", DEADLINE, || async { poa(&first).await == json!([first.url]) })
        .await;
    first.shutdown().await;
}

#[tokio::test]
async fn what_is_created_through_either_instance_of_an_mn_is_announced_once() {
    let test = "what_is_created_through_either_instance_of_an_mn_is_announced_once";
    let Some(url) = database(test).await else { return };
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn_settings = || {
        let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
        settings.cse.registration.unregister_when_stopping = false;
        on_postgres(&mut settings, &url);
        settings
    };
    let first = TestCse::start(mn_settings()).await;
    let second = TestCse::start(mn_settings()).await;
    first.remote.check_now().await.expect("monitor runs");
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000, "registered by the first");

    // One AE through each instance (the second does not hold the lease).
    for (cse, rn) in [(&first, "one"), (&second, "two")] {
        let body = json!({"m2m:ae": {"rn": rn, "api": "Nx", "rr": false, "srv": ["4"], "at": ["/id-in"]}});
        assert_eq!(cse.create("/cse-mn", &format!("C{rn}"), 2, body).await.rsc, 2001);
    }
    for rn in ["one", "two"] {
        eventually(&format!("{rn} announced"), DEADLINE, || async {
            let at = first.retrieve(&format!("/cse-mn/{rn}"), "CAdmin").await.body["m2m:ae"]["at"].clone();
            at[0].as_str().is_some_and(|entry| entry.starts_with("/id-in/"))
        })
        .await;
    }
    let copies = in_cse.retrieve("/cse-in/id-mn?fu=1&ty=10002", "CAdmin").await.uril();
    assert_eq!(copies.len(), 2, "one copy each: {copies:?}");
    second.shutdown().await;
    first.shutdown().await;
    in_cse.shutdown().await;
}

#[tokio::test]
async fn health_is_503_while_the_database_takes_no_writes() {
    let test = "health_is_503_while_the_database_takes_no_writes";
    let Some(url) = database(test).await else { return };
    let cse = on(&url).await;
    let health = format!("{}/health", cse.admin_url.as_deref().expect("an admin listener"));
    let answer = reqwest::get(&health).await.expect("health answers");
    assert_eq!(answer.status().as_u16(), 200);

    // The database turns read-only (as a replica promoted the wrong way round, or a full
    // disk, would make it): every session from now on, the CSE's too.
    let name = url.rsplit('/').next().expect("a database name").to_string();
    let admin = connect(&url).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .expect("make the database read-only");
    eventually("health reports the database", DEADLINE, || async {
        let Ok(answer) = reqwest::get(&health).await else { return false };
        if answer.status().as_u16() != 503 {
            return false;
        }
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        body["status"] == "unavailable" && body["database"]["writable"] == false
    })
    .await;
    cse.shutdown().await;
}
