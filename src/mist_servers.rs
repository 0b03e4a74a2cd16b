//! MistServer instances added through the balancer's `?addserver=`, as MistUtilLoad monitors them.
//!
//! MistUtilLoad users run MistServer without Helmsman and tell the balancer about each server with
//! `?addserver=host[:port][/bandwidth]`. Foghorn keeps that list in the registry (so it outlives a
//! restart) and the cluster's leading replica polls every server on it every 5 s (`edges.stats_interval`), on its
//! MistController JSON (`http://host:4242/{passphrase}.json`, `edges.mist_passphrase`), as
//! MistUtilLoad does. Each answer becomes the same [`Stats`] a Helmsman edge reports, held under a
//! session of this replica like a Helmsman edge's, so it is scored by the same rules, replicated to
//! the other replicas and listed with the other edges. A server that does not answer in time, or
//! answers something that is not its load, is out of routing at once (MistUtilLoad drops it on the
//! first failed poll too) and back at its next good answer.
//!
//! The argument of `?addserver=` is MistUtilLoad's: a host name or address, the MistController
//! port (4242 when not given), and after a `/` the server's bandwidth limit in MiB/s (MistUtilLoad
//! multiplies it by 1,048,576; 128, about 1 Gbit/s, when not given). A `bwlimit` in the server's
//! answer wins over it, as in MistUtilLoad.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::is_dns_name;
use crate::edge::{Capabilities, EdgeInfo, EdgeState, SessionHandle, Stats, StreamLoad};
use crate::leadership::Leadership;
use crate::registry::Registry;
use crate::replicas::Replication;

/// How long one answer may take; a server slower than this is out until it answers in time.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest answer read: a MistController's JSON with thousands of streams stays far below.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Longest `?addserver=` argument: a query value's bound (`http::params`). MistUtilLoad takes up to
/// 1023 bytes, but a host name, a port and a bandwidth fit in far less.
const MAX_NAME_BYTES: usize = 256;
/// The bandwidth limit of a server that gives none: 128 MiB/s, as MistUtilLoad assumes.
const DEFAULT_BW_LIMIT: u64 = 128 << 20;
/// Where viewers are sent when the server lists no HTTP output: MistServer's default HTTP port.
const DEFAULT_HTTP_PORT: u16 = 8080;

/// One server as `?addserver=` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The argument as given: the server's name in `?delserver=` and in the registry.
    pub name: String,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// MistController's port.
    pub port: u16,
    /// Bandwidth limit in bytes per second, from the name.
    pub bw_limit: u64,
}

impl Target {
    /// Reads `host[:port][/bandwidth]` (an IPv6 address in brackets); a clear reason when it is
    /// not one.
    pub fn parse(name: &str) -> Result<Target, String> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "a server is host[:port][/bandwidth], 1 to {MAX_NAME_BYTES} bytes"
            ));
        }
        let (authority, bw) = match name.split_once('/') {
            Some((authority, bw)) => {
                let mib: u64 = bw
                    .parse()
                    .ok()
                    .filter(|&n| n > 0 && n <= 1 << 20)
                    .ok_or_else(|| {
                        format!("{bw:?} is not a bandwidth in MiB/s (a whole number from 1)")
                    })?;
                (authority, mib << 20)
            }
            None => (name, DEFAULT_BW_LIMIT),
        };
        // `url` parses the authority exactly as a URL would carry it (IPv6 in brackets).
        let url = url::Url::parse(&format!("http://{authority}/"))
            .ok()
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| format!("{authority:?} is not a host[:port]"))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) if is_dns_name(d) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(format!("{authority:?} is not a host[:port]")),
        };
        // `url` drops port 80 as HTTP's default; anything else it keeps.
        let port = url
            .port()
            .unwrap_or(if authority.ends_with(":80") { 80 } else { 4242 });
        Ok(Target {
            name: name.to_string(),
            host,
            port,
            bw_limit: bw,
        })
    }

    /// The node id the server is known by in cluster `cluster`: 12 hex characters, as a
    /// Helmsman node's, derived from the name so it is the same on every replica and restart.
    pub fn node_id(&self, cluster: &str) -> String {
        let digest = Sha256::new()
            .chain_update(b"mist-server\0")
            .chain_update(cluster.as_bytes())
            .chain_update(b"\0")
            .chain_update(self.name.as_bytes())
            .finalize();
        hex::encode(&digest[..6])
    }

    /// The host as it goes into a URL (an IPv6 address in brackets).
    fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// MistController's load JSON.
    fn load_url(&self, passphrase: &str) -> String {
        let passphrase: String = form_urlencoded::byte_serialize(passphrase.as_bytes()).collect();
        format!("http://{}:{}/{passphrase}.json", self.url_host(), self.port)
    }
}

