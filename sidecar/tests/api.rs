//! The admin API called without a socket: controls and their illegal cases, bad input,
//! auth, the kill switch, the audit log, the snapshot long-poll and concurrent mutations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;

const SIMPLE: &str =
    "name: web\nmatch: {authority: web.example}\nsteps: [{weight: 10, pause: 1m}, {weight: 50, pause: 1m}, {weight: 100}]";

async fn harness() -> (tempfile::TempDir, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    (dir, h)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test(start_paused = true)]
async fn create_list_and_status_in_json_and_yaml() {
    let (_d, h) = harness().await;
    assert_eq!(h.create_yaml(SIMPLE).await.status, StatusCode::CREATED);
    let json = r#"{"name": "api", "match": {"authority": "api.example"}, "stickiness": [{"cookie": "uid"}], "steps": [{"weight": 1.5, "pause": "500ms"}], "deadline": "1h"}"#;
    let r = h.post("/v1/rollouts", json).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let s = r.json();
    assert_eq!(s["weight"], 1.5);
    assert_eq!(s["deadline_remaining_ms"], 3_600_000);
    let list = h.get("/v1/rollouts").await.json();
    let names: Vec<&str> = list["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);
    let m = String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("linnet_rollout_weight_percent{rollout=\"web\"} 10.0"),
        "{m}"
    );
    assert!(
        m.contains("linnet_rollout_state{rollout=\"web\",state=\"progressing\"} 1"),
        "{m}"
    );
    assert!(m.contains("linnet_snapshot_version 4"), "{m}");
    assert!(m.contains("linnet_api_requests_total"), "{m}");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn every_control_and_its_illegal_cases() {
    let (_d, h) = harness().await;
    h.create_yaml(SIMPLE).await;
    let post = |p: &'static str, b: &'static str| {
        let h = &h;
        async move { h.post(&format!("/v1/rollouts/web/{p}"), b).await }
    };
    let conflict = |r: common::Reply, word: &str| {
        assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
        assert!(
            r.error().contains(word),
            "{:?} should name {word}",
            r.error()
        );
    };

    conflict(post("resume", "").await, "progressing");
    conflict(post("retry", "").await, "progressing");
    sleep_ms(20_000).await;
    let s = post("pause", "").await.json();
    assert_eq!(
        (s["state"].as_str(), s["remaining_pause_ms"].as_i64()),
        (Some("paused"), Some(40_000))
    );
    conflict(post("pause", "").await, "already paused");
    sleep_ms(3_600_000).await;
    assert_eq!(h.status("web").await["step"], 0);
    let s = post("resume", "{}").await.json();
    assert_eq!(
        (s["state"].as_str(), s["remaining_pause_ms"].as_i64()),
        (Some("progressing"), Some(40_000))
    );

    let s = post("promote", "").await.json();
    assert_eq!(
        (s["step"].as_u64(), s["weight"].as_f64()),
        (Some(1), Some(50.0))
    );

    let r = h
        .request(
            Method::PUT,
            "/v1/rollouts/web/weight",
            r#"{"weight": 37.5}"#,
            &[("x-api-key", ADMIN)],
        )
        .await;
    let s = r.json();
    assert_eq!(
        (s["state"].as_str(), s["weight"].as_f64()),
        (Some("paused"), Some(37.5))
    );

    let s = post("kill-switch", r#"{"on": true}"#).await.json();
    assert_eq!(s["kill_switch"], true);
    let snap = h
        .request(
            Method::GET,
            "/v1/snapshot",
            "",
            &[("authorization", &bearer(POLL))],
        )
        .await
        .json();
    assert_eq!(snap["rollouts"][0]["kill_switch"], true);
    assert_eq!(snap["rollouts"][0]["weight"], 37.5);

    let s = post("abort", "").await.json();
    assert_eq!(
        (s["state"].as_str(), s["weight"].as_f64()),
        (Some("aborted"), Some(0.0))
    );
    for p in ["pause", "promote", "abort"] {
        conflict(post(p, "").await, "aborted");
    }
    conflict(post("weight", r#"{"weight": 5}"#).await, "aborted");
    conflict(
        h.request(
            Method::DELETE,
            "/v1/rollouts/web",
            "",
            &[("authorization", &bearer(ADMIN))],
        )
        .await,
        "aborted",
    );

    let s = post("retry", "").await.json();
    assert_eq!(
        (
            s["state"].as_str(),
            s["step"].as_u64(),
            s["weight"].as_f64()
        ),
        (Some("progressing"), Some(0), Some(10.0))
    );
    let s = post("promote", r#"{"full": true}"#).await.json();
    assert_eq!(
        (s["state"].as_str(), s["weight"].as_f64()),
        (Some("promoted"), Some(100.0))
    );
    conflict(post("promote", "").await, "promoted");
    conflict(post("retry", "").await, "promoted");

    // DELETE aborts.
    h.create_yaml("name: other\nmatch: {authority: other.example}\nsteps: [{weight: 1}, {weight: 2, pause: 1h}]")
        .await;
    let r = h
        .request(
            Method::DELETE,
            "/v1/rollouts/other",
            "",
            &[("authorization", &bearer(ADMIN))],
        )
        .await;
    assert_eq!(r.json()["state"], "aborted");

    // Global kill switch.
    assert_eq!(h.get("/v1/kill-switch").await.json()["on"], false);
    assert_eq!(
        h.post("/v1/kill-switch", r#"{"on": true}"#).await.json()["on"],
        true
    );
    assert_eq!(h.get("/v1/kill-switch").await.json()["on"], true);
    let snap = h
        .request(
            Method::GET,
            "/v1/snapshot",
            "",
            &[("authorization", &bearer(POLL))],
        )
        .await
        .json();
    assert_eq!(snap["kill_switch"], true);

    // The audit log has it all, filterable and paged.
    let all = h.get("/v1/audit?limit=1000").await.json();
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "created",
        "started",
        "paused",
        "resumed",
        "step",
        "weight",
        "kill_switch",
        "aborted",
        "retried",
        "promoted",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let web = h.get("/v1/audit?rollout=web&after=2&limit=3").await.json();
    let ev = web["events"].as_array().unwrap();
    assert_eq!(ev.len(), 3);
    assert!(ev
        .iter()
        .all(|e| e["rollout"] == "web" && e["id"].as_i64().unwrap() > 2));
    assert_eq!(web["next_after"], ev[2]["id"]);
    h.close().await;
}

/// Method, path, body, headers, expected status, a word the message must contain.
type Case<'a> = (
    Method,
    &'a str,
    String,
    &'a [(&'a str, &'a str)],
    StatusCode,
    &'a str,
);

#[tokio::test(start_paused = true)]
async fn bad_input_is_refused_and_changes_nothing() {
    let (_d, h) = harness().await;
    h.create_yaml(SIMPLE).await;
    let before = h.fingerprint().await;
    let list_before = h.get("/v1/rollouts").await.body;
    let admin = bearer(ADMIN);
    let yaml = [
        ("authorization", admin.as_str()),
        ("content-type", "application/yaml"),
    ];
    let json = [
        ("authorization", admin.as_str()),
        ("content-type", "application/json"),
    ];
    let plain = [
        ("authorization", admin.as_str()),
        ("content-type", "text/plain"),
    ];
    let big = format!(
        "{{\"name\": \"x\", \"steps\": [], \"pad\": \"{}\"}}",
        "x".repeat(2 << 20)
    );

    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/rollouts",
            "{\"name\": ".into(),
            &json,
            StatusCode::BAD_REQUEST,
            "EOF",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: [".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "invalid rollout spec",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: 1}]\ncolour: red".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: 1, wieght: 2}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "steps[0]",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: 101}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "steps[0].weight",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: -1}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "steps[0].weight",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: .nan}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "not a number",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: .inf}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "steps[0].weight",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: 50}, {weight: 10}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "must not decrease",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: 1, pause: 3 fortnights}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "steps[0].pause",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: [{weight: 1}]\ndeadline: later".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "deadline",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x\nsteps: []".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "steps",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: X Y\nsteps: [{weight: 1}]".into(),
            &yaml,
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            SIMPLE.into(),
            &yaml,
            StatusCode::CONFLICT,
            "is progressing",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            "name: x".into(),
            &plain,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            big,
            &json,
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            SIMPLE.replace("web", "new"),
            &[("content-type", "application/yaml")],
            StatusCode::UNAUTHORIZED,
            "missing token",
        ),
        (
            Method::POST,
            "/v1/rollouts",
            SIMPLE.replace("web", "new"),
            &[
                ("authorization", "Bearer nope"),
                ("content-type", "application/yaml"),
            ],
            StatusCode::UNAUTHORIZED,
            "wrong token",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/pause",
            "".into(),
            &[("x-api-key", POLL)],
            StatusCode::UNAUTHORIZED,
            "wrong token",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/weight",
            r#"{"weight": 100.5}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "weight",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/weight",
            r#"{"weight": "lots"}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "weight",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/weight",
            r#"{"weight": 1e999}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "weight",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/weight",
            r#"{"weight": 5, "why": 1}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "why",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/weight",
            r#"{}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "weight",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/promote",
            r#"{"ful": true}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "ful",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/pause",
            r#"{"now": 1}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "now",
        ),
        (
            Method::POST,
            "/v1/rollouts/web/kill-switch",
            r#"{"on": "yes"}"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "on",
        ),
        (
            Method::POST,
            "/v1/kill-switch",
            r#"nope"#.into(),
            &json,
            StatusCode::BAD_REQUEST,
            "invalid body",
        ),
        (
            Method::POST,
            "/v1/rollouts/nope/pause",
            "".into(),
            &json,
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            Method::GET,
            "/v1/rollouts/nope",
            "".into(),
            &[],
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            Method::GET,
            "/v1/nothing",
            "".into(),
            &[],
            StatusCode::NOT_FOUND,
            "/v1/nothing",
        ),
        (
            Method::PATCH,
            "/v1/rollouts/web",
            "".into(),
            &json,
            StatusCode::METHOD_NOT_ALLOWED,
            "PATCH",
        ),
        (
            Method::GET,
            "/v1/rollouts/web/pause",
            "".into(),
            &[],
            StatusCode::METHOD_NOT_ALLOWED,
            "GET",
        ),
        (
            Method::GET,
            "/v1/audit?limit=0",
            "".into(),
            &[],
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            Method::GET,
            "/v1/audit?after=x",
            "".into(),
            &[],
            StatusCode::BAD_REQUEST,
            "after",
        ),
        (
            Method::GET,
            "/v1/snapshot?version=-1",
            "".into(),
            &[("authorization", "Bearer poll-token")],
            StatusCode::BAD_REQUEST,
            "version",
        ),
        (
            Method::GET,
            "/v1/snapshot",
            "".into(),
            &[],
            StatusCode::UNAUTHORIZED,
            "missing token",
        ),
        (
            Method::GET,
            "/v1/snapshot",
            "".into(),
            &[("authorization", "Bearer nope")],
            StatusCode::UNAUTHORIZED,
            "wrong token",
        ),
    ];
    for (method, path, body, headers, status, word) in cases {
        let r = h.request(method.clone(), path, &body, headers).await;
        assert_eq!(
            r.status,
            status,
            "{method} {path} {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let msg = r.error();
        assert!(
            msg.contains(word),
            "{method} {path}: {msg:?} should name {word:?}"
        );
        assert_eq!(
            h.fingerprint().await,
            before,
            "{method} {path} changed the store"
        );
    }
    assert_eq!(h.get("/v1/rollouts").await.body, list_before);
    let r = h.request(Method::PATCH, "/v1/rollouts/web", "", &[]).await;
    assert_eq!(r.headers["allow"], "GET, DELETE");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn reads_need_the_admin_token_unless_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config();
    config.auth.open_reads = false;
    config.auth.poll = None;
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
    let r = h.get("/v1/rollouts").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.error().contains("missing token"));
    let r = h
        .request(
            Method::GET,
            "/v1/rollouts",
            "",
            &[("authorization", &bearer(ADMIN))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // With no poll token the snapshot needs the admin token; health is always open.
    assert_eq!(h.get("/v1/snapshot").await.status, StatusCode::UNAUTHORIZED);
    let r = h
        .request(
            Method::GET,
            "/v1/snapshot",
            "",
            &[("authorization", &bearer(ADMIN))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn snapshot_long_poll() {
    let (_d, h) = harness().await;
    let auth = [
        ("authorization", "Bearer poll-token"),
        ("x-linnet-poller", "envoy-1"),
    ];
    // No version: the current one at once.
    let r = h.request(Method::GET, "/v1/snapshot", "", &auth).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-linnet-version"], "0");
    let doc = linnet_core::SnapshotDoc::from_json(&r.body).unwrap();
    assert_eq!((doc.version, doc.rollouts.len()), (0, 0));

    h.create_yaml("name: m\nmirror_cluster: m-shadow\nsteps: [{mirror: 25, pause: 1m}, {weight: 10, pause: until promoted}]").await;
    // An old version: 200 at once with the new one.
    let r = h
        .request(
            Method::GET,
            "/v1/snapshot?version=0&timeout_ms=1000",
            "",
            &auth,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = linnet_core::SnapshotDoc::from_json(&r.body).unwrap();
    let v = doc.version;
    assert_eq!(r.headers["x-linnet-version"], v.to_string().as_str());
    assert_eq!(doc.rollouts[0].weight, 0.0);
    let m = doc.rollouts[0].mirror.as_ref().unwrap();
    assert_eq!((m.cluster.as_str(), m.percent), ("m-shadow", 25.0));
    assert_eq!(h.status("m").await["state"], "shadowing");
    // The served document compiles in linnet-core, as the filter will do.
    linnet_core::PluginConfig::default()
        .with_snapshot(&doc)
        .compile(doc.version)
        .unwrap();

    // The current version: held until the timeout, then 304 with no body.
    let r = h
        .request(
            Method::GET,
            &format!("/v1/snapshot?version={v}&timeout_ms=500"),
            "",
            &auth,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["x-linnet-version"], v.to_string().as_str());

    // Wakes early on a change (the timeout is 5 minutes; the change comes at once).
    let app = h.app.clone();
    let poll = tokio::spawn(async move {
        let req = hyper::Request::get(format!("/v1/snapshot?version={v}&timeout_ms=300000"))
            .header("authorization", "Bearer poll-token")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = app.handle(req).await;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, body)
    });
    tokio::task::yield_now().await;
    h.post("/v1/rollouts/m/promote", "").await;
    let (status, body) = poll.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let doc = linnet_core::SnapshotDoc::from_json(&body).unwrap();
    assert!(doc.version > v);
    assert_eq!(doc.rollouts[0].weight, 10.0);
    assert!(doc.rollouts[0].mirror.is_none());

    // A pause changes nothing the filters see, so the version stays.
    let v2 = doc.version;
    h.post("/v1/rollouts/m/pause", "").await;
    let r = h
        .request(
            Method::GET,
            &format!("/v1/snapshot?version={v2}&timeout_ms=100"),
            "",
            &auth,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    let m = String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap();
    assert!(m.contains("linnet_connected_filters 1"), "{m}");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mutations_are_serialized_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let h = std::sync::Arc::new(Harness::open(&dir.path().join("l.db"), EPOCH_MS));
    h.create_yaml("name: busy\nsteps: [{weight: 1, pause: 1h}, {weight: 100}]")
        .await;
    let (_, _, events_before) = h.fingerprint().await;
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let w = h
                .post(
                    "/v1/rollouts/busy/weight",
                    &format!("{{\"weight\": {}}}", f64::from(i) + 0.5),
                )
                .await;
            let p = h.post("/v1/rollouts/busy/pause", "").await;
            (w.status, p.status)
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        let (w, p) = t.await.unwrap();
        assert_eq!(w, StatusCode::OK);
        // A manual weight pauses, so a pause after it finds the rollout already paused.
        assert!(p == StatusCode::OK || p == StatusCode::CONFLICT, "{p}");
        ok += 1 + u64::from(p == StatusCode::OK);
    }
    let (_, _, events_after) = h.fingerprint().await;
    assert_eq!(events_after - events_before, ok);
    assert!(ok >= 50);
    // The final weight is the one of the last weight event.
    let audit = h.get("/v1/audit?rollout=busy&limit=1000").await.json();
    let last_weight: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "weight")
        .collect();
    assert_eq!(last_weight.len(), 50);
    let s = h.status("busy").await;
    assert_eq!(s["state"], "paused");
    assert_eq!(s["weight"], last_weight[49]["data"]["weight"]);
}

#[tokio::test(start_paused = true)]
async fn clients_cannot_make_new_metric_series() {
    let (_d, h) = harness().await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("linnet_api_requests_total{"))
            .count()
    };
    h.get("/nowhere").await;
    let before = series(std::str::from_utf8(&h.get("/metrics").await.body).unwrap());
    for i in 0..30 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let r = h.request(method, &format!("/nowhere/{i}"), "", &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let text = String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap();
    // One new series at most (`other` on the unmatched route), not thirty.
    assert!(series(&text) <= before + 2, "{text}");
    assert!(
        text.contains(
            r#"linnet_api_requests_total{method="other",route="unmatched",code="404"} 30"#
        ),
        "{text}"
    );
    assert!(!text.contains("MADEUP"), "{text}");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn routes_match_by_pattern_with_a_trailing_slash_and_ids() {
    let (_d, h) = harness().await;
    // A trailing slash is the same route.
    let r = h.get("/v1/rollouts/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json()["rollouts"].is_array());
    h.create_yaml(SIMPLE).await;
    let r = h.post("/v1/rollouts/web/promote", "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // All digits is a release id.
    let id = h.status("web").await["id"].as_i64().unwrap();
    let r = h.post(&format!("/v1/rollouts/{id}/complete"), "").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(
        h.get(&format!("/v1/rollouts/{id}")).await.json()["name"],
        "web"
    );
    for path in ["/v1/rollouts/web/bogus", "/", "/v1/rollouts/web/bogus/"] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.error(), format!("no such endpoint: {path}"));
    }
    // HEAD is not GET here.
    let r = h.request(Method::HEAD, "/v1/rollouts", "", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, POST");
    let m = String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains(r#"route="/v1/rollouts/{name}/promote",code="200"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"route="/v1/rollouts",code="200"}"#), "{m}");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn the_openapi_document_is_served_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config();
    config.auth.open_reads = false;
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
    let r = h.get("/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/rollouts/{name}/promote"]["post"].is_object());
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        !text.contains(ADMIN) && !text.contains(POLL),
        "a token in the document"
    );
    h.close().await;
}
