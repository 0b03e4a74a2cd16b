//! The cluster's TLS material: the wildcard certificate `*.{cluster}.{root}` that every edge serves
//! viewers with (it goes out in each edge's ConfigSeed), and what Foghorn's own listeners present.
//!
//! Three sources:
//! - **Development** (no files configured): a CA kept under `{data_dir}/tls/` issues the wildcard on
//!   first start and issues a new one `tls.renew_before` its expiry. It also issues Foghorn's
//!   listeners a leaf of their own (`foghorn.{cluster}.{root}`, the apex, loopback), so the key
//!   every edge holds cannot impersonate Foghorn. Edges and tools trust both through the CA that
//!   `PreRegisterEdge` hands out.
//! - **Operator files** (`tls.cert_path`, `tls.key_path`, optionally `tls.ca_path`): a certificate
//!   from any ACME client or the operator's own CA. The files are read again every
//!   `tls.check_interval`, so a renewal written to disk reaches every connected edge and every new
//!   TLS connection without a restart.
//!
//! - **ACME** (`tls.source = "acme"`): the cell's leader orders each served cluster's certificate
//!   (the ACME client), stores it in the registry, and every replica [`Tls::install`]s it. Until the
//!   first one is there, the development CA's stands in. The listeners present the ACME
//!   certificate itself (it names the apex and every host of the zone).
//!
//! Whatever the source, a change is published as a new [`Bundle`] version: the control streams push
//! a new ConfigSeed and the listeners' acceptor is swapped.
//!
//! A cell's listeners serve every cluster it serves: the home cluster's [`Tls`] presents the
//! certificate of the assigned cluster whose zone the client names (SNI), else its own.

mod accept;
mod dev;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ListenerTls, TlsSource};

pub use accept::{accept, accept_loop, Conn};

/// One version of the cluster's certificate, as edges and tools receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The certificate chain, leaf first, PEM.
    pub cert_chain_pem: String,
    /// The leaf's private key, PEM. Only ever sent to authenticated edges of this cluster.
    pub key_pem: String,
    /// The CA that signs the leaf (the dev CA, or `tls.ca_path`); empty when not known.
    pub ca_pem: String,
    /// When the leaf expires, Unix seconds.
    pub not_after: i64,
    /// The DNS names the leaf is good for.
    pub names: Vec<String>,
}

impl Bundle {
    /// A bundle of a PEM chain (leaf first), its key and the CA to trust; the expiry and names
    /// are read from the leaf. The key is not checked here (see [`Tls::install`]).
    pub fn from_pem(
        cert_chain_pem: String,
        key_pem: String,
        ca_pem: String,
    ) -> anyhow::Result<Bundle> {
        let leaf = leaf_facts(&cert_chain_pem)?;
        Ok(Bundle {
            cert_chain_pem,
            key_pem,
            ca_pem,
            not_after: leaf.not_after,
            names: leaf.names,
        })
    }

    /// A digest of what an edge receives, so a re-read file that did not change changes nothing.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&self.cert_chain_pem, &self.key_pem, &self.ca_pem] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
enum Source {
    Dev(dev::DevCa),
    Files {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
    Acme {
        /// What stands in until the first certificate is installed.
        fallback: dev::DevCa,
        /// The certificate from the ACME CA, once installed.
        installed: Arc<arc_swap::ArcSwapOption<Bundle>>,
        directory: String,
    },
}

struct Loaded {
    bundle: Arc<Bundle>,
    digest: [u8; 32],
    acceptor: TlsAcceptor,
    /// What the listeners present when the client names this cluster: Foghorn's own leaf where
    /// it has one (dev CA), else the cluster certificate.
    certified: Arc<CertifiedKey>,
}

/// The certificates of the clusters assigned to the cell, by cluster id.
type Assigned = Arc<ArcSwap<HashMap<Box<str>, Arc<Tls>>>>;

/// Chooses what the listeners present by the name the client asks for (SNI): the certificate of
/// the assigned cluster whose zone the name is in, else this (the home) cluster's.
#[derive(Debug)]
struct BySni {
    own: Arc<CertifiedKey>,
    assigned: Assigned,
    /// `.{root}`, lowercase.
    suffix: Box<str>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            // rustls hands the name over in lowercase.
            let assigned = self.assigned.load();
            if !assigned.is_empty() {
                let zone = name
                    .strip_suffix(&*self.suffix)
                    .and_then(|rest| rest.rsplit('.').next());
                if let Some(tls) = zone.and_then(|z| assigned.get(z)) {
                    return Some(tls.current.load().certified.clone());
                }
            }
        }
        Some(self.own.clone())
    }
}

