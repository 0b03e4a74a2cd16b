//! Redis for the replica tests: the shared server that `./scripts/test` starts, private servers a
//! test may crash and restart, and a proxy that partitions one replica from its Redis.

use std::time::Duration;

/// Runs each named `async fn(RedisKind)` twice: `standalone::NAME` on one server and
/// `cluster::NAME` on a three-master Redis Cluster.
#[allow(unused_macros)]
macro_rules! on_each_redis {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::common::RedisKind::Standalone).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::common::RedisKind::Cluster).await })*
        }
    };
}

/// The URL of the Redis server shared by the whole suite (set by `./scripts/test`).
pub fn redis_url() -> String {
    std::env::var("FOGHORN_TEST_REDIS_URL").expect(
        "FOGHORN_TEST_REDIS_URL is not set: run the suite with ./scripts/test, which starts \
         a private PostgreSQL and Redis",
    )
}

/// A private Redis server owned by one test, which may stop and restart it (on the same port).
/// The binary comes from `FOGHORN_TEST_REDIS_SERVER` (set by `./scripts/test`), else the PATH.
/// Killed when dropped.
pub struct RedisProc {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    mode: Mode,
}

/// What a [`RedisProc`] runs as.
#[derive(Debug, Clone)]
enum Mode {
    /// A data server, with these arguments on top of the usual ones.
    Server(Vec<String>),
    /// A sentinel monitoring master `foghorn` on this port (see [`SENTINEL_MASTER`]).
    Sentinel { master_port: u16 },
}

/// The master name the test sentinels monitor.
pub const SENTINEL_MASTER: &str = "foghorn";

impl RedisProc {
    pub async fn start() -> RedisProc {
        Self::start_as(Mode::Server(Vec::new())).await
    }

    /// A server with `args` on top of the usual ones (`--replicaof`, cluster mode, ...).
    pub async fn start_with(args: &[String]) -> RedisProc {
        Self::start_as(Mode::Server(args.to_vec())).await
    }

    async fn start_as(mode: Mode) -> RedisProc {
        for _ in 0..5 {
            let port = super::ports::free_port();
            let mut redis = RedisProc {
                child: None,
                port,
                dir: tempfile::tempdir().expect("tempdir"),
                mode: mode.clone(),
            };
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("could not start a private redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the server is running (not stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server on `self.port`; true once it answers PING.
    async fn spawn(&mut self) -> bool {
        let bin = std::env::var("FOGHORN_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
        let mut command = std::process::Command::new(&bin);
        match &self.mode {
            Mode::Server(args) => {
                command
                    .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                    .args(args);
            }
            Mode::Sentinel { master_port } => {
                // A sentinel rewrites its configuration file: one of its own, in its directory.
                let config = self.dir.path().join("sentinel.conf");
                std::fs::write(
                    &config,
                    format!(
                        "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 2000\n"
                    ),
                )
                .expect("write sentinel.conf");
                command
                    .arg(&config)
                    .arg("--sentinel")
                    .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                    .args(["--daemonize", "no"]);
            }
        }
        let child = command
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin}: {e} (run the suite with ./scripts/test)"));
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        for _ in 0..200 {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let _ = status; // exited: the port was taken
                self.child = None;
                return false;
            }
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self.stop();
        false
    }

    /// Kills the server (like a crash: nothing is saved, connections drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Shuts the server down saving its data (`SHUTDOWN SAVE`), as an orderly restart does.
    pub async fn shutdown_saving(&mut self) {
        let mut conn = self.connection().await;
        // The server closes the connection as it exits: the reply is an error or nothing.
        let _ = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async::<redis::Value>(&mut conn)
            .await;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        assert!(
            self.dir.path().join("dump.rdb").exists(),
            "redis-server saved nothing"
        );
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("dump.rdb"));
        self.restart_with_data().await;
    }

    /// Starts it again on the same port with what it saved (see [`RedisProc::shutdown_saving`]).
    pub async fn restart_with_data(&mut self) {
        assert!(
            self.spawn().await,
            "redis-server did not come back on {}",
            self.port
        );
    }

    /// A connection for inspecting keys.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.try_connection()
            .await
            .expect("connect to the private Redis")
    }

    /// A connection, or why not: for polling a server that may be between two roles (Sentinel
    /// kills every client of a master it demotes).
    pub async fn try_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
        // A failing test shows what its servers said (sentinels' failover decisions above all).
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- redis-server {:?} on port {} (last lines of its log) ---\n{}",
                self.mode,
                self.port,
                tail.join("\n")
            );
        }
    }
}

