//! Protocol bindings: how requests reach the core (inbound) and how the core reaches
//! other CSEs (outbound, through [`crate::core::net::Outbound`]). HTTP today; each binding keeps
//! both halves and its wire mapping together.

pub mod http;
