//! Hostile or broken requests: no trap, and every routed request still gets a defined variant.

use crate::support::{
    assert_healthy, checkout, expected, round_trip_raw, vm, vm_of, AUTHORITY, VARIANT,
};
use linnet_core::metrics::{requests, response_time, responses, CLASSES};
use linnet_core::{Reason, Variant};
use linnet_wasm_tests::{Vm, Wasm};

const STICKY: &str = r#""stickiness":[{"header":"x-user-id"},{"cookie":"uid"}]"#;

fn with_cookie(vm: &mut Vm, cookie: &[u8]) -> Option<String> {
    round_trip_raw(
        vm,
        &[
            (":authority", AUTHORITY.as_bytes()),
            (":path", b"/"),
            ("cookie", cookie),
        ],
        "200",
    )
    .variant
}

fn with_key(vm: &mut Vm, key: &[u8]) -> Option<String> {
    round_trip_raw(
        vm,
        &[
            (":authority", AUTHORITY.as_bytes()),
            (":path", b"/"),
            ("x-user-id", key),
        ],
        "200",
    )
    .variant
}

fn defined(variant: Option<String>) -> bool {
    matches!(variant.as_deref(), Some("canary" | "stable"))
}

#[test]
fn malformed_cookies() {
    let mut vm = vm(&checkout("50", STICKY));
    let long = format!("uid={}", "x".repeat(16 * 1024));
    let cookies: &[&[u8]] = &[
        b"",
        b";",
        b";;;=;uid",
        b"uid",
        b"uid=",
        b"=uid",
        b"uid==",
        b"uid=\"quoted\"",
        b"uid=a;uid=b",
        b"  uid  =  spaced  ",
        b"xuid=1; uidx=2",
        b"uid=\xff\xfe\x80",
        b"\xff\xff=\xff; uid=ok",
        b"uid=\0\0",
        long.as_bytes(),
    ];
    for cookie in cookies {
        let variant = with_cookie(&mut vm, cookie);
        assert!(
            defined(variant.clone()),
            "cookie {:?}: {variant:?}",
            String::from_utf8_lossy(cookie)
        );
    }
    // A well-formed cookie among junk is still found.
    assert_eq!(
        with_cookie(&mut vm, b"a=1;; b; uid=u42; c=").unwrap(),
        expected("checkout", b"u42", 5000)
    );
    assert_healthy(&vm);
}

#[test]
fn empty_key_is_no_key() {
    let mut vm = vm(&checkout("100", ""));
    assert_eq!(with_key(&mut vm, b"").as_deref(), Some("stable"));
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&requests("checkout", Variant::Stable, Reason::Anonymous)),
        Some(1)
    );
}

#[test]
fn huge_and_binary_keys_bucket_like_core() {
    let mut vm = vm(&checkout("50", ""));
    let big = vec![b'k'; 8 * 1024];
    let keys: Vec<Vec<u8>> = vec![
        big,
        b"\xff\xfe\x80\x00binary".to_vec(),
        "ユーザー".as_bytes().to_vec(),
        b" padded ".to_vec(),
        vec![0; 64],
    ];
    for key in keys {
        let variant = with_key(&mut vm, &key).unwrap();
        assert_eq!(
            variant,
            expected("checkout", &key, 5000),
            "key {:?}",
            String::from_utf8_lossy(&key)
        );
    }
    assert_healthy(&vm);
}

#[test]
fn non_utf8_authority_path_and_headers() {
    let mut vm = vm(&checkout("50", ""));
    let cases: &[&[(&str, &[u8])]] = &[
        &[(":authority", b"\xffcheckout.local"), (":path", b"/")],
        &[(":authority", b"checkout.local"), (":path", b"/\xff\xfe")],
        &[(":authority", b"checkout.local:\xff"), (":path", b"/")],
        &[(":authority", b"checkout.local:"), (":path", b"/")],
        &[(":authority", b""), (":path", b"")],
        &[
            (":authority", b"checkout.local"),
            (":path", b"/"),
            (VARIANT, b"\xff"),
            ("x-request-id", b"\xff\xfe"),
        ],
    ];
    for headers in cases {
        let seen = round_trip_raw(&mut vm, headers, "200");
        assert!(
            seen.variant.is_none() || defined(seen.variant.clone()),
            "{headers:?}"
        );
    }
    assert_healthy(&vm);
}

