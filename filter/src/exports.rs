//! The functions the host calls: the proxy-wasm 0.2.1 exports, and the one table of the
//! contexts they reach.
//!
//! Envoy's host skips every callback a module does not export, so what is exported here is
//! what every stream pays for, one VM entry each. The per-stream ones, and why each is here:
//!
//! | export                      | build       | needed by                                      |
//! | --------------------------- | ----------- | ---------------------------------------------- |
//! | `proxy_on_context_create`   | both        | which root (configuration) a stream routes by  |
//! | `proxy_on_request_headers`  | both        | strip, decide, mark, count, mint               |
//! | `proxy_on_delete`           | both        | forgetting a root Envoy removed (and, in the   |
//! |                             |             | `responses` build, a stream that never saw its |
//! |                             |             | response headers)                              |
//! | `proxy_on_response_headers` | `responses` | per-variant response metrics (`:status`, time) |
//!
//! Envoy creates a stream's context right before its request headers (`decodeHeaders` calls
//! `onCreate` and then `onRequestHeaders`), so the default build keeps no table of streams:
//! only the one just created and its root. A minted cookie needs no response callback: the
//! filter puts it in filter state and the route writes it (see `linnet_core::decide::
//! COOKIE_PROPERTY`). Everything else per stream (bodies, trailers, `proxy_on_done`,
//! `proxy_on_log`) is left unexported: the host then goes on as if it had answered Continue
//! (or true). A callback for a context id this module does not know is ignored, never a panic.
// `#[no_mangle]` is what makes a function a wasm export, and the lint counts it as unsafe
// (two exports of one name would clash at link time). These are the only such items.
#![allow(unsafe_code)]

use crate::abi;
use crate::root::Root;
use std::cell::RefCell;
#[cfg(feature = "responses")]
use std::collections::HashMap;

/// The host's `Continue` for a stream callback (`FilterHeadersStatus::Continue`).
const CONTINUE: u32 = 0;

/// Every context of this VM, by the id the host gave it.
#[derive(Default)]
struct Contexts {
    /// One per plugin configuration in this VM: nearly always one, so a list beats a hash.
    roots: Vec<(u32, Root)>,
    /// The stream created last, and its root's id.
    created: Option<(u32, u32)>,
    /// Routed streams waiting for their response headers, with their root's id and the time
    /// their request headers arrived (the `responses` build).
    #[cfg(feature = "responses")]
    streams: HashMap<u32, Waiting>,
}

#[cfg(feature = "responses")]
struct Waiting {
    root: u32,
    routed: crate::http::Routed,
    started_ns: u64,
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
    with(|c| c.root_mut(id).map(f)).flatten()
}

// === impl Contexts ===

impl Contexts {
    fn root(&self, id: u32) -> Option<&Root> {
        self.roots.iter().find(|(i, _)| *i == id).map(|(_, r)| r)
    }

    fn root_mut(&mut self, id: u32) -> Option<&mut Root> {
        self.roots
            .iter_mut()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| r)
    }

    /// The root of the stream the host just created, if `stream` is that one.
    fn root_of(&self, stream: u32) -> Option<(u32, &Root)> {
        let (id, root) = self.created?;
        (id == stream).then_some(())?;
        Some((root, self.root(root)?))
    }
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
            c.roots.retain(|(id, _)| *id != context_id);
            c.roots.push((context_id, Root::default()));
        } else {
            c.created = Some((context_id, parent_id));
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
    with(|c| {
        #[cfg(feature = "responses")]
        let started_ns = crate::host::now_ns();
        let Some((root, routing)) = c
            .root_of(context_id)
            .and_then(|(id, r)| Some((id, r.routing()?)))
        else {
            return;
        };
        let routed = crate::http::route(routing);
        #[cfg(feature = "responses")]
        if let Some(routed) = routed {
            let waiting = Waiting {
                root,
                routed,
                started_ns,
            };
            c.streams.insert(context_id, waiting);
        }
        #[cfg(not(feature = "responses"))]
        let _ = (root, routed);
    });
    CONTINUE
}

#[cfg(feature = "responses")]
#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    context_id: u32,
    _headers: usize,
    _end_of_stream: u32,
) -> u32 {
    with(|c| {
        let Some(w) = c.streams.remove(&context_id) else {
            return;
        };
        if let Some(routing) = c.root(w.root).and_then(Root::routing) {
            crate::http::respond(routing, w.routed, w.started_ns);
        }
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        #[cfg(feature = "responses")]
        if c.streams.remove(&context_id).is_some() {
            return;
        }
        if c.created.is_some_and(|(id, _)| id == context_id) {
            c.created = None;
        } else {
            c.roots.retain(|(id, _)| *id != context_id);
        }
    });
}
