//! acme-cse: a oneM2M CSE with remote-CSE registration.
//!
//! # Layout
//! - [`config`]: `acme.toml` and its validation into [`config::Config`].
//! - [`error`]: [`Error`] and the oneM2M status codes [`Rsc`].
//! - [`address`]: target resolution and originator forms.
//! - [`resource`]: resource types, attribute policies, timestamps (pure).
//! - [`storage`]: the durable store (SQLite) behind the `Store` trait.
//! - [`request`]: request/response primitives, independent of HTTP.
//! - [`event`]: the internal event bus.
//! - [`dispatcher`]: [`Cse`], which applies requests to the resource tree.
//! - [`http`]: the HTTP binding (axum), including HTTP authentication.
//! - [`security`]: credentials accepted and presented (no HTTP, no I/O).
//! - [`tls`]: the PEM files, the server TLS configuration and the TLS listener.
//! - [`app`]: [`App`], which binds, wires, runs and shuts down.

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
pub mod remote;
pub mod resource;
pub mod security;
pub(crate) mod storage;

pub use crate::core::Cse;
pub use app::{App, Running};
pub use error::{Error, Rsc};