/// A TCP proxy on loopback in front of one replica's Redis, which the test can cut (every
/// connection dropped, new ones refused) to partition that replica alone, and mend.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target_port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut = std::sync::Arc::new(cut);
        let task = tokio::spawn({
            let cut = cut.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if *cut.borrow() {
                        continue; // dropped at once
                    }
                    let mut watch = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = watch.wait_for(|cut| *cut) => {}
                        }
                    });
                }
            }
        });
        Proxy { port, cut, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Drops every connection through the proxy and refuses new ones until [`Proxy::mend`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn mend(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Redis Sentinel as the tests run it: a master, a replica and three sentinels (quorum 2, a
/// master is down after 1 s), all on loopback, all killed when dropped.
pub struct Sentinels {
    /// The data servers, master first (at start; failovers swap roles, not places).
    pub servers: Vec<RedisProc>,
    pub sentinels: Vec<RedisProc>,
}

impl Sentinels {
    pub async fn start() -> Sentinels {
        let master = RedisProc::start().await;
        let replicaof = [
            "--replicaof".to_string(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ];
        let replica = RedisProc::start_with(&replicaof).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(
                RedisProc::start_as(Mode::Sentinel {
                    master_port: master.port,
                })
                .await,
            );
        }
        let deployment = Sentinels {
            servers: vec![master, replica],
            sentinels,
        };
        deployment.settled().await;
        deployment
    }

    /// `redis+sentinel://` with the three sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The master's port, when every sentinel names the same one.
    pub async fn master_port(&self) -> Option<u16> {
        let mut named = None;
        for sentinel in &self.sentinels {
            let port = Self::named_by(sentinel).await?;
            if named.is_some_and(|n| n != port) {
                return None;
            }
            named = Some(port);
        }
        named
    }

    /// The master's port as `sentinel` names it.
    async fn named_by(sentinel: &RedisProc) -> Option<u16> {
        let client = redis::Client::open(sentinel.url()).ok()?;
        let connect = client.get_multiplexed_async_connection();
        let mut conn = tokio::time::timeout(Duration::from_secs(1), connect)
            .await
            .ok()?
            .ok()?;
        let mut ask = redis::cmd("SENTINEL");
        ask.arg("GET-MASTER-ADDR-BY-NAME").arg(SENTINEL_MASTER);
        let named = ask.query_async::<(String, u16)>(&mut conn);
        let (_, port) = tokio::time::timeout(Duration::from_secs(1), named)
            .await
            .ok()?
            .ok()?;
        Some(port)
    }

    /// The data server that is master now, by index in `servers` (the sentinels agree).
    pub async fn master(&self) -> usize {
        let port = self
            .master_port()
            .await
            .expect("the sentinels name one master");
        self.servers
            .iter()
            .position(|s| s.port == port)
            .expect("the master is one of the servers")
    }

    /// Waits until every sentinel knows the others, has its quorum, names the same master and
    /// sees the other running server as its replica, in sync: a failover can happen from then
    /// on. (Which server is master is not assumed: with `down-after-milliseconds 1000`, a stall
    /// of a loaded machine may make the sentinels fail over once more.)
    pub async fn settled(&self) {
        super::eventually(
            Duration::from_secs(60),
            "Sentinel ready to fail over",
            || async {
                let Some(master) = self.master_port().await else {
                    return false;
                };
                let running = |s: &&RedisProc| s.is_running() && s.port != master;
                let Some(replica) = self.servers.iter().find(running) else {
                    return false;
                };
                for sentinel in &self.sentinels {
                    let Ok(mut conn) = sentinel.try_connection().await else {
                        return false;
                    };
                    let quorum: Result<String, _> = redis::cmd("SENTINEL")
                        .arg("CKQUORUM")
                        .arg(SENTINEL_MASTER)
                        .query_async(&mut conn)
                        .await;
                    let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("SENTINELS")
                        .arg(SENTINEL_MASTER)
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    let replicas: Vec<std::collections::HashMap<String, String>> =
                        redis::cmd("SENTINEL")
                            .arg("REPLICAS")
                            .arg(SENTINEL_MASTER)
                            .query_async(&mut conn)
                            .await
                            .unwrap_or_default();
                    let replica_ok = replicas.iter().any(|r| {
                        r.get("port") == Some(&replica.port.to_string())
                            && r.get("flags").is_some_and(|f| f == "slave")
                            && r.get("master-link-status").is_some_and(|s| s == "ok")
                    });
                    if quorum.is_err() || others.len() != 2 || !replica_ok {
                        return false;
                    }
                }
                true
            },
        )
        .await;
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback, slots split in three, made with
/// `CLUSTER ADDSLOTS` and `CLUSTER MEET` (no redis-cli needed). A node may die without taking
/// the others' slots down (`cluster-require-full-coverage no`). All killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisProc>,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        const SLOTS: u16 = 16384;
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-require-full-coverage",
                "no",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            nodes.push(RedisProc::start_with(&args).await);
        }
        let third = SLOTS / 3;
        for (i, node) in nodes.iter().enumerate() {
            let mut conn = node.connection().await;
            let first = third * i as u16;
            let last = if i == 2 { SLOTS - 1 } else { first + third - 1 };
            let mut add = redis::cmd("CLUSTER");
            add.arg("ADDSLOTS");
            for slot in first..=last {
                add.arg(slot);
            }
            let () = add.query_async(&mut conn).await.expect("CLUSTER ADDSLOTS");
            // Distinct epochs, as redis-cli --cluster create sets them.
            let () = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .query_async(&mut conn)
                .await
                .expect("CLUSTER SET-CONFIG-EPOCH");
        }
        let mut first = nodes[0].connection().await;
        for node in &nodes[1..] {
            let () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(node.port)
                .query_async(&mut first)
                .await
                .expect("CLUSTER MEET");
        }
        let cluster = RedisCluster { nodes };
        super::eventually(Duration::from_secs(60), "Redis Cluster formed", || async {
            for node in &cluster.nodes {
                let mut conn = node.connection().await;
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .expect("CLUSTER INFO");
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_known_nodes:3")
                    && info.contains("cluster_slots_ok:16384");
                if !ok {
                    return false;
                }
            }
            true
        })
        .await;
        cluster
    }

    /// `redis+cluster://` with the nodes in `order` (by index).
    pub fn url_in_order(&self, order: &[usize]) -> String {
        let hosts: Vec<String> = order
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.nodes[i].port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    pub fn url(&self) -> String {
        self.url_in_order(&[0, 1, 2])
    }

    /// The index of the node that serves `key`'s slot (as the first node knows it).
    pub async fn node_of(&self, key: &str) -> usize {
        let mut conn = self.nodes[0].connection().await;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT");
        // CLUSTER SLOTS: [[first, last, [host, port, id], ...], ...]
        let ranges: Vec<(i64, i64, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<redis::Value>>(&mut conn)
            .await
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!("a slot range: {range:?}")
                };
                let first = redis::from_redis_value(&parts[0]).expect("first slot");
                let last = redis::from_redis_value(&parts[1]).expect("last slot");
                let redis::Value::Array(master) = &parts[2] else {
                    panic!("a node: {:?}", parts[2])
                };
                let host = redis::from_redis_value(&master[0]).expect("host");
                let port = redis::from_redis_value(&master[1]).expect("port");
                (first, last, (host, port))
            })
            .collect();
        let (_, _, (_, port)) = ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .expect("the slot is served");
        self.nodes
            .iter()
            .position(|n| n.port == *port)
            .expect("one of the nodes")
    }

    /// Moves `key`'s slot, with its keys, from the node that serves it to node `to`, as
    /// `redis-cli --cluster reshard` does: importing and migrating marks, `MIGRATE` of the keys
    /// a batch at a time, then every node told the slot's new owner.
    pub async fn move_slot_of(&self, key: &str, to: usize) {
        let from = self.node_of(key).await;
        let mut source = self.nodes[from].connection().await;
        let mut target = self.nodes[to].connection().await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut source)
            .await
            .expect("CLUSTER KEYSLOT");
        let id = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query_async::<String>(&mut conn)
                    .await
                    .expect("CLUSTER MYID")
            }
        };
        let (source_id, target_id) = (id(&mut source).await, id(&mut target).await);
        let setslot = |state: &str, node: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
            cmd
        };
        let () = setslot("IMPORTING", &source_id)
            .query_async(&mut target)
            .await
            .expect("SETSLOT IMPORTING");
        let () = setslot("MIGRATING", &target_id)
            .query_async(&mut source)
            .await
            .expect("SETSLOT MIGRATING");
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query_async(&mut source)
                .await
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source)
                .await
                .expect("MIGRATE");
        }
        for node in [to, from, 3 - to - from] {
            let mut conn = self.nodes[node].connection().await;
            let () = setslot("NODE", &target_id)
                .query_async(&mut conn)
                .await
                .expect("SETSLOT NODE");
        }
    }
}

