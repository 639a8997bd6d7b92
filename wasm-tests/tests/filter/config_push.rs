//! The config path: one lease-holding VM long-polls the sidecar, every VM routes by the
//! snapshot it stored in shared data, and bad or missing answers change nothing.

use crate::support::{user, AUTHORITY};
use linnet_wasm_tests::{wasm_path, SharedData, Vm};

const STABLE_USER: &str = "u-stays";

pub fn config(on_stale: &str) -> String {
    format!(
        r#"{{"mark_stable":true,"rollouts":[{{"name":"checkout","weight":0,"match":{{"authority":"{AUTHORITY}"}},
        "stickiness":[{{"header":"x-user-id"}}]}}],
        "sidecar":{{"cluster":"linnet_sidecar","token":"poll-secret","poll_timeout_ms":30000,
        "stale_after_s":10,"on_stale":"{on_stale}"}}}}"#
    )
}

pub fn snapshot(version: u64, weight: f64, kill: bool) -> String {
    format!(
        r#"{{"version":{version},"kill_switch":{kill},"rollouts":[{{"name":"checkout","weight":{weight},
        "match":{{"authority":"{AUTHORITY}"}},"stickiness":[{{"header":"x-user-id"}}]}}]}}"#
    )
}

/// `n` VMs of one Envoy process: one shared store, each configured like Envoy does.
pub fn process(n: usize, on_stale: &str) -> (SharedData, Vec<Vm>) {
    let shared = SharedData::new();
    let vms = (0..n)
        .map(|i| {
            let mut vm = Vm::load_shared(&wasm_path().unwrap(), &shared).unwrap();
            vm.advance(i as u64); // VMs start at different instants, as they do in Envoy.
            assert!(vm.start_vm("").unwrap());
            assert!(vm.configure(config(on_stale)).unwrap(), "{:?}", vm.logs());
            vm
        })
        .collect();
    (shared, vms)
}

pub fn pending(vm: &Vm) -> Vec<u32> {
    vm.http_calls()
        .iter()
        .filter(|c| c.pending)
        .map(|c| c.token)
        .collect()
}

pub fn tick_all(vms: &mut [Vm], ms: u64) {
    for vm in vms.iter_mut() {
        vm.advance(ms);
        vm.tick().unwrap();
    }
}

pub fn variant(vm: &mut Vm, key: &str) -> String {
    user(vm, key).variant.unwrap_or_default()
}

/// The single pending poll of the process, with the VM that holds it.
pub fn the_poll(vms: &[Vm]) -> (usize, u32) {
    let polls: Vec<(usize, u32)> = vms
        .iter()
        .enumerate()
        .flat_map(|(i, vm)| pending(vm).into_iter().map(move |t| (i, t)))
        .collect();
    assert_eq!(polls.len(), 1, "exactly one poll per process: {polls:?}");
    polls[0]
}

/// Lets the process start its first poll and answers it with `doc`; returns the poller.
pub fn first_snapshot(vms: &mut [Vm], doc: &str) -> usize {
    tick_all(vms, 50);
    let (holder, token) = the_poll(vms);
    vms[holder]
        .http_call_response(token, &[(":status", "200")], doc.as_bytes())
        .unwrap();
    holder
}

#[test]
fn one_poller_per_process_and_every_worker_follows() {
    let (_shared, mut vms) = process(3, "keep");
    tick_all(&mut vms, 50);
    let (holder, token) = the_poll(&vms);
    let call = vms[holder].http_calls().last().cloned().unwrap();
    assert_eq!(call.upstream, "linnet_sidecar");
    assert_eq!(
        call.header(":path"),
        Some(&b"/v1/snapshot?version=0&epoch=&timeout_ms=30000"[..])
    );
    assert_eq!(
        call.header("authorization"),
        Some(&b"Bearer poll-secret"[..])
    );
    assert!(call.header("x-linnet-poller").is_some());
    assert!(
        call.timeout_ms > 30_000,
        "the call outlives the sidecar's hold"
    );

    // Before any snapshot the plugin configuration's own rollouts (weight 0) apply.
    assert!(vms.iter_mut().all(|vm| variant(vm, "someone") == "stable"));

    vms[holder]
        .http_call_response(
            token,
            &[(":status", "200")],
            snapshot(5, 100.0, false).as_bytes(),
        )
        .unwrap();
    // The poller routes by the new snapshot at once; the others on their next tick.
    assert_eq!(variant(&mut vms[holder], "someone"), "canary");
    tick_all(&mut vms, 50);
    for vm in vms.iter_mut() {
        assert_eq!(variant(vm, "someone"), "canary");
        assert_eq!(vm.metric("linnet_snapshot_version"), Some(5));
    }
    // The poller asked again at once, with the version it now has; still one poll.
    let (again, token) = the_poll(&vms);
    assert_eq!(again, holder);
    let path = vms[holder]
        .http_calls()
        .iter()
        .find(|c| c.token == token)
        .unwrap()
        .header(":path")
        .unwrap()
        .to_vec();
    assert!(
        path.starts_with(b"/v1/snapshot?version=5&"),
        "{}",
        String::from_utf8_lossy(&path)
    );
}

