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
//! | `proxy_on_response_headers` | `responses` | per-variant response metrics (`:status`, time) |
//! | `proxy_on_delete`           | `responses` | forgetting a stream that never saw its         |
//! |                             |             | response headers, and a root Envoy removed     |
//!
//! Envoy creates a stream's context right before its request headers (`decodeHeaders` calls
//! `onCreate` and then `onRequestHeaders`), so the default build keeps no table of streams:
//! only the one just created and its root. A minted cookie needs no response callback: the
//! filter puts it in filter state and the route writes it (see `linnet_core::decide::
//! COOKIE_PROPERTY`). Everything else per stream (bodies, trailers, `proxy_on_done`,
//! `proxy_on_log`) is left unexported: the host then goes on as if it had answered Continue
//! (or true). A callback for a context id this module does not know is ignored, never a panic.
//!
//! Without `proxy_on_delete` (Envoy calls it for every stream too, not only for roots), the
//! default build does not hear that Envoy removed a root (a replaced plugin configuration).
//! It keeps at most [`MAX_ROOTS`] and forgets the least recently active one to take a new one:
//! a removed root gets neither streams nor ticks, and every live one ticks (see `Root`), so it
//! is always a removed one that goes unless more than [`MAX_ROOTS`] configurations are live in
//! one VM, which is logged.
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

/// Most roots (plugin configurations) one VM keeps; see the module's documentation.
pub const MAX_ROOTS: usize = 8;

/// Every context of this VM, by the id the host gave it.
#[derive(Default)]
struct Contexts {
    /// One per plugin configuration in this VM, nearly always one (so a list beats a hash),
    /// each with the `activity` count of its last stream or tick.
    roots: Vec<(u32, Root, u64)>,
    /// Counts streams created and ticks, to tell which root was active last.
    activity: u64,
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
        self.roots.iter().find(|r| r.0 == id).map(|r| &r.1)
    }

    /// The root `id`, marked active now.
    fn root_mut(&mut self, id: u32) -> Option<&mut Root> {
        self.activity += 1;
        let now = self.activity;
        let r = self.roots.iter_mut().find(|r| r.0 == id)?;
        r.2 = now;
        Some(&mut r.1)
    }

    /// A new root context; past [`MAX_ROOTS`], the least recently active one is forgotten.
    fn add_root(&mut self, id: u32) {
        self.roots.retain(|r| r.0 != id);
        if self.roots.len() >= MAX_ROOTS {
            if let Some(oldest) = (0..self.roots.len()).min_by_key(|&i| self.roots[i].2) {
                let (gone, _, _) = self.roots.swap_remove(oldest);
                abi::log(
                    abi::WARN,
                    &format!("linnet: {MAX_ROOTS} plugin configurations in this VM already; forgot the least recently active one (context {gone}), which Envoy has most likely removed"),
                );
            }
        }
        self.activity += 1;
        self.roots.push((id, Root::default(), self.activity));
    }

    /// Envoy removed root `id` (only the `responses` build hears of it).
    #[cfg(feature = "responses")]
    fn remove_root(&mut self, id: u32) {
        self.roots.retain(|r| r.0 != id);
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
            c.add_root(context_id);
        } else if c.root_mut(parent_id).is_some() {
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

#[cfg(feature = "responses")]
#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        if c.streams.remove(&context_id).is_some() {
            return;
        }
        if c.created.is_some_and(|(id, _)| id == context_id) {
            c.created = None;
        } else {
            c.remove_root(context_id);
        }
    });
}
