//! Requests without a sticky key: the `stable` policy, or a minted key in a cookie that makes
//! the next request sticky.

use crate::support::{assert_healthy, checkout, expected, round_trip, vm, vm_of, AUTHORITY};
use linnet_core::metrics::requests;
use linnet_core::{Reason, Variant};
use linnet_wasm_tests::Wasm;
use std::collections::HashSet;

const RANDOM: &str =
    r#""anonymous":{"policy":"random","cookie":"linnet_uid","max_age_s":31536000}"#;

fn anonymous(vm: &mut linnet_wasm_tests::Vm, request_id: &str) -> crate::support::Seen {
    round_trip(
        vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-request-id", request_id),
        ],
    )
}

/// The key in `linnet_uid=<key>; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax`.
fn minted_key(set_cookie: &str) -> String {
    let (pair, attributes) = set_cookie.split_once("; ").unwrap();
    assert_eq!(
        attributes, "Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
        "{set_cookie}"
    );
    let key = pair.strip_prefix("linnet_uid=").unwrap();
    assert_eq!(key.len(), 32, "{set_cookie}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{set_cookie}");
    key.to_owned()
}

#[test]
fn stable_policy_sends_anonymous_users_to_stable() {
    let mut vm = vm(&checkout("100", ""));
    let seen = anonymous(&mut vm, "r1");
    assert_eq!(seen.variant.as_deref(), Some("stable"));
    assert!(seen.set_cookies.is_empty());
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Anonymous)),
        Some(1)
    );
    assert_eq!(vm.foreign_calls("clear_route_cache"), 1);
}

#[test]
fn random_policy_mints_a_sticky_cookie() {
    let mut vm = vm(&checkout("50", RANDOM));
    let first = anonymous(&mut vm, "r1");
    assert_eq!(first.set_cookies.len(), 1, "{first:?}");
    let key = minted_key(&first.set_cookies[0]);
    let variant = first.variant.unwrap();
    assert_eq!(variant, expected("checkout", key.as_bytes(), 5000));

    // The next request carries the cookie: same variant, no new cookie.
    let cookie = format!("other=1; linnet_uid={key}");
    for _ in 0..3 {
        let next = round_trip(
            &mut vm,
            &[
                (":authority", AUTHORITY),
                (":path", "/"),
                ("cookie", &cookie),
            ],
        );
        assert_eq!(next.variant.as_deref(), Some(variant.as_str()));
        assert!(next.set_cookies.is_empty(), "{next:?}");
    }
    assert_healthy(&vm);
}

#[test]
fn minted_keys_differ_and_split_by_weight() {
    let mut vm = vm(&checkout("50", RANDOM));
    let mut seen_keys = HashSet::new();
    let mut canary = 0;
    let n = 400;
    for i in 0..n {
        // Also requests that share an x-request-id, or have none, must get fresh keys.
        let seen = match i % 3 {
            0 => anonymous(&mut vm, &format!("req-{i}")),
            1 => anonymous(&mut vm, "same-id"),
            _ => round_trip(&mut vm, &[(":authority", AUTHORITY), (":path", "/")]),
        };
        let key = minted_key(&seen.set_cookies[0]);
        let variant = seen.variant.unwrap();
        assert_eq!(variant, expected("checkout", key.as_bytes(), 5000));
        canary += usize::from(variant == "canary");
        assert!(seen_keys.insert(key), "a key was minted twice");
    }
    assert!(
        (n * 3 / 10..=n * 7 / 10).contains(&canary),
        "{canary} of {n} on canary"
    );
}

#[test]
fn custom_cookie_name_and_max_age() {
    let mut vm = vm(&checkout(
        "50",
        r#""anonymous":{"policy":"random","cookie":"cid","max_age_s":60}"#,
    ));
    let seen = anonymous(&mut vm, "r1");
    let cookie = &seen.set_cookies[0];
    assert!(cookie.starts_with("cid="), "{cookie}");
    assert!(cookie.contains("; Max-Age=60;"), "{cookie}");
    let key = &cookie[4..36];
    let next = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("cookie", &format!("cid={key}")),
        ],
    );
    assert_eq!(next.variant, seen.variant);
}

#[test]
fn a_user_with_a_key_gets_no_cookie() {
    let mut vm = vm(&checkout("50", RANDOM));
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "u1"),
        ],
    );
    assert!(seen.set_cookies.is_empty());
    assert_eq!(seen.variant.unwrap(), expected("checkout", b"u1", 5000));
}

/// A minted cookie is left in filter state for the route to write, in both builds: the
/// `responses` build, which has a response callback, does not write it a second time.
#[test]
fn a_minted_cookie_is_filter_state_and_written_once() {
    for build in [Wasm::Filter, Wasm::Responses] {
        let mut vm = vm_of(build, &checkout("50", RANDOM));
        let mut req = vm.http().unwrap();
        req.request_headers(&[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-request-id", "r1"),
        ])
        .unwrap();
        let state = req
            .filter_state(linnet_core::decide::COOKIE_PROPERTY)
            .unwrap();
        let state = String::from_utf8(state).unwrap();
        minted_key(&state);
        req.response_headers(&[(":status", "200")]).unwrap();
        let cookies = req.response_header_values("set-cookie");
        assert_eq!(cookies, [state.into_bytes()], "{build:?}");
        req.done().unwrap();
        assert_healthy(&vm);
    }
}
