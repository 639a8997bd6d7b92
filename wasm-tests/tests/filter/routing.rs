//! Sticky bucketing: the share follows the weight, every user lands where linnet-core says,
//! raising the weight only adds users, and requests outside a rollout are left alone.

use crate::support::{
    assert_healthy, checkout, expected, round_trip, user, vm, vm_of, AUTHORITY, VARIANT,
};
use linnet_core::metrics::requests;
use linnet_core::{Reason, Variant};
use linnet_wasm_tests::{MapRead, Wasm};

#[test]
fn weight_20_buckets_every_user_like_core() {
    let mut vm = vm(&checkout("20", ""));
    let n = 10_000;
    let mut canary = 0;
    for i in 0..n {
        let key = format!("user-{i}");
        let seen = user(&mut vm, &key);
        let variant = seen.variant.unwrap();
        assert_eq!(
            variant,
            expected("checkout", key.as_bytes(), 2000),
            "user {key}"
        );
        canary += usize::from(variant == "canary");
    }
    let share = canary as f64 / n as f64;
    assert!((0.19..=0.21).contains(&share), "canary share {share}");
    assert_eq!(vm.foreign_calls("clear_route_cache"), n);
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Bucket)),
        Some(canary as u64)
    );
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Bucket)),
        Some((n - canary) as u64)
    );
    assert_healthy(&vm);
}

#[test]
fn raising_the_weight_only_adds_users() {
    let mut vm = vm(&checkout("20", ""));
    let keys: Vec<String> = (0..3000).map(|i| format!("user-{i}")).collect();
    let at20: Vec<String> = keys
        .iter()
        .map(|k| user(&mut vm, k).variant.unwrap())
        .collect();
    assert!(vm.configure(checkout("50", "")).unwrap());
    let at50: Vec<String> = keys
        .iter()
        .map(|k| user(&mut vm, k).variant.unwrap())
        .collect();
    for ((key, before), after) in keys.iter().zip(&at20).zip(&at50) {
        assert!(
            before != "canary" || after == "canary",
            "{key} left the canary when the weight rose"
        );
        assert_eq!(after, expected("checkout", key.as_bytes(), 5000), "{key}");
    }
    let share = at50.iter().filter(|v| *v == "canary").count() as f64 / keys.len() as f64;
    assert!(
        (0.47..=0.53).contains(&share),
        "canary share at 50%: {share}"
    );
    assert_healthy(&vm);
}

#[test]
fn weight_0_and_100_are_absolute() {
    let mut vm = vm(&checkout("0", ""));
    assert!((0..500).all(|i| user(&mut vm, &format!("u{i}")).variant.as_deref() == Some("stable")));
    assert!(vm.configure(checkout("100", "")).unwrap());
    assert!((0..500).all(|i| user(&mut vm, &format!("u{i}")).variant.as_deref() == Some("canary")));
}