/// The part of MistController's JSON (`/{passphrase}.json`) the balancer reads. Every field is
/// optional, as MistServer leaves out what it does not have; numbers outside their types make the
/// answer unreadable.
#[derive(Debug, Default, Deserialize)]
struct Report {
    /// Tenths of a percent.
    #[serde(default)]
    cpu: u64,
    #[serde(default)]
    mem_total: u64,
    #[serde(default)]
    mem_used: u64,
    #[serde(default)]
    shm_total: u64,
    #[serde(default)]
    shm_used: u64,
    /// Bytes sent and received since MistServer started.
    #[serde(default)]
    bw: Vec<u64>,
    #[serde(default)]
    bwlimit: u64,
    /// Viewers, inputs, outputs, ... now.
    #[serde(default)]
    curr: Vec<u64>,
    loc: Option<Location>,
    #[serde(default)]
    streams: BTreeMap<String, StreamReport>,
    /// Connector name → URL with `HOST` for the host and `$` for the stream.
    #[serde(default)]
    outputs: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Location {
    lat: Option<f64>,
    lon: Option<f64>,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct StreamReport {
    /// Viewers, inputs, outputs now.
    #[serde(default)]
    curr: Vec<u64>,
    /// Bytes sent and received for this stream since it started.
    #[serde(default)]
    bw: Vec<u64>,
    #[serde(default)]
    rep: bool,
}

/// Byte counters of the last answer, to turn the next one's into rates.
#[derive(Debug, Default)]
struct Counters {
    at: Option<Instant>,
    up: u64,
    down: u64,
    streams: HashMap<String, (u64, u64)>,
}

/// Bytes per second between two readings of a counter; 0 when it went back (a restart).
fn rate(now: u64, before: u64, secs: f64) -> u64 {
    if secs <= 0.0 {
        return 0;
    }
    (now.saturating_sub(before) as f64 / secs) as u64
}

fn pair(v: &[u64]) -> (u64, u64) {
    (
        v.first().copied().unwrap_or(0),
        v.get(1).copied().unwrap_or(0),
    )
}

/// The stats of one answer, its byte counters turned into rates against the last answer's (none
/// before the second answer, as MistUtilLoad), and where viewers are sent.
fn read_report(
    body: &[u8],
    target: &Target,
    counters: &mut Counters,
    now: Instant,
) -> Result<(Stats, String), String> {
    // An object and nothing else (a derived struct would also take an array).
    let report = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .and_then(|map| Report::deserialize(serde_json::Value::Object(map)))
        .map_err(|e| format!("not MistServer's load JSON: {e}"))?;
    if report.cpu > 1000 {
        return Err(format!("cpu {} is above 1000 tenths", report.cpu));
    }
    let secs = counters
        .at
        .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
    let (up, down) = pair(&report.bw);
    let (up_rate, down_rate) = (rate(up, counters.up, secs), rate(down, counters.down, secs));
    let mut streams_seen = HashMap::new();
    let mut streams = Vec::new();
    for (name, s) in &report.streams {
        let (bytes_up, bytes_down) = pair(&s.bw);
        let before = counters.streams.get(name).copied();
        streams_seen.insert(name.clone(), (bytes_up, bytes_down));
        let count = |i: usize| s.curr.get(i).copied().unwrap_or(0);
        if count(0) + count(1) + count(2) == 0 {
            continue; // MistUtilLoad skips streams nobody uses
        }
        let (up_rate, down_rate) = before.map_or((0, 0), |(u, d)| {
            (rate(bytes_up, u, secs), rate(bytes_down, d, secs))
        });
        streams.push(StreamLoad {
            internal_name: name.clone(),
            viewers: u32::try_from(count(0)).unwrap_or(u32::MAX),
            inputs: u32::try_from(count(1)).unwrap_or(u32::MAX),
            up_bytes_per_sec: up_rate,
            down_bytes_per_sec: down_rate,
            replicated: s.rep,
        });
    }
    *counters = Counters {
        at: Some(now),
        up,
        down,
        streams: streams_seen,
    };
    // MistUtilLoad's RAM: system memory with shared memory, or shared memory alone, whichever is
    // fuller.
    let (mem_total, shm_total) = (report.mem_total.max(1), report.shm_total.max(1));
    let system = (report.mem_used.saturating_add(report.shm_used), mem_total);
    let shared = (report.shm_used, shm_total);
    let (ram_used, ram_max) = if u128::from(system.0) * u128::from(shared.1)
        > u128::from(shared.0) * u128::from(system.1)
    {
        system
    } else {
        shared
    };
    let (latitude, longitude, location_name) = match report.loc {
        Some(Location {
            lat: Some(lat),
            lon: Some(lon),
            name,
        }) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {
            (Some(lat), Some(lon), name)
        }
        _ => (None, None, String::new()),
    };
    let stats = Stats {
        cpu_tenths: report.cpu as u16,
        ram_max_bytes: ram_max,
        ram_used_bytes: ram_used.min(ram_max),
        up_bytes_per_sec: up_rate,
        down_bytes_per_sec: down_rate,
        bw_limit_bytes_per_sec: if report.bwlimit > 0 {
            report.bwlimit
        } else {
            target.bw_limit
        },
        latitude,
        longitude,
        location_name,
        connections: u32::try_from(report.curr.iter().take(3).sum::<u64>()).unwrap_or(u32::MAX),
        streams,
    };
    Ok((stats, base_url(&report.outputs, target)))
}

/// Where viewers of the server are sent: its HTTP output as it lists it (`http://HOST:8080/$.html`
/// → `http://host:8080`, a public address it was given included), else port 8080 of its host.
fn base_url(outputs: &BTreeMap<String, String>, target: &Target) -> String {
    let listed = ["HTTPS", "HTTP"].iter().find_map(|connector| {
        let pattern = outputs.get(*connector)?;
        let base = pattern
            .strip_suffix("$.html")?
            .replace("HOST", &target.url_host());
        let base = base.trim_end_matches('/').to_string();
        crate::edge::check_base_url(&base).ok()
    });
    listed.unwrap_or_else(|| format!("http://{}:{DEFAULT_HTTP_PORT}", target.url_host()))
}

/// What the poller needs of its cluster.
pub struct Poller {
    pub cluster_id: String,
    /// How often every server is asked: the edges' stats interval (5 s, MistUtilLoad's, by
    /// default), so the liveness window counts polls as it counts stats reports.
    pub every: Duration,
    pub passphrase: String,
    pub registry: Registry,
    pub edges: Arc<EdgeState>,
    pub replication: Option<Replication>,
    pub leadership: Arc<Leadership>,
}

/// One polled server: its session while it answers, and its counters.
#[derive(Default)]
struct Polled {
    session: Option<SessionHandle>,
    /// What the session was opened with.
    info: Option<EdgeInfo>,
    counters: Counters,
}

type HttpClient = Client<HttpConnector, axum::body::Body>;

impl Poller {
    /// Polls the cluster's added servers every [`Poller::every`] while this replica leads, until
    /// `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(ANSWER_TIMEOUT));
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
        let mut polled: HashMap<String, Polled> = HashMap::new();
        let mut targets: Vec<Target> = Vec::new();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            if !self.leadership.is_leader() {
                self.release_all(&mut polled);
                continue;
            }
            match self.registry.mist_servers(&self.cluster_id).await {
                Ok(names) => targets = names.iter().filter_map(|n| Target::parse(n).ok()).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the added MistServer list; polling the last one read")
                }
            }
            self.forget_removed(&mut polled, &targets);
            let answers = futures_util::future::join_all(
                targets.iter().map(|t| fetch(&client, t, &self.passphrase)),
            )
            .await;
            for (target, answer) in targets.iter().zip(answers) {
                let entry = polled.entry(target.name.clone()).or_default();
                self.apply(target, entry, answer).await;
            }
        }
        self.release_all(&mut polled);
    }

    /// Takes one answer (or its failure) into the edge state.
    async fn apply(
        &self,
        target: &Target,
        polled: &mut Polled,
        answer: Result<(Vec<u8>, Option<IpAddr>), String>,
    ) {
        let read = answer.and_then(|(body, ip)| {
            read_report(&body, target, &mut polled.counters, Instant::now()).map(|r| (r, ip))
        });
        let ((stats, base_url), ip) = match read {
            Ok(read) => read,
            Err(e) => {
                if polled.session.is_some() {
                    tracing::warn!(server = %target.name, error = %e, "added MistServer out of routing");
                }
                if let Some(session) = polled.session.take() {
                    self.edges.detach(&session);
                }
                polled.counters = Counters::default();
                return;
            }
        };
        let node_id = target.node_id(&self.cluster_id);
        let info = EdgeInfo {
            cluster_id: self.cluster_id.clone(),
            owner_tenant_id: None,
            capabilities: Capabilities {
                ingest: true,
                edge: true,
                storage: false,
                processing: false,
            },
            public_base_url: base_url,
            peer_ip: ip,
        };
        // The same session while the server's address and URL stay (stats of a session that
        // was replaced are refused: a new one then).
        if polled.info.as_ref() == Some(&info) {
            if let Some(session) = &polled.session {
                if self.edges.apply_stats(session, stats.clone()) {
                    return;
                }
            }
        }
        let token = match &self.replication {
            Some(sync) => {
                let floor = self.edges.known_token(&node_id).saturating_add(1);
                sync.take_token(&node_id, floor).await
            }
            None => 0,
        };
        if polled.session.is_none() {
            tracing::info!(server = %target.name, node_id, "added MistServer answers: routable");
        }
        let session = self.edges.attach(&node_id, info.clone(), token);
        self.edges.apply_stats(&session, stats);
        polled.session = Some(session);
        polled.info = Some(info);
    }

    /// Ends the sessions of servers no longer on the list, and forgets them.
    fn forget_removed(&self, polled: &mut HashMap<String, Polled>, targets: &[Target]) {
        polled.retain(|name, p| {
            let kept = targets.iter().any(|t| &t.name == name);
            if !kept {
                if let Some(session) = p.session.take() {
                    self.edges.detach(&session);
                    self.edges.forget(&session.node_id);
                }
            }
            kept
        });
    }

    /// Ends every session (no longer leading, or stopping): another replica polls now.
    fn release_all(&self, polled: &mut HashMap<String, Polled>) {
        for p in polled.values_mut() {
            if let Some(session) = p.session.take() {
                self.edges.detach(&session);
            }
        }
    }
}

