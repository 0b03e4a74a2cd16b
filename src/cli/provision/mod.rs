//! `frameworks edge provision`: the seven steps that take a Linux server with Docker to an
//! enrolled, HTTPS-serving edge (DESIGN.md §8). Each step prints one line per node, stops that
//! node's pipeline when it fails, and says what failed and how to fix it. Safe to re-run: an
//! installed edge keeps its node id, and unchanged files are left alone.

pub mod files;
pub mod manifest;
pub mod preflight;
pub mod ssh;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use self::files::{EdgeSettings, Registration, Stack};
use self::preflight::Facts;
use self::ssh::{quote, Ssh, Target};

/// The steps, in order.
pub const STEPS: [&str; 7] = [
    "Preflight",
    "Tune",
    "Register",
    "Cert stage",
    "Install",
    "Start",
    "Verify",
];

/// What every node of a run shares.
#[derive(Debug, Clone)]
pub struct Options {
    /// A Foghorn of the platform (gRPC URL).
    pub foghorn: String,
    /// The platform CA's PEM (else the public web's roots).
    pub ca_pem: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub control_dir: PathBuf,
    /// The install directory on the host.
    pub dir: String,
    pub stack: Stack,
    pub dry_run: bool,
    pub force_reenroll: bool,
    /// How long Verify waits for the stack to come up.
    pub verify_timeout: Duration,
}

/// One server to provision.
#[derive(Debug, Clone)]
pub struct Node {
    /// How its lines are prefixed.
    pub name: String,
    pub ssh: Target,
    pub enrollment_token: String,
    pub tune: bool,
    /// The cluster the token must belong to (manifest `cluster`).
    pub cluster: Option<String>,
    pub edge: EdgeSettings,
    /// The install directory, when not `Options::dir` (manifest `dir`).
    pub dir: Option<String>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ok(String),
    Skipped(String),
    Failed { what: String, fix: String },
}

/// One step's line: `[name] [3/7] Register ... ok 0.4 s (node 0a1b…)`.
#[derive(Debug, Clone)]
pub struct Event {
    pub node: String,
    pub step: usize,
    pub outcome: Outcome,
    pub took: Duration,
}

