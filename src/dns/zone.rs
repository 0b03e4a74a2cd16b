//! One served cluster's zone `{cluster}.{root}`: what it should hold (a [`Desired`] set of names
//! and addresses, built from the edges and the configuration), the same as DNS records ready to
//! answer with ([`ZoneData`]), and the hysteresis that keeps a reconnecting edge in it
//! ([`Presence`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::DnsConfig;
use crate::edge::{EdgeState, Mode, Stats};

/// The label of the viewers' pool (`edge.{cluster}.{root}`).
pub const VIEWER_POOL: &str = "edge";
/// The label of the publishers' pool (`edge-ingest.{cluster}.{root}`).
pub const INGEST_POOL: &str = "edge-ingest";
/// The label of the cluster's Foghorn (`foghorn.{cluster}.{root}`).
pub const FOGHORN: &str = "foghorn";
/// The label of the ACME DNS-01 challenge (`_acme-challenge.{cluster}.{root}`).
pub const ACME_CHALLENGE: &str = "_acme-challenge";

/// What a zone's settings are, from `[dns]`, for one zone.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ttl: u32,
    /// The cell's public addresses (`foghorn` and the apex).
    pub cell: Vec<IpAddr>,
    /// Name servers; empty: `foghorn.{zone}`.
    pub nameservers: Vec<Name>,
    pub pool_size: usize,
    pub hold: Duration,
}

impl Settings {
    pub fn from_config(dns: &DnsConfig) -> Settings {
        Settings {
            ttl: u32::try_from(dns.ttl.as_secs()).unwrap_or(u32::MAX),
            cell: dns.cell_addresses(),
            nameservers: dns
                .nameservers
                .iter()
                .filter_map(|n| Name::from_ascii(n).ok())
                .map(|mut n| {
                    n.set_fqdn(true);
                    n.to_lowercase()
                })
                .collect(),
            pool_size: dns.pool_size,
            hold: dns.hold,
        }
    }
}

/// The addresses and texts of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    pub a: Vec<Ipv4Addr>,
    pub aaaa: Vec<Ipv6Addr>,
    pub txt: Vec<String>,
}

impl Sets {
    fn add(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.a.push(v4),
            IpAddr::V6(v6) => self.aaaa.push(v6),
        }
    }

    fn is_empty(&self) -> bool {
        self.a.is_empty() && self.aaaa.is_empty() && self.txt.is_empty()
    }
}

/// What a zone should hold besides its SOA and NS: each name's sets, by its label under the apex
/// (`""` for the apex itself). The RFC 2136 provider sends the difference of two of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub names: BTreeMap<String, Sets>,
}

/// An edge as DNS sees it at one refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub node_id: String,
    pub ip: IpAddr,
    pub edge: bool,
    pub ingest: bool,
    /// Routable now (else held by the hysteresis).
    pub routable: bool,
    /// In `normal` mode: may be in the pools.
    pub normal: bool,
    /// Load in percent (the highest of CPU, bandwidth and memory), 0 to 100.
    pub load: u8,
}

