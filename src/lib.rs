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
//!
//! # Layout (see ARCHITECTURE.md)
//! Bottom first; each module uses only those before it: `id`, `error`, `resource`,
//! `security`, `event`, `config`, `storage`, `core`, then `remote` and `binding`, then
//! `bootstrap` and `app`.

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
