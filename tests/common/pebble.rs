//! A real `pebble` ACME server (Let's Encrypt's test CA) that a test starts on free loopback ports,
//! resolving DNS-01 challenges through a DNS server the test names. Stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ports::free_port;
use super::{ca_and_leaf, eventually, https_get};

const WAIT: Duration = Duration::from_secs(15);

/// One pebble process and what a client needs to use it.
pub struct Pebble {
    child: std::process::Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The management interface (roots, intermediates).
    pub management: SocketAddr,
    /// The CA of pebble's own HTTPS listeners (for `tls.acme.ca_path`): PEM, and a file of it.
    pub listener_ca_pem: String,
    pub listener_ca_path: PathBuf,
    /// The DNS server it asks for challenge records.
    dns: SocketAddr,
    dir: tempfile::TempDir,
}

impl Pebble {
    /// Pebble issuing certificates valid `validity`, asking `dns` for challenge records and
    /// refusing orders for the domains of `blocked`.
    pub async fn start(dns: SocketAddr, validity: Duration, blocked: &[&str]) -> Pebble {
        let (listen, management) = (free_port(), free_port());

        let dir = tempfile::tempdir().expect("tempdir");
        // Pebble's HTTPS listeners: a leaf for 127.0.0.1 from a CA of the test's own.
        let (ca_pem, leaf_pem, key_pem) =
            ca_and_leaf("pebble listener test CA", &["127.0.0.1", "localhost"]);
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("cert.pem"), leaf_pem).expect("write");
        std::fs::write(path("key.pem"), key_pem).expect("write");
        std::fs::write(path("ca.pem"), &ca_pem).expect("write");
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": path("cert.pem"),
                "privateKey": path("key.pem"),
                "httpPort": free_port(),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "domainBlocklist": blocked,
                "certificateValidityPeriod": validity.as_secs(),
            }
        });
        std::fs::write(path("pebble.json"), config.to_string()).expect("write");
        let pebble = Pebble {
            child: spawn(dir.path(), &dns),
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("127.0.0.1:{management}").parse().expect("addr"),
            listener_ca_pem: ca_pem,
            listener_ca_path: path("ca.pem"),
            dir,
        };
        pebble.wait_ready().await;
        pebble
    }

    /// Pebble again, on the same ports with the same HTTPS listener certificate, now refusing
    /// orders for `blocked`: a CA that lost its accounts and has new roots, as after a reset.
    pub async fn restart(&mut self, blocked: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let path = self.dir.path().join("pebble.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("config")).expect("json");
        config["pebble"]["domainBlocklist"] = serde_json::json!(blocked);
        std::fs::write(&path, config.to_string()).expect("write");
        self.child = spawn(self.dir.path(), &self.dns);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        eventually(WAIT, "pebble answers", || async {
            https_get(
                self.management,
                &self.listener_ca_pem,
                "127.0.0.1",
                "/roots/0",
            )
            .await
            .is_ok()
        })
        .await;
    }

    /// The root pebble issues under (a new one at every start): PEM, and a file of it for
    /// `tls.ca_path`.
    pub async fn issuing_root(&self) -> (String, PathBuf) {
        let (response, _) = https_get(
            self.management,
            &self.listener_ca_pem,
            "127.0.0.1",
            "/roots/0",
        )
        .await
        .expect("GET /roots/0");
        let start = response
            .find("-----BEGIN CERTIFICATE-----")
            .unwrap_or_else(|| panic!("a PEM root in {response}"));
        let root = response[start..].to_string();
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, &root).expect("write");
        (root, path)
    }

    /// What pebble logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

/// Pebble with the configuration in `dir`, asking `dns`.
fn spawn(dir: &Path, dns: &SocketAddr) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("pebble.log"))
        .expect("log");
    std::process::Command::new("/usr/bin/pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .arg("-dnsserver")
        .arg(dns.to_string())
        // No random wait before validating; no nonces rejected on purpose; a new authorization
        // for every order (a renewal validates again).
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pebble is installed (scripts/test installs it)")
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