impl Desired {
    /// The names of a zone with `members` (after hysteresis), `challenges` for ACME, under
    /// `settings`. `zone` is the apex, for the default name server.
    pub fn build(settings: &Settings, members: &[Member], challenges: &[String]) -> Desired {
        let mut names: BTreeMap<String, Sets> = BTreeMap::new();
        for ip in &settings.cell {
            names.entry(String::new()).or_default().add(*ip);
            names.entry(FOGHORN.into()).or_default().add(*ip);
        }
        for member in members {
            names
                .entry(format!("edge-{}", member.node_id))
                .or_default()
                .add(member.ip);
        }
        for (label, wanted) in [
            (VIEWER_POOL, (|m: &Member| m.edge) as fn(&Member) -> bool),
            (INGEST_POOL, |m: &Member| m.ingest),
        ] {
            let mut pool: Vec<&Member> = members.iter().filter(|m| m.normal && wanted(m)).collect();
            // Routable edges first, then by load in steps of 10 % (so the pool does not change
            // with every report), then by id.
            pool.sort_by(|a, b| {
                (!a.routable, a.load / 10, &a.node_id).cmp(&(!b.routable, b.load / 10, &b.node_id))
            });
            for member in pool.into_iter().take(settings.pool_size) {
                names.entry(label.into()).or_default().add(member.ip);
            }
        }
        if !challenges.is_empty() {
            names.entry(ACME_CHALLENGE.into()).or_default().txt = challenges.to_vec();
        }
        for sets in names.values_mut() {
            sets.a.sort();
            sets.a.dedup();
            sets.aaaa.sort();
            sets.aaaa.dedup();
        }
        names.retain(|_, sets| !sets.is_empty());
        Desired { names }
    }
}

/// A zone's records, ready to answer with.
#[derive(Debug)]
pub struct ZoneData {
    pub apex: Name,
    pub desired: Desired,
    pub serial: u32,
    soa: Vec<Record>,
    ns: Vec<Record>,
    /// Addresses of the name servers inside the zone (additional section of NS answers).
    glue: Vec<Record>,
    names: HashMap<LowerName, Rrsets>,
}

#[derive(Debug, Default)]
struct Rrsets {
    a: Vec<Record>,
    aaaa: Vec<Record>,
    txt: Vec<Record>,
}

/// What a zone has for one question.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// These records (an RRset, or the zone's NS or SOA).
    Answer(&'a [Record]),
    /// The name exists, without records of that type.
    NoData,
    /// No such name in the zone.
    NxDomain,
}

impl ZoneData {
    pub fn new(apex: &Name, settings: &Settings, desired: Desired, serial: u32) -> ZoneData {
        let ttl = settings.ttl;
        let record = |name: &Name, data: RData| Record::from_rdata(name.clone(), ttl, data);
        let child = |label: &str| -> Name {
            if label.is_empty() {
                apex.clone()
            } else {
                // Labels are ours (validated ids, fixed names): always valid.
                Name::from_ascii(label)
                    .and_then(|l| l.append_domain(apex))
                    .unwrap_or_else(|_| apex.clone())
            }
        };
        let foghorn = child(FOGHORN);
        let nameservers = if settings.nameservers.is_empty() {
            vec![foghorn.clone()]
        } else {
            settings.nameservers.clone()
        };
        let rname = Name::from_ascii("hostmaster")
            .and_then(|h| h.append_domain(apex))
            .unwrap_or_else(|_| apex.clone());
        let ttl_i32 = i32::try_from(ttl).unwrap_or(i32::MAX);
        let soa = vec![record(
            apex,
            RData::SOA(SOA::new(
                nameservers[0].clone(),
                rname,
                serial,
                ttl_i32.max(60),
                ttl_i32.clamp(30, 600),
                86_400 * 14,
                ttl,
            )),
        )];
        let ns = nameservers
            .iter()
            .map(|n| record(apex, RData::NS(NS(n.clone()))))
            .collect();
        let mut names: HashMap<LowerName, Rrsets> = HashMap::new();
        for (label, sets) in &desired.names {
            let name = child(label);
            let rrsets = names.entry(LowerName::new(&name)).or_default();
            rrsets.a = sets
                .a
                .iter()
                .map(|ip| record(&name, RData::A(A(*ip))))
                .collect();
            rrsets.aaaa = sets
                .aaaa
                .iter()
                .map(|ip| record(&name, RData::AAAA(AAAA(*ip))))
                .collect();
            rrsets.txt = sets
                .txt
                .iter()
                .map(|t| record(&name, RData::TXT(TXT::new(vec![t.clone()]))))
                .collect();
        }
        let glue = nameservers
            .iter()
            .filter_map(|n| names.get(&LowerName::new(n)))
            .flat_map(|sets| sets.a.iter().chain(&sets.aaaa))
            .cloned()
            .collect();
        ZoneData {
            apex: apex.clone(),
            desired,
            serial,
            soa,
            ns,
            glue,
            names,
        }
    }

