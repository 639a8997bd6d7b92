//! Linnet's filter in a real Envoy (from `envoy/`), one module per feature.
//!
//! Needs `.venv/bin/envoy` (`make setup`) and `dist/linnet.wasm` (`make wasm`); a missing one
//! fails the test with a message saying which command to run.
// Test code: a failed expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_config;
mod configs;
mod decisions;
mod istio;
mod metrics;
mod mirror;
mod native;
mod robustness;
mod routing;
mod spoofing;

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An upper bound on any one request loop, far above what it needs on a slow machine.
pub const LOOP_DEADLINE: Duration = Duration::from_secs(60);

/// The variant Linnet must pick for `key` at `weight_pct`, from the core's bucket function.
pub fn expected(salt: &str, key: &[u8], weight_pct: f64) -> &'static str {
    let weight_bp = (weight_pct * 100.0).round() as u16;
    if linnet_core::bucket(salt.as_bytes(), key) < weight_bp {
        "canary"
    } else {
        "stable"
    }
}

/// The test rollout: `checkout.local`, keyed by `x-user-id` then cookie `uid`.
pub fn checkout(weight: f64) -> Value {
    json!({
        "name": "checkout",
        "match": { "authority": "checkout.local" },
        "weight": weight,
        "stickiness": [{ "header": "x-user-id" }, { "cookie": "uid" }],
    })
}

/// A plugin configuration with one rollout.
pub fn plugin(rollout: Value) -> Value {
    json!({ "rollouts": [rollout] })
}

/// Runs `f` for each item, failing if the whole loop takes longer than [`LOOP_DEADLINE`].
pub fn bounded<T>(items: impl IntoIterator<Item = T>, mut f: impl FnMut(T)) {
    let deadline = Instant::now() + LOOP_DEADLINE;
    for item in items {
        assert!(
            Instant::now() < deadline,
            "request loop exceeded {LOOP_DEADLINE:?}"
        );
        f(item);
    }
}

/// Users `user-<from>` .. `user-<to - 1>`.
pub fn users(range: std::ops::Range<usize>) -> impl Iterator<Item = String> {
    range.map(|i| format!("user-{i}"))
}
