//! The filter's metrics after a conversation, timed by the host's fake clock. Response
//! metrics are the `responses` build's (`dist/linnet-responses.wasm`); the default build
//! counts requests only.

use crate::support::{checkout, keys, round_trip_raw, vm, vm_of, AUTHORITY};
use linnet_core::metrics::{requests, response_time, responses, CLASSES, STRIPPED_HEADERS};
use linnet_core::{Reason, Variant};
use linnet_wasm_tests::{MetricKind, Vm, Wasm};

/// The `responses` build, configured with `config`.
fn responses_vm(config: &str) -> Vm {
    vm_of(Wasm::Responses, config)
}

/// One request for `user`, answered with `status` after `ms` on the host clock.
fn timed(vm: &mut Vm, user: &str, ms: u64, status: &str) {
    let mut req = vm.http().unwrap();
    req.request_headers(&[
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", user),
    ])
    .unwrap();
    req.vm().advance(ms);
    req.response_headers(&[(":status", status)]).unwrap();
    req.done().unwrap();
}

#[test]
fn metrics_are_defined_at_configure() {
    let vm = responses_vm(&checkout("20", ""));
    for v in Variant::ALL {
        for r in [
            Reason::KillSwitch,
            Reason::Override,
            Reason::Cohort,
            Reason::Bucket,
            Reason::Anonymous,
        ] {
            assert_eq!(
                vm.metric(&requests("checkout", v, r)),
                Some(0),
                "{v:?} {r:?}"
            );
        }
        for class in CLASSES {
            assert_eq!(
                vm.metric(&responses("checkout", v, class)),
                Some(0),
                "{v:?} {class}"
            );
        }
        assert_eq!(
            vm.histogram(&response_time("checkout", v)),
            Vec::<u64>::new()
        );
    }
    assert_eq!(vm.metric(STRIPPED_HEADERS), Some(0));
    assert_eq!(vm.metric("linnet_mirrored_total.rollout.checkout"), Some(0));
    assert_eq!(
        vm.metric("linnet_override_rejected_total.rollout.checkout"),
        Some(0)
    );
}

#[test]
fn the_default_build_counts_requests_and_defines_no_response_metric() {
    let mut vm = vm(&checkout("20", ""));
    let canary = keys(true, 2000, 1);
    timed(&mut vm, &canary[0], 25, "500");
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Bucket)),
        Some(1)
    );
    for v in Variant::ALL {
        for class in CLASSES {
            assert_eq!(vm.metric(&responses("checkout", v, class)), None);
        }
        assert_eq!(vm.metric_kind(&response_time("checkout", v)), None);
    }
}

#[test]
fn counters_and_latency_after_a_conversation() {
    let mut vm = responses_vm(&checkout("20", ""));
    let canary = keys(true, 2000, 2);
    let stable = keys(false, 2000, 3);
    timed(&mut vm, &canary[0], 25, "200");
    timed(&mut vm, &canary[1], 7, "302");
    timed(&mut vm, &stable[0], 40, "503");
    timed(&mut vm, &stable[1], 0, "404");
    timed(&mut vm, &stable[2], 1500, "101");
    // Unrouted traffic counts nothing.
    round_trip_raw(
        &mut vm,
        &[(":authority", b"other.local"), (":path", b"/")],
        "500",
    );

    // Counts reach Envoy on the root's tick.
    vm.tick().unwrap();
    let count = |v, class| vm.metric(&responses("checkout", v, class)).unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Bucket)),
        Some(2)
    );
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Bucket)),
        Some(3)
    );
    assert_eq!(
        [
            count(Variant::Canary, "1xx"),
            count(Variant::Canary, "2xx"),
            count(Variant::Canary, "3xx")
        ],
        [0, 1, 1]
    );
    assert_eq!(count(Variant::Canary, "5xx"), 0);
    assert_eq!(
        CLASSES.map(|c| count(Variant::Stable, c)),
        [1, 0, 0, 1, 1],
        "stable by class 1xx..5xx"
    );
    assert_eq!(
        vm.histogram(&response_time("checkout", Variant::Canary)),
        vec![25, 7]
    );
    assert_eq!(
        vm.histogram(&response_time("checkout", Variant::Stable)),
        vec![40, 0, 1500]
    );
}

#[test]
fn latency_is_whole_milliseconds_from_the_host_clock() {
    let mut vm = responses_vm(&checkout("100", ""));
    let mut req = vm.http().unwrap();
    req.request_headers(&[
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ])
    .unwrap();
    let now = req.vm().now_ns();
    req.vm().set_time_ns(now + 2_999_999);
    req.response_headers(&[(":status", "200")]).unwrap();
    req.done().unwrap();
    assert_eq!(
        vm.histogram(&response_time("checkout", Variant::Canary)),
        vec![2]
    );
}

#[test]
fn reconfiguring_keeps_metric_identity() {
    let mut vm = vm(&checkout("100", ""));
    timed(&mut vm, "u1", 1, "200");
    assert!(vm.configure(checkout("100", "")).unwrap());
    timed(&mut vm, "u2", 1, "200");
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Canary, Reason::Bucket)),
        Some(2)
    );
    let names = vm.metric_names();
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}

#[test]
fn every_linnet_metric_has_the_documented_kind() {
    // Per rollout: 2 variants x 5 reasons (and, in the `responses` build, 5 classes and a
    // histogram), mirrored, rejected; plus stripped.
    for (build, per_variant) in [(Wasm::Filter, 5), (Wasm::Responses, 11)] {
        let vm = vm_of(
            build,
            &checkout("20", r#""mirror":{"cluster":"shadow","percent":10}"#),
        );
        let names = vm.metric_names();
        assert_eq!(names.len(), 2 * per_variant + 2 + 1, "{build:?}: {names:?}");
        for name in names {
            let kind = if name.starts_with("linnet_response_time_ms.") {
                MetricKind::Histogram
            } else {
                MetricKind::Counter
            };
            assert_eq!(vm.metric_kind(&name), Some(kind), "{name}");
        }
    }
}

/// A request adds to a count in the VM; Envoy gets it on the root's tick, or when the
/// configuration is replaced, so no count is lost with the configuration it was made under.
#[test]
fn counts_reach_envoy_on_the_tick_or_before_a_new_configuration() {
    let mut vm = vm(&checkout("100", ""));
    let canary = requests("checkout", Variant::Canary, Reason::Bucket);
    timed(&mut vm, "u1", 1, "200");
    assert_eq!(vm.metric(&canary), Some(0), "counted before the tick");
    vm.tick().unwrap();
    assert_eq!(vm.metric(&canary), Some(1));
    vm.tick().unwrap();
    assert_eq!(vm.metric(&canary), Some(1), "a count was handed over twice");
    timed(&mut vm, "u2", 1, "200");
    assert!(vm.configure(checkout("100", "")).unwrap());
    assert_eq!(
        vm.metric(&canary),
        Some(2),
        "the replaced configuration's count"
    );
}
