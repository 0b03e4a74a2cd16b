//! Tests of the real binaries: configuration errors, the admin commands, and the "done when" path
//! of the foundation: admin creates a tenant, token and enrollment token; `foghorn sim` enrolls
//! edges; they are routable; killing the simulator makes them unroutable at once.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const FOGHORN: &str = env!("CARGO_BIN_EXE_foghorn");

fn foghorn(data: &std::path::Path) -> Command {
    foghorn_at(FOGHORN, data)
}

/// [`foghorn`] with the binary at `bin`.
fn foghorn_at(bin: &str, data: &std::path::Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FOGHORN_DATA_DIR", data)
        .env("FOGHORN_HTTP_ADDR", "127.0.0.1:0")
        .env("FOGHORN_GRPC_ADDR", "127.0.0.1:0")
        .env("FOGHORN_LOG", "warn");
    cmd
}

fn admin_json(data: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = foghorn(data)
        .args(["admin", "--json"])
        .args(args)
        .output()
        .expect("run foghorn admin");
    assert!(
        out.status.success(),
        "foghorn admin {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("admin prints JSON")
}

/// Starts `foghorn` (serve) and reads the HTTP and gRPC addresses it prints.
fn serve(mut cmd: Command) -> (Running, String, String) {
    let mut server = Running(cmd.stdout(Stdio::piped()).spawn().expect("start foghorn"));
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let mut http = None;
    let mut grpc = None;
    while http.is_none() || grpc.is_none() {
        let line = lines
            .next()
            .expect("server prints its addresses")
            .expect("utf8");
        let addr = line.split_whitespace().nth(1).map(str::to_string);
        if line.trim_start().starts_with("HTTP") {
            http = addr;
        } else if line.trim_start().starts_with("gRPC") {
            grpc = addr;
        }
    }
    (server, http.expect("http"), grpc.expect("grpc"))
}

/// Kills the child when dropped, so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bad_configuration_exits_before_binding_and_names_the_key() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = foghorn(data.path())
        .env("FOGHORN_GRPC_ADDR", "not-an-address")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.grpc_addr"), "{stderr}");
    assert!(stderr.contains("FOGHORN_GRPC_ADDR"), "{stderr}");
    assert!(
        !data.path().join("foghorn.db").exists(),
        "nothing was created"
    );

    // A file the configuration names that cannot be used is invalid configuration too: exit 2.
    for (vars, key) in [
        (
            &[("FOGHORN_GEOIP_MMDB_PATH", "/nonexistent/city.mmdb")][..],
            "geoip.mmdb_path",
        ),
        (
            &[
                ("FOGHORN_TLS_CERT_PATH", "/nonexistent/cert.pem"),
                ("FOGHORN_TLS_KEY_PATH", "/nonexistent/key.pem"),
            ][..],
            "tls.cert_path",
        ),
    ] {
        let out = foghorn(data.path())
            .envs(vars.iter().copied())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "{stderr}");
        assert!(
            !data.path().join("foghorn.db").exists(),
            "nothing was created"
        );
    }

    let out = foghorn(data.path())
        .args(["--cluster-id", "NOT valid"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cluster.id") && stderr.contains("--cluster-id"),
        "{stderr}"
    );
}

