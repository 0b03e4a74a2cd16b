//! Certificates from an ACME CA (RFC 8555), validated by DNS-01 through Foghorn's own DNS, for
//! every cluster the cell serves (`tls.source = "acme"`).
//!
//! - **One order per cluster, by the leader.** Each served cluster gets one certificate naming
//!   `{cluster}.{root}` and `*.{cluster}.{root}`. Only the replica holding the cell's leader lease
//!   orders; the others install what it stored.
//! - **DNS-01.** The apex and the wildcard share the name `_acme-challenge.{cluster}.{root}`: both
//!   values go into the registry at once, every replica's zones serve them (and the RFC 2136
//!   primary gets them from the leader), and the challenges are answered once an authoritative
//!   server returns both. They are removed again whatever the outcome.
//! - **Stored once, found by everyone.** The chain and its key, sealed (ChaCha20-Poly1305 under a
//!   key derived from the cell's federation secret, bound to the cluster id), go to the registry.
//!   Every replica installs the stored certificate at start and whenever the topology counter
//!   moves, so a restart never orders again while a valid certificate exists. The account key is
//!   made once per directory and kept there too, sealed the same way.
//! - **Renewal** `tls.renew_before` ahead of expiry, or a third of the certificate's lifetime
//!   when that is sooner (short-lived certificates). The old certificate serves until the new one
//!   is installed. A failure (the CA's problem document, a challenge that did not validate, an
//!   unreachable CA) is logged, counted in `foghorn_certificate_renewal_failures_total`, shown in
//!   `/ready`, and retried with backoff; nothing half-done is installed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use parking_lot::Mutex;
use ring::aead;
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{Registry, StoredCertificate};
use crate::tls::{Bundle, Tls};

/// How long challenge values stay published at most, should an order die half-way.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// Longest wait for an authoritative server to answer with the challenge values.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the CA to validate the challenges, and then to issue.
const CA_TIMEOUT: Duration = Duration::from_secs(120);
/// Wait after the first failure; doubled after each one, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// `/ready` names the certificates that expire within this.
const EXPIRY_WARNING: i64 = 7 * 86_400;
/// The CA's problem type when it no longer knows the account (RFC 8555 §6.7).
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Seals secrets kept in the registry (certificate and account keys) with a key derived from the
/// cell's secret, so a copy of the database alone does not give them away.
pub struct Sealer {
    key: aead::LessSafeKey,
}

impl Sealer {
    /// The sealer of `secret` (the cell's federation secret, shared by its replicas).
    pub fn new(secret: &str) -> Sealer {
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"foghorn sealed v1")
            .extract(secret.as_bytes());
        let okm = prk
            .expand(&[b"acme"], &aead::CHACHA20_POLY1305)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            key: aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
        }
    }

    /// `plain`, encrypted and bound to `context` (what it belongs to: a cluster, a directory).
    pub fn seal(&self, plain: &[u8], context: &str) -> String {
        let nonce: [u8; aead::NONCE_LEN] = rand::random();
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .expect("ChaCha20-Poly1305 seals any length kept in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("v1.{}", data_encoding::BASE64URL_NOPAD.encode(&out))
    }

    /// What [`Sealer::seal`] sealed for `context`; an error when it was sealed with another
    /// secret, for another context, or altered.
    pub fn open(&self, sealed: &str, context: &str) -> anyhow::Result<Vec<u8>> {
        let body = sealed
            .strip_prefix("v1.")
            .context("not a sealed value of this version")?;
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .context("a sealed value that is not base64")?;
        anyhow::ensure!(bytes.len() > aead::NONCE_LEN, "a sealed value too short");
        let (nonce, rest) = bytes.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("nonce"))?;
        let mut rest = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, aead::Aad::from(context.as_bytes()), &mut rest)
            .map_err(|_| {
                anyhow!(
                    "it does not open with this Foghorn's federation secret (the replicas of a \
                     cell must share federation.credential)"
                )
            })?;
        Ok(plain.to_vec())
    }
}

