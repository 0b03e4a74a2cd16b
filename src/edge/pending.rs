//! Pending bandwidth: what redirects have promised an edge that its stats do not show yet.
//!
//! Each redirect adds the expected bandwidth of one viewer. An entry is forgotten once a stats
//! report has had a whole interval to include that viewer (it was added before the previous report),
//! and in any case 30 s after it was added. The running total is an atomic shared with the routing
//! snapshot, so the hot path reads it without a lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long a redirect's bandwidth is counted at most.
pub const PENDING_TTL: Duration = Duration::from_secs(30);

/// The pending ledger of one edge.
#[derive(Debug, Default)]
pub struct Pending {
    total: Arc<AtomicU64>,
    entries: Mutex<VecDeque<(Instant, u64)>>,
}

impl Pending {
    /// The shared running total, bytes/s.
    pub fn total(&self) -> &Arc<AtomicU64> {
        &self.total
    }

    fn update(&self, f: impl FnOnce(&mut VecDeque<(Instant, u64)>)) {
        // Every update recomputes the total from the entries, so a poisoned lock holds no
        // half-applied state.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut entries);
        let sum = entries
            .iter()
            .fold(0u64, |acc, (_, b)| acc.saturating_add(*b));
        self.total.store(sum, Ordering::Relaxed);
    }

    fn expire(entries: &mut VecDeque<(Instant, u64)>, now: Instant) {
        while entries
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= PENDING_TTL)
        {
            entries.pop_front();
        }
    }

    /// Adds one redirect's bandwidth.
    pub fn add(&self, bytes_per_sec: u64, now: Instant) {
        self.update(|entries| {
            Self::expire(entries, now);
            entries.push_back((now, bytes_per_sec));
        });
    }

    /// A stats report arrived at `now`; `previous` is when the report before it arrived. Entries
    /// added before `previous` are now reflected in the measured load and are forgotten.
    pub fn reconcile(&self, previous: Option<Instant>, now: Instant) {
        self.update(|entries| {
            Self::expire(entries, now);
            if let Some(previous) = previous {
                while entries.front().is_some_and(|(t, _)| *t < previous) {
                    entries.pop_front();
                }
            }
        });
    }

    /// Forgets everything (the edge's session ended).
    pub fn clear(&self) {
        self.update(VecDeque::clear);
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
    async fn pending_is_added_reconciled_and_expires() {
        let p = Pending::default();
        let t0 = Instant::now();
        p.add(100_000, t0);
        tokio::time::advance(Duration::from_secs(2)).await;
        p.add(200_000, Instant::now());
        assert_eq!(p.total().load(Ordering::Relaxed), 300_000);

        // First report of the session: nothing is known to be reflected yet.
        tokio::time::advance(Duration::from_secs(1)).await;
        let first = Instant::now();
        p.reconcile(None, first);
        assert_eq!(p.total().load(Ordering::Relaxed), 300_000);

        // Next report: entries added before the previous report are now in the stats.
        tokio::time::advance(Duration::from_secs(5)).await;
        p.add(50_000, Instant::now());
        p.reconcile(Some(first), Instant::now());
        assert_eq!(p.total().load(Ordering::Relaxed), 50_000);

        // Without reports, an entry is forgotten after 30 s.
        tokio::time::advance(PENDING_TTL).await;
        p.add(1, Instant::now());
        assert_eq!(p.total().load(Ordering::Relaxed), 1);
        p.clear();
        assert_eq!(p.total().load(Ordering::Relaxed), 0);
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
