//! The filter's metrics, defined once per configuration; requests only increment cached ids.
//!
//! Per-variant response metrics (status class, time) exist only in the `responses` build: the
//! default one has no response callback to count them, and a counter that stays at zero would
//! read as "no errors". Analysis judges responses from Envoy's cluster stats instead.

use crate::abi::{self, MetricKind};
use linnet_core::metrics as names;
#[cfg(feature = "responses")]
use linnet_core::metrics::CLASSES;
use linnet_core::{Reason, Snapshot, Variant};

/// Metric ids for one rollout, indexed by `Variant as usize`.
pub struct RolloutMetrics {
    requests: [[u32; Reason::ALL.len()]; 2],
    #[cfg(feature = "responses")]
    responses: [[u32; CLASSES.len()]; 2],
    #[cfg(feature = "responses")]
    response_time: [u32; 2],
    mirrored: u32,
    override_rejected: u32,
}

pub struct Metrics {
    pub rollouts: Vec<RolloutMetrics>,
    stripped: u32,
}

/// Defines one metric, with an error that names it.
pub fn define_one(kind: MetricKind, name: &str) -> Result<u32, String> {
    abi::define_metric(kind, name)
        .map_err(|status| format!("cannot define metric {name}: host status {status}"))
}

fn vi(v: Variant) -> usize {
    match v {
        Variant::Stable => 0,
        Variant::Canary => 1,
    }
}

fn ri(r: Reason) -> usize {
    Reason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}

fn bump(id: u32) {
    // A failed increment loses one sample; it must not fail the request.
    let _ = abi::increment_metric(id, 1);
}

// === impl Metrics ===

impl Metrics {
    pub fn define(snapshot: &Snapshot) -> Result<Metrics, String> {
        let mut rollouts = Vec::with_capacity(snapshot.rollouts.len());
        for r in &snapshot.rollouts {
            let mut m = RolloutMetrics {
                requests: [[0; Reason::ALL.len()]; 2],
                #[cfg(feature = "responses")]
                responses: [[0; CLASSES.len()]; 2],
                #[cfg(feature = "responses")]
                response_time: [0; 2],
                mirrored: define_one(MetricKind::Counter, &names::mirrored(&r.name))?,
                override_rejected: define_one(
                    MetricKind::Counter,
                    &names::override_rejected(&r.name),
                )?,
            };
            for v in Variant::ALL {
                for reason in Reason::ALL {
                    m.requests[vi(v)][ri(reason)] =
                        define_one(MetricKind::Counter, &names::requests(&r.name, v, reason))?;
                }
                #[cfg(feature = "responses")]
                {
                    for (c, class) in CLASSES.iter().enumerate() {
                        m.responses[vi(v)][c] =
                            define_one(MetricKind::Counter, &names::responses(&r.name, v, class))?;
                    }
                    m.response_time[vi(v)] =
                        define_one(MetricKind::Histogram, &names::response_time(&r.name, v))?;
                }
            }
            rollouts.push(m);
        }
        Ok(Metrics {
            rollouts,
            stripped: define_one(MetricKind::Counter, names::STRIPPED_HEADERS)?,
        })
    }

    pub fn stripped(&self, n: u32) {
        if n > 0 {
            let _ = abi::increment_metric(self.stripped, i64::from(n));
        }
    }
}

// === impl RolloutMetrics ===

impl RolloutMetrics {
    pub fn request(&self, v: Variant, r: Reason) {
        bump(self.requests[vi(v)][ri(r)]);
    }

    #[cfg(feature = "responses")]
    pub fn response(&self, v: Variant, class: Option<usize>, elapsed_ms: u64) {
        if let Some(id) = class.and_then(|c| self.responses[vi(v)].get(c)) {
            bump(*id);
        }
        let _ = abi::record_metric(self.response_time[vi(v)], elapsed_ms);
    }

    pub fn mirrored(&self) {
        bump(self.mirrored);
    }

    pub fn override_rejected(&self) {
        bump(self.override_rejected);
    }
}