    /// The zone's SOA record (one).
    pub fn soa(&self) -> &[Record] {
        &self.soa
    }

    /// The addresses of the zone's own name servers.
    pub fn glue(&self) -> &[Record] {
        &self.glue
    }

    /// What the zone has for `name` (inside it) and `qtype`. `ANY` is answered minimally
    /// (RFC 8482): the first of the name's sets.
    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Lookup<'_> {
        let apex = name.num_labels() == self.apex.num_labels();
        if apex {
            match qtype {
                RecordType::SOA | RecordType::ANY => return Lookup::Answer(&self.soa),
                RecordType::NS => return Lookup::Answer(&self.ns),
                _ => {}
            }
        }
        let Some(sets) = self.names.get(name) else {
            return if apex {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        let found: &[Record] = match qtype {
            RecordType::A => &sets.a,
            RecordType::AAAA => &sets.aaaa,
            RecordType::TXT => &sets.txt,
            RecordType::ANY => [&sets.a, &sets.aaaa, &sets.txt]
                .into_iter()
                .find(|s| !s.is_empty())
                .map_or(&[][..], |s| &s[..]),
            _ => &[],
        };
        if found.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer(found)
        }
    }

    /// Every record of the zone, SOA first, for a zone transfer (which ends with the SOA again).
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        let mut labels: Vec<&LowerName> = self.names.keys().collect();
        labels.sort();
        self.soa
            .iter()
            .chain(&self.ns)
            .chain(labels.into_iter().flat_map(|n| &self.names[n]))
    }
}

impl<'a> IntoIterator for &'a Rrsets {
    type Item = &'a Record;
    type IntoIter = std::iter::Chain<
        std::iter::Chain<std::slice::Iter<'a, Record>, std::slice::Iter<'a, Record>>,
        std::slice::Iter<'a, Record>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.a.iter().chain(&self.aaaa).chain(&self.txt)
    }
}

/// When each edge was last routable: an edge stays in the zone for `hold` after that, so a
/// reconnect does not flap DNS; an edge forgotten by the edge state goes at once.
#[derive(Debug, Default)]
pub struct Presence {
    last_routable: HashMap<String, Instant>,
}

impl Presence {
    /// Whether the edge belongs in the zone at `now`, given whether it is routable.
    fn keep(&mut self, node_id: &str, routable: bool, now: Instant, hold: Duration) -> bool {
        if routable {
            self.last_routable.insert(node_id.to_string(), now);
            return true;
        }
        match self.last_routable.get(node_id) {
            Some(at) if now.saturating_duration_since(*at) < hold => true,
            Some(_) => {
                self.last_routable.remove(node_id);
                false
            }
            None => false,
        }
    }

    /// The zone's members among `edges` at `now`.
    pub fn members(
        &mut self,
        edges: impl IntoIterator<Item = Candidate>,
        now: Instant,
        hold: Duration,
    ) -> Vec<Member> {
        let mut seen = std::collections::HashSet::new();
        let mut members = Vec::new();
        for c in edges {
            seen.insert(c.node_id.clone());
            let (Some(ip), true) = (c.ip, self.keep(&c.node_id, c.routable, now, hold)) else {
                continue;
            };
            members.push(Member {
                node_id: c.node_id,
                ip,
                edge: c.edge,
                ingest: c.ingest,
                routable: c.routable,
                normal: c.mode == Mode::Normal,
                load: c.load,
            });
        }
        self.last_routable.retain(|node, _| seen.contains(node));
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        members
    }
}

/// An edge of the edge state, as the zone considers it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node_id: String,
    pub ip: Option<IpAddr>,
    pub edge: bool,
    pub ingest: bool,
    pub routable: bool,
    pub mode: Mode,
    pub load: u8,
}

