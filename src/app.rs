//! Wiring of the whole server: state, listeners, background tasks, graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cell::Cell;
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

/// How many assigned clusters are started at once.
const STARTING_AT_ONCE: usize = 16;

/// A running Foghorn.
pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The built-in DNS server's address (UDP and TCP), when `dns.listen` is set.
    pub dns_addr: Option<SocketAddr>,
    /// The home cluster's state.
    pub state: AppState,
    /// Every cluster served here.
    pub cell: Arc<Cell>,
    http: JoinHandle<std::io::Result<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// What the states of all the clusters served here share: one of each per process.
#[derive(Debug)]
struct Base {
    /// The home cluster's configuration; a served cluster's is a copy with its id.
    config: Arc<Config>,
    registry: Registry,
    geoip: Option<Arc<GeoIp>>,
    trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    metrics: Arc<Metrics>,
    redis: Option<RedisLink>,
    /// The one Redis subscription of every served cluster (with `redis`).
    subscriber: Option<crate::replicas::Subscriber>,
    /// One leader lease for the cell: the leader runs outbound peering of every served cluster.
    leadership: Arc<Leadership>,
    replica_id: String,
    edge_links: Arc<crate::grpc::EdgeLinks>,
    /// How the cell's RFC 2136 updates fare.
    dns_updates: Arc<crate::dns::UpdateStatus>,
    /// The cell's ACME client, with `tls.source = "acme"`.
    acme: Option<Arc<crate::acme::Acme>>,
    /// The federation secret; each cluster's credential towards a peer is derived from it.
    credential: String,
    /// The home cluster's certificate: the listeners present it, or the one of the assigned
    /// cluster a client names.
    tls: Arc<crate::tls::Tls>,
    /// The cell, for the links between the clusters it serves.
    cell: crate::state::CellRef,
    /// The registry as every served cluster's federation reads it.
    directory: Arc<crate::cell::Directory>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    background: TaskTracker,
    sync_stop: CancellationToken,
    sync_tasks: TaskTracker,
}

