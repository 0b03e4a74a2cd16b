//! proto <-> domain conversion for edge frames, with the bounds every public input gets.

use crate::config::EdgesConfig;
use crate::edge::{Capabilities, Mode, Stats, StreamLoad};
use crate::proto;

/// Checks one string field against the configured bound.
pub fn bounded<'a>(field: &str, value: &'a str, limits: &EdgesConfig) -> Result<&'a str, String> {
    if value.len() > limits.max_string_bytes {
        return Err(format!(
            "{field} is {} bytes, more than the {} allowed",
            value.len(),
            limits.max_string_bytes
        ));
    }
    Ok(value)
}

pub fn capabilities(c: Option<&proto::Capabilities>) -> Capabilities {
    c.map(|c| Capabilities {
        ingest: c.ingest,
        edge: c.edge,
        storage: c.storage,
        processing: c.processing,
    })
    .unwrap_or_default()
}

/// A mode from the wire; `UNSPECIFIED` and unknown values are refused rather than guessed.
pub fn mode(raw: i32) -> Result<Mode, String> {
    match proto::NodeMode::try_from(raw) {
        Ok(proto::NodeMode::Normal) => Ok(Mode::Normal),
        Ok(proto::NodeMode::Draining) => Ok(Mode::Draining),
        Ok(proto::NodeMode::Maintenance) => Ok(Mode::Maintenance),
        _ => Err(format!("mode {raw} is not NORMAL, DRAINING or MAINTENANCE")),
    }
}

pub fn mode_to_proto(mode: Mode) -> proto::NodeMode {
    match mode {
        Mode::Normal => proto::NodeMode::Normal,
        Mode::Draining => proto::NodeMode::Draining,
        Mode::Maintenance => proto::NodeMode::Maintenance,
    }
}

/// Validates a NodeStats frame. RAM used above RAM max is kept as reported (scoring saturates).
pub fn stats(p: proto::NodeStats, limits: &EdgesConfig) -> Result<Stats, String> {
    if p.cpu_tenths > 1000 {
        return Err(format!("cpu_tenths {} is above 1000", p.cpu_tenths));
    }
    let (latitude, longitude) = match (p.latitude, p.longitude) {
        (Some(lat), Some(lon)) => {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!("position ({lat}, {lon}) is out of range"));
            }
            (Some(lat), Some(lon))
        }
        (None, None) => (None, None),
        _ => return Err("latitude and longitude must be sent together".into()),
    };
    if p.streams.len() > limits.max_streams_per_node {
        return Err(format!(
            "{} streams listed, more than the {} allowed",
            p.streams.len(),
            limits.max_streams_per_node
        ));
    }
    bounded("location_name", &p.location_name, limits)?;
    let mut streams = Vec::with_capacity(p.streams.len());
    for s in p.streams {
        bounded("stream internal_name", &s.internal_name, limits)?;
        if s.internal_name.is_empty() {
            return Err("a stream has an empty internal_name".into());
        }
        streams.push(StreamLoad {
            internal_name: s.internal_name,
            viewers: s.viewers,
            inputs: s.inputs,
            up_bytes_per_sec: s.up_bytes_per_sec,
            down_bytes_per_sec: s.down_bytes_per_sec,
            replicated: s.replicated,
        });
    }
    Ok(Stats {
        cpu_tenths: p.cpu_tenths as u16,
        ram_max_bytes: p.ram_max_bytes,
        ram_used_bytes: p.ram_used_bytes,
        up_bytes_per_sec: p.up_bytes_per_sec,
        down_bytes_per_sec: p.down_bytes_per_sec,
        bw_limit_bytes_per_sec: p.bw_limit_bytes_per_sec,
        latitude,
        longitude,
        location_name: p.location_name,
        connections: p.connections,
        streams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever an edge sends, conversion answers Ok or Err and never panics; accepted stats
        /// respect every bound.
        #[test]
        fn stats_conversion_is_total(
            cpu in any::<u32>(),
            lat in proptest::option::of(any::<f64>()),
            lon in proptest::option::of(any::<f64>()),
            names in proptest::collection::vec(".{0,40}", 0..5),
            loc in ".{0,600}",
        ) {
            let limits = EdgesConfig { max_streams_per_node: 3, ..EdgesConfig::default() };
            let p = proto::NodeStats {
                cpu_tenths: cpu,
                latitude: lat,
                longitude: lon,
                location_name: loc,
                streams: names.into_iter().map(|n| proto::StreamStats { internal_name: n, ..Default::default() }).collect(),
                ..Default::default()
            };
            if let Ok(s) = stats(p, &limits) {
                prop_assert!(s.cpu_tenths <= 1000);
                prop_assert!(s.streams.len() <= 3);
                prop_assert!(s.location_name.len() <= limits.max_string_bytes);
                if let (Some(a), Some(o)) = (s.latitude, s.longitude) {
                    prop_assert!((-90.0..=90.0).contains(&a) && (-180.0..=180.0).contains(&o));
                }
            }
        }
    }
}