/// The edges of `edges` as the zone considers them at `now`.
fn candidates(edges: &EdgeState, now: Instant) -> Vec<Candidate> {
    let mut out = Vec::new();
    edges.for_each_known(now, |node_id, info, mode, routable, stats| {
        out.push(Candidate {
            node_id: node_id.to_string(),
            ip: info.peer_ip,
            edge: info.capabilities.edge,
            ingest: info.capabilities.ingest,
            routable,
            mode,
            load: stats.map_or(0, load_percent),
        });
    });
    out
}

/// An edge's load in percent: the highest of its CPU, its upload against its limit, and its
/// memory.
fn load_percent(stats: &Stats) -> u8 {
    let share = |used: u64, limit: u64| used.saturating_mul(100).checked_div(limit).unwrap_or(0);
    let load = (u64::from(stats.cpu_tenths) / 10)
        .max(share(stats.up_bytes_per_sec, stats.bw_limit_bytes_per_sec))
        .max(share(stats.ram_used_bytes, stats.ram_max_bytes));
    u8::try_from(load.min(100)).unwrap_or(100)
}

/// A served cluster's zone: its current records, swapped whole at each change.
#[derive(Debug)]
pub struct Zone {
    apex: Name,
    settings: Settings,
    data: ArcSwap<ZoneData>,
    presence: Mutex<Presence>,
    challenges: Mutex<Vec<String>>,
}

impl Zone {
    /// The zone `{cluster}.{root}` under `dns`'s settings, empty of edges.
    pub fn new(cluster: &str, root: &str, dns: &DnsConfig) -> Zone {
        let mut apex = Name::from_ascii(format!("{cluster}.{root}."))
            .unwrap_or_else(|_| Name::root())
            .to_lowercase();
        apex.set_fqdn(true);
        let settings = Settings::from_config(dns);
        let desired = Desired::build(&settings, &[], &[]);
        let data = ZoneData::new(&apex, &settings, desired, serial_after(0));
        Zone {
            apex,
            settings,
            data: ArcSwap::from_pointee(data),
            presence: Mutex::new(Presence::default()),
            challenges: Mutex::new(Vec::new()),
        }
    }

    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// The records answered now.
    pub fn data(&self) -> Arc<ZoneData> {
        self.data.load_full()
    }

    /// The `_acme-challenge` TXT values (empty: none), published at the next refresh.
    pub fn set_challenges(&self, values: Vec<String>) {
        *self.challenges.lock() = values;
    }

    /// Rebuilds the zone from `edges` at `now`; whether it changed (and its serial moved).
    pub fn refresh(&self, edges: &EdgeState, now: Instant) -> bool {
        let members = self
            .presence
            .lock()
            .members(candidates(edges, now), now, self.settings.hold);
        let challenges = self.challenges.lock().clone();
        let desired = Desired::build(&self.settings, &members, &challenges);
        let current = self.data.load();
        if current.desired == desired {
            return false;
        }
        let serial = serial_after(current.serial);
        self.data.store(Arc::new(ZoneData::new(
            &self.apex,
            &self.settings,
            desired,
            serial,
        )));
        true
    }
}

