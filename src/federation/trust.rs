//! What a peer may point at: the edge URLs its summaries give for viewers, and the DTSC URLs it
//! gives this cluster's edges to pull from. Both must name hosts in the peer's own zone
//! (`*.{peer}.{root}`, DESIGN.md §2), so a peer can send neither viewers nor edges elsewhere.

use crate::names::Zone;

/// Longest URL accepted from a peer.
const MAX_URL: usize = 512;

/// Where viewers may be sent for edge `node_id` of peer cluster `peer`: the URL the peer gave
/// when it names a host in the peer's own zone (`*.{peer}.{root}`), else the standard name of
/// the edge there. A peer can therefore only send viewers to names under its own cluster's zone.
///
/// The given URL must pass the checks of an edge's own `Register` ([`check_base_url`]): the zone
/// is read from its real host, and a viewer's `Location` is a valid URI either way.
///
/// [`check_base_url`]: crate::edge::check_base_url
pub fn peer_base_url(given: &str, node_id: &str, peer: &str, root: &str) -> String {
    if given.is_empty() {
        return Zone::new(peer, root).edge_base_url(node_id);
    }
    match crate::edge::check_base_url(given) {
        // Without user info (refused), the host is what follows the scheme up to `:` or `/`.
        Ok(url) if Zone::new(peer, root).contains_host(crate::routing::host_of(&url)) => url,
        _ => Zone::new(peer, root).edge_base_url(node_id),
    }
}

/// Whether `url` is a DTSC URL on a host in peer `peer`'s zone (`*.{peer}.{root}`): the only
/// sources this cluster's edges are told to pull from, so a peer cannot point them at an
/// arbitrary host (an internal address, say).
pub fn is_peer_dtsc_url(url: &str, peer: &str, root: &str) -> bool {
    let host = crate::routing::host_of(url);
    url.starts_with("dtsc://")
        && url.len() <= MAX_URL
        && !url.contains(|c: char| c.is_whitespace() || c.is_control() || c == '@' || c == '\\')
        && Zone::new(peer, root).contains_host(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_are_only_sent_to_clean_urls_in_the_peer_zone() {
        let base = |u: &str| peer_base_url(u, "0123456789ab", "eu", "example.net");
        let standard = "https://edge-0123456789ab.eu.example.net";
        assert_eq!(base(""), standard);
        assert_eq!(
            base("https://cdn-7.eu.example.net:8443/mist/"),
            "https://cdn-7.eu.example.net:8443/mist"
        );
        for bad in [
            "https://evil.org#.eu.example.net",
            "https://evil.org?.eu.example.net",
            "https://cdn-7.eu.example.net/p?x=1",
            "https://cdn-7.eu.example.net/p#f",
            "https://cdn-7.eu.example.net/\u{1}",
            "https://cdn-7.eu.example.net/a b",
            "https://user@cdn-7.eu.example.net",
            "https://cdn-7.eu.example.net:99999",
            "https://cdn-7.eu.example.net.evil.org",
            "https://cdn-7.us.example.net",
            "ftp://cdn-7.eu.example.net",
        ] {
            assert_eq!(base(bad), standard, "{bad:?}");
        }
    }

    #[test]
    fn only_dtsc_urls_in_the_peer_zone_are_pulled_from() {
        let ok = |u: &str| is_peer_dtsc_url(u, "eu", "example.net");
        assert!(ok("dtsc://edge-0123456789ab.eu.example.net:4200/live+a"));
        assert!(ok("dtsc://edge-x.eu.example.net/live+a"));
        for bad in [
            "dtsc://10.0.0.1:4200/live+a",
            "dtsc://edge-x.us.example.net:4200/live+a",
            "dtsc://eu.example.net:4200/live+a",
            "dtsc://evil-eu.example.net:4200/live+a",
            "dtsc://edge-x.eu.example.net.evil.org:4200/live+a",
            "dtsc://user@edge-x.eu.example.net:4200/live+a",
            "http://edge-x.eu.example.net/live+a",
            "dtsc://edge-x.eu.example.net:4200/live a",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
