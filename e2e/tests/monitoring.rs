//! The shipped monitoring assets (`monitoring/`) against the real thing: the Prometheus rules
//! pass `promtool check rules` and their own `promtool test rules` cases, and every query of
//! the Grafana dashboard and every rule's `expr` runs without error on a real Prometheus that
//! scrapes a real Envoy (the filter, traffic to both variants, a canary with some 5xx) and
//! the `linnet` sidecar driving it, with the rules loaded; the panels that must show
//! something do. Then the canary turns bad, analysis rolls it back, and the rollback alert
//! fires on that Prometheus.
//!
//! Needs `/usr/bin/promtool` and `/usr/bin/prometheus` (Debian's `prometheus` package) and
//! `.venv/bin/envoy` (`make setup`), `dist/linnet.wasm` (`make wasm`) and the `linnet` binary
//! (`cargo build -p linnet-sidecar`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::envoy::Envoy;
use linnet_e2e::http::admin_get;
use linnet_e2e::prometheus::{Extras, Prometheus, SIDECAR_JOB};
use linnet_e2e::sidecar::Sidecar;
use linnet_e2e::traffic::{Load, LoadConfig};
use linnet_e2e::upstream::{Faults, Upstream};
use linnet_e2e::{repo_root, TestDir};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's `prometheus` package puts the rules tool here.
const PROMTOOL: &str = "/usr/bin/promtool";
const RULES: &str = "monitoring/prometheus/linnet-rules.yml";
const RULE_TESTS: &str = "monitoring/prometheus/linnet-rules.test.yml";
const DASHBOARD: &str = "monitoring/grafana/linnet.json";
const ROLLOUT: &str = "checkout";
const HOST: &str = "checkout.local";
/// Every wait here is bounded by this.
const PATIENCE: Duration = Duration::from_secs(40);
/// The background load stops by itself after this long, whatever the test does.
const LOAD_LIMIT: Duration = Duration::from_secs(90);

/// The dashboard's panels that must return series once the rig has run a little: the
/// rollout itself, both variants' traffic, the canary's 5xx, latency and burn rate, routing
/// and analysis, the filters' snapshots and the sidecar: every target of each returns series.
/// The others (transitions, rejected slots) may rightly be empty or zero here.
const MUST_HAVE_DATA: [&str; 13] = [
    "Weight",
    "State",
    "Requests by variant",
    "5xx share by variant",
    "Latency p50 / p99 by variant",
    "Canary burn rate",
    "Routing decisions by reason",
    "Analysis runs by decision",
    "Snapshot age per Envoy",
    "Snapshot version: sidecar and Envoys",
    "Sidecar up",
    "Connected filters",
    "API requests by code",
];

/// A rollout at 50% held at a manual gate, judged every 2 s from Envoy's stats of the two
/// clusters by a guardrail the canary passes, with an SLO: every series the assets read.
fn rollout(envoy_admin: &str) -> String {
    format!(
        r#"name: {ROLLOUT}
match: {{authority: {HOST}}}
clusters: {{stable: checkout-stable, canary: checkout-canary}}
stickiness: [{{header: x-user-id}}]
steps: [{{weight: 50, pause: until promoted}}, {{weight: 100}}]
analysis:
  interval: 2s
  source: {{envoy: {{admin: ['{envoy_admin}']}}}}
  min_requests: 20
  slo: 99
  guardrails: [{{error_rate: {{max: 50}}}}]
"#
    )
}

/// Everything the live test runs: fields drop in order, so the load stops before Envoy goes.
struct Rig {
    _load: Load,
    prometheus: Prometheus,
    _envoy: Envoy,
    sidecar: Sidecar,
    _stable: Upstream,
    canary: Upstream,
    _dir: TestDir,
}

// === impl Rig ===

impl Rig {
    /// The sidecar with the rollout, the upstreams (the canary failing 5% of its requests),
    /// an Envoy whose filter polls the sidecar, the load, and Prometheus scraping Envoy and
    /// the sidecar every second with the shipped rules loaded.
    fn start() -> Rig {
        let dir = TestDir::new("monitoring", "live").unwrap();
        let sidecar = Sidecar::start(dir.path()).unwrap();
        let stable = Upstream::start("stable").unwrap();
        let canary = Upstream::start("canary").unwrap();
        canary
            .set_faults(Faults {
                error_percent: 5.0,
                delay_ms: 0,
            })
            .unwrap();
        let config = sidecar.envoy_config(stable.port(), canary.port()).unwrap();
        let envoy = Envoy::start(&config).unwrap();
        sidecar.create(&rollout(&envoy.admin.to_string())).unwrap();
        let extras = Extras {
            sidecar: Some(sidecar.addr),
            rule_files: vec![repo_root().join(RULES)],
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
        load.rate = 100;
        load.connections = 4;
        let load = Load::start(envoy.listener, &load).unwrap();
        Rig {
            _load: load,
            prometheus,
            _envoy: envoy,
            sidecar,
            _stable: stable,
            canary,
            _dir: dir,
        }
    }
}

/// `promtool <args…>` from the repository root: whether it passed, and what it said.
fn promtool(args: &[&str]) -> (bool, String) {
    assert!(
        Path::new(PROMTOOL).is_file(),
        "no promtool at {PROMTOOL}: run `make setup` (it installs Debian's prometheus package)"
    );
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A file of the repository, by its path from the root.
fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every panel of the dashboard, rows' nested panels included, with its targets' queries
/// as Prometheus is sent them: `(panel title, expr)`.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut panels: Vec<&Value> = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?").to_owned();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            out.push((title.clone(), substitute(expr)));
        }
    }
    out
}

