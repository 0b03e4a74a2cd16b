//! Choosing edges: an immutable snapshot of candidates, an exhaustive scan (the oracle), and a
//! pruned best-first search that returns exactly what the exhaustive scan returns.
//!
//! Why the fast search is exact: the carriers of the requested stream (the only candidates that can
//! get the bonus) are all scored. Every other candidate has an upper bound that no evaluation can
//! exceed: its load parts computed with the pending bandwidth of build time (pending only grows
//! until the next build, and more pending only lowers the bandwidth part), minus its
//! cross-cluster penalty, plus the largest geo part any member of its
//! geo group can get for this viewer (from a spherical cap around the group's members, widened by a
//! margin far above float error). Groups and their members are visited in descending bound order,
//! (members by bound, then node id), and a candidate is skipped only when its bound is below the
//! k-th best score found so far, or equal to it with a higher node id (ties go to the lower id),
//! so no skipped candidate could have entered the top k. Under a flood the same holds with each
//! member's bound of now, which a per-group max-tree ([`Bounds`]) keeps as charges land, so runs
//! of members that redirects have already pushed below the k-th best are stepped over at once.
//! A member whose bandwidth the charges used up drops to the bottom of its tree: it can never be
//! picked from this snapshot, so it is stepped over too, before any k-th best is known (a flood
//! that ran most edges dry otherwise scores every one of them on every decision).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use smallvec::SmallVec;
use tokio::time::Instant;

use crate::edge::Pending;

use super::score::{
    acos_fast, bw_part, cpu_part, geo_from_cos, ram_part, Parts, Position, Weights, ACOS_FAST_ERROR,
};

/// What a request needs from an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Serve viewers (`edge` capability).
    Viewers,
    /// Take a publisher (`ingest` capability).
    Ingest,
    /// Be the origin of a stream another edge pulls (any capability; the caller checks inputs).
    Source,
}

/// Everything the selector knows about one edge, frozen at snapshot build time except `pending`.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node_id: Arc<str>,
    pub cluster_id: Arc<str>,
    /// An edge of a peered cluster (pays the cross-cluster penalty).
    pub remote: bool,
    pub base_url: Arc<str>,
    pub serves_viewers: bool,
    pub takes_ingest: bool,
    pub cpu_tenths: u64,
    pub ram_used: u64,
    pub ram_max: u64,
    pub up: u64,
    pub bw_limit: u64,
    pub position: Option<Position>,
    /// Routable until then (last stats + liveness window).
    pub fresh_until: Instant,
    /// Redirects not yet visible in stats: the edge's pending ledger, shared with the edge state
    /// (a redirect debits it directly). Remote edges get a ledger of their own per summary.
    pub pending: Arc<Pending>,
    /// Streams the edge carries, sorted by name.
    pub streams: Arc<[StreamRef]>,
    /// Viewer connections on the edge (for the per-viewer bandwidth estimate).
    pub connections: u32,
    /// The edge's address, when known (MistServer's `?source=` never answers the asking host).
    pub ip: Option<std::net::IpAddr>,
}

/// One stream on one edge, as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRef {
    pub name: Arc<str>,
    pub up: u64,
    pub viewers: u32,
    pub inputs: u32,
    pub replicated: bool,
}

impl StreamRef {
    /// A stream with no load figures (tests, remote summaries that list names only).
    pub fn named(name: &str) -> StreamRef {
        StreamRef {
            name: Arc::from(name),
            up: 0,
            viewers: 0,
            inputs: 0,
            replicated: false,
        }
    }
}

impl Candidate {
    /// The stream on this edge, if it carries it.
    pub fn stream(&self, name: &str) -> Option<&StreamRef> {
        self.streams
            .binary_search_by(|s| s.name.as_ref().cmp(name))
            .ok()
            .map(|i| &self.streams[i])
    }

    fn carries(&self, stream: &str) -> bool {
        self.stream(stream).is_some()
    }
}

/// One request to score against the pool. Entry points make it from an [`Ask`](super::Ask)
/// ([`Snapshot::decide`]); by hand only in tests, benches and [`Snapshot::best_source`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub viewer: Option<Position>,
    pub stream: Option<&'a str>,
    pub need: Need,
    pub now: Instant,
    /// The peered clusters whose edges this request may use: the clusters the stream's tenant may
    /// use (DESIGN.md §7.2, unsubscribed clusters are never scored). Empty: local edges only.
    pub remote_clusters: &'a [Arc<str>],
}

impl Request<'_> {
    /// Whether a candidate of `cluster` may serve this request.
    fn admits(&self, c: &Candidate) -> bool {
        !c.remote
            || self
                .remote_clusters
                .iter()
                .any(|id| Arc::ptr_eq(id, &c.cluster_id) || **id == *c.cluster_id)
    }
}

/// The best picks of a ranking, best first: up to two in place (a redirect asks for one, and
/// the ranking needs room for one more), more on the heap.
pub type Ranked = SmallVec<[Pick; 2]>;

/// A scored candidate: its index in the snapshot and its score parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: u32,
    pub parts: Parts,
}

/// A geo group: members near each other, bounded by a spherical cap.
#[derive(Debug)]
struct Group {
    /// Unit vector of the cap's centre; `None` for the group of edges with unknown position.
    centre: Option<[f64; 3]>,
    /// Angular radius of the cap (radians), margin included (it also covers the viewer side).
    radius: f64,
    /// Members sorted by descending `static_bound`.
    members: Vec<u32>,
    /// Largest `static_bound` of the members.
    max_static: i64,
    /// The members' current bounds as a max-tree (see [`Bounds`]).
    bounds: Bounds,
}

/// The first 16 bytes of a node id as one integer, zero-padded: ids whose prefixes differ
/// compare as their prefixes do, so sorting by it compares whole ids only on equal prefixes.
fn id_prefix(id: &str) -> u128 {
    let mut head = [0u8; 16];
    let n = id.len().min(16);
    head[..n].copy_from_slice(&id.as_bytes()[..n]);
    u128::from_be_bytes(head)
}

/// A bound and a tie place in one ordered integer: a higher bound first, then the lower place
/// (the lower node id). Bounds stay far below 2^31 (weights are at most 10^6), so the shift
/// cannot overflow.
#[inline]
fn key(bound: i64, tie: u32) -> i64 {
    (bound << 32) | i64::from(u32::MAX - tie)
}

