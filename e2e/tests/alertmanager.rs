//! Alertmanager as a guardrail, end to end: Debian's Prometheus scrapes a real Envoy that
//! routes the `checkout` rollout, evaluates a rule written here on the canary cluster's 5xx,
//! and sends the alert to Debian's Alertmanager, which posts it to the `linnet` sidecar's
//! `/v1/alertmanager` with the admin token as a bearer token. The rollout claims the alert
//! (`alerts: [{match: {alertname: CanaryErrors, service: checkout}}]`) and has no analysis,
//! so nothing but that alert can roll it back: a healthy canary, judged by the same rule with
//! traffic on it, is left alone; a canary answering 500s is rolled back with the alert named.
//! An Alertmanager that sends a wrong token is refused, and the rollout is untouched.
//!
//! Needs `.venv/bin/envoy`, `/usr/bin/prometheus` and `/usr/bin/prometheus-alertmanager`
//! (`make setup`), `dist/linnet.wasm` (`make wasm`) and the `linnet` binary
//! (`cargo build -p linnet-sidecar`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::alertmanager::Alertmanager;
use linnet_e2e::envoy::Envoy;
use linnet_e2e::prometheus::{Extras, Prometheus};
use linnet_e2e::sidecar::{Sidecar, ADMIN_TOKEN};
use linnet_e2e::traffic::{Load, LoadConfig};
use linnet_e2e::upstream::{Faults, Upstream};
use linnet_e2e::TestDir;
use serde_json::Value;
use std::time::{Duration, Instant};

const ROLLOUT: &str = "checkout";
const HOST: &str = "checkout.local";
const ALERT: &str = "CanaryErrors";
/// Every wait is bounded by this.
const PATIENCE: Duration = Duration::from_secs(40);
/// The load stops by itself after this long or this many requests, whatever the test does.
const LOAD_LIMIT: Duration = Duration::from_secs(90);
const LOAD_MAX_REQUESTS: u64 = 4_000;

/// The rollout: half the users on the canary until promoted, no analysis, and the alert
/// that judges it. Its clusters are `envoy/demo.yaml`'s.
const SPEC: &str = "name: checkout
match: {authority: checkout.local}
clusters: {stable: checkout-stable, canary: checkout-canary}
stickiness: [{header: x-user-id}]
alerts: [{match: {alertname: CanaryErrors, service: checkout}, severity: critical}]
steps: [{weight: 50, pause: until promoted}, {weight: 100}]
";

/// The rule as a team would write it on Envoy's stats: any 5xx from the canary's cluster
/// over the last 10 s (ten 1 s scrapes, so `rate` always has two samples), firing at once.
const RULES: &str = r#"groups:
  - name: checkout-canary
    rules:
      - alert: CanaryErrors
        expr: sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx{envoy_response_code_class="5", envoy_cluster_name="checkout-canary"}[10s])) > 0
        for: 0s
        labels: {service: checkout, severity: page}
        annotations:
          summary: '{{ $labels.envoy_cluster_name }} answers 5xx'
          description: '{{ printf "%.2f" $value }} errors a second over the last 10s'
"#;

/// What the rule's summary renders to for the canary cluster.
const SUMMARY: &str = "checkout-canary answers 5xx";

/// Everything the test runs: fields drop in order, so the load stops before Envoy goes and
/// Prometheus before the Alertmanager it sends to.
struct Rig {
    load: Load,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    _envoy: Envoy,
    sidecar: Sidecar,
    _stable: Upstream,
    canary: Upstream,
    _dir: TestDir,
}

// === impl Rig ===

impl Rig {
    /// The sidecar with the rollout, the upstreams (both healthy), an Envoy whose filter
    /// polls the sidecar, Alertmanager posting to the sidecar, Prometheus scraping Envoy
    /// every second with the rule loaded and alerting to that Alertmanager, and the load.
    /// Alertmanager sends `token`.
    fn start(name: &str, token: &str) -> Rig {
        let dir = TestDir::new("alertmanager", name).unwrap();
        let sidecar = Sidecar::start(dir.path()).unwrap();
        let stable = Upstream::start("stable").unwrap();
        let canary = Upstream::start("canary").unwrap();
        let config = sidecar.envoy_config(stable.port(), canary.port()).unwrap();
        let envoy = Envoy::start(&config).unwrap();
        sidecar.create(SPEC).unwrap();
        let alertmanager =
            Alertmanager::start(&dir.path().join("alertmanager"), sidecar.addr, token).unwrap();
        let rules = dir.path().join("canary-rules.yml");
        std::fs::write(&rules, RULES).unwrap();
        let extras = Extras {
            rule_files: vec![rules],
            alertmanager: Some(alertmanager.addr()),
            ..Extras::default()
        };
        let prometheus = Prometheus::start_with(
            &dir.path().join("prometheus"),
            &[envoy.admin],
            &extras,
            Duration::from_secs(1),
        )
        .unwrap();
        let mut load = LoadConfig::new(HOST, LOAD_LIMIT);
        load.rate = 50;
        load.connections = 2;
        load.max_requests = Some(LOAD_MAX_REQUESTS);
        let load = Load::start(envoy.listener, &load).unwrap();
        Rig {
            load,
            prometheus,
            alertmanager,
            _envoy: envoy,
            sidecar,
            _stable: stable,
            canary,
            _dir: dir,
        }
    }