#[test]
fn missing_pseudo_headers() {
    // Authority match: no :authority means no match.
    let mut vm = vm(&checkout("100", ""));
    let seen = round_trip_raw(&mut vm, &[(":path", b"/"), ("x-user-id", b"u1")], "200");
    assert_eq!(seen.variant, None);
    let seen = round_trip_raw(&mut vm, &[], "200");
    assert_eq!(seen.variant, None);
    assert_healthy(&vm);

    // No match rules: any request belongs to the rollout, even one without pseudo-headers.
    let mut vm = crate::support::vm(
        r#"{"mark_stable":true,"rollouts":[{"name":"all","weight":100,"stickiness":[{"header":"x-user-id"}]}]}"#,
    );
    for headers in [
        &[("x-user-id", &b"u1"[..])][..],
        &[(":authority", b"a"), ("x-user-id", b"u1")],
        &[],
    ] {
        let seen = round_trip_raw(&mut vm, headers, "200");
        assert!(defined(seen.variant), "{headers:?}");
    }
    assert_healthy(&vm);
}

#[test]
fn bad_response_status() {
    let mut vm = vm_of(Wasm::Responses, &checkout("100", ""));
    for status in [
        "abc",
        "",
        "99",
        "600",
        "-200",
        "2000",
        "99999999999999999999",
        "20 0",
        "\u{ff}",
    ] {
        round_trip_raw(
            &mut vm,
            &[
                (":authority", AUTHORITY.as_bytes()),
                (":path", b"/"),
                ("x-user-id", b"u1"),
            ],
            status,
        );
    }
    // Missing :status altogether.
    let mut req = vm.http().unwrap();
    req.request_headers(&[
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ])
    .unwrap();
    req.response_headers::<&str, &str>(&[]).unwrap();
    req.done().unwrap();

    for class in CLASSES {
        vm.tick().unwrap();
        assert_eq!(
            vm.metric(&responses("checkout", Variant::Canary, class)),
            Some(0),
            "{class}"
        );
    }
    // The latency is still measured.
    assert_eq!(
        vm.histogram(&response_time("checkout", Variant::Canary))
            .len(),
        10
    );
    assert_healthy(&vm);
}

#[test]
fn streams_cut_short() {
    // The `responses` build: the one that keeps streams between their callbacks.
    let mut vm = vm_of(Wasm::Responses, &checkout("100", ""));
    // Created and gone without a header.
    vm.http().unwrap().done().unwrap();
    // Request but no response.
    let mut req = vm.http().unwrap();
    req.request_headers(&[
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ])
    .unwrap();
    req.done().unwrap();
    // Response without a routed request.
    let mut req = vm.http().unwrap();
    req.response_headers(&[(":status", "200")]).unwrap();
    req.done().unwrap();
    // Bodies pass untouched.
    let mut req = vm.http().unwrap();
    req.request_headers(&[
        (":authority", AUTHORITY),
        (":path", "/"),
        ("x-user-id", "u1"),
    ])
    .unwrap();
    req.request_body(b"\xff\x00body", true).unwrap();
    req.response_headers(&[(":status", "200")]).unwrap();
    req.response_body(b"", true).unwrap();
    req.done().unwrap();
    vm.tick().unwrap();
    assert_eq!(
        vm.metric(&responses("checkout", Variant::Canary, "2xx")),
        Some(1)
    );
    assert_healthy(&vm);
}

#[test]
fn many_headers_and_huge_values() {
    let mut vm = vm(&checkout("50", ""));
    let filler: Vec<(String, Vec<u8>)> = (0..500)
        .map(|i| (format!("x-filler-{i}"), vec![b'v'; 100]))
        .collect();
    let mut headers: Vec<(&str, &[u8])> = filler
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    headers.push((":authority", AUTHORITY.as_bytes()));
    headers.push((":path", b"/"));
    let huge = vec![b'c'; 64 * 1024];
    headers.push(("cookie", &huge));
    headers.push(("x-user-id", b"u1"));
    let seen = round_trip_raw(&mut vm, &headers, "200");
    assert_eq!(seen.variant.unwrap(), expected("checkout", b"u1", 5000));
    assert_healthy(&vm);
}
