//! Notifications over real HTTP on loopback: a receiver that refuses holds back only its own
//! deliveries, is retried under one idempotency key and given up on visibly, and a failed
//! delivery can be sent again; the receivers' API refuses bad input by field and never shows
//! a secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::watch;

fn outbox(h: &Harness) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    linnet_sidecar::notify::spawn(h.ctl.clone(), rx);
    tx
}

async fn deliveries(h: &Harness, query: &str) -> Vec<Value> {
    let r = h.get(&format!("/v1/notifications?{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["deliveries"].as_array().unwrap().clone()
}

/// Waits (bounded) until the deliveries matching `query` satisfy `f`.
async fn wait_deliveries(h: &Harness, query: &str, what: &str, f: impl Fn(&[Value]) -> bool) {
    for _ in 0..400 {
        if f(&deliveries(h, query).await) {
            return;
        }
        sleep_ms(25).await;
    }
    panic!("never {what}: {:?}", deliveries(h, query).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_receiver_is_retried_under_one_key_given_up_visibly_and_can_be_resent() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("n.db"), EPOCH_MS);
    let good = Receiver::start(200).await;
    let bad = Receiver::start(503).await;
    let _stop = outbox(&h);
    let yaml = format!(
        "name: checkout\nmatch: {{authority: shop.example}}\nsteps: [{{weight: 10, pause: 1s}}, {{weight: 100}}]\n\
         notify:\n\
         - {{name: good, url: '{}/ok', on: [started, promoted]}}\n\
         - {{name: bad, url: '{}/down', backoff: 50ms, max_attempts: 3}}\n",
        good.url, bad.url
    );
    let r = h.create_yaml(&yaml).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    wait_for(&h, "checkout", "promoted", |s| s["state"] == "promoted").await;

    // The good receiver hears its two topics, in order, whatever the bad one does.
    wait_deliveries(
        &h,
        "rollout=checkout&state=delivered",
        "both delivered",
        |d| d.len() == 2,
    )
    .await;
    let heard: Vec<String> = good
        .seen()
        .iter()
        .map(|r| r.json()["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(heard, ["started", "promoted"]);

    // The bad one: its oldest delivery tried three times under one key, then failed, and
    // only then the next one tried; nothing is lost, everything is listed.
    wait_deliveries(&h, "state=failed", "the bad receiver's all given up", |d| {
        d.len() == 3
    })
    .await;
    let failed = deliveries(&h, "state=failed").await;
    for d in &failed {
        assert_eq!(d["receiver"], "checkout/bad");
        assert_eq!(d["attempts"], 3);
        let e = d["last_error"].as_str().unwrap();
        assert!(e.starts_with("503"), "{e}");
        assert!(e.contains("receiver says 503"), "{e}");
    }
    let seen = bad.seen();
    assert_eq!(seen.len(), 9, "3 notifications × 3 attempts");
    let keys: Vec<String> = seen
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    for attempts in keys.chunks(3) {
        assert!(attempts.iter().all(|k| *k == attempts[0]), "{keys:?}");
    }
    assert_ne!(keys[0], keys[3], "each notification has its own key");
    let r = h.get("/metrics").await;
    let text = String::from_utf8_lossy(&r.body);
    assert!(
        text.contains("linnet_notification_attempts_total{result=\"failed\"} 3"),
        "{text}"
    );

    // Resent once the receiver is back: delivered under the same key.
    bad.answer(200);
    let id = failed[0]["id"].as_i64().unwrap();
    let r = h.post(&format!("/v1/notifications/{id}/resend"), "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["state"], "pending");
    wait_deliveries(&h, "state=failed", "the resent one delivered", |d| {
        d.len() == 2
    })
    .await;
    let last = bad.seen().pop().unwrap();
    assert_eq!(
        last.header("idempotency-key").as_deref(),
        failed[0]["idempotency_key"].as_str()
    );
    // Only a failed delivery is sent again.
    let r = h.post(&format!("/v1/notifications/{id}/resend"), "").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    h.close().await;
}

#[tokio::test]
async fn receivers_refuse_bad_input_by_field_and_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("r.db"), EPOCH_MS);
    let before = h.fingerprint().await;
    for (body, field) in [
        (
            r#"{"name": "chat", "url": "https://chat.example/hook"}"#,
            "receiver.url",
        ),
        (
            r#"{"name": "Chat!", "url": "http://127.0.0.1:9/"}"#,
            "receiver.name",
        ),
        (
            r#"{"name": "chat", "url": "http://127.0.0.1:9/", "timeout": "1h"}"#,
            "receiver.timeout",
        ),
        (
            r#"{"name": "chat", "url": "http://127.0.0.1:9/", "on": ["lunch"]}"#,
            "on",
        ),
        (
            r#"{"name": "chat", "url": "http://127.0.0.1:9/", "colour": "red"}"#,
            "colour",
        ),
        ("not json", "invalid body"),
    ] {
        let r = h.post("/v1/receivers", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.error().contains(field), "{body}: {}", r.error());
    }
    assert_eq!(h.fingerprint().await, before, "nothing changed");
    let r = h.get("/v1/receivers").await;
    assert_eq!(r.json()["receivers"], serde_json::json!([]));

    let r = h
        .post(
            "/v1/receivers",
            r#"{"name": "chat", "url": "http://127.0.0.1:9/hook?token=t0ps3cret", "secret": "s3cret-value", "format": "slack"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["replaced"], false);
    let yaml = "name: checkout\nmatch: {authority: shop.example}\nsteps: [{weight: 100}]\n\
                notify: [{name: ci, url: 'http://127.0.0.1:9/', secret: rollout-s3cret}]\n";
    assert_eq!(h.create_yaml(yaml).await.status, StatusCode::CREATED);
    for path in [
        "/v1/receivers",
        "/v1/rollouts/checkout",
        "/v1/rollouts",
        "/v1/notifications",
        "/v1/audit",
    ] {
        let body = String::from_utf8_lossy(&h.get(path).await.body).into_owned();
        for secret in ["s3cret-value", "t0ps3cret", "rollout-s3cret"] {
            assert!(!body.contains(secret), "{path} shows {secret}: {body}");
        }
    }
    let listed = h.get("/v1/receivers").await.json();
    assert_eq!(listed["receivers"][0]["secret"], "<redacted>", "{listed}");

    let del = |name: &str| {
        let path = format!("/v1/receivers/{name}");
        let h = &h;
        async move {
            h.request(
                Method::DELETE,
                &path,
                "",
                &[("authorization", &format!("Bearer {ADMIN}"))],
            )
            .await
        }
    };
    let r = del("nobody").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("nobody"), "{}", r.error());
    assert_eq!(del("chat").await.status, StatusCode::OK);
    for (path, status) in [
        ("/v1/notifications/12345/resend", StatusCode::NOT_FOUND),
        ("/v1/notifications/twelve/resend", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(h.post(path, "").await.status, status, "{path}");
    }
    let r = h.get("/v1/notifications?state=lost").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Changes need the admin token.
    let r = h
        .request(
            Method::POST,
            "/v1/receivers",
            r#"{"name": "x", "url": "http://127.0.0.1:9/"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    h.close().await;
}
