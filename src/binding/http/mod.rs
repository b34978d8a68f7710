//! The HTTP binding (TS-0009).
//!
//! - `wire`: the mapping both halves share: `X-M2M-*` headers, path escapes, `Via`,
//!   `Content-Type` with `ty`, JSON bodies;
//! - `server`: the axum router: an HTTP request into a [`crate::core::request::Request`] for the
//!   core, its [`crate::core::request::Response`] into an HTTP response;
//! - `serve`: the connections (limits, TLS handshakes, graceful shutdown);
//! - `auth`: HTTP authentication of incoming requests;
//! - `tls`: the PEM files and the server's TLS configuration;
//! - `client`: [`Client`], the core's outbound seam over HTTP(S);
//! - `admin`: the admin listener's endpoints (health, metrics, registrations, reload);
//! - `upper_tester`: `POST /__ut__` for conformance test systems (when enabled).
//!
//! The only place that knows axum, hyper, reqwest and HTTP headers.

mod admin;
mod auth;
mod client;
mod serve;
mod server;
pub mod tls;
mod upper_tester;
pub mod wire;

pub use admin::admin_router;
pub use client::Client;
pub use serve::{ServeLimits, serve};
pub use server::router;
