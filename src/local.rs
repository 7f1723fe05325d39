//! `memgate up`: a whole local cluster in one process, and `memgate certs`.
//!
//! `up` needs nothing but the binary. Under `--dir` it creates (or reuses) a
//! private CA, a node certificate for localhost, and one cache with random
//! credentials; then it starts N nodes (TLS and login required, loopback
//! only) and the sidecar in front of them, exactly as separate processes
//! would run, so what works here works in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::distributions::{Alphanumeric, DistString};
use tokio::sync::watch;

use crate::node::caches::CachesFile;
use crate::node::{Node, NodeConfig, NodeError};
use crate::pki::{self, CertificateAuthority, PkiError};
use crate::proxy::{Proxy, ProxyConfig, ProxyError};

/// The cache `memgate up` creates.
const CACHE_ID: &str = "local";
/// Each node's share of that cache.
const NODE_MEMORY: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Pki(#[from] PkiError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Caches(#[from] crate::node::caches::CachesError),
    #[error("node: {0}")]
    Node(#[from] NodeError),
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    #[error("--nodes must be between 1 and 64")]
    NodeCount,
}

impl LocalError {
    /// True when the error is a port that cannot be bound (not bad configuration).
    pub fn is_bind(&self) -> bool {
        matches!(
            self,
            LocalError::Node(NodeError::Bind { .. }) | LocalError::Proxy(ProxyError::Bind { .. })
        )
    }
}

/// `memgate certs`: the CA under `out` (reused unless `force`), then a
/// certificate per node and per client.
pub fn certs(
    out: &Path,
    nodes: &[String],
    clients: &[String],
    force: bool,
) -> Result<Vec<PathBuf>, LocalError> {
    let (ca, created) = if force {
        let ca = CertificateAuthority::generate("memgate root CA")?;
        ca.write_files(out, true)?;
        (ca, true)
    } else {
        CertificateAuthority::load_or_create(out, "memgate root CA")?
    };
    let mut written = Vec::new();
    if created {
        written.push(out.join(pki::CA_CERT_FILE));
        written.push(out.join(pki::CA_KEY_FILE));
    }
    for spec in nodes {
        let (name, sans) = node_sans(spec);
        let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
        let issued = ca.issue_node(&name, &sans)?;
        let (cert, key) = pki::write_pem_files(out, &name, &issued, true)?;
        written.extend([cert, key]);
    }
    for name in clients {
        let issued = ca.issue_client(name)?;
        let (cert, key) = pki::write_pem_files(out, &format!("client-{name}"), &issued, true)?;
        written.extend([cert, key]);
    }
    Ok(written)
}

/// `NAME` or `NAME=SAN,SAN`: the file stem and the names the certificate
/// carries. `localhost` also covers the loopback addresses.
fn node_sans(spec: &str) -> (String, Vec<String>) {
    let (name, sans) = match spec.split_once('=') {
        Some((name, list)) => (
            name,
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        ),
        None => (spec, vec![spec.to_string()]),
    };
    let mut sans: Vec<String> = sans;
    if name == "localhost" {
        for ip in ["127.0.0.1", "::1"] {
            if !sans.iter().any(|s| s == ip) {
                sans.push(ip.to_string());
            }
        }
    }
    (name.to_string(), sans)
}

/// What `memgate up` was asked for.
#[derive(Clone, Debug)]
pub struct UpConfig {
    pub nodes: usize,
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub dir: PathBuf,
}

/// A running local cluster.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub node_addrs: Vec<SocketAddr>,
    pub dir: PathBuf,
    pub username: String,
    node_stop: watch::Sender<bool>,
    proxy_stop: watch::Sender<bool>,
    proxy_task: tokio::task::JoinHandle<()>,
    node_tasks: Vec<tokio::task::JoinHandle<()>>,
    _reload: watch::Sender<u64>,
}

