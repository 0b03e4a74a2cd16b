//! `frameworks edge provision` end to end (issue 19): the real CLI binary over the system ssh to
//! a real sshd and dockerd in a network namespace each test creates (`scripts/edge-rig`), with
//! stand-in images of the edge stack (busybox for MistServer, `foghorn sim` for Helmsman, Debian's
//! Caddy for Caddy), against a running Foghorn. Needs root (network namespaces); `./scripts/test`
//! installs sshd, dockerd and Compose.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, Db, TestServer};

/// One edge host: a namespace with sshd and dockerd, torn down when dropped.
struct Rig {
    dir: PathBuf,
    edge_ip: String,
    key: PathBuf,
}

impl Rig {
    /// Host `index` (distinct per test: 10.213.{index}.2).
    fn up(index: u8) -> Rig {
        assert!(
            nix_is_root(),
            "the provisioning tests create network namespaces: run them as root (./scripts/test)"
        );
        let base = std::env::var("FOGHORN_TEST_RIG_DIR").unwrap_or_else(|_| "/tmp".into());
        let dir = PathBuf::from(base).join(format!("rig-{}-{index}", std::process::id()));
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/edge-rig"))
            .arg("up")
            .arg(&dir)
            .arg(index.to_string())
            .arg(env!("CARGO_BIN_EXE_foghorn"))
            .output()
            .expect("run scripts/edge-rig");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let rig = Rig {
            dir: dir.clone(),
            edge_ip: format!("10.213.{index}.2"),
            key: dir.join("client_key"),
        };
        assert!(
            out.status.success(),
            "edge-rig up failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        rig
    }

    fn ssh(&self) -> String {
        self.ssh_as("root")
    }

    /// `user@host`: `root`, `edge` (passwordless sudo) or `edgepw` (sudo asks for a password).
    fn ssh_as(&self, user: &str) -> String {
        format!("{user}@{}", self.edge_ip)
    }

    /// The install directory (on the shared filesystem, so the test reads it directly).
    fn install_dir(&self) -> PathBuf {
        self.dir.join("edge")
    }

    /// Runs `script` in the host's namespace with its docker.
    fn sh(&self, script: &str) -> String {
        let env = std::fs::read_to_string(self.dir.join("rig.env")).expect("rig.env");
        let ns = env.lines().find_map(|l| l.strip_prefix("NS=")).expect("NS");
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", script])
            .env(
                "DOCKER_HOST",
                format!("unix://{}/docker.sock", self.dir.display()),
            )
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Rig {
    /// Makes Docker absent from the host's SSH sessions: their PATH becomes a directory of every
    /// program but `docker*` (sshd re-reads its configuration on SIGHUP).
    fn hide_docker(&self) {
        let bin = self.dir.join("nodocker");
        std::fs::create_dir_all(&bin).expect("nodocker");
        for dir in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name();
                if !name.to_string_lossy().starts_with("docker") {
                    let _ = std::os::unix::fs::symlink(entry.path(), bin.join(&name));
                }
            }
        }
        let config = self.dir.join("sshd_config");
        let text = std::fs::read_to_string(&config).expect("sshd_config");
        let text = text.replace(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            &format!("PATH={}", bin.display()),
        );
        std::fs::write(&config, text).expect("sshd_config");
        let pid = std::fs::read_to_string(self.dir.join("sshd.pid")).expect("sshd pid");
        let hup = Command::new("kill")
            .args(["-HUP", pid.trim()])
            .status()
            .expect("kill");
        assert!(hup.success());
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/edge-rig"))
            .arg("down")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false)
}

/// A Foghorn the rigs' edges reach: gRPC on every address, advertised at the first rig's host
/// side (`first_index`).
async fn platform(first_index: u8) -> TestServer {
    let port = common::free_port();
    TestServer::start_with(Db::Sqlite, move |c| {
        c.server.grpc_addr = format!("0.0.0.0:{port}").parse().expect("addr");
        c.federation.advertise_grpc = format!("https://10.213.{first_index}.1:{port}");
    })
    .await
}

/// A tenant's private cluster on `server`'s cell and an enrollment token for `uses` edges.
async fn private_cluster(server: &TestServer, uses: i64) -> (String, String) {
    let registry = server.registry();
    let tenant = registry
        .create_tenant(
            &format!("Lab {}", uuid::Uuid::new_v4()),
            &server.server().state.config.cluster.id,
        )
        .await
        .expect("tenant");
    let created = foghorn::api::create_private_cluster_for(
        registry,
        &server.server().state.config.cluster.root_domain,
        &tenant.id,
        serde_json::from_value(serde_json::json!({ "name": "Home Lab" })).expect("input"),
        None,
    )
    .await
    .expect("private cluster");
    let id = created.cluster.id.clone();
    eventually(Duration::from_secs(10), "the cell serves it", || async {
        server.server().cell.serves(&id)
    })
    .await;
    let (_, token) = registry
        .create_enrollment_token(&foghorn::registry::NewEnrollmentToken {
            cluster_id: id.clone(),
            tenant_id: tenant.id.clone(),
            usage_limit: uses,
            expires_at: foghorn::registry::now_ms() + 3_600_000,
            expected_cidr: None,
        })
        .await
        .expect("token");
    (id, token)
}

/// `frameworks edge provision` with the stand-in images; returns (exit code, stdout).
fn provision(server: &TestServer, config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let ca = server.server().state.tls.dev_ca_path().expect("dev CA");
    let port = server.server().grpc_addr.port();
    let out = Command::new(env!("CARGO_BIN_EXE_frameworks"))
        .args(["edge", "provision"])
        .args(["--foghorn", &format!("https://127.0.0.1:{port}")])
        .arg("--ca")
        .arg(ca)
        .args(["--mistserver-image", "rig/mistserver:1"])
        .args(["--helmsman-image", "rig/helmsman:1"])
        .args(["--caddy-image", "rig/caddy:1"])
        .args(["--nofile", "16384", "--verify-timeout", "60s"])
        .args(args)
        .env("FRAMEWORKS_CONFIG_DIR", config)
        .output()
        .expect("run frameworks");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code(), format!("{stdout}{stderr}"))
}