/// The cluster's current certificate and the acceptor built from it. Cheap to read on every
/// connection; replaced as a whole when the certificate changes.
pub struct Tls {
    source: Source,
    listeners: ListenerTls,
    current: ArcSwap<Loaded>,
    /// The assigned clusters' certificates, which this (home) cluster's listeners also present.
    assigned: Assigned,
    /// `.{root}`, lowercase.
    suffix: Box<str>,
    /// Bumped on every change; control streams watch it to push a new ConfigSeed.
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("source", &self.source)
            .field("listeners", &self.listeners)
            .field("not_after", &self.bundle().not_after)
            .finish()
    }
}

impl Tls {
    /// Loads (or, in development, creates) the cluster's certificate. Fails with a message naming
    /// the file or key at fault, before any port is bound; an unusable operator file is a
    /// [`ConfigError::File`] (invalid configuration), a failure to make the dev CA is not.
    ///
    /// [`ConfigError::File`]: crate::config::ConfigError::File
    pub fn open(config: &Config) -> anyhow::Result<Tls> {
        let operator_files = !config.tls.cert_path.is_empty();
        Self::open_source(config, false).map_err(|e| {
            if operator_files {
                crate::config::ConfigError::File {
                    message: format!("{e:#}"),
                }
                .into()
            } else {
                e
            }
        })
    }

    /// The certificate of `config`'s cluster, one assigned to the cell: in development, its own
    /// wildcard from the cell's CA; with operator files, those files (one certificate naming
    /// every served cluster, until each has its own).
    pub fn open_served(config: &Config) -> anyhow::Result<Tls> {
        Self::open_source(config, true)
    }

    fn open_source(config: &Config, assigned: bool) -> anyhow::Result<Tls> {
        let tls = &config.tls;
        let dev = || {
            let ca = dev::DevCa::new(
                config.server.data_dir.join("tls"),
                &config.cluster.id,
                &config.cluster.root_domain,
                tls.renew_before,
            );
            if assigned {
                ca.assigned()
            } else {
                ca
            }
        };
        let source = match tls.effective_source() {
            TlsSource::Files => Source::Files {
                cert: PathBuf::from(&tls.cert_path),
                key: PathBuf::from(&tls.key_path),
                ca: (!tls.ca_path.is_empty()).then(|| PathBuf::from(&tls.ca_path)),
            },
            TlsSource::Acme => Source::Acme {
                fallback: dev(),
                installed: Arc::default(),
                directory: tls.acme.directory.clone(),
            },
            TlsSource::Dev | TlsSource::Auto => Source::Dev(dev()),
        };
        let (bundle, own) = read(&source, SystemTime::now())?;
        let now = unix(SystemTime::now());
        anyhow::ensure!(
            bundle.not_after > now,
            "the certificate in tls.cert_path expired at Unix time {}",
            bundle.not_after
        );
        let wildcard = format!("*.{}.{}", config.cluster.id, config.cluster.root_domain);
        if !bundle.names.iter().any(|n| n == &wildcard) {
            tracing::warn!(
                names = ?bundle.names,
                expected = %wildcard,
                "the cluster certificate does not name the cluster wildcard: edges will serve a certificate viewers' browsers refuse"
            );
        }
        let assigned = Assigned::default();
        let suffix: Box<str> =
            format!(".{}", config.cluster.root_domain.to_ascii_lowercase()).into();
        let loaded = load(bundle, own, &assigned, &suffix)?;
        Ok(Tls {
            source,
            listeners: tls.listeners,
            current: ArcSwap::from_pointee(loaded),
            assigned,
            suffix,
            version: watch::Sender::new(1),
        })
    }