/// One answer of `target`'s MistController and the address it came from, within
/// [`ANSWER_TIMEOUT`] and [`MAX_ANSWER_BYTES`].
async fn fetch(
    client: &HttpClient,
    target: &Target,
    passphrase: &str,
) -> Result<(Vec<u8>, Option<IpAddr>), String> {
    let url = target.load_url(passphrase);
    let request = hyper::Request::get(&url)
        .header(
            hyper::header::HOST,
            format!("{}:{}", target.url_host(), target.port),
        )
        .body(axum::body::Body::empty())
        .map_err(|e| format!("{url}: {e}"))?;
    let answer = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let ip = response
            .extensions()
            .get::<hyper_util::client::legacy::connect::HttpInfo>()
            .map(|i| i.remote_addr().ip());
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        let body = axum::body::to_bytes(
            axum::body::Body::new(response.into_body()),
            MAX_ANSWER_BYTES,
        )
        .await
        .map_err(|e| format!("{url}: {e}"))?;
        Ok((body.to_vec(), ip))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| format!("{url}: no answer within {ANSWER_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_mistutilload_takes_them() {
        let t = Target::parse("mist1.example.com").expect("plain");
        assert_eq!(
            (t.host.as_str(), t.port, t.bw_limit),
            ("mist1.example.com", 4242, 128 << 20)
        );
        let t = Target::parse("10.0.0.5:4343/100").expect("port and bw");
        assert_eq!(
            (t.host.as_str(), t.port, t.bw_limit),
            ("10.0.0.5", 4343, 100 << 20)
        );
        let t = Target::parse("[2001:db8::1]:80").expect("v6");
        assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 80));
        assert_eq!(
            t.load_url("koek jes"),
            "http://[2001:db8::1]:80/koek+jes.json"
        );
        for bad in [
            "",
            "a b",
            "host:99999",
            "host/0",
            "host/x",
            "user@host",
            "host/10/20",
            "http://host",
            &"a".repeat(257),
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let a = Target::parse("a:4242").expect("a");
        assert_eq!(a.node_id("c").len(), 12);
        assert_ne!(a.node_id("c"), Target::parse("a").expect("a").node_id("c"));
        assert_ne!(a.node_id("c"), a.node_id("d"));
    }

    #[test]
    fn answers_become_stats() {
        let target = Target::parse("127.0.0.9/10").expect("target");
        let mut counters = Counters::default();
        let t0 = Instant::now();
        let body = |up: u64, s_up: u64| {
            serde_json::json!({
                "cpu": 250, "mem_total": 1000, "mem_used": 200, "shm_total": 100, "shm_used": 50,
                "bw": [up, 10], "curr": [3, 1, 0, 0],
                "loc": {"lat": 0.0, "lon": 4.5, "name": "Here"},
                "streams": {
                    "live+a": {"curr": [3, 1, 0], "bw": [s_up, 0], "rep": true},
                    "idle": {"curr": [0, 0, 0], "bw": [0, 0]}
                },
                "outputs": {"HTTP": "http://HOST:8081/$.html", "HLS": "http://HOST:8081/hls/$/index.m3u8"}
            })
            .to_string()
        };
        let (first, base) =
            read_report(body(1000, 500).as_bytes(), &target, &mut counters, t0).expect("first");
        assert_eq!(base, "http://127.0.0.9:8081");
        assert_eq!(first.up_bytes_per_sec, 0, "no rate before a second answer");
        assert_eq!(
            (first.cpu_tenths, first.bw_limit_bytes_per_sec),
            (250, 10 << 20)
        );
        // System memory with shared memory (250/1000) against shared alone (50/100): the fuller.
        assert_eq!((first.ram_used_bytes, first.ram_max_bytes), (50, 100));
        // A zero latitude is a latitude (MistUtilLoad ignores it).
        assert_eq!((first.latitude, first.longitude), (Some(0.0), Some(4.5)));
        assert_eq!(first.streams.len(), 1);
        let (second, _) = read_report(
            body(11_000, 5_500).as_bytes(),
            &target,
            &mut counters,
            t0 + Duration::from_secs(5),
        )
        .expect("second");
        assert_eq!(second.up_bytes_per_sec, 2_000);
        let s = &second.streams[0];
        assert_eq!(
            (
                s.internal_name.as_str(),
                s.viewers,
                s.inputs,
                s.up_bytes_per_sec,
                s.replicated
            ),
            ("live+a", 3, 1, 1_000, true)
        );
        for garbage in [
            "",
            "null",
            "[]",
            "{\"cpu\": -1}",
            "{\"cpu\": 5000}",
            "{\"bw\": \"x\"}",
            "<html>",
        ] {
            assert!(
                read_report(garbage.as_bytes(), &target, &mut Counters::default(), t0).is_err(),
                "{garbage}"
            );
        }
        // No outputs listed: MistServer's default HTTP port.
        let (_, base) = read_report(b"{}", &target, &mut Counters::default(), t0).expect("{}");
        assert_eq!(base, "http://127.0.0.9:8080");
    }
}