impl Base {
    /// Builds the state of one served cluster and starts its loops, which end with `stop`
    /// (and its Redis sync with `sync_stop`, once the sessions' ends are written).
    async fn serve_cluster(
        &self,
        config: Arc<Config>,
        tls: Arc<crate::tls::Tls>,
        stop: CancellationToken,
        sync_stop: CancellationToken,
    ) -> anyhow::Result<AppState> {
        let id = &config.cluster.id;
        let root = &config.cluster.root_domain;
        let edges =
            EdgeState::new(config.liveness_window()).with_pending_ttl(config.edges.pending_ttl);
        let edges = Arc::new(if self.redis.is_some() {
            edges.replicated()
        } else {
            edges
        });
        let router = Router::new(edges.clone(), id, root, self.metrics.clone());
        if let Some(weights) = self
            .registry
            .cluster_weights(id)
            .await
            .with_context(|| format!("reading the weights of cluster {id}"))?
        {
            router.set_weights(weights);
        }
        self.background
            .spawn(router.clone().run(stop.child_token()));
        let peers = Arc::new(crate::federation::Peers::new(
            id,
            crate::federation::Ttls {
                summary: config.federation.summary_ttl,
                heartbeat: config.federation.heartbeat_ttl,
                // The peer samples its edges at least three times per summary interval and
                // re-sends its advert with every summary.
                unadvertised: config.federation.summary_interval,
            },
            router.clone(),
        ));
        let replication = self.redis.as_ref().map(|link| {
            let replication = Replication::new(
                link.clone(),
                edges.clone(),
                router.clone(),
                self.registry.clone(),
                self.metrics.clone(),
                id,
                &self.replica_id,
                config.liveness_window(),
                crate::replicas::PeerRelay {
                    peers: peers.clone(),
                    edge_commands: self.edge_links.clone(),
                    root_domain: root.clone(),
                },
            );
            self.sync_tasks
                .spawn(replication.clone().write(sync_stop.clone()));
            let share_every = config.redis.pending_share_interval;
            if !share_every.is_zero() {
                self.sync_tasks.spawn(
                    replication
                        .clone()
                        .share_pending(share_every, sync_stop.clone()),
                );
            }
            if let Some(subscriber) = &self.subscriber {
                subscriber.join(replication.clone(), stop.child_token());
            }
            replication
        });
        let remote = crate::grpc::GrpcPeerLink::new(
            self.registry.clone(),
            id,
            root,
            self.credential.clone(),
            config.federation.rpc_timeout,
        );
        let link = crate::cell::Link::new(
            id,
            root,
            self.cell.clone(),
            self.directory.clone(),
            Arc::new(remote),
        );
        let federation = Hub::new(crate::federation::Parts {
            cluster_id: id.clone(),
            root_domain: root.clone(),
            config: config.federation.clone(),
            stats_interval: config.edges.stats_interval,
            peers,
            edges: edges.clone(),
            router: router.clone(),
            metrics: self.metrics.clone(),
            leadership: self.leadership.clone(),
            link: Arc::new(link),
            directory: self.directory.clone(),
            edge_commands: self.edge_links.clone(),
            relay: replication
                .clone()
                .map(|r| Arc::new(r) as Arc<dyn crate::federation::Relay>),
            shutdown: stop.clone(),
            tasks: self.tasks.clone(),
        });
        self.background.spawn(
            tls.clone()
                .run(config.tls.check_interval, stop.child_token()),
        );
        self.background
            .spawn(federation.clone().feed(stop.child_token()));
        self.background
            .spawn(federation.clone().supervise(stop.child_token()));
        let poller = crate::mist_servers::Poller {
            cluster_id: id.clone(),
            every: config.edges.stats_interval,
            passphrase: config.edges.mist_passphrase.clone(),
            registry: self.registry.clone(),
            edges: edges.clone(),
            replication: replication.clone(),
            leadership: self.leadership.clone(),
        };
        self.background.spawn(poller.run(stop.child_token()));
        Ok(AppState(Arc::new(Shared {
            dns: Arc::new(crate::dns::Zone::new(id, root, &config.dns)),
            dns_updates: self.dns_updates.clone(),
            acme: self.acme.clone(),
            edges,
            federation,
            tls,
            router,
            playback: Arc::new(PlaybackCache::new(self.registry.clone(), id)),
            trusted_proxies: self.trusted_proxies.clone(),
            geoip: self.geoip.clone(),
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            redis: self.redis.clone(),
            replication,
            leadership: self.leadership.clone(),
            replica_id: self.replica_id.clone(),
            cell: self.cell.clone(),
            shutdown: stop,
            tasks: self.tasks.clone(),
            background: self.background.clone(),
            ready: AtomicBool::new(false),
            sync_stop,
            sync_tasks: self.sync_tasks.clone(),
            config,
        })))
    }

    /// Forgets, in every served cluster, the nodes deleted after entry `after`; the last entry
    /// read (`after` again when the registry could not be read).
    async fn forget_deleted(&self, cell: &Cell, after: i64) -> i64 {
        match self.registry.deleted_nodes_since(after).await {
            Ok(rows) => rows.into_iter().fold(after, |_, (seq, node, cluster)| {
                if let Some(state) = cell.get(&cluster) {
                    if state.edges.forget(&node) {
                        tracing::info!(node_id = %node, cluster = %cluster, "deleted node forgotten");
                    }
                }
                seq
            }),
            Err(e) => {
                tracing::debug!(error = %e, "could not read the deleted nodes");
                after
            }
        }
    }

