//! How much a peer may send. A well-behaved peer sends a summary and an advert
//! every summary interval, a heartbeat every heartbeat interval and an advert when its streams
//! change: a fraction of a frame per second at the defaults. Every frame it sends is applied and
//! relayed to this cluster's other replicas, so a peer that sends far more (a bug, or a peer
//! turned hostile after authenticating) would cost this cluster CPU and Redis traffic for
//! nothing; the channel ends instead. One allowance covers all channels of a peer and outlives them.

use tokio::time::Instant;

/// Frames per second a channel may carry on average...
pub const FRAMES_PER_SEC: f64 = 50.0;
/// ...with bursts up to this many (a channel opens with a Hello, a summary and an advert).
pub const FRAME_BURST: f64 = 200.0;
/// Bytes per second a channel may carry on average (a summary of 10,000 edges is ~0.5 MB)...
pub const BYTES_PER_SEC: f64 = 4.0 * 1024.0 * 1024.0;
/// ...with bursts up to this many.
pub const BYTE_BURST: f64 = 16.0 * 1024.0 * 1024.0;

/// A token bucket.
#[derive(Debug, Clone)]
struct Bucket {
    level: f64,
    capacity: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64, per_sec: f64, now: Instant) -> Self {
        Bucket {
            level: capacity,
            capacity,
            per_sec,
            at: now,
        }
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, now: Instant, n: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.at = now;
        if self.level >= n {
            self.level -= n;
            true
        } else {
            false
        }
    }
}

/// The frame and byte allowance of one channel; both must admit a frame.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    frames: Bucket,
    bytes: Bucket,
}

impl FrameBudget {
    /// A channel's allowance, full at `now`.
    pub fn new(now: Instant) -> Self {
        FrameBudget {
            frames: Bucket::full(FRAME_BURST, FRAMES_PER_SEC, now),
            bytes: Bucket::full(BYTE_BURST, BYTES_PER_SEC, now),
        }
    }

    /// Whether a frame of `len` bytes arriving at `now` is within the allowance (and takes it).
    pub fn admit(&mut self, now: Instant, len: usize) -> bool {
        // Both are checked before either is taken, so a refused frame costs nothing.
        let (mut frames, mut bytes) = (self.frames.clone(), self.bytes.clone());
        if frames.take(now, 1.0) && bytes.take(now, len as f64) {
            (self.frames, self.bytes) = (frames, bytes);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_a_flood_does_not_and_the_allowance_refills() {
        let t0 = Instant::now();
        let mut budget = FrameBudget::new(t0);
        for _ in 0..FRAME_BURST as usize {
            assert!(budget.admit(t0, 100));
        }
        assert!(!budget.admit(t0, 100), "past the burst");
        // One second later, a second's worth of frames passes again, and no more.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..FRAMES_PER_SEC as usize {
            assert!(budget.admit(t1, 100));
        }
        assert!(!budget.admit(t1, 100));
    }

    #[test]
    fn bytes_count_too_and_a_refused_frame_costs_nothing() {
        let t0 = Instant::now();
        let mut budget = FrameBudget::new(t0);
        assert!(budget.admit(t0, BYTE_BURST as usize - 10));
        assert!(!budget.admit(t0, 11), "past the byte burst");
        assert!(
            budget.admit(t0, 10),
            "the refused frame took no frame token or byte"
        );
        let later = t0 + Duration::from_secs(1);
        assert!(budget.admit(later, BYTES_PER_SEC as usize));
        assert!(!budget.admit(later, 1));
    }

    #[test]
    fn the_default_traffic_is_far_below_the_allowance() {
        // 10 s heartbeats, a summary and an advert every 30 s: an hour of it.
        let t0 = Instant::now();
        let mut budget = FrameBudget::new(t0);
        for s in 0..3600u64 {
            let now = t0 + Duration::from_secs(s);
            if s % 10 == 0 {
                assert!(budget.admit(now, 40));
            }
            if s % 30 == 0 {
                assert!(budget.admit(now, 5_000_000) && budget.admit(now, 10_000));
            }
        }
    }
}