#[test]
fn salt_picks_an_independent_user_set() {
    let mut vm = vm(&checkout("50", r#""salt":"spring-2024""#));
    for i in 0..500 {
        let key = format!("user-{i}");
        assert_eq!(
            user(&mut vm, &key).variant.unwrap(),
            expected("spring-2024", key.as_bytes(), 5000)
        );
    }
}

#[test]
fn one_clear_route_cache_per_matched_request() {
    let mut vm = vm(&checkout("50", ""));
    for i in 0..10 {
        user(&mut vm, &format!("u{i}"));
        assert_eq!(vm.foreign_calls("clear_route_cache"), i + 1);
    }
    round_trip(
        &mut vm,
        &[
            (":authority", "other.local"),
            (":path", "/"),
            ("x-user-id", "u1"),
        ],
    );
    assert_eq!(vm.foreign_calls("clear_route_cache"), 10);
}

/// Each host call that returns data costs Envoy a call back into the VM to allocate the answer,
/// so the filter reads everything it needs from the request (authority, path, key header, cookie,
/// override and token) in one read of the whole map; the `responses` build reads the response's
/// `:status` once more, the default build never touches the response.
#[test]
fn a_request_costs_one_header_read_whatever_the_rollout_reads() {
    let whole_request = MapRead { map: 0, key: None };
    let status = MapRead {
        map: 2,
        key: Some(b":status".to_vec()),
    };
    for (build, per_request) in [
        (Wasm::Filter, vec![whole_request.clone()]),
        (Wasm::Responses, vec![whole_request.clone(), status]),
    ] {
        let mut vm = vm_of(
            build,
            &checkout(
                "50",
                r#""stickiness":[{"header":"x-user-id"},{"cookie":"uid"}],"override":{"token":"t"}"#,
            ),
        );
        round_trip(
            &mut vm,
            &[
                (":authority", AUTHORITY),
                (":path", "/"),
                ("cookie", "uid=u1"),
                ("x-linnet-override", "canary"),
                ("x-linnet-override-token", "t"),
            ],
        );
        assert_eq!(vm.map_reads(), per_request, "{build:?}");
        // Outside every rollout: the request is read once (to strip Linnet's headers), the
        // response not at all.
        round_trip(&mut vm, &[(":authority", "other.local"), (":path", "/")]);
        let mut expected = per_request.clone();
        expected.push(whole_request.clone());
        assert_eq!(vm.map_reads(), expected, "{build:?}");
        assert_healthy(&vm);
    }
}

#[test]
fn unmatched_requests_are_untouched() {
    let mut vm = vm(&checkout(
        "100",
        r#""match":{"authority":"checkout.local","path_prefix":"/api"}"#,
    ));
    let cases: &[&[(&str, &str)]] = &[
        &[
            (":authority", "other.local"),
            (":path", "/api"),
            ("x-user-id", "u1"),
        ],
        &[
            (":authority", "checkout.local"),
            (":path", "/web"),
            ("x-user-id", "u1"),
        ],
        &[
            (":authority", "checkout.localhost"),
            (":path", "/api"),
            ("x-user-id", "u1"),
        ],
        &[
            (":authority", "shop.checkout.local"),
            (":path", "/api"),
            ("x-user-id", "u1"),
        ],
    ];
    for headers in cases {
        let seen = round_trip(&mut vm, headers);
        let sent: Vec<(Vec<u8>, Vec<u8>)> = headers
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(seen.request, sent, "{headers:?}");
    }
    assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
    assert!(vm
        .histogram(&linnet_core::metrics::response_time(
            "checkout",
            Variant::Stable
        ))
        .is_empty());
    assert!(vm
        .histogram(&linnet_core::metrics::response_time(
            "checkout",
            Variant::Canary
        ))
        .is_empty());
    assert_healthy(&vm);
}

#[test]
fn authority_matches_without_port_and_path_by_prefix() {
    let mut vm = vm(&checkout(
        "100",
        r#""match":{"authority":"checkout.local","path_prefix":"/api"}"#,
    ));
    for (authority, path) in [
        ("checkout.local:8080", "/api"),
        ("checkout.local", "/api/orders?x=1"),
    ] {
        let seen = round_trip(
            &mut vm,
            &[
                (":authority", authority),
                (":path", path),
                ("x-user-id", "u1"),
            ],
        );
        assert_eq!(seen.variant.as_deref(), Some("canary"), "{authority}{path}");
    }
}

#[test]
fn first_rollout_that_matches_wins() {
    let config = r#"{"mark_stable":true,"rollouts":[
        {"name":"api","match":{"authority":"checkout.local","path_prefix":"/api"},"weight":100,"stickiness":[{"header":"x-user-id"}]},
        {"name":"site","match":{"authority":"checkout.local"},"weight":0,"stickiness":[{"header":"x-user-id"}]}]}"#;
    let mut vm = vm(config);
    let api = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/api/x"),
            ("x-user-id", "u1"),
        ],
    );
    let site = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/shop"),
            ("x-user-id", "u1"),
        ],
    );
    assert_eq!(api.variant.as_deref(), Some("canary"));
    assert_eq!(site.variant.as_deref(), Some("stable"));
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("api", Variant::Canary, Reason::Bucket)),
        Some(1)
    );
    assert_eq!(
        vm.metric(&requests("site", Variant::Stable, Reason::Bucket)),
        Some(1)
    );
}

#[test]
fn first_present_stickiness_source_is_the_key() {
    let mut vm = vm(&checkout(
        "50",
        r#""stickiness":[{"header":"x-user-id"},{"cookie":"uid"}]"#,
    ));
    let (h, c) = ("from-header", "from-cookie");
    let mut both = vec![
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", h),
        ("cookie", "a=1; uid=from-cookie; b=2"),
    ];
    let seen = round_trip(&mut vm, &both);
    assert_eq!(
        seen.variant.unwrap(),
        expected("checkout", h.as_bytes(), 5000)
    );

    both.remove(2);
    let seen = round_trip(&mut vm, &both);
    assert_eq!(
        seen.variant.unwrap(),
        expected("checkout", c.as_bytes(), 5000)
    );

    // An empty header is no key: the cookie is next.
    both.push(("x-user-id", ""));
    let seen = round_trip(&mut vm, &both);
    assert_eq!(
        seen.variant.unwrap(),
        expected("checkout", c.as_bytes(), 5000)
    );
    // Find keys where header and cookie disagree, so the order is really tested.
    let disagree = (0..)
        .map(|i| (format!("h{i}"), format!("c{i}")))
        .find(|(h, c)| {
            expected("checkout", h.as_bytes(), 5000) != expected("checkout", c.as_bytes(), 5000)
        })
        .unwrap();
    let cookie = format!("uid={}", disagree.1);
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", &disagree.0),
            ("cookie", &cookie),
        ],
    );
    assert_eq!(
        seen.variant.unwrap(),
        expected("checkout", disagree.0.as_bytes(), 5000)
    );
}

#[test]
fn variant_header_is_written_once() {
    let mut vm = vm(&checkout("50", ""));
    let seen = user(&mut vm, "u1");
    assert_eq!(
        seen.request
            .iter()
            .filter(|(k, _)| k == VARIANT.as_bytes())
            .count(),
        1
    );
}
