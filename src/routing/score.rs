//! The MistServer-compatible score of one edge for one request, in exact integers.
//!
//! ```text
//! cpu   = Wcpu − cpu_tenths·Wcpu/1000                    (0 when cpu_tenths ≥ 1000)
//! ram   = Wram − ram_used·Wram/ram_max                   (0 when ram_used ≥ ram_max)
//! bw    = Wbw  − (up + pending)·Wbw/bw_limit             (0 when up + pending ≥ bw_limit)
//! geo   = Wgeo − ⌊Wgeo·d⌋, d = great-circle angle / π ∈ [0,1]  (0 when a position is unknown)
//! bonus = Wbonus when the edge carries the stream
//! score = cpu + ram + bw + geo + bonus; a remote edge loses CrossClusterPenalty and is dropped ≤ 0
//! ```
//!
//! Products are taken in `u128`, so no input can overflow or wrap; every part saturates at 0.

use serde::{Deserialize, Serialize};

/// Weights of the score parts. Shared by all replicas; changed only through the operator API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub cpu: u64,
    pub ram: u64,
    pub bw: u64,
    pub geo: u64,
    pub bonus: u64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            cpu: 500,
            ram: 500,
            bw: 1000,
            geo: 1000,
            bonus: 50,
        }
    }
}

/// Largest value an operator may give a weight: far above the defaults, and small enough that no
/// sum of parts comes near overflow.
pub const MAX_WEIGHT: u64 = 1_000_000;

/// Why a change of weights was refused; the weights stay as they were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("weights: {0}")]
pub struct WeightsError(String);

impl Weights {
    /// `self` with the weights `changes` names: a JSON object with any of `cpu`, `ram`, `bw`,
    /// `geo` and `bonus`, each an integer from 0 to [`MAX_WEIGHT`]. Anything else (not an object,
    /// another key, a negative, fractional or larger number, `null`) is refused as a whole.
    pub fn merged(self, changes: &str) -> Result<Weights, WeightsError> {
        let bad = |m: String| WeightsError(m);
        let value: serde_json::Value =
            serde_json::from_str(changes).map_err(|e| bad(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".into()))?;
        let mut w = self;
        for (k, v) in obj {
            let v = v
                .as_u64()
                .filter(|v| *v <= MAX_WEIGHT)
                .ok_or_else(|| bad(format!("{k} must be an integer from 0 to {MAX_WEIGHT}")))?;
            match k.as_str() {
                "cpu" => w.cpu = v,
                "ram" => w.ram = v,
                "bw" => w.bw = v,
                "geo" => w.geo = v,
                "bonus" => w.bonus = v,
                other => return Err(bad(format!("unknown weight {other:?}"))),
            }
        }
        Ok(w)
    }
}

/// Subtracted from a remote (peered cluster) edge's score.
pub const CROSS_CLUSTER_PENALTY: u64 = 200;

/// `w − used·w/max`, 0 once `used ≥ max` (and for `max == 0`).
pub fn headroom(w: u64, used: u64, max: u64) -> u64 {
    if max == 0 || used >= max {
        return 0;
    }
    // The u64 product covers every realistic figure and divides several times faster than u128.
    match used.checked_mul(w) {
        Some(product) => w - product / max,
        None => w - (u128::from(used) * u128::from(w) / u128::from(max)) as u64,
    }
}

pub fn cpu_part(w: u64, cpu_tenths: u64) -> u64 {
    headroom(w, cpu_tenths, 1000)
}

pub fn ram_part(w: u64, used: u64, max: u64) -> u64 {
    headroom(w, used, max)
}

pub fn bw_part(w: u64, up: u64, pending: u64, limit: u64) -> u64 {
    headroom(w, up.saturating_add(pending), limit)
}

/// A position prepared for the great-circle formula: sin and cos of the latitude, longitude in
/// radians. Prepared once per edge (at snapshot build) and once per viewer, so every evaluation of
/// the same pair computes bit-identical floats whoever evaluates it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub sin_lat: f64,
    pub cos_lat: f64,
    pub lon: f64,
}

impl Position {
    /// `None` for out-of-range or non-finite coordinates.
    pub fn from_degrees(lat: f64, lon: f64) -> Option<Position> {
        if !lat.is_finite()
            || !lon.is_finite()
            || !(-90.0..=90.0).contains(&lat)
            || !(-180.0..=180.0).contains(&lon)
        {
            return None;
        }
        let phi = lat.to_radians();
        Some(Position {
            sin_lat: phi.sin(),
            cos_lat: phi.cos(),
            lon: lon.to_radians(),
        })
    }

