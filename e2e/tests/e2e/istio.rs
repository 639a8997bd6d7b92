//! The Istio WasmPlugin manifest: its `pluginConfig`, converted to JSON exactly as Istio
//! hands it to the filter, decides in a real Envoy as the config says.

use crate::{bounded, expected, users};
use linnet_e2e::{repo_root, Stack};
use serde_json::Value;

/// The manifest's document of this `kind`.
fn manifest(kind: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("envoy/istio/wasmplugin.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in envoy/istio/wasmplugin.yaml"))
}

fn wasm_plugin() -> Value {
    manifest("WasmPlugin")
}

#[test]
fn the_manifest_is_a_wasm_plugin_for_the_linnet_image() {
    let p = wasm_plugin();
    assert_eq!(p["apiVersion"], "extensions.istio.io/v1alpha1");
    let spec = &p["spec"];
    let url = spec["url"].as_str().unwrap();
    assert!(
        url.starts_with("oci://") && url.ends_with("/linnet:0.1.0"),
        "url {url}"
    );
    assert!(spec["selector"]["matchLabels"].is_object(), "no selector");
    // Routing must be decided before the router, so the plugin may not sit after it: any phase
    // Istio offers is before the router, but the manifest must say which on purpose.
    let phase = spec["phase"].as_str().unwrap_or("UNSPECIFIED_PHASE");
    assert!(
        ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"].contains(&phase),
        "phase {phase}"
    );
    assert!(spec["pluginConfig"]["rollouts"].is_array());
}

#[test]
fn the_manifest_plugin_config_decides_as_written() {
    let pc = wasm_plugin()["spec"]["pluginConfig"].clone();
    let rollout = &pc["rollouts"][0];
    let name = rollout["name"].as_str().unwrap();
    let salt = rollout["salt"].as_str().unwrap_or(name);
    let weight = rollout["weight"].as_f64().unwrap();
    let authority = rollout["match"]["authority"]
        .as_str()
        .unwrap()
        .trim_start_matches("*.");
    let header = rollout["stickiness"][0]["header"].as_str().unwrap();
    let cohort_canary = rollout["cohorts"]["canary"][0].as_str().unwrap();
    let cohort_stable = rollout["cohorts"]["stable"][0].as_str().unwrap();
    let path = rollout["match"]["path_prefix"].as_str().unwrap_or("/");

    let mut stack = Stack::start(&pc).unwrap();
    let mut ask = |key: &str| {
        let req = linnet_e2e::http::Request::get(path)
            .host(authority)
            .header(header, key);
        linnet_e2e::served_by(&stack.send(&req).unwrap()).unwrap()
    };
    assert_eq!(ask(cohort_canary), "canary");
    assert_eq!(ask(cohort_stable), "stable");
    let mut canary = 0;
    bounded(users(0..500), |u| {
        let got = ask(&u);
        assert_eq!(got, expected(salt, u.as_bytes(), weight), "{u}");
        canary += usize::from(got == "canary");
    });
    assert!(
        canary > 0 || weight == 0.0,
        "no canary user at weight {weight}"
    );
}

/// Without a response callback in the filter, the VirtualService's routes write a minted
/// cookie from filter state (`headers.response.add`), every route of the rollout's host.
#[test]
fn the_manifest_routes_write_minted_cookies() {
    let vs = manifest("VirtualService");
    let routes = vs["spec"]["http"].as_array().unwrap();
    assert!(routes.len() >= 2, "{routes:?}");
    for (i, route) in routes.iter().enumerate() {
        assert_eq!(
            route["headers"]["response"]["add"]["set-cookie"].as_str(),
            Some(linnet_core::decide::SET_COOKIE_VALUE),
            "http route {i} does not write the minted cookie"
        );
    }
}
