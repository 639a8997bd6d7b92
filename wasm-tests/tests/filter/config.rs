//! Plugin configuration: a good one is taken, a bad one is refused with the field named.

use crate::support::{assert_healthy, round_trip, vm, AUTHORITY, VARIANT};
use linnet_wasm_tests::{wasm_path, LogLevel, Vm};

const FULL: &str = r#"{
  "routing_header": "x-linnet-variant",
  "mirror_header": "x-linnet-mirror",
  "kill_switch": false,
  "rollouts": [{
    "name": "checkout",
    "match": {"authority": "checkout.local", "path_prefix": "/"},
    "weight": 20,
    "salt": "checkout",
    "stickiness": [{"header": "x-user-id"}, {"cookie": "uid"}],
    "anonymous": {"policy": "random", "cookie": "linnet_uid", "max_age_s": 31536000},
    "cohorts": {"canary": ["alice"], "stable": ["bob"]},
    "override": {"header": "x-linnet-override", "token_header": "x-linnet-override-token", "token": "s3cret"},
    "kill_switch": false,
    "mirror": {"cluster": "checkout-canary-shadow", "percent": 100}
  }]
}"#;

fn started() -> Vm {
    let mut vm = Vm::load(&wasm_path().unwrap()).unwrap();
    assert!(vm.start_vm("").unwrap());
    vm
}

/// Configures a fresh VM with `config` and expects a refusal whose error line names `field`.
fn assert_rejected(config: &str, field: &str) {
    let mut vm = started();
    assert!(!vm.configure(config).unwrap(), "accepted: {config}");
    let errors = vm.logs_at(LogLevel::Error);
    assert!(
        errors
            .iter()
            .any(|m| m.contains("invalid plugin configuration") && m.contains(field)),
        "config {config}\nexpected an error naming {field:?}, got {errors:?}"
    );
    assert_healthy(&vm);
}

#[test]
fn full_config_is_accepted() {
    let mut vm = vm(FULL);
    assert!(vm.logs_at(LogLevel::Error).is_empty(), "{:?}", vm.logs());
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "alice"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("canary"));
    assert_healthy(&vm);
}

#[test]
fn empty_config_passes_traffic_through() {
    for config in ["", "{}", "  \n"] {
        let mut vm = vm(config);
        let seen = round_trip(
            &mut vm,
            &[
                (":authority", AUTHORITY),
                (":path", "/"),
                ("x-user-id", "u1"),
            ],
        );
        assert_eq!(seen.variant, None);
        assert_eq!(vm.foreign_calls("clear_route_cache"), 0);
        assert_healthy(&vm);
    }
}

#[test]
fn bad_configs_are_rejected_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#"{"rollouts":[],"bogus":1}"#, "bogus"),
        (r#"{"rollouts":[{"name":"a","wieght":20}]}"#, "rollouts[0]"),
        (r#"{"rollouts":[{"name":"a","wieght":20}]}"#, "wieght"),
        (
            r#"{"rollouts":[{"name":"a","match":{"host":"x"}}]}"#,
            "rollouts[0].match",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":101}]}"#,
            "rollouts[0].weight",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":-1}]}"#,
            "rollouts[0].weight",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":"NaN"}]}"#,
            "rollouts[0].weight",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":"20"}]}"#,
            "rollouts[0].weight",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":12.345}]}"#,
            "rollouts[0].weight",
        ),
        (
            r#"{"rollouts":[{"name":"a"},{"name":"b"},{"name":"a"}]}"#,
            "rollouts[2].name",
        ),
        (r#"{"rollouts":[{"name":"Checkout!"}]}"#, "rollouts[0].name"),
        (r#"{"rollouts":[{"name":""}]}"#, "rollouts[0].name"),
        (r#"{"routing_header":"x linnet"}"#, "routing_header"),
        (r#"{"mirror_header":"x-linnet:mirror"}"#, "mirror_header"),
        (
            r#"{"routing_header":"x-a","mirror_header":"x-a"}"#,
            "mirror_header",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"header":"x user"}]}]}"#,
            "rollouts[0].stickiness[0]",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"cookie":"a;b"}]}]}"#,
            "rollouts[0].stickiness[0]",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"query":"u"}]}]}"#,
            "rollouts[0].stickiness[0]",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"header":"x-linnet-variant"}]}]}"#,
            "rollouts[0]",
        ),
        (
            r#"{"rollouts":[{"name":"a","override":{"header":"bad header"}}]}"#,
            "rollouts[0].override.header",
        ),
        (
            r#"{"rollouts":[{"name":"a","override":{"token":""}}]}"#,
            "rollouts[0].override.token",
        ),
        (
            r#"{"rollouts":[{"name":"a","anonymous":{"policy":"sometimes"}}]}"#,
            "rollouts[0].anonymous",
        ),
        (
            r#"{"rollouts":[{"name":"a","cohorts":{"canary":["x"],"stable":["x"]}}]}"#,
            "rollouts[0].cohorts",
        ),
        (
            r#"{"rollouts":[{"name":"a","mirror":{"cluster":"c","percent":150}}]}"#,
            "rollouts[0].mirror.percent",
        ),
        (
            r#"{"rollouts":[{"name":"a","mirror":{"cluster":""}}]}"#,
            "rollouts[0].mirror.cluster",
        ),
        (
            r#"{"rollouts":[{"name":"a","match":{"path_prefix":"no-slash"}}]}"#,
            "rollouts[0].match.path_prefix",
        ),
        (r#"{"rollouts":{"name":"a"}}"#, "rollouts"),
        (
            r#"{"rollouts":[{"name":"a""#,
            "invalid plugin configuration",
        ),
        ("not json", "invalid plugin configuration"),
    ];
    for (config, field) in cases {
        assert_rejected(config, field);
    }
}

#[test]
fn a_rejected_reconfiguration_keeps_the_last_good_one() {
    let mut vm = vm(
        r#"{"rollouts":[{"name":"checkout","weight":100,"stickiness":[{"header":"x-user-id"}]}]}"#,
    );
    assert!(!vm
        .configure(r#"{"rollouts":[{"name":"checkout","weight":101}]}"#)
        .unwrap());
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "u1"),
        ],
    );
    assert_eq!(seen.variant.as_deref(), Some("canary"), "{:?}", vm.logs());
    assert_healthy(&vm);
}

#[test]
fn routing_header_name_is_configurable() {
    let mut vm = vm(
        r#"{"routing_header":"x-route","rollouts":[{"name":"checkout","weight":100,"stickiness":[{"header":"x-user-id"}]}]}"#,
    );
    let seen = round_trip(
        &mut vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", "u1"),
        ],
    );
    assert_eq!(seen.variant, None);
    let routed = seen
        .request
        .iter()
        .find(|(k, _)| k == b"x-route")
        .map(|(_, v)| v.as_slice());
    assert_eq!(routed, Some(&b"canary"[..]));
    assert!(!seen.request.iter().any(|(k, _)| k == VARIANT.as_bytes()));
}
