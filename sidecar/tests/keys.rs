//! Named API keys on the HTTP API: every route with every scope (allowed, or 403 naming the
//! scope it needs), keys across a restart, revocation from the very next call, the secret
//! in no read, and per-key rate limits that leave other keys and the filters' polls alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use linnet_sidecar::api::{access, Access};
use linnet_sidecar::auth::Scope;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Makes a key with the admin token; its secret.
async fn make_key(h: &Harness, name: &str, scope: &str, limit: Option<(f64, u32)>) -> String {
    let body = match limit {
        Some((rate, burst)) => {
            format!(r#"{{"name": "{name}", "scope": "{scope}", "rate": {rate}, "burst": {burst}}}"#)
        }
        None => format!(r#"{{"name": "{name}", "scope": "{scope}"}}"#),
    };
    let r = h.post("/v1/keys", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let v = r.json();
    assert_eq!(
        (v["name"].as_str(), v["scope"].as_str()),
        (Some(name), Some(scope))
    );
    v["secret"].as_str().unwrap().to_owned()
}

/// The status, and the body unless it is an event stream (whose body never ends).
async fn call(h: &Harness, method: Method, path: &str, secret: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {secret}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h.app.handle(req).await;
    let status = resp.status();
    let streaming = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, Value::Null);
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A route's pattern as a concrete path: no such rollout, receiver, key or delivery.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{name}", "nothing-here")
        .replace("{id}", "1")
}

#[tokio::test(start_paused = true)]
async fn every_route_with_every_scope_is_allowed_or_403_naming_the_scope_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("t.db"), EPOCH_MS);
    let mut keys = Vec::new();
    for scope in [Scope::Read, Scope::Operate, Scope::Admin] {
        let name = format!("k-{scope}");
        // A limit no route count reaches: this test is about scopes.
        let secret = make_key(&h, &name, scope.as_str(), Some((1000.0, 1000))).await;
        keys.push((name, scope, secret));
    }
    let table = access();
    assert!(table.len() >= 35);
    let mut checked = 0;
    for (method, pattern, access) in &table {
        let path = concrete(pattern);
        for (name, scope, secret) in &keys {
            let (status, body) = call(&h, method.clone(), &path, secret).await;
            let what = format!("{method} {pattern} with {name}");
            match access {
                Access::Open => assert!(status.is_success(), "{what}: {status}"),
                // A key is no poll token: the snapshot is the filters'.
                Access::Poll => assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}"),
                Access::Key(needs) if scope >= needs => {
                    assert!(
                        status != StatusCode::UNAUTHORIZED
                            && status != StatusCode::FORBIDDEN
                            && status != StatusCode::TOO_MANY_REQUESTS,
                        "{what}: {status} {body}"
                    );
                }
                Access::Key(needs) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
                    assert_eq!(
                        body["error"],
                        format!(
                            "key \"{name}\" has scope {scope}; {method} {pattern} needs {needs}"
                        ),
                        "{what}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, table.len() * 3);
    // The table is the issue's: a few lines of it, by hand.
    let needs = |m: Method, p: &str| {
        table
            .iter()
            .find(|(tm, tp, _)| *tm == m && tp == p)
            .map(|(_, _, a)| *a)
            .unwrap()
    };
    assert_eq!(needs(Method::GET, "/v1/rollouts"), Access::Key(Scope::Read));
    assert_eq!(needs(Method::GET, "/v1/events"), Access::Key(Scope::Read));
    for p in [
        "pause", "resume", "promote", "abort", "weight", "complete", "retry",
    ] {
        let p = format!("/v1/rollouts/{{name}}/{p}");
        assert_eq!(needs(Method::POST, &p), Access::Key(Scope::Operate), "{p}");
    }
    assert_eq!(
        needs(Method::POST, "/v1/rollouts"),
        Access::Key(Scope::Admin)
    );
    assert_eq!(
        needs(Method::POST, "/v1/kill-switch"),
        Access::Key(Scope::Admin)
    );
    assert_eq!(
        needs(Method::POST, "/v1/rollouts/{name}/kill-switch"),
        Access::Key(Scope::Admin)
    );
    assert_eq!(needs(Method::POST, "/v1/keys"), Access::Key(Scope::Admin));
    assert_eq!(needs(Method::GET, "/v1/snapshot"), Access::Poll);
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn an_operate_key_pauses_and_a_read_key_is_refused_with_nothing_changed() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("t.db"), EPOCH_MS);
    assert_eq!(h.create_yaml(CHECKOUT).await.status, StatusCode::CREATED);
    let ci = make_key(&h, "ci", "operate", None).await;
    let viewer = make_key(&h, "viewer", "read", None).await;
    let before = h.fingerprint().await;
    let (status, body) = call(&h, Method::POST, "/v1/rollouts/checkout/pause", &viewer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"],
        "key \"viewer\" has scope read; POST /v1/rollouts/{name}/pause needs operate"
    );
    assert_eq!(
        h.fingerprint().await,
        before,
        "a refused call changes nothing"
    );
    let (status, body) = call(&h, Method::POST, "/v1/rollouts/checkout/pause", &ci).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "paused");
    // The audit, the report and the timeline name the key that paused.
    let audit = h.get("/v1/audit?rollout=checkout").await.json();
    let events = audit["events"].as_array().unwrap();
    let paused = events.iter().rfind(|e| e["kind"] == "paused").unwrap();
    assert_eq!(paused["actor"], "ci", "{paused}");
    assert_eq!(
        paused["data"]["reason"],
        "paused by operator; analysis keeps judging"
    );
    let created = events.iter().find(|e| e["kind"] == "created").unwrap();
    assert_eq!(
        created["actor"], "admin",
        "the admin token is the bootstrap admin"
    );
    let r = h
        .request(
            Method::GET,
            "/v1/rollouts/checkout/report",
            "",
            &[("accept", "application/json")],
        )
        .await;
    let report = r.json();
    assert_eq!(report["decision"]["actor"], "ci", "{report}");
    let explained = h.get("/v1/rollouts/checkout/explain").await.json();
    let last = explained["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["kind"].as_str(), last["actor"].as_str()),
        (Some("paused"), Some("ci"))
    );
    // Operate is not admin.
    let (status, body) = call(&h, Method::POST, "/v1/keys", &ci).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["error"],
        "key \"ci\" has scope operate; POST /v1/keys needs admin"
    );
    // A read key reads, and opens the event stream by query, as the dashboard does.
    let (status, _) = call(&h, Method::GET, "/v1/rollouts/checkout", &viewer).await;
    assert_eq!(status, StatusCode::OK);
    let req = Request::get(format!("/v1/events?token={viewer}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.app.handle(req).await.status(), StatusCode::OK);
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn keys_survive_a_restart_a_revoked_one_is_refused_at_once_and_no_read_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let h = Harness::open(&db, EPOCH_MS);
    let ci = make_key(&h, "ci", "operate", Some((5.0, 10))).await;
    let old = make_key(&h, "old", "read", None).await;
    assert_eq!(
        call(&h, Method::GET, "/v1/rollouts", &old).await.0,
        StatusCode::OK
    );
    // Revoked: refused on the very next call, by name.
    let r = h
        .request(
            Method::DELETE,
            "/v1/keys/old",
            "",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.json()["revoked_at_ms"].is_i64());
    let (status, body) = call(&h, Method::GET, "/v1/rollouts", &old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "key \"old\" is revoked");
    // Again: 409; a revoked name is not used again; nor is a live one, nor a reserved one.
    let again = h
        .request(
            Method::DELETE,
            "/v1/keys/old",
            "",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    for name in ["old", "ci"] {
        let r = h
            .post(
                "/v1/keys",
                &format!(r#"{{"name": "{name}", "scope": "read"}}"#),
            )
            .await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{name}");
    }
    for (body, field) in [
        (r#"{"name": "admin", "scope": "read"}"#, "name"),
        (r#"{"name": "Not A Name", "scope": "read"}"#, "name"),
        (r#"{"name": "x", "scope": "root"}"#, "scope"),
        (r#"{"name": "x", "scope": "read", "rate": 0}"#, "rate"),
        (r#"{"name": "x", "scope": "read", "burst": 0}"#, "burst"),
    ] {
        let r = h.post("/v1/keys", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.error().contains(field), "{body}: {}", r.error());
    }
    // Making and revoking keys is audited, by who did it, without the secret.
    let audit = h.get("/v1/audit").await.json();
    let keyed: Vec<(String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "key")
        .map(|e| {
            (
                e["data"]["reason"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keyed,
        [
            (
                "key \"ci\" (operate) created by admin".to_owned(),
                "admin".to_owned()
            ),
            (
                "key \"old\" (read) created by admin".to_owned(),
                "admin".to_owned()
            ),
            (
                "key \"old\" (read) revoked by admin".to_owned(),
                "admin".to_owned()
            ),
        ]
    );
    let r = h
        .request(
            Method::DELETE,
            "/v1/keys/never",
            "",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.close().await;

    let h = Harness::open(&db, EPOCH_MS + 60_000);
    assert_eq!(
        call(&h, Method::GET, "/v1/rollouts", &ci).await.0,
        StatusCode::OK
    );
    let (status, body) = call(&h, Method::GET, "/v1/rollouts", &old).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("key \"old\" is revoked"))
    );
    let (status, list) = call(&h, Method::GET, "/v1/keys", ADMIN).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<(&str, &str, bool)> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap(),
                k["scope"].as_str().unwrap(),
                k["revoked_at_ms"].is_i64(),
            )
        })
        .collect();
    assert_eq!(names, [("ci", "operate", false), ("old", "read", true)]);
    assert_eq!(
        (
            list["keys"][0]["rate"].as_f64(),
            list["keys"][0]["burst"].as_u64()
        ),
        (Some(5.0), Some(10))
    );
    // No read holds a secret or its hash.
    let hashes = [ci.as_str(), old.as_str()].map(linnet_sidecar::keys::hash);
    let reads = [
        call(&h, Method::GET, "/v1/keys", ADMIN).await.1.to_string(),
        call(&h, Method::GET, "/v1/audit", ADMIN)
            .await
            .1
            .to_string(),
        String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap(),
    ];
    for text in &reads {
        for s in [&ci, &old, &ci[4..].to_owned(), &hashes[0], &hashes[1]] {
            assert!(!text.contains(s.as_str()), "a read shows {s}");
        }
    }
    h.close().await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut d: Vec<Duration>) -> String {
    d.sort();
    format!(
        "n={} p50={:?} p99={:?}",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.99)
    )
}

/// Statuses are asserted; latencies are printed (`--nocapture`), never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_flooding_gets_429s_while_another_key_and_the_polls_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("t.db"), EPOCH_MS);
    let flood = make_key(&h, "flood", "read", Some((1.0, 5))).await;
    let calm = make_key(&h, "calm", "read", None).await;
    const FLOOD: usize = 400;
    const CALLS: usize = 30;
    let flooder = {
        let app = h.app.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(FLOOD);
            let mut retry_after = None;
            let mut error = None;
            for _ in 0..FLOOD {
                let req = Request::get("/v1/rollouts")
                    .header("authorization", format!("Bearer {flood}"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = app.handle(req).await;
                if resp.status() == StatusCode::TOO_MANY_REQUESTS && retry_after.is_none() {
                    retry_after = resp.headers().get("retry-after").cloned();
                    let b = resp.into_body().collect().await.unwrap().to_bytes();
                    error = Some(serde_json::from_slice::<Value>(&b).unwrap());
                    statuses.push(StatusCode::TOO_MANY_REQUESTS);
                } else {
                    statuses.push(resp.status());
                }
            }
            (statuses, retry_after, error)
        })
    };
    let mut calm_times = Vec::new();
    let mut poll_times = Vec::new();
    for _ in 0..CALLS {
        let t = Instant::now();
        let (status, _) = call(&h, Method::GET, "/v1/rollouts", &calm).await;
        calm_times.push(t.elapsed());
        assert_eq!(
            status,
            StatusCode::OK,
            "the calm key is never limited by the flood"
        );
        let t = Instant::now();
        let (status, _) = call(&h, Method::GET, "/v1/snapshot", POLL).await;
        poll_times.push(t.elapsed());
        assert_eq!(
            status,
            StatusCode::OK,
            "a poll never draws from a key's bucket"
        );
        tokio::task::yield_now().await;
    }
    let (statuses, retry_after, error) = flooder.await.unwrap();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok + limited, FLOOD, "only 200s and 429s");
    assert!(ok >= 5 && limited > 0, "{ok} ok, {limited} limited");
    let secs: u32 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
    let error = error.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("key \"flood\" is over its rate limit of 1 requests/s (burst 5)"),
        "{error}"
    );
    let m = String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap();
    let line = format!("linnet_api_rate_limited_total{{key=\"flood\"}} {limited}");
    assert!(m.contains(&line), "{line} in\n{m}");
    assert!(!m.contains("key=\"calm\""));
    println!("flood: {ok} answered, {limited} refused 429 (Retry-After {secs} s)");
    println!("calm key while flooded:  {}", summary(calm_times));
    println!("snapshot polls while flooded: {}", summary(poll_times));
    h.close().await;
}
