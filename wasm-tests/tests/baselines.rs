//! The benchmarks' baseline filters do exactly what their numbers are read as.
//! `dist/baselines.wasm` (built with the SDK): nothing with an empty configuration; with `key`
//! one read of the user's key header; with `reroute` the routing header and the route re-pick
//! Linnet needs; and nothing more. `dist/lean.wasm`: nothing, with one export per stream. A
//! baseline that silently did less would make Linnet look slower than it is.
// clippy.toml allows these in #[test] functions only; test helpers fail the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_wasm_tests::{exported_functions, path, Action, LogLevel, MapRead, Vm, Wasm};

fn baseline(config: &str) -> (Vm, bool) {
    let mut vm = Vm::load(&path(Wasm::Baselines).unwrap()).unwrap();
    assert!(vm.start_vm("").unwrap());
    let accepted = vm.configure(config).unwrap();
    (vm, accepted)
}

/// One request through `vm`: the routing header and how many request headers there are after
/// the filter.
fn request(vm: &mut Vm) -> (Option<String>, usize) {
    let mut req = vm.http().unwrap();
    let headers = [(":authority", "checkout.local"), ("x-user-id", "user-1")];
    assert_eq!(req.request_headers(&headers).unwrap(), Action::Continue);
    let variant = req.request_header_str("x-linnet-variant");
    let count = req.request_header_map().len();
    assert_eq!(
        req.response_headers(&[(":status", "200")]).unwrap(),
        Action::Continue
    );
    req.done().unwrap();
    (variant, count)
}

/// A baseline defines no metrics (Linnet's cost would include them) and never traps.
fn assert_no_metrics_and_alive(vm: &Vm) {
    assert!(vm.metric_names().is_empty(), "{:?}", vm.metric_names());
    assert!(vm.trapped().is_none());
}

#[test]
fn empty_configuration_touches_nothing() {
    let (mut vm, accepted) = baseline("");
    assert!(accepted);
    for _ in 0..3 {
        assert_eq!(request(&mut vm), (None, 2));
    }
    assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
    assert!(vm.map_reads().is_empty(), "{:?}", vm.map_reads());
    assert_no_metrics_and_alive(&vm);
}

#[test]
fn key_reads_the_user_header_once_per_request_and_changes_nothing() {
    let (mut vm, accepted) = baseline("key");
    assert!(accepted);
    for _ in 0..3 {
        assert_eq!(request(&mut vm), (None, 2));
    }
    let one = MapRead {
        map: 0,
        key: Some(b"x-user-id".to_vec()),
    };
    assert_eq!(vm.map_reads(), [one.clone(), one.clone(), one]);
    assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
    assert_no_metrics_and_alive(&vm);
}

#[test]
fn reroute_writes_the_header_and_repicks_the_route_on_every_request() {
    let (mut vm, accepted) = baseline(" reroute\n");
    assert!(accepted);
    for _ in 0..3 {
        assert_eq!(request(&mut vm), (Some("stable".to_owned()), 3));
    }
    assert_eq!(vm.foreign_calls("clear_route_cache"), 3);
    assert!(vm.map_reads().is_empty(), "{:?}", vm.map_reads());
    assert_no_metrics_and_alive(&vm);
}

#[test]
fn any_other_configuration_is_refused_with_a_log_line() {
    let (vm, accepted) = baseline(r#"{"rollouts":[]}"#);
    assert!(!accepted);
    assert!(
        vm.logged(LogLevel::Error, "must be empty, \"key\" or \"reroute\""),
        "{:?}",
        vm.logs()
    );
}

/// The lean baseline (`dist/lean.wasm`) is the cheapest module Envoy runs: the exports the host
/// requires and an empty request-headers callback, which answers Continue and touches nothing.
#[test]
fn lean_exports_one_callback_and_answers_continue_touching_nothing() {
    let path = path(Wasm::Lean).unwrap();
    assert_eq!(
        exported_functions(&path).unwrap(),
        [
            "proxy_abi_version_0_2_1",
            "proxy_on_memory_allocate",
            "proxy_on_request_headers"
        ]
    );
    let mut vm = Vm::load(&path).unwrap();
    // Neither callback is exported: the host goes on as if both had said yes.
    assert!(vm.start_vm("").unwrap());
    assert!(vm.configure("").unwrap());
    for _ in 0..3 {
        assert_eq!(request(&mut vm), (None, 2));
    }
    assert!(vm.map_reads().is_empty(), "{:?}", vm.map_reads());
    assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
    assert!(vm.logs().is_empty(), "{:?}", vm.logs());
    assert_no_metrics_and_alive(&vm);
}
