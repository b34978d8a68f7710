//! Notification timings on loopback, ours only: from a CIN CREATE answered to its
//! notification received (one at a time), notifications per second with 32 concurrent
//! creators and one or 100 subscriptions on one container, and the memory of 10,000
//! notifications waiting for a target that is down.
//!
//! Run with: `cargo bench --bench notifications`. Everything runs in this process on
//! 127.0.0.1: the IN (in-memory store), the receiver (an axum server answering 2000) and
//! the clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use acme_cse::config::Settings;
use acme_cse::core::request::{Operation, Request};
use acme_cse::{App, Cse, Rsc};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// A receiver that counts notifications and wakes whoever waits for one.
struct Receiver {
    url: String,
    count: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
}

async fn receiver() -> anyhow::Result<Receiver> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(Notify::new());
    let (counter, waker) = (count.clone(), arrived.clone());
    let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, _body: String| {
        let (counter, waker) = (counter.clone(), waker.clone());
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            waker.notify_one();
            let mut response = axum::response::Response::new(axum::body::Body::empty());
            response.headers_mut().insert("x-m2m-rsc", axum::http::HeaderValue::from_static("2000"));
            if let Some(rqi) = headers.get("x-m2m-ri") {
                response.headers_mut().insert("x-m2m-ri", rqi.clone());
            }
            response
        }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(Receiver { url, count, arrived })
}

async fn request(cse: &Cse, op: Operation, to: &str, ty: Option<u64>, content: Value, rsc: Rsc) -> anyhow::Result<()> {
    let mut request = Request::new(op, to, Some("CAdmin"));
    request.ty = ty;
    request.rcn = Some(0);
    request.content = Some(content);
    let response = cse.handle(request).await;
    anyhow::ensure!(response.rsc == rsc, "expected {rsc:?}, got {:?}: {:?}", response.rsc, response.dbg());
    Ok(())
}

async fn container(cse: &Cse, rn: &str) -> anyhow::Result<()> {
    request(cse, Operation::Create, "cse-in", Some(3), json!({"m2m:cnt": {"rn": rn, "mni": 100}}), Rsc::Created).await
}

async fn subscribe(cse: &Cse, parent: &str, target: &str) -> anyhow::Result<()> {
    let sub = json!({"m2m:sub": {"nu": [target], "enc": {"net": [3]}}});
    request(cse, Operation::Create, parent, Some(23), sub, Rsc::Created).await
}

async fn instance(cse: &Cse, parent: &str, n: usize) -> anyhow::Result<()> {
    request(cse, Operation::Create, parent, Some(4), json!({"m2m:cin": {"con": n.to_string()}}), Rsc::Created).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn wait_for(receiver: &Receiver, count: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while receiver.count.load(Ordering::SeqCst) < count {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {count} notifications",
            receiver.count.load(Ordering::SeqCst)
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), receiver.arrived.notified()).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut settings = Settings::default();
    settings.admin.listen = String::new();
    settings.http.listen = "127.0.0.1:0".into();
    settings.database.in_memory = true;
    settings.logging.level = "warn".into();
    settings.resource.sub.max_retry_delay = Duration::from_secs(1);
    settings.resource.sub.max_pending_per_target = 100_000;
    // The dead target of part 3 could not be verified; nothing measured depends on it.
    settings.resource.sub.verify = false;
    let app = App::build(settings.validate()?, None).await?;
    let cse = app.cse().clone();
    let token = app.shutdown_token();
    let running = app.start().await?;
    let sink = receiver().await?;

    // 1. One at a time: CIN CREATE answered → its notification received.
    container(&cse, "latency").await?;
    subscribe(&cse, "cse-in/latency", &sink.url).await?;
    let mut samples = Vec::new();
    for n in 0..500 {
        let before = sink.count.load(Ordering::SeqCst);
        instance(&cse, "cse-in/latency", n).await?;
        let answered = Instant::now();
        wait_for(&sink, before + 1, Duration::from_secs(10)).await?;
        samples.push(answered.elapsed());
    }
    samples.sort();
    println!(
        "CIN CREATE answered -> notification received (c=1): p50 {:.3} ms, p99 {:.3} ms ({} runs)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );

    // 2. Throughput: 32 concurrent creators, one subscription, then 100 on one container.
    for subscriptions in [1, 100] {
        let name = format!("load{subscriptions}");
        container(&cse, &name).await?;
        let parent = format!("cse-in/{name}");
        for _ in 0..subscriptions {
            subscribe(&cse, &parent, &sink.url).await?;
        }
        let instances = 3_200 / subscriptions.min(10);
        let before = sink.count.load(Ordering::SeqCst);
        let began = Instant::now();
        let mut creators = tokio::task::JoinSet::new();
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..32 {
            let (cse, parent, next) = (cse.clone(), parent.clone(), next.clone());
            creators.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= instances {
                        return anyhow::Ok(());
                    }
                    instance(&cse, &parent, n).await?;
                }
            });
        }
        while let Some(done) = creators.join_next().await {
            done??;
        }
        let expected = before + instances * subscriptions;
        wait_for(&sink, expected, Duration::from_secs(300)).await?;
        let elapsed = began.elapsed().as_secs_f64();
        println!(
            "{subscriptions} subscription(s), 32 creators: {instances} CINs -> {} notifications in {elapsed:.2} s: {:.0} notifications/s",
            instances * subscriptions,
            (instances * subscriptions) as f64 / elapsed
        );
    }

    // 3. 10,000 notifications waiting for a target that is down (nothing listens there).
    let dead = format!("http://127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    container(&cse, "pending").await?;
    subscribe(&cse, "cse-in/pending", &dead).await?;
    let before = rss_mib();
    for n in 0..10_000 {
        instance(&cse, "cse-in/pending", n).await?;
    }
    println!(
        "RSS of the bench process (CSE, receiver, clients): {before:.1} MiB before, {:.1} MiB with 10,000 notifications pending",
        rss_mib()
    );
    token.cancel();
    running.stopped().await
}
