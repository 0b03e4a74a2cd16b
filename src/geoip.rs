//! Viewer position from a MaxMind GeoIP2 / GeoLite2 City database (`geoip.mmdb_path`).

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::routing::Position;

/// An opened City database, read into memory once.
pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("database_type", &self.reader.metadata().database_type)
            .finish()
    }
}

/// Only the part of a City record routing needs; everything else is skipped while decoding.
#[derive(Deserialize)]
struct CityLocation {
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl GeoIp {
    /// Opens the database; the error says which file and why.
    pub fn open(path: &Path) -> anyhow::Result<GeoIp> {
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| anyhow::anyhow!("cannot open GeoIP database {}: {e}", path.display()))?;
        Ok(GeoIp { reader })
    }

    /// The position of `ip`, when the database knows it.
    pub fn position(&self, ip: IpAddr) -> Option<Position> {
        let found: CityLocation = self
            .reader
            .lookup(crate::net::canonical_ip(ip))
            .ok()?
            .decode()
            .ok()??;
        let loc = found.location?;
        Position::from_degrees(loc.latitude?, loc.longitude?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_from_the_test_database() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/geoip-test.mmdb");
        let geo = GeoIp::open(&path).expect("fixture opens");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            geo.position(ip("198.51.100.23")),
            Position::from_degrees(48.85, 2.35)
        );
        assert_eq!(
            geo.position(ip("127.0.0.6")),
            Position::from_degrees(40.7, -74.0)
        );
        assert_eq!(
            geo.position(ip("::ffff:127.0.0.5")),
            Position::from_degrees(48.85, 2.35)
        );
        assert_eq!(
            geo.position(ip("2001:db8::1")),
            Position::from_degrees(35.68, 139.69)
        );
        assert_eq!(geo.position(ip("192.0.2.1")), None);
        assert!(GeoIp::open(Path::new("/nonexistent.mmdb")).is_err());
    }
}