/// What this replica knows of one cluster's certificate.
#[derive(Debug, Default)]
struct Known {
    /// The registry's certificate: `issued_at` (ms), `not_after` (s).
    stored: Option<(i64, i64)>,
    /// The `issued_at` of the stored certificate installed here.
    installed: Option<i64>,
    /// Failed orders in a row, and when the next may be placed.
    failures: u32,
    retry_at: Option<Instant>,
    /// Why the last order or install failed.
    error: Option<String>,
}

/// A served cluster and its certificate, as the cell hands them over.
pub type Served = (String, Arc<Tls>);

/// The ACME client of a cell.
pub struct Acme {
    directory: String,
    email: String,
    /// Root for the ACME server's own HTTPS (a private CA); `None`: the system roots.
    acme_root: Option<PathBuf>,
    /// What edges and tools should trust for the issued certificates (`tls.ca_path`).
    trust_pem: String,
    root_domain: String,
    renew_before: Duration,
    /// An authoritative server for the cluster zones, watched for the challenge values: the RFC
    /// 2136 primary, else the built-in server once bound (see [`Acme::watch_built_in`]).
    watch: std::sync::OnceLock<SocketAddr>,
    /// Time for the other replicas to serve values this one serves (a topology poll and a zone
    /// refresh).
    settle: Duration,
    registry: Registry,
    sealer: Sealer,
    metrics: Arc<Metrics>,
    account: tokio::sync::Mutex<Option<Account>>,
    known: Mutex<HashMap<String, Known>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.directory)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// The client for `config` (whose `tls.source` is `acme`).
    pub fn new(
        config: &Config,
        registry: Registry,
        secret: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Acme> {
        let tls = &config.tls;
        let trust_pem = match tls.ca_path.as_str() {
            "" => String::new(),
            path => std::fs::read_to_string(path)
                .with_context(|| format!("tls.ca_path: reading {path}"))?,
        };
        let watch = std::sync::OnceLock::new();
        if !config.dns.update_server.is_empty() {
            let _ = watch.set(
                config
                    .dns
                    .update_server
                    .parse()
                    .context("dns.update_server")?,
            );
        }
        Ok(Acme {
            directory: tls.acme.directory.clone(),
            email: tls.acme.email.clone(),
            acme_root: (!tls.acme.ca_path.is_empty()).then(|| PathBuf::from(&tls.acme.ca_path)),
            trust_pem,
            root_domain: config.cluster.root_domain.clone(),
            renew_before: tls.renew_before,
            watch,
            settle: config.federation.topology_poll + Duration::from_millis(500),
            registry,
            sealer: Sealer::new(secret),
            metrics,
            account: tokio::sync::Mutex::new(None),
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Watches the built-in DNS server bound at `addr` for the challenge values, unless an RFC
    /// 2136 primary is configured (what the world asks, then).
    pub fn watch_built_in(&self, addr: SocketAddr) {
        let _ = self.watch.set(reachable(addr));
    }

    /// Installs, in each of `served`, the registry's certificate when it is not the one
    /// installed here. Cheap when nothing changed: one query of every certificate's version.
    pub async fn sync(&self, served: &[Served]) {
        let versions = match self.registry.acme_certificate_versions().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the stored certificates");
                return;
            }
        };
        {
            let mut known = self.known.lock();
            for (cluster, issued_at, not_after) in &versions {
                known.entry(cluster.clone()).or_default().stored = Some((*issued_at, *not_after));
            }
            known.retain(|id, _| served.iter().any(|(s, _)| s == id));
        }
        for (cluster, tls) in served {
            let (stored, installed) = {
                let known = self.known.lock();
                let k = known.get(cluster);
                (k.and_then(|k| k.stored), k.and_then(|k| k.installed))
            };
            let Some((issued_at, _)) = stored else {
                continue;
            };
            if installed == Some(issued_at) {
                continue;
            }
            match self.install_stored(cluster, tls).await {
                Ok(Some(version)) => {
                    self.known
                        .lock()
                        .entry(cluster.clone())
                        .or_default()
                        .installed = Some(version)
                }
                Ok(None) => {}
                Err(e) => {
                    let error = format!("{e:#}");
                    tracing::error!(cluster = %cluster, error = %error, "the stored certificate could not be installed; the current one stays in use");
                    let mut known = self.known.lock();
                    let k = known.entry(cluster.clone()).or_default();
                    // Not tried again until it changes.
                    k.installed = Some(issued_at);
                    k.error = Some(error);
                }
            }
        }
    }

    /// Reads, opens and installs `cluster`'s stored certificate; its version.
    async fn install_stored(&self, cluster: &str, tls: &Tls) -> anyhow::Result<Option<i64>> {
        let Some(stored) = self.registry.acme_certificate(cluster).await? else {
            return Ok(None);
        };
        let key = self
            .sealer
            .open(&stored.key_sealed, cluster)
            .context("opening the stored key")?;
        let key_pem = String::from_utf8(key).context("the stored key is not PEM")?;
        let bundle = Bundle::from_pem(stored.cert_chain_pem, key_pem, self.trust_pem.clone())?;
        let not_after = bundle.not_after;
        if tls.install(bundle)? {
            tracing::info!(cluster = %cluster, not_after, "ACME certificate installed; edges get it in a new ConfigSeed");
        }
        Ok(Some(stored.issued_at))
    }

    /// Orders a certificate for each of `served` that has none, one due for renewal, or one
    /// that does not name the cluster's zone; call on the leader only. Returns whether an order
    /// was placed.
    pub async fn renew(&self, served: &[Served]) -> bool {
        let mut ordered = false;
        for (cluster, tls) in served {
            if !self.due(cluster, tls) {
                continue;
            }
            ordered = true;
            let started = std::time::Instant::now();
            match self.issue(cluster).await {
                Ok(stored) => {
                    tracing::info!(cluster = %cluster, not_after = stored.not_after, took = ?started.elapsed(), "ACME certificate issued");
                    let installed = self.install_stored(cluster, tls).await;
                    let mut known = self.known.lock();
                    let k = known.entry(cluster.clone()).or_default();
                    k.stored = Some((stored.issued_at, stored.not_after));
                    k.failures = 0;
                    k.retry_at = None;
                    match installed {
                        Ok(version) => {
                            k.installed = version;
                            k.error = None;
                        }
                        Err(e) => k.error = Some(format!("{e:#}")),
                    }
                }
                Err(e) => {
                    self.metrics.certificate_renewal_failures.inc();
                    let error = format!("{e:#}");
                    let mut known = self.known.lock();
                    let k = known.entry(cluster.clone()).or_default();
                    k.failures = k.failures.saturating_add(1);
                    let wait = FIRST_BACKOFF
                        .saturating_mul(1 << (k.failures - 1).min(16))
                        .min(MAX_BACKOFF);
                    k.retry_at = Some(Instant::now() + wait);
                    tracing::error!(cluster = %cluster, error = %error, failures = k.failures, retry_in = ?wait, "the ACME order failed; the current certificate stays in use");
                    k.error = Some(error);
                }
            }
        }
        ordered
    }

    /// Whether `cluster` needs a new certificate now.
    fn due(&self, cluster: &str, tls: &Tls) -> bool {
        let known = self.known.lock();
        let k = known.get(cluster);
        if k.and_then(|k| k.retry_at)
            .is_some_and(|at| Instant::now() < at)
        {
            return false;
        }
        let Some((issued_at, not_after)) = k.and_then(|k| k.stored) else {
            return true;
        };
        let lifetime = not_after.saturating_sub(issued_at / 1000).max(0);
        let margin = i64::try_from(self.renew_before.as_secs())
            .unwrap_or(i64::MAX)
            .min(lifetime / 3);
        if not_after.saturating_sub(unix_now()) <= margin {
            return true;
        }
        // Installed here and no longer naming the zone (the root domain changed).
        let apex = self.apex(cluster);
        tls.installed().is_some_and(|b| {
            k.and_then(|k| k.installed) == Some(issued_at)
                && !(b.names.contains(&apex) && b.names.contains(&format!("*.{apex}")))
        })
    }

    fn apex(&self, cluster: &str) -> String {
        format!("{cluster}.{}", self.root_domain)
    }

    /// Why `cluster` needs attention, if it does: its last failure and failures in a row.
    fn trouble(&self, cluster: &str) -> Option<(String, u32)> {
        let known = self.known.lock();
        let k = known.get(cluster)?;
        k.error.clone().map(|e| (e, k.failures))
    }

    /// One order for `cluster`, from new order to stored certificate; the challenge values are
    /// removed again whatever happens.
    async fn issue(&self, cluster: &str) -> anyhow::Result<StoredCertificate> {
        let result = self.order(cluster).await;
        if let Err(e) = self.registry.set_acme_challenges(cluster, &[], 0).await {
            tracing::warn!(cluster = %cluster, error = %e, "could not remove the challenge values; they expire by themselves");
        }
        let (chain, key_pem) = result?;
        let bundle = Bundle::from_pem(chain, key_pem, self.trust_pem.clone())
            .context("the CA's certificate")?;
        let apex = self.apex(cluster);
        anyhow::ensure!(
            bundle.names.contains(&apex) && bundle.names.contains(&format!("*.{apex}")),
            "the CA issued a certificate for {:?}, not {apex} and *.{apex}",
            bundle.names
        );
        let stored = StoredCertificate {
            cluster_id: cluster.to_string(),
            key_sealed: self.sealer.seal(bundle.key_pem.as_bytes(), cluster),
            cert_chain_pem: bundle.cert_chain_pem,
            not_after: bundle.not_after,
            issued_at: crate::registry::now_ms(),
        };
        self.registry
            .store_acme_certificate(&stored)
            .await
            .context("storing the certificate")?;
        Ok(stored)
    }

    /// The order itself: the chain and its key, PEM.
    async fn order(&self, cluster: &str) -> anyhow::Result<(String, String)> {
        let apex = self.apex(cluster);
        let identifiers = [
            Identifier::Dns(apex.clone()),
            Identifier::Dns(format!("*.{apex}")),
        ];
        let new_order = NewOrder::new(&identifiers);
        let account = self.account().await?;
        let mut order = match account.new_order(&new_order).await {
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST) =>
            {
                tracing::warn!(directory = %self.directory, "the CA no longer knows the account; making a new one");
                let account = self.new_account(true).await?;
                account.new_order(&new_order).await
            }
            other => other,
        }
        .context("the CA refused the order")?;

        // Every pending authorization's DNS-01 value, published together.
        let mut values = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("reading an authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!(
                    "the CA holds the authorization for {} as {other:?}",
                    authz.identifier()
                ),
            }
            let challenge = authz
                .challenge(ChallengeType::Dns01)
                .context("the CA offers no dns-01 challenge")?;
            values.push(challenge.key_authorization().dns_value());
        }
        if !values.is_empty() {
            let until = crate::registry::now_ms()
                + i64::try_from(CHALLENGE_TTL.as_millis()).unwrap_or(i64::MAX);
            self.registry
                .set_acme_challenges(cluster, &values, until)
                .await
                .context("publishing the challenge values")?;
            self.published(&apex, &values).await?;
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.context("reading an authorization")?;
                if authz.status != AuthorizationStatus::Pending {
                    continue;
                }
                if let Some(mut challenge) = authz.challenge(ChallengeType::Dns01) {
                    challenge
                        .set_ready()
                        .await
                        .context("answering the challenge")?;
                }
            }
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(CA_TIMEOUT);
        let status = order
            .poll_ready(&retries)
            .await
            .context("waiting for the CA to validate")?;
        if status != OrderStatus::Ready {
            bail!("the order is {status:?}: {}", why_invalid(&mut order).await);
        }
        let key_pem = order.finalize().await.context("finalizing the order")?;
        let chain = order
            .poll_certificate(&retries)
            .await
            .context("downloading the certificate")?;
        Ok((chain, key_pem))
    }

    /// Waits until the watched authoritative server answers every value of `values` at
    /// `_acme-challenge.{apex}`, then for the other replicas to serve them too.
    async fn published(&self, apex: &str, values: &[String]) -> anyhow::Result<()> {
        let name = Name::from_ascii(format!("_acme-challenge.{apex}."))
            .with_context(|| format!("_acme-challenge.{apex} is not a DNS name"))?;
        let watch = *self
            .watch
            .get()
            .context("no DNS server to publish the challenges (dns.listen or dns.update_server)")?;
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        let mut last: String;
        loop {
            match txt_values(watch, &name).await {
                Ok(seen) if values.iter().all(|v| seen.contains(v)) => break,
                Ok(seen) => last = format!("it answers {seen:?}"),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "the challenge values did not appear at {watch} within {PUBLISH_TIMEOUT:?} ({last})"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(self.settle).await;
        Ok(())
    }

    /// The account for the directory: the one kept in the registry, or a new one.
    async fn account(&self) -> anyhow::Result<Account> {
        if let Some(account) = self.account.lock().await.as_ref() {
            return Ok(account.clone());
        }
        let kept = self
            .registry
            .acme_account(&self.directory)
            .await
            .context("reading the ACME account")?;
        match kept {
            Some(sealed) => {
                let account = self.restore(&sealed).await?;
                *self.account.lock().await = Some(account.clone());
                Ok(account)
            }
            None => self.new_account(false).await,
        }
    }

    /// An account from sealed credentials.
    async fn restore(&self, sealed: &str) -> anyhow::Result<Account> {
        let plain = self
            .sealer
            .open(sealed, &self.directory)
            .context("opening the stored ACME account")?;
        let credentials: AccountCredentials =
            serde_json::from_slice(&plain).context("the stored ACME account is unreadable")?;
        self.builder()?
            .from_credentials(credentials)
            .await
            .with_context(|| format!("reaching the ACME directory {}", self.directory))
    }

    /// Creates an account and keeps it; `replace` the one kept (the CA forgot it), else the first
    /// kept wins (two leaders at a failover).
    async fn new_account(&self, replace: bool) -> anyhow::Result<Account> {
        let contact = format!("mailto:{}", self.email);
        let contacts: &[&str] = if self.email.is_empty() {
            &[]
        } else {
            &[contact.as_str()]
        };
        let (account, credentials) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.directory.clone(),
                None,
            )
            .await
            .with_context(|| format!("creating an account at {}", self.directory))?;
        let sealed = self.sealer.seal(
            &serde_json::to_vec(&credentials).context("serializing the account")?,
            &self.directory,
        );
        let account = if replace {
            self.registry
                .replace_acme_account(&self.directory, &sealed)
                .await?;
            account
        } else {
            let kept = self
                .registry
                .keep_acme_account(&self.directory, &sealed)
                .await?;
            if kept == sealed {
                account
            } else {
                self.restore(&kept).await?
            }
        };
        tracing::info!(directory = %self.directory, id = account.id(), "ACME account ready");
        *self.account.lock().await = Some(account.clone());
        Ok(account)
    }

    fn builder(&self) -> anyhow::Result<AccountBuilder> {
        match &self.acme_root {
            Some(root) => Account::builder_with_root(root)
                .with_context(|| format!("tls.acme.ca_path: {}", root.display())),
            None => Account::builder().context("the system's root certificates"),
        }
    }
}