    /// `GET /v1/rollouts/checkout`.
    fn status(&self) -> Value {
        self.sidecar
            .get_json(&format!("/v1/rollouts/{ROLLOUT}"))
            .unwrap()
    }

    /// The rollout's audit events, oldest first.
    fn events(&self) -> Vec<Value> {
        let v = self
            .sidecar
            .get_json(&format!("/v1/audit?rollout={ROLLOUT}&limit=1000"))
            .unwrap();
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// The `CanaryErrors` rule as Prometheus last evaluated it.
    fn rule(&self) -> Value {
        let rules = self.prometheus.rules().unwrap();
        rules
            .into_iter()
            .find(|r| r["name"] == ALERT)
            .unwrap_or_else(|| panic!("no rule {ALERT} loaded:\n{}", self.prometheus.log()))
    }

    /// Alertmanager's alerts named `CanaryErrors`.
    fn held_by_alertmanager(&self) -> Vec<Value> {
        let alerts = self.alertmanager.alerts().unwrap();
        alerts
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == ALERT)
            .collect()
    }

    /// Waits for the rollout to hold half the users on the canary, at its manual gate.
    fn wait_at_half(&self) {
        self.wait("the rollout at 50%", || {
            let s = self.status();
            (s["state"] == "progressing" && s["weight"] == 50.0).then_some(())
        });
    }

    /// Makes the canary answer a fifth of its requests with 500s.
    fn canary_turns_bad(&self) {
        self.canary
            .set_faults(Faults {
                error_percent: 20.0,
                delay_ms: 0,
            })
            .unwrap();
    }

    /// Polls `f` until it returns something, at most [`PATIENCE`]; past it, fails with
    /// what every part of the chain says.
    fn wait<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> T {
        linnet_e2e::poll(what, PATIENCE, f, || self.story()).unwrap()
    }

    /// What to read when a wait fails: each link of the chain, from the rule to the sidecar.
    fn story(&self) -> String {
        let tail = |log: String, n: usize| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "rule: {}\nalertmanager: {:?}\nstatus: {}\nload: {:?}\n\
             alertmanager log (tail):\n{}\nsidecar log (tail):\n{}",
            self.rule(),
            self.alertmanager.alerts(),
            self.status(),
            self.load.counts(),
            tail(self.alertmanager.log(), 15),
            tail(self.sidecar.log(), 15),
        )
    }
}

