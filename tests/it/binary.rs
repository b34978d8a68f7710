//! The `acme-cse` binary as a process: start from a config file, serve, stop on SIGTERM,
//! and refuse a bad configuration before binding anything.

use std::net::TcpListener;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use acme_cse::config::{CseKind, RegistrarSettings};

use crate::harness::{Proxy, Receiver, TestCse, eventually, init_dir, registree_settings};

const BINARY: &str = env!("CARGO_BIN_EXE_acme-cse");

/// A loopback port nobody listens on (bound, read, released).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Start the binary with `config` as its configuration file. `ACME_*` variables of the
/// test environment are removed so that only the file configures the process.
pub(crate) fn start(dir: &Path, config: &str) -> Child {
    let path = dir.join("acme.toml");
    std::fs::write(&path, config).expect("write the configuration file");
    let mut command = Command::new(BINARY);
    command
        .arg("--config")
        .arg(&path)
        .arg("--init-dir")
        .arg(init_dir())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("ACME_") {
            command.env_remove(name);
        }
    }
    command.spawn().expect("start the acme-cse binary")
}

/// Wait for the process to exit (at most 20 s) and return its status and stderr.
async fn finish(mut child: Child) -> (ExitStatus, String) {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut text = String::new();
    let (status, _) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(child.wait(), stderr.read_to_string(&mut text))
    })
    .await
    .expect("the process exits within 20 s");
    (status.expect("wait for the process"), text)
}

async fn cse_base_answers(client: &reqwest::Client, url: &str) -> bool {
    let response = client
        .get(url)
        .header("X-M2M-Origin", "CAdmin")
        .header("X-M2M-RI", "binary-probe")
        .header("X-M2M-RVI", "4")
        .send()
        .await;
    response.is_ok_and(|response| response.headers().get("x-m2m-rsc").is_some_and(|rsc| rsc == "2000"))
}

/// A oneM2M request to the binary (`url`) as `CAdmin`: its RSC and JSON body.
async fn admin_request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    ty: Option<u16>,
    body: Option<serde_json::Value>,
) -> reqwest::Result<(String, serde_json::Value)> {
    request_as(client, method, url, "CAdmin", ty, body).await
}

/// A oneM2M request to the binary (`url`) as `origin`: its RSC and JSON body.
pub(crate) async fn request_as(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    origin: &str,
    ty: Option<u16>,
    body: Option<serde_json::Value>,
) -> reqwest::Result<(String, serde_json::Value)> {
    let mut request = client
        .request(method, url)
        .header("X-M2M-Origin", origin)
        .header("X-M2M-RI", "binary-request")
        .header("X-M2M-RVI", "4");
    if let (Some(ty), Some(body)) = (ty, body) {
        request = request.header("Content-Type", format!("application/json;ty={ty}")).body(body.to_string());
    }
    let response = request.send().await?;
    let rsc = response.headers().get("x-m2m-rsc").and_then(|rsc| rsc.to_str().ok()).unwrap_or_default().to_string();
    let body = response.json().await.unwrap_or_default();
    Ok((rsc, body))
}

