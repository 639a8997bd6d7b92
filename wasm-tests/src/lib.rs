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
pub use vm::{Action, Http, Vm};

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The filter under test: `$LINNET_WASM`, else `<workspace>/dist/linnet.wasm`.
pub fn wasm_path() -> Result<PathBuf> {
    resolve(std::env::var_os("LINNET_WASM").map_or_else(|| dist("linnet.wasm"), PathBuf::from))
}

/// The benchmarks' baseline filter, `<workspace>/dist/noop.wasm`.
pub fn baseline_wasm_path() -> Result<PathBuf> {
    resolve(dist("noop.wasm"))
}

fn dist(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dist")
        .join(name)
}

fn resolve(path: PathBuf) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "the filter is not built: {} is missing; run `make wasm` to build it (or set LINNET_WASM)",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_wasm_says_how_to_build_it() {
        let err = resolve(PathBuf::from("/nonexistent/linnet.wasm")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("run `make wasm` to build it"), "{message}");
        assert!(message.contains("/nonexistent/linnet.wasm"), "{message}");
    }
}
