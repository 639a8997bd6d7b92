//! What every conversation needs: a configured VM and one request/response round trip.

use linnet_wasm_tests::{path, Action, LogLevel, Vm, Wasm};

pub const AUTHORITY: &str = "checkout.local";
pub const VARIANT: &str = "x-linnet-variant";
pub const MIRROR: &str = "x-linnet-mirror";

/// A started VM of the default build that accepted `config`.
pub fn vm(config: &str) -> Vm {
    vm_of(Wasm::Filter, config)
}

/// A started VM of `build` that accepted `config`, behind a route that writes a minted cookie
/// as the shipped configurations do (`linnet_core::decide::SET_COOKIE_VALUE`).
pub fn vm_of(build: Wasm, config: &str) -> Vm {
    let mut vm = Vm::load(&path(build).unwrap()).unwrap();
    vm.route_response_header("set-cookie", linnet_core::decide::SET_COOKIE_VALUE);
    assert!(vm.start_vm("").unwrap());
    assert!(
        vm.configure(config).unwrap(),
        "config rejected: {:?}",
        vm.logs()
    );
    vm
}

/// The one-rollout configuration most tests start from: `checkout` on `checkout.local`,
/// sticky on `x-user-id`, with `extra` JSON fields added to (or replacing the match and
/// stickiness of) the rollout. It sets `mark_stable`, so that every decision can be read from
/// the routing header; `marking.rs` tests the default, which leaves stable requests untouched.
pub fn checkout(weight: &str, extra: &str) -> String {
    checkout_unmarked(weight, extra).replacen('{', r#"{"mark_stable":true,"#, 1)
}

/// `checkout` with the default `mark_stable: false`, as users run it.
pub fn checkout_unmarked(weight: &str, extra: &str) -> String {
    let mut fields = vec![
        r#""name":"checkout""#.to_owned(),
        format!(r#""weight":{weight}"#),
    ];
    if !extra.contains(r#""match""#) {
        fields.push(format!(
            r#""match":{{"authority":"{AUTHORITY}","path_prefix":"/"}}"#
        ));
    }
    if !extra.contains(r#""stickiness""#) {
        fields.push(r#""stickiness":[{"header":"x-user-id"}]"#.to_owned());
    }
    if !extra.is_empty() {
        fields.push(extra.to_owned());
    }
    format!(r#"{{"rollouts":[{{{}}}]}}"#, fields.join(","))
}

/// What one request looked like after the filter.
#[derive(Debug)]
pub struct Seen {
    pub variant: Option<String>,
    pub mirror: Option<String>,
    pub request: Vec<(Vec<u8>, Vec<u8>)>,
    pub set_cookies: Vec<String>,
}

/// Request headers in, response `status` back, stream done; asserts both callbacks continue.
pub fn round_trip_raw(vm: &mut Vm, headers: &[(&str, &[u8])], status: &str) -> Seen {
    let mut req = vm.http().unwrap();
    assert_eq!(req.request_headers(headers).unwrap(), Action::Continue);
    let variant = req.request_header_str(VARIANT);
    let mirror = req.request_header_str(MIRROR);
    let request = req.request_header_map();
    assert_eq!(
        req.response_headers(&[(":status", status)]).unwrap(),
        Action::Continue
    );
    let set_cookies = req
        .response_header_values("set-cookie")
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap())
        .collect();
    req.done().unwrap();
    Seen {
        variant,
        mirror,
        request,
        set_cookies,
    }
}

pub fn round_trip(vm: &mut Vm, headers: &[(&str, &str)]) -> Seen {
    let raw: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    round_trip_raw(vm, &raw, "200")
}

/// A request for `user` on the checkout authority.
pub fn user(vm: &mut Vm, user: &str) -> Seen {
    round_trip(
        vm,
        &[
            (":authority", AUTHORITY),
            (":path", "/"),
            ("x-user-id", user),
        ],
    )
}

/// What linnet-core says the bucket decision for `key` is.
pub fn expected(salt: &str, key: &[u8], weight_bp: u16) -> &'static str {
    if linnet_core::bucket(salt.as_bytes(), key) < weight_bp {
        "canary"
    } else {
        "stable"
    }
}

/// The first keys `user-0`, `user-1`, … whose bucket (salt `checkout`) is canary at
/// `weight_bp` (`canary = true`) or stable.
pub fn keys(canary: bool, weight_bp: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|k| (expected("checkout", k.as_bytes(), weight_bp) == "canary") == canary)
        .take(n)
        .collect()
}

/// No trap, nothing at critical level: the filter is alive.
pub fn assert_healthy(vm: &Vm) {
    assert!(vm.trapped().is_none(), "trapped: {:?}", vm.trapped());
    assert!(
        vm.logs_at(LogLevel::Critical).is_empty(),
        "critical logs: {:?}",
        vm.logs()
    );
}
