//! The baselines Linnet's load benchmarks compare against, so that what the VM and the routing
//! mechanism cost is not charged to Linnet's own work.
//!
//! - No plugin configuration: a filter that does nothing on every request (the cost of a wasm
//!   filter in Envoy at all).
//! - Plugin configuration `reroute`: on every request it writes `x-linnet-variant: stable` and
//!   calls `clear_route_cache`, and nothing else. That is the least any filter pays to choose
//!   the upstream through a header, as the issue asks Linnet to (Envoy has matched the route
//!   before the filter chain runs, so the route is matched a second time).
#![forbid(unsafe_code)]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { reroute: false }) });
}}

struct Root {
    reroute: bool,
}

struct Baseline {
    reroute: bool,
}

impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match String::from_utf8_lossy(&config).trim() {
            "" => self.reroute = false,
            "reroute" => self.reroute = true,
            other => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!("noop: configuration must be empty or \"reroute\", not {other:?}"),
                );
                return false;
            }
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Baseline {
            reroute: self.reroute,
        }))
    }
}

impl Context for Baseline {}
impl HttpContext for Baseline {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.reroute {
            let _ = hostcalls::set_map_value(
                MapType::HttpRequestHeaders,
                "x-linnet-variant",
                Some("stable"),
            );
            let _ = hostcalls::call_foreign_function("clear_route_cache", None);
        }
        Action::Continue
    }
}