/// Runs `run` until its output holds `wanted` (sshd takes a moment to re-read its
/// configuration), for at most 10 s; the last output either way.
async fn eventually_output(
    run: impl Fn() -> (Option<i32>, String),
    wanted: &str,
) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = run();
        if out.contains(wanted) || std::time::Instant::now() >= deadline {
            return (code, out);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every file under `dir` with its mode and contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else {
                let contents = std::fs::read(&path).unwrap_or_default();
                out.push((path, meta.permissions().mode() & 0o7777, contents));
            }
        }
    }
    out.sort();
    out
}

/// One server, end to end: a dry run changes nothing; the run tunes its kernel settings and takes
/// it to an enrolled, HTTPS-serving edge routable in Foghorn, secrets 0600; a re-run keeps its
/// identity and rewrites nothing, though the single-use token is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_one_server_to_a_routable_edge() {
    let rig = Rig::up(31);
    let server = platform(31).await;
    let (cluster, token) = private_cluster(&server, 1).await;
    let config = tempfile::tempdir().expect("tempdir");
    let dir = rig.install_dir();
    let dir_arg = dir.display().to_string();
    let key = rig.key.display().to_string();
    let common = [
        "--enrollment-token",
        token.as_str(),
        "--ssh",
        &rig.ssh(),
        "--ssh-key",
        &key,
        "--dir",
        &dir_arg,
        "--name",
        "edge-a",
    ];

    let before = snapshot(&dir);
    let (code, out) = provision(
        &server,
        config.path(),
        &[&common[..], &["--dry-run", "--tune"]].concat(),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("[2/7] Tune ... ok") && out.contains("90-frameworks-edge.conf"),
        "{out}"
    );
    assert!(out.contains("[edge-a] [5/7] Install ... ok"), "{out}");
    assert!(out.contains("dry run: would write"), "{out}");
    assert!(out.contains(".edge-enroll.env (600, secret"), "{out}");
    assert!(
        !out.contains(&token[8..]),
        "the token is never printed: {out}"
    );
    assert_eq!(snapshot(&dir), before, "a dry run changes nothing");
    assert!(rig.sh("docker ps -q").trim().is_empty());
    // The host's sysctl files and kernel settings as its SSH sessions see them (scripts/edge-rig).
    let profile = rig.dir.join("etc/sysctl.d/90-frameworks-edge.conf");
    let setting = |key: &str| {
        std::fs::read_to_string(rig.dir.join("sys").join(key.replace('.', "/")))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    assert!(!profile.exists(), "a dry run writes no profile");

    let (code, out) = provision(&server, config.path(), &[&common[..], &["--tune"]].concat());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("[2/7] Tune ... ok"), "{out}");
    assert!(
        out.contains("14 settings applied") && !out.contains("not here"),
        "{out}"
    );
    assert!(profile.exists(), "the profile is written");
    assert_eq!(setting("net.ipv4.tcp_notsent_lowat"), "131072");
    assert_eq!(setting("net.core.default_qdisc"), "fq");
    assert_eq!(setting("fs.nr_open"), "2097152");
    for step in 1..=7 {
        assert!(out.contains(&format!("[edge-a] [{step}/7] ")), "{out}");
    }
    assert!(out.contains("Succeeded 1/1"), "{out}");
    assert!(out.contains("routable in Foghorn"), "{out}");
    let env = std::fs::read_to_string(dir.join(".edge.env")).expect(".edge.env");
    let node_id = env
        .lines()
        .find_map(|l| l.strip_prefix("NODE_ID="))
        .expect("node id")
        .to_string();
    assert!(env.contains(&format!("CLUSTER_ID={cluster}\n")), "{env}");
    let files = snapshot(&dir);
    let mode = |name: &str| {
        files
            .iter()
            .find(|(p, _, _)| p.ends_with(name))
            .map(|(_, m, _)| *m)
            .unwrap_or_else(|| panic!("{name} written"))
    };
    assert_eq!(mode(".edge-enroll.env"), 0o600);
    assert_eq!(mode("certs/cluster.key"), 0o600);
    assert_eq!(mode("docker-compose.edge.yml"), 0o644);
    // Routable in Foghorn: the stand-in Helmsman enrolled with the token and reports.
    let served = server.server().cell.get(&cluster).expect("served");
    eventually(Duration::from_secs(30), "the edge is routable", || async {
        served.edges.is_routable(&node_id)
    })
    .await;

    // EdgeStatus, as Verify asks it: only with the token that provisioned the node.
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = foghorn::proto::edge_provisioning_client::EdgeProvisioningClient::new(channel);
    let ask = |token: &str, node: &str| foghorn::proto::EdgeStatusRequest {
        enrollment_token: token.into(),
        node_id: node.into(),
    };
    let status = client
        .edge_status(ask(&token, &node_id))
        .await
        .expect("status")
        .into_inner();
    assert!(status.connected && status.routable, "{status:?}");
    assert_eq!(status.cluster_id, cluster);
    let (_, other) = private_cluster(&server, 1).await;
    for (token, node, code) in [
        (
            other.as_str(),
            node_id.as_str(),
            tonic::Code::PermissionDenied,
        ),
        (
            "enroll_nope",
            node_id.as_str(),
            tonic::Code::PermissionDenied,
        ),
        (token.as_str(), "../etc", tonic::Code::InvalidArgument),
        ("", node_id.as_str(), tonic::Code::InvalidArgument),
    ] {
        let refused = client
            .edge_status(ask(token, node))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), code, "{token} {node}: {refused}");
    }

    // Again: same identity, nothing rewritten, though the token is used up.
    let (code, again) = provision(&server, config.path(), &common);
    assert_eq!(code, Some(0), "{again}");
    assert!(
        again.contains(&format!("already enrolled as node {node_id}")),
        "{again}"
    );
    assert!(again.contains("0 of 3 files changed"), "{again}");
    assert!(again.contains("0 of 4 files changed"), "{again}");
    assert_eq!(snapshot(&dir), files, "a re-run rewrites nothing");
    server.stop().await;
}

