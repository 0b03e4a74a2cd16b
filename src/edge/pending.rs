//! Pending bandwidth: what redirects have promised an edge that its stats do not show yet.
//!
//! Each redirect adds the expected bandwidth of one viewer, summed into 250 ms slots. A slot is
//! forgotten once a stats report has had a whole interval to include its viewers (it ended before
//! the previous report), and in any case `edges.pending_ttl` (30 s) after it began: the routing
//! builder sweeps every ledger each [`SLOT`] ([`Pending::expire`]), so that holds with a stats
//! interval of 20 s (a report every 20 s alone would keep a slot up to 40 s, and more once it
//! has saturated the edge and left it out of the snapshot). The ledger is shared (`Arc`) between
//! the edge state and the routing snapshot's candidate, so a redirect debits it directly and the
//! hot path reads the running total from an atomic without a lock; a redirect costs O(1) whatever
//! the request rate.
//!
//! Increases show in the total at once; decreases wait in `released` until [`Pending::settle`],
//! which the routing snapshot builder calls. So between two snapshots an edge's pending only grows,
//! and bounds computed from the pending at build time stay upper bounds: that is what keeps the
//! pruned search exact. A decrease marks the edge changed, so the next build is ≤ 20 ms away.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a redirect's bandwidth is counted at most, by default (`edges.pending_ttl`).
pub const PENDING_TTL: Duration = Duration::from_secs(30);
/// Redirects are summed per slot of this length, so the ledger holds at most `ttl / SLOT + 1`
/// entries whatever the request rate; expiry is swept at the same pace.
pub const SLOT: Duration = Duration::from_millis(250);

/// The pending ledger of one edge.
#[derive(Debug)]
pub struct Pending {
    total: AtomicU64,
    /// Forgotten bandwidth not yet taken off `total` (see [`Pending::settle`]).
    released: AtomicU64,
    slots: Mutex<Slots>,
    /// How long a slot is counted at most.
    ttl: Duration,
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new(PENDING_TTL)
    }
}

/// (slot start, bytes/s added in that slot), oldest first, and their sum; and what this replica
/// added that the other replicas were not told of yet.
#[derive(Debug, Default)]
struct Slots {
    slots: VecDeque<(Instant, u64)>,
    sum: u64,
    unshared: u64,
}

impl Pending {
    /// An empty ledger whose slots are counted at most `ttl`.
    pub fn new(ttl: Duration) -> Pending {
        Pending {
            total: AtomicU64::new(0),
            released: AtomicU64::new(0),
            slots: Mutex::default(),
            ttl,
        }
    }

    /// A ledger that starts at `bytes_per_sec` (tests and benches: pending known at build time).
    pub fn starting_at(bytes_per_sec: u64) -> Pending {
        let p = Pending::default();
        p.update(|slots, total| {
            slots.push_back((Instant::now(), bytes_per_sec));
            *total = bytes_per_sec;
        });
        p
    }

