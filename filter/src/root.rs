//! The root context: parses and compiles the plugin configuration once, in `on_configure`.

use crate::abi;
use crate::http::Http;
use crate::metrics::Metrics;
use linnet_core::{PluginConfig, Snapshot};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::rc::Rc;

/// A compiled configuration and the metric ids that go with it, shared by every request.
pub struct Active {
    pub snapshot: Snapshot,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct Root {
    active: Option<Rc<Active>>,
}

// === impl Active ===

impl Active {
    fn from_config(bytes: &[u8]) -> Result<Active, String> {
        let config = PluginConfig::from_json(bytes).map_err(|e| e.to_string())?;
        let snapshot = config.compile(0).map_err(|e| e.to_string())?;
        let metrics = Metrics::define(&snapshot)?;
        Ok(Active { snapshot, metrics })
    }
}

// === impl Root ===

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match abi::plugin_configuration() {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                abi::log(
                    abi::ERROR,
                    &format!("linnet: cannot read the plugin configuration: host status {status}"),
                );
                return false;
            }
        };
        // An absent configuration means no rollouts: the filter passes traffic through.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        match Active::from_config(bytes) {
            Ok(active) => {
                abi::log(
                    abi::INFO,
                    &format!(
                        "linnet: configured {} rollout(s)",
                        active.snapshot.rollouts.len()
                    ),
                );
                self.active = Some(Rc::new(active));
                true
            }
            Err(e) => {
                abi::log(
                    abi::ERROR,
                    &format!("linnet: invalid plugin configuration: {e}"),
                );
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The SDK panics on `None`, so a context without configuration passes traffic through.
        Some(Box::new(Http::new(self.active.clone())))
    }
}
