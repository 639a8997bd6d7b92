//! The decision order: kill switch > override (with its token) > cohorts > sticky bucket.

use crate::routing::pick;
use crate::{checkout, plugin};
use linnet_e2e::Stack;
use serde_json::{json, Value};

/// Request headers as a test writes them.
type Headers<'a> = &'a [(&'a str, &'a [u8])];

fn with(mut rollout: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        rollout[k] = v.clone();
    }
    rollout
}

#[test]
fn cohort_lists_win_over_the_bucket() {
    let bucket_canary = pick("checkout", 50.0, "canary");
    let bucket_stable = pick("checkout", 50.0, "stable");
    let cfg = with(
        checkout(50.0),
        json!({ "cohorts": { "canary": [bucket_stable], "stable": [bucket_canary] } }),
    );
    let mut stack = Stack::start(&plugin(cfg)).unwrap();
    assert_eq!(stack.user(&bucket_stable).unwrap(), "canary");
    assert_eq!(stack.user(&bucket_canary).unwrap(), "stable");
    // Exact match only: a prefix of a listed key is bucketed as usual.
    let near = format!("{bucket_stable}x");
    assert_eq!(
        stack.user(&near).unwrap(),
        crate::expected("checkout", near.as_bytes(), 50.0)
    );
    // A cohort key read from the cookie counts the same.
    let cookie = format!("uid={bucket_stable}");
    assert_eq!(
        stack.variant_of(&[("cookie", cookie.as_bytes())]).unwrap(),
        "canary"
    );
}

#[test]
fn the_override_needs_its_token_and_beats_cohorts() {
    let canary_user = pick("checkout", 50.0, "canary");
    let stable_user = pick("checkout", 50.0, "stable");
    let cfg = with(
        checkout(50.0),
        json!({
            "cohorts": { "stable": ["vip"] },
            "override": { "header": "x-linnet-override", "token_header": "x-linnet-override-token", "token": "s3cret" },
        }),
    );
    let mut stack = Stack::start(&plugin(cfg)).unwrap();
    let user = |u: &str| ("x-user-id", u.as_bytes().to_vec());
    let ask = |stack: &mut Stack, h: &[(&str, Vec<u8>)]| {
        let h: Vec<(&str, &[u8])> = h.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        stack.variant_of(&h).unwrap()
    };
    let ovr = |v: &str| ("x-linnet-override", v.as_bytes().to_vec());
    let token = |t: &str| ("x-linnet-override-token", t.as_bytes().to_vec());

    // Right token: the override wins, both ways, and over the cohort list.
    assert_eq!(
        ask(
            &mut stack,
            &[user(&stable_user), ovr("canary"), token("s3cret")]
        ),
        "canary"
    );
    assert_eq!(
        ask(
            &mut stack,
            &[user(&canary_user), ovr("stable"), token("s3cret")]
        ),
        "stable"
    );
    assert_eq!(
        ask(&mut stack, &[user("vip"), ovr("canary"), token("s3cret")]),
        "canary"
    );
    // Wrong, missing, or near-miss token, or an unknown value: ignored, the bucket decides.
    for t in [
        Some("wrong"),
        None,
        Some("s3cret2"),
        Some("S3CRET"),
        Some(""),
    ] {
        let mut h = vec![user(&stable_user), ovr("canary")];
        h.extend(t.map(token));
        assert_eq!(ask(&mut stack, &h), "stable", "token {t:?} was accepted");
    }
    assert_eq!(
        ask(
            &mut stack,
            &[user(&stable_user), ovr("purple"), token("s3cret")]
        ),
        "stable"
    );
    assert_eq!(
        ask(&mut stack, &[user("vip"), ovr("canary"), token("nope")]),
        "stable"
    );
    assert_eq!(ask(&mut stack, &[user("vip")]), "stable");

    // The override and its token are Linnet's business: neither reaches an upstream.
    for r in stack
        .stable
        .received()
        .iter()
        .chain(stack.canary.received().iter())
    {
        assert_eq!(
            r.header("x-linnet-override-token"),
            None,
            "the override token leaked upstream"
        );
        assert_eq!(
            r.header("x-linnet-override"),
            None,
            "the override header leaked upstream"
        );
    }
    linnet_e2e::counts_settle();
    assert_eq!(
        stack
            .envoy
            .stat("wasmcustom.linnet_override_rejected_total.rollout.checkout")
            .unwrap(),
        Some(7)
    );
}

#[test]
fn an_override_without_a_token_is_honoured_as_is() {
    let stable_user = pick("checkout", 10.0, "stable");
    let cfg = with(checkout(10.0), json!({ "override": {} }));
    let mut stack = Stack::start(&plugin(cfg)).unwrap();
    let got = stack
        .variant_of(&[
            ("x-user-id", stable_user.as_bytes()),
            ("x-linnet-override", b"canary"),
        ])
        .unwrap();
    assert_eq!(got, "canary");
}

#[test]
fn without_an_override_config_the_header_is_ignored() {
    let stable_user = pick("checkout", 10.0, "stable");
    let mut stack = Stack::start(&plugin(checkout(10.0))).unwrap();
    let got = stack
        .variant_of(&[
            ("x-user-id", stable_user.as_bytes()),
            ("x-linnet-override", b"canary"),
        ])
        .unwrap();
    assert_eq!(got, "stable");
}

#[test]
fn the_kill_switch_sends_everyone_to_stable() {
    let rollout = with(
        checkout(100.0),
        json!({
            "cohorts": { "canary": ["alice"] },
            "override": { "token": "s3cret" },
            "mirror": { "cluster": "checkout-canary-shadow", "percent": 100 },
        }),
    );
    let cases: [(Headers, &str); 3] = [
        (&[("x-user-id", b"user-1")], "bucket"),
        (&[("x-user-id", b"alice")], "cohort"),
        (
            &[
                ("x-user-id", b"user-2"),
                ("x-linnet-override", b"canary"),
                ("x-linnet-override-token", b"s3cret"),
            ],
            "override",
        ),
    ];

    // Per rollout, then global: both beat every other rule and stop mirroring.
    let configs = [
        plugin(with(rollout.clone(), json!({ "kill_switch": true }))),
        json!({ "kill_switch": true, "rollouts": [rollout.clone()] }),
    ];
    for cfg in configs {
        let mut stack = Stack::start(&cfg).unwrap();
        for (headers, what) in cases {
            assert_eq!(
                stack.variant_of(headers).unwrap(),
                "stable",
                "{what} beat the kill switch"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            stack.canary.count(|_| true),
            0,
            "the canary got traffic under the kill switch"
        );
        let reason =
            "wasmcustom.linnet_requests_total.rollout.checkout.variant.stable.reason.kill_switch";
        linnet_e2e::counts_settle();
        assert_eq!(stack.envoy.stat(reason).unwrap(), Some(3));
    }

    // Control: the same rollout without the switch does send these to the canary.
    let mut stack = Stack::start(&plugin(rollout)).unwrap();
    for (headers, what) in cases {
        assert_eq!(stack.variant_of(headers).unwrap(), "canary", "{what}");
    }
}
