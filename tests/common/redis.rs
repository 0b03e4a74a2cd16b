//! Redis for the replica tests: the shared server that `./scripts/test` starts, private servers a
//! test may crash and restart, and a proxy that partitions one replica from its Redis.

use std::time::Duration;

/// The URL of the Redis server shared by the whole suite (set by `./scripts/test`).
pub fn redis_url() -> String {
    std::env::var("FOGHORN_TEST_REDIS_URL").expect(
        "FOGHORN_TEST_REDIS_URL is not set: run the suite with ./scripts/test, which starts \
         a private PostgreSQL and Redis",
    )
}

/// A private Redis server owned by one test, which may stop and restart it (on the same port).
/// The binary comes from `FOGHORN_TEST_REDIS_SERVER` (set by `./scripts/test`), else the PATH.
pub struct RedisProc {
    child: Option<std::process::Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisProc {
    pub async fn start() -> RedisProc {
        for _ in 0..5 {
            let port = super::ports::free_port();
            let mut redis = RedisProc {
                child: None,
                port,
                dir: tempfile::tempdir().expect("tempdir"),
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

    /// Starts the server on `self.port`; true once it answers PING.
    async fn spawn(&mut self) -> bool {
        let bin = std::env::var("FOGHORN_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
        let child = std::process::Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
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
        redis::Client::open(self.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the private Redis")
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.stop();
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