/// The dashboard's variables as Grafana would fill them in for this rig.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${rollout}", ROLLOUT)
        .replace("$rollout", ROLLOUT)
        .replace("${sidecar_job}", SIDECAR_JOB)
        .replace("$sidecar_job", SIDECAR_JOB)
}

/// Every rule of the rules file: `(record or alert name, expr)`.
fn rule_queries(rules: &Value) -> Vec<(String, String)> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            let name = r["record"]
                .as_str()
                .or(r["alert"].as_str())
                .unwrap()
                .to_owned();
            (name, r["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", RULES]);
    assert!(ok, "promtool check rules {RULES}:\n{out}");
    let (ok, out) = promtool(&["test", "rules", RULE_TESTS]);
    assert!(ok, "promtool test rules {RULE_TESTS}:\n{out}");
}

#[test]
fn every_dashboard_query_reads_the_prometheus_datasource_variable() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .unwrap();
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let uses_it = |v: &Value| v["type"] == "prometheus" && v["uid"] == "${datasource}";
    for p in dashboard["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().into_iter().flatten();
        for t in targets {
            assert!(
                uses_it(&p["datasource"]) && uses_it(&t["datasource"]),
                "{p}"
            );
        }
    }
    for name in ["sidecar_job", "rollout"] {
        let v = variables.iter().find(|v| v["name"] == name).unwrap();
        assert!(uses_it(&v["datasource"]), "{v}");
    }
}

#[test]
fn every_dashboard_query_and_rule_runs_on_prometheus_scraping_envoy_and_the_sidecar() {
    let rig = Rig::start();
    let prom = &rig.prometheus;
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let queries = dashboard_queries(&dashboard);
    let titles: Vec<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for must in MUST_HAVE_DATA {
        assert!(
            titles.contains(&must),
            "no panel {must:?} in {DASHBOARD}: {titles:?}"
        );
    }

    // Until every target of every must-have panel returns series; an error fails at once.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            let data = prom
                .query(expr)
                .unwrap_or_else(|e| panic!("panel {title:?}: {e}\n{expr}"));
            let series = data["result"].as_array().unwrap();
            if MUST_HAVE_DATA.contains(&title.as_str()) {
                if series.is_empty() {
                    empty.push(format!("{title}: {expr}"));
                } else if expr.contains("by (variant") {
                    // Both variants, or the join to Envoy's clusters lost one.
                    let variants: BTreeSet<&str> = series
                        .iter()
                        .filter_map(|s| s["metric"]["variant"].as_str())
                        .collect();
                    if variants != BTreeSet::from(["canary", "stable"]) {
                        empty.push(format!("{title} (variants {variants:?}): {expr}"));
                    }
                }
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {PATIENCE:?}, panels without data:\n{}\nsidecar log:\n{}",
            empty.join("\n"),
            rig.sidecar.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The variables' `label_values(selector, label)`, as Grafana asks Prometheus for them.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let values = |name: &str| -> BTreeSet<String> {
        let v = variables.iter().find(|v| v["name"] == name).unwrap();
        let q = v["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let expr = format!("group by ({}) ({})", label.trim(), substitute(selector));
        prom.query(&expr).unwrap()["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["metric"][label.trim()].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        values("sidecar_job"),
        BTreeSet::from([SIDECAR_JOB.to_owned()])
    );
    assert_eq!(values("rollout"), BTreeSet::from([ROLLOUT.to_owned()]));

    // Every rule's expr as a query, and as Prometheus evaluates the loaded file.
    let rules: Value = serde_saphyr::from_str(&read(RULES)).unwrap();
    let named = rule_queries(&rules);
    assert!(named.len() >= 10, "{named:?}");
    for (name, expr) in &named {
        prom.query(expr)
            .unwrap_or_else(|e| panic!("rule {name}: {e}\n{expr}"));
    }
    let (status, body) = admin_get(prom.addr(), "/api/v1/rules").unwrap();
    assert_eq!(status, 200, "{body}");
    let loaded: Value = serde_json::from_str(&body).unwrap();
    let loaded: Vec<&Value> = loaded["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), named.len(), "{body}");
    for r in loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
    // The join names both clusters of the rollout, as the spec does.
    let join = prom
        .query(r#"linnet:rollout_variant_cluster:info{rollout="checkout"}"#)
        .unwrap();
    let clusters: BTreeSet<(&str, &str)> = join["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metric"]["variant"].as_str().unwrap(),
                s["metric"]["envoy_cluster_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        clusters,
        BTreeSet::from([("canary", "checkout-canary"), ("stable", "checkout-stable")])
    );

    // A real rollback: the canary fails 60% (over the guardrail's 50%), analysis rolls it
    // back, Prometheus fires the alert, and the finished rollout leaves the cluster join.
    rig.canary
        .set_faults(Faults {
            error_percent: 60.0,
            delay_ms: 0,
        })
        .unwrap();
    let firing =
        r#"ALERTS{alertname="LinnetRolloutRolledBack",alertstate="firing",rollout="checkout"}"#;
    let fired = prom.wait_for(firing, PATIENCE, |v| v == 1.0);
    assert_eq!(fired.unwrap(), 1.0, "{}", rig.sidecar.log());
    let gone = r#"absent(linnet:rollout_variant_cluster:info{rollout="checkout"})"#;
    assert_eq!(prom.wait_for(gone, PATIENCE, |v| v == 1.0).unwrap(), 1.0);
}
