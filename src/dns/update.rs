//! RFC 2136 dynamic updates to an external primary, signed with TSIG (RFC 8945), sent by the
//! cell's leader only.
//!
//! For each served zone the leader keeps what it believes the primary holds of the names it
//! manages (A, AAAA and TXT records under `{cluster}.{root}`; the primary's own SOA and NS are
//! left alone). It reads that back with a signed zone transfer when it starts leading, after a
//! failure, and every `dns.update_interval`; in between, each change of the zone is sent as the
//! difference alone (records deleted by value, records added), so an unchanged record is never
//! deleted and added again. A refusal or an unreachable primary is retried with backoff, counted
//! in `foghorn_dns_updates_total`, and shown in `/ready`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigner};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ZoneData, Zones};
use crate::config::DnsConfig;
use crate::leadership::Leadership;
use crate::metrics::{Metrics, Outcome};

/// Budget of one exchange with the primary (connect, send, answer).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most changes in one update message (a message must stay under 64 KiB).
const CHANGES_PER_MESSAGE: usize = 400;
/// Longest wait between two attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The primary and how to talk to it, from `[dns]`.
pub struct Primary {
    server: SocketAddr,
    /// The zone the updates are for, when not each cluster's own.
    zone: Option<Name>,
    signer: TSigner,
    interval: Duration,
    /// What the primary holds of each zone's managed names, as last read or written.
    held: Mutex<HashMap<Name, Rrs>>,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("server", &self.server)
            .field("zone", &self.zone)
            .field("key", self.signer.signer_name())
            .finish_non_exhaustive()
    }
}

impl Primary {
    /// The primary of `dns`, when `dns.update_server` is set (the rest was validated at load).
    pub fn from_config(dns: &DnsConfig) -> anyhow::Result<Option<Primary>> {
        if dns.update_server.is_empty() {
            return Ok(None);
        }
        let server = dns
            .update_server
            .parse()
            .context("dns.update_server is not an address:port")?;
        let zone = if dns.update_zone.is_empty() {
            None
        } else {
            Some(absolute(&dns.update_zone)?)
        };
        let algorithm = match dns.tsig_algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => bail!("dns.tsig_algorithm {other:?} is not supported"),
        };
        let key = dns
            .tsig_secret()
            .context("dns.tsig_secret is not base64 of at least 16 bytes")?;
        let signer = TSigner::new(key, algorithm, absolute(&dns.tsig_key_name)?, 300)
            .map_err(|e| anyhow!("the TSIG key: {e}"))?;
        Ok(Some(Primary {
            server,
            zone,
            signer,
            interval: dns.update_interval,
            held: Mutex::new(HashMap::new()),
        }))
    }
}

/// Somewhere the zones are published by reconciling whole record sets: a set the zone no longer
/// has is deleted there. The RFC 2136 [`Primary`] is one; a hosted DNS's API would be another.
/// (The built-in server needs none: it answers from the zones themselves.)
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Where it is, for logs.
    fn describe(&self) -> String;

    /// How often its records are read back and reconciled whatever changed.
    fn read_back_every(&self) -> Duration;

    /// Makes it hold exactly the managed record sets of `data` (A, AAAA and TXT; its own SOA and
    /// NS are its own). `fresh`: read what it holds first rather than trust what was last
    /// written. How many records changed.
    async fn reconcile(&self, data: &ZoneData, fresh: bool) -> anyhow::Result<usize>;

    /// Forgets what it knows of the zones not in `served`.
    fn retain(&self, served: &[Name]);
}

#[async_trait::async_trait]
impl Provider for Primary {
    fn describe(&self) -> String {
        format!("RFC 2136 primary {}", self.server)
    }

    fn read_back_every(&self) -> Duration {
        self.interval
    }

    async fn reconcile(&self, data: &ZoneData, fresh: bool) -> anyhow::Result<usize> {
        let held = if fresh {
            None
        } else {
            self.held.lock().remove(&data.apex)
        };
        // On failure nothing is put back: the next attempt reads the primary first.
        let (held, changes) = reconcile(self, data, held).await?;
        self.held.lock().insert(data.apex.clone(), held);
        Ok(changes)
    }

    fn retain(&self, served: &[Name]) {
        self.held.lock().retain(|apex, _| served.contains(apex));
    }
}

