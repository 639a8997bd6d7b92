//! A client cannot choose its variant or a mirror target by sending Linnet's own headers.

use crate::routing::pick;
use crate::{bounded, checkout, plugin};
use linnet_e2e::http::Request;
use linnet_e2e::{served_by, Stack};
use std::time::Duration;

#[test]
fn client_sent_routing_and_mirror_headers_change_nothing() {
    // No mirror configured: nothing may ever reach the canary's address for a stable user.
    let mut stack = Stack::start(&plugin(checkout(20.0))).unwrap();
    let stable_user = pick("checkout", 20.0, "stable");
    let canary_user = pick("checkout", 20.0, "canary");

    let forged: [(&str, &str); 4] = [
        ("x-linnet-variant", "canary"),
        ("x-linnet-mirror", "checkout-canary-shadow"),
        ("x-linnet-mirror", "checkout-canary"),
        ("X-Linnet-Variant", "canary"),
    ];
    bounded(0..20, |i| {
        let (name, value) = forged[i % forged.len()];
        let got = stack
            .variant_of(&[
                ("x-user-id", stable_user.as_bytes()),
                (name, value.as_bytes()),
            ])
            .unwrap();
        assert_eq!(got, "stable", "{name}: {value} moved a stable user");
        let got = stack
            .variant_of(&[
                ("x-user-id", canary_user.as_bytes()),
                ("x-linnet-variant", b"stable"),
            ])
            .unwrap();
        assert_eq!(
            got, "canary",
            "x-linnet-variant: stable moved a canary user"
        );
    });
    // Both headers at once, repeated, and on a request without any key.
    let req = Request::get("/")
        .host("checkout.local")
        .header("x-linnet-variant", "canary")
        .header("x-linnet-variant", "canary")
        .header("x-linnet-mirror", "checkout-canary");
    assert_eq!(
        served_by(&stack.send(&req).unwrap()).as_deref(),
        Some("stable")
    );
    // Outside every rollout the headers are stripped too, so the default route applies.
    let req = Request::get("/")
        .host("other.local")
        .header("x-linnet-variant", "canary");
    assert_eq!(
        served_by(&stack.send(&req).unwrap()).as_deref(),
        Some("stable")
    );

    // Give any mirrored copy time to arrive: none may.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        stack.canary.count(|r| r.is_shadow()),
        0,
        "a forged mirror header caused a copy"
    );
    // The canary saw only its own user's requests, none of them a copy.
    let at_canary = stack.canary.received();
    assert!(at_canary
        .iter()
        .all(|r| r.header("x-user-id") == Some(canary_user.as_bytes())));

    // Upstreams see Linnet's value only, never the client's, and no mirror header at all. By
    // default Linnet marks only the canary, so stable sees no routing header whatever was sent.
    for r in stack.stable.received() {
        assert!(
            !r.headers.iter().any(|(n, _)| n == "x-linnet-variant"),
            "stable upstream saw {:?}",
            r.header("x-linnet-variant")
        );
        assert_eq!(
            r.header("x-linnet-mirror"),
            None,
            "stable upstream saw a mirror header"
        );
    }
    for r in &at_canary {
        assert_eq!(r.header("x-linnet-variant"), Some(&b"canary"[..]));
        assert_eq!(r.header("x-linnet-mirror"), None);
    }
    assert_eq!(
        stack
            .envoy
            .stat("cluster.checkout-canary-shadow.upstream_rq_total")
            .unwrap(),
        Some(0)
    );
}