/// The preflight refuses, saying why and what to do: a wrong SSH key; a user whose sudo asks for
/// a password; port 443 held by another program; too little room for Docker's data; a Docker
/// daemon that does not run; no Docker at all. Nothing is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_preflight_failures_name_their_cause() {
    let rig = Rig::up(32);
    let server = platform(32).await;
    let (_, token) = private_cluster(&server, 1).await;
    let config = tempfile::tempdir().expect("tempdir");
    let dir = rig.install_dir().display().to_string();
    let run = |key: &str| {
        provision(
            &server,
            config.path(),
            &[
                "--enrollment-token",
                &token,
                "--ssh",
                &rig.ssh(),
                "--ssh-key",
                key,
                "--dir",
                &dir,
            ],
        )
    };
    let stranger = rig.dir.join("stranger");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&stranger)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let (code, out) = run(&stranger.display().to_string());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("[1/7] Preflight ... FAILED"), "{out}");
    assert!(
        out.contains("refused the key") && out.contains("--ssh-key"),
        "{out}"
    );

    let key = rig.key.display().to_string();
    // A user whose sudo asks for a password.
    let (code, out) = provision(
        &server,
        config.path(),
        &[
            "--enrollment-token",
            &token,
            "--ssh",
            &rig.ssh_as("edgepw"),
            "--ssh-key",
            &key,
            "--dir",
            &dir,
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("[1/7] Preflight ... FAILED"), "{out}");
    assert!(
        out.contains("sudo on 10.213.32.2 asks for a password")
            && out.contains("edgepw ALL=(ALL) NOPASSWD:ALL"),
        "{out}"
    );

    // Port 443 held by a listener in the host's namespace.
    rig.sh("nohup busybox httpd -f -p 443 -h /tmp >/dev/null 2>&1 &");
    eventually(Duration::from_secs(5), "the listener is up", || async {
        rig.sh("ss -Hltn 'sport = :443'").contains("443")
    })
    .await;
    let (code, out) = run(&key);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("port 443 is in use by busybox"), "{out}");
    rig.sh("pkill -f 'busybox httpd -f -p 443'");

    // Docker's data root (the rig's own tmpfs) shrunk to 8 GiB.
    let data_root = rig.dir.join("docker");
    let shrink = |size: &str| {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&data_root)
            .status()
            .expect("mount");
        assert!(status.success(), "remount {size}");
    };
    shrink("8g");
    let (code, out) = run(&key);
    assert_eq!(code, Some(1), "{out}");
    // Under 8 GiB: the stand-in images take a little.
    let expected = format!("{} has 7.", data_root.display());
    assert!(
        out.contains(&expected) && out.contains(" GiB free; Docker's data needs 20 GiB there"),
        "{out}"
    );
    assert!(out.contains("docker system prune"), "{out}");
    shrink("64g");

    // The Docker daemon stopped.
    let pid = std::fs::read_to_string(rig.dir.join("docker.pid")).expect("pid");
    rig.sh(&format!("kill {}", pid.trim()));
    eventually(Duration::from_secs(10), "dockerd stopped", || async {
        !rig.dir.join("docker.pid").exists()
    })
    .await;
    let (code, out) = run(&key);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("the Docker daemon does not answer"), "{out}");

    // Docker not installed at all.
    rig.hide_docker();
    let (code, out) = eventually_output(|| run(&key), "Docker is not installed").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("install Docker Engine"), "{out}");
    assert!(
        !rig.install_dir().join(".edge.env").exists(),
        "nothing installed"
    );
    server.stop().await;
}

