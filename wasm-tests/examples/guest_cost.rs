//! The filter's own work per request, in guest wasm instructions (wasmtime fuel), callback by
//! callback: what Envoy's instruction counts (scripts/bench-envoy-instructions.sh) cannot
//! attribute, since V8's compiled code has no symbols. Same plugin configuration and request
//! mix as the Envoy benchmarks (envoy/bench-linnet.yaml, distinct `x-user-id` per request).
//! Exact and repeatable: it counts, it does not time.
//!
//!     cargo run -p linnet-wasm-tests --example guest_cost     (after `make wasm`; fuel does not
//!     depend on how the host is built, so the debug build serves)
use anyhow::{anyhow, Context as _, Result};
use linnet_wasm_tests::{path, Vm, Wasm};

const REQUESTS: u64 = 2_000;

/// The plugin configuration of envoy/bench-linnet.yaml's Linnet filter.
fn bench_config() -> Result<String> {
    let file = linnet_testkit::repo_root().join("envoy/bench-linnet.yaml");
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let yaml: serde_json::Value = serde_saphyr::from_str(&text)?;
    let mut found = None;
    find_wasm_config(&yaml, &mut found);
    found.ok_or_else(|| anyhow!("{}: no wasm plugin configuration", file.display()))
}

fn find_wasm_config(v: &serde_json::Value, found: &mut Option<String>) {
    if let Some(value) = v
        .pointer("/config/configuration/value")
        .and_then(serde_json::Value::as_str)
    {
        *found = Some(value.to_owned());
        return;
    }
    match v {
        serde_json::Value::Object(m) => m.values().for_each(|x| find_wasm_config(x, found)),
        serde_json::Value::Array(a) => a.iter().for_each(|x| find_wasm_config(x, found)),
        _ => {}
    }
}

/// Fuel per request for each callback: context create, request headers, response headers,
/// the stream's end (done, log, delete).
fn measure(build: Wasm, config: &str) -> Result<[u64; 4]> {
    let mut vm = Vm::load(&path(build)?)?;
    vm.start_vm("")?;
    if !vm.configure(config)? {
        return Err(anyhow!("{build:?} refused the bench configuration"));
    }
    let mut spent = [0u64; 4];
    for i in 0..REQUESTS {
        let user = format!("user-{i}");
        let t0 = vm.fuel_used();
        let mut req = vm.http()?;
        let t1 = req.vm().fuel_used();
        req.request_headers(&[
            (":authority", "checkout.local"),
            (":path", "/"),
            (":method", "GET"),
            (":scheme", "http"),
            ("user-agent", "bench"),
            ("x-user-id", user.as_str()),
            ("x-request-id", "6f1c1a3e-5b0e-4d0c-9a43-0d9f7a1f3b21"),
        ])?;
        let t2 = req.vm().fuel_used();
        req.response_headers(&[(":status", "200")])?;
        let t3 = req.vm().fuel_used();
        req.done()?;
        let t4 = vm.fuel_used();
        for (s, d) in spent.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
            *s += d;
        }
    }
    Ok(spent.map(|s| s / REQUESTS))
}

fn main() -> Result<()> {
    let config = bench_config()?;
    println!("guest wasm instructions per request (wasmtime fuel), {REQUESTS} requests, envoy/bench-linnet.yaml");
    println!(
        "{:<18} {:>8} {:>10} {:>10} {:>6} {:>7}",
        "build", "create", "request", "response", "end", "total"
    );
    for (name, build) in [
        ("linnet", Wasm::Filter),
        ("linnet-responses", Wasm::Responses),
        ("lean", Wasm::Lean),
    ] {
        let c = measure(build, &config)?;
        println!(
            "{name:<18} {:>8} {:>10} {:>10} {:>6} {:>7}",
            c[0],
            c[1],
            c[2],
            c[3],
            c.iter().sum::<u64>()
        );
    }
    Ok(())
}