/// What `/ready` says of the certificates of `served` (from `source`, with `acme` when that is
/// the source): each one within 7 days of expiry, not yet issued by the ACME CA, or whose last
/// order or install failed.
pub fn report(acme: Option<&Acme>, source: &str, served: &[Served]) -> serde_json::Value {
    let now = unix_now();
    let attention: Vec<serde_json::Value> = served
        .iter()
        .filter_map(|(cluster, tls)| {
            let not_after = tls.bundle().not_after;
            let trouble = acme.and_then(|a| a.trouble(cluster));
            let waiting = acme.is_some() && tls.installed().is_none();
            (not_after - now < EXPIRY_WARNING || trouble.is_some() || waiting).then(|| {
                serde_json::json!({
                    "cluster": cluster,
                    "not_after": not_after,
                    "expires_in_days": (not_after - now).div_euclid(86_400),
                    "issued": acme.map(|_| !waiting),
                    "failures": trouble.as_ref().map_or(0, |t| t.1),
                    "error": trouble.map(|t| t.0),
                })
            })
        })
        .collect();
    serde_json::json!({
        "source": source,
        "directory": acme.map(|a| a.directory.as_str()),
        "attention": attention,
    })
}

/// Why an order became invalid: each authorization's challenge error (the CA's problem
/// documents), or the order's own.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(mut authz) = authz else { continue };
        let Ok(state) = authz.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!("{}: {problem}", state.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        if let Ok(state) = order.refresh().await {
            if let Some(problem) = &state.error {
                reasons.push(problem.to_string());
            }
        }
    }
    if reasons.is_empty() {
        "the CA gave no reason".into()
    } else {
        reasons.join("; ")
    }
}

