//! The order of the decision: kill switch > override (with its token) > cohorts > bucket.

use crate::support::{assert_healthy, checkout, keys, round_trip, user, vm, AUTHORITY};
use linnet_core::metrics::{override_rejected, requests};
use linnet_core::{Reason, Variant};

const OVERRIDE: &str = r#""override":{"header":"x-linnet-override","token_header":"x-linnet-override-token","token":"s3cret"}"#;

fn req(vm: &mut linnet_wasm_tests::Vm, user: &str, extra: &[(&str, &str)]) -> crate::support::Seen {
    let mut headers = vec![
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", user),
    ];
    headers.extend_from_slice(extra);
    round_trip(vm, &headers)
}

#[test]
fn cohorts_beat_the_bucket() {
    let canary_by_bucket = keys(true, 2000, 1).remove(0);
    let stable_by_bucket = keys(false, 2000, 1).remove(0);
    let cohorts =
        format!(r#""cohorts":{{"canary":["{stable_by_bucket}"],"stable":["{canary_by_bucket}"]}}"#);
    let mut vm = vm(&checkout("20", &cohorts));
    assert_eq!(
        user(&mut vm, &stable_by_bucket).variant.as_deref(),
        Some("canary")
    );
    assert_eq!(
        user(&mut vm, &canary_by_bucket).variant.as_deref(),
        Some("stable")
    );
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Cohort)),
        Some(1)
    );
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Cohort)),
        Some(1)
    );
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Bucket)),
        Some(0)
    );
    // Exact match only: a prefix or a different case is just another key.
    let near = format!("{stable_by_bucket}x");
    assert_eq!(
        user(&mut vm, &near).variant.as_deref(),
        Some(crate::support::expected("checkout", near.as_bytes(), 2000))
    );
    assert_healthy(&vm);
}

#[test]
fn override_with_the_right_token_is_honoured() {
    let mut vm = vm(&checkout("0", OVERRIDE));
    let seen = req(
        &mut vm,
        "u1",
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "s3cret"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("canary"));
    // The override and its token are for Linnet, not for the upstream.
    assert!(!seen
        .request
        .iter()
        .any(|(k, _)| k.starts_with(b"x-linnet-override")));
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Override)),
        Some(1)
    );
    assert_eq!(vm.metric(&override_rejected("checkout")), Some(0));

    let mut vm2 = crate::support::vm(&checkout("100", OVERRIDE));
    let seen = req(
        &mut vm2,
        "u1",
        &[
            ("x-linnet-override", "stable"),
            ("x-linnet-override-token", "s3cret"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("stable"));
    vm2.tick().unwrap();
    assert_eq!(
        vm2.metric(&requests("checkout", Variant::Stable, Reason::Override)),
        Some(1)
    );
}

#[test]
fn override_without_the_right_token_is_rejected_and_falls_through() {
    let mut vm = vm(&checkout("0", OVERRIDE));
    let attempts: &[&[(&str, &str)]] = &[
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "wrong"),
        ],
        &[("x-linnet-override", "canary")],
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "S3CRET"),
        ],
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "s3cret "),
        ],
        &[
            ("x-linnet-override", "purple"),
            ("x-linnet-override-token", "s3cret"),
        ],
    ];
    for (i, extra) in attempts.iter().enumerate() {
        let seen = req(&mut vm, "u1", extra);
        assert_eq!(seen.variant.as_deref(), Some("stable"), "{extra:?}");
        assert!(
            !seen
                .request
                .iter()
                .any(|(k, _)| k.starts_with(b"x-linnet-override")),
            "{extra:?}"
        );
        vm.tick().unwrap();
        assert_eq!(
            vm.metric(&override_rejected("checkout")),
            Some(i as u64 + 1),
            "{extra:?}"
        );
    }
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Bucket)),
        Some(attempts.len() as u64)
    );
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Override)),
        Some(0)
    );
    assert_healthy(&vm);
}

#[test]
fn override_without_a_configured_token_needs_none() {
    let mut vm = vm(&checkout("0", r#""override":{}"#));
    let seen = req(&mut vm, "u1", &[("x-linnet-override", "canary")]);
    assert_eq!(seen.variant.as_deref(), Some("canary"));
}

#[test]
fn override_is_ignored_when_not_configured() {
    let mut vm = vm(&checkout("0", ""));
    let seen = req(
        &mut vm,
        "u1",
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "s3cret"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("stable"));
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Bucket)),
        Some(1)
    );
}

#[test]
fn override_beats_cohorts() {
    let mut vm = vm(&checkout(
        "0",
        &format!(r#"{OVERRIDE},"cohorts":{{"stable":["bob"]}}"#),
    ));
    let seen = req(
        &mut vm,
        "bob",
        &[
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "s3cret"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("canary"));
}

#[test]
fn kill_switch_beats_everything() {
    let everything = format!(r#"{OVERRIDE},"cohorts":{{"canary":["alice"]}},"kill_switch":true"#);
    let global = r#"{"mark_stable":true,"kill_switch":true,"rollouts":[{"name":"checkout","weight":100,"stickiness":[{"header":"x-user-id"}],
        "cohorts":{"canary":["alice"]},"override":{"token":"s3cret"}}]}"#;
    for config in [checkout("100", &everything), global.to_owned()] {
        let mut vm = vm(&config);
        let forced = [
            ("x-linnet-override", "canary"),
            ("x-linnet-override-token", "s3cret"),
        ];
        assert_eq!(
            req(&mut vm, "alice", &forced).variant.as_deref(),
            Some("stable"),
            "{config}"
        );
        assert_eq!(
            req(&mut vm, "alice", &[]).variant.as_deref(),
            Some("stable")
        );
        assert_eq!(req(&mut vm, "u1", &[]).variant.as_deref(), Some("stable"));
        vm.tick().unwrap();
        assert_eq!(
            vm.metric(&requests("checkout", Variant::Stable, Reason::KillSwitch)),
            Some(3)
        );
        assert_eq!(
            vm.metric(&requests("checkout", Variant::Canary, Reason::Override)),
            Some(0)
        );
        assert_healthy(&vm);
    }
}
