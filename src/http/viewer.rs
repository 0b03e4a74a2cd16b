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
    /// [`Viewer::from_request`] with the server's trusted proxies and GeoIP database.
    pub fn of(
        state: &AppState,
        peer: SocketAddr,
        headers: &HeaderMap,
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
    pub fn from_request(
        peer: SocketAddr,
        headers: &HeaderMap,
        query: &Params<'_>,
        trusted: &[IpNet],
        geoip: Option<&GeoIp>,
    ) -> Result<Viewer, ApiError> {
        let from_proxy = is_trusted(peer.ip(), trusted);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= MAX_VALUE_BYTES)
        };
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
            (None, None) => match (from_proxy, header("x-latitude"), header("x-longitude")) {
                (true, Some(lat), Some(lon)) => coordinates(lat, lon).ok(),
                _ => geoip.and_then(|g| g.position(ip)),
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
}
