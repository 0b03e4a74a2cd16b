//! Which replica of a cell leads (DESIGN.md §1): the one that dials peers, publishes the cluster's
//! load and sends the DNS updates. Established by the Redis lease of the `replicas` module; read by
//! everyone else through this small type, so they need not know about Redis.

use parking_lot::Mutex;
use tokio::time::Instant;

/// Whether this replica leads its cluster, as last established by the leader lease
/// (`replicas::Lease::keep`).
#[derive(Debug)]
pub struct Leadership {
    /// `None` inside: not leading. A single instance (no Redis) always leads.
    until: Option<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// A single-instance cluster: always its own leader.
    pub fn always() -> Leadership {
        Leadership { until: None }
    }

    /// Leads only while a lease says so.
    pub fn by_lease() -> Leadership {
        Leadership {
            until: Some(Mutex::new(None)),
        }
    }

    /// Leads until `until` (none: not leading); the lease keeper calls this.
    pub fn set(&self, until: Option<Instant>) {
        if let Some(m) = &self.until {
            *m.lock() = until;
        }
    }

    /// Whether this replica leads now (checked against the clock, not a cached flag: a lease
    /// that was not renewed in time stops counting by itself).
    pub fn is_leader(&self) -> bool {
        match &self.until {
            None => true,
            Some(m) => m.lock().is_some_and(|t| Instant::now() < t),
        }
    }
}