/// Two servers from a manifest, two at a time, one as root and one as a user with passwordless
/// sudo: each line carries its node's name, both end routable, and the summary counts them. (A failing node's exit code: see the preflight test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_a_manifest_of_two_in_parallel() {
    let (a, b) = (Rig::up(33), Rig::up(34));
    let server = platform(33).await;
    let (cluster, token) = private_cluster(&server, 2).await;
    let config = tempfile::tempdir().expect("tempdir");
    let manifest = config.path().join("edges.yaml");
    // Each host with its own key (and, as the hosts share this machine's files, each with its
    // own directory).
    std::fs::write(
        &manifest,
        format!(
            "defaults:\n  enrollment_token: {token}\n  cluster: {cluster}\n\
             nodes:\n  - name: edge-a\n    ssh: {}\n    ssh_key: {}\n    dir: {}\n\
             \x20 - name: edge-b\n    ssh: {}\n    ssh_key: {}\n    dir: {}\n    capabilities: [edge]\n",
            a.ssh(),
            a.key.display(),
            a.install_dir().display(),
            b.ssh_as("edge"),
            b.key.display(),
            b.install_dir().display(),
        ),
    )
    .expect("manifest");
    let (code, out) = provision(
        &server,
        config.path(),
        &[
            "--manifest",
            &manifest.display().to_string(),
            "--parallel",
            "2",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Succeeded 2/2"), "{out}");
    for name in ["edge-a", "edge-b"] {
        assert!(
            out.contains(&format!("[{name}] [7/7] Verify ... ok")),
            "{out}"
        );
    }
    let served = server.server().cell.get(&cluster).expect("served");
    eventually(Duration::from_secs(30), "both edges routable", || async {
        served.edges.utilization().healthy_edges == 2
    })
    .await;
    server.stop().await;
}