/// The key of a member whose bandwidth charges since the build used up (and of padding leaves):
/// below every bound's key, so the scans step over it as over any member that cannot win, with a
/// k-th best to compare with or without.
const EXHAUSTED: i64 = i64::MIN;

/// A group's members' bounds as a max-tree: leaf `j` holds the key ([`key`]) of member `j`'s
/// bound with the pending of its last charge through [`Snapshot::charge`] (of the build before
/// that), each inner node the largest key below it (leaves in member order). Pending added behind
/// the snapshot's back leaves a leaf too high until the next build: a visit more, never a
/// candidate missed. A search reads a member's leaf before its ledger, and
/// steps over a whole aligned block of members at once when the block's largest key cannot enter
/// the top k; so under a flood (redirects pile pending onto the best edges, leaving many at
/// bounds below their static ones) it visits the few members still in contention instead of
/// every member whose static bound is.
///
/// Exact without locks: between two pool builds a member's bound only falls (the pool never
/// uses less pending than it has seen, [`Pool::pending`]), and every value written is computed
/// from values read, each at least the current truth. So every node is always at least the
/// largest current bound below it, whatever the interleaving of concurrent updates; a stale node
/// is only too high, which costs a visit, never a missed candidate.
#[derive(Debug)]
struct Bounds {
    /// Nodes 1.. of the heap layout; leaves from `leaves`, padding leaves hold [`EXHAUSTED`].
    nodes: Box<[AtomicI64]>,
    leaves: usize,
}

impl Bounds {
    fn new(keys: impl ExactSizeIterator<Item = i64>) -> Bounds {
        let leaves = keys.len().next_power_of_two();
        let mut nodes = vec![EXHAUSTED; 2 * leaves];
        for (j, k) in keys.enumerate() {
            nodes[leaves + j] = k;
        }
        for n in (1..leaves).rev() {
            nodes[n] = nodes[2 * n].max(nodes[2 * n + 1]);
        }
        Bounds {
            nodes: nodes.into_iter().map(AtomicI64::new).collect(),
            leaves,
        }
    }

    #[inline]
    fn get(&self, node: usize) -> i64 {
        self.nodes[node].load(Relaxed)
    }

    /// The member with the largest key (the first of equals).
    fn best(&self) -> usize {
        let mut n = 1;
        while n < self.leaves {
            n = if self.get(2 * n) >= self.get(2 * n + 1) {
                2 * n
            } else {
                2 * n + 1
            };
        }
        n - self.leaves
    }

    /// The first member after `j` whose key may reach `floor`, or the leaf count when none may:
    /// up from `j`'s leaf to the first right sibling whose maximum reaches it, then down to that
    /// subtree's first leaf that does. A subtree is passed over only when its maximum was seen
    /// below `floor`, so no member that can reach it is; a maximum lowered by a charge during
    /// the descent can end it on a member that no longer does, a visit more.
    fn next(&self, j: usize, floor: i64) -> usize {
        let mut node = self.leaves + j;
        loop {
            if node == 1 {
                return self.leaves;
            }
            if node.is_multiple_of(2) && self.get(node + 1) >= floor {
                node += 1;
                break;
            }
            node /= 2;
        }
        while node < self.leaves {
            node = if self.get(2 * node) >= floor {
                2 * node
            } else {
                2 * node + 1
            };
        }
        node - self.leaves
    }

    /// Lowers leaf `j` to `key` (never raises it: a key computed from older pending loses to a
    /// newer, lower one) and the maxima above it.
    fn lower(&self, j: usize, key: i64) {
        let mut n = self.leaves + j;
        if self.nodes[n].fetch_min(key, Relaxed) <= key {
            return;
        }
        while n > 1 {
            n /= 2;
            let max = self.get(2 * n).max(self.get(2 * n + 1));
            // Nodes above hold at least this node's old value: they stay upper bounds.
            if self.nodes[n].swap(max, Relaxed) == max {
                return;
            }
        }
    }
}

/// Margin added to cap radii. `acos` near 1 turns a 1-ulp error of its argument into ~1.5e-8 rad,
/// so bounds keep a margin far above that; 1e-6 rad is ~6 m on Earth and ~0.0003 score points.
const CAP_MARGIN: f64 = 1e-6;
/// Geo groups are built from a grid of this many degrees.
const GROUP_DEGREES: f64 = 30.0;
/// Most groups a snapshot can have: grid rows (latitude 90° included) × columns (180° included),
/// plus the group of edges with unknown position.
const MAX_GROUPS: usize = (180 / 30 + 1) * (360 / 30 + 1) + 1;

/// One indexed set of candidates: the local edges, or the remote ones. Local edges change every
/// few seconds and remote ones only when a peer's summary arrives, so each is rebuilt on its own
/// and a snapshot pairs the current two.
#[derive(Debug)]
pub struct Pool {
    weights: Weights,
    candidates: Vec<Candidate>,
    /// Per candidate: load parts with the pending of build time − penalty (may be negative for
    /// remote edges). The stream bonus is not in it: carriers of the requested stream are scored
    /// in a pass of their own (`by_stream`), so under a flood the bonus's slack does not keep
    /// hundreds of level edges from being pruned.
    static_bound: Vec<i64>,
    /// Stream name → candidates carrying it, by geo group.
    by_stream: HashMap<Arc<str>, Carriers>,
    /// Per candidate: its geo group and its place among the group's members.
    group_of: Vec<u32>,
    slot: Vec<u32>,
    /// Per candidate: cpu and ram parts, which do not change between rebuilds.
    cpu_ram: Vec<(u64, u64)>,
    /// Per candidate: the bandwidth part with the pending of build time (what `static_bound`
    /// assumed; pending only grows until the next build, so this part only shrinks).
    bw_built: Vec<u64>,
    /// Per candidate: the most pending this pool has seen, from the pending of build time on.
    /// Scores use this much, so a decrease that lands while this pool is still in use (a newer
    /// one is being built, or a request still holds this one) cannot lift a score above the
    /// bounds: decreases count from the next pool.
    pending_seen: Vec<AtomicU64>,
    /// Per candidate: its place in node-id order (equal ids share one), so the tie rule of
    /// [`Snapshot::rank`] compares two integers instead of two strings.
    tie: Vec<u32>,
    groups: Vec<Group>,
}

/// The carriers of one stream in one pool, in runs of one geo group each, every run in
/// (static bound descending, node id ascending) order: a carrier's bound is its static bound plus
/// the bonus plus its group's geo bound, so a run is scored until its first member that cannot
/// enter the top k, and the rest of the run is stepped over.
#[derive(Debug, Default)]
struct Carriers {
    members: Vec<u32>,
    /// Per run: its group and the end of its members.
    runs: Vec<(u32, u32)>,
}

