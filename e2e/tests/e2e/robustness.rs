//! Hostile keys: malformed cookies, empty and 8 KB keys, non-UTF-8 bytes. Envoy must answer
//! each with a defined variant, and the VM must not trap (a trapped VM fails every later
//! request, so a normal request afterwards must still be routed by the filter).

use crate::{bounded, checkout, plugin, routing::pick};
use linnet_core::{PluginConfig, Snapshot};
use linnet_e2e::http::Request;
use linnet_e2e::{served_by, Stack};
use serde_json::json;

/// The core's own decision for these headers, as the oracle for keys whose meaning is a
/// matter of the core's parsing rules (cookies, empty values).
struct Headers<'a>(&'a [(&'a str, Vec<u8>)]);

impl linnet_core::Request for Headers<'_> {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| std::borrow::Cow::Borrowed(&v[..]))
    }
    fn entropy(&self) -> [u8; 16] {
        [0; 16]
    }
}

fn oracle(snapshot: &Snapshot, headers: &[(&str, Vec<u8>)]) -> &'static str {
    let (_, _, d) = snapshot
        .decide(false, b"checkout.local", b"/", &Headers(headers))
        .unwrap();
    d.variant.as_str()
}

#[test]
fn hostile_keys_get_a_defined_variant_and_never_trap_the_vm() {
    let cfg = plugin(checkout(50.0));
    let snapshot = PluginConfig::from_json(cfg.to_string().as_bytes())
        .unwrap()
        .compile(0)
        .unwrap();
    let mut stack = Stack::start(&cfg).unwrap();
    let vms_before = stack
        .envoy
        .stat("wasm.envoy.wasm.runtime.v8.created")
        .unwrap();

    let big = "k".repeat(8 * 1024);
    let h = |n: &'static str, v: &[u8]| (n, v.to_vec());
    let cases: Vec<Vec<(&str, Vec<u8>)>> = vec![
        vec![h("x-user-id", b"")],
        vec![h("x-user-id", big.as_bytes())],
        vec![h("x-user-id", b"\xff\xfe\xc0\x80")],
        vec![h("x-user-id", "üsér-ñ".as_bytes())],
        vec![h("cookie", b"uid")],
        vec![h("cookie", b";;;=;uid;==;")],
        vec![h("cookie", b"uid=")],
        vec![h("cookie", b"uid=\"")],
        vec![h("cookie", b"uid=\"\"")],
        vec![h("cookie", b"=uid; uid==; x")],
        vec![h("cookie", b"uid=\xff\xfe; other=1")],
        vec![h("cookie", format!("uid={big}").as_bytes())],
        vec![h("cookie", format!("pad={big}; uid=user-7").as_bytes())],
        vec![h("cookie", b"uid=1; uid=2")],
        vec![h("x-user-id", b""), h("cookie", b"uid=user-9")],
        vec![
            h("x-user-id", b"\x80"),
            h("x-linnet-variant", b"\xff"),
            h("x-linnet-mirror", b"\xfe"),
        ],
    ];
    bounded(cases.iter().enumerate(), |(i, headers)| {
        let mut req = Request::get("/").host("checkout.local");
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let resp = stack.send(&req).unwrap();
        assert_eq!(
            resp.status,
            200,
            "case {i}: Envoy answered {} {}",
            resp.status,
            resp.body_str()
        );
        let got = served_by(&resp).unwrap();
        assert_eq!(got, oracle(&snapshot, headers), "case {i}: {headers:?}");
    });

    // Control characters are refused by Envoy's codec before any filter runs.
    let resp = stack
        .send(
            &Request::get("/")
                .host("checkout.local")
                .header("x-user-id", b"a\x01b\x7f"),
        )
        .unwrap();
    assert_eq!(resp.status, 400);

    // The VM still works: a normal request is still routed by the filter.
    for v in ["canary", "stable"] {
        let u = pick("checkout", 50.0, v);
        assert_eq!(
            stack.user(&u).unwrap(),
            v,
            "routing broke after the hostile requests"
        );
    }
    assert_eq!(
        stack
            .envoy
            .stat("wasm.envoy.wasm.runtime.v8.created")
            .unwrap(),
        vms_before,
        "a VM was recreated"
    );
    let log = stack.envoy.log();
    for bad in [
        "panic",
        "Function: proxy_on",
        "wasm log linnet: linnet: panic",
        "RuntimeError",
    ] {
        assert!(!log.contains(bad), "Envoy's log shows {bad:?}:\n{log}");
    }
}

#[test]
fn the_anonymous_random_policy_mints_a_sticky_cookie() {
    let mut r = checkout(50.0);
    r["anonymous"] = json!({ "policy": "random", "cookie": "linnet_uid", "max_age_s": 3600 });
    let mut stack = Stack::start(&plugin(r)).unwrap();
    let mut seen = std::collections::HashSet::new();
    bounded(0..40, |_| {
        let resp = stack
            .send(&Request::get("/").host("checkout.local"))
            .unwrap();
        assert_eq!(resp.status, 200);
        let first = served_by(&resp).unwrap();
        let set = resp
            .header_str("set-cookie")
            .expect("no set-cookie for an anonymous user");
        assert!(set.contains("Max-Age=3600"), "{set}");
        let pair = set.split(';').next().unwrap().to_owned();
        let key = pair
            .strip_prefix("linnet_uid=")
            .unwrap_or_else(|| panic!("{set}"))
            .to_owned();
        assert_eq!(
            first,
            crate::expected("checkout", key.as_bytes(), 50.0),
            "minted key {key}"
        );
        seen.insert(key);
        // Sending the cookie back keeps the user where the first answer put them, unminted.
        for _ in 0..2 {
            let again = stack
                .send(
                    &Request::get("/")
                        .host("checkout.local")
                        .header("cookie", &pair),
                )
                .unwrap();
            assert_eq!(served_by(&again).unwrap(), first);
            assert_eq!(
                again.header("set-cookie"),
                None,
                "a cookie was minted for a known user"
            );
        }
    });
    assert_eq!(seen.len(), 40, "minted keys repeat");
}
