//! What a source reports for one window: per variant, requests, errors and a latency
//! histogram, all as increases over the window; and the increase of each watched counter.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};

/// Cumulative bucket counts by upper bound (ms), ascending; the last bound may be +Inf.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// JSON has no infinity: the +Inf bound is written `null`, and read back as +Inf.
    #[serde(deserialize_with = "bounds")]
    pub buckets: Vec<(f64, f64)>,
}

/// Buckets as written: a `null` bound is +Inf (how serde_json writes it).
fn bounds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(f64, f64)>, D::Error> {
    let raw: Vec<(Option<f64>, f64)> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(le, c)| (le.unwrap_or(f64::INFINITY), c))
        .collect())
}

/// One variant over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub requests: f64,
    /// 5xx responses.
    pub errors: f64,
    pub latency: Histogram,
}

/// Everything judged over one window length.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The length asked for.
    pub span_ms: Millis,
    /// How much of it the source could see (less when it has just started).
    pub covered_ms: Millis,
    pub canary: Traffic,
    pub stable: Traffic,
    /// The increase of each watched counter, in the order asked; `None`: no such series
    /// (a counter that was never incremented).
    pub counters: Vec<Option<f64>>,
}

// === impl Histogram ===

impl Histogram {
    /// Builds from `(upper bound, cumulative count)` pairs in any order; non-finite counts
    /// make the histogram unusable (`None`).
    pub fn from_buckets(mut buckets: Vec<(f64, f64)>) -> Option<Histogram> {
        if buckets
            .iter()
            .any(|(le, c)| le.is_nan() || !c.is_finite() || *c < 0.0)
        {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets.dedup_by(|b, a| {
            if a.0 == b.0 {
                a.1 += b.1;
                true
            } else {
                false
            }
        });
        Some(Histogram { buckets })
    }

    /// Observations in the window.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// The `q` quantile (0..1) by linear interpolation inside its bucket, as PromQL's
    /// `histogram_quantile` does; the highest finite bound when it falls in the +Inf bucket.
    /// `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total.is_nan() || total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0_f64, 0.0_f64);
        for &(le, cum) in &self.buckets {
            // Cumulative counts from separate scrapes can dip; never step backwards.
            let cum = cum.max(lower.1);
            if cum >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let in_bucket = cum - lower.1;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
            }
            lower = (le, cum);
        }
        Some(lower.0)
    }
}

// === impl Traffic ===

impl Traffic {
    /// `None` without requests, or when a number is not finite.
    pub fn error_rate(&self) -> Option<f64> {
        if !self.requests.is_finite() || !self.errors.is_finite() || self.requests <= 0.0 {
            return None;
        }
        Some((self.errors / self.requests).clamp(0.0, 1.0))
    }

    /// Whether every number is usable.
    pub fn is_finite(&self) -> bool {
        self.requests.is_finite() && self.errors.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_reads_back_what_it_wrote_infinity_included() {
        let h = Histogram::from_buckets(vec![(1.0, 3.0), (f64::INFINITY, 4.0)]).unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"buckets":[[1.0,3.0],[null,4.0]]}"#);
        assert_eq!(serde_json::from_str::<Histogram>(&json).unwrap(), h);
    }

    fn h(b: &[(f64, f64)]) -> Histogram {
        Histogram::from_buckets(b.to_vec()).unwrap()
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 observations: 90 under 10 ms, 9 in 10..100, 1 in 100..250.
        let hist = h(&[
            (10.0, 90.0),
            (100.0, 99.0),
            (250.0, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        assert_eq!(hist.quantile(0.5), Some(10.0 * 50.0 / 90.0));
        assert_eq!(hist.quantile(0.99), Some(100.0));
        let p995 = hist.quantile(0.995).unwrap();
        assert!((p995 - 175.0).abs() < 1e-9, "{p995}");
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn the_inf_bucket_reports_the_highest_bound() {
        let hist = h(&[(5.0, 1.0), (f64::INFINITY, 10.0)]);
        assert_eq!(hist.quantile(0.99), Some(5.0));
    }

    #[test]
    fn unusable_buckets_are_refused() {
        assert!(Histogram::from_buckets(vec![(1.0, f64::NAN)]).is_none());
        assert!(Histogram::from_buckets(vec![(f64::NAN, 1.0)]).is_none());
        assert!(Histogram::from_buckets(vec![(1.0, -1.0)]).is_none());
        // Unordered input and duplicate bounds (two Envoys) are fine.
        let hist = h(&[(10.0, 4.0), (1.0, 1.0), (10.0, 6.0)]);
        assert_eq!(hist.buckets, vec![(1.0, 1.0), (10.0, 10.0)]);
    }

    #[test]
    fn error_rate_needs_requests() {
        let t = Traffic {
            requests: 200.0,
            errors: 10.0,
            ..Traffic::default()
        };
        assert_eq!(t.error_rate(), Some(0.05));
        assert_eq!(Traffic::default().error_rate(), None);
        let nan = Traffic {
            requests: f64::NAN,
            ..t
        };
        assert_eq!(nan.error_rate(), None);
    }
}
