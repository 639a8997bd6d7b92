//! Linnet's proxy-wasm filter for Envoy: a thin adapter that reads request headers through
//! the host, lets `linnet-core` decide, and writes the result back. Every rule lives in core.
//!
//! It never panics on the request path: host calls go through `abi`, which turns every status
//! into a `Result`, the exports ignore context ids they do not know, clippy denies
//! `unwrap`/`expect`/`panic`, and a panic hook logs at critical should a dependency ever panic
//! (a trapped VM would fail every later request).
// Only `abi` (calls into the host) and `exports` (the host's calls in) use unsafe code.
#![deny(unsafe_code)]

mod abi;
mod exports;
mod host;
mod http;
mod metrics;
mod root;
mod sync;
