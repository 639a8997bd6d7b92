//! What the filter exports is what every stream pays for: Envoy enters the VM once per
//! exported per-stream callback. A new export is a deliberate change, made here and in the
//! table in `filter/src/exports.rs`; so is one that goes.

use crate::support::{checkout, vm, AUTHORITY, VARIANT};
use linnet_wasm_tests::{exported_functions, path, Action, Wasm};

/// What both builds export: the root context's callbacks, and per stream only the context's
/// creation, its request headers and its deletion.
const EXPORTS: [&str; 9] = [
    "proxy_abi_version_0_2_1",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_delete",
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
fn the_responses_build_adds_the_response_callback_and_nothing_else() {
    let exports = exported_functions(&path(Wasm::Responses).unwrap()).unwrap();
    let mut expected = EXPORTS.to_vec();
    expected.push("proxy_on_response_headers");
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

/// Two plugin configurations that share a VM (same `vm_config`) are two roots; each stream
/// routes by the one it was created under, and a root Envoy removed routes nothing more.
#[test]
fn each_stream_routes_by_the_root_it_was_created_under() {
    let mut vm = vm(&checkout("100", ""));
    let other = vm.add_root(checkout("0", "")).unwrap().unwrap();
    let headers = [
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ];
    let seen = |vm: &mut linnet_wasm_tests::Vm, root: Option<u32>| {
        let mut req = match root {
            Some(r) => vm.http_under(r).unwrap(),
            None => vm.http().unwrap(),
        };
        assert_eq!(req.request_headers(&headers).unwrap(), Action::Continue);
        let variant = req.request_header_str(VARIANT);
        req.done().unwrap();
        variant
    };
    for _ in 0..3 {
        assert_eq!(seen(&mut vm, None).as_deref(), Some("canary"));
        assert_eq!(seen(&mut vm, Some(other)).as_deref(), Some("stable"));
    }
    vm.delete_root(other).unwrap();
    assert_eq!(
        seen(&mut vm, Some(other)),
        None,
        "a removed root still routes"
    );
    assert_eq!(seen(&mut vm, None).as_deref(), Some("canary"));
    assert!(vm.trapped().is_none());
}
