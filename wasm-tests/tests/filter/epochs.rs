//! Snapshots are known by (epoch, version). A sidecar whose versions went backwards under a
//! new epoch (its database replaced) is followed by every VM; within one epoch a lower
//! version is a stale reply and is refused; a sidecar from before epochs is treated as before.

use crate::config_push::{first_snapshot, pending, process, snapshot, the_poll, tick_all, variant};
use linnet_wasm_tests::{LogLevel, Vm};

/// A snapshot document from the sidecar run `epoch` (`None`: a sidecar from before epochs).
fn doc(epoch: Option<&str>, version: u64, weight: f64) -> String {
    let body = snapshot(version, weight, false);
    match epoch {
        None => body,
        Some(e) => body.replacen('{', &format!(r#"{{"epoch":"{e}","#), 1),
    }
}

fn answer(vm: &mut Vm, token: u32, body: &str) {
    vm.http_call_response(token, &[(":status", "200")], body.as_bytes())
        .unwrap();
}

/// The query of the poll `token` of `vm`.
fn query(vm: &Vm, token: u32) -> String {
    let call = vm.http_calls().iter().find(|c| c.token == token).unwrap();
    let path = String::from_utf8_lossy(call.header(":path").unwrap()).into_owned();
    path.split_once('?').unwrap().1.to_owned()
}

/// Every VM routes `someone` to `want` and reports `version`.
fn all_on(vms: &mut [Vm], want: &str, version: u64) {
    for (i, vm) in vms.iter_mut().enumerate() {
        assert_eq!(variant(vm, "someone"), want, "vm {i}: {:?}", vm.logs());
        assert_eq!(
            vm.metric("linnet_snapshot_version"),
            Some(version),
            "vm {i}"
        );
    }
}

#[test]
fn a_new_epoch_replaces_a_higher_version_on_every_vm() {
    let (_shared, mut vms) = process(3, "keep");
    first_snapshot(&mut vms, &doc(Some("run-a"), 9, 100.0));
    tick_all(&mut vms, 50);
    all_on(&mut vms, "canary", 9);
    let (holder, token) = the_poll(&vms);
    assert_eq!(
        query(&vms[holder], token),
        "version=9&epoch=run-a&timeout_ms=30000"
    );

    // The sidecar restarted on an empty database: version 2 of another run.
    answer(&mut vms[holder], token, &doc(Some("run-b"), 2, 0.0));
    assert_eq!(variant(&mut vms[holder], "someone"), "stable");
    tick_all(&mut vms, 50);
    all_on(&mut vms, "stable", 2);
    let (again, token) = the_poll(&vms);
    assert_eq!(again, holder);
    assert_eq!(
        query(&vms[holder], token),
        "version=2&epoch=run-b&timeout_ms=30000"
    );

    // And it goes on counting from there.
    answer(&mut vms[holder], token, &doc(Some("run-b"), 3, 100.0));
    tick_all(&mut vms, 50);
    all_on(&mut vms, "canary", 3);
    for vm in &vms {
        assert!(vm.trapped().is_none());
        assert_eq!(vm.metric("linnet_snapshot_rejected_total"), Some(0));
    }
}

#[test]
fn a_stale_reply_of_the_same_epoch_is_refused() {
    let (_shared, mut vms) = process(2, "keep");
    first_snapshot(&mut vms, &doc(Some("run-b"), 2, 0.0));
    tick_all(&mut vms, 50);
    let (slow, slow_token) = the_poll(&vms);
    let other = 1 - slow;
    // The holder stalls with its poll out; its lease runs out and the other VM polls.
    for _ in 0..35 {
        vms[other].advance(100);
        vms[other].tick().unwrap();
    }
    let token = *pending(&vms[other]).first().unwrap();
    answer(&mut vms[other], token, &doc(Some("run-b"), 5, 100.0));
    // The stalled VM's reply comes last, from before the change: version 3 of that run.
    answer(&mut vms[slow], slow_token, &doc(Some("run-b"), 3, 0.0));
    assert!(
        vms[slow].logged(LogLevel::Info, "not taken"),
        "{:?}",
        vms[slow].logs()
    );
    tick_all(&mut vms, 50);
    all_on(&mut vms, "canary", 5);
    // A reply refused as stale is no bad input.
    assert_eq!(vms[slow].metric("linnet_snapshot_rejected_total"), Some(0));
}

#[test]
fn a_malformed_epoch_is_refused_and_counted() {
    let (_shared, mut vms) = process(2, "keep");
    first_snapshot(&mut vms, &doc(Some("run-a"), 4, 100.0));
    tick_all(&mut vms, 50);
    for (n, bad) in [r#""a b""#, r#""""#, "7", r#""ünïcode""#]
        .iter()
        .enumerate()
    {
        let (holder, token) = the_poll(&vms);
        let body = doc(Some("x"), 1, 0.0).replace(r#""x""#, bad);
        answer(&mut vms[holder], token, &body);
        assert_eq!(
            vms[holder].metric("linnet_snapshot_rejected_total"),
            Some(n as u64 + 1)
        );
        assert!(
            vms[holder]
                .logs_at(LogLevel::Error)
                .iter()
                .any(|l| l.contains("rejected snapshot") && l.contains("epoch")),
            "{:?}",
            vms[holder].logs()
        );
        tick_all(&mut vms, 1_050);
        all_on(&mut vms, "canary", 4);
    }
}

#[test]
fn without_epochs_a_lower_version_is_refused_as_before_and_asked_again_later() {
    let (_shared, mut vms) = process(2, "keep");
    first_snapshot(&mut vms, &doc(None, 9, 100.0));
    tick_all(&mut vms, 50);
    let (holder, token) = the_poll(&vms);
    assert_eq!(
        query(&vms[holder], token),
        "version=9&epoch=&timeout_ms=30000"
    );
    answer(&mut vms[holder], token, &doc(None, 2, 0.0));
    tick_all(&mut vms, 50);
    all_on(&mut vms, "canary", 9);
    // Such a sidecar answers every poll at once: the poller waits before it asks again.
    assert!(vms.iter().all(|vm| pending(vm).is_empty()));
    tick_all(&mut vms, 1_000);
    the_poll(&vms);
}

#[test]
fn a_sidecar_that_gains_epochs_is_followed() {
    let (_shared, mut vms) = process(2, "keep");
    first_snapshot(&mut vms, &doc(None, 9, 100.0));
    tick_all(&mut vms, 50);
    let (holder, token) = the_poll(&vms);
    answer(&mut vms[holder], token, &doc(Some("run-a"), 1, 0.0));
    tick_all(&mut vms, 50);
    all_on(&mut vms, "stable", 1);
}
