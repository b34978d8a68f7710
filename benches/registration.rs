//! Registration timings on loopback: how long an MN takes from start to registered, how
//! long one registree liveliness sweep takes on an IN with many registrees, and what
//! registering and removing many registrees with long `dcse` lists costs the IN.
//!
//! Run with: `cargo bench --bench registration` (optionally `-- <registrees>`, default 100).
//! Everything runs in this process on 127.0.0.1 with in-memory stores.

use std::time::{Duration, Instant};

use acme_cse::config::{CseKind, RegistrarSettings, Settings};
use acme_cse::core::request::{Operation, Request};
use acme_cse::{App, Cse, Rsc, Running};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Node {
    remote: acme_cse::remote::RemoteCseManager,
    token: CancellationToken,
    running: Running,
}

async fn start(settings: Settings) -> anyhow::Result<Node> {
    let app = App::build(settings.validate()?, None).await?;
    let remote = app.remote().clone();
    let token = app.shutdown_token();
    let running = app.start().await?;
    Ok(Node { remote, token, running })
}

impl Node {
    async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.running.stopped().await
    }
}

fn base() -> Settings {
    let mut settings = Settings::default();
    settings.http.listen = "127.0.0.1:0".into();
    settings.database.in_memory = true;
    settings.logging.level = "warn".into();
    settings.cse.registration.check_interval = Duration::from_secs(3600);
    settings
}

fn mn(index: usize, registrar: &str) -> Settings {
    let mut settings = base();
    settings.cse.kind = CseKind::Mn;
    settings.cse.cse_id = format!("/id-mn{index}");
    settings.cse.resource_name = format!("cse-mn{index}");
    settings.cse.registration.unregister_when_stopping = false;
    settings.cse.registrar = Some(RegistrarSettings {
        address: vec![registrar.to_string()],
        cse_id: "/id-in".into(),
        resource_name: "cse-in".into(),
        ..RegistrarSettings::default()
    });
    settings
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let registrees: usize = std::env::args().skip(1).find_map(|arg| arg.parse().ok()).unwrap_or(100);
    let mut settings = base();
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    settings.cse.registration.liveliness_timeout = Duration::from_secs(2);
    let in_app = App::build(settings.validate()?, None).await?;
    let registrar = format!("http://{}", in_app.local_addr());
    let in_remote = in_app.remote().clone();
    let in_token = in_app.shutdown_token();
    let in_running = in_app.start().await?;
    let in_node = Node { remote: in_remote, token: in_token, running: in_running };

    // 1. MN start → registered (the monitor's first round runs at start).
    let mut samples = Vec::new();
    for index in 0..20 {
        let began = Instant::now();
        let mut settings = mn(10_000 + index, &registrar);
        settings.cse.registration.unregister_when_stopping = true;
        let node = start(settings).await?;
        while !node.remote.is_registered() {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(began.elapsed());
        node.stop().await?;
    }
    samples.sort();
    println!(
        "mn start -> registered: p50 {:.2} ms, max {:.2} ms ({} runs; build + bind + first monitor round)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    );

    // 2. One liveliness sweep over `registrees` live registrees.
    let mut nodes = Vec::new();
    for index in 0..registrees {
        let node = start(mn(index, &registrar)).await?;
        node.remote.check_now().await?;
        nodes.push(node);
    }
    let csrs = in_node.remote.csrs().len();
    let mut sweeps = Vec::new();
    for _ in 0..5 {
        let began = Instant::now();
        in_node.remote.check_now().await?;
        sweeps.push(began.elapsed());
    }
    sweeps.sort();
    println!(
        "liveliness sweep over {csrs} live registrees: p50 {:.2} ms, max {:.2} ms",
        percentile(&sweeps, 0.5).as_secs_f64() * 1e3,
        sweeps[sweeps.len() - 1].as_secs_f64() * 1e3
    );

    // 3. The same registrees gone (connection refused): two sweeps remove them all.
    for node in nodes {
        node.stop().await?;
    }
    let began = Instant::now();
    in_node.remote.check_now().await?;
    let first = began.elapsed();
    in_node.remote.check_now().await?;
    let both = began.elapsed();
    println!(
        "liveliness with {registrees} registrees gone: first sweep {:.2} ms, removed after the second ({:.2} ms in all); {} CSRs left",
        first.as_secs_f64() * 1e3,
        both.as_secs_f64() * 1e3,
        in_node.remote.csrs().len()
    );
    in_node.stop().await?;

    churn(1_000, 100).await
}

/// `registrees` CSRs with `listed` CSEs each in `dcse`, registered and then removed one by
/// one on an IN: the routing table follows every commit, so this is its cost per change
/// (it was quadratic: 1,000 × 100 took minutes of CPU).
async fn churn(registrees: usize, listed: usize) -> anyhow::Result<()> {
    let mut settings = base();
    settings.cse.registration.allowed_csr_originators = vec!["/id-churn*".into()];
    settings.cse.registration.check_liveliness = false;
    let app = App::build(settings.validate()?, None).await?;
    let cse = app.cse().clone();
    let token = app.shutdown_token();
    let running = app.start().await?;
    let began = Instant::now();
    for index in 0..registrees {
        let dcse: Vec<String> = (0..listed).map(|below| format!("/id-churn{index}-asn{below}")).collect();
        let mut request = Request::new(Operation::Create, "cse-in", Some(&format!("/id-churn{index}")));
        request.ty = Some(16);
        request.rcn = Some(0);
        request.content = Some(json!({"m2m:csr": {
            "cb": format!("/id-churn{index}/cse"), "rr": true, "srv": ["4"],
            "poa": ["http://127.0.0.1:9"], "dcse": dcse,
        }}));
        expect(&cse, request, Rsc::Created).await?;
    }
    let registered = began.elapsed();
    let known = cse.registry().descendant_ids().len();
    let began = Instant::now();
    for index in 0..registrees {
        let request = Request::new(Operation::Delete, format!("cse-in/id-churn{index}"), Some("CAdmin"));
        expect(&cse, request, Rsc::Deleted).await?;
    }
    let removed = began.elapsed();
    println!(
        "{registrees} registrees × {listed} dcse: registered in {:.2} s ({known} CSEs routed), removed one by one in {:.2} s ({:.2} ms each); {} left",
        registered.as_secs_f64(),
        removed.as_secs_f64(),
        removed.as_secs_f64() * 1e3 / registrees as f64,
        cse.registry().descendant_ids().len()
    );
    token.cancel();
    running.stopped().await
}

async fn expect(cse: &Cse, request: Request, rsc: Rsc) -> anyhow::Result<()> {
    let response = cse.handle(request).await;
    anyhow::ensure!(response.rsc == rsc, "expected {rsc:?}, got {:?}: {:?}", response.rsc, response.dbg());
    Ok(())
}
