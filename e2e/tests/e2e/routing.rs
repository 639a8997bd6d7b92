//! Sticky, weighted routing: the split, stickiness across requests and restarts, and
//! monotonic growth of the canary as the weight rises.

use crate::{bounded, checkout, expected, plugin, users};
use linnet_e2e::http::Request;
use linnet_e2e::{served_by, Stack};
use std::collections::HashMap;

#[test]
fn ten_thousand_users_split_by_weight_as_the_core_computes() {
    let mut stack = Stack::start(&plugin(checkout(20.0))).unwrap();
    let mut canary = 0usize;
    let mut wrong = Vec::new();
    bounded(users(0..10_000), |u| {
        let got = stack.user(&u).unwrap();
        if got == "canary" {
            canary += 1;
        }
        if got != expected("checkout", u.as_bytes(), 20.0) {
            wrong.push((u, got));
        }
    });
    assert!(
        wrong.is_empty(),
        "{} users on the wrong variant, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let share = canary as f64 / 10_000.0;
    assert!((0.19..=0.21).contains(&share), "canary share {share}");
    // Every request went where the filter said: the upstreams saw exactly these counts.
    assert_eq!(stack.canary.count(|_| true), canary);
    assert_eq!(stack.stable.count(|_| true), 10_000 - canary);
}

#[test]
fn a_user_keeps_the_variant_across_requests_and_restarts() {
    let mut stack = Stack::start(&plugin(checkout(30.0))).unwrap();
    let mut first = HashMap::new();
    bounded(users(0..300), |u| {
        let v = stack.user(&u).unwrap();
        for _ in 0..2 {
            assert_eq!(
                stack.user(&u).unwrap(),
                v,
                "{u} changed variant between requests"
            );
        }
        first.insert(u, v);
    });
    assert!(first.values().any(|v| v == "canary") && first.values().any(|v| v == "stable"));

    stack.restart(None).unwrap();
    bounded(users(0..300), |u| {
        assert_eq!(
            stack.user(&u).unwrap(),
            first[&u],
            "{u} changed variant after a restart"
        );
    });
}

#[test]
fn the_cookie_key_routes_like_the_header_key() {
    let mut stack = Stack::start(&plugin(checkout(50.0))).unwrap();
    bounded(users(0..200), |u| {
        let cookie = format!("theme=dark; uid={u}; lang=en");
        let by_cookie = stack.variant_of(&[("cookie", cookie.as_bytes())]).unwrap();
        assert_eq!(
            by_cookie,
            expected("checkout", u.as_bytes(), 50.0),
            "{u} by cookie"
        );
    });
    // The header comes first in the stickiness list, so it wins over the cookie.
    let (h, c) = (
        pick("checkout", 50.0, "canary"),
        pick("checkout", 50.0, "stable"),
    );
    let cookie = format!("uid={c}");
    let got = stack
        .variant_of(&[("x-user-id", h.as_bytes()), ("cookie", cookie.as_bytes())])
        .unwrap();
    assert_eq!(got, "canary");
}

#[test]
fn raising_the_weight_keeps_every_canary_user_on_the_canary() {
    let mut stack = Stack::start(&plugin(checkout(20.0))).unwrap();
    let mut at_20 = HashMap::new();
    bounded(users(0..2_000), |u| {
        let v = stack.user(&u).unwrap();
        at_20.insert(u, v);
    });

    stack.restart(Some(&plugin(checkout(50.0)))).unwrap();
    let mut canary_at_50 = 0;
    bounded(users(0..2_000), |u| {
        let v = stack.user(&u).unwrap();
        if at_20[&u] == "canary" {
            assert_eq!(v, "canary", "{u} left the canary when the weight rose");
        }
        assert_eq!(v, expected("checkout", u.as_bytes(), 50.0), "{u} at 50%");
        canary_at_50 += usize::from(v == "canary");
    });
    let before = at_20.values().filter(|v| *v == "canary").count();
    assert!(
        canary_at_50 > before,
        "the canary did not grow: {before} -> {canary_at_50}"
    );
    let share = canary_at_50 as f64 / 2_000.0;
    assert!(
        (0.46..=0.54).contains(&share),
        "canary share at 50%: {share}"
    );
}

#[test]
fn authority_matching_ignores_the_port_and_leaves_other_hosts_alone() {
    let mut stack = Stack::start(&plugin(checkout(100.0))).unwrap();
    let u = "user-1";
    let with_port = Request::get("/")
        .host("checkout.local:10000")
        .header("x-user-id", u);
    assert_eq!(
        served_by(&stack.send(&with_port).unwrap()).as_deref(),
        Some("canary")
    );
    let upper = Request::get("/")
        .host("Checkout.Local")
        .header("x-user-id", u);
    assert_eq!(
        served_by(&stack.send(&upper).unwrap()).as_deref(),
        Some("canary")
    );

    // Not in the rollout: the default route (stable), and no routing header added.
    stack.stable.clear();
    let other = Request::get("/").host("other.local").header("x-user-id", u);
    assert_eq!(
        served_by(&stack.send(&other).unwrap()).as_deref(),
        Some("stable")
    );
    let got = stack.stable.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("x-linnet-variant"),
        None,
        "a request outside every rollout was tagged"
    );
}

/// A user id that lands on `variant` for this salt and weight.
pub fn pick(salt: &str, weight: f64, variant: &str) -> String {
    users(0..100_000)
        .find(|u| expected(salt, u.as_bytes(), weight) == variant)
        .unwrap()
}

#[test]
fn mark_stable_tags_stable_requests_and_still_routes_by_the_decision() {
    let mut config = plugin(checkout(20.0));
    config["mark_stable"] = true.into();
    let mut stack = Stack::start(&config).unwrap();
    let stable_user = pick("checkout", 20.0, "stable");
    let canary_user = pick("checkout", 20.0, "canary");
    bounded(0..10, |_| {
        assert_eq!(stack.user(&stable_user).unwrap(), "stable");
        assert_eq!(stack.user(&canary_user).unwrap(), "canary");
        let spoofed = stack
            .variant_of(&[
                ("x-user-id", stable_user.as_bytes()),
                ("x-linnet-variant", b"canary"),
            ])
            .unwrap();
        assert_eq!(spoofed, "stable");
    });
    let at_stable = stack.stable.received();
    assert_eq!(at_stable.len(), 20);
    for r in at_stable {
        assert_eq!(r.header("x-linnet-variant"), Some(&b"stable"[..]));
    }
    for r in stack.canary.received() {
        assert_eq!(r.header("x-linnet-variant"), Some(&b"canary"[..]));
    }
}