fn unit_vector(p: &Position) -> [f64; 3] {
    [p.cos_lat * p.lon.cos(), p.cos_lat * p.lon.sin(), p.sin_lat]
}

/// The cosine of the angle between two unit vectors.
fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (a[0] * b[0] + a[1] * b[1] + a[2] * b[2]).clamp(-1.0, 1.0)
}

fn angle_between(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    dot(a, b).acos()
}

impl Pool {
    /// Builds a pool and its index.
    ///
    /// Relies on the pending-ledger contract (`edge::Pending::settle`): until the next build, a
    /// candidate's pending only grows. Bounds therefore use the pending read now, and candidates
    /// that cannot be chosen before the next build are left out: no RAM or bandwidth limit, no
    /// capability, or bandwidth already used up.
    pub fn build(weights: Weights, candidates: Vec<Candidate>) -> Pool {
        // Each ledger is read once: the figure that admits a candidate is the one its bounds use.
        let (candidates, pending_built): (Vec<Candidate>, Vec<u64>) = candidates
            .into_iter()
            .map(|c| {
                let pending = c.pending.current();
                (c, pending)
            })
            .filter(|(c, pending)| {
                c.ram_max > 0
                    && c.bw_limit > 0
                    && (c.serves_viewers || c.takes_ingest)
                    && c.up.saturating_add(*pending) < c.bw_limit
            })
            .unzip();
        let cpu_ram: Vec<(u64, u64)> = candidates
            .iter()
            .map(|c| {
                (
                    cpu_part(weights.cpu, c.cpu_tenths),
                    ram_part(weights.ram, c.ram_used, c.ram_max),
                )
            })
            .collect();
        let bw_built: Vec<u64> = candidates
            .iter()
            .zip(&pending_built)
            .map(|(c, &pending)| bw_part(weights.bw, c.up, pending, c.bw_limit))
            .collect();
        let static_bound: Vec<i64> = candidates
            .iter()
            .zip(cpu_ram.iter().zip(&bw_built))
            .map(|(c, ((cpu, ram), bw))| {
                let load = cpu + ram + bw;
                let penalty = if c.remote {
                    super::score::CROSS_CLUSTER_PENALTY
                } else {
                    0
                };
                load as i64 - penalty as i64
            })
            .collect();

        let prefix: Vec<u128> = candidates.iter().map(|c| id_prefix(&c.node_id)).collect();
        let mut by_id: Vec<u32> = (0..candidates.len() as u32).collect();
        by_id.sort_unstable_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            prefix[a]
                .cmp(&prefix[b])
                .then_with(|| candidates[a].node_id.cmp(&candidates[b].node_id))
        });
        let mut tie = vec![0u32; candidates.len()];
        let mut place = 0u32;
        for (n, &i) in by_id.iter().enumerate() {
            if n > 0 && candidates[by_id[n - 1] as usize].node_id != candidates[i as usize].node_id
            {
                place += 1;
            }
            tie[i as usize] = place;
        }

        let mut cells: HashMap<(i32, i32), Vec<u32>> = HashMap::new();
        let mut unknown = Vec::new();
        let mut carrying: HashMap<Arc<str>, Vec<u32>> = HashMap::new();
        for (i, c) in candidates.iter().enumerate() {
            let i = i as u32;
            for s in c.streams.iter() {
                carrying.entry(s.name.clone()).or_default().push(i);
            }
            match &c.position {
                Some(p) => {
                    let lat = p.sin_lat.asin().to_degrees();
                    let lon = p.lon.to_degrees();
                    let key = (
                        ((lat + 90.0) / GROUP_DEGREES).floor() as i32,
                        ((lon + 180.0) / GROUP_DEGREES).floor() as i32,
                    );
                    cells.entry(key).or_default().push(i);
                }
                None => unknown.push(i),
            }
        }
        // Descending bound, then ascending node id: the order ties are broken in.
        let key_of = |i: u32| key(static_bound[i as usize], tie[i as usize]);
        let sort_members = |members: &mut Vec<u32>| {
            members.sort_unstable_by_key(|&i| std::cmp::Reverse(key_of(i)));
        };
        let bounds = |members: &[u32]| Bounds::new(members.iter().map(|&i| key_of(i)));
        let mut groups = Vec::with_capacity(cells.len() + 1);
        for (_, mut members) in cells {
            let mut sum = [0.0f64; 3];
            for &i in &members {
                let v = unit_vector(
                    candidates[i as usize]
                        .position
                        .as_ref()
                        .expect("grouped by position"),
                );
                for k in 0..3 {
                    sum[k] += v[k];
                }
            }
            let norm = (sum[0] * sum[0] + sum[1] * sum[1] + sum[2] * sum[2]).sqrt();
            // Members of one 30° cell never cancel out, so the sum is far from zero.
            let centre = [sum[0] / norm, sum[1] / norm, sum[2] / norm];
            let radius = members
                .iter()
                .map(|&i| {
                    let p = candidates[i as usize].position.as_ref().expect("grouped");
                    angle_between(&centre, &unit_vector(p))
                })
                .fold(0.0f64, f64::max)
                + 2.0 * CAP_MARGIN;
            sort_members(&mut members);
            let max_static = static_bound[members[0] as usize];
            groups.push(Group {
                centre: Some(centre),
                radius,
                bounds: bounds(&members),
                members,
                max_static,
            });
        }
        if !unknown.is_empty() {
            sort_members(&mut unknown);
            let max_static = static_bound[unknown[0] as usize];
            groups.push(Group {
                centre: None,
                radius: 0.0,
                bounds: bounds(&unknown),
                members: unknown,
                max_static,
            });
        }
        let mut group_of = vec![0u32; candidates.len()];
        let mut slot = vec![0u32; candidates.len()];
        for (g, group) in groups.iter().enumerate() {
            for (j, &i) in group.members.iter().enumerate() {
                group_of[i as usize] = g as u32;
                slot[i as usize] = j as u32;
            }
        }
        let by_stream = carrying
            .into_iter()
            .map(|(name, mut members)| {
                members.sort_unstable_by_key(|&i| {
                    (group_of[i as usize], std::cmp::Reverse(key_of(i)))
                });
                let mut runs: Vec<(u32, u32)> = Vec::new();
                for (n, &i) in members.iter().enumerate() {
                    let g = group_of[i as usize];
                    match runs.last_mut() {
                        Some((last, end)) if *last == g => *end = n as u32 + 1,
                        _ => runs.push((g, n as u32 + 1)),
                    }
                }
                (name, Carriers { members, runs })
            })
            .collect();
        Pool {
            tie,
            weights,
            candidates,
            static_bound,
            cpu_ram,
            bw_built,
            pending_seen: pending_built.into_iter().map(AtomicU64::new).collect(),
            groups,
            by_stream,
            group_of,
            slot,
        }
    }

    /// An empty pool.
    pub fn empty(weights: Weights) -> Pool {
        Pool::build(weights, Vec::new())
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// A candidate's pending now, never below what this pool has seen (see `pending_seen`): to
    /// this pool a ledger only grows.
    #[inline]
    fn pending(&self, index: u32) -> u64 {
        let now = self.candidates[index as usize].pending.current();
        let seen = &self.pending_seen[index as usize];
        let before = seen.load(Relaxed);
        if now > before {
            seen.fetch_max(now, Relaxed).max(now)
        } else {
            before
        }
    }

    /// Candidate `i`'s key at build time.
    #[inline]
    fn static_key(&self, i: u32) -> i64 {
        key(self.static_bound[i as usize], self.tie[i as usize])
    }

    /// Brings candidate `i`'s leaf in its group's tree down to its key of now: its bound (load
    /// parts − penalty, without geo and bonus) with its pending of now, i.e. the static bound
    /// less what the pending since the build took off the bandwidth part. Or to [`EXHAUSTED`]
    /// once that pending used up its bandwidth: pending only grows while this pool is in use
    /// ([`Pool::pending`]) and `up` and the limit are the build's, so it stays ineligible.
    fn refresh(&self, i: u32) {
        let c = &self.candidates[i as usize];
        let pending = self.pending(i);
        let key = if c.up.saturating_add(pending) >= c.bw_limit {
            EXHAUSTED
        } else {
            let bw_now = bw_part(self.weights.bw, c.up, pending, c.bw_limit);
            let lost = self.bw_built[i as usize].saturating_sub(bw_now) as i64;
            key(self.static_bound[i as usize] - lost, self.tie[i as usize])
        };
        self.groups[self.group_of[i as usize] as usize]
            .bounds
            .lower(self.slot[i as usize] as usize, key);
    }

    /// Candidate `i`'s leaf in its group's tree: its key of now, or [`EXHAUSTED`].
    #[inline]
    fn leaf(&self, i: u32) -> i64 {
        let group = &self.groups[self.group_of[i as usize] as usize];
        group
            .bounds
            .get(group.bounds.leaves + self.slot[i as usize] as usize)
    }

    /// The exact score of one candidate for `req`, or `None` when it is not eligible.
    fn score(&self, index: u32, req: &Request<'_>) -> Option<Parts> {
        let c = &self.candidates[index as usize];
        let capable = match req.need {
            Need::Viewers => c.serves_viewers,
            Need::Ingest => c.takes_ingest,
            Need::Source => true,
        };
        if !capable || req.now >= c.fresh_until || !req.admits(c) {
            return None;
        }
        let pending = self.pending(index);
        if c.up.saturating_add(pending) >= c.bw_limit {
            return None; // bandwidth exhausted
        }
        let w = &self.weights;
        let geo = match (&req.viewer, &c.position) {
            (Some(v), Some(e)) => geo_from_cos(w.geo, v.cos_angle(e)),
            _ => 0,
        };
        let bonus = match req.stream {
            Some(s) if c.carries(s) => w.bonus,
            _ => 0,
        };
        let (cpu, ram) = self.cpu_ram[index as usize];
        Parts::new(
            cpu,
            ram,
            bw_part(w.bw, c.up, pending, c.bw_limit),
            geo,
            bonus,
            c.remote,
        )
    }
}

