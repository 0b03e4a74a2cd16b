//! The `frameworks` operator CLI.
//!
//! - `frameworks edge provision` runs the seven provisioning steps of DESIGN.md §8 on one server
//!   (`--ssh`) or many (`--manifest`), see [`provision`].
//! - `frameworks config set|get|path` keeps the platform address (and CA, SSH key) in the CLI's
//!   config file, so they need not be given every time.

pub mod provision;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use self::provision::files::{EdgeSettings, Stack, DEFAULT_DIR};
use self::provision::ssh::Target;
use self::provision::{Event, Node, Options, Report};

#[derive(Parser, Debug)]
#[command(name = "frameworks", version, about = "FrameWorks operator CLI")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Self-hosted edge nodes.
    Edge {
        #[command(subcommand)]
        command: EdgeCommand,
    },
    /// The CLI's settings file (platform address, CA, SSH key).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Set a key: foghorn (the platform's Foghorn, https://host:port), ca (a PEM file),
    /// ssh-key (a private key file).
    Set { key: String, value: String },
    /// Print a key's value.
    Get { key: String },
    /// Print where the settings file is.
    Path,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Provision edge nodes over SSH: preflight, tune, register, cert stage, install, start, verify.
    Provision(ProvisionArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ProvisionArgs {
    /// The platform's Foghorn (gRPC), e.g. https://foghorn.example.net:18019; any Foghorn of the
    /// platform will do. Else FRAMEWORKS_FOGHORN, else `frameworks config set foghorn URL`.
    #[arg(long, env = "FRAMEWORKS_FOGHORN")]
    pub foghorn: Option<String>,
    /// PEM file of the platform's CA (else `config set ca`, else the public web's roots).
    #[arg(long, env = "FRAMEWORKS_CA")]
    pub ca: Option<PathBuf>,
    /// Enrollment token (`enroll_...`) from the cluster's owner.
    #[arg(long, env = "FRAMEWORKS_ENROLLMENT_TOKEN", hide_env_values = true)]
    pub enrollment_token: Option<String>,
    /// SSH destination: user@host[:port]; a user other than root needs passwordless sudo.
    #[arg(long, conflicts_with = "manifest")]
    pub ssh: Option<String>,
    /// SSH private key (else `config set ssh-key`, else ssh's defaults).
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// The node's name in progress lines (default: the host).
    #[arg(long, conflicts_with = "manifest")]
    pub name: Option<String>,
    /// Write and apply the media sysctl profile (/etc/sysctl.d/90-frameworks-edge.conf).
    #[arg(long)]
    pub tune: bool,
    /// Connect and check, print every file and command, change nothing on the host.
    #[arg(long)]
    pub dry_run: bool,
    /// Forget an installed edge's identity and enroll as a new node.
    #[arg(long)]
    pub force_reenroll: bool,
    /// YAML manifest of many edges (see the README).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Edges provisioned at once with --manifest.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// One JSON object per step and a summary, instead of lines for people.
    #[arg(long)]
    pub json: bool,
    /// Install directory on the host.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: String,
    /// Capabilities the edge announces (edge, ingest, storage, processing).
    #[arg(long, value_delimiter = ',', default_value = "edge,ingest")]
    pub capabilities: Vec<String>,
    /// The cluster the token must belong to.
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long, default_value_t = Stack::default().mistserver_image)]
    pub mistserver_image: String,
    #[arg(long, default_value_t = Stack::default().helmsman_image)]
    pub helmsman_image: String,
    #[arg(long, default_value_t = Stack::default().caddy_image)]
    pub caddy_image: String,
    /// Open files per container (hosts with a lower hard limit need less).
    #[arg(long, default_value_t = Stack::default().nofile)]
    pub nofile: u64,
    /// How long Verify waits for the containers and HTTPS.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub verify_timeout: Duration,
}

/// The settings file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foghorn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none", rename = "ssh-key")]
    pub ssh_key: Option<PathBuf>,
}

/// Where the CLI keeps its files: `FRAMEWORKS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/frameworks`,
/// else `~/.config/frameworks`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FRAMEWORKS_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("frameworks"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: set FRAMEWORKS_CONFIG_DIR")?;
    Ok(PathBuf::from(home).join(".config/frameworks"))
}

impl Settings {
    fn path() -> anyhow::Result<PathBuf> {
        Ok(config_dir()?.join("config.toml"))
    }

