//! The baselines Linnet's load benchmarks compare against, so that what the VM, a header read
//! and the routing mechanism cost is not charged to Linnet's own work.
//!
//! - No plugin configuration: a filter that does nothing on every request (the cost of a wasm
//!   filter in Envoy at all).
//! - Plugin configuration `key`: on every request it reads one request header, `x-user-id`,
//!   and nothing else. No sticky filter can do less: it must read the user's key. Any host call
//!   that returns data also costs the host a call back into the guest's allocator.
//! - Plugin configuration `reroute`: on every request it writes `x-linnet-variant: stable` and
//!   calls `clear_route_cache`, and nothing else. That is the least any filter pays to choose
//!   the upstream through a header, as Linnet does (Envoy has matched the route
//!   before the filter chain runs, so the route is matched a second time).
#![forbid(unsafe_code)]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: Mode::Noop }) });
}}

#[derive(Clone, Copy)]
enum Mode {
    Noop,
    Key,
    Reroute,
}

struct Root {
    mode: Mode,
}

struct Baseline {
    mode: Mode,
}

impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.mode = match String::from_utf8_lossy(&config).trim() {
            "" => Mode::Noop,
            "key" => Mode::Key,
            "reroute" => Mode::Reroute,
            other => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!(
                        "noop: configuration must be empty, \"key\" or \"reroute\", not {other:?}"
                    ),
                );
                return false;
            }
        };
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Baseline { mode: self.mode }))
    }
}

impl Context for Baseline {}
impl HttpContext for Baseline {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match self.mode {
            Mode::Noop => {}
            Mode::Key => {
                let key = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-user-id");
                // Kept from being optimised away; the value itself is not used.
                std::hint::black_box(key.ok());
            }
            Mode::Reroute => {
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "x-linnet-variant",
                    Some("stable"),
                );
                let _ = hostcalls::call_foreign_function("clear_route_cache", None);
            }
        }
        Action::Continue
    }
}
