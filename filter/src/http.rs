//! One HTTP stream: strip Linnet's headers, decide, mark the request and have its route matched
//! again when the decision needs it, count.

use crate::abi::{self, Map};
use crate::host::{self, EnvoyRequest, Headers};
use crate::root::Routing;
use linnet_core::decide::MintedCookie;
use linnet_core::metrics::class_index;
use linnet_core::Variant;
use std::cell::Cell;
use std::rc::Rc;

thread_local! {
    /// Logged once per VM: an Envoy without the foreign function still routes correctly on
    /// versions that clear the route cache on header changes.
    static NO_CLEAR_ROUTE_CACHE: Cell<bool> = const { Cell::new(false) };
}

pub struct Http {
    routing: Option<Rc<Routing>>,
    routed: Option<Routed>,
}

struct Routed {
    rollout: usize,
    variant: Variant,
    started_ns: u64,
    mint: Option<MintedCookie>,
}

fn set_request_header(name: &str, value: &[u8]) {
    let _ = abi::set_header(Map::Request, name, value);
}

fn remove_request_header(name: &str) {
    let _ = abi::remove_header(Map::Request, name);
}

/// Asks Envoy to match the route again now that the request's headers changed.
fn clear_route_cache() {
    if let Err(status) = abi::call_foreign("clear_route_cache") {
        if !NO_CLEAR_ROUTE_CACHE.with(|c| c.replace(true)) {
            abi::log(
                abi::WARN,
                &format!("linnet: clear_route_cache unavailable (host status {status}); relying on the host to re-route"),
            );
        }
    }
}

fn set_cookie_value(c: &MintedCookie) -> String {
    format!(
        "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        c.name, c.key, c.max_age_s
    )
}

// === impl Http ===

impl Http {
    pub fn new(routing: Option<Rc<Routing>>) -> Self {
        Http {
            routing,
            routed: None,
        }
    }

    /// The request's headers arrived (`proxy_on_request_headers`).
    pub fn route(&mut self) {
        let Some(routing) = self.routing.clone() else {
            return;
        };
        let snap = &routing.snapshot;

        let headers = Headers::request();
        // A client never picks its variant or a mirror target by sending Linnet's headers,
        // whether or not its request belongs to a rollout.
        let mut stripped = 0;
        for name in snap.linnet_headers() {
            if headers.get(name).is_some() {
                remove_request_header(name);
                stripped += 1;
            }
        }
        routing.metrics.stripped(stripped);
        let mut removed = stripped > 0;

        let req = EnvoyRequest {
            headers,
            now_ns: host::now_ns(),
        };
        let authority = req.headers.get(":authority").unwrap_or_default();
        let path = req.headers.get(":path").unwrap_or_default();
        let found = snap
            .decide(routing.stale.get(), authority, path, &req)
            .and_then(|(i, r, d)| Some((i, r, d, routing.metrics.rollouts.get(i)?)));
        let Some((i, rollout, decision, metrics)) = found else {
            // Envoy matched the route with the client's copies in place: match it without them.
            if removed {
                clear_route_cache();
            }
            return;
        };
        // The override and its token are for Linnet, not for the upstream.
        for name in rollout.override_.iter().flat_map(|o| o.headers()) {
            if req.headers.get(name).is_some() {
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
        metrics.request(decision.variant, decision.reason);

        self.routed = Some(Routed {
            rollout: i,
            variant: decision.variant,
            started_ns: req.now_ns,
            mint: decision.mint,
        });
    }

    /// The response's headers arrived (`proxy_on_response_headers`).
    pub fn respond(&mut self) {
        let (Some(routing), Some(routed)) = (&self.routing, self.routed.take()) else {
            return;
        };
        let Some(metrics) = routing.metrics.rollouts.get(routed.rollout) else {
            return;
        };
        let class = host::response_header(":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.trim().parse::<u32>().ok())
            .and_then(class_index);
        let elapsed_ms = host::now_ns().saturating_sub(routed.started_ns) / 1_000_000;
        metrics.response(routed.variant, class, elapsed_ms);
        if let Some(mint) = &routed.mint {
            let value = set_cookie_value(mint);
            let _ = abi::add_header(Map::Response, "set-cookie", value.as_bytes());
        }
    }
}
