//! Wiring of the whole server: state, listeners, background tasks, graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::edge::{EdgeState, Utilization};
use crate::federation::Hub;
use crate::geoip::GeoIp;
use crate::leadership::Leadership;
use crate::logging::redact;
use crate::metrics::Metrics;
use crate::registry::{now_ms, CellReport, ClusterUtilization, PlaybackCache, Registry};
use crate::replicas::{Lease, RedisLink, Replication};
use crate::routing::Router;
use crate::state::{AppState, Shared};

/// How long shutdown waits for the Redis sync to write the ends of the closed sessions.
const SYNC_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// A running Foghorn.
pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: AppState,
    http: JoinHandle<std::io::Result<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Opens the registry, binds both listeners and starts serving. Returns once ready.
pub async fn start(config: Config) -> anyhow::Result<Server> {
    let config = Arc::new(config);
    // Files named by the configuration first: a bad one stops us before anything is created.
    let geoip = match config.geoip.mmdb_path.as_str() {
        "" => None,
        path => Some(Arc::new(GeoIp::open(std::path::Path::new(path)).map_err(
            |e| crate::config::ConfigError::File {
                message: format!("geoip.mmdb_path: {e:#}"),
            },
        )?)),
    };
    let tls = Arc::new(crate::tls::Tls::open(&config).context("loading the cluster certificate")?);
    let db_url = config.database_url();
    let registry = Registry::open(
        &db_url,
        config.database.max_connections,
        config.database.connect_timeout,
    )
    .await
    .with_context(|| format!("opening the registry at {}", redact(&db_url)))?;
    registry
        .register_own_cluster(&config)
        .await
        .context("registering this cluster in the registry")?;
    let credential = peer_secret(&config)?;

    let shutdown = CancellationToken::new();
    let sync_stop = CancellationToken::new();
    let sync_tasks = TaskTracker::new();
    // The loops that run as long as the server: each ends when `shutdown` fires.
    let background = TaskTracker::new();
    let tasks = TaskTracker::new();
    let replica_id = hex::encode(rand::random::<[u8; 8]>());
    let redis = if config.redis.url.is_empty() {
        None
    } else {
        let link = RedisLink::new(&config.redis.url).context("parsing redis.url")?;
        background.spawn(link.clone().run(shutdown.child_token()));
        Some(link)
    };

    let edges = EdgeState::new(config.liveness_window()).with_pending_ttl(config.edges.pending_ttl);
    let edges = Arc::new(if redis.is_some() {
        edges.replicated()
    } else {
        edges
    });
    let metrics = Arc::new(Metrics::new());
    let router = Router::new(
        edges.clone(),
        &config.cluster.id,
        &config.cluster.root_domain,
        metrics.clone(),
    );
    if let Some(weights) = registry
        .cluster_weights(&config.cluster.id)
        .await
        .context("reading this cluster's weights")?
    {
        router.set_weights(weights);
    }
    background.spawn(router.clone().run(shutdown.child_token()));

    let peers = Arc::new(crate::federation::Peers::new(
        &config.cluster.id,
        crate::federation::Ttls {
            summary: config.federation.summary_ttl,
            heartbeat: config.federation.heartbeat_ttl,
            // The peer samples its edges at least three times per summary interval and re-sends
            // its advert with every summary.
            unadvertised: config.federation.summary_interval,
        },
        router.clone(),
    ));
    let edge_links = Arc::new(crate::grpc::EdgeLinks::default());
    let (replication, leadership) = match &redis {
        None => {
            metrics.leader.set(1);
            (None, Arc::new(Leadership::always()))
        }
        Some(link) => {
            let replication = Replication::new(
                link.clone(),
                edges.clone(),
                router.clone(),
                registry.clone(),
                metrics.clone(),
                &config.cluster.id,
                &replica_id,
                config.liveness_window(),
                crate::replicas::PeerRelay {
                    peers: peers.clone(),
                    edge_commands: edge_links.clone(),
                    root_domain: config.cluster.root_domain.clone(),
                },
            );
            sync_tasks.spawn(replication.clone().write(sync_stop.clone()));
            background.spawn(replication.clone().subscribe(shutdown.child_token()));
            let leadership = Arc::new(Leadership::by_lease());
            let lease = Lease::new(
                link.clone(),
                &config.cluster.id,
                &replica_id,
                config.redis.leader_ttl,
            );
            sync_tasks.spawn(lease.keep(leadership.clone(), metrics.clone(), sync_stop.clone()));
            (Some(replication), leadership)
        }
    };
    let link = crate::grpc::GrpcPeerLink::new(
        registry.clone(),
        &config.cluster.id,
        &config.cluster.root_domain,
        credential,
        config.federation.rpc_timeout,
    );
    let federation = Hub::new(crate::federation::Parts {
        cluster_id: config.cluster.id.clone(),
        root_domain: config.cluster.root_domain.clone(),
        config: config.federation.clone(),
        stats_interval: config.edges.stats_interval,
        peers,
        edges: edges.clone(),
        router: router.clone(),
        metrics: metrics.clone(),
        leadership: leadership.clone(),
        link: Arc::new(link),
        directory: Arc::new(registry.clone()),
        edge_commands: edge_links.clone(),
        relay: replication
            .clone()
            .map(|r| Arc::new(r) as Arc<dyn crate::federation::Relay>),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
    });
    let state = AppState(Arc::new(Shared {
        edges,
        federation: federation.clone(),
        tls: tls.clone(),
        router,
        playback: Arc::new(PlaybackCache::new(registry.clone(), &config.cluster.id)),
        trusted_proxies: Arc::new(config.trusted_proxies()),
        geoip,
        metrics,
        registry,
        redis,
        replication,
        leadership,
        replica_id,
        shutdown: shutdown.clone(),
        tasks,
        background,
        ready: AtomicBool::new(false),
        sync_stop,
        sync_tasks,
        config: config.clone(),
    }));

    let background = &state.background;
    let started_at = now_ms();
    background.spawn(publish_load(
        state.clone(),
        started_at,
        shutdown.child_token(),
    ));
    background.spawn(tls.run(config.tls.check_interval, shutdown.child_token()));

    let http_listener = crate::net::listen(config.server.http_addr)
        .with_context(|| format!("binding HTTP on {}", config.server.http_addr))?;
    let grpc_listener = crate::net::listen(config.server.grpc_addr)
        .with_context(|| format!("binding gRPC on {}", config.server.grpc_addr))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let endpoint = crate::registry::PeerEndpoint {
        grpc_addr: advertised_grpc(&config, grpc_addr),
        tls_ca_pem: state.tls.bundle().ca_pem.clone(),
    };
    state
        .registry
        .set_cluster_endpoint(&config.cluster.id, &endpoint)
        .await
        .context("publishing this cluster's gRPC address and CA")?;
    // Live as a cell from the start: private clusters may be assigned to it at once.
    state
        .registry
        .report_cell(&cell_report(&state, &state.edges.utilization(), started_at))
        .await
        .context("reporting this Foghorn's cell")?;
    background.spawn(publish_ca(state.clone(), endpoint, shutdown.child_token()));
    background.spawn(federation.clone().feed(shutdown.child_token()));
    background.spawn(federation.supervise(shutdown.child_token()));

    let http = tokio::spawn(crate::http::serve(
        http_listener,
        state.clone(),
        shutdown.clone(),
    ));
    let grpc = tokio::spawn(crate::grpc::serve(
        state.clone(),
        edge_links,
        grpc_listener,
        shutdown.clone(),
    ));

    state.ready.store(true, Ordering::Release);
    tracing::info!(
        http = %http_addr,
        grpc = %grpc_addr,
        cluster = %config.cluster.id,
        replica = %state.replica_id,
        registry = %redact(&db_url),
        redis = %if config.redis.url.is_empty() { "none".to_string() } else { redact(&config.redis.url) },
        "Foghorn ready"
    );
    Ok(Server {
        http_addr,
        grpc_addr,
        state,
        http,
        grpc,
    })
}