/// The k-th best pick so far, as the tie rule needs it.
#[derive(Debug, Clone, Copy)]
struct Kth<'a> {
    remote: bool,
    /// Its pool (0 local, 1 remote) and place in that pool's node-id order.
    pool: usize,
    tie: u32,
    node_id: &'a str,
}

/// Whether candidate `i` of pool `p` comes after the k-th pick among equal totals: by remote
/// flag (local first), then node id. Within one pool the node-id order is the pool's `tie`.
#[inline]
fn after(pool: &Pool, p: usize, i: u32, kth: &Kth<'_>) -> bool {
    let c = &pool.candidates[i as usize];
    if c.remote != kth.remote {
        return c.remote;
    }
    if p == kth.pool {
        pool.tie[i as usize] > kth.tie
    } else {
        &*c.node_id > kth.node_id
    }
}

/// The lowest key ([`key`], geo bound included) with which a member of pool `p` (0 local, 1
/// remote) can still enter the top k when the k-th best has total `t`: in the k-th's own pool the
/// k-th's own key (at or before it in the tie order); a remote member must beat a local k-th's
/// total; any other member may equal it.
#[inline]
fn floor(p: usize, t: i64, kth: &Kth<'_>) -> i64 {
    if p == kth.pool {
        key(t, kth.tie)
    } else if p == 1 && !kth.remote {
        key(t + 1, u32::MAX)
    } else {
        key(t, u32::MAX)
    }
}

/// A group to visit, as one integer that sorts by bound: the bound of the group's best member
/// (geo bound included) above, the pool (0 local, 1 remote) and the group below.
/// Bounds stay far below 2^40 (see [`key`]), so the shift cannot overflow.
#[inline]
fn group_entry(bound: i64, pool: usize, group: usize) -> i64 {
    (bound << 8) | (pool * MAX_GROUPS + group) as i64
}

const _: () = assert!(
    2 * MAX_GROUPS <= 256,
    "a pool and group fit in a group entry's byte"
);

/// The bound, pool and group of a [`group_entry`].
#[inline]
fn group_of_entry(entry: i64) -> (i64, usize, usize) {
    let slot = (entry & 0xff) as usize;
    (entry >> 8, slot / MAX_GROUPS, slot % MAX_GROUPS)
}

/// An immutable view of the routable edges: the local pool and the remote pool, built with the
/// same weights. Picks index the local candidates first, then the remote ones.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pools: [Arc<Pool>; 2],
    /// Both pools' groups as [`Snapshot::rank`] visits them when the viewer's position is
    /// unknown (every geo part 0), as [`group_entry`]s, best bound first.
    blind_order: Vec<i64>,
}