    /// The running total, bytes/s: every increase so far, decreases as of the last settle.
    pub fn current(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Runs `f` on the slots and the running total, under the lock.
    fn update(&self, f: impl FnOnce(&mut VecDeque<(Instant, u64)>, &mut u64)) {
        self.update_ledger(|ledger| f(&mut ledger.slots, &mut ledger.sum));
    }

    /// Runs `f` on the whole ledger, under the lock, and moves the running total as its sum moved.
    fn update_ledger(&self, f: impl FnOnce(&mut Slots)) {
        let mut ledger = self.slots.lock();
        let before = ledger.sum;
        f(&mut ledger);
        let after = ledger.sum;
        // Both moves happen under the slots lock, so `released` never exceeds what `total` holds.
        if after > before {
            self.total.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.released.fetch_add(before - after, Ordering::Relaxed);
        }
    }

    /// Applies the decreases recorded since the last call and returns the settled total. Called
    /// by the routing snapshot builder only.
    pub fn settle(&self) -> u64 {
        if self.released.load(Ordering::Relaxed) == 0 {
            // Nothing to apply (the usual case): no lock. A decrease recorded after this load
            // waits for the next settle, as one recorded after the swap below would.
            return self.total.load(Ordering::Relaxed);
        }
        let _slots = self.slots.lock();
        let released = self.released.swap(0, Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).saturating_sub(released);
        self.total.store(total, Ordering::Relaxed);
        total
    }

    fn pop_while(
        slots: &mut VecDeque<(Instant, u64)>,
        total: &mut u64,
        mut done: impl FnMut(Instant) -> bool,
    ) {
        while let Some(&(start, bytes)) = slots.front() {
            if !done(start) {
                break;
            }
            slots.pop_front();
            *total = total.saturating_sub(bytes);
        }
    }

    /// Adds one redirect's bandwidth, to be told to the other replicas
    /// ([`Pending::take_unshared`]).
    pub fn add(&self, bytes_per_sec: u64, now: Instant) {
        self.update_ledger(|ledger| {
            self.charge(ledger, bytes_per_sec, now);
            ledger.unshared = ledger.unshared.saturating_add(bytes_per_sec);
        });
    }

    /// What [`Pending::add`] added since the last call, which the other replicas of the cluster
    /// have not been told of; zero from now on.
    pub fn take_unshared(&self) -> u64 {
        std::mem::take(&mut self.slots.lock().unshared)
    }

    /// Adds redirects another replica of the cluster charged to the edge (told through Redis).
    pub fn add_from_replica(&self, bytes_per_sec: u64, now: Instant) {
        self.update_ledger(|ledger| self.charge(ledger, bytes_per_sec, now));
    }

    /// Puts `bytes_per_sec` into the slot of `now`, dropping the slots past the TTL.
    fn charge(&self, ledger: &mut Slots, bytes_per_sec: u64, now: Instant) {
        let Slots { slots, sum, .. } = ledger;
        Self::pop_while(slots, sum, |start| {
            now.saturating_duration_since(start) >= self.ttl
        });
        match slots.back_mut() {
            Some((start, bytes)) if now.saturating_duration_since(*start) < SLOT => {
                *bytes = bytes.saturating_add(bytes_per_sec);
            }
            _ => slots.push_back((now, bytes_per_sec)),
        }
        *sum = sum.saturating_add(bytes_per_sec);
    }

    /// A stats report arrived at `now`; `previous` is when the report before it arrived. Slots
    /// that ended before `previous` are now reflected in the measured load and are forgotten.
    pub fn reconcile(&self, previous: Option<Instant>, now: Instant) {
        self.update(|slots, total| {
            Self::pop_while(slots, total, |start| {
                now.saturating_duration_since(start) >= self.ttl
                    || previous.is_some_and(|p| start + SLOT <= p)
            });
        });
    }

    /// Forgets the slots older than the TTL at `now`, stats or not; true when that released
    /// anything (to be applied by the next [`Pending::settle`]). An empty ledger costs one
    /// atomic load and no lock.
    pub fn expire(&self, now: Instant) -> bool {
        if self.total.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut released = false;
        self.update(|slots, total| {
            let before = *total;
            Self::pop_while(slots, total, |start| {
                now.saturating_duration_since(start) >= self.ttl
            });
            released = *total < before;
        });
        released
    }

    /// Forgets everything (the edge's session ended).
    pub fn clear(&self) {
        self.update_ledger(|ledger| {
            ledger.slots.clear();
            ledger.sum = 0;
            ledger.unshared = 0;
        });
    }
}

/// Bandwidth one more viewer of a stream is expected to take on an edge: the stream's measured
/// per-viewer bandwidth there, else the edge's average per connection, else 128 KiB/s, clamped to
/// 64 KiB/s – 1 MiB/s.
pub fn per_viewer_estimate(stream: Option<(u64, u32)>, node: Option<(u64, u32)>) -> u64 {
    const MIN: u64 = 64 * 1024;
    const MAX: u64 = 1024 * 1024;
    const DEFAULT: u64 = 128 * 1024;
    let per = |(up, n): (u64, u32)| (n > 0).then(|| up / u64::from(n));
    stream
        .and_then(per)
        .or_else(|| node.and_then(per))
        .unwrap_or(DEFAULT)
        .clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_this_replicas_redirects_are_to_be_shared() {
        let p = Pending::default();
        let now = Instant::now();
        p.add(100, now);
        p.add_from_replica(1_000, now);
        p.add(20, now);
        assert_eq!(p.current(), 1_120);
        assert_eq!(p.take_unshared(), 120);
        assert_eq!(p.take_unshared(), 0, "told once");
        p.add(5, now);
        p.clear();
        assert_eq!((p.settle(), p.take_unshared()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_is_added_reconciled_and_expires() {
        let p = Pending::default();
        let total = |p: &Pending| p.current();
        let t0 = Instant::now();
        p.add(100_000, t0);
        tokio::time::advance(Duration::from_secs(2)).await;
        p.add(200_000, Instant::now());
        assert_eq!(total(&p), 300_000, "increases show at once");

        // First report of the session: nothing is known to be reflected yet.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(p.slots.lock().slots.len(), 2, "one slot per 250 ms");
        let first = Instant::now();
        p.reconcile(None, first);
        assert_eq!(p.settle(), 300_000);

        // Next report: slots that ended before the previous report are now in the stats. The
        // decrease waits for the snapshot builder's settle.
        tokio::time::advance(Duration::from_secs(5)).await;
        p.add(50_000, Instant::now());
        p.reconcile(Some(first), Instant::now());
        assert_eq!(total(&p), 350_000, "decreases wait for settle");
        assert_eq!(p.settle(), 50_000);
        assert_eq!(total(&p), 50_000);

        // Without reports, a slot is forgotten after 30 s.
        tokio::time::advance(PENDING_TTL).await;
        p.add(1, Instant::now());
        assert_eq!(p.settle(), 1);
        p.clear();
        assert_eq!(total(&p), 1);
        assert_eq!(p.settle(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn redirects_are_forgotten_after_the_ttl_without_any_report() {
        let p = Pending::new(Duration::from_secs(30));
        assert!(!p.expire(Instant::now()), "nothing to forget");
        p.add(100_000, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        p.add(200_000, Instant::now());
        tokio::time::advance(Duration::from_millis(19_900)).await;
        assert!(!p.expire(Instant::now()), "29.9 s: both still counted");
        assert_eq!(p.settle(), 300_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(p.expire(Instant::now()), "30 s after the first redirect");
        assert_eq!(p.settle(), 200_000);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(p.expire(Instant::now()));
        assert_eq!(p.settle(), 0);
        assert!(!p.expire(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_redirects_stays_in_a_bounded_ledger() {
        let p = Pending::default();
        for i in 0..100_000 {
            p.add(10, Instant::now());
            tokio::time::advance(Duration::from_micros(500)).await;
            if i % 40 == 0 {
                p.settle(); // the snapshot builder runs every 20 ms
            }
        }
        // 50 s of redirects: only the last 30 s count, in at most 121 slots.
        let slots = p.slots.lock().slots.len();
        assert!(slots <= 121, "{slots} slots");
        let total = p.settle();
        assert!((599_000..=601_000).contains(&total), "{total}");
    }

    #[test]
    fn per_viewer_estimates() {
        assert_eq!(per_viewer_estimate(Some((3_000_000, 10)), None), 300_000);
        assert_eq!(
            per_viewer_estimate(Some((0, 0)), Some((1_000_000, 4))),
            250_000
        );
        assert_eq!(per_viewer_estimate(None, None), 128 * 1024);
        assert_eq!(per_viewer_estimate(Some((10, 1)), None), 64 * 1024);
        assert_eq!(per_viewer_estimate(Some((u64::MAX, 1)), None), 1024 * 1024);
    }
}