#[test]
fn a_firing_alert_from_prometheus_through_alertmanager_rolls_the_canary_back() {
    let rig = Rig::start("rollback", ADMIN_TOKEN);
    let prom = &rig.prometheus;

    // Healthy first: the rollout at 50%, the canary serving, and the rule evaluated twice
    // over a window with canary traffic in it, with nothing to say.
    rig.wait_at_half();
    let canary_requests = r#"sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="checkout-canary"}[10s]))"#;
    prom.wait_for(canary_requests, PATIENCE, |n| n >= 20.0)
        .unwrap();
    let mut evaluations = vec![rig.rule()["lastEvaluation"].clone()];
    rig.wait("two evaluations of the rule on a healthy canary", || {
        let rule = rig.rule();
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["state"], "inactive", "a healthy canary: {rule}");
        if evaluations.last() != Some(&rule["lastEvaluation"]) {
            evaluations.push(rule["lastEvaluation"].clone());
        }
        (evaluations.len() >= 3).then_some(())
    });
    let firing = format!(r#"ALERTS{{alertname="{ALERT}"}}"#);
    assert_eq!(prom.value(&firing).unwrap(), None);
    assert_eq!(rig.held_by_alertmanager(), Vec::<Value>::new());
    let healthy = rig.status();
    assert_eq!(
        (healthy["state"].as_str(), healthy["weight"].as_f64()),
        (Some("progressing"), Some(50.0)),
        "{}",
        rig.story()
    );
    assert!(alert_events(&rig.events()).is_empty());
    let before = rig.load.counts();
    assert!(before.canary > 0 && before.server_errors == 0, "{before:?}");

    // Then the canary answers a fifth of its requests with 500s. Each link of the chain is
    // timed from that moment, as the test first sees it.
    rig.canary_turns_bad();
    let faulty = Instant::now();
    let firing_now = format!(r#"ALERTS{{alertname="{ALERT}",alertstate="firing"}}"#);
    let (mut fired, mut in_alertmanager) = (None, None);
    let status = rig.wait("rolled back by the alert", || {
        // In causal order, so a later link is never seen before an earlier one.
        if fired.is_none() && prom.value(&firing_now).unwrap() == Some(1.0) {
            fired = Some(faulty.elapsed());
        }
        if in_alertmanager.is_none() && !rig.held_by_alertmanager().is_empty() {
            in_alertmanager = Some(faulty.elapsed());
        }
        let s = rig.status();
        (s["state"] == "rolled_back").then_some(s)
    });
    let rolled_back = faulty.elapsed();
    eprintln!(
        "faults on → firing in Prometheus: {fired:?}; → in Alertmanager: {in_alertmanager:?}; \
         → rolled back: {rolled_back:?}"
    );
    if let Some(f) = fired {
        eprintln!("alert fired → rolled back: {:?}", rolled_back - f);
    }

    // Rolled back to weight 0, the reason naming the alert and its rendered annotations.
    assert_eq!(status["weight"], 0.0, "{status}");
    let last = status["transitions"].as_array().unwrap().last().unwrap();
    assert_eq!(last["to"], "rolled_back", "{status}");
    let reason = last["reason"].as_str().unwrap();
    eprintln!("reason: {reason}");
    assert!(
        reason.starts_with(&format!("alert {ALERT} firing: {SUMMARY} — ")),
        "{reason}"
    );
    assert!(
        reason.ends_with("errors a second over the last 10s"),
        "{reason}"
    );

    // The audit has the alert as Alertmanager posted it, then the rollback it caused, and no
    // analysis: the alert alone did it.
    let events = rig.events();
    let seen = alert_events(&events);
    assert_eq!(seen.len(), 1, "{events:?}");
    let data = &seen[0]["data"];
    assert_eq!(data["alert"], ALERT, "{data}");
    assert_eq!(data["status"], "firing", "{data}");
    assert_eq!(data["severity"], "critical", "{data}");
    assert_eq!(data["action"], "rolled_back", "{data}");
    assert_eq!(data["labels"]["service"], "checkout", "{data}");
    assert_eq!(data["labels"]["severity"], "page", "{data}");
    assert_eq!(
        data["labels"]["envoy_cluster_name"], "checkout-canary",
        "{data}"
    );
    assert_eq!(data["annotations"]["summary"], SUMMARY, "{data}");
    assert_eq!(data["reason"], reason, "{data}");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["created", "started", "alert", "rolled_back"],
        "{events:?}"
    );
    assert_eq!(events.last().unwrap()["data"]["reason"], reason);
    // Alertmanager's first post was taken: no refusal (a wrong token's 401), no retry.
    let log = rig.alertmanager.log();
    for failed in ["Notify attempt failed", "Notify for alerts failed"] {
        assert!(!log.contains(failed), "{log}");
    }
}

#[test]
fn an_alert_sent_with_a_wrong_token_is_refused_and_changes_nothing() {
    let rig = Rig::start("wrong-token", "not-the-admin-token");
    rig.wait_at_half();
    rig.canary_turns_bad();
    let refused = rig.wait("Alertmanager refused by the sidecar", || {
        let log = rig.alertmanager.log();
        log.lines()
            .find(|l| l.contains("Notify for alerts failed"))
            .map(str::to_owned)
    });
    assert!(refused.contains("401"), "{refused}");
    assert!(refused.contains("wrong token"), "{refused}");
    // The alert fired and was posted, and the sidecar kept the rollout as it was.
    assert_eq!(rig.held_by_alertmanager().len(), 1, "{}", rig.story());
    let status = rig.status();
    assert_eq!(
        (status["state"].as_str(), status["weight"].as_f64()),
        (Some("progressing"), Some(50.0)),
        "{}",
        rig.story()
    );
    assert!(alert_events(&rig.events()).is_empty());
}

fn alert_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["kind"] == "alert").collect()
}
