//! `memgate certs` flags.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory for the CA and certificates.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// A node certificate: NAME (a DNS name or IP), or NAME=SAN,SAN,...; repeatable.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// A client certificate for mutual TLS; repeatable.
    #[arg(long = "client")]
    pub clients: Vec<String>,
    /// Replace an existing CA (every certificate it issued stops verifying).
    #[arg(long)]
    pub force: bool,
}
