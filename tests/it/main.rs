//! Integration tests: real CSEs on 127.0.0.1:0, talked to over HTTP. One test binary.

mod access;
mod admin;
mod announcements;
mod binary;
mod cache;
mod conformance;
mod expiry;
mod failover;
mod forwarding;
mod foundation;
mod fuzz;
mod harness;
mod hostile;
mod layering;
mod liveliness;
mod peers;
mod postgres;
mod pushdown;
mod registration;
mod registrees;
mod reload;
mod results;
mod security;
mod subscriptions;
mod topology;
