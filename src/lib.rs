#![deny(unsafe_code)] // audited exceptions: allocator::release_free_memory, auth::hashers::lower_priority
//! memgate: a TLS + SASL memcached sidecar, a multi-tenant storage node, and
//! the cache owner's analytics service, in one crate and one binary.
//!
//! # Module map
//! - [`protocol`]: memcached's text, meta and binary protocols, sans-IO.
//! - [`node`]: the storage node (`memgate node`).
//! - [`auth`]: passwords (hashing, constant-time checks) and the failed-login
//!   throttle.
//! - [`mrc`]: the what-if tracker (miss-ratio curves) and the curve type.
//! - [`admin_view`]: the admin API's JSON bodies, shared by node and analytics.
//! - [`session`]: the rules node and proxy sessions share.
//! - [`tls`], [`pki`]: rustls configs from PEM; rcgen PKI.
//! - [`metrics`]: metric names and the Prometheus exporter.
//! - [`clock`]: the wall clock in unix seconds and milliseconds (a leaf).
//! - [`allocator`]: hands memory freed after a burst back to the OS.
//! - [`proxy`]: the sidecar (`memgate proxy`).
//! - [`local`]: `memgate up` (a local cluster) and `memgate certs`.
//! - [`units`]: sizes and durations, parsed the same in flags, env and TOML.
//! - [`config`]: the errors of a configuration that cannot be made.
//! - [`bench`]: `memgate bench`, the load generator.
//! - [`analytics`]: the cache owner's HTTP API over the nodes' admin endpoints.
//!
//! # How a request flows
//!
//! ```text
//! client bytes ─▶ proxy::session ─ protocol::parse (dialect by first byte)
//!                      │            ─▶ Request { Command, Frame }
//!                      ├─ proxy::ring (ketama) picks the node; multi-key gets split
//!                      ├─ proxy::pool: the client's connection slot on that upstream
//!                      ├─ proxy::upstream: meta encode (binary for memcached -S),
//!                      │        │ pipelined, matched by O<seq> (binary: opaque)
//!                      │        │ TLS + ASCII login (binary: SASL PLAIN)
//!                      │        ▼
//!                      │   node::session ─ auth gate ─ capabilities ─ node::store
//!                      │        │ meta reply
//!                      ◀────────┘ Response
//!                 protocol::encode(frame, response) ─▶ client, in request order
//! ```

pub mod admin_view;
pub mod allocator;
pub mod analytics;
pub mod auth;
pub mod bench;
pub mod clock;
pub mod config;
pub mod local;
pub mod metrics;
pub mod mrc;
pub mod node;
pub mod pki;
pub mod protocol;
pub mod proxy;
pub mod session;
mod sync;
pub mod tls;
pub mod units;

/// The version a node reports (`version`, `stats`), and the sidecar for the
/// `version` it answers itself: memcached's, which clients parse, then ours.
pub const VERSION: &str = concat!("1.6.18-memgate-", env!("CARGO_PKG_VERSION"));
