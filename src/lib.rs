//! acme-cse: a oneM2M CSE with remote-CSE registration.
//!
//! # For embedders
//! - [`App`]: build from a [`config::Config`] (see [`config::Settings`]), start, stop.
//! - [`Cse`]: handle requests ([`Cse::handle`] with a [`crate::core::request::Request`]), read the
//!   configuration, the routing table ([`crate::core::registry::Registry`]) and stored resources,
//!   subscribe to [`event::Event`]s.
//! - [`remote::RemoteCseManager`]: registration status, CSR lookups and callbacks,
//!   `check_now`.
//! - [`binding::http::router`]: the HTTP binding, to mount in another server.
//! - [`metrics::Metrics`]: the counters the admin listener serves (`Cse::metrics`).
//!
//! # Example: an MN-CSE inside your program
//!
//! Build from settings (the same keys as `acme.toml`), register callbacks before starting
//! so that none is missed, start, and stop by cancelling the shutdown token:
//!
//! ```no_run
//! use acme_cse::App;
//! use acme_cse::config::{CseKind, RegistrarSettings, Settings};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let mut settings = Settings::default();
//! settings.cse.kind = CseKind::Mn;
//! settings.cse.cse_id = "/id-mn".into();
//! settings.cse.resource_name = "cse-mn".into();
//! settings.http.listen = "127.0.0.1:8081".into();
//! settings.admin.listen = "127.0.0.1:9081".into();
//! settings.cse.registrar = Some(RegistrarSettings {
//!     address: vec!["http://127.0.0.1:8080".into()],
//!     cse_id: "/id-in".into(),
//!     resource_name: "cse-in".into(),
//!     ..RegistrarSettings::default()
//! });
//! let app = App::build(settings.validate()?, None).await?;
//! app.remote().on_status(|registrar, status, address| {
//!     tracing::info!(registrar = %registrar.cse_id, ?status, ?address, "registration changed");
//! });
//! app.remote().on_csr_update(|csr, added| {
//!     tracing::info!(csi = %csr.csi, added, "a CSR came or went");
//! });
//! let stop = app.shutdown_token();
//! let running = app.start().await?;
//! // ... later, from anywhere:
//! stop.cancel();
//! running.stopped().await?; // drained, deregistered, background work finished
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` runs an IN and an MN this way in one process.
//!
//! # Layout (see ARCHITECTURE.md)
//! Bottom first; each module uses only those before it: `id`, `error`, `resource`,
//! `security`, `event`, `metrics`, `config`, `storage`, `core`, then `remote` and `binding`,
//! then `bootstrap` and `app`.

// Every public item says what it is (CI turns the warning into an error).
#![warn(missing_docs)]
// The library logs through `tracing`; only the binary, examples and benches print.
#![deny(clippy::print_stdout, clippy::print_stderr)]
// Futures the server holds per request stay small (tests may hold big buffers).
#![warn(clippy::large_futures)]

pub mod app;
pub mod binding;
pub(crate) mod bootstrap;
pub mod config;
pub mod core;
pub mod error;
pub mod event;
pub mod id;
pub mod metrics;
pub mod remote;
pub mod resource;
pub mod security;
pub(crate) mod storage;

pub use crate::core::Cse;
pub use app::{App, Running};
pub use error::{Error, Rsc};
pub use storage::CacheStats;