    /// Latitude in degrees (for passing a position on, e.g. to a peer cluster).
    pub fn latitude(&self) -> f64 {
        self.sin_lat.atan2(self.cos_lat).to_degrees()
    }

    /// Longitude in degrees.
    pub fn longitude(&self) -> f64 {
        self.lon.to_degrees()
    }

    /// Cosine of the central angle to `other`, clamped to [-1, 1].
    pub fn cos_angle(&self, other: &Position) -> f64 {
        (self.sin_lat * other.sin_lat + self.cos_lat * other.cos_lat * (self.lon - other.lon).cos())
            .clamp(-1.0, 1.0)
    }
}

/// `Wgeo − ⌊Wgeo·d⌋` with `d` the central angle divided by π; 0 when either position is unknown.
pub fn geo_part(w: u64, viewer: Option<&Position>, edge: Option<&Position>) -> u64 {
    match (viewer, edge) {
        (Some(v), Some(e)) => geo_from_cos(w, v.cos_angle(e)),
        _ => 0,
    }
}

/// The geo part for a known cosine of the central angle.
pub fn geo_from_cos(w: u64, cos_angle: f64) -> u64 {
    geo_from_angle(w, cos_angle.acos())
}

/// The geo part for a central angle in radians; non-increasing in `angle`.
pub fn geo_from_angle(w: u64, angle: f64) -> u64 {
    let d = (angle / std::f64::consts::PI).clamp(0.0, 1.0);
    // ⌊w·d⌋: w·d ≥ 0, so truncation is the floor (and a NaN angle gives 0 either way) without
    // the libm call `floor` is on baseline x86-64.
    let lost = (w as f64 * d) as u64;
    // d ∈ [0, 1], so `lost` ∈ [0, w]; the min only guards float rounding at d = 1.
    w - lost.min(w)
}

/// Largest difference between [`acos_fast`] and `acos` on [-1, 1], evaluation error included
/// (the polynomial's own is 2e-8; the test sweeps the range).
pub const ACOS_FAST_ERROR: f64 = 5e-8;

/// `acos(x)` within [`ACOS_FAST_ERROR`], for bounds that must not fall below the exact value
/// (subtract the error): a polynomial in `x` times `sqrt(1 − x)` (Abramowitz and Stegun,
/// Handbook of Mathematical Functions, 4.4.46), a few multiplications instead of libm's `acos`.
#[inline]
pub fn acos_fast(x: f64) -> f64 {
    let a = x.abs().min(1.0);
    let p = 1.570_796_305_0
        + a * (-0.214_598_801_6
            + a * (0.088_978_987_4
                + a * (-0.050_174_304_6
                    + a * (0.030_891_881_0
                        + a * (-0.017_088_125_6 + a * (0.006_670_090_1 - a * 0.001_262_491_1))))));
    let r = (1.0 - a).sqrt() * p;
    if x < 0.0 {
        std::f64::consts::PI - r
    } else {
        r
    }
}

/// The parts of one edge's score, for `?explain=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Parts {
    pub cpu: u64,
    pub ram: u64,
    pub bw: u64,
    pub geo: u64,
    pub bonus: u64,
    pub penalty: u64,
    pub total: u64,
}

