//! The public names of DESIGN.md §2. Every host name and URL Foghorn hands out (to edges in their
//! config seed, to viewers in a `Location`, to streamers as ingest URLs, to peers as the name a
//! TLS certificate is checked against) is formatted here and nowhere else.
//!
//! A cluster's zone is `{cluster}.{root}`; in it:
//! - `foghorn.{zone}`: the cluster's Foghorns (viewers, edges, peers);
//! - `edge-{node}.{zone}`: one edge;
//! - `edge.{zone}`: the pool of its edges, `edge-ingest.{zone}`: where publishers go.

/// Whether `id` may be a node id: a DNS label short enough that `edge-{id}` is one too.
pub fn is_valid_node_id(id: &str) -> bool {
    id.len() <= 58 && crate::config::is_valid_label(id)
}

/// The zone of one cluster: `{cluster}.{root}`. Borrowed, so naming costs no allocation until a
/// name is formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone<'a> {
    pub cluster: &'a str,
    pub root: &'a str,
}

impl<'a> Zone<'a> {
    pub fn new(cluster: &'a str, root: &'a str) -> Self {
        Zone { cluster, root }
    }

    /// `{cluster}.{root}`: the zone apex (also a name of the cluster certificate).
    pub fn apex(&self) -> String {
        format!("{}.{}", self.cluster, self.root)
    }

    /// `*.{cluster}.{root}`: the cluster certificate's wildcard.
    pub fn wildcard(&self) -> String {
        format!("*.{}.{}", self.cluster, self.root)
    }

    /// `foghorn.{cluster}.{root}`: the cluster's Foghorns.
    pub fn foghorn_host(&self) -> String {
        format!("foghorn.{}.{}", self.cluster, self.root)
    }

    /// `https://foghorn.{cluster}.{root}`: where viewers ask (the balancer of the edges' seed).
    pub fn foghorn_url(&self) -> String {
        format!("https://foghorn.{}.{}", self.cluster, self.root)
    }

    /// `edge-{node}.{cluster}.{root}`: one edge.
    pub fn edge_host(&self, node_id: &str) -> String {
        format!("edge-{node_id}.{}.{}", self.cluster, self.root)
    }

    /// `https://edge-{node}.{cluster}.{root}`: an edge's base URL unless it registered its own.
    pub fn edge_base_url(&self, node_id: &str) -> String {
        format!("https://edge-{node_id}.{}.{}", self.cluster, self.root)
    }

    /// Whether `url` is [`Zone::edge_base_url`] of `node_id`, without formatting it (a summary
    /// asks this for every edge).
    pub fn is_edge_base_url(&self, url: &str, node_id: &str) -> bool {
        url.strip_prefix("https://edge-")
            .and_then(|r| r.strip_prefix(node_id))
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_prefix(self.cluster))
            .and_then(|r| r.strip_prefix('.'))
            == Some(self.root)
    }

    /// Whether `host` is a name strictly inside the zone (`*.{cluster}.{root}`).
    pub fn contains_host(&self, host: &str) -> bool {
        host.strip_suffix(self.root)
            .and_then(|r| r.strip_suffix('.'))
            .and_then(|r| r.strip_suffix(self.cluster))
            .and_then(|r| r.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty())
    }

    /// `edge.{cluster}.{root}`: the pool of the cluster's edges.
    pub fn pool_host(&self) -> String {
        format!("edge.{}.{}", self.cluster, self.root)
    }

    /// `edge-ingest.{cluster}.{root}`: where publishers send their streams.
    pub fn ingest_host(&self) -> String {
        format!("edge-ingest.{}.{}", self.cluster, self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::Zone;
    use proptest::prelude::*;

    #[test]
    fn names_of_a_zone() {
        let z = Zone::new("eu-1", "example.net");
        assert_eq!(z.apex(), "eu-1.example.net");
        assert_eq!(z.wildcard(), "*.eu-1.example.net");
        assert_eq!(z.foghorn_host(), "foghorn.eu-1.example.net");
        assert_eq!(z.foghorn_url(), "https://foghorn.eu-1.example.net");
        assert_eq!(z.edge_host("n1"), "edge-n1.eu-1.example.net");
        assert_eq!(z.edge_base_url("n1"), "https://edge-n1.eu-1.example.net");
        assert_eq!(z.pool_host(), "edge.eu-1.example.net");
        assert_eq!(z.ingest_host(), "edge-ingest.eu-1.example.net");
    }

    #[test]
    fn zone_membership_is_by_whole_labels() {
        let z = Zone::new("eu-1", "example.net");
        assert!(z.contains_host("edge-n1.eu-1.example.net"));
        assert!(z.contains_host("a.b.eu-1.example.net"));
        assert!(
            !z.contains_host("eu-1.example.net"),
            "the apex is not inside"
        );
        assert!(!z.contains_host(".eu-1.example.net"));
        assert!(!z.contains_host("edge-n1.xeu-1.example.net"));
        assert!(!z.contains_host("edge-n1.eu-1.example.net.evil"));
        assert!(!z.is_edge_base_url("https://edge-n1.eu-1.example.net/", "n1"));
        assert!(!z.is_edge_base_url("https://edge-n12.eu-1.example.net", "n1"));
    }

    proptest! {
        #[test]
        fn the_base_url_test_agrees_with_the_formatter(
            node in "[a-z0-9-]{1,20}",
            other in "[a-z0-9-]{1,20}",
            cluster in "[a-z0-9-]{1,20}",
            root in "[a-z0-9.-]{1,30}",
        ) {
            let z = Zone::new(&cluster, &root);
            prop_assert!(z.is_edge_base_url(&z.edge_base_url(&node), &node));
            prop_assert!(z.contains_host(&z.edge_host(&node)));
            prop_assert_eq!(z.is_edge_base_url(&z.edge_base_url(&other), &node), other == node);
        }
    }
}