    /// Serves the registry's `_acme-challenge` values (whichever replica or cell published them)
    /// in the zones of the served clusters.
    async fn load_challenges(&self, cell: &Cell) {
        match self.registry.acme_challenges().await {
            Ok(rows) => {
                let mut by_cluster: HashMap<String, Vec<String>> = HashMap::new();
                for (cluster, value) in rows {
                    by_cluster.entry(cluster).or_default().push(value);
                }
                for state in cell.states() {
                    let values = by_cluster
                        .remove(&state.config.cluster.id)
                        .unwrap_or_default();
                    state.dns.set_challenges(values);
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read the ACME challenges"),
        }
    }

    /// Starts serving assigned cluster `id` in `cell`.
    async fn serve_assigned(&self, cell: &Cell, id: &str) -> anyhow::Result<()> {
        let mut config = Config::clone(&self.config);
        config.cluster.id = id.to_string();
        config.cluster.name = id.to_string();
        let config = Arc::new(config);
        // Files and, the first time, key generation: off the runtime's threads.
        let tls = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || crate::tls::Tls::open_served(&config))
                .await
                .context("the certificate task panicked")?
                .with_context(|| format!("loading the certificate of cluster {id}"))?
        };
        let tls = Arc::new(tls);
        let state = self
            .serve_cluster(
                config,
                tls.clone(),
                self.shutdown.child_token(),
                self.sync_stop.child_token(),
            )
            .await?;
        state.ready.store(true, Ordering::Release);
        self.tls.present_also(id, tls);
        if let Some(old) = cell.insert(state) {
            self.retire(old);
        }
        tracing::info!(cluster = %id, "serving an assigned cluster");
        Ok(())
    }

    /// [`Base::serve_assigned`], naming the cluster in its outcome.
    async fn start(&self, cell: &Cell, id: String) -> (String, anyhow::Result<()>) {
        let result = self.serve_assigned(cell, &id).await;
        (id, result)
    }

    /// Ends a cluster's edge sessions and loops; its Redis sync stops once the sessions' ends
    /// had time to be written.
    fn retire(&self, state: AppState) {
        state.shutdown.cancel();
        let root_sync = self.sync_stop.clone();
        self.background.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(SYNC_FLUSH) => {}
                _ = root_sync.cancelled() => {}
            }
            state.sync_stop.cancel();
        });
    }

    /// Serves exactly the home cluster plus `assigned`: starts the new ones, retires the ones
    /// taken away. `false` when one could not be started (tried again at the next call).
    async fn reconcile(&self, cell: &Cell, assigned: &[String]) -> bool {
        let mut complete = true;
        for id in cell.assigned() {
            if !assigned.contains(&id) {
                if let Some(old) = cell.remove(&id) {
                    tracing::info!(cluster = %id, "no longer serving a cluster assigned elsewhere");
                    self.tls.stop_presenting(&id);
                    self.retire(old);
                }
            }
        }
        // Several at a time: each waits on the registry and on its certificate files.
        let starting: Vec<String> = assigned
            .iter()
            .filter(|id| **id != self.config.cluster.id && !cell.serves(id))
            .cloned()
            .collect();
        let starts = starting.into_iter().map(|id| self.start(cell, id));
        let mut started = futures_util::stream::iter(starts).buffer_unordered(STARTING_AT_ONCE);
        while let Some((id, result)) = started.next().await {
            if let Err(e) = result {
                complete = false;
                tracing::error!(cluster = %id, error = %format!("{e:#}"), "could not serve an assigned cluster");
            }
        }
        self.metrics.served_clusters.set(cell.len() as i64);
        complete
    }
}

