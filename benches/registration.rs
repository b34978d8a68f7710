//! Registration timings on loopback: how long an MN takes from start to registered, how
//! long one registree liveliness sweep takes on an IN with many registrees, what
//! registering and removing many registrees with long `dcse` lists costs the IN, how soon
//! an MN is registered again after its IN lost its data, and how fast a new `ici` travels
//! down a three-level tree.
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
    cse: Cse,
    remote: acme_cse::remote::RemoteCseManager,
    token: CancellationToken,
    running: Running,
}

async fn start(settings: Settings) -> anyhow::Result<Node> {
    let app = App::build(settings.validate()?, None).await?;
    let cse = app.cse().clone();
    let remote = app.remote().clone();
    let token = app.shutdown_token();
    let running = app.start().await?;
    Ok(Node { cse, remote, token, running })
}

impl Node {
    async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.running.stopped().await
    }
}

fn base() -> Settings {
    let mut settings = Settings::default();
    settings.admin.listen = String::new();
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
    let in_cse = in_app.cse().clone();
    let in_remote = in_app.remote().clone();
    let in_token = in_app.shutdown_token();
    let in_running = in_app.start().await?;
    let in_node = Node { cse: in_cse, remote: in_remote, token: in_token, running: in_running };

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

    churn(1_000, 100).await?;
    reregistration_after_data_loss().await?;
    push_down_latency().await
}

/// An IN that accepts `/id-mn*` registrees, on `listen`.
fn registrar_in(listen: &str) -> Settings {
    let mut settings = base();
    settings.http.listen = listen.into();
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into(), "/id-asn*".into()];
    settings
}

/// The IN stops and comes back on the same port with an empty database (it lost its
/// data); the MN, checking every second, registers again. Measured: from the new IN
/// answering to the MN's CSR existing there.
async fn reregistration_after_data_loss() -> anyhow::Result<()> {
    let mut in_node = start(registrar_in("127.0.0.1:0")).await?;
    let url = poa(&in_node).await?;
    let bound = url.trim_start_matches("http://").to_string();
    let mut settings = mn(1, &url);
    settings.cse.registration.check_interval = Duration::from_secs(1);
    let mut samples = Vec::new();
    let mn_node = start(settings).await?;
    mn_node.remote.check_now().await?;
    for run in 0..10u64 {
        in_node.stop().await?;
        // Down for 0.3 to 1.2 s, so that the IN comes back at every phase of the MN's round.
        tokio::time::sleep(Duration::from_millis(300 + run * 97 % 900)).await;
        in_node = start(registrar_in(&bound)).await?;
        let began = Instant::now();
        while in_node.cse.stored("id-mn1").await?.is_none() {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(began.elapsed());
    }
    samples.sort();
    println!(
        "IN lost its data (down 0.3-1.2 s, back empty) -> MN registered again: p50 {:.1} ms, max {:.1} ms ({} runs; MN check_interval 1 s, retries from 0.5 s)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    );
    mn_node.stop().await?;
    in_node.stop().await
}

/// The address a node advertises (the one it bound, for `:0`).
async fn poa(node: &Node) -> anyhow::Result<String> {
    let cse_base = node.cse.cse_base().await?;
    cse_base.str_list("poa").into_iter().next().ok_or_else(|| anyhow::anyhow!("no poa"))
}

/// IN1 and IN2 ← MN1 ← MN2 ← ASN, every check interval an hour. MN1 moves between IN1
/// and IN2 (a reload), which changes its `ici`; the new `ici` travels down two levels.
/// Measured: from MN1's CSEBase holding the new `ici` to the ASN's holding it (push-down
/// over two hops), and from the reload to the ASN (leave, register, push-down).
async fn push_down_latency() -> anyhow::Result<()> {
    let in1 = start(registrar_in("127.0.0.1:0")).await?;
    let mut in2_settings = registrar_in("127.0.0.1:0");
    in2_settings.cse.cse_id = "/id-in2".into();
    in2_settings.cse.resource_name = "cse-in2".into();
    let in2 = start(in2_settings).await?;
    let (in1_url, in2_url) = (poa(&in1).await?, poa(&in2).await?);
    let level = |kind: CseKind, csi: &str, rn: &str, registrar: (&str, &str, &str)| {
        let mut settings = base();
        settings.cse.kind = kind;
        settings.cse.cse_id = csi.into();
        settings.cse.resource_name = rn.into();
        settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into(), "/id-asn*".into()];
        settings.cse.registrar = Some(RegistrarSettings {
            address: vec![registrar.0.to_string()],
            cse_id: registrar.1.into(),
            resource_name: registrar.2.into(),
            ..RegistrarSettings::default()
        });
        settings
    };
    let mn1_at = |address: &str, csi: &str, rn: &str| level(CseKind::Mn, "/id-mn1", "cse-mn1", (address, csi, rn));
    let mn1 = start(mn1_at(&in1_url, "/id-in", "cse-in")).await?;
    mn1.remote.check_now().await?;
    let mn2 = start(level(CseKind::Mn, "/id-mn2", "cse-mn2", (&poa(&mn1).await?, "/id-mn1", "cse-mn1"))).await?;
    mn2.remote.check_now().await?;
    let asn = start(level(CseKind::Asn, "/id-asn", "cse-asn", (&poa(&mn2).await?, "/id-mn2", "cse-mn2"))).await?;
    asn.remote.check_now().await?;
    let ici = |node: &Node| {
        let cse = node.cse.clone();
        async move {
            let cse_base = cse.cse_base().await?;
            anyhow::Ok(cse_base.str("ici").map(str::to_string))
        }
    };
    let (mut hops, mut totals) = (Vec::new(), Vec::new());
    for run in 0..20 {
        let (target, csi, rn) =
            if run % 2 == 0 { (&in2_url, "/id-in2", "cse-in2") } else { (&in1_url, "/id-in", "cse-in") };
        let began = Instant::now();
        mn1.remote.apply_config(mn1_at(target, csi, rn).validate()?).await?;
        while ici(&mn1).await?.as_deref() != Some(csi) {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        let at_top = Instant::now();
        while ici(&asn).await?.as_deref() != Some(csi) {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        hops.push(at_top.elapsed());
        totals.push(began.elapsed());
    }
    hops.sort();
    totals.sort();
    println!(
        "push-down of a new ici over a three-level tree (MN1 -> MN2 -> ASN, check intervals 1 h): p50 {:.2} ms, max {:.2} ms; reload -> ASN: p50 {:.2} ms, max {:.2} ms ({} runs)",
        percentile(&hops, 0.5).as_secs_f64() * 1e3,
        hops[hops.len() - 1].as_secs_f64() * 1e3,
        percentile(&totals, 0.5).as_secs_f64() * 1e3,
        totals[totals.len() - 1].as_secs_f64() * 1e3,
        hops.len()
    );
    for node in [asn, mn2, mn1, in2, in1] {
        node.stop().await?;
    }
    Ok(())
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