/// Every acknowledged write survives a kill -9: the binary on `database` (the lines of its
/// `[database]` section) takes CIN CREATEs from 16 writers at once, is killed in the middle
/// and started again on the same database. Every instance answered 2001 is there, and the
/// container's `cni` counts exactly what is there.
pub(crate) async fn acknowledged_writes_survive_a_kill_9(database: &str) {
    // Arrange
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = format!("[http]\nlisten = \"127.0.0.1:0\"\n\n[database]\n{database}\n");
    let (mut child, _, port) = start_serving(dir.path(), &config).await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}/cse-in");
    eventually("the CSE serves", Duration::from_secs(20), || cse_base_answers(&client, &base)).await;
    let container = serde_json::json!({"m2m:cnt": {"rn": "box", "mni": 1_000_000, "mbs": 1_000_000_000}});
    let (rsc, _) =
        admin_request(&client, reqwest::Method::POST, &base, Some(3), Some(container)).await.expect("CREATE");
    assert_eq!(rsc, "2001");
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..16)
        .map(|writer| {
            let (client, url, acknowledged) = (client.clone(), format!("{base}/box"), acknowledged.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let rn = format!("w{writer}-{n}");
                    let body = serde_json::json!({"m2m:cin": {"rn": rn, "con": "x"}});
                    match admin_request(&client, reqwest::Method::POST, &url, Some(4), Some(body)).await {
                        Ok((rsc, _)) if rsc == "2001" => acknowledged.lock().expect("lock").push(rn),
                        Ok((rsc, body)) => panic!("CREATE {rn} answered {rsc}: {body}"),
                        // The process is gone.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    eventually("writes are acknowledged", Duration::from_secs(20), || async {
        acknowledged.lock().expect("lock").len() >= 300
    })
    .await;
    // Act: killed in the middle of the load, started again.
    child.start_kill().expect("kill -9");
    child.wait().await.expect("the process ends");
    for writer in writers {
        writer.await.expect("a writer ends when the process is gone");
    }
    let (_restarted, _, port) = start_serving(dir.path(), &config).await;
    let base = format!("http://127.0.0.1:{port}/cse-in");
    eventually("the CSE serves again", Duration::from_secs(20), || cse_base_answers(&client, &base)).await;
    // Assert
    let url = format!("{base}/box?fu=1&ty=4");
    let (rsc, found) = admin_request(&client, reqwest::Method::GET, &url, None, None).await.expect("discovery");
    assert_eq!(rsc, "2000", "{found}");
    let found: std::collections::HashSet<&str> = found["m2m:uril"]
        .as_array()
        .expect("m2m:uril")
        .iter()
        .filter_map(|path| path.as_str()?.rsplit('/').next())
        .collect();
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let lost: Vec<&String> = acknowledged.iter().filter(|rn| !found.contains(rn.as_str())).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged instances lost: {lost:?}", lost.len(), acknowledged.len());
    let (_, cnt) =
        admin_request(&client, reqwest::Method::GET, &format!("{base}/box"), None, None).await.expect("RETRIEVE");
    assert_eq!(cnt["m2m:cnt"]["cni"], found.len(), "cni counts what is stored");
}

#[tokio::test]
async fn acknowledged_writes_survive_a_kill_9_on_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("acme.db");
    acknowledged_writes_survive_a_kill_9(&format!("path = {:?}", path.display().to_string())).await;
}

#[tokio::test]
async fn the_binary_serves_its_configured_port_and_stops_cleanly_on_sigterm() {
    // Arrange
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nin_memory = true\n");
    let mut child = start(dir.path(), &config);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/cse-in");
    eventually("the CSEBase answers 2000", Duration::from_secs(20), || {
        let exited = child.try_wait().expect("poll the process").is_some();
        assert!(!exited, "acme-cse exited before serving");
        cse_base_answers(&client, &url)
    })
    .await;
    let pid = child.id().expect("the process is running");
    // Act
    let kill = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}");
    let (status, stderr) = finish(child).await;
    // Assert
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(!cse_base_answers(&client, &url).await, "nothing serves the port after the exit");
}

#[tokio::test]
async fn the_binary_refuses_an_invalid_value_before_binding_and_names_the_key() {
    // Arrange: hold the port, so that an attempt to bind would fail differently.
    let dir = tempfile::tempdir().expect("temporary directory");
    let held = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let port = held.local_addr().expect("local address").port();
    let config =
        format!("[cse]\ncse_id = \"nope\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nin_memory = true\n");
    // Act
    let (status, stderr) = finish(start(dir.path(), &config)).await;
    // Assert
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("cse.cse_id"), "stderr:\n{stderr}");
    assert!(!stderr.contains("http.listen"), "stderr:\n{stderr}");
    drop(held);
}

#[tokio::test]
async fn the_binary_refuses_an_unknown_configuration_key_and_names_it() {
    // Arrange
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = format!("[http]\nlisten = \"127.0.0.1:{port}\"\nlisten_backlog = 5\n\n[database]\nin_memory = true\n");
    // Act
    let (status, stderr) = finish(start(dir.path(), &config)).await;
    // Assert
    assert!(!status.success(), "exit status {status}");
    assert!(stderr.contains("listen_backlog"), "stderr:\n{stderr}");
    assert!(
        !cse_base_answers(&reqwest::Client::new(), &format!("http://127.0.0.1:{port}/cse-in")).await,
        "nothing serves the port"
    );
}

