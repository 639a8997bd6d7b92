//! The lean no-op baseline (`dist/lean.wasm`): what a wasm filter costs Envoy when the module
//! exports only what the host requires and one empty `proxy_on_request_headers`.
//!
//! Envoy's host skips every callback a module does not export, so each stream enters this VM
//! once. The SDK no-op (`dist/baselines.wasm`) exports every callback the SDK's dispatcher has,
//! and each stream enters it about six times: the difference between the two is what the
//! dispatcher costs, not what a filter must pay.
// `#[no_mangle]` is what makes a function a wasm export, and the lint counts it as unsafe
// (two exports of one name would clash at link time); nothing else here is.
#![allow(unsafe_code)]

/// The ABI this module speaks; the host refuses a module without one.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host refuses a module it cannot allocate in (it would have nowhere to put the data its
/// calls return). This module makes no such call, but the host asks for the export.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut bytes = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(size));
    bytes.as_mut_ptr()
}

/// Continue (`FilterHeadersStatus::Continue`), having done nothing.
#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    _context_id: u32,
    _headers: usize,
    _end_of_stream: u32,
) -> u32 {
    0
}