#[test]
fn bad_answers_keep_the_last_good_snapshot() {
    let (_shared, mut vms) = process(2, "keep");
    first_snapshot(&mut vms, &snapshot(3, 100.0, false));

    let garbage: [(&str, &[u8]); 6] = [
        ("200", b"<html>oops</html>"),
        (
            "200",
            br#"{"version":4,"rollouts":[{"name":"checkout","weight":400}]}"#,
        ),
        ("200", br#"{"version":4,"rollouts":[],"extra":1}"#),
        ("200", br#"{"version":4,"epoch":"not one","rollouts":[]}"#),
        ("503", b"down"),
        ("", b""),
    ];
    let mut rejected = 0;
    let mut errors = 0;
    for (status, body) in garbage {
        let (h2, token) = the_poll(&vms);
        let headers: Vec<(&str, &str)> = if status.is_empty() {
            vec![]
        } else {
            vec![(":status", status)]
        };
        vms[h2].http_call_response(token, &headers, body).unwrap();
        if status == "200" {
            rejected += 1;
        } else {
            errors += 1;
        }
        assert_eq!(
            vms[h2].metric("linnet_snapshot_rejected_total"),
            Some(rejected)
        );
        assert_eq!(
            vms[h2].metric("linnet_snapshot_poll_errors_total"),
            Some(errors)
        );
        // After a failure the poller waits a second before it asks again.
        tick_all(&mut vms, 50);
        assert!(
            vms.iter().all(|vm| pending(vm).is_empty()),
            "no retry within the back-off"
        );
        tick_all(&mut vms, 1_000);
        for vm in vms.iter_mut() {
            assert_eq!(
                variant(vm, "someone"),
                "canary",
                "last good snapshot (weight 100) kept"
            );
            assert!(vm.trapped().is_none());
        }
    }
}

#[test]
fn a_reloaded_vm_starts_from_the_stored_snapshot() {
    let (shared, mut vms) = process(1, "keep");
    first_snapshot(&mut vms, &snapshot(9, 100.0, false));

    // A new VM in the same process (a reload), before it has polled or ticked.
    let mut fresh = Vm::load_shared(&wasm_path().unwrap(), &shared).unwrap();
    fresh.start_vm("").unwrap();
    assert!(fresh.configure(config("keep")).unwrap());
    assert!(fresh.http_calls().is_empty());
    assert_eq!(variant(&mut fresh, "someone"), "canary");
}

#[test]
fn the_lease_moves_when_its_holder_stops() {
    let (_shared, mut vms) = process(2, "keep");
    tick_all(&mut vms, 50);
    let (holder, _) = the_poll(&vms);
    let other = 1 - holder;
    // The holder goes away (its poll still hangs); the other VM keeps ticking.
    for _ in 0..20 {
        vms[other].advance(100);
        vms[other].tick().unwrap();
    }
    assert!(
        pending(&vms[other]).is_empty(),
        "the lease is still valid for 3 s"
    );
    for _ in 0..15 {
        vms[other].advance(100);
        vms[other].tick().unwrap();
    }
    assert_eq!(
        pending(&vms[other]).len(),
        1,
        "the other VM took over after the lease expired"
    );
}

#[test]
fn staleness_is_reported_and_on_stale_stable_is_opt_in() {
    for (on_stale, after) in [("keep", "canary"), ("stable", "stable")] {
        let (_shared, mut vms) = process(1, on_stale);
        first_snapshot(&mut vms, &snapshot(2, 100.0, false));
        // A "no change" answer is contact too.
        tick_all(&mut vms, 4_000);
        let (_, token) = the_poll(&vms);
        vms[0]
            .http_call_response(token, &[(":status", "304")], b"")
            .unwrap();
        assert_eq!(vms[0].metric("linnet_snapshot_age_seconds"), Some(0));
        // Then the sidecar goes silent: every poll fails.
        for _ in 0..12 {
            if let Some(token) = pending(&vms[0]).first().copied() {
                vms[0]
                    .http_call_response(token, &[(":status", "503")], b"")
                    .unwrap();
            }
            tick_all(&mut vms, 1_000);
        }
        let age = vms[0].metric("linnet_snapshot_age_seconds").unwrap();
        assert!(age >= 11, "age {age}");
        let seen = user(&mut vms[0], STABLE_USER);
        assert_eq!(seen.variant.as_deref(), Some(after), "on_stale {on_stale}");
        let reason_metric = format!(
            "linnet_requests_total.rollout.checkout.variant.{after}.reason.{}",
            if on_stale == "stable" {
                "kill_switch"
            } else {
                "bucket"
            }
        );
        vms[0].tick().unwrap();
        assert_eq!(vms[0].metric(&reason_metric), Some(1), "{on_stale}");
        // Contact again: fresh, and back to the snapshot's routing.
        let token = pending(&vms[0]).first().copied().unwrap_or_else(|| {
            tick_all(&mut vms, 1_000);
            pending(&vms[0])[0]
        });
        vms[0]
            .http_call_response(token, &[(":status", "304")], b"")
            .unwrap();
        assert_eq!(variant(&mut vms[0], STABLE_USER), "canary");
    }
}

#[test]
fn the_global_kill_switch_arrives_by_snapshot() {
    let (_shared, mut vms) = process(1, "keep");
    first_snapshot(&mut vms, &snapshot(2, 100.0, true));
    let seen = user(&mut vms[0], "someone");
    assert_eq!(seen.variant.as_deref(), Some("stable"));
    vms[0].tick().unwrap();
    assert_eq!(
        vms[0].metric("linnet_requests_total.rollout.checkout.variant.stable.reason.kill_switch"),
        Some(1)
    );
}
