//! A proxy-wasm host on wasmtime that loads Linnet's release `.wasm` and drives scripted
//! host conversations: the integration tests in `tests/` talk to the real filter through it.
//!
//! It implements the proxy-wasm 0.2.1 host ABI and Envoy's WASI subset. All state lives in
//! the `wasmtime::Store` of each [`Vm`], so tests run in parallel; VMs that should see one
//! Envoy process's shared data get the same [`SharedData`].
//!
//! ```no_run
//! use linnet_wasm_tests::{wasm_path, Vm};
//! # fn main() -> anyhow::Result<()> {
//! let mut vm = Vm::load(&wasm_path()?)?;
//! vm.start_vm("")?;
//! assert!(vm.configure(r#"{"rollouts":[{"name":"checkout","weight":20}]}"#)?);
//! let mut req = vm.http()?;
//! req.request_headers(&[(":authority", "checkout.local"), (":path", "/"), ("x-user-id", "u1")])?;
//! let variant = req.request_header("x-linnet-variant");
//! req.done()?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod abi;
mod shared;
mod state;
mod vm;

pub use shared::SharedData;
pub use state::{
    deserialize_map, serialize_map, Headers, HttpCall, LocalResponse, LogLevel, LogLine, MapRead,
    Metric, MetricKind, Status, StreamCall,
};
pub use vm::{exported_functions, Action, Http, Vm};

use anyhow::Result;
pub use linnet_testkit::Wasm;
use std::path::PathBuf;

/// The filter under test: `$LINNET_WASM`, else `<workspace>/dist/linnet.wasm` (refused when
/// older than its sources).
pub fn wasm_path() -> Result<PathBuf> {
    path(Wasm::Filter)
}

/// Any `.wasm` that `make wasm` builds (the `responses` build, the baselines), refused when
/// older than its sources.
pub fn path(wasm: Wasm) -> Result<PathBuf> {
    wasm.path().map_err(anyhow::Error::msg)
}
