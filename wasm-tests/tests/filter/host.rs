//! The harness against the real filter: shared data across VMs, and misuse refused.

use linnet_wasm_tests::{wasm_path, SharedData, Vm};

#[test]
fn vms_on_one_store_see_each_others_shared_data() {
    let path = wasm_path().unwrap();
    let shared = SharedData::new();
    let a = Vm::load_shared(&path, &shared).unwrap();
    let b = Vm::load_shared(&path, &shared).unwrap();
    a.shared().set(b"k", b"v", 0).unwrap();
    assert_eq!(b.shared().get(b"k").unwrap().0, b"v");
    assert!(Vm::load(&path).unwrap().shared().get(b"k").is_none());
}

#[test]
fn calls_before_start_are_refused() {
    let mut vm = Vm::load(&wasm_path().unwrap()).unwrap();
    assert!(vm.configure("{}").is_err());
    assert!(vm.http().is_err());
}

#[test]
fn http_calls_are_recorded_and_answered() {
    // The filter polls a sidecar when one is configured: enough to drive the call plumbing.
    let mut vm = Vm::load(&wasm_path().unwrap()).unwrap();
    vm.start_vm("").unwrap();
    assert!(
        vm.configure(r#"{"sidecar":{"cluster":"linnet-sidecar"}}"#)
            .unwrap(),
        "{:?}",
        vm.logs()
    );
    assert!(vm.tick_period_ms() > 0);
    vm.tick().unwrap();
    let call = vm
        .http_calls()
        .first()
        .cloned()
        .expect("a poll was dispatched");
    assert_eq!(call.upstream, "linnet-sidecar");
    assert_eq!(call.header(":method"), Some(&b"GET"[..]));
    assert!(call.pending && call.timeout_ms > 0);
    vm.http_call_response(call.token, &[(":status", "503")], b"down")
        .unwrap();
    assert!(!vm.http_calls()[0].pending);
    assert!(
        vm.http_call_response(call.token, &[(":status", "200")], b"")
            .is_err(),
        "delivered twice"
    );
    assert!(vm.trapped().is_none());
}
