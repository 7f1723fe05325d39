//! `memgate route` flags.

use clap::Args;

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Comma-separated nodes, as for `memgate proxy --servers`
    /// [default: $MEMCACHIER_SERVERS, else $MEMCACHE_SERVERS].
    #[arg(long)]
    pub servers: Option<String>,
    /// Keys to place.
    #[arg(required = true)]
    pub keys: Vec<String>,
}
