//! The sidecar's Prometheus metrics: per-rollout weight, state, step, transitions and analysis
//! decisions, the snapshot version, connected filters, API requests, the capped places of
//! streams and held polls, and what retention pruned from the store.

use crate::machine::{Runtime, State};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    rollout: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    rollout: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    rollout: String,
    decision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    route: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

pub struct Metrics {
    registry: Registry,
    weight: Family<RolloutLabels, Gauge<f64, AtomicU64>>,
    state: Family<StateLabels, Gauge>,
    step: Family<RolloutLabels, Gauge>,
    transitions: Family<RolloutLabels, Counter>,
    analysis_runs: Family<DecisionLabels, Counter>,
    snapshot_version: Gauge,
    connected_filters: Gauge,
    api_requests: Family<ApiLabels, Counter>,
    slots_in_use: Family<LimitLabels, Gauge>,
    rejected: Family<LimitLabels, Counter>,
    pruned: Family<TableLabels, Counter>,
    /// Poller id → (last seen, the timeout it asked for).
    pollers: Mutex<HashMap<String, (Instant, Duration)>>,
}

/// Most pollers remembered, so that random ids cannot grow the map without limit.
const MAX_POLLERS: usize = 10_000;

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("linnet");
        let m = Metrics {
            weight: Family::default(),
            state: Family::default(),
            step: Family::default(),
            transitions: Family::default(),
            analysis_runs: Family::default(),
            snapshot_version: Gauge::default(),
            connected_filters: Gauge::default(),
            api_requests: Family::default(),
            slots_in_use: Family::default(),
            rejected: Family::default(),
            pruned: Family::default(),
            pollers: Mutex::new(HashMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "rollout_weight_percent",
            "Canary share served to the filters",
            m.weight.clone(),
        );
        registry.register(
            "rollout_state",
            "1 for the rollout's current state",
            m.state.clone(),
        );
        registry.register(
            "rollout_step",
            "Index of the rollout's current step",
            m.step.clone(),
        );
        registry.register(
            "rollout_transitions",
            "State or step changes",
            m.transitions.clone(),
        );
        registry.register(
            "analysis_runs",
            "Analysis runs by decision (pass, hold, roll_back, pause, resume)",
            m.analysis_runs.clone(),
        );
        registry.register(
            "snapshot_version",
            "Version of the snapshot served to the filters",
            m.snapshot_version.clone(),
        );
        registry.register(
            "connected_filters",
            "Distinct snapshot pollers seen within twice their poll timeout",
            m.connected_filters.clone(),
        );
        registry.register(
            "api_requests",
            "Admin API requests by route and status",
            m.api_requests.clone(),
        );
        registry.register(
            "api_slots_in_use",
            "Open event streams (limit=sse) and held snapshot polls (limit=polls)",
            m.slots_in_use.clone(),
        );
        registry.register(
            "api_rejected",
            "Requests answered 503 because their limit (sse, polls) was reached",
            m.rejected.clone(),
        );
        registry.register(
            "store_pruned",
            "Rows the retention policy deleted, by table (events, checks, transitions)",
            m.pruned.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn set_rollout(&self, name: &str, rt: &Runtime) {
        let labels = RolloutLabels {
            rollout: name.to_owned(),
        };
        self.weight.get_or_create(&labels).set(rt.weight);
        self.step
            .get_or_create(&labels)
            .set(i64::try_from(rt.step).unwrap_or(i64::MAX));
        for s in State::ALL {
            let l = StateLabels {
                rollout: name.to_owned(),
                state: s.as_str().to_owned(),
            };
            self.state.get_or_create(&l).set(i64::from(s == rt.state));
        }
    }

    pub fn count_transition(&self, name: &str) {
        self.transitions
            .get_or_create(&RolloutLabels {
                rollout: name.to_owned(),
            })
            .inc();
    }

    pub fn count_analysis(&self, name: &str, decision: &str) {
        self.analysis_runs
            .get_or_create(&DecisionLabels {
                rollout: name.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }

    pub fn set_version(&self, version: u64) {
        self.snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// `route` is a pattern (a known set); `method` is what the client sent, so anything but
    /// the methods the API knows is counted as `other`: a client cannot make new series.
    pub fn count_request(&self, method: &str, route: &str, code: u16) {
        const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
        let method = KNOWN.iter().find(|m| **m == method).map_or("other", |m| m);
        self.api_requests
            .get_or_create(&ApiLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                code: code.to_string(),
            })
            .inc();
    }

    /// The gauge of places in use under `limit` (`sse`, `polls`).
    pub fn slots_in_use(&self, limit: &str) -> Gauge {
        self.slots_in_use
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            })
            .clone()
    }

    pub fn count_rejected(&self, limit: &str) {
        self.rejected
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            })
            .inc();
    }

    pub fn count_pruned(&self, table: &str, rows: u64) {
        self.pruned
            .get_or_create(&TableLabels {
                table: table.to_owned(),
            })
            .inc_by(rows);
    }

    /// Notes a snapshot poll by `id`, which will wait up to `timeout`.
    pub fn saw_poller(&self, id: &str, timeout: Duration) {
        let mut pollers = self.pollers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(known) = pollers.get_mut(id) {
            *known = (now, timeout);
            return;
        }
        // Expired pollers are swept only when a new one needs their place: a sweep on every
        // poll made each change cost the square of the fleet (every poller re-polls at once).
        if pollers.len() >= MAX_POLLERS {
            pollers.retain(|_, (seen, t)| now.duration_since(*seen) <= *t * 2);
        }
        if pollers.len() < MAX_POLLERS {
            pollers.insert(id.to_owned(), (now, timeout));
        }
    }

    /// Distinct pollers seen within twice their timeout.
    pub fn connected_filters(&self) -> usize {
        let pollers = self.pollers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pollers
            .values()
            .filter(|(seen, t)| now.duration_since(*seen) <= *t * 2)
            .count()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.connected_filters
            .set(i64::try_from(self.connected_filters()).unwrap_or(i64::MAX));
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pollers_expire_after_twice_their_timeout() {
        let m = Metrics::new();
        m.saw_poller("a", Duration::from_secs(1));
        m.saw_poller("b", Duration::from_secs(10));
        m.saw_poller("a", Duration::from_secs(1));
        assert_eq!(m.connected_filters(), 2);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(m.connected_filters(), 1);
        assert!(m.render().contains("linnet_connected_filters 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_map_takes_a_new_poller_only_in_an_expired_ones_place() {
        let m = Metrics::new();
        for i in 0..MAX_POLLERS {
            m.saw_poller(&format!("p{i}"), Duration::from_secs(1));
        }
        m.saw_poller("new", Duration::from_secs(1));
        assert_eq!(
            m.connected_filters(),
            MAX_POLLERS,
            "no room for a new poller"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Seen again: still counted, and their place kept.
        m.saw_poller("p0", Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        m.saw_poller("new", Duration::from_secs(1));
        assert_eq!(m.connected_filters(), 2);
        let pollers = m.pollers.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(pollers.len(), 2, "the expired pollers made room");
    }
}
