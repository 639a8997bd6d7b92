//! The sidecar's Prometheus metrics: per-rollout weight, state, step, transitions and analysis
//! decisions, each live rollout's clusters and SLO error budget (what dashboards and alerts
//! join Envoy's cluster stats with), the snapshot version, connected filters, API requests,
//! the capped places of streams and held polls, and what retention pruned from the store.

use crate::machine::{Runtime, State};
use crate::spec::RolloutSpec;
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

/// Which Envoy cluster serves which variant: Prometheus cannot tell otherwise.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    rollout: String,
    stable_cluster: String,
    canary_cluster: String,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

pub struct Metrics {
    registry: Registry,
    weight: Family<RolloutLabels, Gauge<f64, AtomicU64>>,
    state: Family<StateLabels, Gauge>,
    step: Family<RolloutLabels, Gauge>,
    transitions: Family<RolloutLabels, Counter>,
    analysis_runs: Family<DecisionLabels, Counter>,
    rollout_clusters: Family<ClusterLabels, Gauge>,
    error_budget: Family<RolloutLabels, Gauge<f64, AtomicU64>>,
    /// Rollout → the labels of its `rollout_clusters` series, so that a finished rollout's
    /// can be removed: a cluster named by two rollouts would make every join on it fail.
    shown_clusters: Mutex<HashMap<String, ClusterLabels>>,
    snapshot_version: Gauge,
    connected_filters: Gauge,
    api_requests: Family<ApiLabels, Counter>,
    slots_in_use: Family<LimitLabels, Gauge>,
    rejected: Family<LimitLabels, Counter>,
    rate_limited: Family<KeyLabels, Counter>,
    pruned: Family<TableLabels, Counter>,
    notifications: Family<ResultLabels, Counter>,
    notifications_waiting: Gauge,
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
            rollout_clusters: Family::default(),
            error_budget: Family::default(),
            shown_clusters: Mutex::new(HashMap::new()),
            snapshot_version: Gauge::default(),
            connected_filters: Gauge::default(),
            api_requests: Family::default(),
            slots_in_use: Family::default(),
            rejected: Family::default(),
            rate_limited: Family::default(),
            pruned: Family::default(),
            notifications: Family::default(),
            notifications_waiting: Gauge::default(),
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
            "rollout_info",
            "1 for each live rollout that names its clusters, with the stable and canary cluster",
            m.rollout_clusters.clone(),
        );
        registry.register(
            "rollout_error_budget_ratio",
            "Share of requests the live rollout's SLO (analysis.slo) allows to fail",
            m.error_budget.clone(),
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
            "api_rate_limited",
            "Requests answered 429 because their key's bucket (or the snapshot polls', key=\"_poll\") was empty",
            m.rate_limited.clone(),
        );
        registry.register(
            "store_pruned",
            "Rows the retention policy deleted, by table (events, checks, transitions)",
            m.pruned.clone(),
        );
        registry.register(
            "notification_attempts",
            "Notification delivery attempts, by result (delivered, retrying, failed: given up)",
            m.notifications.clone(),
        );
        registry.register(
            "notifications_waiting",
            "Notifications stored and not yet delivered (pending or retrying)",
            m.notifications_waiting.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Every series of one rollout, from its spec and its runtime state.
    pub fn set_rollout(&self, spec: &RolloutSpec, rt: &Runtime) {
        let name = spec.name.as_str();
        let labels = RolloutLabels {
            rollout: name.to_owned(),
        };
        self.set_spec(spec, !rt.state.is_finished());
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

    /// The info and error-budget series of a live rollout; none once it is finished, as
    /// its clusters may serve the next release. Series that stay are left alone rather than
    /// made again, so no scrape sees them missing.
    fn set_spec(&self, spec: &RolloutSpec, live: bool) {
        let name = spec.name.as_str();
        let wanted = spec
            .clusters
            .as_ref()
            .filter(|_| live)
            .map(|c| ClusterLabels {
                rollout: name.to_owned(),
                stable_cluster: c.stable.clone(),
                canary_cluster: c.canary.clone(),
            });
        let mut shown = self
            .shown_clusters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if shown.get(name) != wanted.as_ref() {
            if let Some(old) = shown.remove(name) {
                self.rollout_clusters.remove(&old);
            }
            if let Some(l) = wanted {
                self.rollout_clusters.get_or_create(&l).set(1);
                shown.insert(name.to_owned(), l);
            }
        }
        let labels = RolloutLabels {
            rollout: name.to_owned(),
        };
        // `analysis.slo` is validated as a percent in (0, 100).
        match spec.analysis.as_ref().and_then(|a| a.slo).filter(|_| live) {
            Some(slo) => {
                self.error_budget
                    .get_or_create(&labels)
                    .set((100.0 - slo) / 100.0);
            }
            None => {
                self.error_budget.remove(&labels);
            }
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

    pub fn count_rate_limited(&self, key: &str) {
        self.rate_limited
            .get_or_create(&KeyLabels {
                key: key.to_owned(),
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

    pub fn count_notification(&self, result: &str) {
        self.notifications
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn set_notifications_waiting(&self, n: u64) {
        self.notifications_waiting
            .set(i64::try_from(n).unwrap_or(i64::MAX));
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
    use crate::spec::Format;

    fn rollout(yaml: &str) -> (RolloutSpec, Runtime) {
        let (spec, plan) = RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap();
        let rt = Runtime::new(&plan, 0);
        (spec, rt)
    }

    #[test]
    fn a_live_rollout_shows_its_clusters_and_error_budget_until_it_is_finished() {
        let m = Metrics::new();
        let (spec, mut rt) = rollout(
            "name: checkout\nsteps: [{weight: 10}]\n\
             clusters: {stable: checkout-stable, canary: checkout-canary}\n\
             analysis: {slo: 99.5, guardrails: [{error_rate: {max: 5}}]}",
        );
        let info = r#"linnet_rollout_info{rollout="checkout",stable_cluster="checkout-stable",canary_cluster="checkout-canary"} 1"#;
        let budget = r#"linnet_rollout_error_budget_ratio{rollout="checkout"} 0.005"#;
        m.set_rollout(&spec, &rt);
        m.set_rollout(&spec, &rt);
        let text = m.render();
        assert_eq!(text.matches("linnet_rollout_info{").count(), 1, "{text}");
        assert!(text.contains(info), "{text}");
        assert!(text.contains(budget), "{text}");

        // The next release of the name, on other clusters and without an SLO.
        let (next, next_rt) = rollout(
            "name: checkout\nsteps: [{weight: 10}]\nclusters: {stable: checkout-v2, canary: checkout-v3}",
        );
        m.set_rollout(&next, &next_rt);
        let text = m.render();
        assert!(!text.contains(info), "{text}");
        assert!(
            text.contains(r#"stable_cluster="checkout-v2",canary_cluster="checkout-v3"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("linnet_rollout_error_budget_ratio{"),
            "{text}"
        );

        rt.state = State::RolledBack;
        m.set_rollout(&spec, &rt);
        m.set_rollout(&next, &rt);
        let text = m.render();
        assert!(!text.contains("linnet_rollout_info{"), "{text}");
        assert!(
            !text.contains("linnet_rollout_error_budget_ratio{"),
            "{text}"
        );
        assert!(
            text.contains(r#"linnet_rollout_state{rollout="checkout",state="rolled_back"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_rollout_without_clusters_or_slo_has_no_info_or_budget() {
        let m = Metrics::new();
        let (spec, rt) = rollout("name: web\nsteps: [{weight: 10}]");
        m.set_rollout(&spec, &rt);
        let text = m.render();
        assert!(!text.contains("linnet_rollout_info{"), "{text}");
        assert!(
            !text.contains("linnet_rollout_error_budget_ratio{"),
            "{text}"
        );
        assert!(
            text.contains(r#"linnet_rollout_weight_percent{rollout="web"}"#),
            "{text}"
        );
    }

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
