//! The functions the host calls: the proxy-wasm 0.2.1 exports, and the one table of the
//! contexts they reach.
//!
//! Envoy's host skips every callback a module does not export, so what is exported here is
//! what every stream pays for, one VM entry each. The per-stream ones, and why each is here:
//!
//! | export                      | needed by                                                 |
//! | --------------------------- | --------------------------------------------------------- |
//! | `proxy_on_context_create`   | every stream: which root (configuration) it routes by     |
//! | `proxy_on_request_headers`  | every stream: strip, decide, mark, count                  |
//! | `proxy_on_response_headers` | per-variant response metrics (`:status`), minted cookies  |
//! | `proxy_on_delete`           | forgetting a stream that never saw its response headers   |
//!
//! Everything else per stream (bodies, trailers, `proxy_on_done`, `proxy_on_log`) is left
//! unexported: the host then goes on as if it had answered Continue (or true). A callback for
//! a context id this module does not know is ignored, never a panic.
// `#[no_mangle]` is what makes a function a wasm export, and the lint counts it as unsafe
// (two exports of one name would clash at link time). These are the only such items.
#![allow(unsafe_code)]

use crate::abi;
use crate::http::Http;
use crate::root::Root;
use std::cell::RefCell;
use std::collections::HashMap;

/// The host's `Continue` for a stream callback (`FilterHeadersStatus::Continue`).
const CONTINUE: u32 = 0;

/// Every context of this VM, by the id the host gave it.
#[derive(Default)]
struct Contexts {
    roots: HashMap<u32, Root>,
    streams: HashMap<u32, Http>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the contexts; `None` (and `f` not run) if they are in use, which only a host
/// calling back into the guest from inside a callback could cause.
fn with<R>(f: impl FnOnce(&mut Contexts) -> R) -> Option<R> {
    CONTEXTS
        .try_with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
        .ok()
        .flatten()
}

fn with_root<R>(id: u32, f: impl FnOnce(&mut Root) -> R) -> Option<R> {
    with(|c| c.roots.get_mut(&id).map(f)).flatten()
}

fn with_stream(id: u32, f: impl FnOnce(&mut Http)) {
    with(|c| c.streams.get_mut(&id).map(f));
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    abi::allocate(size)
}

/// A root context (`parent_id` 0: one per plugin configuration) or a stream under one.
#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
    with(|c| {
        if parent_id == 0 {
            c.roots.insert(context_id, Root::default());
        } else if let Some(stream) = c.roots.get(&parent_id).map(Root::stream) {
            c.streams.insert(context_id, stream);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_root_id: u32, _vm_configuration_size: usize) -> u32 {
    // A panic in a dependency would trap the VM without a word: say where it was.
    std::panic::set_hook(Box::new(|info| {
        abi::log(abi::CRITICAL, &format!("linnet: panic: {info}"));
    }));
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, _plugin_configuration_size: usize) -> u32 {
    u32::from(with_root(root_id, Root::on_configure).unwrap_or(false))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    with_root(root_id, Root::on_tick);
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root_id: u32,
    _token: u32,
    _headers: usize,
    _body_size: usize,
    _trailers: usize,
) {
    with_root(root_id, Root::on_http_call_response);
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _headers: usize,
    _end_of_stream: u32,
) -> u32 {
    with_stream(context_id, Http::route);
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _headers: usize,
    _end_of_stream: u32,
) -> u32 {
    with_stream(context_id, Http::respond);
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        if c.streams.remove(&context_id).is_none() {
            c.roots.remove(&context_id);
        }
    });
}