impl Snapshot {
    /// Builds both pools from one list (local and remote candidates mixed).
    pub fn build(weights: Weights, candidates: Vec<Candidate>) -> Snapshot {
        let (remote, local): (Vec<Candidate>, Vec<Candidate>) =
            candidates.into_iter().partition(|c| c.remote);
        Snapshot::from_pools(
            Arc::new(Pool::build(weights, local)),
            Arc::new(Pool::build(weights, remote)),
        )
    }

    /// Pairs a local and a remote pool; both must have been built with the same weights.
    pub fn from_pools(local: Arc<Pool>, remote: Arc<Pool>) -> Snapshot {
        assert_eq!(
            local.weights, remote.weights,
            "both pools of a snapshot are built with the same weights"
        );
        assert!(
            local.candidates.iter().all(|c| !c.remote)
                && remote.candidates.iter().all(|c| c.remote),
            "the local pool holds local edges and the remote pool remote ones"
        );
        let mut blind_order: Vec<i64> = [&local, &remote]
            .iter()
            .enumerate()
            .flat_map(|(p, pool)| {
                pool.groups
                    .iter()
                    .enumerate()
                    .map(move |(g, group)| group_entry(group.max_static, p, g))
            })
            .collect();
        blind_order.sort_unstable_by_key(|&e| std::cmp::Reverse(e));
        Snapshot {
            pools: [local, remote],
            blind_order,
        }
    }

    pub fn weights(&self) -> Weights {
        self.pools[0].weights
    }

    /// The local pool (reused by the next snapshot when only remote edges change).
    pub fn local(&self) -> &Arc<Pool> {
        &self.pools[0]
    }

    /// The remote pool (reused by the next snapshot when only local edges change).
    pub fn remote(&self) -> &Arc<Pool> {
        &self.pools[1]
    }

