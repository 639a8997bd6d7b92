//! The filter's metrics, defined once per configuration. A request only adds to counts kept
//! in the VM; the root's tick hands them to Envoy (`Metrics::flush`: every 50 ms with a
//! sidecar, every 200 ms without), which saves every request a host call (about 2k
//! instructions in Envoy, measured). A count is in Envoy's stats within a tick.
//!
//! Per-variant response metrics (status class, time) exist only in the `responses` build: the
//! default one has no response callback to count them, and a counter that stays at zero would
//! read as "no errors". Analysis judges responses from Envoy's cluster stats instead.

use crate::abi::{self, MetricKind};
use linnet_core::metrics as names;
#[cfg(feature = "responses")]
use linnet_core::metrics::CLASSES;
use linnet_core::{Reason, Snapshot, Variant};
use std::cell::Cell;

/// An Envoy counter and what this VM counted since the last flush.
#[derive(Default)]
struct Counter {
    id: u32,
    pending: Cell<u32>,
}

/// Metric ids for one rollout, indexed by `Variant as usize`.
pub struct RolloutMetrics {
    requests: [[Counter; Reason::ALL.len()]; 2],
    #[cfg(feature = "responses")]
    responses: [[Counter; CLASSES.len()]; 2],
    #[cfg(feature = "responses")]
    response_time: [u32; 2],
    mirrored: Counter,
    override_rejected: Counter,
}

pub struct Metrics {
    pub rollouts: Vec<RolloutMetrics>,
    stripped: Counter,
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

// === impl Counter ===

impl Counter {
    fn define(name: &str) -> Result<Counter, String> {
        Ok(Counter {
            id: define_one(MetricKind::Counter, name)?,
            pending: Cell::new(0),
        })
    }

    fn add(&self, n: u32) {
        self.pending.set(self.pending.get().saturating_add(n));
    }

    fn flush(&self) {
        let n = self.pending.replace(0);
        if n > 0 {
            // A failed increment loses these samples; it must not fail anything else.
            let _ = abi::increment_metric(self.id, i64::from(n));
        }
    }
}

// === impl Metrics ===

impl Metrics {
    pub fn define(snapshot: &Snapshot) -> Result<Metrics, String> {
        let mut rollouts = Vec::with_capacity(snapshot.rollouts.len());
        for r in &snapshot.rollouts {
            let mut m = RolloutMetrics {
                requests: Default::default(),
                #[cfg(feature = "responses")]
                responses: Default::default(),
                #[cfg(feature = "responses")]
                response_time: [0; 2],
                mirrored: Counter::define(&names::mirrored(&r.name))?,
                override_rejected: Counter::define(&names::override_rejected(&r.name))?,
            };
            for v in Variant::ALL {
                for reason in Reason::ALL {
                    m.requests[vi(v)][ri(reason)] =
                        Counter::define(&names::requests(&r.name, v, reason))?;
                }
                #[cfg(feature = "responses")]
                {
                    for (c, class) in CLASSES.iter().enumerate() {
                        m.responses[vi(v)][c] =
                            Counter::define(&names::responses(&r.name, v, class))?;
                    }
                    m.response_time[vi(v)] =
                        define_one(MetricKind::Histogram, &names::response_time(&r.name, v))?;
                }
            }
            rollouts.push(m);
        }
        Ok(Metrics {
            rollouts,
            stripped: Counter::define(names::STRIPPED_HEADERS)?,
        })
    }

    pub fn stripped(&self, n: u32) {
        self.stripped.add(n);
    }

    /// Hands every count made since the last flush to Envoy (the root's tick, and before a
    /// configuration is replaced).
    pub fn flush(&self) {
        self.stripped.flush();
        for r in &self.rollouts {
            r.requests.iter().flatten().for_each(Counter::flush);
            #[cfg(feature = "responses")]
            r.responses.iter().flatten().for_each(Counter::flush);
            r.mirrored.flush();
            r.override_rejected.flush();
        }
    }
}

// === impl RolloutMetrics ===

impl RolloutMetrics {
    pub fn request(&self, v: Variant, r: Reason) {
        self.requests[vi(v)][ri(r)].add(1);
    }

    #[cfg(feature = "responses")]
    pub fn response(&self, v: Variant, class: Option<usize>, elapsed_ms: u64) {
        if let Some(counter) = class.and_then(|c| self.responses[vi(v)].get(c)) {
            counter.add(1);
        }
        let _ = abi::record_metric(self.response_time[vi(v)], elapsed_ms);
    }

    pub fn mirrored(&self) {
        self.mirrored.add(1);
    }

    pub fn override_rejected(&self) {
        self.override_rejected.add(1);
    }
}
