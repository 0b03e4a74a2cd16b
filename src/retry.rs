//! Backoff between attempts, for every loop that retries something that failed (dialing a
//! peer, reaching Redis, an edge reconnecting): capped exponential delays with jitter, so many
//! retrying at once spread out. Built on `backon`.

use std::time::Duration;

use backon::BackoffBuilder as _;

/// Delays for successive attempts: the n-th somewhere in `[d/2, d)` with
/// `d = min(first · 2ⁿ, max)` (jitter in the upper half, so no attempt comes much earlier than
/// planned), endlessly. Start a new one to start over (after a success).
pub fn backoff(first: Duration, max: Duration) -> backon::ExponentialBackoff {
    // backon adds a jitter in (0, d) to d: halving both bounds puts the result in [d/2, d).
    backon::ExponentialBuilder::default()
        .with_min_delay(first / 2)
        .with_max_delay(max.max(first) / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_their_upper_half_up_to_the_cap() {
        let (first, max) = (Duration::from_millis(200), Duration::from_secs(5));
        let delays: Vec<Duration> = backoff(first, max).take(12).collect();
        assert_eq!(delays.len(), 12, "endless");
        for (n, d) in delays.iter().enumerate() {
            let planned = first.saturating_mul(1 << n).min(max);
            assert!(
                *d >= planned / 2 && *d <= planned,
                "attempt {n}: {d:?} outside [{:?}, {planned:?}]",
                planned / 2
            );
        }
    }
}
