//! Dark launch: stable-bound requests carry the mirror header naming the shadow cluster, for
//! the configured share sampled by `x-request-id`.

use crate::support::{assert_healthy, checkout, round_trip, vm, AUTHORITY};
use linnet_core::metrics::mirrored;
use linnet_wasm_tests::Vm;

fn mirror(percent: &str) -> String {
    format!(r#""mirror":{{"cluster":"checkout-canary-shadow","percent":{percent}}}"#)
}

fn req(vm: &mut Vm, user: &str, request_id: &str) -> crate::support::Seen {
    round_trip(
        vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", user),
            ("x-request-id", request_id),
        ],
    )
}

#[test]
fn percent_100_mirrors_every_stable_decision_only() {
    let mut vm = vm(&checkout("50", &mirror("100")));
    let mut stable = 0;
    for i in 0..300 {
        let seen = req(&mut vm, &format!("u{i}"), &format!("rid-{i}"));
        match seen.variant.as_deref() {
            Some("stable") => {
                stable += 1;
                assert_eq!(seen.mirror.as_deref(), Some("checkout-canary-shadow"));
            }
            Some("canary") => assert_eq!(seen.mirror, None),
            other => panic!("variant {other:?}"),
        }
    }
    assert!(stable > 0);
    vm.tick().unwrap();
    assert_eq!(vm.metric(&mirrored("checkout")), Some(stable));
    assert_healthy(&vm);
}

#[test]
fn percent_0_never_mirrors() {
    let mut vm = vm(&checkout("0", &mirror("0")));
    for i in 0..200 {
        assert_eq!(
            req(&mut vm, &format!("u{i}"), &format!("rid-{i}")).mirror,
            None
        );
    }
    vm.tick().unwrap();
    assert_eq!(vm.metric(&mirrored("checkout")), Some(0));
}

#[test]
fn sampling_follows_the_request_id() {
    let mut vm = vm(&checkout("0", &mirror("50")));
    let ids: Vec<String> = (0..1000).map(|i| format!("rid-{i}")).collect();
    let first: Vec<bool> = ids
        .iter()
        .map(|id| req(&mut vm, "u1", id).mirror.is_some())
        .collect();
    let share = first.iter().filter(|m| **m).count() as f64 / ids.len() as f64;
    assert!((0.45..=0.55).contains(&share), "mirrored share {share}");
    // Same request id, same answer, whoever the user is and on any VM.
    let mut other = crate::support::vm(&checkout("0", &mirror("50")));
    for (id, was) in ids.iter().zip(&first).take(200) {
        assert_eq!(
            req(&mut other, "someone-else", id).mirror.is_some(),
            *was,
            "{id}"
        );
    }
}

#[test]
fn kill_switch_stops_mirroring() {
    let mut vm = vm(&checkout(
        "50",
        &format!(r#"{},"kill_switch":true"#, mirror("100")),
    ));
    for i in 0..50 {
        let seen = req(&mut vm, &format!("u{i}"), &format!("rid-{i}"));
        assert_eq!(seen.variant.as_deref(), Some("stable"));
        assert_eq!(seen.mirror, None);
    }
    vm.tick().unwrap();
    assert_eq!(vm.metric(&mirrored("checkout")), Some(0));
}

#[test]
fn overrides_and_cohorts_to_stable_are_mirrored() {
    let extra = format!(
        r#"{},"cohorts":{{"stable":["bob"]}},"override":{{}}"#,
        mirror("100")
    );
    let mut vm = vm(&checkout("100", &extra));
    assert_eq!(
        req(&mut vm, "bob", "r1").mirror.as_deref(),
        Some("checkout-canary-shadow")
    );
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "u1"),
            ("x-linnet-override", "stable"),
            ("x-request-id", "r2"),
        ],
    );
    assert_eq!(seen.mirror.as_deref(), Some("checkout-canary-shadow"));
}
