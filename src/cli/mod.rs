//! Command-line flags (each also read from `MEMGATE_<ROLE>_<FLAG>`), turned
//! into validated, typed configuration before anything is bound.
//!
//! The command line belongs to the binary, one file per role: each role's
//! flags know that role's config type, so they live here rather than in the
//! library, whose `config` and `units` modules then import no role.

mod analytics;
mod bench;
mod certs;
mod node;
mod proxy;
mod route;
mod up;

pub use analytics::AnalyticsArgs;
pub use bench::BenchArgs;
pub use certs::CertsArgs;
pub use node::{NodeArgs, NodeCommand};
pub use proxy::ProxyArgs;
pub use route::RouteArgs;
pub use up::UpArgs;

use clap::{Parser, Subcommand};
use memgate::config::ConfigError;

#[derive(Debug, Parser)]
#[command(
    name = "memgate",
    version,
    about = "Authenticated TLS memcached: sidecar, storage node, analytics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub role: Role,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// The multi-tenant, authenticated storage node.
    Node(NodeArgs),
    /// The sidecar: plain memcached on loopback, verified TLS + SASL to the nodes.
    // Boxed: by far the largest of the roles' flags.
    Proxy(Box<ProxyArgs>),
    /// Print which node each key maps to (the proxy's ketama ring).
    Route(RouteArgs),
    /// Create the private PKI: a root CA, node and client certificates.
    Certs(CertsArgs),
    /// Run a whole local cluster (TLS + SASL nodes and the sidecar) in one process.
    Up(UpArgs),
    /// Load generator in the style of memtier_benchmark.
    Bench(BenchArgs),
    /// The cache owner's HTTP API and dashboard (stats, history, flush, credentials) across the nodes.
    Analytics(AnalyticsArgs),
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// A token, checked for length; `required` says what else could stand in
/// for a missing one.
fn admin_token(token: Option<String>, required: bool) -> Result<Option<String>, ConfigError> {
    match token {
        None if !required => Ok(None),
        None => Err(ConfigError::Missing {
            what: "--admin-token or mutual TLS (the admin API is never open)",
        }),
        Some(t) if t.trim().len() < MIN_ADMIN_TOKEN_LEN => Err(ConfigError::Invalid {
            what: "--admin-token",
            value: "<redacted>".into(),
            expected: "a token of at least 16 characters",
        }),
        Some(t) => Ok(Some(t.trim().to_owned())),
    }
}

#[cfg(test)]
mod tests;