#[tokio::test]
async fn with_logging_format_json_every_log_line_is_a_json_object() {
    // Arrange: JSON lines, with the access log.
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = format!(
        "[admin]\nlisten = \"\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nin_memory = true\n\n[logging]\nlevel = \"info\"\nformat = \"json\"\naccess_log = true\n"
    );
    // Act
    let mut child = start(dir.path(), &config);
    let log = collect_stdout(&mut child);
    eventually("the CSE says it serves", Duration::from_secs(20), || async {
        log.lock().expect("lock").contains("serving HTTP")
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/cse-in");
    let (rsc, _) = request_as(&client, reqwest::Method::GET, &url, "Caccess", None, None).await.expect("answered");
    assert_eq!(rsc, "4103", "an AE that is not registered may not read the CSEBase");
    eventually("the access line is written", Duration::from_secs(20), || async {
        log.lock().expect("lock").contains("acme_cse::access")
    })
    .await;
    signal(&child, "TERM");
    let (status, stderr) = finish(child).await;
    // Assert: each line an object with the time, the level, the target and the message.
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    let text = log.lock().expect("lock").clone();
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{text}");
    for line in lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(object.get(field).is_some(), "no {field}: {line}");
        }
    }
    assert!(text.contains(r#""message":"serving HTTP""#), "{text}");
    // The access line: who asked what, and the answer.
    let access = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|object| object["target"] == "acme_cse::access")
        .expect("an access line");
    let fields = &access;
    assert_eq!(fields["method"], "GET", "{access}");
    assert_eq!(fields["to"], "/cse-in", "{access}");
    assert_eq!(fields["fr"], "Caccess", "{access}");
    assert_eq!(fields["rsc"], 4103, "{access}");
    assert!(fields["duration_us"].is_u64(), "{access}");
    assert_eq!(fields["client"], "127.0.0.1", "{access}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_on_a_read_only_database_and_names_database_path() {
    // Arrange: a database the binary created, then made read-only. Before the fix the CSE
    // started "ready" and answered every write with 5000.
    let dir = tempfile::tempdir().expect("temporary directory");
    let database = dir.path().join("acme.db");
    let config = |port: u16| {
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\npath = {:?}\n", database.display().to_string())
    };
    let (mut first, _, _) = start_serving(dir.path(), &config(0)).await;
    first.start_kill().expect("stop the first run");
    first.wait().await.expect("the first run ends");
    // Read-only for the process: the files, and a user that is not root (root writes anyway).
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir.path()).expect("list") {
        let path = entry.expect("entry").path();
        let mode = if path.is_dir() { 0o777 } else { 0o444 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let path = dir.path().join("acme.toml");
    std::fs::write(&path, config(free_port())).expect("write the configuration file");
    let mut command = if crate::harness::is_root() {
        // A copy of the binary where that user may run it (the build directory may be private).
        let binary = dir.path().join("acme-cse");
        std::fs::copy(BINARY, &binary).expect("copy the binary");
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(binary);
        command
    } else {
        Command::new(BINARY)
    };
    command.arg("--config").arg(&path).arg("--init-dir").arg(init_dir()).current_dir(dir.path());
    command.stdin(Stdio::null()).kill_on_drop(true);
    // Act
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the process exits within 20 s")
        .expect("run acme-cse");
    // Assert
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "exit status {}; output:\n{text}", output.status);
    assert!(text.contains("database.path") && text.contains("acme.db"), "output:\n{text}");
    assert!(!text.contains("CSE ready"), "output:\n{text}");
}

/// The HTTP port of a process started with `listen = "127.0.0.1:0"` and logging at info,
/// once it serves: the system picks a free port when the process binds, so no other test
/// can take it between choosing and binding (as it can with [`free_port`]). Fails with the
/// log if the process ends first or does not serve within 20 s.
pub(crate) async fn serving_port(child: &mut Child, log: &Mutex<String>) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let port = {
            let log = log.lock().expect("log");
            let line = log.lines().find(|line| line.contains("serving HTTP"));
            line.and_then(|line| line.split_whitespace().find_map(|field| field.strip_prefix("address=")))
                .and_then(|address| address.rsplit(':').next())
                .and_then(|port| port.parse().ok())
        };
        if let Some(port) = port {
            return port;
        }
        let ended = child.try_wait().expect("the process's status");
        assert!(
            ended.is_none() && tokio::time::Instant::now() < deadline,
            "the process does not serve (ended: {ended:?}); its log:\n{}",
            log.lock().expect("log")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`start`] with `config` (listening on port 0, logging at info), then [`serving_port`]:
/// the process, its log and its HTTP port.
pub(crate) async fn start_serving(dir: &Path, config: &str) -> (Child, Arc<Mutex<String>>, u16) {
    let mut child = start(dir, config);
    let log = collect_stdout(&mut child);
    let port = serving_port(&mut child, &log).await;
    (child, log, port)
}

/// Everything the process writes to stdout (its log), collected as it comes.
pub(crate) fn collect_stdout(child: &mut Child) -> Arc<Mutex<String>> {
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        let mut buffer = [0u8; 4096];
        while let Ok(read @ 1..) = stdout.read(&mut buffer).await {
            sink.lock().expect("lock").push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    });
    log
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("the process is running");
    let kill = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
    assert!(kill.expect("run kill").success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn sighup_applies_a_valid_file_and_leaves_an_invalid_one_unapplied() {
    // Arrange: a CSE logging at info.
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = "[http]\nlisten = \"127.0.0.1:0\"\n\n[database]\nin_memory = true\n";
    let (child, log, port) = start_serving(dir.path(), &format!("{base}[logging]\nlevel = \"info\"\n")).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/cse-in");
    eventually("the CSEBase answers 2000", Duration::from_secs(20), || cse_base_answers(&client, &url)).await;
    let logged = |text: &str| log.lock().expect("lock").contains(text);

    // Act 1: an invalid value, SIGHUP.
    std::fs::write(dir.path().join("acme.toml"), format!("{base}[cse.registration]\ncheck_interval = \"0s\"\n"))
        .expect("write");
    signal(&child, "HUP");

    // Assert 1: named, nothing applied, still serving.
    eventually("the refusal is logged", Duration::from_secs(10), || async {
        logged("configuration not reloaded") && logged("cse.registration.check_interval")
    })
    .await;
    assert!(cse_base_answers(&client, &url).await, "still serving");
    assert!(!logged("rqi=binary-probe"), "requests are not logged at info");

    // Act 2: a valid file: a new log level, a new interval, a key that needs a restart.
    let text = format!(
        "{}[logging]\nlevel = \"acme_cse=debug\"\n[cse.registration]\ncheck_interval = \"5s\"\n",
        base.replace("[database]", "max_body_size = 1000\n\n[database]")
    );
    std::fs::write(dir.path().join("acme.toml"), text).expect("write");
    signal(&child, "HUP");

    // Assert 2: applied keys and restart keys named; debug lines appear from now on.
    eventually("the reload is logged", Duration::from_secs(10), || async {
        logged("configuration reloaded") && logged("log level changed")
    })
    .await;
    assert!(logged("http.max_body_size"), "the restart-only key is named");
    assert!(cse_base_answers(&client, &url).await);
    eventually("requests are logged at debug", Duration::from_secs(10), || async {
        cse_base_answers(&client, &url).await && logged("rqi=binary-probe")
    })
    .await;
    assert!(!logged("\u{1b}["), "no terminal colours in a piped log");
    signal(&child, "TERM");
    let (status, stderr) = finish(child).await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
}

#[tokio::test]
async fn a_registree_that_keeps_coming_back_with_a_poa_nobody_reaches_is_named_at_warn() {
    // Arrange: an IN (the binary) checking its registrees every 300 ms, removing one
    // after a single failed probe.
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[database]\nin_memory = true\n\
         [cse.registration]\ncheck_interval = \"300ms\"\nliveliness_failures = 1\nliveliness_timeout = \"500ms\"\n\
         allowed_csr_originators = [\"/id-mn*\"]\n"
    );
    let mut child = start(dir.path(), &config);
    let log = collect_stdout(&mut child);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let cse_base = format!("{url}/cse-in");
    eventually("the CSEBase answers 2000", Duration::from_secs(20), || cse_base_answers(&client, &cse_base)).await;

    // Act: an MN that advertises a poa where nothing listens, re-registering every 300 ms.
    let mut settings = registree_settings(CseKind::Mn, "/id-mn", "cse-mn", None);
    settings.cse.registration.check_interval = Duration::from_millis(300);
    settings.http.poa = vec![format!("http://127.0.0.1:{}", free_port())];
    settings.cse.registrar = Some(RegistrarSettings {
        address: vec![url.clone()],
        cse_id: "/id-in".into(),
        resource_name: "cse-in".into(),
        ..RegistrarSettings::default()
    });
    let _mn = TestCse::start(settings).await;

    // Assert: named at warn, with the poa and the reason.
    eventually("the flapping registree is named", Duration::from_secs(20), || async {
        let log = log.lock().expect("lock");
        log.lines().any(|line| {
            line.contains("WARN") && line.contains("keeps registering and being removed") && line.contains("/id-mn")
        })
    })
    .await;
    let text = log.lock().expect("lock").clone();
    let line = text.lines().find(|line| line.contains("keeps registering")).unwrap_or_default();
    assert!(line.contains("not reachable"), "the reason is given: {line}");
    signal(&child, "TERM");
    let (status, stderr) = finish(child).await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
}

#[tokio::test]
async fn sigterm_exits_within_the_grace_while_the_registrar_is_paused() {
    // Arrange: an IN and an MN registered to it, both processes; the MN's client time-out
    // (which bounds its deregistration) is 2 s.
    let (in_dir, mn_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let in_config = "[http]\nlisten = \"127.0.0.1:0\"\n[database]\nin_memory = true\n[cse.registration]\nallowed_csr_originators = [\"/id-mn\"]\n";
    // The MN starts once the IN serves: an IN slow to start (a loaded machine) would push
    // the MN's doubling retries past the deadline below.
    let (registrar, _, in_port) = start_serving(in_dir.path(), in_config).await;
    let client = reqwest::Client::new();
    let mn_config = format!(
        "[cse]\ntype = \"MN\"\ncse_id = \"/id-mn\"\nresource_name = \"cse-mn\"\n\
         [cse.registration]\ncheck_interval = \"1h\"\n\
         [cse.registrar]\naddress = [\"http://127.0.0.1:{in_port}\"]\ncse_id = \"/id-in\"\nresource_name = \"cse-in\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\nclient_timeout = \"2s\"\n[database]\nin_memory = true\n"
    );
    let mn = start(mn_dir.path(), &mn_config);
    let csr = format!("http://127.0.0.1:{in_port}/cse-in/id-mn");
    eventually("the MN is registered at the IN", Duration::from_secs(20), || cse_base_answers(&client, &csr)).await;

    // Act: the IN stops answering (SIGSTOP: connections are accepted by the kernel, never
    // answered); the MN is told to stop.
    signal(&registrar, "STOP");
    signal(&mn, "TERM");
    let (status, stderr) = finish(mn).await;

    // Assert: it gave up deregistering after its time-out and exited cleanly.
    signal(&registrar, "CONT");
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    signal(&registrar, "TERM");
    let (status, stderr) = finish(registrar).await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
}

#[tokio::test]
async fn notifications_pending_at_a_kill_9_are_delivered_after_the_restart() {
    // Arrange: an IN process on a database file, a receiver behind a proxy (off).
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[database]\npath = \"{}\"\n[resource.sub]\nmax_retry_delay = \"1s\"\n",
        dir.path().join("in.db").display()
    );
    let receiver = Receiver::start().await;
    let proxy = Proxy::start(receiver.addr).await;
    let (mut child, _, port) = start_serving(dir.path(), &config).await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let post = |path: &str, ty: u16, body: serde_json::Value| {
        client
            .post(format!("{url}{path}"))
            .header("X-M2M-Origin", "CAdmin")
            .header("X-M2M-RI", "kill-9")
            .header("X-M2M-RVI", "4")
            .header("Content-Type", format!("application/json;ty={ty}"))
            .body(body.to_string())
            .send()
    };
    let created = |response: reqwest::Result<reqwest::Response>| {
        response.is_ok_and(|response| response.headers().get("x-m2m-rsc").is_some_and(|rsc| rsc == "2001"))
    };
    assert!(created(post("/cse-in", 3, serde_json::json!({"m2m:cnt": {"rn": "box"}})).await));
    let sub = serde_json::json!({"m2m:sub": {"rn": "s", "nu": [proxy.url], "enc": {"net": [3]}}});
    assert!(created(post("/cse-in/box", 23, sub).await));
    proxy.switch(false);
    for n in 0..10 {
        let instance = serde_json::json!({"m2m:cin": {"con": n.to_string()}});
        assert!(created(post("/cse-in/box", 4, instance).await));
    }

    // Act: killed (no shutdown at all), started again on the same database.
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    let (restarted, _, port) = start_serving(dir.path(), &config).await;
    let cse_base = format!("http://127.0.0.1:{port}/cse-in");
    eventually("the CSEBase answers again", Duration::from_secs(20), || cse_base_answers(&client, &cse_base)).await;
    proxy.switch(true);

    // Assert: the ten notifications arrive, in order.
    eventually("ten notifications", Duration::from_secs(30), || async { receiver.events().len() >= 10 }).await;
    let contents: Vec<serde_json::Value> =
        receiver.events().iter().map(|event| event["nev"]["rep"]["m2m:cin"]["con"].clone()).collect();
    assert_eq!(contents, (0..10).map(|n: i32| serde_json::json!(n.to_string())).collect::<Vec<_>>());
    signal(&restarted, "TERM");
    let (status, stderr) = finish(restarted).await;
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
}
