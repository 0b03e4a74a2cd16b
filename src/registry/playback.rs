//! In-process cache of stream resolution (by playback id for viewers, by internal name for
//! MistServer's balancer calls), so the viewer hot path needs no SQL round trip.
//!
//! A stream resolves here only when its tenant may use this Foghorn's cluster (owns it, has it as
//! official cluster, or is actively subscribed to it): for any other tenant's stream every routing
//! entry point answers as for a stream that does not exist (DESIGN.md §11), revealing nothing.
//!
//! Fresh for `FRESH` after a lookup; then served stale while one background refresh runs, for up
//! to `STALE`; past that, looked up again before answering. Unknown ids are cached briefly too
//! (`NEGATIVE`), so a flood of garbage ids cannot become a flood of queries. When the registry is
//! down, any entry younger than `OUTAGE` keeps being served.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Registry, RegistryError, Stream};

const FRESH: Duration = Duration::from_secs(5);
const STALE: Duration = Duration::from_secs(300);
const NEGATIVE: Duration = Duration::from_secs(2);
const OUTAGE: Duration = Duration::from_secs(3600);
/// Entries kept at most; past that the cache starts over (cheap, and bounded under id floods).
const MAX_ENTRIES: usize = 200_000;

/// What a playback id resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub stream_id: String,
    pub tenant_id: String,
    pub playback_id: String,
    pub internal_name: String,
    pub live_cluster_id: Option<String>,
    pub live_node_id: Option<String>,
    /// The other clusters the stream's tenant may use (owned, official, actively subscribed;
    /// this one left out): the only peered clusters whose edges may serve its viewers. Empty for
    /// most tenants, and then the remote pool is not even looked at.
    pub usable_clusters: Arc<[Arc<str>]>,
}

impl Resolved {
    fn new(s: Stream, usable_clusters: Vec<String>) -> Self {
        Resolved {
            stream_id: s.id,
            tenant_id: s.tenant_id,
            playback_id: s.playback_id,
            internal_name: s.internal_name,
            live_cluster_id: s.live_cluster_id,
            live_node_id: s.live_node_id,
            usable_clusters: usable_clusters.into_iter().map(Arc::from).collect(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Option<Arc<Resolved>>,
    fetched: Instant,
    refreshing: AtomicBool,
}

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// The public playback id viewers use.
    PlaybackId,
    /// MistServer's name for the stream (`live+...`), which edges and MistServer use.
    InternalName,
}

/// Keyed by what viewers send: foldhash, seeded per process (a hash per redirect, where
/// SipHash cost more than the lookup itself).
type Entries = RwLock<HashMap<String, Arc<Entry>, foldhash::fast::RandomState>>;

/// The cache; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PlaybackCache {
    registry: Registry,
    /// This Foghorn's cluster: streams of tenants that may not use it do not resolve, and it is
    /// left out of `Resolved::usable_clusters`.
    local_cluster: String,
    by_playback_id: Entries,
    by_internal_name: Entries,
}

impl PlaybackCache {
    pub fn new(registry: Registry, local_cluster: &str) -> Self {
        PlaybackCache {
            registry,
            local_cluster: local_cluster.to_string(),
            by_playback_id: RwLock::default(),
            by_internal_name: RwLock::default(),
        }
    }

    fn entries(&self, lookup: Lookup) -> &Entries {
        match lookup {
            Lookup::PlaybackId => &self.by_playback_id,
            Lookup::InternalName => &self.by_internal_name,
        }
    }

    fn get(&self, lookup: Lookup, key: &str) -> Option<Arc<Entry>> {
        self.entries(lookup).read().get(key).cloned()
    }

    fn put(&self, lookup: Lookup, key: &str, value: Option<Arc<Resolved>>) {
        let mut entries = self.entries(lookup).write();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key.to_string(),
            Arc::new(Entry {
                value,
                fetched: Instant::now(),
                refreshing: AtomicBool::new(false),
            }),
        );
    }

    async fn fetch(
        &self,
        lookup: Lookup,
        key: &str,
    ) -> Result<Option<Arc<Resolved>>, RegistryError> {
        let stream = match lookup {
            Lookup::PlaybackId => self.registry.stream_by_playback_id(key).await?,
            Lookup::InternalName => self.registry.stream_by_internal_name(key).await?,
        };
        let value = match stream {
            Some(stream) => {
                let mut usable = self.registry.usable_cluster_ids(&stream.tenant_id).await?;
                let here = usable.iter().position(|c| *c == self.local_cluster);
                here.map(|i| {
                    usable.remove(i);
                    Arc::new(Resolved::new(stream, usable))
                })
            }
            None => None,
        };
        self.put(lookup, key, value.clone());
        Ok(value)
    }

    /// Resolves a playback id; `Ok(None)` when no stream has it, or its tenant may not use this
    /// cluster.
    pub async fn resolve(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Option<Arc<Resolved>>, RegistryError> {
        self.resolve_by(Lookup::PlaybackId, id, Instant::now())
            .await
    }

    /// [`PlaybackCache::resolve`] for a request that arrived at `now` (the viewer lane reads the
    /// clock once for every request of a read).
    pub async fn resolve_at(
        self: &Arc<Self>,
        id: &str,
        now: Instant,
    ) -> Result<Option<Arc<Resolved>>, RegistryError> {
        self.resolve_by(Lookup::PlaybackId, id, now).await
    }

    /// Resolves a stream's internal name, under the same rule as [`PlaybackCache::resolve`].
    pub async fn resolve_internal_name(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<Arc<Resolved>>, RegistryError> {
        self.resolve_by(Lookup::InternalName, name, Instant::now())
            .await
    }

    async fn resolve_by(
        self: &Arc<Self>,
        lookup: Lookup,
        id: &str,
        now: Instant,
    ) -> Result<Option<Arc<Resolved>>, RegistryError> {
        let Some(entry) = self.get(lookup, id) else {
            return self.fetch(lookup, id).await;
        };
        let age = now.saturating_duration_since(entry.fetched);
        let fresh_for = if entry.value.is_some() {
            FRESH
        } else {
            NEGATIVE
        };
        if age < fresh_for {
            return Ok(entry.value.clone());
        }
        if entry.value.is_some() && age < STALE {
            // Stale but usable: answer now, refresh once in the background.
            if !entry.refreshing.swap(true, Ordering::AcqRel) {
                let cache = self.clone();
                let id = id.to_string();
                let entry = entry.clone();
                tokio::spawn(async move {
                    if let Err(e) = cache.fetch(lookup, &id).await {
                        tracing::warn!(error = %e, "playback id refresh failed; serving stale");
                        entry.refreshing.store(false, Ordering::Release);
                    }
                });
            }
            return Ok(entry.value.clone());
        }
        match self.fetch(lookup, id).await {
            Ok(v) => Ok(v),
            Err(e) if entry.value.is_some() && age < OUTAGE => {
                tracing::warn!(error = %e, "registry unavailable; serving a cached playback id");
                Ok(entry.value.clone())
            }
            Err(e) => Err(e),
        }
    }
}
