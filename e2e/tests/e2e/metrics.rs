//! Per-rollout, per-variant metrics on Envoy's `/stats/prometheus`, with the labels that
//! `stats_config.stats_tags` extracts from the names, and counts matching the traffic sent.
//! The responses build (`dist/linnet-responses.wasm`), which counts responses too.

use crate::{bounded, checkout, expected, plugin, users};
use linnet_e2e::envoy::Sample;
use linnet_e2e::{Stack, Wasm};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[test]
fn metrics_carry_rollout_and_variant_labels_and_count_every_request() {
    let mut r = checkout(20.0);
    r["cohorts"] = json!({ "canary": ["alice"] });
    r["override"] = json!({ "token": "t0ken" });
    r["mirror"] = json!({ "cluster": "checkout-canary-shadow", "percent": 100 });
    let mut stack = Stack::start_with(Wasm::Responses, &plugin(r)).unwrap();

    let mut want: HashMap<(&str, &str), u64> = HashMap::new();
    bounded(users(0..300), |u| {
        let v = stack.user(&u).unwrap();
        assert_eq!(v, expected("checkout", u.as_bytes(), 20.0));
        *want
            .entry((if v == "canary" { "canary" } else { "stable" }, "bucket"))
            .or_default() += 1;
    });
    for _ in 0..5 {
        assert_eq!(stack.user("alice").unwrap(), "canary");
    }
    *want.entry(("canary", "cohort")).or_default() += 5;
    // Rejected overrides (wrong token) fall through to the bucket.
    let loser = crate::routing::pick("checkout", 20.0, "stable");
    for _ in 0..3 {
        let h: [(&str, &[u8]); 3] = [
            ("x-user-id", loser.as_bytes()),
            ("x-linnet-override", b"canary"),
            ("x-linnet-override-token", b"nope"),
        ];
        assert_eq!(stack.variant_of(&h).unwrap(), "stable");
    }
    *want.entry(("stable", "bucket")).or_default() += 3;
    // Two forged headers on one request, and one on another.
    let h: [(&str, &[u8]); 3] = [
        ("x-user-id", loser.as_bytes()),
        ("x-linnet-variant", b"canary"),
        ("x-linnet-mirror", b"x"),
    ];
    assert_eq!(stack.variant_of(&h).unwrap(), "stable");
    assert_eq!(stack.variant_of(&h[..2]).unwrap(), "stable");
    *want.entry(("stable", "bucket")).or_default() += 2;

    let per_variant = |v: &str| {
        want.iter()
            .filter(|((wv, _), _)| *wv == v)
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let (canary, stable) = (per_variant("canary"), per_variant("stable"));
    // Let the mirrored copies finish so the samples below are final.
    stack
        .canary
        .wait_for(stable as usize, Duration::from_secs(10), |r| r.is_shadow());
    linnet_e2e::counts_settle();

    // Histograms reach the admin output only once Envoy has merged the workers' values, which
    // a stats read starts (stats_flush_on_admin) but does not wait for: read until they show.
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let samples = stack.envoy.prometheus().unwrap();
        let counted: f64 = samples
            .iter()
            .filter(|s| s.name == "linnet_response_time_ms_count")
            .map(|s| s.value)
            .sum();
        if counted >= (canary + stable) as f64 || Instant::now() > deadline {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.label(k) == Some(v))
            })
            .map(|s| s.value)
    };
    let dump = || linnet_lines(&samples);

    for ((variant, reason), n) in &want {
        let labels = [
            ("rollout", "checkout"),
            ("variant", *variant),
            ("reason", *reason),
        ];
        assert_eq!(
            find("linnet_requests_total", &labels),
            Some(*n as f64),
            "requests {labels:?} in\n{}",
            dump()
        );
    }
    for (variant, n) in [("canary", canary), ("stable", stable)] {
        let labels = [
            ("rollout", "checkout"),
            ("variant", variant),
            ("class", "2xx"),
        ];
        assert_eq!(
            find("linnet_responses_total", &labels),
            Some(n as f64),
            "responses {labels:?} in\n{}",
            dump()
        );
        let labels = [("rollout", "checkout"), ("variant", variant)];
        assert_eq!(
            find("linnet_response_time_ms_count", &labels),
            Some(n as f64),
            "histogram {labels:?} in\n{}",
            dump()
        );
    }
    let rollout = [("rollout", "checkout")];
    assert_eq!(
        find("linnet_mirrored_total", &rollout),
        Some(stable as f64),
        "in\n{}",
        dump()
    );
    assert_eq!(
        find("linnet_override_rejected_total", &rollout),
        Some(3.0),
        "in\n{}",
        dump()
    );
    assert_eq!(
        find("linnet_stripped_headers_total", &[]),
        Some(3.0),
        "in\n{}",
        dump()
    );

    // No Linnet metric kept a label inside its name, and none is left in Envoy's namespace.
    for s in &samples {
        assert!(
            !s.name.contains("rollout") && !s.name.contains("wasmcustom"),
            "unextracted name {}",
            s.name
        );
    }
}

fn linnet_lines(samples: &[Sample]) -> String {
    samples
        .iter()
        .filter(|s| s.name.contains("linnet"))
        .map(|s| format!("{} {:?} {}", s.name, s.labels, s.value))
        .collect::<Vec<_>>()
        .join("\n")
}