/// Which Redis deployment a replica test runs on (see `on_each_redis!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    Standalone,
    Cluster,
}

/// A Redis deployment owned by one test: one server, or a Redis Cluster.
pub enum TestRedis {
    Standalone(RedisProc),
    Cluster(RedisCluster),
}

impl TestRedis {
    pub async fn start(kind: RedisKind) -> TestRedis {
        match kind {
            RedisKind::Standalone => TestRedis::Standalone(RedisProc::start().await),
            RedisKind::Cluster => TestRedis::Cluster(RedisCluster::start().await),
        }
    }

    /// The `redis.url` of the deployment.
    pub fn url(&self) -> String {
        match self {
            TestRedis::Standalone(redis) => redis.url(),
            TestRedis::Cluster(cluster) => cluster.url(),
        }
    }

    /// Every key with its PTTL, and the port of the node that holds it.
    pub async fn keys(&self) -> Vec<(String, i64, u16)> {
        match self {
            TestRedis::Standalone(redis) => keys_on(std::slice::from_ref(redis)).await,
            TestRedis::Cluster(cluster) => keys_on(&cluster.nodes).await,
        }
    }
}

/// Every key of `nodes` with its PTTL, and the port of the node that holds it.
pub async fn keys_on(nodes: &[RedisProc]) -> Vec<(String, i64, u16)> {
    let mut found = Vec::new();
    for node in nodes.iter().filter(|n| n.is_running()) {
        let mut conn = node.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        for key in keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("PTTL");
            found.push((key, ttl, node.port));
        }
    }
    found
}
