//! What steps 2, 4 and 5 write on the host: the sysctl profile, the certificate files, the
//! compose file, the environment files and the Caddyfile. Pure functions of the registration and
//! the options, so a re-run writes the same bytes (and the step finds nothing to change).

use std::fmt::Write as _;

/// Where the edge stack lives on the host unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "/opt/frameworks/edge";
/// The compose project of the edge stack.
pub const PROJECT: &str = "frameworks-edge";
/// Where the tuning profile goes.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/90-frameworks-edge.conf";

/// The images and limits of the stack (flags and manifest keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub mistserver_image: String,
    pub helmsman_image: String,
    pub caddy_image: String,
    /// Open files per container (`ulimits.nofile`); hosts with a lower hard limit need less.
    pub nofile: u64,
}

impl Default for Stack {
    fn default() -> Stack {
        Stack {
            mistserver_image: "ddvtech/mistserver:latest".into(),
            helmsman_image: "frameworks/helmsman:latest".into(),
            caddy_image: "caddy:2".into(),
            nofile: 1_048_576,
        }
    }
}

/// What `PreRegisterEdge` answered, as the files need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub node_id: String,
    pub cluster_id: String,
    pub edge_domain: String,
    pub pool_domain: String,
    pub foghorn_grpc_addr: String,
    pub balancer_base_url: String,
    pub ca_pem: String,
    /// The cluster wildcard chain and key (empty when the platform has none to give).
    pub cert_chain_pem: String,
    pub key_pem: String,
}

/// What the operator says of the edge itself (flags and manifest keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// `edge`, `ingest`, `storage`, `processing`.
    pub capabilities: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Default for EdgeSettings {
    fn default() -> EdgeSettings {
        EdgeSettings {
            capabilities: vec!["edge".into(), "ingest".into()],
            labels: Default::default(),
        }
    }
}

/// One file to put on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the install directory, or absolute.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// Shown by `--dry-run` as `(secret, N bytes)` instead of its contents.
    pub secret: bool,
}

/// The sysctl profile for media edges: deep accept queues, large socket buffers, fair queueing
/// with BBR, a low unsent watermark so players get fresh segments, and room for many files.
pub fn sysctl_profile() -> String {
    let settings: &[(&str, &str)] = &[
        ("net.core.somaxconn", "8192"),
        ("net.core.netdev_max_backlog", "16384"),
        ("net.ipv4.tcp_max_syn_backlog", "8192"),
        ("net.core.rmem_max", "16777216"),
        ("net.core.wmem_max", "16777216"),
        ("net.ipv4.tcp_rmem", "4096 131072 16777216"),
        ("net.ipv4.tcp_wmem", "4096 65536 16777216"),
        ("net.core.default_qdisc", "fq"),
        ("net.ipv4.tcp_congestion_control", "bbr"),
        ("net.ipv4.tcp_notsent_lowat", "131072"),
        ("net.ipv4.tcp_slow_start_after_idle", "0"),
        ("net.ipv4.ip_local_port_range", "10240 65535"),
        ("fs.file-max", "2097152"),
        ("fs.nr_open", "2097152"),
    ];
    let mut out =
        String::from("# Media edge tuning, written by `frameworks edge provision --tune`.\n");
    for (key, value) in settings {
        let _ = writeln!(out, "{key} = {value}");
    }
    out
}

/// The files of the edge stack, relative to the install directory.
pub fn stack_files(
    reg: &Registration,
    enrollment_token: &str,
    stack: &Stack,
    edge: &EdgeSettings,
) -> Vec<File> {
    let plain = |path: &str, contents: String| File {
        path: path.into(),
        contents: contents.into_bytes(),
        mode: 0o644,
        secret: false,
    };
    let secret = |path: &str, contents: String| File {
        path: path.into(),
        contents: contents.into_bytes(),
        mode: 0o600,
        secret: true,
    };
    let mut files = vec![
        plain("certs/ca.pem", reg.ca_pem.clone()),
        plain("docker-compose.edge.yml", compose(stack)),
        plain(".edge.env", edge_env(reg, edge)),
        secret(
            ".edge-enroll.env",
            format!("ENROLLMENT_TOKEN={enrollment_token}\n"),
        ),
        plain("Caddyfile", caddyfile(reg)),
    ];
    if !reg.key_pem.is_empty() {
        files.insert(1, plain("certs/cluster.crt", reg.cert_chain_pem.clone()));
        files.insert(2, secret("certs/cluster.key", reg.key_pem.clone()));
    }
    files
}