/// Longest wait between two checks of the certificates (tls.check_interval when shorter).
const CERTIFICATE_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the registry's topology version every `federation.topology_poll`, for every served
/// cluster's federation, and follows the clusters the registry assigns to this cell: served
/// within a poll of the assignment (the counter moves with every change of a cluster), and
/// retired as soon as they are assigned elsewhere.
async fn follow_assignments(base: Arc<Base>, cell: Arc<Cell>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(base.config.federation.topology_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seen: Option<i64> = None;
    // Deleted nodes are forgotten from the entry after the last one at start.
    let mut deleted = base.registry.last_deleted_node().await.unwrap_or(0);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            // A cluster just assigned here by this Foghorn's API: served before the answer.
            _ = cell.woken() => {}
        }
        // Read before the assignments, so a change that lands in between moves it again; the
        // served clusters' federation reads the same version.
        let Some(version) = base.directory.read_version().await else {
            continue;
        };
        if seen == Some(version) {
            continue;
        }
        deleted = base.forget_deleted(&cell, deleted).await;
        if crate::dns::enabled(&base.config) {
            base.load_challenges(&cell).await;
        }
        match base.registry.cell_clusters(&base.config.cluster.id).await {
            Ok(assigned) => {
                if base.reconcile(&cell, &assigned).await {
                    seen = Some(version);
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read the clusters assigned here"),
        }
        // A certificate the leader stored, for a cluster served before or just now.
        if let Some(acme) = &base.acme {
            acme.sync(&cell.certificates()).await;
        }
    }
}

/// Keeps the served clusters' certificates: with ACME, installs what the registry holds and,
/// on the leader, orders what is due (a new cluster at once); for every source, publishes each
/// certificate's expiry in `foghorn_certificate_expiry_seconds`.
async fn keep_certificates(base: Arc<Base>, cell: Arc<Cell>, stop: CancellationToken) {
    // Cheap (a read of the certificates' versions), and soon after this replica starts leading.
    let every = base.config.tls.check_interval.min(CERTIFICATE_CHECK);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut changes = cell.changes();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
        let served = cell.certificates();
        if let Some(acme) = &base.acme {
            acme.sync(&served).await;
            if base.leadership.is_leader() {
                acme.renew(&served).await;
            }
        }
        for (cluster, tls) in &served {
            base.metrics
                .certificate_expiry
                .get_or_create(&crate::metrics::ClusterLabels {
                    cluster: cluster.clone(),
                })
                .set(tls.bundle().not_after);
        }
    }
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
    let dns_primary = crate::dns::Primary::from_config(&config.dns)?;
    let metrics = Arc::new(Metrics::new());
    let acme = match config.tls.effective_source() {
        crate::config::TlsSource::Acme => Some(Arc::new(crate::acme::Acme::new(
            &config,
            registry.clone(),
            &credential,
            metrics.clone(),
        )?)),
        _ => None,
    };

    let shutdown = CancellationToken::new();
    let sync_stop = CancellationToken::new();
    let sync_tasks = TaskTracker::new();
    // The loops that run as long as the server: each ends when `shutdown` fires.
    let background = TaskTracker::new();
    let replica_id = hex::encode(rand::random::<[u8; 8]>());
    let redis = if config.redis.url.is_empty() {
        None
    } else {
        let link = RedisLink::new(&config.redis.url).context("parsing redis.url")?;
        background.spawn(link.clone().run(shutdown.child_token()));
        Some(link)
    };
    let subscriber = redis.as_ref().map(|link| {
        crate::replicas::Subscriber::start(link.clone(), &background, shutdown.child_token())
    });
    let leadership = match &redis {
        None => {
            metrics.leader.set(1);
            Arc::new(Leadership::always())
        }
        Some(link) => {
            let leadership = Arc::new(Leadership::by_lease());
            let lease = Lease::new(
                link.clone(),
                &config.cluster.id,
                &replica_id,
                config.redis.leader_ttl,
            );
            sync_tasks.spawn(lease.keep(leadership.clone(), metrics.clone(), sync_stop.clone()));
            leadership
        }
    };
    let base = Arc::new(Base {
        config: config.clone(),
        directory: Arc::new(crate::cell::Directory::new(registry.clone())),
        registry,
        geoip,
        trusted_proxies: Arc::new(config.trusted_proxies()),
        metrics,
        redis,
        subscriber,
        leadership,
        replica_id,
        edge_links: Arc::new(crate::grpc::EdgeLinks::default()),
        dns_updates: Arc::new(crate::dns::UpdateStatus::new(dns_primary.is_some())),
        acme,
        credential,
        tls: tls.clone(),
        cell: crate::state::CellRef::default(),
        shutdown: shutdown.clone(),
        tasks: TaskTracker::new(),
        background,
        sync_stop: sync_stop.clone(),
        sync_tasks,
    });
    let state = base
        .serve_cluster(config.clone(), tls.clone(), shutdown.clone(), sync_stop)
        .await?;
    let cell = Arc::new(Cell::new(state.clone()));
    let _ = base.cell.set(cell.as_served());
    base.metrics.served_clusters.set(1);
    // The clusters assigned here are served before the listeners open, so their edges find
    // them at once; one that cannot start now is tried again by the follower.
    let reconciling = std::time::Instant::now();
    match state.registry.cell_clusters(&config.cluster.id).await {
        Ok(assigned) => {
            base.reconcile(&cell, &assigned).await;
            tracing::info!(clusters = cell.len() - 1, took = ?reconciling.elapsed(), "serving the clusters assigned here");
        }
        Err(e) => tracing::warn!(error = %e, "could not read the clusters assigned here"),
    }
    // The certificates already stored, in use before the first connection: a restart does
    // not order again.
    if let Some(acme) = &base.acme {
        acme.sync(&cell.certificates()).await;
    }

    let background = &state.background;
    let started_at = now_ms();
    background.spawn(publish_load(
        cell.clone(),
        started_at,
        shutdown.child_token(),
    ));

    let http_listener = crate::net::listen(config.server.http_addr)
        .with_context(|| format!("binding HTTP on {}", config.server.http_addr))?;
    let grpc_listener = crate::net::listen(config.server.grpc_addr)
        .with_context(|| format!("binding gRPC on {}", config.server.grpc_addr))?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;
    let dns_listeners = match config.dns.listen_addr() {
        Some(addr) => Some(
            crate::dns::Listeners::bind(addr)
                .await
                .with_context(|| format!("binding DNS on {addr} (UDP and TCP)"))?,
        ),
        None => None,
    };
    if dns_listeners.is_some() && config.dns.addresses.is_empty() {
        tracing::warn!(
            "dns.addresses is empty: foghorn.{{cluster}}.{{root}} and the zone apex have no \
             address, and the default name server (foghorn.{{cluster}}.{{root}}) no glue"
        );
    }
    let dns_addr = dns_listeners
        .as_ref()
        .map(crate::dns::Listeners::local_addr)
        .transpose()?;
    if let (Some(acme), Some(addr)) = (&base.acme, dns_addr) {
        acme.watch_built_in(addr);
    }

    let endpoint = crate::registry::PeerEndpoint {
        grpc_addr: advertised_grpc(&config, grpc_addr),
        tls_ca_pem: state.tls.bundle().ca_pem.clone(),
    };
    state
        .registry
        .set_cluster_endpoint(&config.cluster.id, &endpoint)
        .await
        .context("publishing this cluster's gRPC address and CA")?;
    state
        .registry
        .publish_http_url(&config.cluster.id, &advertised(&config, http_addr))
        .await
        .context("publishing this cluster's HTTP address")?;
    // Live as a cell from the start: private clusters may be assigned to it at once.
    state
        .registry
        .report_cell(&cell_report(&cell, &loads(&cell.states()), started_at))
        .await
        .context("reporting this Foghorn's cell")?;
    background.spawn(publish_ca(state.clone(), endpoint, shutdown.child_token()));
    background.spawn(follow_assignments(
        base.clone(),
        cell.clone(),
        shutdown.child_token(),
    ));
    background.spawn(keep_certificates(
        base.clone(),
        cell.clone(),
        shutdown.child_token(),
    ));

    let http = tokio::spawn(crate::http::serve(
        http_listener,
        cell.clone(),
        shutdown.clone(),
    ));
    let grpc = tokio::spawn(crate::grpc::serve(
        cell.clone(),
        base.edge_links.clone(),
        grpc_listener,
        shutdown.clone(),
    ));
    if crate::dns::enabled(&config) {
        background.spawn(crate::dns::maintain(cell.clone(), shutdown.child_token()));
    }
    if let Some(primary) = dns_primary {
        background.spawn(crate::dns::update::run(
            Arc::new(primary),
            cell.clone(),
            state.leadership.clone(),
            state.metrics.clone(),
            state.dns_updates.clone(),
            shutdown.child_token(),
        ));
    }
    if let Some(listeners) = dns_listeners {
        let handler = crate::dns::Handler::new(
            cell.clone(),
            &config.cluster.root_domain,
            config.dns.transfer_networks(),
        );
        background.spawn(crate::dns::serve(
            handler,
            listeners,
            shutdown.child_token(),
        ));
    }

    state.ready.store(true, Ordering::Release);
    tracing::info!(
        http = %http_addr,
        grpc = %grpc_addr,
        dns = %dns_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
        cluster = %config.cluster.id,
        assigned = cell.len() - 1,
        replica = %state.replica_id,
        registry = %redact(&db_url),
        redis = %if config.redis.url.is_empty() { "none".to_string() } else { redact(&config.redis.url) },
        "Foghorn ready"
    );
    Ok(Server {
        http_addr,
        grpc_addr,
        dns_addr,
        state,
        cell,
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

/// What this replica reports of its cell (the deployment named by its home cluster): the
/// live edges of every cluster it serves, `loads`.
fn cell_report<'a>(cell: &'a Cell, loads: &[Utilization], started_at: i64) -> CellReport<'a> {
    let edges: u64 = loads.iter().map(|l| l.edges).sum();
    CellReport {
        id: &cell.home().config.cluster.id,
        edges: i64::try_from(edges).unwrap_or(i64::MAX),
        started_at,
    }
}

/// The live load of each of `states`' clusters.
fn loads(states: &[AppState]) -> Vec<Utilization> {
    states.iter().map(|s| s.edges.utilization()).collect()
}

/// Every `cluster.report_interval`: reports the cell (from every replica, so the cell stays live
/// while any is), and, while this replica leads, publishes each served cluster's live load to
/// the registry, so the marketplaces served by other Foghorns show it.
async fn publish_load(cell: Arc<Cell>, started_at: i64, stop: CancellationToken) {
    let home = cell.home();
    let mut tick = tokio::time::interval(home.config.cluster.report_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let states = cell.states();
        let loads = loads(&states);
        let report = cell_report(&cell, &loads, started_at);
        if let Err(e) = home.registry.report_cell(&report).await {
            tracing::debug!(error = %e, "could not report the cell");
        }
        if !home.leadership.is_leader() {
            continue;
        }
        for (state, live) in states.iter().zip(&loads) {
            let load = ClusterUtilization::from_live(live, now_ms());
            if let Err(e) = state
                .registry
                .report_utilization(&state.config.cluster.id, &load)
                .await
            {
                tracing::debug!(error = %e, cluster = %state.config.cluster.id, "could not publish the cluster's load");
            }
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

/// Where peers dial this cluster: `federation.advertise_grpc`, else [`advertised`].
fn advertised_grpc(config: &Config, bound: SocketAddr) -> String {
    if !config.federation.advertise_grpc.is_empty() {
        return config.federation.advertise_grpc.clone();
    }
    advertised(config, bound)
}

/// The URL of a listener bound to `bound`: its address when it is bound to one, else the
/// cluster's Foghorn name on its port; over TLS unless the listeners serve none.
fn advertised(config: &Config, bound: SocketAddr) -> String {
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
