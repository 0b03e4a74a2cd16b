//! A cell: the clusters one Foghorn deployment serves (DESIGN.md §1), and how a request finds
//! its cluster among them.
//!
//! Every served cluster has a state of its own ([`AppState`]: edges, routing snapshot, weights,
//! federation, playback cache, certificate), so a decision for one cluster never looks at another
//! cluster's edges and costs the same however many clusters the cell serves. The home cluster
//! (`cluster.id`) is served from the start; the clusters the registry assigns to the cell come and
//! go while it runs (see `app`).
//!
//! Requests are attributed by name: viewers by `Host` (`foghorn.{cluster}.{root}` or the zone apex
//! `{cluster}.{root}`, else the home cluster), edges by the cluster of their token or node,
//! peers by the cluster they call.

use std::borrow::Cow;
use std::collections::HashMap;

use arc_swap::ArcSwap;

use crate::state::AppState;

/// The clusters served here besides the home cluster, by id.
type Served = HashMap<Box<str>, AppState>;

/// The clusters this Foghorn serves.
#[derive(Debug)]
pub struct Cell {
    home: AppState,
    served: ArcSwap<Served>,
    /// `.{root}`, lowercase: the suffix of every served cluster's names.
    suffix: Box<str>,
}

impl Cell {
    /// A cell serving only `home` for now.
    pub fn new(home: AppState) -> Cell {
        let suffix = format!(".{}", home.config.cluster.root_domain.to_ascii_lowercase());
        Cell {
            home,
            served: ArcSwap::from_pointee(Served::new()),
            suffix: suffix.into(),
        }
    }

    /// The home cluster's state.
    pub fn home(&self) -> &AppState {
        &self.home
    }

    /// The state of `cluster` when this cell serves it.
    pub fn get(&self, cluster: &str) -> Option<AppState> {
        if cluster == self.home.config.cluster.id {
            return Some(self.home.clone());
        }
        self.served.load().get(cluster).cloned()
    }

    /// Whether this cell serves `cluster`.
    pub fn serves(&self, cluster: &str) -> bool {
        cluster == self.home.config.cluster.id || self.served.load().contains_key(cluster)
    }

    /// The ids of the assigned clusters served now (the home cluster not included).
    pub fn assigned(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.served.load().keys().map(|k| k.to_string()).collect();
        ids.sort_unstable();
        ids
    }

    /// Every served cluster's state, the home cluster's first.
    pub fn states(&self) -> Vec<AppState> {
        let served = self.served.load();
        let mut all = Vec::with_capacity(1 + served.len());
        all.push(self.home.clone());
        all.extend(served.values().cloned());
        all
    }

    /// How many clusters are served, the home cluster included.
    pub fn len(&self) -> usize {
        1 + self.served.load().len()
    }

    /// Always false: a cell serves at least its home cluster.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The cluster a request with this `Host` header is for: the served cluster it names as
    /// `foghorn.{cluster}.{root}` or `{cluster}.{root}` (any case, with or without a port or the
    /// final dot), else the home cluster. Borrowed, with no lookup, for every name that is not
    /// an assigned cluster's: the viewer path pays nothing for the cell when it serves one
    /// cluster.
    pub fn for_host(&self, host: Option<&str>) -> Cow<'_, AppState> {
        match host.and_then(|h| self.named(h)) {
            Some(state) => Cow::Owned(state),
            None => Cow::Borrowed(&self.home),
        }
    }

    /// The assigned cluster `host` names, if any.
    fn named(&self, host: &str) -> Option<AppState> {
        let label = cluster_label(host, &self.suffix)?;
        if label.eq_ignore_ascii_case(&self.home.config.cluster.id) {
            return None;
        }
        let served = self.served.load();
        if served.is_empty() {
            return None;
        }
        if label.bytes().all(|b| !b.is_ascii_uppercase()) {
            return served.get(label).cloned();
        }
        served.get(label.to_ascii_lowercase().as_str()).cloned()
    }

    /// Starts serving `state`'s cluster (replacing a state it had).
    pub fn insert(&self, state: AppState) -> Option<AppState> {
        let id: Box<str> = state.config.cluster.id.as_str().into();
        let mut old = None;
        self.served.rcu(|served| {
            let mut next = Served::clone(served);
            old = next.insert(id.clone(), state.clone());
            next
        });
        old
    }

    /// Stops serving assigned cluster `cluster`; returns its state so the caller can stop it.
    pub fn remove(&self, cluster: &str) -> Option<AppState> {
        let mut old = None;
        self.served.rcu(|served| {
            let mut next = Served::clone(served);
            old = next.remove(cluster);
            next
        });
        old
    }
}

/// The cluster label of `host` when it is `foghorn.{label}.{root}` or `{label}.{root}`; `suffix`
/// is `.{root}` in lowercase.
fn cluster_label<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    // Without the port (a bracketed IPv6 literal never names a cluster) and the final dot.
    let name = match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let cut = name.len().checked_sub(suffix.len())?;
    if !name.is_char_boundary(cut) || !name[cut..].eq_ignore_ascii_case(suffix) {
        return None;
    }
    let labels = &name[..cut];
    let label = match labels.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("foghorn.") => &labels[8..],
        _ => labels,
    };
    let valid = !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then_some(label)
}

#[cfg(test)]
mod tests {
    use super::cluster_label;

    #[test]
    fn hosts_name_a_cluster_by_its_foghorn_name_or_its_apex() {
        let s = ".example.net";
        assert_eq!(cluster_label("foghorn.lab.example.net", s), Some("lab"));
        assert_eq!(cluster_label("lab.example.net", s), Some("lab"));
        assert_eq!(
            cluster_label("Foghorn.LAB.Example.NET.:443", s),
            Some("LAB")
        );
        assert_eq!(cluster_label("lab.example.net:18008", s), Some("lab"));
        // Not a cluster's name.
        for host in [
            "example.net",
            ".example.net",
            "edge.lab.example.net",
            "foghorn..example.net",
            "lab.example.org",
            "labexample.net",
            "127.0.0.1:18008",
            "[::1]:18008",
            "",
            "é.example.net",
        ] {
            assert_eq!(cluster_label(host, s), None, "{host:?}");
        }
    }
}
