//! The `memgate` command line: parse flags and environment, start logging,
//! run a role, and map errors to exit codes (64 for bad configuration).

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Role};

mod cli;

/// sysexits.h EX_USAGE: bad configuration.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            let text = error.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("memgate: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging();
    memgate::allocator::map_large_buffers();
    // The sidecar serves on one thread unless told otherwise: a
    // single-threaded runtime does without the work-stealing scheduler's
    // bookkeeping and cross-thread wake-ups, which at 16 connections was
    // about a tenth of the sidecar's CPU per request (benches/NOTES.md).
    let threads = match &cli.role {
        Role::Proxy(args) => match args.threads() {
            Ok(threads) => Some(threads),
            Err(error) => {
                eprintln!("memgate: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        _ => None,
    };
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("memgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(error)) => {
            eprintln!("memgate: {}", chain_text(&error));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("memgate: {}", chain_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each printed once. Our errors' messages name
/// their cause ("cannot listen on …: Address already in use") so that a log
/// line that prints only the outer error still says why; anyhow's `{:#}`
/// would then print every cause a second time after it.
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// Configuration errors exit 64; anything that fails later exits 1.
enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

async fn run(cli: Cli) -> Result<(), Failure> {
    // Long-running roles hand memory freed after a burst back to the OS.
    if matches!(
        cli.role,
        Role::Node(_) | Role::Proxy(_) | Role::Up(_) | Role::Analytics(_)
    ) {
        memgate::allocator::spawn_trimmer();
    }
    match cli.role {
        Role::Node(args) => memgate_node(args).await,
        Role::Proxy(args) => memgate_proxy(*args).await,
        Role::Route(args) => route(args),
        Role::Certs(args) => certs(args),
        Role::Up(args) => up(args).await,
        Role::Bench(args) => bench(args).await,
        Role::Analytics(args) => analytics(args).await,
    }
}

/// `memgate analytics`: the API until Ctrl-C or SIGTERM.
async fn analytics(args: cli::AnalyticsArgs) -> Result<(), Failure> {
    let config = args.into_config().map_err(|e| Failure::Config(e.into()))?;
    let service = memgate::analytics::Analytics::bind(config)
        .await
        .map_err(|e| match e {
            memgate::analytics::AnalyticsError::Bind { .. } => Failure::Runtime(e.into()),
            other => Failure::Config(other.into()),
        })?;
    for (what, addr) in [("api", service.addr()), ("metrics", service.metrics_addr())] {
        if let Some(addr) = addr {
            tracing::info!(listener = what, %addr, "listening");
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(service.run(stop_rx));
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

/// `memgate certs`: write the PKI and list what was written.
fn certs(args: cli::CertsArgs) -> Result<(), Failure> {
    let written = memgate::local::certs(&args.out, &args.nodes, &args.clients, args.force)
        .map_err(|e| Failure::Config(e.into()))?;
    if written.is_empty() {
        println!(
            "CA already in {}; nothing else asked for (give --node NAME)",
            args.out.display()
        );
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `memgate bench`: run the load, then print the report (text or JSON).
async fn bench(args: cli::BenchArgs) -> Result<(), Failure> {
    let json = args.json;
    let config = args.into_config().map_err(|e| Failure::Config(e.into()))?;
    let report = memgate::bench::run(config).await.map_err(|e| match e {
        memgate::bench::BenchError::Config(_) => Failure::Config(e.into()),
        other => Failure::Runtime(other.into()),
    })?;
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    // `--check` fails (exit 1) on any violation, after the report is out.
    match report.check.as_ref().and_then(|c| c.failure()) {
        Some(failure) => Err(Failure::Runtime(anyhow::anyhow!(failure))),
        None => Ok(()),
    }
}

/// `memgate up`: the whole local cluster until Ctrl-C or SIGTERM.
async fn up(args: cli::UpArgs) -> Result<(), Failure> {
    let config = args.into_config().map_err(|e| Failure::Config(e.into()))?;
    let running = memgate::local::start(config).await.map_err(|e| {
        if e.is_bind() {
            Failure::Runtime(e.into())
        } else {
            Failure::Config(e.into())
        }
    })?;
    println!("{}", running.banner());
    // `up` has nothing to reload: SIGHUP is logged and ignored.
    until_stopped(|| tracing::info!("SIGHUP ignored by memgate up")).await?;
    tracing::info!("stopping");
    running.stop().await;
    Ok(())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `memgate route`: print `KEY<TAB>NAME` for each key, with the proxy's ring.
fn route(args: cli::RouteArgs) -> Result<(), Failure> {
    use memgate::proxy::ring::{parse_server_entry, Ring};
    let list = args
        .servers
        .or_else(|| env_var("MEMCACHIER_SERVERS").filter(|s| !s.is_empty()))
        .or_else(|| env_var("MEMCACHE_SERVERS").filter(|s| !s.is_empty()))
        .ok_or_else(|| {
            Failure::Config(anyhow::anyhow!(
                "no servers: give --servers or set MEMCACHIER_SERVERS"
            ))
        })?;
    let servers = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(parse_server_entry)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Config(e.into()))?;
    let ring = Ring::new(&servers).map_err(|e| Failure::Config(e.into()))?;
    for key in &args.keys {
        println!("{key}\t{}", servers[ring.locate(key.as_bytes())].name);
    }
    Ok(())
}

async fn memgate_proxy(args: cli::ProxyArgs) -> Result<(), Failure> {
    let reload_args = args.clone();
    let mut config = args
        .into_config(&env_var)
        .map_err(|e| Failure::Config(e.into()))?;
    config.reload_from = Some(std::sync::Arc::new(move || {
        reload_args
            .clone()
            .into_config(&env_var)
            .map_err(|e| e.to_string())
    }));
    let proxy = memgate::proxy::Proxy::bind(config)
        .await
        .map_err(|e| match e {
            memgate::proxy::ProxyError::Bind { .. } => Failure::Runtime(e.into()),
            other => Failure::Config(other.into()),
        })?;
    if let Some(addr) = proxy.addr() {
        tracing::info!(listener = "client", %addr, "listening");
    }
    if let Some(addr) = proxy.metrics_addr() {
        tracing::info!(listener = "metrics", %addr, "listening");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (reload_tx, reload_rx) = tokio::sync::watch::channel(0u64);
    let server = tokio::spawn(proxy.run(stop_rx, reload_rx));
    let mut generation = 0u64;
    until_stopped(|| {
        generation += 1;
        let _ = reload_tx.send(generation);
    })
    .await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

async fn memgate_node(args: cli::NodeArgs) -> Result<(), Failure> {
    use cli::NodeCommand;
    if let Some(NodeCommand::HashPassword) = args.command {
        return hash_password().map_err(Failure::Runtime);
    }
    let config = args.into_config().map_err(|e| Failure::Config(e.into()))?;
    let node = memgate::node::Node::bind(config)
        .await
        .map_err(|e| match e {
            memgate::node::NodeError::Bind { .. } => Failure::Runtime(e.into()),
            other => Failure::Config(other.into()),
        })?;
    for (what, addr) in [
        ("plain", node.plain_addr()),
        ("tls", node.tls_addr()),
        ("metrics", node.metrics_addr()),
        ("admin", node.admin_addr()),
    ] {
        if let Some(addr) = addr {
            tracing::info!(listener = what, %addr, "listening");
        }
    }
    let shared = node.shared();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(node.run(stop_rx));
    until_stopped(|| match shared.reload() {
        Ok(()) => tracing::info!("caches file reloaded"),
        Err(error) => tracing::error!(%error, "caches file not reloaded; keeping the old one"),
    })
    .await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

/// Serve until SIGTERM or Ctrl-C, calling `on_hangup` for each SIGHUP.
async fn until_stopped(mut on_hangup: impl FnMut()) -> Result<(), Failure> {
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hangup.recv() => on_hangup(),
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, Failure> {
    tokio::signal::unix::signal(kind).map_err(|e| Failure::Runtime(e.into()))
}

/// `memgate node hash-password`: read a password on stdin, print its PHC hash.
fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!("{}", memgate::auth::hash_password(password)?);
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::chain_text;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on here: {source}")]
    struct Bind {
        source: std::io::Error,
    }

    #[test]
    fn each_cause_prints_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(Bind { source: io });
        assert_eq!(
            chain_text(&error),
            "cannot listen on here: Address already in use"
        );
        let wrapped = error.context("memgate up");
        assert_eq!(
            chain_text(&wrapped),
            "memgate up: cannot listen on here: Address already in use"
        );
    }
}
