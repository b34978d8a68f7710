//! Announcement timings on loopback: from the CREATE of an original on an MN to its copy
//! being retrievable at the IN, and from an IN that lost its data answering again to all
//! of the MN's announced resources being there again.
//!
//! Run with: `cargo bench --bench announcements` (optionally `-- <resources>`, default
//! 1000). Everything runs in this process on 127.0.0.1 with in-memory stores.

use std::time::{Duration, Instant};

use acme_cse::config::{CseKind, RegistrarSettings, Settings};
use acme_cse::core::request::{Operation, Request};
use acme_cse::{App, Cse, Rsc, Running};
use serde_json::{Value, json};
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

fn registrar_in(listen: &str) -> Settings {
    let mut settings = Settings::default();
    settings.admin.listen = String::new();
    settings.http.listen = listen.into();
    settings.database.in_memory = true;
    settings.logging.level = "warn".into();
    settings.cse.registration.check_interval = Duration::from_secs(3600);
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn*".into()];
    settings
}

fn mn(registrar: &str) -> Settings {
    let mut settings = registrar_in("127.0.0.1:0");
    settings.cse.kind = CseKind::Mn;
    settings.cse.cse_id = "/id-mn".into();
    settings.cse.resource_name = "cse-mn".into();
    settings.cse.registration.check_interval = Duration::from_secs(1);
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

/// CREATE an announced container on the MN; its `ri`.
async fn create_container(cse: &Cse, rn: &str) -> anyhow::Result<String> {
    let mut request = Request::new(Operation::Create, "/id-mn/cse-mn", Some("CAdmin"));
    request.rvi = "4".into();
    request.ty = Some(3);
    request.content = Some(json!({"m2m:cnt": {"rn": rn, "at": ["/id-in"], "lbl": ["bench"]}}));
    let response = cse.handle(request).await;
    anyhow::ensure!(response.rsc == Rsc::Created, "CREATE: {:?} {:?}", response.rsc, response.dbg());
    let ri = response.content.as_ref().and_then(|content| content["m2m:cnt"]["ri"].as_str()).map(str::to_string);
    ri.ok_or_else(|| anyhow::anyhow!("no ri"))
}

/// The copy's `ri` at the IN once the original's `at` names it.
async fn copy_of(cse: &Cse, ri: &str) -> anyhow::Result<Option<String>> {
    let original = cse.stored(ri).await?.ok_or_else(|| anyhow::anyhow!("original gone"))?;
    Ok(original.str_list("at").first().and_then(|entry| entry.strip_prefix("/id-in/")).map(str::to_string))
}

/// How many copies the IN holds below the MN's CSR.
async fn copies_at(cse: &Cse) -> anyhow::Result<usize> {
    let registree = cse.stored("id-mn").await?;
    let Some(registree) = registree else { return Ok(0) };
    let mut request = Request::new(Operation::Retrieve, format!("/id-in/{}", registree.ri()), Some("CAdmin"));
    request.rvi = "4".into();
    request.set_parameter("fu", "1")?;
    request.set_parameter("ty", "10003")?;
    let response = cse.handle(request).await;
    let count = response
        .content
        .as_ref()
        .and_then(|content| content.get("m2m:uril"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok(count)
}

#[tokio::main(worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let resources: usize = std::env::args().skip(1).find_map(|arg| arg.parse().ok()).unwrap_or(1000);
    let mut in_node = start(registrar_in("127.0.0.1:0")).await?;
    let url = in_node.cse.cse_base().await?.str_list("poa").into_iter().next().ok_or_else(|| anyhow::anyhow!("poa"))?;
    let bound = url.trim_start_matches("http://").to_string();
    let mn_node = start(mn(&url)).await?;
    mn_node.remote.check_now().await?;
    anyhow::ensure!(mn_node.remote.is_registered(), "the MN did not register");

    // 1. CREATE on the MN → the copy retrievable at the IN, one at a time.
    let mut samples = Vec::new();
    for index in 0..200 {
        let began = Instant::now();
        let ri = create_container(&mn_node.cse, &format!("latency{index}")).await?;
        // Polled without sleeping (a timer would round every wait up to a millisecond).
        let copy = loop {
            if let Some(copy) = copy_of(&mn_node.cse, &ri).await? {
                break copy;
            }
            tokio::task::yield_now().await;
        };
        while in_node.cse.stored(&copy).await?.is_none() {
            tokio::task::yield_now().await;
        }
        samples.push(began.elapsed());
    }
    samples.sort();
    println!(
        "CREATE on the MN -> copy retrievable at the IN: p50 {:.2} ms, p99 {:.2} ms ({} runs; in-process, loopback HTTP)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );

    // 2. `resources` announced containers; the IN comes back empty; all of them again.
    for index in 0..resources {
        create_container(&mn_node.cse, &format!("bulk{index}")).await?;
    }
    let total = samples.len() + resources;
    let began = Instant::now();
    while copies_at(&in_node.cse).await? < total {
        anyhow::ensure!(began.elapsed() < Duration::from_secs(120), "the copies were not all made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{total} announced containers made at the IN in {:.2} s", began.elapsed().as_secs_f64());
    in_node.stop().await?;
    in_node = start(registrar_in(&bound)).await?;
    let began = Instant::now();
    while copies_at(&in_node.cse).await? < total {
        anyhow::ensure!(began.elapsed() < Duration::from_secs(300), "the copies were not all made again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "IN back with an empty database -> all {total} copies there again: {:.2} s (MN check_interval 1 s: the loss noticed, registered anew, every copy made again)",
        began.elapsed().as_secs_f64()
    );
    mn_node.stop().await?;
    in_node.stop().await
}