impl Parts {
    /// Sums the parts; `None` when a remote edge's penalty leaves nothing (dropped).
    pub fn new(cpu: u64, ram: u64, bw: u64, geo: u64, bonus: u64, remote: bool) -> Option<Parts> {
        let sum = cpu
            .saturating_add(ram)
            .saturating_add(bw)
            .saturating_add(geo)
            .saturating_add(bonus);
        let penalty = if remote { CROSS_CLUSTER_PENALTY } else { 0 };
        if remote && sum <= penalty {
            return None;
        }
        Some(Parts {
            cpu,
            ram,
            bw,
            geo,
            bonus,
            penalty,
            total: sum - penalty,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acos_fast_stays_within_its_error() {
        let steps = 2_000_000;
        let worst = (0..=steps)
            .map(|n| -1.0 + 2.0 * f64::from(n) / f64::from(steps))
            .chain([
                -1.0,
                -0.0,
                0.0,
                1.0,
                1.0 - f64::EPSILON,
                -1.0 + f64::EPSILON,
            ])
            .map(|x| (acos_fast(x) - x.acos()).abs())
            .fold(0.0f64, f64::max);
        assert!(worst <= ACOS_FAST_ERROR, "worst error {worst:e}");
        // Near ±1, where acos is steepest.
        for e in 1..=52 {
            let x = 1.0 - 2f64.powi(-e);
            assert!(
                (acos_fast(x) - x.acos()).abs() <= ACOS_FAST_ERROR,
                "at 1 - 2^-{e}"
            );
            assert!(
                (acos_fast(-x) - (-x).acos()).abs() <= ACOS_FAST_ERROR,
                "at -1 + 2^-{e}"
            );
        }
    }

    #[test]
    fn weights_merge_and_validate() {
        let w = Weights::default()
            .merged(r#"{"cpu":100,"bonus":0}"#)
            .expect("ok");
        assert_eq!((w.cpu, w.ram, w.bonus), (100, 500, 0));
        assert!(Weights::default().merged(r#"{"cpu":-1}"#).is_err());
        assert!(Weights::default().merged(r#"{"gpu":1}"#).is_err());
        assert!(Weights::default().merged("nope").is_err());
        assert!(Weights::default().merged(r#"{"geo":1e20}"#).is_err());
        assert!(Weights::default().merged(r#"{"geo":null}"#).is_err());
        assert!(Weights::default().merged("[1]").is_err());
        assert_eq!(Weights::default().merged("{}"), Ok(Weights::default()));
        assert_eq!(
            Weights::default()
                .merged(r#"{"bw":1000001}"#)
                .map_err(|e| e.to_string()),
            Err("weights: bw must be an integer from 0 to 1000000".to_string())
        );
    }

    proptest! {
        /// Any subset of weights in range is applied exactly, the rest kept; one key out of
        /// range or unknown refuses the whole change.
        #[test]
        fn weights_merge_any_subset(
            current in proptest::array::uniform5(0u64..=MAX_WEIGHT),
            changes in proptest::array::uniform5(proptest::option::of(0u64..=MAX_WEIGHT)),
            spoiler in proptest::option::of(prop_oneof![
                Just(r#""cpu":1000001"#),
                Just(r#""ram":-1"#),
                Just(r#""bw":1.5"#),
                Just(r#""gpu":1"#),
                Just(r#""geo":"1""#),
            ]),
        ) {
            let [cpu, ram, bw, geo, bonus] = current;
            let current = Weights { cpu, ram, bw, geo, bonus };
            let names = ["cpu", "ram", "bw", "geo", "bonus"];
            let mut fields: Vec<String> = names
                .iter()
                .zip(changes)
                .filter_map(|(k, v)| v.map(|v| format!("\"{k}\":{v}")))
                .collect();
            fields.extend(spoiler.map(str::to_string));
            let merged = current.merged(&format!("{{{}}}", fields.join(",")));
            if spoiler.is_some() {
                prop_assert!(merged.is_err());
            } else {
                let pick = |i: usize, old: u64| changes[i].unwrap_or(old);
                prop_assert_eq!(merged, Ok(Weights {
                    cpu: pick(0, cpu),
                    ram: pick(1, ram),
                    bw: pick(2, bw),
                    geo: pick(3, geo),
                    bonus: pick(4, bonus),
                }));
            }
        }
    }

    fn pos(lat: f64, lon: f64) -> Position {
        Position::from_degrees(lat, lon).expect("valid")
    }

    /// The worked example of the routing issue: Paris viewer, London and New York edges.
    #[test]
    fn worked_example_paris_london_new_york() {
        let w = Weights::default();
        let viewer = pos(48.85, 2.35);
        let gib = 1u64 << 30;
        let a = Parts::new(
            cpu_part(w.cpu, 250),
            ram_part(w.ram, 4 * gib, 16 * gib),
            bw_part(w.bw, 50_000_000, 131_072, 125_000_000),
            geo_part(w.geo, Some(&viewer), Some(&pos(51.5, -0.12))),
            w.bonus,
            false,
        )
        .expect("scored");
        let b = Parts::new(
            cpu_part(w.cpu, 50),
            ram_part(w.ram, 2 * gib, 16 * gib),
            bw_part(w.bw, 10_000_000, 0, 125_000_000),
            geo_part(w.geo, Some(&viewer), Some(&pos(40.7, -74.0))),
            w.bonus,
            false,
        )
        .expect("scored");
        assert_eq!(
            (a.cpu, a.ram, a.bw, a.geo, a.total),
            (375, 375, 599, 983, 2382)
        );
        assert_eq!(
            (b.cpu, b.ram, b.bw, b.geo, b.total),
            (475, 438, 920, 709, 2592)
        );
    }

    #[test]
    fn parts_saturate_instead_of_wrapping() {
        assert_eq!(ram_part(500, 20 << 30, 16 << 30), 0);
        assert_eq!(ram_part(500, u64::MAX, 1), 0);
        assert_eq!(ram_part(500, 1, 0), 0);
        assert_eq!(cpu_part(500, 1000), 0);
        assert_eq!(cpu_part(500, 5000), 0);
        assert_eq!(bw_part(1000, u64::MAX, u64::MAX, 10), 0);
        assert_eq!(bw_part(1000, u64::MAX - 1, 0, u64::MAX), 1);
        assert_eq!(headroom(u64::MAX, 1, 2), u64::MAX - u64::MAX / 2);
        assert_eq!(
            Parts::new(u64::MAX, u64::MAX, 0, 0, 0, false).map(|p| p.total),
            Some(u64::MAX)
        );
    }

    #[test]
    fn geo_extremes_and_unknown_positions() {
        let p = pos(10.0, 20.0);
        assert_eq!(geo_part(1000, Some(&p), Some(&p)), 1000);
        assert_eq!(
            geo_part(1000, Some(&pos(0.0, 0.0)), Some(&pos(0.0, 180.0))),
            0
        );
        assert_eq!(
            geo_part(1000, Some(&pos(90.0, 0.0)), Some(&pos(-90.0, 0.0))),
            0
        );
        assert_eq!(geo_part(1000, None, Some(&p)), 0);
        assert_eq!(geo_part(1000, Some(&p), None), 0);
        assert!(Position::from_degrees(91.0, 0.0).is_none());
        assert!(Position::from_degrees(f64::NAN, 0.0).is_none());
    }

    #[test]
    fn remote_edges_pay_the_penalty_and_drop_at_zero() {
        assert_eq!(Parts::new(100, 100, 0, 0, 0, true).map(|p| p.total), None);
        assert_eq!(
            Parts::new(100, 100, 1, 0, 0, true).map(|p| p.total),
            Some(1)
        );
        assert_eq!(
            Parts::new(100, 100, 0, 0, 0, false).map(|p| p.total),
            Some(200)
        );
        assert_eq!(Parts::new(0, 0, 0, 0, 0, false).map(|p| p.total), Some(0));
    }
}