impl Event {
    pub fn line(&self) -> String {
        let head = format!(
            "[{}] [{}/7] {} ...",
            self.node,
            self.step + 1,
            STEPS[self.step]
        );
        let secs = self.took.as_secs_f64();
        match &self.outcome {
            Outcome::Ok(detail) if detail.is_empty() => format!("{head} ok {secs:.1} s"),
            Outcome::Ok(detail) => format!("{head} ok {secs:.1} s ({detail})"),
            Outcome::Skipped(why) => format!("{head} skipped ({why})"),
            Outcome::Failed { what, fix } => {
                format!("{head} FAILED after {secs:.1} s: {what}\n    fix: {fix}")
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        let (status, detail, fix) = match &self.outcome {
            Outcome::Ok(d) => ("ok", d.as_str(), None),
            Outcome::Skipped(d) => ("skipped", d.as_str(), None),
            Outcome::Failed { what, fix } => ("failed", what.as_str(), Some(fix.as_str())),
        };
        serde_json::json!({
            "node": self.node,
            "step": self.step + 1,
            "name": STEPS[self.step],
            "status": status,
            "detail": detail,
            "fix": fix,
            "seconds": self.took.as_secs_f64(),
        })
    }
}

/// Where a node's events go.
pub trait Report: Send + Sync {
    /// `node` begins step `step` (0-based).
    fn started(&self, _node: &str, _step: usize) {}
    /// A step ended.
    fn event(&self, event: &Event);
}

/// A step that failed: what and how to fix it.
struct Failure {
    what: String,
    fix: String,
}

impl Failure {
    fn new(what: impl Into<String>, fix: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

/// An error of the machinery (SSH, the network) as a failure with its own words.
fn failed(e: anyhow::Error, fix: &str) -> Failure {
    Failure::new(format!("{e:#}"), fix)
}

/// What a node's pipeline ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioned {
    pub node_id: String,
    pub edge_domain: String,
}

/// Runs the seven steps on `node`; `Err` names the step that failed (already reported).
pub async fn provision(
    node: &Node,
    opts: &Options,
    report: &dyn Report,
) -> Result<Provisioned, String> {
    let ssh = Ssh::new(
        node.ssh.clone(),
        opts.ssh_key.clone(),
        &opts.known_hosts,
        &opts.control_dir,
    );
    let result = Pipeline {
        node,
        opts,
        report,
        ssh: &ssh,
    }
    .run()
    .await;
    ssh.close().await;
    result
}

struct Pipeline<'a> {
    node: &'a Node,
    opts: &'a Options,
    report: &'a dyn Report,
    ssh: &'a Ssh,
}

impl Pipeline<'_> {
    /// Reports that step `step` begins; its start time.
    fn begin(&self, step: usize) -> Instant {
        self.report.started(&self.node.name, step);
        Instant::now()
    }

    /// The install directory on this node.
    fn dir(&self) -> &str {
        self.node.dir.as_deref().unwrap_or(&self.opts.dir)
    }

    /// Reports the step's outcome; `Err` (the step's name) when it failed.
    fn done(
        &self,
        step: usize,
        started: Instant,
        outcome: Result<Outcome, Failure>,
    ) -> Result<(), String> {
        let outcome = outcome.unwrap_or_else(|f| Outcome::Failed {
            what: f.what,
            fix: f.fix,
        });
        let failed = matches!(outcome, Outcome::Failed { .. });
        self.report.event(&Event {
            node: self.node.name.clone(),
            step,
            outcome,
            took: started.elapsed(),
        });
        if failed {
            Err(STEPS[step].to_string())
        } else {
            Ok(())
        }
    }

    async fn run(&self) -> Result<Provisioned, String> {
        let t = self.begin(0);
        let facts = self.preflight().await;
        let facts = match facts {
            Ok(facts) => {
                self.done(0, t, Ok(Outcome::Ok(facts.summary())))?;
                facts
            }
            Err(f) => return Err(self.done(0, t, Err(f)).err().unwrap_or_default()),
        };

        let t = self.begin(1);
        let tuned = if self.node.tune {
            self.tune().await
        } else {
            Ok(Outcome::Skipped("not asked for: --tune".into()))
        };
        self.done(1, t, tuned)?;

        let t = self.begin(2);
        // An installed edge keeps its identity: its node credential (with Helmsman) replaced
        // the token, which may be used up by now.
        let installed = match (&facts.enrolled, self.opts.force_reenroll) {
            (Some(_), false) => self.installed().await,
            _ => None,
        };
        let reused = installed.is_some();
        let (registered, token) = match installed {
            Some((reg, token)) => (Ok(reg), token),
            None => (
                self.register(&facts).await,
                self.node.enrollment_token.clone(),
            ),
        };
        let registered = registered.and_then(|reg| match &self.node.cluster {
            Some(cluster) if *cluster != reg.cluster_id => Err(Failure::new(
                format!(
                    "the token belongs to cluster {}, not {cluster}",
                    reg.cluster_id
                ),
                "use a token of that cluster, or fix `cluster` in the manifest",
            )),
            _ => Ok(reg),
        });
        let reg = match registered {
            Ok(reg) => {
                let detail = if !reused {
                    format!("node {} in {}", reg.node_id, reg.cluster_id)
                } else {
                    format!(
                        "already enrolled as node {} in {}; --force-reenroll starts over",
                        reg.node_id, reg.cluster_id
                    )
                };
                self.done(2, t, Ok(Outcome::Ok(detail)))?;
                reg
            }
            Err(f) => return Err(self.done(2, t, Err(f)).err().unwrap_or_default()),
        };
        let files = files::stack_files(&reg, &token, &self.opts.stack, &self.node.edge);
        let (certs, stack): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|f| f.path.starts_with("certs/"));

        let t = self.begin(3);
        let staged = if reg.key_pem.is_empty() {
            Err(Failure::new(
                "the platform gave no cluster certificate (only a Foghorn that serves the \
                 cluster hands it out, and only over TLS)",
                "point --foghorn at an https:// address of the platform",
            ))
        } else {
            self.write(&certs).await
        };
        self.done(3, t, staged)?;

        let t = self.begin(4);
        let installed = self.write(&stack).await;
        self.done(4, t, installed)?;

        let t = self.begin(5);
        let started = self.start().await;
        self.done(5, t, started)?;

        let t = self.begin(6);
        let verified = self.verify(&reg, &facts, &token).await;
        self.done(6, t, verified)?;
        Ok(Provisioned {
            node_id: reg.node_id,
            edge_domain: reg.edge_domain,
        })
    }

