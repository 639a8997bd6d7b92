//! A real Prometheus (Debian's) scraping a real Envoy with Linnet's filter: the per-rollout,
//! per-variant metrics arrive with their labels and exact counts, histograms included, and
//! the canary's injected faults show as exactly their share of `5xx` — what SLO analysis
//! reads. Needs `/usr/bin/prometheus` and `.venv/bin/envoy` (`make setup`), `dist/linnet.wasm`
//! (`make wasm`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::http::Request;
use linnet_e2e::prometheus::Prometheus;
use linnet_e2e::upstream::Faults;
use linnet_e2e::{served_by, Stack, TestDir, Wasm};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Every wait here is bounded by this.
const PATIENCE: Duration = Duration::from_secs(30);
const REQUESTS: usize = 200;

/// `checkout.local` at 30%, with every stable-bound request mirrored to the shadow cluster.
fn plugin() -> Value {
    json!({ "rollouts": [{
        "name": "checkout",
        "match": { "authority": "checkout.local" },
        "weight": 30,
        "stickiness": [{ "header": "x-user-id" }],
        "mirror": { "cluster": "checkout-canary-shadow", "percent": 100 },
    }]})
}

/// The label names of every series a selector matches, with `__name__`.
fn label_names(prom: &Prometheus, selector: &str) -> BTreeSet<String> {
    let data = prom.query(selector).unwrap();
    data["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["metric"].as_object().unwrap().keys().cloned())
        .collect()
}

fn series(prom: &Prometheus, selector: &str) -> Vec<Value> {
    prom.query(selector).unwrap()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metric"].clone())
        .collect()
}

/// The responses build: it counts responses too.
#[test]
fn prometheus_scrapes_linnet_metrics_from_envoy_with_exact_counts_and_labels() {
    let dir = TestDir::new("prometheus", "scrape").unwrap();
    let mut stack = Stack::start_with(Wasm::Responses, &plugin()).unwrap();
    // One live canary answer in ten is a 500; so is one shadow copy in ten.
    stack
        .canary
        .set_faults(Faults {
            error_percent: 10.0,
            delay_ms: 0,
        })
        .unwrap();
    let prom = Prometheus::start(dir.path(), &[stack.envoy.admin], Duration::from_secs(1)).unwrap();
    assert!(prom.url().starts_with("http://127.0.0.1:"));

    // Half the traffic, a scrape that saw it, then the other half: so rates see a rise.
    let deadline = Instant::now() + PATIENCE;
    let (mut canary, mut stable) = (0, 0);
    let mut send = |users: std::ops::Range<usize>| {
        for i in users {
            assert!(
                Instant::now() < deadline,
                "request loop exceeded {PATIENCE:?}"
            );
            let req = Request::get("/")
                .host("checkout.local")
                .header("x-user-id", format!("user-{i}"));
            let resp = stack.send(&req).unwrap();
            match served_by(&resp).as_deref() {
                Some("canary") => canary += 1,
                Some("stable") => stable += 1,
                other => panic!("answered by {other:?}: {}", resp.status),
            }
        }
    };
    let total = r#"sum(linnet_responses_total{rollout="checkout"})"#;
    let half = REQUESTS / 2;
    send(0..half);
    let counted = prom.wait_for(total, PATIENCE, |v| v >= half as f64);
    assert_eq!(counted.unwrap(), half as f64, "{}", prom.log());
    send(half..REQUESTS);
    assert!(canary > 10 && stable > 10, "split {canary}/{stable}");
    let counted = prom.wait_for(total, PATIENCE, |v| v >= REQUESTS as f64);
    assert_eq!(counted.unwrap(), REQUESTS as f64, "{}", prom.log());
    // Envoy counts a mirrored request once its copy is answered: wait for the copies.
    let copies = stack.canary.wait_for(stable, PATIENCE, |r| r.is_shadow());
    assert_eq!(copies, stable);

    // The exact share of injected faults, per variant, in Linnet's and in Envoy's metrics.
    let by_class = |variant: &str, class: &str| {
        prom.value(&format!(
            r#"sum(linnet_responses_total{{rollout="checkout",variant="{variant}",class="{class}"}})"#
        ))
        .unwrap()
    };
    assert_eq!(by_class("canary", "5xx"), Some((canary / 10) as f64));
    assert_eq!(
        by_class("canary", "2xx"),
        Some((canary - canary / 10) as f64)
    );
    assert_eq!(by_class("stable", "2xx"), Some(stable as f64));
    let shadow_5xx = r#"sum(envoy_cluster_upstream_rq_xx{envoy_cluster_name="checkout-canary-shadow",envoy_response_code_class="5"})"#;
    let shadow_5xx = prom.wait_for(shadow_5xx, PATIENCE, |v| v >= (stable / 10) as f64);
    assert_eq!(shadow_5xx.unwrap(), (stable / 10) as f64);

    // The latency histogram, per rollout and variant.
    let buckets = series(
        &prom,
        r#"linnet_response_time_ms_bucket{rollout="checkout"}"#,
    );
    assert!(!buckets.is_empty(), "no histogram buckets");
    let variants: BTreeSet<&str> = buckets
        .iter()
        .map(|m| m["variant"].as_str().unwrap())
        .collect();
    assert_eq!(variants, BTreeSet::from(["canary", "stable"]));
    assert!(buckets.iter().any(|m| m["le"] == "+Inf"));

    // Rates over a window, from the rise between the two halves.
    let increase = r#"sum(increase(linnet_responses_total{rollout="checkout"}[1m]))"#;
    let inc = prom.wait_for(increase, PATIENCE, |v| v > 0.0).unwrap();
    assert!(inc.is_finite() && inc > 0.0);
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(linnet_response_time_ms_bucket{rollout="checkout",variant="canary"}[1m])))"#;
    let p99 = prom.wait_for(p99, PATIENCE, f64::is_finite).unwrap();
    assert!(p99 >= 0.0, "p99 {p99}");

    // What PromQL templates can rely on: the label names as Prometheus shows them.
    let report = [
        r#"linnet_requests_total{rollout="checkout"}"#,
        r#"linnet_responses_total{rollout="checkout"}"#,
        r#"linnet_response_time_ms_bucket{rollout="checkout"}"#,
        r#"linnet_response_time_ms_count{rollout="checkout"}"#,
        r#"linnet_mirrored_total{rollout="checkout"}"#,
        r#"envoy_cluster_upstream_rq_xx{envoy_cluster_name="checkout-canary-shadow"}"#,
        r#"envoy_cluster_upstream_rq{envoy_cluster_name="checkout-canary-shadow"}"#,
        r#"envoy_cluster_upstream_rq_total{envoy_cluster_name="checkout-canary-shadow"}"#,
        r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="checkout-canary-shadow"}"#,
    ];
    for selector in report {
        let names = label_names(&prom, selector);
        eprintln!("{selector}: {names:?}");
        assert!(
            names.contains("job") && names.contains("instance"),
            "{selector}: {names:?}"
        );
    }
    for m in series(
        &prom,
        r#"{__name__=~"linnet_.*|envoy_cluster_upstream_rq(_xx)?",envoy_cluster_name=~"|checkout-.*"}"#,
    ) {
        eprintln!("{m}");
    }
    assert_eq!(
        label_names(&prom, r#"linnet_responses_total{rollout="checkout"}"#),
        BTreeSet::from(
            ["__name__", "class", "instance", "job", "rollout", "variant"].map(String::from)
        )
    );
    assert_eq!(
        label_names(
            &prom,
            r#"linnet_response_time_ms_bucket{rollout="checkout"}"#
        ),
        BTreeSet::from(
            ["__name__", "instance", "job", "le", "rollout", "variant"].map(String::from)
        )
    );
}