/// An edge's score for a viewer at `(lat, lon)` by DESIGN.md §5 with the default weights, for a
/// local edge without the stream and without pending redirects: written out here from the
/// formula, independently of `foghorn::routing`.
fn score_by_design(stats: &serde_json::Value, (lat, lon): (f64, f64)) -> u64 {
    let n = |k: &str| {
        stats[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {stats}"))
    };
    let headroom = |w: u64, used: u64, max: u64| {
        if max == 0 || used >= max {
            0
        } else {
            w - (u128::from(used) * u128::from(w) / u128::from(max)) as u64
        }
    };
    let (elat, elon) = (
        stats["latitude"].as_f64().expect("latitude"),
        stats["longitude"].as_f64().expect("longitude"),
    );
    let (p1, p2) = (lat.to_radians(), elat.to_radians());
    let cos = p1.sin() * p2.sin() + p1.cos() * p2.cos() * (lon - elon).to_radians().cos();
    let d = cos.clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
    let geo = 1000 - ((1000.0 * d).floor() as u64).min(1000);
    headroom(500, n("cpu_tenths"), 1000)
        + headroom(500, n("ram_used_bytes"), n("ram_max_bytes"))
        + headroom(1000, n("up_bytes_per_sec"), n("bw_limit_bytes_per_sec"))
        + geo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_then_sim_then_kill() {
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path();
    // Admin works before the server ever ran when asked to create the registry (with the
    // server's own cluster `local`, as the server would).
    let cluster = admin_json(
        dir,
        &[
            "--create-registry",
            "cluster",
            "create",
            "--id",
            "eu-1",
            "--name",
            "EU 1",
            "--tier",
            "dedicated",
            "--pricing",
            "MONTHLY",
        ],
    );
    assert_eq!(cluster["tier"], "dedicated");

    let (mut server, http, grpc) = serve(foghorn(dir));

    let tenant = admin_json(
        dir,
        &[
            "tenant",
            "create",
            "--name",
            "Acme",
            "--official-cluster",
            "local",
        ],
    );
    let tenant_id = tenant["id"].as_str().expect("id").to_string();
    let op = admin_json(
        dir,
        &[
            "token", "create", "--tenant", &tenant_id, "--role", "operator",
        ],
    );
    let op = op["token"].as_str().expect("token").to_string();
    let enroll = admin_json(
        dir,
        &[
            "enrollment-token",
            "create",
            "--cluster",
            "local",
            "--tenant",
            &tenant_id,
            "--usage-limit",
            "3",
            "--ttl",
            "1h",
        ],
    );
    let enroll = enroll["token"].as_str().expect("token").to_string();
    // Without --json, a secret alone on stdout (`T=$(foghorn admin token create ...)` holds
    // it), the shown-once reminder on stderr.
    for args in [
        vec![
            "token", "create", "--tenant", &tenant_id, "--role", "tenant",
        ],
        vec![
            "enrollment-token",
            "create",
            "--cluster",
            "local",
            "--tenant",
            &tenant_id,
        ],
    ] {
        let out = foghorn(dir)
            .arg("admin")
            .args(&args)
            .output()
            .expect("run foghorn admin");
        assert!(out.status.success(), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let secret = stdout.strip_suffix('\n').expect("one line");
        assert!(
            !secret.contains(char::is_whitespace) && secret.contains('_'),
            "{args:?}: {stdout:?}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("shown once"),
            "{args:?}"
        );
    }
    // An operator creates a tenant's private cluster: on the live cell (the running Foghorn),
    // which serves it a moment later; a cell that is not live is refused, nothing created.
    let refused = foghorn(dir)
        .args(["admin", "cluster", "create-private", "--tenant", &tenant_id])
        .args(["--name", "Home Lab", "--cell", "nowhere"])
        .output()
        .expect("run foghorn admin");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("\"nowhere\" is not live"), "{stderr}");
    let private = admin_json(
        dir,
        &[
            "cluster",
            "create-private",
            "--tenant",
            &tenant_id,
            "--name",
            "Home Lab",
        ],
    );
    let private_id = private["cluster"]["id"].as_str().expect("id");
    assert!(private_id.starts_with("home-lab-"), "{private}");
    assert_eq!(private["foghorn"]["cell"], "local", "{private}");
    let secret = private["enrollment_token"]["token"]
        .as_str()
        .expect("token");
    assert!(secret.starts_with("enroll_"), "{private}");
    assert!(
        private["enrollment_token"]["provision_command"]
            .as_str()
            .is_some_and(|c| c.contains(secret)),
        "{private}"
    );
    common::eventually(
        Duration::from_secs(10),
        "the running cell serves the private cluster",
        || async { gauge(&http, "foghorn_served_clusters").await == Some(2.0) },
    )
    .await;

    // An operator assigns a cluster to a cell and gives it back a Foghorn of its own.
    admin_json(dir, &["cluster", "create", "--id", "lab", "--name", "Lab"]);
    let assigned = admin_json(
        dir,
        &["cluster", "assign", "--id", "lab", "--cell", "local"],
    );
    assert_eq!(assigned["cell"], "local", "{assigned}");
    let own = admin_json(dir, &["cluster", "assign", "--id", "lab", "--own-foghorn"]);
    assert_eq!(own["cell"], "lab", "{own}");
    let stream = admin_json(
        dir,
        &["stream", "create", "--tenant", &tenant_id, "--name", "main"],
    );
    assert!(stream["stream_key"]
        .as_str()
        .expect("key")
        .starts_with("sk_"));

    // A wrong token: refused, and the simulator gives up with an error.
    let refused = foghorn(dir)
        .args([
            "sim",
            "--grpc",
            &grpc,
            "--edges",
            "1",
            "--enrollment-token",
            "enroll_wrong",
        ])
        .output()
        .expect("run sim");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("ENROLLMENT_FAILED"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes in a pipe: {stderr:?}"
    );

    let state = dir.join("sim-state");
    // Three edges with saved identities in `state`, reporting every `interval`; `extra` adds flags.
    let spawn_sim = |interval: &str, extra: &[&str]| {
        Running(
            foghorn(dir)
                .args([
                    "sim",
                    "--grpc",
                    &grpc,
                    "--edges",
                    "3",
                    "--interval",
                    interval,
                ])
                .args(extra)
                .arg("--state-dir")
                .arg(&state)
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start sim"),
        )
    };
    let sim = spawn_sim("200ms", &["--seed", "1", "--enrollment-token", &enroll]);
    let client = reqwest::Client::new();
    let edges = || async {
        let body: serde_json::Value = client
            .get(format!("{http}/api/v1/edges"))
            .bearer_auth(&op)
            .send()
            .await
            .expect("edges")
            .json()
            .await
            .expect("json");
        body["edges"].as_array().cloned().unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while edges()
        .await
        .iter()
        .filter(|e| e["routable"] == true)
        .count()
        < 3
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "3 simulated edges never became routable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..3 {
        use std::os::unix::fs::PermissionsExt as _;
        let saved =
            std::fs::metadata(state.join(format!("edge-{i}.json"))).expect("credentials saved");
        assert_eq!(
            saved.permissions().mode() & 0o777,
            0o600,
            "node credentials are readable by their owner only"
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    let dir_mode = std::fs::metadata(&state)
        .expect("state dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0, "the state dir is private");

    drop(sim); // SIGKILL: the kernel closes the streams.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while edges().await.iter().any(|e| e["routable"] == true) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "edges stayed routable after the simulator died"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Restarted with the same state dir, the edges reconnect with their credentials: no new nodes.
    let sim = spawn_sim("200ms", &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = edges().await;
        if list.len() == 3 && list.iter().all(|e| e["routable"] == true) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "edges did not come back: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(sim);

    // Routing over the simulator's own reports. With a long interval each edge reports once, so
    // the test scores the pool itself by DESIGN.md §5 from what `/api/v1/edges` shows and expects
    // exactly Foghorn's choice and scores (explain charges nothing, so no pending either).
    let sim = spawn_sim("60s", &[]);
    let playback = stream["playback_id"].as_str().expect("playback id");
    let url = format!("{http}/play/{playback}?lat=48.85&lon=2.35&explain=1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (list, explained) = loop {
        let list = edges().await;
        let body: serde_json::Value = client
            .get(&url)
            .bearer_auth(&op)
            .send()
            .await
            .expect("play")
            .json()
            .await
            .expect("json");
        let scored = body["explain"]["candidates"].as_array().map_or(0, Vec::len);
        if scored == 3 && list.iter().all(|e| e["routable"] == true) {
            break (list, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reconnected edges were not all scored: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expected: Vec<(String, u64)> = list
        .iter()
        .map(|e| {
            (
                e["node_id"].as_str().expect("id").to_string(),
                score_by_design(&e["stats"], (48.85, 2.35)),
            )
        })
        .collect();
    let best = expected
        .iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .expect("three edges");
    assert_eq!(
        explained["primary"]["node_id"],
        best.0.as_str(),
        "{explained}"
    );
    assert_eq!(explained["primary"]["score"], best.1);
    for c in explained["explain"]["candidates"]
        .as_array()
        .expect("candidates")
    {
        let id = c["node_id"].as_str().expect("id");
        let want = expected.iter().find(|e| e.0 == id).expect("listed edge").1;
        assert_eq!(c["parts"]["total"], want, "{id}: {c}");
    }
    drop(sim);

    // SIGTERM: graceful shutdown, exit 0.
    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = server.0.wait().expect("wait");
    assert!(status.success(), "graceful exit, got {status:?}");
}

/// Two replica processes share PostgreSQL and Redis; the leader is killed with SIGKILL (no lease
/// release): the other takes over once the lease runs out, well within 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced() {
    let redis = common::RedisProc::start().await;
    let db = common::TestDb::new(common::Db::Postgres).await;
    let data = tempfile::tempdir().expect("tempdir");
    let replica = || {
        let mut cmd = foghorn(data.path());
        cmd.env("FOGHORN_DATABASE_URL", &db.url)
            .env("FOGHORN_REDIS_URL", redis.url())
            .env("FOGHORN_REDIS_LEADER_TTL", "2s");
        serve(cmd)
    };
    let mut replicas = vec![replica(), replica()];
    let ready = |http: String| async move {
        reqwest::get(format!("{http}/ready"))
            .await
            .expect("ready")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    };
    let leads = |i: usize| ready(replicas[i].1.clone());
    common::eventually(Duration::from_secs(10), "one leader", || async {
        (leads(0).await["leader"] == true) != (leads(1).await["leader"] == true)
    })
    .await;
    let leader = usize::from(leads(1).await["leader"] == true);
    let (mut killed, _, _) = replicas.remove(leader);
    killed.0.kill().expect("SIGKILL the leader");
    killed.0.wait().expect("reaped");
    let survivor = replicas[0].1.clone();
    common::eventually(Duration::from_secs(15), "the survivor leads", || {
        let survivor = survivor.clone();
        async move { ready(survivor).await["leader"] == true }
    })
    .await;
}

/// Starts `foghorn` (serve) with its stdout and stderr read to the end by threads; returns the
/// addresses it prints and the threads, which hand back everything it wrote once it exits.
fn serve_logged(
    mut cmd: Command,
) -> (
    Running,
    String,
    String,
    Vec<std::thread::JoinHandle<String>>,
) {
    let mut server = Running(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start foghorn"),
    );
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let stdout = server.0.stdout.take().expect("stdout");
    let stderr = server.0.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let addr = line.split_whitespace().nth(1).map(str::to_string);
            if let Some(addr) = addr {
                if line.trim_start().starts_with("HTTP") {
                    let _ = tx.send((true, addr));
                } else if line.trim_start().starts_with("gRPC") {
                    let _ = tx.send((false, addr));
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let err = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut all);
        all
    });
    let (mut http, mut grpc) = (None, None);
    while http.is_none() || grpc.is_none() {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((true, addr)) => http = Some(addr),
            Ok((false, addr)) => grpc = Some(addr),
            Err(e) => panic!("the server did not print its addresses: {e}"),
        }
    }
    (
        server,
        http.expect("http"),
        grpc.expect("grpc"),
        vec![out, err],
    )
}

/// A line from the middle of a PEM file: base64 of the key itself.
fn pem_body_line(pem: &str) -> String {
    pem.lines()
        .find(|l| l.len() >= 60 && !l.starts_with("-----"))
        .unwrap_or_else(|| panic!("a base64 line in {pem}"))
        .to_string()
}

/// The flows that mint or carry secrets (API tokens, enrollment tokens over REST, MCP and gRPC,
/// stream keys, invites, node credentials, the cluster key, the federation credential) run
/// against the real binary logging at `trace`; none of those secrets is in what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log() {
    use foghorn::proto::edge_provisioning_client::EdgeProvisioningClient;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::ServiceExt as _;
    use serde_json::{json, Value};

    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path();
    let mut cmd = foghorn(dir);
    cmd.env("FOGHORN_LOG", "trace").env("RUST_LOG", "trace");
    let (mut server, http, grpc, output) = serve_logged(cmd);
    let mut secrets: Vec<(&str, String)> = Vec::new();

    let tenant = |name: &str| {
        admin_json(
            dir,
            &[
                "tenant",
                "create",
                "--name",
                name,
                "--official-cluster",
                "local",
            ],
        )["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let token = |tenant: &str, role: &str| {
        admin_json(
            dir,
            &["token", "create", "--tenant", tenant, "--role", role],
        )["token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let owner = tenant("Owner");
    let owner_token = token(&owner, "operator");
    let guest = tenant("Guest");
    let guest_id = guest.clone();
    let guest_token = token(&guest, "tenant");
    secrets.push(("API token", owner_token.clone()));
    secrets.push(("API token", guest_token.clone()));

    // REST: a stream key, a private cluster's enrollment token, another one, an invite.
    let client = reqwest::Client::new();
    let post = |path: &str, token: &str, body: Value| {
        let request = client
            .post(format!("{http}/api/v1{path}"))
            .bearer_auth(token)
            .json(&body);
        let path = path.to_string();
        async move {
            let res = request.send().await.expect("send");
            let status = res.status();
            let body: Value = res.json().await.expect("JSON");
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    let stream = post("/streams", &owner_token, json!({ "name": "main" })).await;
    let stream_key = stream["stream_key"]
        .as_str()
        .expect("stream key")
        .to_string();
    secrets.push(("stream key", stream_key.clone()));
    let private = post("/private-clusters", &owner_token, json!({ "name": "Lab" })).await;
    let cluster = private["cluster"]["id"].as_str().expect("id").to_string();
    secrets.push((
        "enrollment token (REST private cluster)",
        private["enrollment_token"]["token"]
            .as_str()
            .expect("token")
            .to_string(),
    ));
    let enroll = post(
        "/clusters/local/enrollment-tokens",
        &owner_token,
        json!({ "usage_limit": 3 }),
    )
    .await["token"]
        .as_str()
        .expect("token")
        .to_string();
    secrets.push(("enrollment token (REST)", enroll.clone()));
    let invite = post(
        &format!("/clusters/{cluster}/invites"),
        &owner_token,
        json!({ "tenant_id": guest_id }),
    )
    .await["token"]
        .as_str()
        .expect("invite")
        .to_string();
    secrets.push(("invite", invite.clone()));

    // MCP: the same, and an invite carried in a tool's arguments.
    let mcp = |token: &str| {
        let config = StreamableHttpClientTransportConfig::with_uri(format!("{http}/mcp"))
            .auth_header(token.to_string());
        ().serve(StreamableHttpClientTransport::from_config(config))
    };
    let call = |tool: &'static str, args: Value| {
        CallToolRequestParams::new(tool).with_arguments(args.as_object().expect("object").clone())
    };
    let owner_mcp = mcp(&owner_token).await.expect("MCP session");
    let created = owner_mcp
        .call_tool(call("create_private_cluster", json!({ "name": "Den" })))
        .await
        .expect("create_private_cluster")
        .structured_content
        .expect("structured");
    secrets.push((
        "enrollment token (MCP private cluster)",
        created["enrollment_token"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("token in {created}"))
            .to_string(),
    ));
    let minted = owner_mcp
        .call_tool(call(
            "create_enrollment_token",
            json!({ "cluster_id": cluster }),
        ))
        .await
        .expect("create_enrollment_token")
        .structured_content
        .expect("structured");
    secrets.push((
        "enrollment token (MCP)",
        minted["token"]
            .as_str()
            .unwrap_or_else(|| panic!("token in {minted}"))
            .to_string(),
    ));
    let guest_mcp = mcp(&guest_token).await.expect("MCP session");
    let joined = guest_mcp
        .call_tool(call(
            "subscribe_to_cluster",
            json!({ "cluster_id": cluster, "invite_token": invite }),
        ))
        .await
        .expect("subscribe_to_cluster");
    assert_ne!(joined.is_error, Some(true), "{joined:?}");
    owner_mcp.cancel().await.ok();
    guest_mcp.cancel().await.ok();

    // gRPC: pre-registration and enrollment over TLS (the cluster key comes too), an ingest with
    // the stream key, a reconnect with the node credential.
    let ca = std::fs::read_to_string(dir.join("tls/ca.pem")).expect("dev CA");
    let grpc_addr = grpc.trim_start_matches("http://");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{grpc_addr}"))
        .expect("url")
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                .domain_name("foghorn.local.frameworks.localhost"),
        )
        .expect("TLS config")
        .connect()
        .await
        .expect("TLS to the gRPC port");
    EdgeProvisioningClient::new(channel.clone())
        .pre_register_edge(foghorn::proto::PreRegisterEdgeRequest {
            enrollment_token: enroll.clone(),
            external_ip: "127.0.0.1".into(),
            ..Default::default()
        })
        .await
        .expect("pre-registered");
    let mut edge =
        common::EdgeConn::over(channel.clone(), common::register_with_token(&enroll)).await;
    let seed = edge.seed().await;
    secrets.push(("node credential", seed.node_credential.clone()));
    let key = seed.tls.as_ref().expect("the cluster key over TLS");
    secrets.push(("cluster key", pem_body_line(&key.private_key_pem)));
    edge.send(common::stats_frame(vec![])).await;
    edge.send(common::ingest_frame("r1", &stream_key)).await;
    assert!(edge.decision().await.accept, "ingest accepted");
    drop(edge);
    let mut again = common::EdgeConn::over(
        channel,
        common::register_with_credential(&seed.node_id, &seed.node_credential),
    )
    .await;
    again.seed().await;
    drop(again);

    secrets.push((
        "federation credential",
        std::fs::read_to_string(dir.join("federation.key"))
            .expect("federation.key")
            .trim()
            .to_string(),
    ));
    secrets.push((
        "dev CA key",
        pem_body_line(&std::fs::read_to_string(dir.join("tls/ca.key")).expect("ca.key")),
    ));

    let pid = server.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(server.0.wait().expect("wait").success());
    let log: String = output
        .into_iter()
        .map(|t| t.join().expect("log reader"))
        .collect();

    // The flows were traced (else finding nothing proves nothing)...
    for seen in ["TRACE", "rmcp::", "h2::", "sqlx::query", "edge enrolled"] {
        assert!(log.contains(seen), "no {seen:?} in the trace log");
    }
    // ...and no secret is in it, whole or its random part.
    for (what, secret) in &secrets {
        let tail = secret.rsplit('_').next().unwrap_or(secret);
        for needle in [secret.as_str(), tail] {
            if let Some(at) = log.find(needle) {
                let line = log[..at].rsplit('\n').next().unwrap_or("");
                panic!("the {what} is in the log: {line:.300}…");
            }
        }
    }
}
/// A closed port on loopback: bound, then released.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Runs `foghorn sim` against `grpc` with `extra` flags; its exit code and stderr, within 30 s.
async fn sim_once(grpc: &str, extra: &[&str]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().expect("tempdir");
    let child = Command::new(FOGHORN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["sim", "--grpc", grpc, "--enrollment-token", "enroll_x"])
        .args(extra)
        .current_dir(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sim");
    let pid = child.id().to_string();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    let Ok(out) = tokio::time::timeout(Duration::from_secs(30), waited).await else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("the simulator kept retrying instead of giving up");
    };
    let out = out.expect("join").expect("sim output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 14 item 9, the simulator: a southern latitude parses; an unreachable Foghorn, or one
/// whose listeners do not speak the scheme dialed (TLS vs plaintext), stops it at once with the
/// cause and what to check instead of "transport error" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_parses_negative_positions_and_explains_unreachable_foghorns() {
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    let (code, stderr) = sim_once(&nowhere, &["--region-center", "-33.87,151.21"]).await;
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach Foghorn at {nowhere}"))
            && stderr.contains("refused")
            && stderr.contains("hint: is Foghorn running"),
        "{stderr}"
    );
    let (code, stderr) = sim_once(&nowhere, &["--region-center", "40.71,-74.01"]).await;
    assert_eq!(code, Some(1), "{stderr}");
    let (code, stderr) = sim_once(&nowhere, &["--region-center", "-91,0"]).await;
    assert_eq!(
        code,
        Some(2),
        "clap refuses an out-of-range position: {stderr}"
    );
    assert!(stderr.contains("out of range"), "{stderr}");

    // TLS to a plaintext-only listener, plaintext to a TLS-only one.
    for (listeners, scheme, advice) in [
        (foghorn::config::ListenerTls::Off, "https", "use http://"),
        (
            foghorn::config::ListenerTls::Required,
            "http",
            "use https://",
        ),
    ] {
        let server = common::TestServer::start_with(common::Db::Sqlite, |c| {
            c.tls.listeners = listeners;
        })
        .await;
        let grpc = format!("{scheme}://{}", server.server().grpc_addr);
        let (code, stderr) = sim_once(&grpc, &[]).await;
        assert_eq!(code, Some(1), "{listeners:?}: {stderr}");
        assert!(
            stderr.contains("cannot reach Foghorn") && stderr.contains(advice),
            "{listeners:?}: {stderr}"
        );
        assert!(!stderr.contains('\x1b'), "{stderr:?}");
        server.stop().await;
    }
}

/// Issue 14 item 9, admin: run from another directory it does not quietly make a new `./data`;
/// it says which registry it opened; a tier without an official cluster is refused as the API
/// refuses it, with advice that works; `cluster update` sets price, location and capacity.
#[test]
fn admin_names_its_registry_and_creates_none_unasked() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let admin = |args: &[&str]| {
        let out = Command::new(FOGHORN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(elsewhere.path())
            .arg("admin")
            .args(args)
            .output()
            .expect("run foghorn admin");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let db = elsewhere.path().join("data").join("foghorn.db");
    let (code, _, stderr) = admin(&["tenant", "create", "--name", "Acme"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no registry at {}", db.display()))
            && stderr.contains("--create-registry"),
        "{stderr}"
    );
    assert!(!elsewhere.path().join("data").exists(), "nothing created");

    let (code, _, stderr) = admin(&["--create-registry", "cluster", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("registry: sqlite://{} (created)", db.display())),
        "{stderr}"
    );
    let (code, listed, stderr) = admin(&["cluster", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        listed.starts_with("local\t"),
        "the server's own cluster: {listed}"
    );
    assert!(
        stderr.contains(&format!("registry: sqlite://{}", db.display()))
            && !stderr.contains("created"),
        "{stderr}"
    );

    // No cluster is official for enterprise: refused, with a command that fixes it.
    let (code, _, stderr) = admin(&["tenant", "create", "--name", "Big", "--tier", "enterprise"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no cluster is official for billing tier \"enterprise\"")
            && stderr.contains("foghorn admin cluster update --id local --official-for enterprise"),
        "{stderr}"
    );
    let (code, out, stderr) = admin(&[
        "cluster",
        "update",
        "--id",
        "local",
        "--official-for",
        "enterprise,pro",
        "--location",
        "-33.87,151.21",
        "--pricing",
        "MONTHLY",
        "--price-cents",
        "4900",
        "--max-edges",
        "50",
        "--max-bandwidth",
        "1250000000",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        out.contains("MONTHLY 4900 cents") && out.contains("-33.87,151.21"),
        "{out}"
    );
    let (code, out, stderr) = admin(&[
        "--json",
        "tenant",
        "create",
        "--name",
        "Big",
        "--tier",
        "enterprise",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let tenant: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(tenant["official_cluster_id"], "local");
    let (_, out, _) = admin(&["--json", "cluster", "list"]);
    let clusters: serde_json::Value = serde_json::from_str(&out).expect("json");
    let local = &clusters[0];
    assert_eq!(
        (
            &local["price_cents"],
            &local["latitude"],
            &local["max_edges"],
            &local["max_bandwidth"]
        ),
        (
            &serde_json::json!(4900),
            &serde_json::json!(-33.87),
            &serde_json::json!(50),
            &serde_json::json!(1_250_000_000i64)
        )
    );
    let (code, out, stderr) = admin(&[
        "cluster",
        "update",
        "--id",
        "local",
        "--no-location",
        "--no-max-edges",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        out.contains("location      -") && out.contains("capacity      - edges"),
        "{out}"
    );
    let (code, _, stderr) = admin(&["cluster", "update", "--id", "local"]);
    assert_eq!(code, Some(1), "nothing to change: {stderr}");
}

/// Issue 14 item 9: log lines carry no colour codes when stdout is not a terminal.
#[test]
fn logs_are_plain_text_in_a_pipe() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = foghorn(data.path());
    cmd.env("FOGHORN_LOG", "info");
    let mut server = Running(cmd.stdout(Stdio::piped()).spawn().expect("start foghorn"));
    let lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines {
        let line = line.expect("utf8");
        let done = line.trim_start().starts_with("gRPC");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("Foghorn ready") && l.contains("INFO")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains('\x1b')), "{seen:?}");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// The value of gauge `name` on `/metrics` of the server at `http` (a URL).
async fn gauge(http: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Issue 18's numbers, on the real binary and PostgreSQL (printed for `docs/BENCHMARKS.md`,
/// `./scripts/test a_cell_serves -- --nocapture`): a running cell picks up 1,000 clusters
/// assigned to it without a restart; resident memory per idle served cluster; start to ready
/// with all of them; and a private cluster created on the running cell → its first edge
/// routable by viewers naming its Foghorn. `FOGHORN_MEASURE_BIN=target/release/foghorn` measures
/// the release build (after `cargo build --release`) instead of the debug one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_serves_a_thousand_assigned_clusters() {
    use foghorn::registry::NewPrivateCluster;
    use std::time::Instant;
    const CLUSTERS: usize = 1_000;
    let db = common::TestDb::new(common::Db::Postgres).await;
    let data = tempfile::tempdir().expect("tempdir");
    let bin = std::env::var("FOGHORN_MEASURE_BIN").unwrap_or_else(|_| FOGHORN.to_string());
    let cell = || {
        let mut cmd = foghorn_at(&bin, data.path());
        cmd.env("FOGHORN_DATABASE_URL", &db.url)
            .env("FOGHORN_CLUSTER_ID", "cell")
            .env("FOGHORN_ROOT_DOMAIN", "example.net");
        cmd
    };
    let started = Instant::now();
    let (server, http, _) = serve(cell());
    let alone = started.elapsed();
    let registry = db.registry().await;
    let tenant = registry
        .create_tenant("Labs", "cell")
        .await
        .expect("tenant");
    let idle = rss_kib(server.0.id());
    let private = |name: String| NewPrivateCluster {
        tenant_id: tenant.id.clone(),
        name,
        region: String::new(),
        description: String::new(),
        enrollment_expires_at: foghorn::registry::now_ms() + 86_400_000,
        cell_id: "cell".into(),
    };
    for i in 0..CLUSTERS {
        registry
            .create_private_cluster(&private(format!("lab {i}")))
            .await
            .expect("private cluster");
    }
    let assigned = Instant::now();
    let all = (CLUSTERS + 1) as f64;
    common::eventually(
        Duration::from_secs(120),
        "the running cell serves every cluster assigned to it",
        || async { gauge(&http, "foghorn_served_clusters").await == Some(all) },
    )
    .await;
    let picked_up = assigned.elapsed();
    // Allocations settle once the new clusters' first loops ran.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let serving = rss_kib(server.0.id());
    drop(server);

    let started = Instant::now();
    let (server, http, grpc) = serve(cell());
    let ready = started.elapsed();
    assert_eq!(
        gauge(&http, "foghorn_served_clusters").await,
        Some(all),
        "assigned clusters are served before the listeners open"
    );

    // A cluster created now: an edge enrolls with its token (retrying, as Helmsman does, while
    // the cell is picking the cluster up) and viewers naming its Foghorn reach that edge.
    let (stream, _) = registry
        .create_stream(&tenant.id, "main")
        .await
        .expect("stream");
    let created = Instant::now();
    let fresh = registry
        .create_private_cluster(&private("fresh".into()))
        .await
        .expect("private cluster");
    let token = fresh.enrollment_secret.clone();
    let grpc_url = grpc.clone();
    // The standard edge name (no base URL of its own).
    let mut register = common::register_with_token(&token);
    if let Some(foghorn::proto::edge_message::Payload::Register(r)) = &mut register.payload {
        r.public_base_url.clear();
    }
    let (edge, seed) = loop {
        let mut edge = common::EdgeConn::open(&grpc_url, register.clone()).await;
        match edge.recv().await {
            Ok(Some(foghorn::proto::ControlMessage {
                payload: Some(foghorn::proto::control_message::Payload::ConfigSeed(seed)),
            })) => break (edge, seed),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(seed.cluster_id, fresh.cluster.id);
    edge.send(common::stats_frame(Vec::new())).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let host = format!("foghorn.{}.example.net", fresh.cluster.id);
    let wanted = format!(
        "https://edge-{}.{}.example.net/",
        seed.node_id, fresh.cluster.id
    );
    common::eventually(
        Duration::from_secs(10),
        "the new edge is routable",
        || async {
            let res = client
                .get(format!("{http}/play/{}/hls/index.m3u8", stream.playback_id))
                .header("host", &host)
                .send()
                .await
                .expect("GET /play");
            res.headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .is_some_and(|l| l.starts_with(&wanted))
        },
    )
    .await;
    let routable = created.elapsed();
    println!(
        "cell of {CLUSTERS} assigned clusters: picked up in {picked_up:.2?}; resident {idle} KiB \
         idle (home only), {serving} KiB serving all, {:.1} KiB per served cluster; start to \
         ready {ready:.2?} (first start, home cluster only: {alone:.2?}); created -> first edge \
         routable {routable:.2?}",
        (serving.saturating_sub(idle)) as f64 / CLUSTERS as f64
    );
    drop(edge);
    drop(server);
}

/// `rediss://`: Foghorn talks TLS to Redis, verifying the server against the system's roots (here
/// `SSL_CERT_FILE`, the test's own CA); a server it cannot verify is not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_is_verified_and_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let (ca_pem, leaf_pem, key_pem) = common::ca_and_leaf("redis TLS test CA", &["localhost"]);
    std::fs::write(path("cert.pem"), leaf_pem).expect("write");
    std::fs::write(path("key.pem"), key_pem).expect("write");
    std::fs::write(path("ca.pem"), ca_pem).expect("write");

    let port = common::free_port();
    let redis_bin = std::env::var("FOGHORN_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
    let _redis = Running(
        Command::new(redis_bin)
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--tls-port")
            .arg(port.to_string())
            .arg("--tls-cert-file")
            .arg(path("cert.pem"))
            .arg("--tls-key-file")
            .arg(path("key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(path("ca.pem"))
            .args(["--tls-auth-clients", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server with TLS"),
    );
    let url = format!("rediss://localhost:{port}/");
    let redis_state = |http: String| async move {
        reqwest::get(format!("{http}/ready"))
            .await
            .expect("ready")
            .json::<serde_json::Value>()
            .await
            .expect("json")["redis"]
            .clone()
    };

    let data = tempfile::tempdir().expect("tempdir");
    let mut trusting = foghorn(data.path());
    trusting
        .env("FOGHORN_REDIS_URL", &url)
        .env("SSL_CERT_FILE", path("ca.pem"));
    let (_trusting, http, _) = serve(trusting);
    common::eventually(Duration::from_secs(15), "Redis over TLS in use", || {
        let http = http.clone();
        async move { redis_state(http).await == "ok" }
    })
    .await;

    // Without the CA, the certificate cannot be verified: Redis is never used.
    let other = tempfile::tempdir().expect("tempdir");
    let mut doubting = foghorn(other.path());
    doubting
        .env("FOGHORN_REDIS_URL", &url)
        .env("SSL_CERT_FILE", path("cert.pem"));
    let (_doubting, http, _) = serve(doubting);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_ne!(
            redis_state(http.clone()).await,
            "ok",
            "an unverified Redis was used"
        );
    }
}
