//! Who is asking and from where: client address and position of a viewer or publisher request.
//!
//! Position, first match wins: `lat`/`lon` query parameters; `X-Latitude`/`X-Longitude` headers,
//! only from a trusted proxy; the GeoIP database (`geoip.mmdb_path`) for the client address;
//! otherwise unknown (the geo part then scores 0 for every edge, as in MistServer). The client address is the socket peer, or the first untrusted hop of
//! `X-Forwarded-For` when the peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use super::params::{Params, MAX_VALUE_BYTES};
use super::ApiError;
use crate::geoip::GeoIp;
use crate::routing::Position;
use crate::state::AppState;

/// A request's headers as the viewer rules read them: the first value of a name (lowercase),
/// when it is visible ASCII (what `HeaderValue::to_str` accepts).
pub trait Headers {
    fn first(&self, name: &str) -> Option<&str>;
}

impl Headers for HeaderMap {
    fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Headers as `httparse` leaves them (the viewer lane, [`super::lane`]).
impl Headers for [httparse::Header<'_>] {
    fn first(&self, name: &str) -> Option<&str> {
        let h = self.iter().find(|h| h.name.eq_ignore_ascii_case(name))?;
        super::header_text(h.value)
            .then(|| std::str::from_utf8(h.value).ok())
            .flatten()
    }
}

/// The request's origin as routing sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Viewer {
    pub ip: IpAddr,
    pub position: Option<Position>,
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = crate::net::canonical_ip(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// Parses a coordinate pair; `Err` names what is wrong.
fn coordinates(lat: &str, lon: &str) -> Result<Position, String> {
    let lat: f64 = lat
        .trim()
        .parse()
        .map_err(|_| format!("latitude {lat:?} is not a number"))?;
    let lon: f64 = lon
        .trim()
        .parse()
        .map_err(|_| format!("longitude {lon:?} is not a number"))?;
    Position::from_degrees(lat, lon)
        .ok_or_else(|| format!("position ({lat}, {lon}) is out of range"))
}

impl Viewer {
    /// Where the client of a request is, from GeoIP of its address (as trusted proxies forward
    /// it), for placing what an API caller creates near it; `None` when unknown.
    pub fn position_of(state: &AppState, parts: &axum::http::request::Parts) -> Option<Position> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()?
            .0;
        let no_query = Params::parse("").ok()?;
        Viewer::of(state, peer, &parts.headers, &no_query)
            .ok()?
            .position
    }

    /// [`Viewer::from_request`] with the server's trusted proxies and GeoIP database.
    pub fn of<H: Headers + ?Sized>(
        state: &AppState,
        peer: SocketAddr,
        headers: &H,
        query: &Params<'_>,
    ) -> Result<Viewer, ApiError> {
        Self::from_request(
            peer,
            headers,
            query,
            &state.trusted_proxies,
            state.geoip.as_deref(),
        )
    }

    /// Works out the viewer from the socket peer, headers and query parameters.
    pub fn from_request<H: Headers + ?Sized>(
        peer: SocketAddr,
        headers: &H,
        query: &Params<'_>,
        trusted: &[IpNet],
        geoip: Option<&GeoIp>,
    ) -> Result<Viewer, ApiError> {
        let from_proxy = is_trusted(peer.ip(), trusted);
        let header = |name: &str| headers.first(name).filter(|v| v.len() <= MAX_VALUE_BYTES);
        let mut ip = peer.ip();
        if from_proxy {
            // Rightmost address that is not itself a trusted proxy: the client as our proxies saw it.
            if let Some(chain) = header("x-forwarded-for") {
                for hop in chain.rsplit(',') {
                    match hop.trim().parse::<IpAddr>() {
                        Ok(hop) if is_trusted(hop, trusted) => continue,
                        Ok(hop) => {
                            ip = hop;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        let position = match (query.get("lat"), query.get("lon")) {
            (Some(lat), Some(lon)) => Some(coordinates(&lat, &lon).map_err(ApiError::BadRequest)?),
            // Position headers count only from a trusted proxy: nobody else's are looked up.
            (None, None) => match from_proxy
                .then(|| header("x-latitude").zip(header("x-longitude")))
                .flatten()
            {
                Some((lat, lon)) => coordinates(lat, lon).ok(),
                None => geoip.and_then(|g| g.position(ip)),
            },
            _ => {
                return Err(ApiError::BadRequest(
                    "lat and lon must be given together".into(),
                ))
            }
        };
        Ok(Viewer { ip, position })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn q(query: &str) -> Params<'_> {
        Params::parse(query).expect("valid query")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7, 10.1.1.1"),
            ("x-latitude", "48.85"),
            ("x-longitude", "2.35"),
        ]);
        let proxy: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        let v = Viewer::from_request(proxy, &h, &q(""), &trusted, None).expect("ok");
        assert_eq!(v.ip, "198.51.100.7".parse::<IpAddr>().expect("ip"));
        assert_eq!(v.position, Position::from_degrees(48.85, 2.35));

        let stranger: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let v = Viewer::from_request(stranger, &h, &q(""), &trusted, None).expect("ok");
        assert_eq!(v.ip, stranger.ip());
        assert_eq!(v.position, None);
    }

    #[test]
    fn query_position_wins_and_is_validated() {
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let v = Viewer::from_request(peer, &HeaderMap::new(), &q("lat=1&lon=2"), &[], None)
            .expect("ok");
        assert_eq!(v.position, Position::from_degrees(1.0, 2.0));
        for bad in [
            q("lat=91&lon=0"),
            q("lat=x&lon=0"),
            q("lat=1"),
            q("lat=NaN&lon=0"),
        ] {
            assert!(Viewer::from_request(peer, &HeaderMap::new(), &bad, &[], None).is_err());
        }
    }

    /// Our proxies in the properties: 10.0.0.0/8 and fd00::/8.
    fn proxies() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "fd00::/8".parse().expect("cidr"),
        ]
    }

    /// One of our proxies, IPv4 also written IPv4-mapped (as a dual-stack proxy may).
    fn proxy_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 3]>().prop_map(|[a, b, c]| Ipv4Addr::new(10, a, b, c).into()),
            any::<[u8; 3]>()
                .prop_map(|[a, b, c]| Ipv4Addr::new(10, a, b, c).to_ipv6_mapped().into()),
            any::<u128>().prop_map(|x| Ipv6Addr::from(x >> 8 | 0xfd << 120).into()),
        ]
    }

    /// Anyone but our proxies, IPv4 also written IPv4-mapped.
    fn client_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (11u8..=223, any::<[u8; 3]>())
                .prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d).into()),
            (11u8..=223, any::<[u8; 3]>())
                .prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d).to_ipv6_mapped().into()),
            any::<u128>().prop_map(|x| Ipv6Addr::from(x >> 32 | 0x2001_0db8 << 96).into()),
        ]
    }

    /// One hop of a generated `X-Forwarded-For` chain.
    #[derive(Debug, Clone)]
    enum Hop {
        Proxy(IpAddr),
        Client(IpAddr),
        /// No address at all: `unknown`, an obfuscated name, nothing.
        Junk(String),
    }

    fn hop() -> impl Strategy<Value = Hop> {
        prop_oneof![
            proxy_ip().prop_map(Hop::Proxy),
            client_ip().prop_map(Hop::Client),
            "[g-z_]{0,7}".prop_map(Hop::Junk),
        ]
    }

    fn with_headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("visible ASCII"));
        }
        h
    }

    proptest! {
        /// Behind our proxies the client is the rightmost hop that is not one of them, read as
        /// written; a hop that is no address ends the search at the proxy, as does a chain longer
        /// than any value we read.
        #[test]
        fn the_client_is_the_rightmost_hop_that_is_not_our_proxy(
            peer in proxy_ip(),
            hops in proptest::collection::vec((hop(), "[ \t]{0,2}", "[ \t]{0,2}"), 0..10),
        ) {
            let chain = hops
                .iter()
                .map(|(hop, before, after)| match hop {
                    Hop::Proxy(ip) | Hop::Client(ip) => format!("{before}{ip}{after}"),
                    Hop::Junk(junk) => format!("{before}{junk}{after}"),
                })
                .collect::<Vec<_>>()
                .join(",");
            let mut expected = peer;
            if chain.len() <= MAX_VALUE_BYTES {
                for (hop, _, _) in hops.iter().rev() {
                    match hop {
                        Hop::Proxy(_) => continue,
                        Hop::Client(ip) => expected = *ip,
                        Hop::Junk(_) => {}
                    }
                    break;
                }
            }
            let headers = with_headers(&[("x-forwarded-for", &chain)]);
            let viewer = Viewer::from_request(
                SocketAddr::new(peer, 443),
                &headers,
                &Params::default(),
                &proxies(),
                None,
            )
            .expect("no coordinates, nothing to refuse");
            prop_assert_eq!(viewer.ip, expected, "{}", chain);
        }

        /// Whatever headers anyone sends, a peer that is not our proxy is the client and gives no
        /// position; behind our proxies the client is the peer or one of the hops, and a
        /// position only from coordinates in range.
        #[test]
        fn headers_never_make_a_stranger_someone_else(
            (peer, ours) in prop_oneof![
                proxy_ip().prop_map(|ip| (ip, true)),
                client_ip().prop_map(|ip| (ip, false)),
            ],
            chain in "[ -~\t]{0,80}",
            lat in prop_oneof!["[ -~\t]{0,12}", "[ \t]?-?[0-9]{1,3}(\\.[0-9]{1,4})?[ \t]?"],
            lon in prop_oneof!["[ -~\t]{0,12}", "[ \t]?-?[0-9]{1,3}(\\.[0-9]{1,4})?[ \t]?"],
        ) {
            let headers = with_headers(&[
                ("x-forwarded-for", &chain),
                ("x-latitude", &lat),
                ("x-longitude", &lon),
            ]);
            let viewer = Viewer::from_request(
                SocketAddr::new(peer, 443),
                &headers,
                &Params::default(),
                &proxies(),
                None,
            )
            .expect("headers never make a request fail");
            if ours {
                let hops: Vec<Option<IpAddr>> =
                    chain.split(',').map(|h| h.trim().parse().ok()).collect();
                prop_assert!(viewer.ip == peer || hops.contains(&Some(viewer.ip)));
                let by_hand = lat.trim().parse().ok().zip(lon.trim().parse().ok());
                let expected = by_hand.and_then(|(lat, lon)| Position::from_degrees(lat, lon));
                prop_assert_eq!(viewer.position, expected);
            } else {
                prop_assert_eq!(viewer.ip, peer);
                prop_assert_eq!(viewer.position, None);
            }
        }

        /// Coordinates in the query are read exactly, spaces around them allowed; out of range or
        /// not finite, the request is refused.
        #[test]
        fn query_coordinates_are_read_exactly_or_refused(
            lat in prop_oneof![-90.0f64..=90.0, -1e3f64..1e3, Just(f64::NAN), Just(f64::INFINITY)],
            lon in prop_oneof![-180.0f64..=180.0, -1e3f64..1e3, Just(f64::NEG_INFINITY)],
            pad in "[ +]{0,2}",
        ) {
            let query = format!("lat={pad}{lat}{pad}&lon={pad}{lon}");
            let query = Params::parse(&query).expect("short query");
            let peer = SocketAddr::from(([192, 0, 2, 1], 443));
            let viewer = Viewer::from_request(peer, &HeaderMap::new(), &query, &[], None);
            match Position::from_degrees(lat, lon) {
                Some(position) => {
                    prop_assert_eq!(viewer.expect("in range").position, Some(position));
                }
                None => prop_assert!(viewer.is_err(), "accepted ({}, {})", lat, lon),
            }
        }
    }
}
