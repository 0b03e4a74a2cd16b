//! `foghorn`: the server (default), `foghorn admin ...` and `foghorn sim ...`.

use std::process::ExitCode;

use clap::Parser;
use foghorn::admin::{self, AdminCommand};
use foghorn::config::{Config, ConfigError, ListenerTls, LogFormat, Override};
use foghorn::sim::{self, SimArgs};

/// mimalloc instead of glibc's malloc: hyper's per-request buffers otherwise cost glibc a
/// consolidation pass on the hot path (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "foghorn",
    version,
    about = "Control plane of a live-video edge cluster"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags that override configuration keys; given before the subcommand (`foghorn --data-dir D admin ...`).
#[derive(clap::Args, Debug, Default)]
struct GlobalArgs {
    /// TOML configuration file (see config/foghorn.toml) [env: FOGHORN_CONFIG]
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// HTTP listen address (server.http_addr)
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<String>,
    /// gRPC listen address (server.grpc_addr)
    #[arg(long, value_name = "ADDR")]
    grpc_addr: Option<String>,
    /// Data directory (server.data_dir)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// postgres://... or sqlite://... (database.url)
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// redis://... shared by this cluster's replicas (redis.url)
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// This cluster's id (cluster.id)
    #[arg(long, value_name = "ID")]
    cluster_id: Option<String>,
    /// Root DNS domain (cluster.root_domain)
    #[arg(long, value_name = "DOMAIN")]
    root_domain: Option<String>,
}

impl GlobalArgs {
    fn overrides(&self) -> Vec<Override> {
        [
            (&self.http_addr, "server.http_addr", "--http-addr"),
            (&self.grpc_addr, "server.grpc_addr", "--grpc-addr"),
            (&self.data_dir, "server.data_dir", "--data-dir"),
            (&self.database_url, "database.url", "--database-url"),
            (&self.redis_url, "redis.url", "--redis-url"),
            (&self.cluster_id, "cluster.id", "--cluster-id"),
            (&self.root_domain, "cluster.root_domain", "--root-domain"),
        ]
        .into_iter()
        .filter_map(|(value, key, flag)| {
            value.as_ref().map(|v| Override {
                key: key.into(),
                value: v.clone(),
                origin: flag.into(),
            })
        })
        .collect()
    }
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    /// Create clusters, tenants, tokens and streams in the registry.
    Admin {
        /// Print machine-readable JSON.
        #[arg(long, global = true)]
        json: bool,
        /// Create the registry if it does not exist yet (SQLite), with this Foghorn's cluster;
        /// without it, a missing registry is an error: the command probably runs from another
        /// directory than the server.
        #[arg(long, global = true)]
        create_registry: bool,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run simulated Helmsman edges against a Foghorn.
    Sim(SimArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let load = || match Config::load(cli.global.config.as_deref(), &cli.global.overrides()) {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("foghorn: {e}");
            Err(ExitCode::from(2))
        }
    };
    let result = match cli.command {
        // The simulator is a client: it needs no server configuration.
        Some(Command::Sim(args)) => {
            let ansi = foghorn::logging::colours(&std::io::stderr());
            foghorn::logging::init("info", LogFormat::Text, std::io::stderr, ansi);
            sim::run(args).await.map_err(|e| ("foghorn sim", e))
        }
        Some(Command::Admin {
            json,
            create_registry,
            command,
        }) => {
            let config = match load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            admin::run(&config, command, json, create_registry)
                .await
                .map_err(|e| ("foghorn admin", e))
        }
        None | Some(Command::Serve) => {
            let config = match load() {
                Ok(c) => c,
                Err(code) => return code,
            };
            let ansi = foghorn::logging::colours(&std::io::stdout());
            foghorn::logging::init(&config.log.filter, config.log.format, std::io::stdout, ansi);
            serve(config).await.map_err(|e| ("foghorn", e))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((who, e)) => {
            eprintln!("{who}: {e:#}");
            // A file the configuration names that cannot be used is invalid configuration, which
            // exits 2 like a bad value (README, Configuration).
            if e.chain().any(|c| c.is::<ConfigError>()) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = foghorn::app::start(config).await?;
    let config = &server.state.config;
    let (scheme, ports) = match config.tls.listeners {
        ListenerTls::Both => ("http", "; TLS too on both ports"),
        ListenerTls::Required => ("https", ""),
        ListenerTls::Off => ("http", "; not served by the listeners"),
    };
    let bundle = server.state.tls.bundle();
    let expires = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(bundle.not_after).unwrap_or(0));
    let source = server.state.tls.describe();
    // One write, and a closed stdout (a supervisor that read the addresses and went away) must
    // not take the server down, as println! would.
    let banner = format!(
        "Foghorn ready: cluster {:?}\n  HTTP  {scheme}://{}  (/play /health /ready /metrics /api/v1 /mcp /ui)\n  gRPC  {scheme}://{}  (HelmsmanControl, EdgeProvisioning, Federation, grpc.health.v1, reflection)\n  TLS   {} until {}  ({source}{ports})",
        config.cluster.id,
        server.http_addr,
        server.grpc_addr,
        bundle.names.first().map_or("(no DNS name)", String::as_str),
        humantime::format_rfc3339_seconds(expires),
    );
    let banner = match server.dns_addr {
        Some(addr) => format!(
            "{banner}\n  DNS   {addr}  (UDP and TCP; zones {{cluster}}.{})",
            config.cluster.root_domain
        ),
        None => banner,
    };
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{banner}").and_then(|()| out.flush());
    }
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    server.shutdown().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
