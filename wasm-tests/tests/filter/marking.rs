//! The default, `mark_stable: false`: Envoy matched the route on the request as it arrived, so
//! the filter changes a request, and has its route matched again, only when the decision needs
//! it: a canary request is marked, a client's copy of Linnet's headers is removed. A stable
//! request that arrived clean goes on untouched, on the route Envoy already matched.

use crate::support::{
    assert_healthy, checkout, checkout_unmarked, keys, round_trip, user, vm, AUTHORITY, MIRROR,
    VARIANT,
};
use linnet_core::metrics::requests;
use linnet_core::{Reason, Variant};

fn sent(user: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", user),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

#[test]
fn stable_requests_that_arrive_clean_go_on_untouched() {
    let mut vm = vm(&checkout_unmarked("20", ""));
    let (stable, canary) = (keys(false, 2000, 40), keys(true, 2000, 10));
    for u in &stable {
        let seen = user(&mut vm, u);
        assert_eq!(seen.request, sent(u), "stable user {u}");
    }
    assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
    for u in &canary {
        assert_eq!(user(&mut vm, u).variant.as_deref(), Some("canary"));
    }
    assert_eq!(vm.foreign_calls("clear_route_cache"), canary.len());
    // Untouched is not uncounted.
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Bucket)),
        Some(stable.len() as u64)
    );
    assert_healthy(&vm);
}

#[test]
fn mark_stable_marks_every_request_and_rematches_each() {
    let mut vm = vm(&checkout("20", ""));
    let stable = keys(false, 2000, 5);
    for u in &stable {
        assert_eq!(user(&mut vm, u).variant.as_deref(), Some("stable"));
    }
    assert_eq!(vm.foreign_calls("clear_route_cache"), stable.len());
}

#[test]
fn a_removed_header_rematches_even_a_stable_request() {
    let mut vm = vm(&checkout_unmarked("20", r#""override":{"token":"t"}"#));
    let u = &keys(false, 2000, 1)[0];
    let spoofs: [&[(&str, &str)]; 4] = [
        &[(VARIANT, "canary")],
        &[(VARIANT, "stable")],
        &[(MIRROR, "checkout-canary")],
        // A rejected override is removed too: the upstream never sees it.
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "wrong"),
        ],
    ];
    for (n, extra) in spoofs.iter().enumerate() {
        let mut headers = vec![(":authority", AUTHORITY), (":path", "/"), ("x-user-id", u)];
        headers.extend_from_slice(extra);
        let seen = round_trip(&mut vm, &headers);
        assert_eq!(seen.request, sent(u), "{extra:?}");
        assert_eq!(vm.foreign_calls("clear_route_cache"), n + 1, "{extra:?}");
    }
    assert_healthy(&vm);
}

#[test]
fn a_mirrored_stable_request_needs_no_rematch() {
    let mut vm = vm(&checkout_unmarked(
        "0",
        r#""mirror":{"cluster":"checkout-canary-shadow","percent":100}"#,
    ));
    let seen = user(&mut vm, "u1");
    assert_eq!(seen.variant, None);
    assert_eq!(seen.mirror.as_deref(), Some("checkout-canary-shadow"));
    // The router reads the mirror header when it sends; the matched route stands.
    assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
    assert_healthy(&vm);
}
