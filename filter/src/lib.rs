//! Linnet's proxy-wasm filter for Envoy: a thin adapter that reads request headers through
//! the host, lets `linnet-core` decide, and writes the result back. Every rule lives in core.
//!
//! It never panics on the request path: host calls go through `abi`, which turns every status
//! into a `Result`, clippy denies `unwrap`/`expect`/`panic`, and a panic hook logs at critical should a
//! dependency ever panic (a trapped VM would fail every later request).
// Only `abi` uses unsafe code, to call the host without the SDK's panicking wrappers.
#![deny(unsafe_code)]

mod abi;
mod host;
mod http;
mod metrics;
mod root;
mod sync;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        abi::log(abi::CRITICAL, &format!("linnet: panic: {info}"));
    }));
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::default()) });
}}