fn absolute(name: &str) -> anyhow::Result<Name> {
    let mut name = Name::from_ascii(name)
        .with_context(|| format!("{name:?} is not a DNS name"))?
        .to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

/// How the updates fare, for `/ready`: the zones whose last attempt failed, and why.
#[derive(Debug, Default)]
pub struct UpdateStatus {
    configured: bool,
    failing: Mutex<BTreeMap<String, String>>,
}

impl UpdateStatus {
    pub fn new(configured: bool) -> UpdateStatus {
        UpdateStatus {
            configured,
            failing: Mutex::new(BTreeMap::new()),
        }
    }

    /// `not configured`, `ok`, or the failing zones with their errors.
    pub fn report(&self, leader: bool) -> serde_json::Value {
        if !self.configured {
            return "not configured".into();
        }
        if !leader {
            return "standby (the leader sends the updates)".into();
        }
        let failing = self.failing.lock();
        if failing.is_empty() {
            "ok".into()
        } else {
            serde_json::json!({ "failing": *failing })
        }
    }

    fn set(&self, zone: &Name, error: Option<String>) {
        let mut failing = self.failing.lock();
        match error {
            Some(e) => {
                failing.insert(zone.to_ascii(), e);
            }
            None => {
                failing.remove(&zone.to_ascii());
            }
        }
    }
}

/// What the leader tracks of one zone.
#[derive(Debug)]
struct Tracked {
    /// The serial of the zone data last reconciled.
    sent: Option<u32>,
    /// When the provider is next read back whatever changed.
    read_back_at: Instant,
    /// No attempt before this (after a failure).
    retry_at: Instant,
    backoff: Duration,
}

/// Managed records by a key of their name, type, TTL and data.
type Rrs = BTreeMap<String, Record>;

fn key(record: &Record) -> String {
    format!(
        "{} {} {} {}",
        record.name.to_lowercase(),
        record.ttl,
        record.record_type(),
        record.data
    )
}

fn managed(record: &Record) -> bool {
    matches!(
        record.record_type(),
        RecordType::A | RecordType::AAAA | RecordType::TXT
    )
}

/// Keeps `provider` in step with the zones of `zones` while this replica leads, until `stop`:
/// each zone when its serial moves, and read back every [`Provider::read_back_every`]; failures
/// retried with backoff, counted and reported in `status`.
pub async fn run(
    provider: Arc<dyn Provider>,
    zones: Arc<dyn Zones>,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    status: Arc<UpdateStatus>,
    stop: CancellationToken,
) {
    let mut tracked: HashMap<Name, Tracked> = HashMap::new();
    let mut tick = super::every_refresh();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !leadership.is_leader() {
            // Another replica sends; whatever it changed is read back when this one leads.
            tracked.clear();
            continue;
        }
        let mut datas: Vec<Arc<ZoneData>> = Vec::new();
        zones.each(&mut |zone, _| datas.push(zone.data()));
        tracked.retain(|apex, _| datas.iter().any(|d| d.apex == *apex));
        provider.retain(&tracked.keys().cloned().collect::<Vec<_>>());
        for data in datas {
            let now = Instant::now();
            let t = tracked.entry(data.apex.clone()).or_insert_with(|| Tracked {
                sent: None,
                read_back_at: now,
                retry_at: now,
                backoff: Duration::from_secs(1),
            });
            let fresh = now >= t.read_back_at;
            if now < t.retry_at || (t.sent == Some(data.serial) && !fresh) {
                continue;
            }
            match provider.reconcile(&data, fresh).await {
                Ok(changes) => {
                    if changes > 0 {
                        Metrics::outcome(&metrics.dns_updates, Outcome::Accepted);
                        tracing::debug!(zone = %data.apex, changes, serial = data.serial, "DNS provider updated");
                    }
                    t.sent = Some(data.serial);
                    if fresh {
                        t.read_back_at = now + provider.read_back_every();
                    }
                    t.backoff = Duration::from_secs(1);
                    status.set(&data.apex, None);
                }
                Err(e) => {
                    let refused = e.is::<Refused>();
                    Metrics::outcome(
                        &metrics.dns_updates,
                        if refused {
                            Outcome::Refused
                        } else {
                            Outcome::Failed
                        },
                    );
                    tracing::warn!(zone = %data.apex, provider = %provider.describe(), error = %format!("{e:#}"), retry_in = ?t.backoff, "could not update the DNS provider");
                    status.set(&data.apex, Some(format!("{e:#}")));
                    t.read_back_at = now;
                    t.retry_at = now + t.backoff;
                    t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// The primary refused (as opposed to: could not be reached or answered nonsense).
#[derive(Debug, thiserror::Error)]
#[error("the primary refused: {0}")]
pub struct Refused(String);

/// Brings the primary's records of `data`'s zone to `data`, from `held` (what it holds, or
/// `None` to read it back first). What it holds afterwards and how many records changed.
async fn reconcile(
    primary: &Primary,
    data: &ZoneData,
    held: Option<Rrs>,
) -> anyhow::Result<(Rrs, usize)> {
    let update_zone = primary.zone.clone().unwrap_or_else(|| data.apex.clone());
    let held = match held {
        Some(held) => held,
        None => read_back(primary, &update_zone, &data.apex).await?,
    };
    let wanted: Rrs = data
        .records()
        .filter(|r| managed(r))
        .map(|r| (key(r), r.clone()))
        .collect();
    let mut changes: Vec<Record> = Vec::new();
    for (k, record) in &held {
        if !wanted.contains_key(k) {
            // Delete this RR by value (RFC 2136 §2.5.4): class NONE, TTL 0.
            let mut delete = record.clone();
            delete.dns_class = DNSClass::NONE;
            delete.ttl = 0;
            changes.push(delete);
        }
    }
    changes.extend(
        wanted
            .iter()
            .filter(|(k, _)| !held.contains_key(*k))
            .map(|(_, r)| r.clone()),
    );
    let count = changes.len();
    for chunk in changes.chunks(CHANGES_PER_MESSAGE) {
        let mut update = Message::new(rand::random(), MessageType::Query, OpCode::Update);
        update.add_query(Query::query(update_zone.clone(), RecordType::SOA));
        update.add_authorities(chunk.iter().cloned());
        let answers = exchange(primary, update, false).await?;
        let answer = answers.first().context("no answer to the update")?;
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(Refused(format!(
                "{} to an update of {update_zone}",
                answer.metadata.response_code
            ))
            .into());
        }
    }
    Ok((wanted, count))
}

/// The managed records under `apex` in the primary's zone `update_zone`, by a signed AXFR.
async fn read_back(primary: &Primary, update_zone: &Name, apex: &Name) -> anyhow::Result<Rrs> {
    let mut query = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    query.add_query(Query::query(update_zone.clone(), RecordType::AXFR));
    let answers = exchange(primary, query, true).await?;
    let mut held = Rrs::new();
    for answer in &answers {
        if answer.metadata.response_code != ResponseCode::NoError {
            return Err(Refused(format!(
                "{} to a transfer of {update_zone} (it must allow transfers to the key)",
                mnemonic(answer.metadata.response_code)
            ))
            .into());
        }
        for record in &answer.answers {
            if managed(record) && apex.zone_of(&record.name.to_lowercase()) {
                held.insert(key(record), record.clone());
            }
        }
    }
    Ok(held)
}

/// Sends `message` signed over TCP; the answers, each verified (a transfer's until its closing
/// SOA). An answer that fails verification is reported with the code it carries.
async fn exchange(
    primary: &Primary,
    mut message: Message,
    transfer: bool,
) -> anyhow::Result<Vec<Message>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut verifier = message
        .finalize(&primary.signer, now)
        .map_err(|e| anyhow!("signing: {e}"))?
        .context("signing gave no verifier")?;
    let bytes = message.to_vec().map_err(|e| anyhow!("encoding: {e}"))?;
    let len = u16::try_from(bytes.len()).context("the message is over 64 KiB")?;
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(primary.server)
            .await
            .with_context(|| format!("connecting to {}", primary.server))?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&bytes).await?;
        let mut answers = Vec::new();
        let mut soas = 0;
        loop {
            let mut len = [0u8; 2];
            stream
                .read_exact(&mut len)
                .await
                .context("the primary closed the connection")?;
            let mut buf = vec![0; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await?;
            let answer = match verifier.verify(&buf) {
                Ok(verified) => verified.into_message(),
                Err(e) => {
                    let why = match Message::from_vec(&buf) {
                        Ok(m) => unverified(&m),
                        Err(_) => "an unreadable answer".into(),
                    };
                    return Err(Refused(format!("{why} (the answer does not verify: {e})")).into());
                }
            };
            let done = !transfer || answer.metadata.response_code != ResponseCode::NoError || {
                soas += answer
                    .answers
                    .iter()
                    .filter(|r| r.record_type() == RecordType::SOA)
                    .count();
                soas >= 2
            };
            answers.push(answer);
            if done {
                return anyhow::Ok(answers);
            }
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, talk)
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from {} within {EXCHANGE_TIMEOUT:?}",
                primary.server
            )
        })?
}

/// A response code as DNS tools print it (`NOTAUTH`), with its meaning.
fn mnemonic(code: ResponseCode) -> String {
    let name = match u16::from(code) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => return code.to_string(),
    };
    format!("{name} ({code})")
}

/// Why an answer that does not verify was given: its code and the TSIG error it carries.
fn unverified(answer: &Message) -> String {
    use hickory_proto::rr::rdata::tsig::TsigError;
    let code = mnemonic(answer.metadata.response_code);
    let tsig = answer.signature().and_then(|sig| sig.data.error);
    match tsig {
        Some(TsigError::BadSig) => format!("{code}, TSIG BADSIG: the secret is not the primary's"),
        Some(TsigError::BadKey) => {
            format!("{code}, TSIG BADKEY: the primary does not know this key name")
        }
        Some(TsigError::BadTime) => {
            format!("{code}, TSIG BADTIME: the clocks differ by more than 5 minutes")
        }
        Some(other) => format!("{code}, TSIG error {other:?}"),
        None => code,
    }
}
