//! What the synchronous transaction bodies cost on PostgreSQL.
//!
//! The core's transactions are closures run on a blocking thread (SQLite is synchronous,
//! and a closure is what a backend runs again after a conflict); on PostgreSQL each
//! statement inside is awaited there with `Handle::block_on`. This measures that against
//! the same statements awaited on a runtime task, for a read as the store runs it (`BEGIN
//! ISOLATION LEVEL REPEATABLE READ READ ONLY`, one `SELECT`, `COMMIT`), one at a time and
//! from 8 workers on 8 connections; and the way the store runs it now: the first statement
//! pipelined with BEGIN, COMMIT not waited for.
//!
//! Run with: `ACME_BENCH_POSTGRES_URL=postgresql://user@127.0.0.1:PORT/db cargo bench
//! --bench postgres_calls` (any database; nothing is written). `bench/run.py` starts a
//! throw-away server and runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, Statement};

/// Transactions per measurement.
const TRANSACTIONS: usize = 20_000;
/// Workers (and connections) of the concurrent measurement.
const WORKERS: usize = 8;

struct Connection {
    client: Client,
    select: Statement,
}

async fn connect(url: &str) -> anyhow::Result<Arc<Connection>> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    let select = client.prepare("SELECT $1::BIGINT").await?;
    Ok(Arc::new(Connection { client, select }))
}

/// One read transaction, every statement awaited on this task.
async fn read_async(connection: &Connection, n: i64) -> anyhow::Result<()> {
    connection.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let row = connection.client.query_one(&connection.select, &[&n]).await?;
    anyhow::ensure!(row.get::<_, i64>(0) == n, "wrong answer");
    connection.client.batch_execute("COMMIT").await?;
    Ok(())
}

/// The same transaction as the store runs it: a closure on a blocking thread, each
/// statement awaited there with `Handle::block_on`.
async fn read_blocking(connection: Arc<Connection>, n: i64) -> anyhow::Result<()> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        handle.block_on(connection.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))?;
        let row = handle.block_on(connection.client.query_one(&connection.select, &[&n]))?;
        anyhow::ensure!(row.get::<_, i64>(0) == n, "wrong answer");
        handle.block_on(connection.client.batch_execute("COMMIT"))?;
        Ok(())
    })
    .await?
}

/// As the store runs it since: the closure on a blocking thread, BEGIN sent with the first
/// statement (one round trip), COMMIT sent without waiting for it.
async fn read_pipelined(connection: Arc<Connection>, n: i64) -> anyhow::Result<()> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&n];
        let (begun, row) = handle.block_on(async {
            futures_util::join!(
                connection.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
                connection.client.query_one(&connection.select, &params)
            )
        });
        begun?;
        anyhow::ensure!(row?.get::<_, i64>(0) == n, "wrong answer");
        handle.spawn(async move { connection.client.batch_execute("COMMIT").await });
        Ok(())
    })
    .await?
}

/// How a measurement runs its transactions.
#[derive(Clone, Copy)]
enum Way {
    Async,
    Blocking,
    Pipelined,
}

/// `TRANSACTIONS` transactions over `connections` (one worker each): per transaction, in
/// microseconds, and per second.
async fn measure(connections: &[Arc<Connection>], way: Way) -> anyhow::Result<(f64, f64)> {
    let each = TRANSACTIONS / connections.len();
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for connection in connections {
        let connection = connection.clone();
        workers.spawn(async move {
            for n in 0..each {
                let n = i64::try_from(n)?;
                match way {
                    Way::Async => read_async(&connection, n).await?,
                    Way::Blocking => read_blocking(connection.clone(), n).await?,
                    Way::Pipelined => read_pipelined(connection.clone(), n).await?,
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let total = (each * connections.len()) as f64;
    Ok((elapsed.as_secs_f64() * 1e6 / total * connections.len() as f64, total / elapsed.as_secs_f64()))
}

/// The blocking-pool hand-off alone, per call in microseconds.
async fn hand_off() -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..TRANSACTIONS {
        tokio::task::spawn_blocking(|| ()).await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / TRANSACTIONS as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("ACME_BENCH_POSTGRES_URL") else {
        println!("postgres_calls: SKIPPED: set ACME_BENCH_POSTGRES_URL to a PostgreSQL URL (see the file's header)");
        return Ok(());
    };
    let mut connections = Vec::new();
    for _ in 0..WORKERS {
        connections.push(connect(&url).await?);
    }
    let one = &connections[..1];
    // Warm up both ways (connections, the blocking pool's threads).
    measure(one, Way::Async).await?;
    measure(&connections, Way::Blocking).await?;
    println!("read transaction (BEGIN REPEATABLE READ READ ONLY; SELECT; COMMIT), {TRANSACTIONS} in all:");
    println!("| way | 1 worker: µs per transaction | 1 worker: per s | {WORKERS} workers: per s |");
    println!("| --- | --- | --- | --- |");
    let ways = [
        ("awaited on a task", Way::Async),
        ("closure on a blocking thread, block_on per statement", Way::Blocking),
        ("the same, BEGIN pipelined with the first statement, COMMIT not waited for", Way::Pipelined),
    ];
    for (label, way) in ways {
        // Interleaved rounds; the best of three (the machine is shared).
        let mut best = (f64::MAX, 0.0, 0.0);
        for _ in 0..3 {
            let (micros, rate) = measure(one, way).await?;
            let (_, concurrent) = measure(&connections, way).await?;
            best = (best.0.min(micros), f64::max(best.1, rate), f64::max(best.2, concurrent));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("| {label} | {:.1} | {:.0} | {:.0} |", best.0, best.1, best.2);
    }
    println!("spawn_blocking hand-off alone: {:.1} µs per call", hand_off().await?);
    Ok(())
}
