//! A bad plugin configuration is refused: `on_configure` fails, and Envoy will not start with
//! it, saying which field is wrong.

use linnet_e2e::envoy::{run_to_exit, validate, EnvoyConfig};
use serde_json::json;
use std::time::Duration;

fn refused(plugin_config: &serde_json::Value, field: &str) {
    let mut c = EnvoyConfig::demo(9, 9).unwrap();
    c.plugin_config(&plugin_config.to_string());
    linnet_e2e::wasm(linnet_e2e::Wasm::Filter).unwrap();
    let (status, log) = run_to_exit(&c, Duration::from_secs(30)).unwrap();
    assert!(
        !status.success(),
        "Envoy exited 0 with a bad plugin configuration:\n{log}"
    );
    assert!(
        log.contains("invalid plugin configuration"),
        "no 'invalid plugin configuration' in:\n{log}"
    );
    assert!(
        log.contains(field),
        "the log does not name {field:?}:\n{log}"
    );

    // `envoy --mode validate` runs on_configure too, so a config check in CI catches it.
    let dir = std::env::temp_dir().join(format!(
        "linnet-e2e-bad-{}-{}",
        std::process::id(),
        field.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("bad-{}.json", field.replace(['[', ']', '.'], "_")));
    c.write(&path).unwrap();
    let (ok, out) = validate(&path.to_string_lossy()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !ok,
        "envoy --mode validate accepted a bad plugin configuration:\n{out}"
    );
    assert!(
        out.contains(field),
        "validate does not name {field:?}:\n{out}"
    );
}

#[test]
fn envoy_refuses_an_out_of_range_weight_naming_the_field() {
    refused(
        &json!({ "rollouts": [{ "name": "checkout", "weight": 150 }] }),
        "rollouts[0].weight",
    );
}

#[test]
fn envoy_refuses_an_unknown_field_naming_it() {
    refused(
        &json!({ "rollouts": [{ "name": "a" }, { "name": "b", "wieght": 20 }] }),
        "wieght",
    );
}

#[test]
fn envoy_refuses_a_header_that_is_linnets_own() {
    let cfg = json!({ "rollouts": [{ "name": "checkout", "stickiness": [{ "header": "x-linnet-variant" }] }] });
    refused(&cfg, "rollouts[0]");
}