    async fn preflight(&self) -> Result<Facts, Failure> {
        let out = self
            .ssh
            .probe(preflight::PROBE, self.dir())
            .await
            .map_err(|e| failed(e, "make `ssh` to the host work from here first"))?;
        let facts = Facts::parse(&out.stdout).ok_or_else(|| {
            Failure::new(
                format!("the host check did not finish: {}", out.stderr.trim()),
                "the host needs a POSIX shell with coreutils; run again with a Linux server",
            )
        })?;
        let refusals = facts.check();
        if !refusals.is_empty() {
            let what: Vec<&str> = refusals.iter().map(|r| r.what.as_str()).collect();
            let fix: Vec<&str> = refusals.iter().map(|r| r.fix.as_str()).collect();
            return Err(Failure::new(what.join("; "), fix.join("; ")));
        }
        Ok(facts)
    }

    async fn tune(&self) -> Result<Outcome, Failure> {
        let profile = files::sysctl_profile();
        if self.opts.dry_run {
            return Ok(Outcome::Ok(format!(
                "dry run: would write {} and apply it with `sysctl -p`",
                files::SYSCTL_PATH
            )));
        }
        self.ssh
            .put(files::SYSCTL_PATH, profile.as_bytes(), 0o644)
            .await
            .map_err(|e| failed(e, "check that / is writable on the host"))?;
        let out = self
            .ssh
            .root("sysctl -e -p \"$1\" 2>&1", &[files::SYSCTL_PATH])
            .await
            .map_err(|e| failed(e, "run again"))?;
        let applied = out.stdout.lines().filter(|l| l.contains(" = ")).count();
        let refused: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| !l.contains(" = ") && !l.trim().is_empty())
            .collect();
        Ok(Outcome::Ok(if refused.is_empty() {
            format!("{applied} settings applied")
        } else {
            format!(
                "{applied} settings applied; not here: {}",
                refused.join("; ")
            )
        }))
    }

    /// The registration and token an installed edge's files hold; `None` when they cannot be
    /// read whole (the pipeline then registers again, keeping the node id).
    async fn installed(&self) -> Option<(Registration, String)> {
        let out = self.ssh.root(READ_INSTALLED, &[self.dir()]).await.ok()?;
        let mut sections = std::collections::HashMap::new();
        let mut current: Option<&str> = None;
        for line in out.stdout.split_inclusive('\n') {
            if let Some(name) = line.strip_prefix("=== ").map(str::trim) {
                current = Some(name);
                sections.insert(name, String::new());
            } else if let Some(name) = current {
                sections.entry(name).or_default().push_str(line);
            }
        }
        let env = sections.get(".edge.env")?;
        let get = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        let token = sections
            .get(".edge-enroll.env")?
            .trim()
            .strip_prefix("ENROLLMENT_TOKEN=")?
            .to_string();
        let section = |name: &str| sections.get(name).cloned().filter(|s| !s.is_empty());
        let reg = Registration {
            node_id: get("NODE_ID")?,
            cluster_id: get("CLUSTER_ID")?,
            edge_domain: get("EDGE_DOMAIN")?,
            pool_domain: get("POOL_DOMAIN")?,
            foghorn_grpc_addr: get("FOGHORN_GRPC_ADDR")?,
            balancer_base_url: get("BALANCER_BASE_URL")?,
            ca_pem: section("certs/ca.pem")?,
            cert_chain_pem: section("certs/cluster.crt")?,
            key_pem: section("certs/cluster.key")?,
        };
        Some((reg, token))
    }

    /// `PreRegisterEdge` on the platform, then on the cell serving the token's cluster when the
    /// platform's Foghorn is not that one (only the serving cell hands out the certificate).
    async fn register(&self, facts: &Facts) -> Result<Registration, Failure> {
        let external_ip = facts.external_ip.clone().ok_or_else(|| {
            Failure::new(
                "could not tell the host's address from the SSH connection",
                "connect to the host's public address with --ssh",
            )
        })?;
        let preferred = if self.opts.force_reenroll {
            String::new()
        } else {
            facts.enrolled.clone().unwrap_or_default()
        };
        let ask = PreRegister {
            token: self.node.enrollment_token.clone(),
            external_ip,
            preferred,
            fingerprint: fingerprint(facts),
        };
        let first = ask
            .call(&self.opts.foghorn, self.opts.ca_pem.clone())
            .await?;
        if first.tls.is_some() || first.foghorn_grpc_addr.is_empty() {
            return Ok(registration(first));
        }
        // The serving cell, trusted through the CA the platform vouched for.
        let url = cell_url(&first.foghorn_grpc_addr);
        if same_endpoint(&url, &self.opts.foghorn) {
            return Ok(registration(first));
        }
        let ca = (!first.ca_bundle_pem.is_empty())
            .then(|| first.ca_bundle_pem.clone())
            .or_else(|| self.opts.ca_pem.clone());
        let there = ask.call(&url, ca).await?;
        Ok(registration(there))
    }

    /// Writes `files` under the install directory; says how many changed.
    async fn write(&self, files: &[files::File]) -> Result<Outcome, Failure> {
        if self.opts.dry_run {
            let listed: Vec<String> = files
                .iter()
                .map(|f| {
                    let what = if f.secret {
                        format!("secret, {} bytes", f.contents.len())
                    } else {
                        format!("{} bytes", f.contents.len())
                    };
                    format!("{}/{} ({:o}, {what})", self.dir(), f.path, f.mode)
                })
                .collect();
            return Ok(Outcome::Ok(format!(
                "dry run: would write {}",
                listed.join(", ")
            )));
        }
        let mut changed = 0;
        for file in files {
            let path = format!("{}/{}", self.dir(), file.path);
            if self
                .ssh
                .put(&path, &file.contents, file.mode)
                .await
                .map_err(|e| failed(e, "check that the install directory is writable (--dir)"))?
            {
                changed += 1;
            }
        }
        Ok(Outcome::Ok(format!(
            "{changed} of {} files changed in {}",
            files.len(),
            self.dir()
        )))
    }

    async fn start(&self) -> Result<Outcome, Failure> {
        let command = format!(
            "cd {} && docker compose -p {} -f docker-compose.edge.yml up -d",
            quote(self.dir()),
            files::PROJECT
        );
        if self.opts.dry_run {
            return Ok(Outcome::Ok(format!("dry run: would run `{command}`")));
        }
        let out = self
            .ssh
            .root(&format!("{command} 2>&1"), &[])
            .await
            .map_err(|e| failed(e, "run again"))?;
        if !out.success() {
            return Err(Failure::new(
                format!("`docker compose up` failed: {}", last_lines(&out.stdout, 5)),
                "read the message above; `docker compose logs` in the install directory tells more",
            ));
        }
        Ok(Outcome::Ok(String::new()))
    }

    /// `token` is the one that provisioned the node (on the host, or given now).
    async fn verify(
        &self,
        reg: &Registration,
        facts: &Facts,
        token: &str,
    ) -> Result<Outcome, Failure> {
        if self.opts.dry_run {
            return Ok(Outcome::Skipped("dry run".into()));
        }
        let deadline = Instant::now() + self.opts.verify_timeout;
        // Containers up (and healthy where they say).
        let containers = loop {
            let out = self
                .ssh
                .root(CONTAINERS, &[files::PROJECT])
                .await
                .map_err(|e| failed(e, "run again"))?;
            let states: Vec<(String, String)> = out
                .stdout
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect();
            let ready = states.len() == 3
                && states.iter().all(|(_, s)| {
                    s.starts_with("Up") && !s.contains("unhealthy") && !s.contains("starting")
                });
            if ready {
                break states.len();
            }
            if Instant::now() >= deadline {
                let listed: Vec<String> = states.iter().map(|(n, s)| format!("{n}: {s}")).collect();
                return Err(Failure::new(
                    format!(
                        "the edge's containers are not all up: {}",
                        if listed.is_empty() {
                            "none running".into()
                        } else {
                            listed.join(", ")
                        }
                    ),
                    format!(
                        "see `docker compose -p {} logs` on the host",
                        files::PROJECT
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // HTTPS on the host's 443 with the edge's name, checked against the cluster CA.
        let ip = facts.external_ip.clone().unwrap_or_default();
        loop {
            match crate::cli::https_check(&ip, 443, &reg.edge_domain, &reg.ca_pem).await {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Failure::new(
                        format!("HTTPS on {ip}:443 for {}: {e:#}", reg.edge_domain),
                        "check that port 443 is open and the edge's Caddy logs",
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        // Routable in Foghorn: the edge's Helmsman enrolled and reports.
        loop {
            match self.status(reg, token).await {
                Ok(status) if status.routable => break,
                Ok(status) if Instant::now() >= deadline => {
                    return Err(Failure::new(
                        if status.connected {
                            format!(
                                "node {} is connected to Foghorn but not routable",
                                reg.node_id
                            )
                        } else {
                            format!("node {} never connected to Foghorn", reg.node_id)
                        },
                        format!(
                            "see `docker compose -p {} logs helmsman` on the host",
                            files::PROJECT
                        ),
                    ))
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(f) => return Err(f),
            }
        }
        Ok(Outcome::Ok(format!(
            "{containers} containers up, HTTPS answers for {}, routable in Foghorn",
            reg.edge_domain
        )))
    }

    /// `EdgeStatus` of the node: from `--foghorn`, else from the cell serving its cluster.
    async fn status(
        &self,
        reg: &Registration,
        token: &str,
    ) -> Result<crate::proto::EdgeStatusResponse, Failure> {
        let ask = crate::proto::EdgeStatusRequest {
            enrollment_token: token.to_string(),
            node_id: reg.node_id.clone(),
        };
        let first = status_call(&self.opts.foghorn, self.opts.ca_pem.clone(), None, &ask).await;
        match first {
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                let name = reg
                    .balancer_base_url
                    .trim_start_matches("https://")
                    .to_string();
                let url = cell_url(&reg.foghorn_grpc_addr);
                status_call(&url, Some(reg.ca_pem.clone()), Some(name), &ask).await
            }
            other => other,
        }
        .map_err(|status| {
            Failure::new(
                format!(
                    "Foghorn could not say whether the node is routable: {}",
                    status.message()
                ),
                "run again; if it persists, tell the platform's operator",
            )
        })
    }
}

/// What identifies the host to `PreRegisterEdge` (asking again from the same host answers the
/// same reservation): its machine id with its address, hashed, so clones of one image (which
/// share a machine id) on different addresses are different hosts.
fn fingerprint(facts: &Facts) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(facts.machine_id.as_deref().unwrap_or_default().as_bytes());
    hash.update(b"\n");
    hash.update(facts.external_ip.as_deref().unwrap_or_default().as_bytes());
    hex::encode(hash.finalize())
}

/// Prints the installed edge's files of the install directory `$1`, each after `=== name`.
const READ_INSTALLED: &str = r#"
for f in .edge.env .edge-enroll.env certs/ca.pem certs/cluster.crt certs/cluster.key; do
  printf '=== %s\n' "$f"; cat "$1/$f" 2>/dev/null
done
"#;

/// Prints `name status` for each container of the project `$1`.
const CONTAINERS: &str = r#"docker ps -a --filter "label=com.docker.compose.project=$1" --format '{{.Label "com.docker.compose.service"}} {{.Status}}'"#;

/// The last `n` lines of `text`, on one line.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A serving cell's address as a URL (`host:port` as published → `https://host:port`).
fn cell_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("https://{addr}")
    }
}

fn same_endpoint(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// One `EdgeStatus` question to the Foghorn at `url`.
async fn status_call(
    url: &str,
    ca_pem: Option<String>,
    tls_domain: Option<String>,
    ask: &crate::proto::EdgeStatusRequest,
) -> Result<crate::proto::EdgeStatusResponse, tonic::Status> {
    let endpoint = crate::net::grpc_endpoint(url, ca_pem, tls_domain)
        .map_err(|e| tonic::Status::invalid_argument(format!("{e:#}")))?;
    let channel = endpoint.connect().await.map_err(|e| {
        tonic::Status::unavailable(format!(
            "cannot reach Foghorn at {url}: {}",
            crate::net::error_chain(&e)
        ))
    })?;
    crate::proto::edge_provisioning_client::EdgeProvisioningClient::new(channel)
        .edge_status(ask.clone())
        .await
        .map(tonic::Response::into_inner)
}

/// One `PreRegisterEdge` question.
struct PreRegister {
    token: String,
    external_ip: String,
    preferred: String,
    fingerprint: String,
}

impl PreRegister {
    async fn call(
        &self,
        url: &str,
        ca_pem: Option<String>,
    ) -> Result<crate::proto::PreRegisterEdgeResponse, Failure> {
        let endpoint = crate::net::grpc_endpoint(url, ca_pem, None)
            .map_err(|e| failed(e, "give --foghorn as https://host:port"))?;
        let channel = endpoint.connect().await.map_err(|e| {
            Failure::new(
                format!(
                    "cannot reach Foghorn at {url}: {}",
                    crate::net::error_chain(&e)
                ),
                "check --foghorn, and --ca when the platform uses its own CA",
            )
        })?;
        let mut client =
            crate::proto::edge_provisioning_client::EdgeProvisioningClient::new(channel);
        let answer = client
            .pre_register_edge(crate::proto::PreRegisterEdgeRequest {
                enrollment_token: self.token.clone(),
                external_ip: self.external_ip.clone(),
                preferred_node_id: self.preferred.clone(),
                host_fingerprint: self.fingerprint.clone(),
            })
            .await
            .map_err(|status| {
                let fix = match status.code() {
                    tonic::Code::Unauthenticated => "the token is unknown or expired: ask the cluster's owner for a new one",
                    tonic::Code::PermissionDenied => "the token does not allow this host (its address, or its use count): ask for a token that does",
                    tonic::Code::AlreadyExists => "the node id is taken: run again with --force-reenroll",
                    _ => "run again; if it persists, tell the platform's operator",
                };
                Failure::new(format!("Foghorn refused the registration: {}", status.message()), fix)
            })?;
        Ok(answer.into_inner())
    }
}

fn registration(r: crate::proto::PreRegisterEdgeResponse) -> Registration {
    let (cert_chain_pem, key_pem) = r
        .tls
        .map(|t| (t.cert_chain_pem, t.private_key_pem))
        .unwrap_or_default();
    Registration {
        node_id: r.node_id,
        cluster_id: r.cluster_id,
        edge_domain: r.edge_domain,
        pool_domain: r.pool_domain,
        foghorn_grpc_addr: r.foghorn_grpc_addr,
        balancer_base_url: r.balancer_base_url,
        ca_pem: r.ca_bundle_pem,
        cert_chain_pem,
        key_pem,
    }
}
