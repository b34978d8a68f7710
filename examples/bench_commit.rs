//! The disk's ceiling for durable writes, for `bench/run.sh`: one row committed per
//! transaction into a SQLite file with the CSE's durable settings (WAL,
//! `synchronous = FULL`: one `fsync` per commit), one after the other, for the seconds
//! given. Prints `commits/s <rate>`. A CIN CREATE at c=1 cannot beat this: it makes the
//! same commit, plus the request, the checks and more rows (the instance, its container).
//!
//! Run: `cargo run --release --example bench_commit -- <database file> <seconds>`

use std::time::{Duration, Instant};

use rusqlite::Connection;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!("usage: bench_commit <database file> <seconds>"))?;
    let seconds: f64 = args.next().unwrap_or_else(|| "5".into()).parse()?;
    let connection = Connection::open(&path)?;
    connection.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
    )?;
    let body = r#"{"m2m:cin":{"con":"x"}}"#;
    let mut insert = connection.prepare("INSERT INTO rows (body) VALUES (?1)")?;
    let (began, length) = (Instant::now(), Duration::from_secs_f64(seconds));
    let mut commits: u64 = 0;
    while began.elapsed() < length {
        // Autocommit: each INSERT is its own transaction, committed (and synced) at once.
        insert.execute([body])?;
        commits += 1;
    }
    let rate = commits as f64 / began.elapsed().as_secs_f64();
    println!("commits/s {rate:.1}");
    Ok(())
}