    /// Every candidate, local first, in pick-index order.
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.pools.iter().flat_map(|p| p.candidates.iter())
    }

    pub fn len(&self) -> usize {
        self.pools[0].len() + self.pools[1].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pool (0 local, 1 remote) and the index within it of a pick index.
    fn place(&self, index: u32) -> (usize, u32) {
        let local = self.pools[0].candidates.len() as u32;
        if index < local {
            (0, index)
        } else {
            (1, index - local)
        }
    }

    /// The pool and the index within it of a pick index.
    fn locate(&self, index: u32) -> (&Pool, u32) {
        let (pool, i) = self.place(index);
        (&self.pools[pool], i)
    }

    /// Charges the candidate at a pick index one viewer's bandwidth (`bytes_per_sec`, from `now`)
    /// and lowers its bound in the search tree, so the next decisions look past it at once.
    pub fn charge(&self, index: u32, bytes_per_sec: u64, now: Instant) {
        let (pool, i) = self.locate(index);
        pool.candidates[i as usize].pending.add(bytes_per_sec, now);
        pool.refresh(i);
    }

    /// The candidate at a pick index.
    pub fn get(&self, index: u32) -> &Candidate {
        let (pool, i) = self.locate(index);
        &pool.candidates[i as usize]
    }

    pub fn candidate(&self, pick: &Pick) -> &Candidate {
        self.get(pick.index)
    }

    /// The exact score of one candidate for `req`, or `None` when it is not eligible.
    pub fn score(&self, index: u32, req: &Request<'_>) -> Option<Parts> {
        let (pool, i) = self.locate(index);
        pool.score(i, req)
    }

    /// Whether `a` ranks before `b`: higher total; on a tie a local edge before a remote one (a
    /// remote edge must beat the best local one by more than the penalty), then the lower node id
    /// (then the lower index, so the order stays total should two peers report the same node id).
    fn better(&self, a: &Pick, b: &Pick) -> bool {
        match a.parts.total.cmp(&b.parts.total) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => {
                let (ca, cb) = (self.get(a.index), self.get(b.index));
                (ca.remote, &ca.node_id, a.index) < (cb.remote, &cb.node_id, b.index)
            }
        }
    }

    /// Inserts into the ranked `top` (at most `k` long), ignoring duplicates.
    fn offer(&self, top: &mut Ranked, k: usize, pick: Pick) {
        if top.iter().any(|p| p.index == pick.index) {
            return;
        }
        let pos = top
            .iter()
            .position(|p| self.better(&pick, p))
            .unwrap_or(top.len());
        if pos < k {
            top.insert(pos, pick);
            top.truncate(k);
        }
    }

    /// The best local origin of `stream`: carries it with an input, is not a replica, is not the
    /// asking host; scored from `position`. Remote edges are never origins here: a stream live on
    /// a peer is pulled through an arranged origin pull.
    pub fn best_source(
        &self,
        stream: &str,
        asker: Option<std::net::IpAddr>,
        position: Option<Position>,
        now: Instant,
    ) -> Option<&Candidate> {
        let req = Request {
            viewer: position,
            stream: Some(stream),
            need: Need::Source,
            now,
            remote_clusters: &[],
        };
        let mut best: Option<(Pick, &Candidate)> = None;
        for (i, c) in self.pools[0].candidates.iter().enumerate() {
            let Some(s) = c.stream(stream) else { continue };
            if s.inputs == 0 || s.replicated || (c.ip.is_some() && c.ip == asker) {
                continue;
            }
            let Some(parts) = self.score(i as u32, &req) else {
                continue;
            };
            let pick = Pick {
                index: i as u32,
                parts,
            };
            if best.as_ref().is_none_or(|(b, _)| self.better(&pick, b)) {
                best = Some((pick, c));
            }
        }
        best.map(|(_, c)| c)
    }

    /// The oracle: scores every candidate and returns the best `k`, best first.
    pub fn rank_exhaustive(&self, req: &Request<'_>, k: usize) -> Ranked {
        let mut top = Ranked::with_capacity(k + 1);
        for index in 0..self.len() as u32 {
            if let Some(parts) = self.score(index, req) {
                self.offer(&mut top, k, Pick { index, parts });
            }
        }
        top
    }

    /// The best `k` eligible candidates, best first: exactly [`Snapshot::rank_exhaustive`].
    pub fn rank(&self, req: &Request<'_>, k: usize) -> Ranked {
        let mut top = Ranked::with_capacity(k + 1);
        if k == 0 {
            return top;
        }
        let offsets = [0u32, self.pools[0].candidates.len() as u32];
        // Without a peered cluster to use, the remote pool is not looked at at all.
        let pools = if req.remote_clusters.is_empty() { 1 } else { 2 };
        // A group's geo bound for this viewer: the most geo points any member can get (0 for
        // every group when the viewer's position is unknown, and for the unplaced group).
        let viewer = req.viewer.as_ref().map(unit_vector);
        let w_geo = self.weights().geo;
        let geo_per_radian = w_geo as f64 / std::f64::consts::PI;
        let geo_of = |group: &Group| -> i64 {
            match (&viewer, &group.centre) {
                (Some(v), Some(c)) => {
                    // A bound: the nearest angle taken smaller than it can be, by far more than
                    // the float error of the product below, so the truncation cannot land above
                    // a member's exact `⌊w·d⌋`.
                    let angle = acos_fast(dot(v, c)) - ACOS_FAST_ERROR;
                    let nearest = (angle - group.radius).max(0.0);
                    let lost = ((nearest * geo_per_radian) as u64).min(w_geo);
                    (w_geo - lost) as i64
                }
                _ => 0,
            }
        };
        // Group bounds for this viewer, the used pools' groups together, visited best first
        // ([`group_entry`]s: a group's geo bound is its entry's bound less its static maximum),
        // on the stack, no allocation per request. Without a viewer position the order is the
        // snapshot's own, and the array is not even zeroed.
        let mut sorted: [i64; 2 * MAX_GROUPS];
        let order: &[i64] = if viewer.is_none() {
            &self.blind_order
        } else {
            sorted = [0; 2 * MAX_GROUPS];
            let mut n = 0;
            for (p, pool) in self.pools.iter().enumerate().take(pools) {
                for (g, group) in pool.groups.iter().enumerate() {
                    sorted[n] = group_entry(geo_of(group) + group.max_static, p, g);
                    n += 1;
                }
            }
            let sorted = &mut sorted[..n];
            sorted.sort_unstable_by_key(|&e| std::cmp::Reverse(e));
            sorted
        };
        // The k-th best so far: its total, whether it is remote, and its node id. A candidate
        // whose bound is below that total, or equal to it and after it in the tie order (local
        // first, then the lower id), cannot enter the top k. Under a flood, redirects level many
        // edges to the same score, so the tie rule is what keeps the scan short.
        let threshold = |top: &Ranked| -> Option<(i64, Kth<'_>)> {
            (top.len() == k).then(|| {
                let (pool, i) = self.place(top[k - 1].index);
                let c = &self.pools[pool].candidates[i as usize];
                let kth = Kth {
                    remote: c.remote,
                    pool,
                    tie: self.pools[pool].tie[i as usize],
                    node_id: &c.node_id,
                };
                (top[k - 1].parts.total as i64, kth)
            })
        };
        // Carriers of the stream first: they alone can get the bonus, so their bound is their own
        // (static + bonus + their group's geo bound). The scan below then bounds everyone without
        // the bonus, and skips the carriers it meets again.
        let bonus = self.weights().bonus as i64;
        let mut bar = threshold(&top);
        // Per pool, the floor of the k-th best (see `floor`), kept with `bar`.
        let floors_of = |bar: &Option<(i64, Kth<'_>)>| {
            bar.as_ref().map_or([i64::MIN; 2], |(t, kth)| {
                [floor(0, *t, kth), floor(1, *t, kth)]
            })
        };
        let mut floors = floors_of(&bar);
        let mut any_carrier = false;
        for (p, pool) in self.pools.iter().enumerate().take(pools) {
            let Some(carriers) = req.stream.and_then(|s| pool.by_stream.get(s)) else {
                continue;
            };
            any_carrier = true;
            let mut start = 0;
            for &(g, end) in &carriers.runs {
                let geo = geo_of(&pool.groups[g as usize]);
                for &i in &carriers.members[start as usize..end as usize] {
                    // Its leaf: its bound with the charges since the build (bonus and geo
                    // bound added to compare), or exhausted.
                    let reach = match &bar {
                        Some((t, kth_id)) => {
                            let bound = pool.static_bound[i as usize] + bonus + geo;
                            if bound < *t || (bound == *t && after(pool, p, i, kth_id)) {
                                break; // the rest of the run is in (bound desc, node id asc) order
                            }
                            floors[p] - ((bonus + geo) << 32)
                        }
                        None => EXHAUSTED + 1,
                    };
                    if pool.leaf(i) < reach {
                        continue;
                    }
                    if let Some(parts) = pool.score(i, req) {
                        let index = offsets[p] + i;
                        self.offer(&mut top, k, Pick { index, parts });
                        bar = threshold(&top);
                        floors = floors_of(&bar);
                    }
                }
                start = end;
            }
        }
        for &entry in order {
            let (group_bound, p, g) = group_of_entry(entry);
            if p >= pools {
                continue;
            }
            let pool = &self.pools[p];
            let group = &pool.groups[g];
            let geo_bound = group_bound - group.max_static;
            if let Some((t, _)) = &bar {
                if group_bound < *t {
                    break; // groups are in descending bound order
                }
            }
            // Members in (static bound, node id) order, as far as the static bound can still
            // reach the k-th best; a run of members whose keys of now (geo bound added) are all
            // below its floor is stepped over at once through the group's tree.
            let tree = &group.bounds;
            let geo_key = geo_bound << 32;
            // The lowest key of now (geo bound taken off) that can still enter the top k;
            // without a k-th best yet, any member not exhausted.
            let reach = |bar: &Option<(i64, Kth<'_>)>, floors: &[i64; 2]| match bar {
                Some(_) => floors[p] - geo_key,
                None => EXHAUSTED + 1,
            };
            if tree.get(1) < reach(&bar, &floors) {
                continue; // no member's key of now reaches it (the root is their maximum)
            }
            // When charges have lowered the group's first member, the best of the group now is
            // elsewhere: it is scored first (found down the tree), so the k-th best is tight
            // before the scan instead of rising member by member.
            let mut first =
                (tree.get(tree.leaves) < pool.static_key(group.members[0])).then(|| tree.best());
            let mut j = 0;
            loop {
                let i = if let Some(best) = first.take() {
                    group.members[best]
                } else if j < group.members.len() {
                    let i = group.members[j];
                    if let Some((t, kth)) = &bar {
                        let bound = geo_bound + pool.static_bound[i as usize];
                        if bound < *t || (bound == *t && after(pool, p, i, kth)) {
                            break; // members come in (bound desc, node id asc) order
                        }
                    }
                    // The member's key of now (charges since the build lowered it, or
                    // exhausted): still an upper bound, so still exact.
                    let floor = reach(&bar, &floors);
                    if tree.get(tree.leaves + j) < floor {
                        j = tree.next(j, floor);
                        continue;
                    }
                    j += 1;
                    i
                } else {
                    break;
                };
                let c = &pool.candidates[i as usize];
                if any_carrier && req.stream.is_some_and(|s| c.carries(s)) {
                    continue; // scored in the carriers' pass
                }
                if let Some(parts) = pool.score(i, req) {
                    let index = offsets[p] + i;
                    self.offer(&mut top, k, Pick { index, parts });
                    bar = threshold(&top);
                    floors = floors_of(&bar);
                }
            }
        }
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Both peered clusters of the test pools.
    fn peers() -> [Arc<str>; 2] {
        [Arc::from("peer-a"), Arc::from("peer-b")]
    }

    fn candidate(
        i: usize,
        lat: Option<f64>,
        lon: f64,
        load: (u64, u64, u64, u64),
        remote: bool,
        streams: &[&str],
    ) -> Candidate {
        let (cpu, ram_used, up, pending) = load;
        let mut streams: Vec<StreamRef> = streams.iter().map(|s| StreamRef::named(s)).collect();
        streams.sort_by(|a, b| a.name.cmp(&b.name));
        streams.dedup();
        Candidate {
            node_id: Arc::from(format!("{i:012x}").as_str()),
            cluster_id: Arc::from(match (remote, i % 3) {
                (false, _) => "local",
                (true, 0) => "peer-b",
                (true, _) => "peer-a",
            }),
            remote,
            base_url: Arc::from(""),
            serves_viewers: true,
            takes_ingest: i.is_multiple_of(3),
            cpu_tenths: cpu,
            ram_used,
            ram_max: 16 << 30,
            up,
            bw_limit: 125_000_000,
            position: lat.and_then(|lat| Position::from_degrees(lat, lon)),
            fresh_until: Instant::now() + Duration::from_secs(3600),
            pending: Arc::new(Pending::starting_at(pending)),
            streams: streams.into(),
            connections: 0,
            ip: None,
        }
    }

    fn arb_pool() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec(
            (
                proptest::option::weighted(0.9, -90.0f64..=90.0),
                -180.0f64..=180.0,
                0u64..=1100,
                0u64..=(20u64 << 30),
                0u64..=130_000_000,
                prop_oneof![Just(0u64), 0u64..=2_000_000],
                any::<bool>(),
                proptest::collection::vec(
                    prop_oneof![Just("live+a"), Just("live+b"), Just("live+c")],
                    0..3,
                ),
                // Two peers may report the same node id (an operator's hint like "berlin-1").
                proptest::bool::weighted(0.15),
            ),
            0..120,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(
                    |(i, (lat, lon, cpu, ram, up, pending, remote, streams, shared_id))| {
                        let mut c =
                            candidate(i, lat, lon, (cpu, ram, up, pending), remote, &streams);
                        if shared_id {
                            c.node_id = Arc::from(format!("{:012x}", i % 5).as_str());
                        }
                        c
                    },
                )
                .collect()
        })
    }

    proptest! {
        /// Prefix first, then the whole id: the order of the ids themselves (ids that share a
        /// prefix, one a prefix of the other, longer than 16 bytes).
        #[test]
        fn id_prefix_then_id_orders_as_ids(a in "[ab\\x00]{0,20}", b in "[ab\\x00]{0,20}") {
            let by_prefix = id_prefix(&a).cmp(&id_prefix(&b)).then_with(|| a.cmp(&b));
            prop_assert_eq!(by_prefix, a.cmp(&b));
            if id_prefix(&a) != id_prefix(&b) {
                prop_assert_eq!(id_prefix(&a).cmp(&id_prefix(&b)), a.cmp(&b));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// The pruned search returns exactly the exhaustive ranking, for any pool, viewer,
        /// stream and k.
        #[test]
        fn fast_rank_equals_exhaustive(
            pool in arb_pool(),
            viewer in proptest::option::weighted(0.85, (-90.0f64..=90.0, -180.0f64..=180.0)),
            stream in proptest::option::of(prop_oneof![Just("live+a"), Just("live+b"), Just("live+zzz")]),
            ingest in any::<bool>(),
            k in 1usize..=5,
            growth in proptest::collection::vec((0usize..120, 0u64..=60_000_000, any::<bool>()), 0..20),
            shrink in proptest::collection::vec(0usize..120, 0..10),
            peered in 0usize..=2,
        ) {
            let snapshot = Snapshot::build(Weights::default(), pool);
            let req = Request {
                viewer: viewer.and_then(|(lat, lon)| Position::from_degrees(lat, lon)),
                stream,
                need: if ingest { Need::Ingest } else { Need::Viewers },
                now: Instant::now(),
                // None, one or both of the peered clusters may be used.
                remote_clusters: &peers()[..peered],
            };
            // Redirects after the build: pending grows, through the snapshot (which lowers the
            // search tree) or behind its back (another replica's share, a stale tree), with
            // searches in between that see each step.
            for (i, more, charged) in growth {
                if i < snapshot.len() {
                    if charged {
                        snapshot.charge(i as u32, more, Instant::now());
                    } else {
                        snapshot.get(i as u32).pending.add(more, Instant::now());
                    }
                    prop_assert_eq!(snapshot.rank(&req, k), snapshot.rank_exhaustive(&req, k));
                }
            }
            // And ledgers settled for the next build while this snapshot is still in use: the
            // decrease must not lift scores above this snapshot's bounds.
            for i in shrink {
                if let Some(c) = snapshot.candidates().nth(i) {
                    c.pending.clear();
                    c.pending.settle();
                }
            }
            prop_assert_eq!(snapshot.rank(&req, k), snapshot.rank_exhaustive(&req, k));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Edges packed metres apart around a few sites, viewers on top of them: the geo bounds'
        /// float margins are where an inexact search would slip.
        #[test]
        fn fast_rank_equals_exhaustive_in_dense_clusters(
            sites in proptest::collection::vec((-89.0f64..=89.0, -179.0f64..=179.0), 1..4),
            edges in proptest::collection::vec((0usize..4, -1e-4f64..1e-4, -1e-4f64..1e-4, 0u64..=1000, 0u64..=130_000_000), 1..80),
            viewer_site in 0usize..4,
            viewer_jitter in -1e-4f64..1e-4,
            k in 1usize..=5,
        ) {
            let pool: Vec<Candidate> = edges
                .iter()
                .enumerate()
                .map(|(i, (site, dlat, dlon, cpu, up))| {
                    let (lat, lon) = sites[site % sites.len()];
                    candidate(i, Some(lat + dlat), lon + dlon, (*cpu, 4 << 30, *up, 0), i % 2 == 0, &["live+a"])
                })
                .collect();
            let (lat, lon) = sites[viewer_site % sites.len()];
            let snapshot = Snapshot::build(Weights::default(), pool);
            let req = Request {
                viewer: Position::from_degrees(lat + viewer_jitter, lon),
                stream: Some("live+a"),
                need: Need::Viewers,
                now: Instant::now(),
                remote_clusters: &peers(),
            };
            prop_assert_eq!(snapshot.rank(&req, k), snapshot.rank_exhaustive(&req, k));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Many edges at exactly the same score (a flood levels them): the tie rule prunes, and
        /// the answer is still the exhaustive one.
        #[test]
        fn fast_rank_equals_exhaustive_with_many_ties(
            n in 1usize..150,
            levels in proptest::collection::vec(0u64..3, 150),
            growth in proptest::collection::vec((0usize..150, prop_oneof![Just(131_072u64), Just(262_144)]), 0..40),
            viewer_known in any::<bool>(),
            k in 1usize..=5,
            carried in proptest::collection::vec(any::<bool>(), 150),
            stream in proptest::option::of(Just("live+a")),
        ) {
            let pool: Vec<Candidate> = (0..n)
                .map(|i| {
                    // Three pending levels: many edges share each score exactly, carriers of the
                    // stream among them, in two sites (two geo groups, two runs of carriers).
                    let streams: &[&str] = if carried[i] { &["live+a"] } else { &[] };
                    let lon = if i % 4 == 0 { 40.0 } else { 8.0 };
                    candidate(i, Some(50.0), lon, (300, 4 << 30, 10_000_000, levels[i] * 131_072), i % 7 == 0, streams)
                })
                .collect();
            let snapshot = Snapshot::build(Weights::default(), pool);
            let req = Request {
                viewer: if viewer_known { Position::from_degrees(50.0, 8.0) } else { None },
                stream,
                need: Need::Viewers,
                now: Instant::now(),
                remote_clusters: &peers(),
            };
            for (i, more) in growth {
                if i < snapshot.len() {
                    snapshot.charge(i as u32, more, Instant::now());
                }
            }
            prop_assert_eq!(snapshot.rank(&req, k), snapshot.rank_exhaustive(&req, k));
            // A flood: every decision charges its winner, each answer still the oracle's.
            for _ in 0..20 {
                let top = snapshot.rank(&req, k);
                prop_assert_eq!(&top, &snapshot.rank_exhaustive(&req, k));
                let Some(best) = top.first() else { break };
                snapshot.charge(best.index, 131_072, Instant::now());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// A flood that runs the pool dry: every decision charges its winner until no edge has
        /// bandwidth left. Exhausted edges drop to the bottom of their trees and are stepped
        /// over, with or without a k-th best to compare with; every answer is still the oracle's,
        /// down to the empty one.
        #[test]
        fn a_flood_that_exhausts_the_pool_gets_the_oracles_answers(
            pool in arb_pool(),
            viewer in proptest::option::weighted(0.8, (-90.0f64..=90.0, -180.0f64..=180.0)),
            stream in proptest::option::of(Just("live+a")),
            k in 1usize..=3,
            charge in 5_000_000u64..=80_000_000,
            behind in proptest::collection::vec(any::<bool>(), 64),
        ) {
            let snapshot = Snapshot::build(Weights::default(), pool);
            let req = Request {
                viewer: viewer.and_then(|(lat, lon)| Position::from_degrees(lat, lon)),
                stream,
                need: Need::Viewers,
                now: Instant::now(),
                remote_clusters: &peers(),
            };
            let mut emptied = false;
            for n in 0..(snapshot.len() * 40 + 1) {
                let top = snapshot.rank(&req, k);
                prop_assert_eq!(&top, &snapshot.rank_exhaustive(&req, k));
                let Some(last) = top.last() else {
                    emptied = true;
                    break;
                };
                // The winner through the snapshot, the k-th now and then behind its back.
                snapshot.charge(top[0].index, charge, req.now);
                if behind[n % behind.len()] {
                    snapshot.get(last.index).pending.add(charge, req.now);
                }
            }
            prop_assert!(emptied, "the flood ran every edge dry");
        }
    }

    #[test]
    fn ties_go_to_the_lower_node_id_and_stale_edges_are_skipped() {
        let mut a = candidate(2, Some(10.0), 10.0, (100, 1 << 30, 0, 0), false, &[]);
        let b = candidate(1, Some(10.0), 10.0, (100, 1 << 30, 0, 0), false, &[]);
        let snapshot = Snapshot::build(Weights::default(), vec![a.clone(), b]);
        let req = Request {
            viewer: Position::from_degrees(10.0, 10.0),
            stream: None,
            need: Need::Viewers,
            now: Instant::now(),
            remote_clusters: &peers(),
        };
        let top = snapshot.rank(&req, 2);
        assert_eq!(&*snapshot.candidate(&top[0]).node_id, "000000000001");
        assert_eq!(top[0].parts.total, top[1].parts.total);

        a.fresh_until = req.now; // stale from that instant on
        let snapshot = Snapshot::build(Weights::default(), vec![a]);
        assert!(snapshot.rank(&req, 1).is_empty());
    }

    #[test]
    fn exhausted_bandwidth_and_missing_capability_are_not_eligible() {
        let full = candidate(1, None, 0.0, (0, 0, 124_000_000, 1_000_000), false, &[]);
        let mut no_edge = candidate(2, None, 0.0, (0, 0, 0, 0), false, &[]);
        no_edge.serves_viewers = false;
        no_edge.takes_ingest = false;
        let snapshot = Snapshot::build(Weights::default(), vec![full, no_edge]);
        let req = Request {
            viewer: None,
            stream: None,
            need: Need::Viewers,
            now: Instant::now(),
            remote_clusters: &peers(),
        };
        assert!(snapshot.rank(&req, 5).is_empty());
        assert!(snapshot.rank_exhaustive(&req, 5).is_empty());
    }
}