impl Server {
    /// Stops accepting, ends edge sessions (they are told SHUTTING_DOWN), lets in-flight requests
    /// finish, and returns within `server.shutdown_grace`.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let grace = self.state.config.server.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        self.state.shutdown.cancel();
        self.state.tasks.close();
        let drain = async {
            self.state.tasks.wait().await;
            let http = self.http.await;
            let grpc = self.grpc.await;
            (http, grpc)
        };
        match tokio::time::timeout_at(deadline, drain).await {
            Ok((http, grpc)) => {
                http.context("HTTP server task")?.context("HTTP server")?;
                grpc.context("gRPC server task")?.context("gRPC server")?;
            }
            Err(_) => tracing::warn!(
                ?grace,
                "shutdown grace elapsed; abandoning open connections"
            ),
        }
        // The sessions are closed (or abandoned): announce their ends and give up the lease, so
        // the other replicas stop routing here and one takes over leadership at once. Bounded:
        // Redis may be the reason shutdown is slow.
        self.state.sync_stop.cancel();
        self.state.sync_tasks.close();
        if tokio::time::timeout(SYNC_FLUSH, self.state.sync_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("could not tell Redis about every closed session in time");
        }
        // The server's loops end as soon as they see `shutdown`; one stuck in a call to the
        // registry or Redis is left behind at the deadline.
        self.state.background.close();
        if tokio::time::timeout_at(deadline, self.state.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still busy at the end of the grace period");
        }
        // Closing the pool waits for checked-out connections; a query stuck on a partitioned
        // database must not keep the process alive past the grace period.
        if tokio::time::timeout_at(deadline, self.state.registry.close())
            .await
            .is_err()
        {
            tracing::warn!("registry connections still busy at the end of the grace period");
        }
        tracing::info!("Foghorn stopped");
        Ok(())
    }
}

