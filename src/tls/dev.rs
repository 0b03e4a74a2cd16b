//! The development CA: made on first start under `{data_dir}/tls/`, it issues the cluster wildcard
//! and issues it again before it expires. Good for a laptop or a lab; production clusters give
//! Foghorn a certificate from a public CA (`tls.cert_path`).
//!
//! Files (keys readable by Foghorn's user only):
//! - `ca.pem`, `ca.key`: the CA, valid 10 years;
//! - `cluster.pem`, `cluster.key`: the wildcard leaf, valid 90 days, like an ACME certificate,
//!   which every edge of the cluster gets;
//! - `cluster-foghorn.pem`, `cluster-foghorn.key`: Foghorn's own leaf for its listeners, so no
//!   edge holds the key of the certificate Foghorn presents;
//! - `clusters/{id}.pem`, `clusters/{id}-foghorn.pem` (and keys): the same two leaves of each
//!   cluster assigned to the cell.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::names::Zone;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::OffsetDateTime;

use super::{leaf_facts, unix, Bundle};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// Issued slightly in the past, so an edge whose clock lags a little accepts it at once.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A development CA for one cluster.
#[derive(Debug, Clone)]
pub(super) struct DevCa {
    dir: PathBuf,
    cluster: String,
    /// The leaf's file name without extension: `cluster` for the home cluster, and
    /// `clusters/{id}` for the clusters assigned to the cell, all signed by the one CA.
    leaf: String,
    /// The names the wildcard must carry (wildcard, apex, `localhost`); a change (another
    /// cluster id or root) issues a new one.
    names: Vec<String>,
    /// `foghorn.{cluster}.{root}`, which Foghorn's own leaf names besides the apex and loopback.
    foghorn: String,
    renew_before: Duration,
}

impl DevCa {
    pub(super) fn new(dir: PathBuf, cluster: &str, root: &str, renew_before: Duration) -> DevCa {
        DevCa {
            dir,
            cluster: cluster.to_string(),
            leaf: "cluster".into(),
            names: vec![
                Zone::new(cluster, root).wildcard(),
                Zone::new(cluster, root).apex(),
                // Tools on the Foghorn host itself, and tests, connect by loopback.
                "localhost".to_string(),
            ],
            foghorn: Zone::new(cluster, root).foghorn_host(),
            renew_before,
        }
    }

    /// The same CA issuing the leaf of `cluster`, a cluster assigned to the cell, under
    /// `clusters/`.
    pub(super) fn assigned(mut self) -> DevCa {
        self.leaf = format!("clusters/{}", self.cluster);
        self
    }

