//! What this cluster tells its peers (DESIGN.md §7.1): a summary of its edges, smoothed over the
//! summary window, every `federation.summary_interval`, and the advert of its live streams
//! whenever it changes. Every channel sends what the feed last published.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::hub::Hub;
use super::Smoother;
use crate::names::Zone;

impl Hub {
    /// Samples the edges and publishes the summary and advert until `stop`.
    pub async fn feed(self: Arc<Self>, stop: CancellationToken) {
        let cfg = &self.config;
        let mut smoother = Smoother::new(cfg.summary_interval);
        let sample_every = self
            .stats_interval
            .min(cfg.summary_interval / 3)
            .max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(sample_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first summary goes out once the edges had two stats intervals to (re)connect and
        // report (after a restart they come back within seconds), not a whole interval later.
        let mut next_summary = Instant::now() + cfg.summary_interval.min(self.stats_interval * 2);
        let zone = Zone::new(&self.me, &self.root);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let views = self.edges.list();
            smoother.observe(now, &views, |node| zone.edge_base_url(node));
            let summary_due = now >= next_summary;
            if !summary_due && self.summary.borrow().is_none() {
                continue; // no advert before the first summary (see `run_channel`)
            }
            let mut live: Vec<String> = views
                .iter()
                .filter(|v| v.routable)
                .filter_map(|v| v.stats.as_ref())
                .flat_map(|s| s.streams.iter())
                .filter(|s| s.inputs > 0 && !s.replicated)
                .map(|s| s.internal_name.clone())
                .collect();
            live.sort_unstable();
            live.dedup();
            self.advert.send_if_modified(|current| {
                if **current == live {
                    return false;
                }
                *current = Arc::new(live);
                true
            });
            // After the advert: a channel sends the advert it sees along with the summary.
            if summary_due {
                next_summary = now + cfg.summary_interval;
                self.summary
                    .send_replace(Some(Arc::new(smoother.summary(&self.me))));
            }
        }
    }
}
