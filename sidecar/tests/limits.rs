//! Caps on requests that stay open: event streams and held snapshot polls past their limit
//! are answered 503 with the cap named and Retry-After; a place is freed when its request
//! ends, including when the client goes mid-stream or mid-poll.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use linnet_sidecar::api::Body;
use tokio::task::JoinHandle;

async fn metrics(h: &Harness) -> String {
    String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap()
}

async fn open_stream(h: &Harness) -> Response<Body> {
    let req = Request::get("/v1/events")
        .body(Full::new(Bytes::new()))
        .unwrap();
    h.app.handle(req).await
}

#[tokio::test]
async fn event_streams_past_the_cap_get_503_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config();
    config.max_sse = 2;
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
    let a = open_stream(&h).await;
    let mut b = open_stream(&h).await;
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));

    let r = h.get("/v1/events").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "5");
    let e = r.error();
    assert!(e.contains("all 2 are open"), "{e}");
    assert!(e.contains("--max-sse"), "{e}");
    assert!(e.contains("Last-Event-ID"), "{e}");

    // The client goes mid-stream (after its first frame): its place is free at once.
    let first = b.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), b": connected\n\n");
    drop(b);
    let c = open_stream(&h).await;
    assert_eq!(c.status(), StatusCode::OK);
    assert_eq!(
        h.get("/v1/events").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let m = metrics(&h).await;
    assert!(
        m.contains(r#"linnet_api_rejected_total{limit="sse"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"linnet_api_slots_in_use{limit="sse"} 2"#),
        "{m}"
    );
    drop((a, c));
    let m = metrics(&h).await;
    assert!(
        m.contains(r#"linnet_api_slots_in_use{limit="sse"} 0"#),
        "{m}"
    );
    assert_eq!(open_stream(&h).await.status(), StatusCode::OK);
    h.close().await;
}

const POLL_AUTH: [(&str, &str); 1] = [("authorization", "Bearer poll-token")];

/// A poll at `version`, the current one: held until a change or `timeout_ms`.
fn held_poll(h: &Harness, version: &str, timeout_ms: u64) -> JoinHandle<StatusCode> {
    let app = h.app.clone();
    let uri = format!("/v1/snapshot?version={version}&timeout_ms={timeout_ms}");
    tokio::spawn(async move {
        let req = Request::get(uri)
            .header(POLL_AUTH[0].0, POLL_AUTH[0].1)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = app.handle(req).await;
        let status = resp.status();
        resp.into_body().collect().await.unwrap();
        status
    })
}

#[tokio::test(start_paused = true)]
async fn held_polls_past_the_cap_get_503_until_one_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config();
    config.max_polls = 2;
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
    let p1 = held_poll(&h, "0", 300_000);
    let p2 = held_poll(&h, "0", 300_000);
    sleep_ms(10).await;
    assert!(!p1.is_finished() && !p2.is_finished());

    let full = "/v1/snapshot?version=0&timeout_ms=300000";
    let r = h.request(Method::GET, full, "", &POLL_AUTH).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "5");
    // The poller still learns the current version.
    assert_eq!(r.headers["x-linnet-version"], "0");
    let e = r.error();
    assert!(e.contains("all 2 are waiting"), "{e}");
    assert!(e.contains("--max-polls"), "{e}");
    // A poll answered at once (no version, or an old one) is not held, so not capped.
    let r = h.request(Method::GET, "/v1/snapshot", "", &POLL_AUTH).await;
    assert_eq!(r.status, StatusCode::OK);

    // The client goes mid-poll: its place is free, and a new poll is held again.
    p1.abort();
    assert!(p1.await.unwrap_err().is_cancelled());
    let p3 = held_poll(&h, "0", 300_000);
    sleep_ms(10).await;
    assert!(!p3.is_finished());
    let r = h.request(Method::GET, full, "", &POLL_AUTH).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);

    // A change answers the held polls, and frees their places.
    assert_eq!(h.create_yaml(CHECKOUT).await.status, 201);
    assert_eq!(p2.await.unwrap(), StatusCode::OK);
    assert_eq!(p3.await.unwrap(), StatusCode::OK);
    let m = metrics(&h).await;
    assert!(
        m.contains(r#"linnet_api_slots_in_use{limit="polls"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"linnet_api_rejected_total{limit="polls"} 2"#),
        "{m}"
    );
    // Polls that time out (304) free their places too.
    let r = h.request(Method::GET, "/v1/snapshot", "", &POLL_AUTH).await;
    let v = r.headers["x-linnet-version"].to_str().unwrap().to_owned();
    let (p4, p5) = (held_poll(&h, &v, 1_000), held_poll(&h, &v, 1_000));
    sleep_ms(10).await;
    let at_v = format!("/v1/snapshot?version={v}&timeout_ms=1000");
    let r = h.request(Method::GET, &at_v, "", &POLL_AUTH).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p4.await.unwrap(), StatusCode::NOT_MODIFIED);
    assert_eq!(p5.await.unwrap(), StatusCode::NOT_MODIFIED);
    let p6 = held_poll(&h, &v, 1_000);
    assert_eq!(p6.await.unwrap(), StatusCode::NOT_MODIFIED);
    let m = metrics(&h).await;
    assert!(
        m.contains(r#"linnet_api_slots_in_use{limit="polls"} 0"#),
        "{m}"
    );
    assert!(
        m.contains(r#"linnet_api_rejected_total{limit="polls"} 3"#),
        "{m}"
    );
    h.close().await;
}

/// A body whose client stops sending: it never ends.
struct Stalled;

impl hyper::body::Body for Stalled {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stops_arriving_is_answered_408_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, api_config());
    let before = h.fingerprint().await;
    for (method, path) in [
        (Method::POST, "/v1/rollouts"),
        (Method::POST, "/v1/kill-switch"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Stalled)
            .unwrap();
        let resp = h.app.handle(req).await;
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["error"], "the body did not arrive within 30s (serve --body-timeout)",
            "{path}"
        );
    }
    assert_eq!(h.fingerprint().await, before);
}