    /// Where the CA's certificate is kept: what clients on the Foghorn host trust.
    pub(super) fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The current wildcard (for the edges) and Foghorn's own leaf (for its listeners, naming
    /// `foghorn.{cluster}.{root}`, the zone apex and loopback), each issued now when missing,
    /// for other names, from another CA, or within `renew_before` of its expiry.
    pub(super) fn bundles(&self, now: SystemTime) -> anyhow::Result<(Bundle, Bundle)> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // Replicas may share the directory: one at a time reads, makes and writes, so they all
        // end up with the same CA and the same leaves. Released when the file is closed.
        let lock_path = self.dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let (ca_pem, ca_key) = self.ca(now)?;
        let wildcard = self.leaf(&self.leaf, &self.names, &ca_pem, &ca_key, now)?;
        let own_names: Vec<String> = std::iter::once(self.foghorn.clone())
            .chain(self.names[1..].iter().cloned())
            .collect();
        let own = self.leaf(
            &format!("{}-foghorn", self.leaf),
            &own_names,
            &ca_pem,
            &ca_key,
            now,
        )?;
        Ok((wildcard, own))
    }

    /// The leaf kept as `{stem}.pem` and `{stem}.key`, issued again unless it is fresh, carries
    /// `names` and fits the CA.
    fn leaf(
        &self,
        stem: &str,
        names: &[String],
        ca_pem: &str,
        ca_key: &KeyPair,
        now: SystemTime,
    ) -> anyhow::Result<Bundle> {
        let leaf_path = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        if let Some(parent) = leaf_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if let (Ok(cert_chain_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&leaf_path),
            std::fs::read_to_string(&key_path),
        ) {
            if let Ok(facts) = leaf_facts(&cert_chain_pem) {
                let fresh = facts.not_after - unix(now)
                    > i64::try_from(self.renew_before.as_secs()).unwrap_or(i64::MAX);
                let named = names.iter().all(|n| facts.names.contains(n));
                if fresh && named && signed_by(&cert_chain_pem, ca_pem) {
                    let kept = Bundle {
                        cert_chain_pem,
                        key_pem,
                        ca_pem: ca_pem.to_string(),
                        not_after: facts.not_after,
                        names: facts.names,
                    };
                    // A crash between writing the new key and the new leaf leaves a pair that
                    // does not fit: issue again rather than fail every start.
                    if super::certified(&kept).is_ok() {
                        return Ok(kept);
                    }
                }
            }
        }
        let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).context("reading the dev CA")?;
        let key = KeyPair::generate().context("generating the cluster key")?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut sans = params.subject_alt_names.clone();
        sans.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        sans.push(rcgen::SanType::IpAddress(
            std::net::Ipv6Addr::LOCALHOST.into(),
        ));
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, now, LEAF_VALIDITY);
        let cert = params
            .signed_by(&key, &issuer)
            .context("issuing the cluster certificate")?;
        let cert_chain_pem = cert.pem();
        let key_pem = key.serialize_pem();
        write_new(&key_path, &key_pem, 0o600)?;
        write_new(&leaf_path, &cert_chain_pem, 0o644)?;
        let facts = leaf_facts(&cert_chain_pem)?;
        tracing::info!(
            names = ?facts.names,
            not_after = facts.not_after,
            path = %leaf_path.display(),
            "issued a certificate from the dev CA"
        );
        Ok(Bundle {
            cert_chain_pem,
            key_pem,
            ca_pem: ca_pem.to_string(),
            not_after: facts.not_after,
            names: facts.names,
        })
    }

    /// The CA's certificate and key, made on first use.
    fn ca(&self, now: SystemTime) -> anyhow::Result<(String, KeyPair)> {
        let cert_path = self.ca_path();
        let key_path = self.dir.join("ca.key");
        match (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            (Ok(cert), Ok(key)) => {
                let key = KeyPair::from_pem(&key)
                    .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
                Ok((cert, key))
            }
            (Err(a), Err(b))
                if a.kind() == std::io::ErrorKind::NotFound
                    && b.kind() == std::io::ErrorKind::NotFound =>
            {
                let key = KeyPair::generate().context("generating the dev CA key")?;
                let mut params = CertificateParams::default();
                params.distinguished_name.push(
                    DnType::CommonName,
                    format!("Foghorn development CA ({})", self.cluster),
                );
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "Foghorn");
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                validity(&mut params, now, CA_VALIDITY);
                let cert = params
                    .self_signed(&key)
                    .context("making the dev CA certificate")?;
                write_new(&key_path, &key.serialize_pem(), 0o600)?;
                write_new(&cert_path, &cert.pem(), 0o644)?;
                tracing::info!(path = %cert_path.display(), "created a development CA for this cluster");
                Ok((cert.pem(), key))
            }
            (Err(e), _) => Err(e).with_context(|| {
                format!(
                    "reading {} (remove both ca.pem and ca.key to make a new dev CA)",
                    cert_path.display()
                )
            }),
            (_, Err(e)) => Err(e).with_context(|| {
                format!(
                    "reading {} (remove both ca.pem and ca.key to make a new dev CA)",
                    key_path.display()
                )
            }),
        }
    }
}

