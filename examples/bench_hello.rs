//! The local ceiling for `bench/run.sh` (scenario 7): a bare axum server that answers
//! `GET /` with a short body, on 127.0.0.1 and the port given as the first argument.
//!
//! Run: `cargo run --release --example bench_hello -- 8090`

use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).unwrap_or_else(|| "8090".into()).parse()?;
    let app = Router::new().route("/", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
