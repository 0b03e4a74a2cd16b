//! A real `pebble` ACME server (Let's Encrypt's test CA) that a test starts on free loopback ports,
//! resolving DNS-01 challenges through a DNS server the test names. Stopped when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::{eventually, https_get};

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
    dir: tempfile::TempDir,
}

/// A free loopback TCP port (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Pebble {
    /// Pebble issuing certificates valid `validity`, asking `dns` for challenge records and
    /// refusing orders for the domains of `blocked`.
    pub async fn start(dns: SocketAddr, validity: Duration, blocked: &[&str]) -> Pebble {
        Self::start_on(free_port(), free_port(), dns, validity, blocked).await
    }

    /// Another pebble on the same ports as this one (stop this one first): a CA that lost its
    /// accounts and has new roots, as after a CA-side reset.
    pub async fn restart(self, dns: SocketAddr, validity: Duration, blocked: &[&str]) -> Pebble {
        let listen = self.listen_port();
        let management = self.management.port();
        drop(self);
        Self::start_on(listen, management, dns, validity, blocked).await
    }

    fn listen_port(&self) -> u16 {
        self.directory
            .trim_start_matches("https://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the directory names its port")
    }

    async fn start_on(
        listen: u16,
        management: u16,
        dns: SocketAddr,
        validity: Duration,
        blocked: &[&str],
    ) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        // Pebble's HTTPS listeners: a leaf for 127.0.0.1 from a CA of the test's own.
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pebble listener test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("names")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("cert.pem"), leaf.pem()).expect("write");
        std::fs::write(path("key.pem"), leaf_key.serialize_pem()).expect("write");
        std::fs::write(path("ca.pem"), ca_cert.pem()).expect("write");
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
        let child = std::process::Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(path("pebble.json"))
            .arg("-dnsserver")
            .arg(dns.to_string())
            // No random wait before validating; no nonces rejected on purpose; a new
            // authorization for every order (a renewal validates again).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(std::fs::File::create(path("pebble.log")).expect("log"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("pebble is installed (scripts/test installs it)");
        let pebble = Pebble {
            child,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            management: format!("127.0.0.1:{management}").parse().expect("addr"),
            listener_ca_pem: ca_cert.pem(),
            listener_ca_path: path("ca.pem"),
            dir,
        };
        eventually(WAIT, "pebble answers", || async {
            https_get(
                pebble.management,
                &pebble.listener_ca_pem,
                "127.0.0.1",
                "/roots/0",
            )
            .await
            .is_ok()
        })
        .await;
        pebble
    }

    /// The root pebble issues under (a new one at every start), PEM.
    pub async fn issuing_root(&self) -> String {
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
        response[start..].to_string()
    }

    /// What pebble logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