#[test]
fn prometheus_stopped_and_started_again_keeps_its_port_and_data() {
    let dir = TestDir::new("prometheus", "restart").unwrap();
    let mut stack = Stack::start(&plugin()).unwrap();
    let mut prom = Prometheus::start(
        dir.path(),
        &[stack.envoy.admin.to_string()],
        Duration::from_secs(1),
    )
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    for i in 0..20 {
        assert!(
            Instant::now() < deadline,
            "request loop exceeded {PATIENCE:?}"
        );
        let req = Request::get("/")
            .host("checkout.local")
            .header("x-user-id", format!("user-{i}"));
        assert_eq!(stack.send(&req).unwrap().status, 200);
    }
    let total = r#"sum(linnet_requests_total{rollout="checkout"})"#;
    assert_eq!(prom.wait_for(total, PATIENCE, |v| v >= 20.0).unwrap(), 20.0);
    let url = prom.url();

    prom.stop();
    assert!(prom.query("up").is_err(), "a stopped Prometheus answered");

    prom.start_again().unwrap();
    assert_eq!(prom.url(), url);
    // What was scraped before survives the restart.
    let before = r#"max_over_time(sum(linnet_requests_total{rollout="checkout"})[5m:1s])"#;
    assert_eq!(
        prom.wait_for(before, PATIENCE, |v| v >= 20.0).unwrap(),
        20.0
    );
    assert_eq!(prom.wait_for(total, PATIENCE, |v| v >= 20.0).unwrap(), 20.0);
    assert_eq!(prom.value(r#"up{job="envoy"}"#).unwrap(), Some(1.0));
}
