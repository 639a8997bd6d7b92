//! What the filter exports is what every stream pays for: Envoy enters the VM once per
//! exported per-stream callback. A new export is a deliberate change, made here and in the
//! table in `filter/src/exports.rs`; so is one that goes.

use crate::support::{checkout, vm, AUTHORITY, VARIANT};
use linnet_wasm_tests::{exported_functions, wasm_path, Action};

#[test]
fn the_filter_exports_exactly_the_callbacks_its_features_need() {
    let exports = exported_functions(&wasm_path().unwrap()).unwrap();
    assert_eq!(
        exports,
        [
            "proxy_abi_version_0_2_1",
            "proxy_on_configure",
            "proxy_on_context_create",
            "proxy_on_delete",
            "proxy_on_http_call_response",
            "proxy_on_memory_allocate",
            "proxy_on_request_headers",
            "proxy_on_response_headers",
            "proxy_on_tick",
            "proxy_on_vm_start",
        ]
    );
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