    /// The current certificate.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.current.load().bundle.clone()
    }

    /// The development CA's certificate file, while the certificate comes from it (with ACME,
    /// until the first one is installed).
    pub fn dev_ca_path(&self) -> Option<PathBuf> {
        match &self.source {
            Source::Dev(ca) => Some(ca.ca_path()),
            Source::Acme {
                fallback,
                installed,
                ..
            } if installed.load().is_none() => Some(fallback.ca_path()),
            Source::Files { .. } | Source::Acme { .. } => None,
        }
    }

    /// Where the certificate comes from, for people: the dev CA's file, the operator's file, or
    /// the ACME directory.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Dev(ca) => format!("dev CA {}", ca.ca_path().display()),
            Source::Files { cert, .. } => cert.display().to_string(),
            Source::Acme { directory, .. } => match self.dev_ca_path() {
                None => format!("ACME {directory}"),
                Some(ca) => format!("ACME {directory}; dev CA {} until issued", ca.display()),
            },
        }
    }

    /// Whether the certificate comes from an ACME CA (through [`Tls::install`]).
    pub fn is_acme(&self) -> bool {
        matches!(self.source, Source::Acme { .. })
    }

    /// The ACME certificate installed, if any.
    pub fn installed(&self) -> Option<Arc<Bundle>> {
        match &self.source {
            Source::Acme { installed, .. } => installed.load_full(),
            _ => None,
        }
    }

    /// Puts `bundle`, a certificate from the ACME CA, in use: edges get it in a new ConfigSeed,
    /// new TLS connections are accepted with it. Refused (and the current one kept) when the
    /// source is not ACME, the key does not fit, or it has expired.
    pub fn install(&self, bundle: Bundle) -> anyhow::Result<bool> {
        let Source::Acme { installed, .. } = &self.source else {
            anyhow::bail!("this cluster's certificate does not come from ACME");
        };
        certified(&bundle)?;
        let previous = installed.swap(Some(Arc::new(bundle)));
        self.refresh(SystemTime::now()).inspect_err(|_| {
            installed.store(previous);
        })
    }

    /// Which connections Foghorn's own listeners take.
    pub fn listeners(&self) -> ListenerTls {
        self.listeners
    }

    /// Presents `tls`, the certificate of `cluster` (assigned to this cell), to clients naming
    /// a host of its zone, on the listeners of this (the home) cluster.
    pub fn present_also(&self, cluster: &str, tls: Arc<Tls>) {
        self.assigned.rcu(|assigned| {
            let mut next = HashMap::clone(assigned);
            next.insert(cluster.into(), tls.clone());
            next
        });
    }

    /// Stops presenting `cluster`'s certificate.
    pub fn stop_presenting(&self, cluster: &str) {
        self.assigned.rcu(|assigned| {
            let mut next = HashMap::clone(assigned);
            next.remove(cluster);
            next
        });
    }

    /// The acceptor for new TLS connections, with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current.load().acceptor.clone()
    }

    /// The version now, and a receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Issues (dev) or re-reads (files) the certificate as of `now`; returns whether it changed.
    /// On any failure the current certificate stays in use.
    pub fn refresh(&self, now: SystemTime) -> anyhow::Result<bool> {
        let (bundle, own) = read(&self.source, now)?;
        if digest(&bundle, own.as_ref()) == self.current.load().digest {
            return Ok(false);
        }
        anyhow::ensure!(
            bundle.not_after > unix(now),
            "the new certificate expired at Unix time {}; keeping the current one",
            bundle.not_after
        );
        self.current
            .store(Arc::new(load(bundle, own, &self.assigned, &self.suffix)?));
        self.version.send_modify(|v| *v += 1);
        Ok(true)
    }

    /// Checks the certificate every `every` until `shutdown`, logging what changed or failed.
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // The first tick is immediate; the certificate was just loaded.
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.refresh(SystemTime::now())).await;
            match result {
                Ok(Ok(true)) => tracing::info!(
                    not_after = self.bundle().not_after,
                    "cluster certificate renewed; edges get it in a new ConfigSeed"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "checking the cluster certificate failed; the current one stays in use")
                }
                Err(e) => tracing::error!(error = %e, "the certificate check panicked"),
            }
        }
    }
}