/// Whether the leaf of `chain_pem` carries a valid signature of the CA in `ca_pem`.
fn signed_by(chain_pem: &str, ca_pem: &str) -> bool {
    let parse = |pem: &str| {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .ok()
            .map(|(_, p)| p)
    };
    let (Some(leaf), Some(ca)) = (parse(chain_pem), parse(ca_pem)) else {
        return false;
    };
    let (Ok(leaf), Ok(ca)) = (leaf.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// Validity from a little before `now` for `length`, and a random serial.
fn validity(params: &mut CertificateParams, now: SystemTime, length: Duration) {
    let now = OffsetDateTime::from(now);
    params.not_before = now - BACKDATE;
    params.not_after = now + length;
    let mut serial = rand::random::<[u8; 16]>();
    serial[0] &= 0x7f; // A positive INTEGER.
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

/// Writes `text` to `path` through a temporary file and a rename, so a reader never sees half a
/// file and a crash never leaves one (the caller holds the directory's lock).
fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(dir: &Path) -> DevCa {
        DevCa::new(
            dir.to_path_buf(),
            "alpha",
            "example.test",
            Duration::from_secs(30 * 86_400),
        )
    }

    #[test]
    fn issues_once_then_reuses_until_renewal_is_due() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let first = ca(dir.path()).bundles(now).expect("first start").0;
        assert!(first.names.contains(&"*.alpha.example.test".to_string()));
        assert!(signed_by(&first.cert_chain_pem, &first.ca_pem));
        let again = ca(dir.path()).bundles(now).expect("restart").0;
        assert_eq!(again, first, "a restart keeps the certificate");

        // 61 days on, 29 days are left: within renew_before, so a new leaf from the same CA.
        let later = now + Duration::from_secs(61 * 86_400);
        let renewed = ca(dir.path()).bundles(later).expect("renewal").0;
        assert_ne!(renewed.cert_chain_pem, first.cert_chain_pem);
        assert_ne!(renewed.key_pem, first.key_pem);
        assert_eq!(renewed.ca_pem, first.ca_pem);
        assert!(renewed.not_after > first.not_after);
        assert!(signed_by(&renewed.cert_chain_pem, &first.ca_pem));
    }

    /// Foghorn's listeners get a leaf of their own from the same CA: the edges' wildcard key
    /// cannot impersonate Foghorn. An assigned cluster's leaves live under `clusters/`.
    #[test]
    fn foghorn_gets_its_own_leaf_and_assigned_clusters_theirs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let (wildcard, own) = ca(dir.path()).bundles(now).expect("first start");
        assert_eq!(
            own.names,
            [
                "foghorn.alpha.example.test",
                "alpha.example.test",
                "localhost"
            ]
        );
        assert!(!own.names.iter().any(|n| n.starts_with('*')));
        assert_ne!(own.key_pem, wildcard.key_pem);
        assert!(signed_by(&own.cert_chain_pem, &wildcard.ca_pem));
        assert!(dir.path().join("cluster-foghorn.key").exists());

        let (lab, lab_own) = DevCa::new(
            dir.path().to_path_buf(),
            "lab",
            "example.test",
            Duration::from_secs(86_400),
        )
        .assigned()
        .bundles(now)
        .expect("assigned cluster");
        assert!(lab.names.contains(&"*.lab.example.test".to_string()));
        assert_eq!(lab_own.names[0], "foghorn.lab.example.test");
        assert_eq!(lab.ca_pem, wildcard.ca_pem, "one CA for the cell");
        assert!(dir.path().join("clusters/lab.pem").exists());
        assert!(dir.path().join("clusters/lab-foghorn.pem").exists());
        // The home cluster's leaves are untouched.
        assert_eq!(ca(dir.path()).bundles(now).expect("again"), (wildcard, own));
    }

    #[test]
    fn another_cluster_name_or_ca_issues_a_new_leaf() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let first = ca(dir.path()).bundles(now).expect("first start").0;
        let other = DevCa::new(
            dir.path().to_path_buf(),
            "alpha",
            "other.test",
            Duration::from_secs(86_400),
        )
        .bundles(now)
        .expect("new root")
        .0;
        assert!(other.names.contains(&"*.alpha.other.test".to_string()));
        assert_ne!(other.cert_chain_pem, first.cert_chain_pem);

        // A new CA (both CA files removed) does not keep a leaf the old CA signed.
        std::fs::remove_file(dir.path().join("ca.pem")).expect("rm");
        std::fs::remove_file(dir.path().join("ca.key")).expect("rm");
        let fresh = ca(dir.path()).bundles(now).expect("new CA").0;
        assert_ne!(fresh.ca_pem, first.ca_pem);
        assert!(signed_by(&fresh.cert_chain_pem, &fresh.ca_pem));
    }

    #[test]
    fn replicas_sharing_the_directory_end_up_with_one_ca_and_one_leaf() {
        let dir = tempfile::tempdir().expect("temp dir");
        let now = SystemTime::now();
        let bundles: Vec<Bundle> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..4)
                .map(|_| s.spawn(|| ca(dir.path()).bundles(now).expect("start").0))
                .collect();
            starts
                .into_iter()
                .map(|t| t.join().expect("no panic"))
                .collect()
        });
        assert!(bundles.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn half_a_ca_is_an_error_not_a_silent_new_ca() {
        let dir = tempfile::tempdir().expect("temp dir");
        ca(dir.path()).bundles(SystemTime::now()).expect("first");
        std::fs::remove_file(dir.path().join("ca.key")).expect("rm");
        let err = ca(dir.path())
            .bundles(SystemTime::now())
            .expect_err("a CA without its key");
        assert!(format!("{err:#}").contains("ca.key"), "{err:#}");
    }
}
