//! Mirroring (dark launch): stable-bound requests are copied to the canary's shadow cluster;
//! the client only ever sees stable's answers.

use crate::{bounded, checkout, plugin, users};
use linnet_e2e::http::Request;
use linnet_e2e::{served_by, Stack};
use serde_json::{json, Value};
use std::time::Duration;

fn mirrored(weight: f64, percent: f64) -> Value {
    let mut r = checkout(weight);
    r["mirror"] = json!({ "cluster": "checkout-canary-shadow", "percent": percent });
    plugin(r)
}

#[test]
fn stable_requests_are_copied_to_the_shadow_cluster() {
    let mut stack = Stack::start(&mirrored(0.0, 100.0)).unwrap();
    let n = 100;
    bounded(users(0..n), |u| {
        // A forged mirror target must not redirect the copy to the live canary cluster.
        let req = Request::get(&format!("/cart?u={u}"))
            .host("checkout.local")
            .header("x-user-id", &u)
            .header("x-linnet-mirror", "checkout-canary");
        let resp = stack.send(&req).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(
            served_by(&resp).as_deref(),
            Some("stable"),
            "the client got a shadow's answer"
        );
    });
    let copies = stack
        .canary
        .wait_for(n, Duration::from_secs(10), |r| r.is_shadow());
    assert_eq!(copies, n, "shadow copies received");
    for r in stack.canary.received() {
        assert!(
            r.is_shadow(),
            "the live canary got a request: host {}",
            r.host
        );
        assert_eq!(r.host, "checkout.local-shadow");
        assert!(r.path.starts_with("/cart?u=user-"), "copy of {}", r.path);
    }
    // The copies went through the shadow cluster, not the canary's.
    linnet_e2e::counts_settle();
    let stat = |s: &str| stack.envoy.stat(s).unwrap();
    assert_eq!(
        stat("cluster.checkout-canary-shadow.upstream_rq_total"),
        Some(n as u64)
    );
    assert_eq!(stat("cluster.checkout-canary.upstream_rq_total"), Some(0));
    assert_eq!(
        stat("cluster.checkout-stable.upstream_rq_total"),
        Some(n as u64)
    );
    assert_eq!(
        stat("wasmcustom.linnet_mirrored_total.rollout.checkout"),
        Some(n as u64)
    );
}

#[test]
fn only_stable_bound_requests_are_mirrored() {
    let mut stack = Stack::start(&mirrored(50.0, 100.0)).unwrap();
    let mut stable = 0;
    bounded(users(0..200), |u| {
        stable += usize::from(stack.user(&u).unwrap() == "stable");
    });
    assert!(stable > 0 && stable < 200);
    let copies = stack
        .canary
        .wait_for(stable, Duration::from_secs(10), |r| r.is_shadow());
    assert_eq!(copies, stable);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stack.canary.count(|r| r.is_shadow()),
        stable,
        "a canary-bound request was mirrored"
    );
    assert_eq!(stack.canary.count(|r| !r.is_shadow()), 200 - stable);
}

#[test]
fn the_mirror_percent_samples_requests() {
    let mut stack = Stack::start(&mirrored(0.0, 25.0)).unwrap();
    let n = 400;
    bounded(0..n, |_| {
        assert_eq!(stack.user("user-1").unwrap(), "stable");
    });
    std::thread::sleep(Duration::from_millis(500));
    let copies = stack.canary.count(|r| r.is_shadow());
    // 25% of 400 is 100, sampled by Envoy's random x-request-id: 4 standard deviations wide.
    assert!(
        (65..=135).contains(&copies),
        "{copies} of {n} mirrored at 25%"
    );
    assert_eq!(
        stack
            .envoy
            .stat("wasmcustom.linnet_mirrored_total.rollout.checkout")
            .unwrap(),
        Some(copies as u64)
    );
}