/// The address to ask a server listening on `addr`: loopback for an unspecified address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// The TXT strings `server` answers for `name`, over UDP.
async fn txt_values(server: SocketAddr, name: &Name) -> anyhow::Result<Vec<String>> {
    let mut query = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name.clone(), RecordType::TXT));
    let bytes = query.to_vec().map_err(|e| anyhow!("encoding: {e}"))?;
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let len = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf))
        .await
        .map_err(|_| anyhow!("no answer from {server}"))??;
    let answer = Message::from_vec(&buf[..len]).map_err(|e| anyhow!("unreadable answer: {e}"))?;
    anyhow::ensure!(
        answer.metadata.id == query.metadata.id,
        "an answer to another question"
    );
    Ok(answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_secret_and_context() {
        let sealer = Sealer::new("fpc_one");
        let sealed = sealer.seal(b"-----BEGIN PRIVATE KEY-----", "eu");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            sealer.open(&sealed, "eu").expect("opens"),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // Two seals of one value differ (a fresh nonce each time).
        assert_ne!(sealed, sealer.seal(b"-----BEGIN PRIVATE KEY-----", "eu"));
        assert!(sealer.open(&sealed, "us").is_err(), "bound to its cluster");
        let other = Sealer::new("fpc_two");
        let err = other.open(&sealed, "eu").expect_err("another secret");
        assert!(format!("{err}").contains("federation.credential"), "{err}");
        let mut altered = sealed.clone();
        altered.push('A');
        assert!(sealer.open(&altered, "eu").is_err());
        assert!(sealer.open("v1.", "eu").is_err());
        assert!(sealer.open("garbage", "eu").is_err());
    }

    #[test]
    fn unspecified_listen_addresses_are_asked_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:53".parse().expect("addr")),
            "127.0.0.1:53".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            reachable("[::]:5353".parse().expect("addr")),
            "[::1]:5353".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            reachable("10.0.0.1:53".parse().expect("addr")),
            "10.0.0.1:53".parse::<SocketAddr>().expect("addr")
        );
    }
}
