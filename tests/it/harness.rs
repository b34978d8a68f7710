//! Test harness: a real CSE on an ephemeral loopback port, and helpers to talk to it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use acme_cse::config::{Config, CseKind, RegistrarSettings, Settings, Source};
use acme_cse::remote::RemoteCseManager;
use acme_cse::{App, Cse};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().init();
    }
});

/// Whether the tests run as root (some servers refuse it; root writes read-only files).
pub fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|id| id.stdout.starts_with(b"0\n"))
}

/// The shipped `init/` directory.
pub fn init_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("init")
}

/// Settings for a test CSE: defaults, loopback on an ephemeral port, in-memory store.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.http.listen = "127.0.0.1:0".into();
    settings.admin.listen = "127.0.0.1:0".into();
    settings.database.in_memory = true;
    settings
}

/// Settings of a registree CSE (`kind`, `/csi`, CSEBase `rn`) registering to `registrar`,
/// with a monitor that only runs at start and on `check_now`.
pub fn registree_settings(kind: CseKind, csi: &str, rn: &str, registrar: Option<&TestCse>) -> Settings {
    let mut settings = test_settings();
    settings.cse.kind = kind;
    settings.cse.cse_id = csi.into();
    settings.cse.resource_name = rn.into();
    settings.cse.registrar = registrar.map(TestCse::as_registrar);
    settings.cse.registration.check_interval = Duration::from_secs(3600);
    settings.cse.registration.allowed_csr_originators = vec!["/id-asn*".into(), "/id-mn*".into()];
    settings
}

/// Settings of an IN-CSE that accepts `/id-mn*` and `/id-asn*` registrees.
pub fn registrar_settings() -> Settings {
    let mut settings = test_settings();
    settings.cse.registration.check_interval = Duration::from_secs(3600);
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into(), "/id-asn*".into()];
    settings.cse.registration.liveliness_timeout = Duration::from_millis(500);
    settings
}

/// Credentials the test helpers send with every request (see [`TestCse::authenticate`]).
#[derive(Debug, Clone)]
pub enum TestAuth {
    Basic { username: String, password: String },
    Bearer { token: String },
}

/// Keep the CSE's data in the durable SQLite file `path` (it survives a restart).
pub fn on_disk(settings: &mut Settings, path: &std::path::Path) {
    settings.database.in_memory = false;
    settings.database.path = path.to_path_buf();
}

