//! Test harness: a real CSE on an ephemeral loopback port, and helpers to talk to it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use acme_cse::config::Settings;
use acme_cse::{App, Cse};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .init();
    }
});

/// The shipped `init/` directory.
pub fn init_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("init")
}

/// Settings for a test CSE: defaults, loopback on an ephemeral port, in-memory store.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.http.listen = "127.0.0.1:0".into();
    settings.database.in_memory = true;
    settings
}

/// A CSE running in this process.
pub struct TestCse {
    pub url: String,
    pub addr: SocketAddr,
    pub cse: Cse,
    pub client: reqwest::Client,
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
        LazyLock::force(&TRACING);
        let config = settings.validate().expect("valid test configuration");
        let app = App::build(config, Some(init_dir()))
            .await
            .expect("CSE builds");
        let addr = app.local_addr();
        let cse = app.cse().clone();
        let token = app.shutdown_token();
        let task = tokio::spawn(app.run(std::future::pending()));
        TestCse {
            url: format!("http://{addr}"),
            addr,
            cse,
            client: reqwest::Client::new(),
            token,
            task,
        }
    }

    /// Stop gracefully and wait until it has stopped.
    pub async fn shutdown(self) {
        self.token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("CSE stops within 20 s")
            .expect("CSE task did not panic");
        result.expect("CSE stopped cleanly");
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
        builder
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
        let builder = self
            .request(Method::PUT, path, origin)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        Reply::from(builder.send().await).await
    }

    pub async fn delete(&self, path: &str, origin: &str) -> Reply {
        Reply::from(self.request(Method::DELETE, path, origin).send().await).await
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
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        Reply {
            status,
            rsc,
            headers,
            body,
        }
    }

    /// The `m2m:dbg` text.
    pub fn dbg(&self) -> &str {
        self.body["m2m:dbg"].as_str().unwrap_or_default()
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
