#![deny(unsafe_code)] // one audited exception: allocator::release_free_memory
//! memgate: a TLS + SASL memcached sidecar, a multi-tenant storage node, and
//! the cache owner's analytics service, in one crate and one binary.
//!
//! # Module map
//! - [`protocol`]: memcached's text, meta and binary protocols, sans-IO.
//! - [`node`]: the storage node (`memgate node`).
//! - [`session`]: the rules node and proxy sessions share.
//! - [`tls`], [`pki`]: rustls configs from PEM; rcgen PKI.
//! - [`metrics`]: metric names and the Prometheus exporter.
//! - [`clock`]: the wall clock in unix seconds and milliseconds (a leaf).
//! - [`allocator`]: hands memory freed after a burst back to the OS.
//! - [`proxy`]: the sidecar (`memgate proxy`).
//! - [`cluster`]: `memgate up` and `memgate certs`.
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
//!                      ├─ proxy::pool: the client's connection slot on that node
//!                      ├─ proxy::upstream: binary encode, pipelined, matched by opaque
//!                      │        │ TLS + SASL
//!                      │        ▼
//!                      │   node::session ─ auth gate ─ capabilities ─ node::store
//!                      │        │ binary reply
//!                      ◀────────┘ Response
//!                 protocol::encode(frame, response) ─▶ client, in request order
//! ```

pub mod allocator;
pub mod analytics;
pub mod bench;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod protocol;
pub mod proxy;
pub mod session;
mod sync;
pub mod tls;
pub mod units;