/// The local credentials, kept under `--dir` so a restart reuses them.
struct Credentials {
    username: String,
    password: String,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Create (or reuse) the PKI, credentials and caches file under `dir`.
fn prepare(dir: &Path) -> Result<(CertificateAuthority, Credentials, PathBuf), LocalError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let (ca, _) = CertificateAuthority::load_or_create(dir, "memgate local CA")?;
    let (node_cert, _) = (dir.join("node.crt"), dir.join("node.key"));
    if !node_cert.exists() {
        let issued = ca.issue_node("localhost", &["localhost", "127.0.0.1", "::1"])?;
        pki::write_pem_files(dir, "node", &issued, true)?;
    }
    let caches_path = dir.join("caches.toml");
    let creds = if caches_path.exists() {
        let file = CachesFile::load(&caches_path)?;
        let cred = file
            .caches
            .iter()
            .find(|c| c.id == CACHE_ID)
            .and_then(|c| c.primary())
            .cloned();
        let password = std::fs::read_to_string(dir.join("password")).map_err(io_error(dir))?;
        match cred {
            Some(cred) => Credentials {
                username: cred.username,
                password: password.trim().to_string(),
            },
            None => {
                return Err(LocalError::Io {
                    path: caches_path,
                    source: std::io::Error::other(
                        "has no cache \"local\"; remove the directory to start afresh",
                    ),
                })
            }
        }
    } else {
        let mut rng = rand::thread_rng();
        let creds = Credentials {
            username: Alphanumeric.sample_string(&mut rng, 12),
            password: Alphanumeric.sample_string(&mut rng, 32),
        };
        let hash = crate::auth::hash_password(&creds.password).map_err(|e| LocalError::Io {
            path: caches_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let text = format!(
            "# Written by `memgate up`. One cache, one credential; the password is in ./password.\n\
             [[cache]]\nid = \"{CACHE_ID}\"\nmemory_limit = \"{}MiB\"\n\n\
             [[cache.credential]]\nusername = \"{}\"\npassword_hash = \"{hash}\"\nprimary = true\n",
            NODE_MEMORY >> 20,
            creds.username
        );
        pki::write_file(
            &dir.join("password"),
            creds.password.as_bytes(),
            0o600,
            true,
        )?;
        pki::write_file(&caches_path, text.as_bytes(), 0o600, true)?;
        creds
    };
    Ok((ca, creds, caches_path))
}

/// Start the nodes and the sidecar.
pub async fn start(config: UpConfig) -> Result<Running, LocalError> {
    if config.nodes == 0 || config.nodes > 64 {
        return Err(LocalError::NodeCount);
    }
    let dir = config.dir.clone();
    let (ca, creds, caches_path) = prepare(&dir)?;
    let server_tls =
        crate::tls::server_config_from_files(dir.join("node.crt"), dir.join("node.key"))?;
    let (node_stop, node_rx) = watch::channel(false);
    let mut node_addrs = Vec::new();
    let mut node_tasks = Vec::new();
    for _ in 0..config.nodes {
        let mut node_config = NodeConfig::new(Some(caches_path.clone()));
        node_config.listen = None;
        node_config.tls_listen = Some((
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::clone(&server_tls),
        ));
        node_config.memory_limit = NODE_MEMORY;
        let node = Node::bind(node_config).await?;
        if let Some(addr) = node.tls_addr() {
            node_addrs.push(addr);
        }
        node_tasks.push(tokio::spawn(node.run(node_rx.clone())));
    }
    let servers = node_addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| crate::proxy::ring::parse_server_entry(&format!("node{}={addr}", i + 1)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ProxyError::Ring)?;
    let mut proxy_config = ProxyConfig::new(
        servers,
        crate::tls::client_config(ca.cert_pem().as_bytes(), None)?,
        creds.username.clone(),
        creds.password.clone(),
    );
    // The nodes are memgate's own: meta (the default), after MemCachier's
    // ASCII login, with the certificate `certs` made for localhost.
    proxy_config.listen = config.listen;
    proxy_config.server_name = Some("localhost".into());
    proxy_config.metrics_listen = config.metrics_listen;
    let proxy = Proxy::bind(proxy_config).await?;
    let proxy_addr = proxy.addr().unwrap_or(config.listen);
    let metrics_addr = proxy.metrics_addr();
    let (proxy_stop, proxy_rx) = watch::channel(false);
    let (reload, reload_rx) = watch::channel(0);
    let proxy_task = tokio::spawn(proxy.run(proxy_rx, reload_rx));
    // Write the environment that reproduces this with separate processes.
    let env = format!(
        "MEMCACHIER_SERVERS={}\nMEMCACHIER_USERNAME={}\nMEMCACHIER_PASSWORD={}\n",
        node_addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("node{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(","),
        creds.username,
        creds.password
    );
    pki::write_file(&dir.join("memgate.env"), env.as_bytes(), 0o600, true)?;
    Ok(Running {
        proxy_addr,
        metrics_addr,
        node_addrs,
        dir,
        username: creds.username,
        node_stop,
        proxy_stop,
        proxy_task,
        node_tasks,
        _reload: reload,
    })
}

impl Running {
    /// The start-up banner: where to point the app and how to look inside.
    pub fn banner(&self) -> String {
        let dir = self.dir.display();
        let mut s = format!(
            "memgate is up: {} nodes (TLS + SASL) behind the sidecar.\n\n  point your app at   {}   (any memcached client, no TLS, no login)\n",
            self.node_addrs.len(),
            self.proxy_addr
        );
        if let Some(m) = self.metrics_addr {
            s.push_str(&format!(
                "  metrics            http://{m}/metrics\n  health             http://{m}/healthz   http://{m}/readyz\n"
            ));
        }
        s.push_str(&format!(
            "  nodes              {}\n  cache username     {}   (password in {dir}/password)\n\n\
             The same setup as separate processes (after `set -a; . {dir}/memgate.env; set +a`):\n\
             \x20 memgate node --caches {dir}/caches.toml --cert {dir}/node.crt --key {dir}/node.key --listen none --tls-listen <one node address>\n\
             \x20 memgate proxy --ca {dir}/ca.crt --server-name localhost\n\n\
             Ctrl-C stops everything.\n",
            self.node_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            self.username,
        ));
        s
    }

    /// Stop the sidecar (draining clients), then the nodes.
    pub async fn stop(self) {
        let _ = self.proxy_stop.send(true);
        let _ = self.proxy_task.await;
        let _ = self.node_stop.send(true);
        for task in self.node_tasks {
            let _ = task.await;
        }
    }
}
