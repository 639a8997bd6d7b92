//! What the filter exports is what every stream pays for: Envoy enters the VM once per
//! exported per-stream callback. A new export is a deliberate change, made here and in the
//! table in `filter/src/exports.rs`; so is one that goes.

use crate::support::{checkout, vm, vm_of, AUTHORITY, VARIANT};
use linnet_wasm_tests::{exported_functions, path, Action, Vm, Wasm};

/// What both builds export: the root context's callbacks, and per stream only the context's
/// creation and its request headers.
const EXPORTS: [&str; 8] = [
    "proxy_abi_version_0_2_1",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_http_call_response",
    "proxy_on_memory_allocate",
    "proxy_on_request_headers",
    "proxy_on_tick",
    "proxy_on_vm_start",
];

#[test]
fn the_default_build_enters_the_vm_on_request_headers_only() {
    let exports = exported_functions(&path(Wasm::Filter).unwrap()).unwrap();
    assert_eq!(exports, EXPORTS);
}

#[test]
fn the_responses_build_adds_the_response_callback_and_the_stream_end_and_nothing_else() {
    let exports = exported_functions(&path(Wasm::Responses).unwrap()).unwrap();
    let mut expected = EXPORTS.to_vec();
    expected.extend(["proxy_on_response_headers", "proxy_on_delete"]);
    expected.sort_unstable();
    assert_eq!(exports, expected);
}

#[test]
fn callbacks_for_a_context_the_filter_does_not_know_are_ignored() {
    let mut vm = vm(&checkout("100", ""));
    let headers = [
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ];

    let mut unknown = vm.http_unknown_to_guest().unwrap();
    assert_eq!(unknown.request_headers(&headers).unwrap(), Action::Continue);
    assert_eq!(unknown.request_header_str(VARIANT), None);
    assert_eq!(
        unknown.response_headers(&[(":status", "200")]).unwrap(),
        Action::Continue
    );
    assert!(unknown.response_header_values("set-cookie").is_empty());
    unknown.done().unwrap();
    assert!(vm.trapped().is_none());

    // The VM routes the next stream as ever.
    let mut req = vm.http().unwrap();
    assert_eq!(req.request_headers(&headers).unwrap(), Action::Continue);
    assert_eq!(req.request_header_str(VARIANT).as_deref(), Some("canary"));
    req.done().unwrap();
}

/// A stream under `root` (the first root if `None`) for `u1` on the checkout authority: the
/// variant the filter marked, if any.
fn routed(vm: &mut Vm, root: Option<u32>) -> Option<String> {
    let mut req = match root {
        Some(r) => vm.http_under(r).unwrap(),
        None => vm.http().unwrap(),
    };
    let headers = [
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ];
    assert_eq!(req.request_headers(&headers).unwrap(), Action::Continue);
    let variant = req.request_header_str(VARIANT);
    req.done().unwrap();
    variant
}

/// Two plugin configurations that share a VM (same `vm_config`) are two roots; each stream
/// routes by the one it was created under.
#[test]
fn each_stream_routes_by_the_root_it_was_created_under() {
    for build in [Wasm::Filter, Wasm::Responses] {
        let mut vm = vm_of(build, &checkout("100", ""));
        let other = vm.add_root(checkout("0", "")).unwrap().unwrap();
        for _ in 0..3 {
            assert_eq!(routed(&mut vm, None).as_deref(), Some("canary"));
            assert_eq!(routed(&mut vm, Some(other)).as_deref(), Some("stable"));
        }
        assert!(vm.trapped().is_none());
    }
}

/// The responses build hears Envoy remove a root; the default build, which has no
/// `proxy_on_delete` (Envoy would call it for every stream), keeps at most eight and forgets
/// the least recently active one, which a removed root always is: it gets neither streams nor
/// ticks, and a live root ticks even without a sidecar.
#[test]
fn a_removed_root_is_forgotten() {
    let mut responses = vm_of(Wasm::Responses, &checkout("100", ""));
    let other = responses.add_root(checkout("0", "")).unwrap().unwrap();
    responses.delete_root(other).unwrap();
    assert_eq!(
        routed(&mut responses, Some(other)),
        None,
        "a removed root still routes"
    );
    assert_eq!(routed(&mut responses, None).as_deref(), Some("canary"));

    let mut vm = vm(&checkout("100", ""));
    assert_eq!(
        vm.tick_period_ms(),
        200,
        "a root without a sidecar must tick"
    );
    let removed = vm.add_root(checkout("0", "")).unwrap().unwrap();
    assert_eq!(routed(&mut vm, Some(removed)).as_deref(), Some("stable"));
    // Envoy replaces that configuration six times over; the first root stays live.
    let mut last = removed;
    for _ in 0..6 {
        vm.tick().unwrap();
        last = vm.add_root(checkout("0", "")).unwrap().unwrap();
        assert_eq!(routed(&mut vm, Some(last)).as_deref(), Some("stable"));
    }
    // Eight roots: a ninth makes the VM forget the one that saw nothing for longest.
    vm.tick().unwrap();
    let ninth = vm.add_root(checkout("0", "")).unwrap().unwrap();
    assert_eq!(
        routed(&mut vm, Some(removed)),
        None,
        "the stale root was kept"
    );
    for root in [None, Some(last), Some(ninth)] {
        assert!(
            routed(&mut vm, root).is_some(),
            "root {root:?} was forgotten"
        );
    }
    assert!(vm
        .logs()
        .iter()
        .any(|l| l.message.contains("forgot the least recently active one")));
    assert!(vm.trapped().is_none());
}