/// What this replica reports of its cell (the deployment named by its home cluster), holding
/// `live` edges.
fn cell_report<'a>(state: &'a AppState, live: &Utilization, started_at: i64) -> CellReport<'a> {
    CellReport {
        id: &state.config.cluster.id,
        edges: i64::try_from(live.edges).unwrap_or(i64::MAX),
        started_at,
    }
}

/// Every `cluster.report_interval`: reports the cell (from every replica, so the cell stays live
/// while any is), and, while this replica leads, publishes the cluster's live load to the
/// registry, so the marketplaces served by other clusters' Foghorns show it.
async fn publish_load(state: AppState, started_at: i64, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.cluster.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live = state.edges.utilization();
        if let Err(e) = state
            .registry
            .report_cell(&cell_report(&state, &live, started_at))
            .await
        {
            tracing::debug!(error = %e, "could not report the cell");
        }
        if !state.leadership.is_leader() {
            continue;
        }
        let load = ClusterUtilization::from_live(&live, now_ms());
        if let Err(e) = state
            .registry
            .report_utilization(&state.config.cluster.id, &load)
            .await
        {
            tracing::debug!(error = %e, "could not publish the cluster's load");
        }
    }
}

/// Publishes the CA again whenever the cluster certificate changes, so peers keep trusting it.
async fn publish_ca(
    state: AppState,
    mut endpoint: crate::registry::PeerEndpoint,
    shutdown: CancellationToken,
) {
    let mut changes = state.tls.subscribe();
    changes.mark_unchanged();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        let ca = state.tls.bundle().ca_pem.clone();
        if ca == endpoint.tls_ca_pem {
            continue;
        }
        endpoint.tls_ca_pem = ca;
        if let Err(e) = state
            .registry
            .set_cluster_endpoint(&state.config.cluster.id, &endpoint)
            .await
        {
            tracing::error!(error = %e, "publishing the new CA failed; peers may not trust this cluster until the next start");
        }
    }
}

/// This Foghorn's federation secret (its credential towards each peer is derived from it): the
/// configured one, else the one kept in the data directory (created there, readable by this user
/// only, on first start).
fn peer_secret(config: &Config) -> anyhow::Result<String> {
    use crate::secret::{mint, SecretKind};
    if !config.federation.credential.is_empty() {
        return Ok(config.federation.credential.clone());
    }
    let path = config.server.data_dir.join("federation.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim().to_string();
            anyhow::ensure!(
                crate::secret::lookup_prefix(SecretKind::PeerCredential, &text).is_some(),
                "{} does not hold a peer credential (fpc_ + 48 hex); remove it to make a new one",
                path.display()
            );
            Ok(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::create_dir_all(&config.server.data_dir)
                .with_context(|| format!("creating {}", config.server.data_dir.display()))?;
            let plain = mint(SecretKind::PeerCredential).plain;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{plain}").with_context(|| format!("writing {}", path.display()))?;
            Ok(plain)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Where peers dial this cluster: `federation.advertise_grpc`, else the gRPC listener's address
/// when it is bound to one, else the cluster's Foghorn name on the listener's port; over TLS
/// unless the listeners serve none.
fn advertised_grpc(config: &Config, bound: SocketAddr) -> String {
    if !config.federation.advertise_grpc.is_empty() {
        return config.federation.advertise_grpc.clone();
    }
    let scheme = if config.tls.listeners == crate::config::ListenerTls::Off {
        "http"
    } else {
        "https"
    };
    if bound.ip().is_unspecified() {
        let zone = crate::names::Zone::new(&config.cluster.id, &config.cluster.root_domain);
        format!("{scheme}://{}:{}", zone.foghorn_host(), bound.port())
    } else {
        format!("{scheme}://{bound}")
    }
}