    /// The settings file, empty when there is none.
    pub fn load() -> anyhow::Result<Settings> {
        let path = Settings::path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Settings::path()?;
        private_dir(path.parent().context("config dir")?)?;
        std::fs::write(&path, toml::to_string(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// Creates `dir` (mode 0700 when new).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config { command } => config(command).map(|()| true),
        Command::Edge {
            command: EdgeCommand::Provision(args),
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(provision_command(args))),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("frameworks: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn config(command: ConfigCommand) -> anyhow::Result<()> {
    let mut settings = Settings::load()?;
    match command {
        ConfigCommand::Path => println!("{}", Settings::path()?.display()),
        ConfigCommand::Get { key } => {
            let value = match key.as_str() {
                "foghorn" => settings.foghorn.clone(),
                "ca" => settings.ca.as_ref().map(|p| p.display().to_string()),
                "ssh-key" => settings.ssh_key.as_ref().map(|p| p.display().to_string()),
                other => anyhow::bail!("unknown key {other:?}: foghorn, ca or ssh-key"),
            };
            println!("{}", value.unwrap_or_default());
        }
        ConfigCommand::Set { key, value } => {
            match key.as_str() {
                "foghorn" => {
                    anyhow::ensure!(
                        value.starts_with("https://") || value.starts_with("http://"),
                        "foghorn is a URL like https://foghorn.example.net:18019"
                    );
                    settings.foghorn = Some(value);
                }
                "ca" | "ssh-key" => {
                    let path = std::fs::canonicalize(&value)
                        .with_context(|| format!("{key}: no file {value}"))?;
                    if key == "ca" {
                        settings.ca = Some(path);
                    } else {
                        settings.ssh_key = Some(path);
                    }
                }
                other => anyhow::bail!("unknown key {other:?}: foghorn, ca or ssh-key"),
            }
            let path = settings.save()?;
            eprintln!("{key} saved in {}", path.display());
        }
    }
    Ok(())
}

/// Prints events as they come: lines for people, or JSON objects; on a terminal, one live line
/// per node that follows its steps, and every step's line once all are done.
struct Printer {
    json: bool,
    live: Option<std::sync::Mutex<Live>>,
}

impl Printer {
    fn new(json: bool) -> Printer {
        use std::io::IsTerminal as _;
        let live = (!json && std::io::stdout().is_terminal())
            .then(|| std::sync::Mutex::new(Live::default()));
        Printer { json, live }
    }

    /// With the live display: every step's line, now that the nodes are done.
    fn finish(&self) {
        if let Some(live) = &self.live {
            let live = live.lock().unwrap_or_else(|e| e.into_inner());
            for line in &live.log {
                println!("{line}");
            }
        }
    }
}

impl Report for Printer {
    fn started(&self, node: &str, step: usize) {
        if let Some(live) = &self.live {
            let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
            let text = format!("[{node}] [{}/7] {} ...", step + 1, provision::STEPS[step]);
            print!("{}", live.set(node, text));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
    }

    fn event(&self, event: &Event) {
        if self.json {
            println!("{}", event.json());
        } else if let Some(live) = &self.live {
            let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
            let line = event.line();
            let first = line.lines().next().unwrap_or_default().to_string();
            live.log.push(line);
            print!("{}", live.set(&event.node, first));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        } else {
            println!("{}", event.line());
        }
    }
}

/// The live display: one row per node, redrawn in place.
#[derive(Debug, Default)]
struct Live {
    rows: Vec<(String, String)>,
    /// Rows on the screen now.
    drawn: usize,
    /// Every step's full line, printed at the end.
    log: Vec<String>,
}

impl Live {
    /// Sets `node`'s row; what to print to redraw the rows.
    fn set(&mut self, node: &str, text: String) -> String {
        match self.rows.iter_mut().find(|(n, _)| n == node) {
            Some(row) => row.1 = text,
            None => self.rows.push((node.to_string(), text)),
        }
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for (_, text) in &self.rows {
            out.push_str("\r\x1b[2K");
            out.push_str(text);
            out.push('\n');
        }
        self.drawn = self.rows.len();
        out
    }
}

/// `frameworks edge provision`: true when every node succeeded.
async fn provision_command(args: ProvisionArgs) -> anyhow::Result<bool> {
    let settings = Settings::load()?;
    let foghorn = args
        .foghorn
        .clone()
        .or(settings.foghorn.clone())
        .context("no platform address: give --foghorn https://HOST:PORT (the private-cluster answer names it), set FRAMEWORKS_FOGHORN, or `frameworks config set foghorn URL`")?;
    let ca_pem = match args.ca.clone().or(settings.ca.clone()) {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the CA {}", path.display()))?,
        ),
        None => None,
    };
    let dir = config_dir()?;
    private_dir(&dir)?;
    // The master connections' sockets: a directory of this run's own.
    let control_dir = std::env::temp_dir().join(format!("frameworks-ssh-{}", std::process::id()));
    private_dir(&control_dir)?;
    let opts = Options {
        foghorn,
        ca_pem,
        ssh_key: None,
        known_hosts: dir.join("known_hosts"),
        control_dir: control_dir.clone(),
        dir: args.dir.clone(),
        stack: Stack {
            mistserver_image: args.mistserver_image.clone(),
            helmsman_image: args.helmsman_image.clone(),
            caddy_image: args.caddy_image.clone(),
            nofile: args.nofile,
        },
        dry_run: args.dry_run,
        force_reenroll: args.force_reenroll,
        verify_timeout: args.verify_timeout,
    };
    let default_key = args.ssh_key.clone().or(settings.ssh_key.clone());
    let nodes = nodes(&args, default_key)?;
    let printer = Arc::new(Printer::new(args.json));
    let total = nodes.len();
    let opts = Arc::new(opts);
    let runs = nodes.into_iter().map(|(node, key)| {
        let mut opts = Options::clone(&opts);
        opts.ssh_key = key;
        let printer = printer.clone();
        async move {
            let result = provision::provision(&node, &opts, printer.as_ref()).await;
            (node.name, result)
        }
    });
    use futures_util::StreamExt as _;
    let results: Vec<_> = futures_util::stream::iter(runs)
        .buffer_unordered(usize::from(args.parallel))
        .collect()
        .await;
    let _ = std::fs::remove_dir_all(&control_dir);
    printer.finish();
    let succeeded = results.iter().filter(|(_, r)| r.is_ok()).count();
    if args.json {
        let nodes: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(done) => serde_json::json!({"node": name, "ok": true, "node_id": done.node_id, "edge_domain": done.edge_domain}),
                Err(step) => serde_json::json!({"node": name, "ok": false, "failed_step": step}),
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"summary": {"succeeded": succeeded, "total": total, "dry_run": args.dry_run}, "nodes": nodes})
        );
    } else {
        for (name, r) in &results {
            if let Ok(done) = r {
                println!("[{name}] edge {} is {}", done.node_id, done.edge_domain);
            }
        }
        println!("Succeeded {succeeded}/{total}");
    }
    Ok(succeeded == total)
}

/// The nodes of the run, each with its SSH key.
fn nodes(
    args: &ProvisionArgs,
    default_key: Option<PathBuf>,
) -> anyhow::Result<Vec<(Node, Option<PathBuf>)>> {
    if let Some(path) = &args.manifest {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the manifest {}", path.display()))?;
        let parsed = provision::manifest::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(parsed
            .into_iter()
            .map(|n| {
                let key = n.ssh_key.clone().or(default_key.clone());
                let node = Node {
                    name: n.name,
                    ssh: n.ssh,
                    enrollment_token: n.enrollment_token,
                    tune: n.tune || args.tune,
                    cluster: n.cluster.or(args.cluster.clone()),
                    edge: EdgeSettings {
                        capabilities: n.capabilities,
                        labels: n.labels,
                    },
                    dir: n.dir,
                };
                (node, key)
            })
            .collect());
    }
    let ssh: Target = args
        .ssh
        .as_deref()
        .context("give --ssh user@host (or --manifest FILE)")?
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--ssh: {e}"))?;
    let token = args
        .enrollment_token
        .clone()
        .context("give --enrollment-token enroll_... (from the cluster's owner)")?;
    let name = args.name.clone().unwrap_or_else(|| ssh.host.clone());
    Ok(vec![(
        Node {
            name,
            ssh,
            enrollment_token: token,
            tune: args.tune,
            cluster: args.cluster.clone(),
            edge: EdgeSettings {
                capabilities: args.capabilities.clone(),
                labels: Default::default(),
            },
            dir: None,
        },
        default_key,
    )])
}

/// A TLS handshake with `ip:port` naming `sni`, checked against `ca_pem`.
pub async fn https_check(ip: &str, port: u16, sni: &str, ca_pem: &str) -> anyhow::Result<()> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the cluster CA")?)?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "the platform gave no CA to check against"
    );
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let addr: std::net::IpAddr = ip.parse().context("the host's address")?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((addr, port)),
    )
    .await
    .context("connecting timed out")??;
    let name = ServerName::try_from(sni.to_string()).context("the edge's name")?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .context("the TLS handshake timed out")??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_display_redraws_one_row_per_node_in_place() {
        let mut live = Live::default();
        assert_eq!(
            live.set("a", "[a] [1/7] Preflight ...".into()),
            "\r\x1b[2K[a] [1/7] Preflight ...\n"
        );
        assert_eq!(
            live.set("b", "[b] [1/7] Preflight ...".into()),
            "\x1b[1A\r\x1b[2K[a] [1/7] Preflight ...\n\r\x1b[2K[b] [1/7] Preflight ...\n"
        );
        let redraw = live.set("a", "[a] [2/7] Tune ...".into());
        assert!(redraw.starts_with("\x1b[2A"), "{redraw:?}");
        assert!(
            redraw.contains("[a] [2/7] Tune ...\n\r\x1b[2K[b] [1/7]"),
            "{redraw:?}"
        );
    }
}
