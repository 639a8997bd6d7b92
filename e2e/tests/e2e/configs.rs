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

/// Where a route gets `set-cookie` from Linnet's filter state, if it does: `response_headers_to_add`
/// on the route, its virtual host or its route configuration.
fn writes_minted_cookie(levels: &[&Value]) -> bool {
    levels.iter().any(|level| {
        level["response_headers_to_add"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| {
                h["header"]["key"].as_str() == Some("set-cookie")
                    && h["header"]["value"].as_str() == Some(linnet_core::decide::SET_COOKIE_VALUE)
                    && !h["keep_empty_value"].as_bool().unwrap_or(false)
            })
    })
}

/// The filter has no response callback: a key it mints for an anonymous user reaches the
/// client only if the route writes it. Every route behind Linnet in a shipped config does.
#[test]
fn every_route_behind_linnet_writes_minted_cookies() {
    let mut routes = 0;
    for file in shipped() {
        let c = EnvoyConfig::load(&file).unwrap();
        if c.plugin_config_text().is_none() {
            continue;
        }
        let listeners = c.json()["static_resources"]["listeners"]
            .as_array()
            .unwrap();
        for hcm in listeners
            .iter()
            .flat_map(|l| l["filter_chains"].as_array().into_iter().flatten())
            .flat_map(|fc| fc["filters"].as_array().into_iter().flatten())
            .map(|f| &f["typed_config"])
            .filter(|t| t["http_filters"].is_array())
        {
            let rc = &hcm["route_config"];
            for vh in rc["virtual_hosts"].as_array().unwrap() {
                for route in vh["routes"].as_array().unwrap() {
                    assert!(
                        writes_minted_cookie(&[route, vh, rc]),
                        "{file}: a route of virtual host {} does not add set-cookie: {:?} \
                         with keep_empty_value false",
                        vh["name"],
                        linnet_core::decide::SET_COOKIE_VALUE
                    );
                    routes += 1;
                }
            }
        }
    }
    assert!(
        routes >= 4,
        "only {routes} routes behind Linnet were checked"
    );
}