/// A serial after `previous`: the Unix time in seconds, or one more than `previous` when that is
/// not later (two changes within a second).
fn serial_after(previous: u32) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    if now > previous {
        now
    } else {
        previous.wrapping_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(node: &str, ip: &str, routable: bool) -> Candidate {
        Candidate {
            node_id: node.into(),
            ip: ip.parse().ok(),
            edge: true,
            ingest: false,
            routable,
            mode: Mode::Normal,
            load: 0,
        }
    }

    /// An edge joins when routable and stays through a reconnect shorter than the hold; it
    /// leaves once unroutable for the hold; an edge the state forgot leaves at once.
    #[test]
    fn hysteresis_keeps_an_edge_through_a_short_outage() {
        let hold = Duration::from_secs(60);
        let mut presence = Presence::default();
        let t0 = Instant::now();
        let ids = |m: Vec<Member>| m.into_iter().map(|m| m.node_id).collect::<Vec<_>>();
        assert!(ids(presence.members([candidate("a", "10.0.0.1", false)], t0, hold)).is_empty());
        assert_eq!(
            ids(presence.members([candidate("a", "10.0.0.1", true)], t0, hold)),
            ["a"]
        );
        let t1 = t0 + Duration::from_secs(59);
        let held = presence.members([candidate("a", "10.0.0.1", false)], t1, hold);
        assert_eq!(ids(held.clone()), ["a"]);
        assert!(!held[0].routable);
        let t2 = t0 + Duration::from_secs(60);
        assert!(ids(presence.members([candidate("a", "10.0.0.1", false)], t2, hold)).is_empty());
        // Routable again, then forgotten by the edge state: gone at once.
        assert_eq!(
            ids(presence.members([candidate("a", "10.0.0.1", true)], t2, hold)),
            ["a"]
        );
        assert!(ids(presence.members([], t2, hold)).is_empty());
        assert!(ids(presence.members([candidate("a", "10.0.0.1", false)], t2, hold)).is_empty());
    }

    /// The same through a zone fed by a real edge state, on paused time: the edge's stats stop
    /// (it is unroutable once the liveness window passes), it stays answered for the hold, then
    /// goes; a reconnect within the hold never takes it out.
    #[tokio::test(start_paused = true)]
    async fn a_zone_holds_an_edge_that_went_quiet_then_drops_it() {
        let edges = EdgeState::new(Duration::from_secs(15));
        let dns = DnsConfig {
            hold: Duration::from_secs(60),
            ..DnsConfig::default()
        };
        let zone = Zone::new("c1", "example.net", &dns);
        let name = LowerName::from(Name::from_ascii("edge-n1.c1.example.net.").expect("name"));
        let answered = |zone: &Zone| matches!(zone.data().lookup(&name, RecordType::A), Lookup::Answer(r) if r.len() == 1);
        let info = crate::edge::EdgeInfo {
            cluster_id: "c1".into(),
            peer_ip: Some("10.1.2.3".parse().expect("ip")),
            capabilities: crate::edge::Capabilities {
                edge: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let session = edges.attach("n1", info.clone(), 0);
        assert!(
            !zone.refresh(&edges, Instant::now()),
            "no stats yet: not routable"
        );
        assert!(!answered(&zone));
        edges.apply_stats(&session, Stats::default());
        assert!(zone.refresh(&edges, Instant::now()));
        assert!(answered(&zone));
        let serial = zone.data().serial;

        // Quiet: unroutable after 15 s, held until 60 s after it last was routable.
        tokio::time::advance(Duration::from_secs(50)).await;
        zone.refresh(&edges, Instant::now());
        assert!(answered(&zone), "held");
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(zone.refresh(&edges, Instant::now()));
        assert!(!answered(&zone), "gone after the hold");
        assert!(zone.data().serial > serial);

        // Back, then a reconnect (session closed, a new one 20 s later): answered throughout.
        let session = edges.attach("n1", info.clone(), 0);
        edges.apply_stats(&session, Stats::default());
        zone.refresh(&edges, Instant::now());
        assert!(answered(&zone));
        edges.detach(&session);
        for _ in 0..4 {
            tokio::time::advance(Duration::from_secs(5)).await;
            zone.refresh(&edges, Instant::now());
            assert!(answered(&zone), "a reconnect does not flap DNS");
        }
        let session = edges.attach("n1", info, 0);
        edges.apply_stats(&session, Stats::default());
        zone.refresh(&edges, Instant::now());
        assert!(answered(&zone));
        assert!(zone.data().desired.names.contains_key(VIEWER_POOL));
    }

    fn member(node: &str, ip: &str, load: u8, routable: bool) -> Member {
        Member {
            node_id: node.into(),
            ip: ip.parse().expect("ip"),
            edge: true,
            ingest: node.starts_with('i'),
            routable,
            normal: true,
            load,
        }
    }

    fn settings(pool_size: usize) -> Settings {
        Settings {
            ttl: 60,
            cell: vec![
                "192.0.2.1".parse().expect("ip"),
                "2001:db8::1".parse().expect("ip"),
            ],
            nameservers: Vec::new(),
            pool_size,
            hold: Duration::from_secs(60),
        }
    }

    /// The pools take the routable edges with the most headroom first, at most `pool_size`;
    /// every member has its own name; the cell answers for `foghorn` and the apex.
    #[test]
    fn pools_prefer_routable_edges_with_headroom() {
        let members = [
            member("a1", "10.0.0.1", 95, true),
            member("b2", "10.0.0.2", 10, true),
            member("c3", "10.0.0.3", 0, false),
            member("i4", "2001:db8::4", 50, true),
            member("d5", "10.0.0.5", 14, true),
        ];
        let desired = Desired::build(&settings(3), &members, &["tok".into()]);
        let pool = &desired.names[VIEWER_POOL];
        // b2 (10 %) and d5 (14 %) share a step; i4 (50 %) next; a1 (95 %) and the held c3 left out.
        assert_eq!(
            pool.a,
            [
                "10.0.0.2".parse::<Ipv4Addr>().expect("ip"),
                "10.0.0.5".parse().expect("ip")
            ]
        );
        assert_eq!(pool.aaaa, ["2001:db8::4".parse::<Ipv6Addr>().expect("ip")]);
        assert_eq!(desired.names[INGEST_POOL].aaaa.len(), 1);
        assert!(desired.names[INGEST_POOL].a.is_empty());
        assert_eq!(
            desired.names["edge-c3"].a.len(),
            1,
            "held edges keep their name"
        );
        assert_eq!(desired.names[FOGHORN].a.len(), 1);
        assert_eq!(desired.names[""].aaaa.len(), 1);
        assert_eq!(desired.names[ACME_CHALLENGE].txt, ["tok"]);
    }

    #[test]
    fn lookups_answer_nodata_and_nxdomain() {
        let apex = Name::from_ascii("c1.example.net.").expect("name");
        let desired = Desired::build(&settings(8), &[member("b2", "10.0.0.2", 0, true)], &[]);
        let zone = ZoneData::new(&apex, &settings(8), desired, 7);
        let name = |s: &str| LowerName::from(Name::from_ascii(s).expect("name"));
        assert!(
            matches!(zone.lookup(&name("EDGE-b2.c1.example.net."), RecordType::A), Lookup::Answer(r) if r.len() == 1)
        );
        assert!(matches!(
            zone.lookup(&name("edge-b2.c1.example.net."), RecordType::AAAA),
            Lookup::NoData
        ));
        assert!(matches!(
            zone.lookup(&name("edge-zz.c1.example.net."), RecordType::A),
            Lookup::NxDomain
        ));
        assert!(
            matches!(zone.lookup(&name("c1.example.net."), RecordType::NS), Lookup::Answer(r) if r.len() == 1)
        );
        assert!(matches!(
            zone.lookup(&name("c1.example.net."), RecordType::MX),
            Lookup::NoData
        ));
        assert!(
            matches!(zone.lookup(&name("edge.c1.example.net."), RecordType::ANY), Lookup::Answer(r) if r.len() == 1)
        );
        // The default name server is foghorn.{zone}, with the cell's addresses as glue.
        assert_eq!(zone.glue().len(), 2);
        let count = zone.records().count();
        // SOA, NS, apex A+AAAA, foghorn A+AAAA, edge-b2 A, edge A.
        assert_eq!(count, 8);
    }
}
