//! One HTTP stream: strip Linnet's headers, decide, mark the request and have its route matched
//! again when the decision needs it, count. All of it in `proxy_on_request_headers`: the
//! default build enters the VM for nothing else per stream (see `exports`).

use crate::abi::{self, Map};
use crate::host::Headers;
use crate::root::Routing;
use linnet_core::decide::COOKIE_PROPERTY;
use linnet_core::Variant;
use std::cell::Cell;

thread_local! {
    /// Logged once per VM: an Envoy without the foreign function still routes correctly on
    /// versions that clear the route cache on header changes.
    static NO_CLEAR_ROUTE_CACHE: Cell<bool> = const { Cell::new(false) };
    /// Logged once per VM: a host that refuses stream properties cannot hand out cookies.
    static NO_PROPERTY: Cell<bool> = const { Cell::new(false) };
}

/// The rollout a request was routed by (its index in the snapshot) and its variant.
pub type Routed = (usize, Variant);

fn set_request_header(name: &str, value: &[u8]) {
    let _ = abi::set_header(Map::Request, name, value);
}

fn remove_request_header(name: &str) {
    let _ = abi::remove_header(Map::Request, name);
}

/// Logs `message` the first time `flag` is raised in this VM.
fn warn_once(flag: &'static std::thread::LocalKey<Cell<bool>>, message: impl FnOnce() -> String) {
    if !flag.with(|c| c.replace(true)) {
        abi::log(abi::WARN, &message());
    }
}

/// Asks Envoy to match the route again now that the request's headers changed.
fn clear_route_cache() {
    if let Err(status) = abi::call_foreign("clear_route_cache") {
        warn_once(&NO_CLEAR_ROUTE_CACHE, || {
            format!("linnet: clear_route_cache unavailable (host status {status}); relying on the host to re-route")
        });
    }
}

/// Hands a minted key to the route, which writes it on the response as `set-cookie`.
fn mint(value: &str) {
    if let Err(status) = abi::set_property(COOKIE_PROPERTY, value.as_bytes()) {
        warn_once(&NO_PROPERTY, || {
            format!("linnet: cannot set the stream property {COOKIE_PROPERTY} (host status {status}); anonymous users get no cookie")
        });
    }
}

/// The request's headers arrived (`proxy_on_request_headers`): route it by `routing`.
pub fn route(routing: &Routing) -> Option<Routed> {
    let snap = &routing.snapshot;
    let headers = Headers::request();
    // A client never picks its variant or a mirror target by sending Linnet's headers,
    // whether or not its request belongs to a rollout.
    let mut stripped = 0;
    let names = snap.linnet_headers();
    for (name, sent) in names.into_iter().zip(headers.has_each(names)) {
        if sent {
            remove_request_header(name);
            stripped += 1;
        }
    }
    routing.metrics.stripped(stripped);
    let mut removed = stripped > 0;

    let authority = headers.get(":authority").unwrap_or_default();
    let path = headers.get(":path").unwrap_or_default();
    let found = snap
        .decide(routing.stale.get(), authority, path, &headers)
        .and_then(|(i, r, d)| Some((i, r, d, routing.metrics.rollouts.get(i)?)));
    let Some((i, rollout, decision, metrics)) = found else {
        // Envoy matched the route with the client's copies in place: match it without them.
        if removed {
            clear_route_cache();
        }
        return None;
    };
    // The override and its token are for Linnet, not for the upstream.
    for name in rollout.override_.iter().flat_map(|o| o.headers()) {
        if headers.get(name).is_some() {
            remove_request_header(name);
            removed = true;
        }
    }
    if decision.override_rejected {
        metrics.override_rejected();
    }

    // The mirror header needs no new route match: the router reads it when it sends.
    if let Some(cluster) = &decision.mirror {
        set_request_header(&snap.mirror_header, cluster.as_bytes());
        metrics.mirrored();
    }
    // Envoy matched the route on the request as it arrived. A stable request that arrived
    // without Linnet's headers and is not marked is still that request: its route stands.
    let marked = snap.marks(decision.variant);
    if marked {
        set_request_header(&snap.routing_header, decision.variant.as_str().as_bytes());
    }
    if marked || removed {
        clear_route_cache();
    }
    if let Some(cookie) = &decision.mint {
        mint(&cookie.header_value());
    }
    metrics.request(decision.variant, decision.reason);
    Some((i, decision.variant))
}

/// The response's headers arrived for a request routed as `routed` (the `responses` build's
/// `proxy_on_response_headers`): count its status class and time.
#[cfg(feature = "responses")]
pub fn respond(routing: &Routing, (rollout, variant): Routed, started_ns: u64) {
    use linnet_core::metrics::class_index;
    let Some(metrics) = routing.metrics.rollouts.get(rollout) else {
        return;
    };
    let class = abi::header(Map::Response, ":status")
        .ok()
        .flatten()
        .and_then(|s| std::str::from_utf8(&s).ok()?.trim().parse::<u32>().ok())
        .and_then(class_index);
    let elapsed_ms = crate::host::now_ns().saturating_sub(started_ns) / 1_000_000;
    metrics.response(variant, class, elapsed_ms);
}