/// The identity and addresses Helmsman starts from (not secret: no token, no key).
fn edge_env(reg: &Registration, edge: &EdgeSettings) -> String {
    let labels: Vec<String> = edge
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "# Written by `frameworks edge provision`; this host's identity in the cluster.\n\
         NODE_ID={}\nCLUSTER_ID={}\nEDGE_DOMAIN={}\nPOOL_DOMAIN={}\nFOGHORN_GRPC_ADDR={}\n\
         BALANCER_BASE_URL={}\nFOGHORN_CA_FILE=/etc/frameworks/certs/ca.pem\n\
         TLS_CERT_FILE=/etc/frameworks/certs/cluster.crt\nTLS_KEY_FILE=/etc/frameworks/certs/cluster.key\n\
         ENROLLMENT_FILE=/etc/frameworks/enroll.env\nSTATE_DIR=/var/lib/helmsman\n\
         EDGE_CAPABILITIES={}\nEDGE_LABELS={}\n",
        reg.node_id,
        reg.cluster_id,
        reg.edge_domain,
        reg.pool_domain,
        reg.foghorn_grpc_addr,
        reg.balancer_base_url,
        edge.capabilities.join(","),
        labels.join(","),
    )
}

/// MistServer, Helmsman and Caddy on the host's network (MistServer's ports stay on 127.0.0.1
/// behind Caddy). The enrollment token is a mounted file, not an `env_file`, so a new token does
/// not recreate the containers. Keys both Compose v1 and v2 read (no `version`, no `name`).
fn compose(stack: &Stack) -> String {
    let nofile = stack.nofile;
    format!(
        "# Written by `frameworks edge provision`; re-running it rewrites this file.\n\
services:\n\
\x20 mistserver:\n\
\x20   image: {mist}\n\
\x20   restart: unless-stopped\n\
\x20   network_mode: host\n\
\x20   ulimits:\n\
\x20     nofile: {{soft: {nofile}, hard: {nofile}}}\n\
\x20   volumes:\n\
\x20     - ./mist:/config\n\
\x20 helmsman:\n\
\x20   image: {helmsman}\n\
\x20   restart: unless-stopped\n\
\x20   network_mode: host\n\
\x20   env_file: [.edge.env]\n\
\x20   volumes:\n\
\x20     - ./.edge-enroll.env:/etc/frameworks/enroll.env:ro\n\
\x20     - ./certs:/etc/frameworks/certs\n\
\x20     - ./helmsman:/var/lib/helmsman\n\
\x20   depends_on: [mistserver]\n\
\x20 caddy:\n\
\x20   image: {caddy}\n\
\x20   restart: unless-stopped\n\
\x20   network_mode: host\n\
\x20   ulimits:\n\
\x20     nofile: {{soft: {nofile}, hard: {nofile}}}\n\
\x20   volumes:\n\
\x20     - ./Caddyfile:/etc/caddy/Caddyfile:ro\n\
\x20     - ./certs:/etc/frameworks/certs:ro\n\
\x20     - ./caddy:/data\n\
\x20   depends_on: [mistserver]\n",
        mist = stack.mistserver_image,
        helmsman = stack.helmsman_image,
        caddy = stack.caddy_image,
    )
}

