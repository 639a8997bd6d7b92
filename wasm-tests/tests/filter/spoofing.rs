//! A client never picks its variant or a mirror target: Linnet's own headers sent by the
//! client are stripped, on every request, and counted.

use crate::support::{assert_healthy, checkout, keys, round_trip, vm, AUTHORITY, MIRROR, VARIANT};
use linnet_core::metrics::STRIPPED_HEADERS;

fn count(request: &[(Vec<u8>, Vec<u8>)], name: &str) -> usize {
    request
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .count()
}

#[test]
fn spoofed_variant_is_replaced_by_the_decision() {
    let mut vm = vm(&checkout("20", ""));
    let stable_user = &keys(false, 2000, 1)[0];
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", stable_user),
            (VARIANT, "canary"),
            (MIRROR, "evil"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("stable"));
    assert_eq!(seen.mirror, None);
    assert_eq!(count(&seen.request, VARIANT), 1);
    vm.tick().unwrap();
    assert_eq!(vm.metric(STRIPPED_HEADERS), Some(2));
    assert_healthy(&vm);
}

#[test]
fn every_copy_is_stripped() {
    let mut vm = vm(&checkout("0", ""));
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            (VARIANT, "canary"),
            ("x-user-id", "u1"),
            (VARIANT, "canary"),
            (MIRROR, "a"),
            (MIRROR, "b"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("stable"));
    assert_eq!(count(&seen.request, VARIANT), 1);
    assert_eq!(count(&seen.request, MIRROR), 0);
    vm.tick().unwrap();
    assert!(vm.metric(STRIPPED_HEADERS).unwrap() >= 2);
}

#[test]
fn stripped_outside_any_rollout_too() {
    let mut vm = vm(&checkout("100", ""));
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", "other.local"),
            (":path", "/"),
            (VARIANT, "canary"),
            (MIRROR, "x"),
        ],
    );
    assert_eq!(count(&seen.request, VARIANT), 0);
    assert_eq!(count(&seen.request, MIRROR), 0);
    vm.tick().unwrap();
    assert_eq!(vm.metric(STRIPPED_HEADERS), Some(2));
    // Envoy matched the route with the client's headers in place: it must match it again.
    assert_eq!(vm.foreign_calls("clear_route_cache"), 1);
}

#[test]
fn clean_requests_count_nothing() {
    let mut vm = vm(&checkout("50", ""));
    round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "u1"),
        ],
    );
    vm.tick().unwrap();
    assert_eq!(vm.metric(STRIPPED_HEADERS), Some(0));
}

#[test]
fn configured_header_names_are_the_ones_stripped() {
    let config = r#"{"mark_stable":true,"routing_header":"x-route","mirror_header":"x-shadow",
        "rollouts":[{"name":"checkout","weight":0,"stickiness":[{"header":"x-user-id"}],
        "mirror":{"cluster":"shadow","percent":0}}]}"#;
    let mut vm = vm(config);
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "u1"),
            ("x-route", "canary"),
            ("x-shadow", "evil"),
        ],
    );
    let value = |name: &str| {
        seen.request
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value("x-route"), Some(b"stable".to_vec()));
    assert_eq!(value("x-shadow"), None);
    vm.tick().unwrap();
    assert_eq!(vm.metric(STRIPPED_HEADERS), Some(2));
}