/// A CSE running in this process.
pub struct TestCse {
    /// `http://` or, with `[http.tls] enable`, `https://` and the bound address.
    pub url: String,
    pub addr: SocketAddr,
    /// The admin listener (`http://` and its bound address), when on.
    pub admin_url: Option<String>,
    pub cse: Cse,
    pub remote: RemoteCseManager,
    /// Trusts `[http.tls] ca_file` of the CSE's settings, if any.
    pub client: reqwest::Client,
    /// Sent by [`TestCse::request`] and the helpers built on it.
    auth: Option<TestAuth>,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestCse {
    /// Start a CSE with the test settings, changed by `configure`.
    pub async fn spawn(configure: impl FnOnce(&mut Settings)) -> TestCse {
        let mut settings = test_settings();
        configure(&mut settings);
        TestCse::start(settings).await
    }

    pub async fn start(settings: Settings) -> TestCse {
        TestCse::start_hooked(settings, |_| {}).await
    }

    /// Start a CSE; `hook` sees the remote-CSE manager before it starts (to register
    /// callbacks that must not miss the first events).
    pub async fn start_hooked(settings: Settings, hook: impl FnOnce(&RemoteCseManager)) -> TestCse {
        let ca_file = settings.http.tls.ca_file.clone();
        let config = settings.validate().expect("valid test configuration");
        TestCse::start_built(config, None, ca_file, hook).await
    }

    /// Start a CSE configured by `source` (a file it reads again on reload).
    pub async fn start_from(source: Source, hook: impl FnOnce(&RemoteCseManager)) -> TestCse {
        let config = source.load().expect("valid test configuration");
        TestCse::start_built(config, Some(source), None, hook).await
    }

    async fn start_built(
        mut config: Config,
        source: Option<Source>,
        ca_file: Option<PathBuf>,
        hook: impl FnOnce(&RemoteCseManager),
    ) -> TestCse {
        LazyLock::force(&TRACING);
        // `ACME_TEST_BACKEND=postgres`: every CSE that would keep its data in memory keeps it
        // in a database of its own on the PostgreSQL test server instead.
        if std::env::var("ACME_TEST_BACKEND").is_ok_and(|backend| backend == "postgres")
            && config.database.path.is_none()
            && config.database.url.is_none()
        {
            let url = crate::postgres::database("a CSE of the suite").await.expect("a PostgreSQL server");
            config.database.url = Some(acme_cse::security::Secret::new(url));
        }
        let mut client = reqwest::Client::builder();
        if let Some(ca_file) = &ca_file {
            let pem = std::fs::read(ca_file).expect("read the test CA");
            client = client.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).expect("a PEM CA bundle"));
        }
        let client = client.build().expect("test client");
        let app = build_listening(config, source).await;
        hook(app.remote());
        let addr = app.local_addr();
        let admin_url = app.admin_addr().map(|admin| format!("http://{admin}"));
        let scheme = if app.cse().config().http.tls.server.is_some() { "https" } else { "http" };
        let cse = app.cse().clone();
        let remote = app.remote().clone();
        let token = app.shutdown_token();
        let running = app.start().await.expect("CSE starts");
        let task = tokio::spawn(running.stopped());
        TestCse { url: format!("{scheme}://{addr}"), addr, admin_url, cse, remote, client, auth: None, token, task }
    }

    /// Send `auth` with every request of the helpers from now on (`None`: no credentials).
    pub fn authenticate(&mut self, auth: Option<TestAuth>) {
        self.auth = auth;
    }

    /// Stop gracefully and wait until it has stopped. The returned handle still reaches
    /// the stopped CSE's store.
    pub async fn shutdown(self) -> Cse {
        self.token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("CSE stops within 20 s")
            .expect("CSE task did not panic");
        result.expect("CSE stopped cleanly");
        self.cse
    }

    /// This CSE as the registrar of another: `[cse.registrar]` settings pointing here.
    pub fn as_registrar(&self) -> RegistrarSettings {
        RegistrarSettings {
            address: vec![self.url.clone()],
            cse_id: self.cse.config().cse.cse_id.to_string(),
            resource_name: self.cse.config().cse.resource_name.clone(),
            ..RegistrarSettings::default()
        }
    }

    /// A request with the usual oneM2M headers; `path` is the HTTP path (`/cse-in/...`).
    pub fn request(&self, method: Method, path: &str, origin: &str) -> reqwest::RequestBuilder {
        let mut builder = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header("X-M2M-RI", format!("rqi-{}", rand_suffix()))
            .header("X-M2M-RVI", "4")
            .header("Accept", "application/json");
        if !origin.is_empty() {
            builder = builder.header("X-M2M-Origin", origin);
        }
        match &self.auth {
            Some(TestAuth::Basic { username, password }) => builder.basic_auth(username, Some(password)),
            Some(TestAuth::Bearer { token }) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn retrieve(&self, path: &str, origin: &str) -> Reply {
        Reply::from(self.request(Method::GET, path, origin).send().await).await
    }

    pub async fn create(&self, path: &str, origin: &str, ty: u16, body: Value) -> Reply {
        let builder = self
            .request(Method::POST, path, origin)
            .header("Content-Type", format!("application/json;ty={ty}"))
            .body(body.to_string());
        Reply::from(builder.send().await).await
    }

    pub async fn update(&self, path: &str, origin: &str, body: Value) -> Reply {
        let builder =
            self.request(Method::PUT, path, origin).header("Content-Type", "application/json").body(body.to_string());
        Reply::from(builder.send().await).await
    }

    pub async fn delete(&self, path: &str, origin: &str) -> Reply {
        Reply::from(self.request(Method::DELETE, path, origin).send().await).await
    }

    /// A request without any oneM2M header, for tests of the header handling itself.
    pub fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Create a container under `parent`; returns its attributes.
    pub async fn create_container(&self, parent: &str, origin: &str, attributes: Value) -> Value {
        let reply = self.create(parent, origin, 3, serde_json::json!({ "m2m:cnt": attributes })).await;
        assert_eq!(reply.rsc, 2001, "container creation failed: {reply:?}");
        reply.body["m2m:cnt"].clone()
    }

    /// Create a content instance with content `con` under `parent`; returns its attributes.
    pub async fn create_instance(&self, parent: &str, origin: &str, con: Value) -> Value {
        let reply = self.create(parent, origin, 4, serde_json::json!({ "m2m:cin": { "con": con } })).await;
        assert_eq!(reply.rsc, 2001, "instance creation failed: {reply:?}");
        reply.body["m2m:cin"].clone()
    }

    /// Register an AE with `origin` and name `rn`; returns its attributes.
    pub async fn register_ae(&self, origin: &str, rn: &str) -> Value {
        let reply = self
            .create(
                "/cse-in",
                origin,
                2,
                serde_json::json!({"m2m:ae": {"rn": rn, "api": "Ntest", "rr": true, "srv": ["4"]}}),
            )
            .await;
        assert_eq!(reply.rsc, 2001, "AE registration failed: {reply:?}");
        reply.body["m2m:ae"].clone()
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An HTTP reply, decoded.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub rsc: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(result: reqwest::Result<reqwest::Response>) -> Reply {
        let response = result.expect("HTTP request reaches the CSE");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let rsc = headers
            .get("x-m2m-rsc")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        Reply { status, rsc, headers, body }
    }

    /// The `m2m:dbg` text.
    pub fn dbg(&self) -> &str {
        self.body["m2m:dbg"].as_str().unwrap_or_default()
    }

    /// The entries of an `m2m:uril` body, in the order received.
    pub fn uril(&self) -> Vec<String> {
        self.body["m2m:uril"]
            .as_array()
            .unwrap_or_else(|| panic!("expected an m2m:uril body: {self:?}"))
            .iter()
            .map(|entry| entry.as_str().expect("uril entries are strings").to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Poll `check` until it is true; fail after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Build the CSE of `config`. A CSE started again on the address it has just left (a test
/// of restarts) may find that port taken by another test's socket for a while (an outgoing
/// connection that got it as its local port, kept in a client's pool): it tries again, for
/// up to 10 s, while the port is in use; any other failure fails the test at once.
async fn build_listening(config: Config, source: Option<Source>) -> App {
    let started = std::time::Instant::now();
    loop {
        match App::build_from(config.clone(), source.clone(), Some(init_dir())).await {
            Ok(app) => return app,
            Err(error)
                if config.http.listen.port() != 0
                    && started.elapsed() < Duration::from_secs(10)
                    && error.chain().any(|cause| {
                        cause
                            .downcast_ref::<std::io::Error>()
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
                    }) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("CSE builds: {error:#}"),
        }
    }
}

/// A TCP proxy on loopback to one target that can be switched off: off, it closes new
/// connections at once and cuts the ones it carries (as a stopped instance would). Its own
/// address is held from the start, so a CSE that comes up later (on port 0) can be reached
/// at an address known before it ([`Proxy::unaimed`], [`Proxy::aim`]).
pub struct Proxy {
    pub url: String,
    on: Arc<AtomicBool>,
    target: Arc<Mutex<Option<SocketAddr>>>,
    /// Connections carried so far.
    carried_count: Arc<std::sync::atomic::AtomicUsize>,
    carried: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let proxy = Proxy::unaimed().await;
        proxy.aim(target);
        proxy
    }

    /// A proxy with no target yet: it closes every connection, as an address where nothing
    /// listens would refuse it, until [`Proxy::aim`].
    pub async fn unaimed() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let on = Arc::new(AtomicBool::new(true));
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let carried = Arc::new(Mutex::new(JoinSet::new()));
        let carried_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (switch, aimed, connections, count) = (on.clone(), target.clone(), carried.clone(), carried_count.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(target) = *aimed.lock().expect("lock") else { continue };
                if !switch.load(Ordering::SeqCst) {
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                connections.lock().expect("lock").spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { url, on, target, carried_count, carried }
    }

    /// Carry new connections to `target`.
    pub fn aim(&self, target: SocketAddr) {
        *self.target.lock().expect("lock") = Some(target);
    }

    /// How many connections it has carried.
    pub fn connections(&self) -> usize {
        self.carried_count.load(Ordering::SeqCst)
    }

    /// On: carry connections; off: refuse new ones and cut the carried ones.
    pub fn switch(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            self.carried.lock().expect("lock").abort_all();
        }
    }
}

/// A notification receiver: answers 2000 to everything and records what came.
pub struct Receiver {
    pub url: String,
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<(axum::http::HeaderMap, String, Value)>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_answering(Arc::new(std::sync::atomic::AtomicU16::new(2000))).await
    }

    /// A receiver that answers with the RSC `answer` holds (which the test may change).
    pub async fn start_answering(answer: Arc<std::sync::atomic::AtomicU16>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        let router =
            axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let record = record.clone();
                let rsc = answer.load(Ordering::SeqCst).to_string();
                async move {
                    let content = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let rqi = headers.get("x-m2m-ri").cloned();
                    record.lock().expect("lock").push((headers, uri.path().to_string(), content));
                    let mut response = axum::response::Response::new(axum::body::Body::empty());
                    response.headers_mut().insert("x-m2m-rsc", rsc.parse().expect("header"));
                    if let Some(rqi) = rqi {
                        response.headers_mut().insert("x-m2m-ri", rqi);
                    }
                    response
                }
            });
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { url: format!("http://{addr}"), addr, received }
    }

    /// The `m2m:sgn` of every notification received, in order.
    pub fn notifications(&self) -> Vec<Value> {
        self.received.lock().expect("lock").iter().map(|(_, _, body)| body["m2m:sgn"].clone()).collect()
    }

    /// Event notifications only (no verification or deletion notifications).
    pub fn events(&self) -> Vec<Value> {
        self.notifications().into_iter().filter(|sgn| sgn.get("nev").is_some()).collect()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

/// A listener that accepts connections and never answers (it keeps every socket open).
pub async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}