/// HTTPS for the edge's own name and the cluster's pools with the cluster certificate, HTTP
/// redirected, everything proxied to MistServer on 127.0.0.1:8080.
fn caddyfile(reg: &Registration) -> String {
    let zone = reg
        .pool_domain
        .split_once('.')
        .map_or(reg.pool_domain.as_str(), |(_, zone)| zone);
    format!(
        "# Written by `frameworks edge provision`; Helmsman reloads Caddy when the certificate renews.\n\
{{\n\
\x20 auto_https off\n\
}}\n\
\n\
http:// {{\n\
\x20 redir https://{{host}}{{uri}} permanent\n\
}}\n\
\n\
https://{edge}, https://{pool}, https://edge-ingest.{zone} {{\n\
\x20 tls /etc/frameworks/certs/cluster.crt /etc/frameworks/certs/cluster.key\n\
\x20 reverse_proxy 127.0.0.1:8080\n\
}}\n",
        edge = reg.edge_domain,
        pool = reg.pool_domain,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            node_id: "0a1b2c3d4e5f".into(),
            cluster_id: "home-lab-1a2b3c".into(),
            edge_domain: "edge-0a1b2c3d4e5f.home-lab-1a2b3c.example.net".into(),
            pool_domain: "edge.home-lab-1a2b3c.example.net".into(),
            foghorn_grpc_addr: "https://foghorn.eu.example.net:18019".into(),
            balancer_base_url: "https://foghorn.home-lab-1a2b3c.example.net".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            cert_chain_pem: "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn secrets_are_owner_only_and_the_rest_is_readable() {
        let files = stack_files(
            &registration(),
            "enroll_abc",
            &Stack::default(),
            &EdgeSettings::default(),
        );
        let modes: Vec<(&str, u32, bool)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.mode, f.secret))
            .collect();
        assert_eq!(
            modes,
            [
                ("certs/ca.pem", 0o644, false),
                ("certs/cluster.crt", 0o644, false),
                ("certs/cluster.key", 0o600, true),
                ("docker-compose.edge.yml", 0o644, false),
                (".edge.env", 0o644, false),
                (".edge-enroll.env", 0o600, true),
                ("Caddyfile", 0o644, false),
            ]
        );
        let text = |path: &str| {
            String::from_utf8(
                files
                    .iter()
                    .find(|f| f.path == path)
                    .expect(path)
                    .contents
                    .clone(),
            )
            .expect("utf8")
        };
        assert_eq!(text(".edge-enroll.env"), "ENROLLMENT_TOKEN=enroll_abc\n");
        for public in [".edge.env", "docker-compose.edge.yml", "Caddyfile"] {
            assert!(!text(public).contains("enroll_abc"), "{public}");
            assert!(!text(public).contains("PRIVATE KEY"), "{public}");
        }
        assert!(text(".edge.env").contains("NODE_ID=0a1b2c3d4e5f\n"));
        assert!(text(".edge.env").contains("EDGE_CAPABILITIES=edge,ingest\n"));
        // Without a wildcard from the platform, no certificate files.
        let bare = Registration {
            cert_chain_pem: String::new(),
            key_pem: String::new(),
            ..registration()
        };
        assert_eq!(
            stack_files(
                &bare,
                "enroll_abc",
                &Stack::default(),
                &EdgeSettings::default()
            )
            .len(),
            5
        );
    }

    #[test]
    fn the_compose_file_names_the_images_and_limits_given() {
        let stack = Stack {
            mistserver_image: "test/mist:1".into(),
            helmsman_image: "test/helmsman:1".into(),
            caddy_image: "test/caddy:1".into(),
            nofile: 16_384,
        };
        let files = stack_files(
            &registration(),
            "enroll_abc",
            &stack,
            &EdgeSettings::default(),
        );
        let compose = String::from_utf8(files[3].contents.clone()).expect("utf8");
        for image in [
            "image: test/mist:1",
            "image: test/helmsman:1",
            "image: test/caddy:1",
        ] {
            assert!(compose.contains(image), "{compose}");
        }
        assert!(compose.contains("nofile: {soft: 16384, hard: 16384}"));
        assert!(!compose.contains("version:"));
        assert!(compose.contains("./.edge-enroll.env:/etc/frameworks/enroll.env:ro"));
    }

    #[test]
    fn caddy_serves_the_edge_and_the_pools_with_the_cluster_certificate() {
        let caddy = caddyfile(&registration());
        assert!(caddy.contains(
            "https://edge-0a1b2c3d4e5f.home-lab-1a2b3c.example.net, \
             https://edge.home-lab-1a2b3c.example.net, \
             https://edge-ingest.home-lab-1a2b3c.example.net {"
        ));
        assert!(caddy.contains("tls /etc/frameworks/certs/cluster.crt"));
        assert!(caddy.contains("reverse_proxy 127.0.0.1:8080"));
    }

    #[test]
    fn the_sysctl_profile_sets_fq_bbr_and_the_watermark() {
        let profile = sysctl_profile();
        for line in [
            "net.core.default_qdisc = fq",
            "net.ipv4.tcp_congestion_control = bbr",
            "net.ipv4.tcp_notsent_lowat = 131072",
            "fs.file-max = 2097152",
        ] {
            assert!(profile.lines().any(|l| l == line), "{line}");
        }
    }
}
