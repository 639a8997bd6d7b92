//! The configs that ship in `envoy/`: valid for Envoy as they are, with Linnet's stats tags,
//! and with plugin configurations the core accepts.

use linnet_core::metrics::STATS_TAGS;
use linnet_core::PluginConfig;
use linnet_e2e::envoy::{validate, EnvoyConfig};
use linnet_e2e::repo_root;
use serde_json::Value;

/// Every Envoy config in `envoy/`, as paths relative to the repo root.
fn shipped() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.ends_with(".yaml").then(|| format!("envoy/{name}"))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected demo and bench configs in envoy/, found {files:?}"
    );
    files
}

#[test]
fn every_config_carries_exactly_the_core_stats_tags() {
    for file in shipped() {
        let c = EnvoyConfig::load(&file).unwrap();
        let tags: Vec<(String, String)> = c
            .json()
            .pointer("/stats_config/stats_tags")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{file}: no stats_config.stats_tags"))
            .iter()
            .map(|t| {
                (
                    t["tag_name"].as_str().unwrap_or("").to_owned(),
                    t["regex"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = STATS_TAGS
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect();
        assert_eq!(
            tags, want,
            "{file}: stats_tags differ from linnet_core::metrics::STATS_TAGS"
        );
    }
}

#[test]
fn every_config_passes_envoy_validate() {
    for w in linnet_e2e::Wasm::ALL {
        linnet_e2e::wasm(w).unwrap();
    }
    for file in shipped() {
        let (ok, out) = validate(&file).unwrap();
        assert!(ok, "envoy --mode validate -c {file} failed:\n{out}");
    }
}

#[test]
fn every_plugin_configuration_compiles() {
    let mut n = 0;
    for file in shipped() {
        let Some(text) = EnvoyConfig::load(&file).unwrap().plugin_config_text() else {
            continue;
        };
        let config =
            PluginConfig::from_json(text.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"));
        config.compile(0).unwrap_or_else(|e| panic!("{file}: {e}"));
        n += 1;
    }
    assert!(
        n >= 2,
        "expected the demo and the linnet bench config to carry a plugin configuration"
    );
}

#[test]
fn the_demo_uses_the_documented_defaults() {
    let c = EnvoyConfig::load("envoy/demo.yaml").unwrap();
    let j = c.json();
    let port = |p: &str| j.pointer(p).and_then(Value::as_u64);
    assert_eq!(port("/admin/address/socket_address/port_value"), Some(9901));
    assert_eq!(
        port("/static_resources/listeners/0/address/socket_address/port_value"),
        Some(10000)
    );
    let clusters: Vec<&str> = j["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for want in [
        "checkout-stable",
        "checkout-canary",
        "checkout-canary-shadow",
    ] {
        assert!(
            clusters.contains(&want),
            "demo.yaml has no cluster {want}: {clusters:?}"
        );
    }
    let text = serde_json::to_string(j).unwrap();
    assert!(
        text.contains("\"cluster_header\":\"x-linnet-mirror\""),
        "no mirror policy on the header"
    );
    assert!(text.contains("envoy.wasm.runtime.v8"));
}