/// The bundle as the source has it now.
fn read(source: &Source, now: SystemTime) -> anyhow::Result<(Bundle, Option<Bundle>)> {
    match source {
        Source::Dev(ca) => ca.bundles(now).map(|(edges, own)| (edges, Some(own))),
        Source::Acme {
            fallback,
            installed,
            ..
        } => match installed.load_full() {
            Some(bundle) => Ok((Bundle::clone(&bundle), None)),
            None => fallback.bundles(now).map(|(edges, own)| (edges, Some(own))),
        },
        Source::Files { cert, key, ca } => {
            let cert_chain_pem = std::fs::read_to_string(cert)
                .with_context(|| format!("tls.cert_path: reading {}", cert.display()))?;
            let key_pem = std::fs::read_to_string(key)
                .with_context(|| format!("tls.key_path: reading {}", key.display()))?;
            let ca_pem = match ca {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("tls.ca_path: reading {}", path.display()))?,
                None => String::new(),
            };
            let bundle = Bundle::from_pem(cert_chain_pem, key_pem, ca_pem)
                .with_context(|| format!("tls.cert_path: {}", cert.display()))?;
            Ok((bundle, None))
        }
    }
}

/// What Foghorn needs to know of a chain's leaf.
struct LeafFacts {
    not_after: i64,
    names: Vec<String>,
}

/// Expiry and DNS names of the first certificate of a PEM chain.
fn leaf_facts(chain_pem: &str) -> anyhow::Result<LeafFacts> {
    let first = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .context("no PEM certificate in the file")?
        .context("unreadable PEM certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| anyhow::anyhow!("unreadable X.509 certificate: {e}"))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => anyhow::bail!("unreadable subjectAltName: {e}"),
    };
    Ok(LeafFacts {
        not_after: cert.validity().not_after.timestamp(),
        names,
    })
}

/// The chain and key of `bundle`, checked to fit each other.
fn certified(bundle: &Bundle) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(bundle.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("tls.cert_path: unreadable PEM certificate chain")?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls.cert_path: no certificate in the chain"
    );
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes())
        .context("tls.key_path: no readable PEM private key")?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .context("tls.key_path: the private key does not fit the certificate")
}

/// What identifies a version of the certificates: the edges' `bundle` and the listeners' `own`.
fn digest(bundle: &Bundle, own: Option<&Bundle>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bundle.digest());
    if let Some(own) = own {
        h.update(own.digest());
    }
    h.finalize().into()
}

/// Checks that each key fits its certificate and builds the acceptor, which presents Foghorn's
/// `own` leaf (else the edges' `bundle`), or the certificate of the `assigned` cluster the
/// client names.
fn load(
    bundle: Bundle,
    own: Option<Bundle>,
    assigned: &Assigned,
    suffix: &str,
) -> anyhow::Result<Loaded> {
    let edges = certified(&bundle)?;
    let digest = digest(&bundle, own.as_ref());
    let certified = Arc::new(match &own {
        Some(own) => certified(own)?,
        None => edges,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(BySni {
        own: certified.clone(),
        assigned: assigned.clone(),
        suffix: suffix.into(),
    }));
    // gRPC needs HTTP/2; viewers and tools may speak either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        bundle: Arc::new(bundle),
        digest,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certified,
    })
}

/// Unix seconds of `t` (0 before the epoch).
fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
