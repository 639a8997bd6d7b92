//! No read shows a secret: after rollouts with an override token have been created,
//! controlled and archived, no read endpoint's body carries the token, and the events table
//! never stored it; only the filters' snapshot (poll token) and the rollouts table hold it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use linnet_sidecar::spec::REDACTED;
use std::time::Duration;

const TOKEN: &str = "override-s3cret-7f3a";

fn spec(name: &str) -> String {
    format!(
        "name: {name}\nmatch: {{authority: shop.example}}\nstickiness: [{{header: x-user-id}}]\n\
         override: {{header: x-linnet-override, token_header: x-linnet-override-token, token: {TOKEN}}}\n\
         steps: [{{weight: 5, pause: 1h}}, {{weight: 50, pause: until promoted}}, {{weight: 100}}]"
    )
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Every event the stream replays after `after`, as raw text, up to event `last`.
async fn sse_text(h: &Harness, after: i64, last: i64) -> String {
    let req = Request::get(format!("/v1/events?last_event_id={after}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = h.app.handle(req).await.into_body();
    let mut out = String::new();
    while !out.contains(&format!("id: {last}\n")) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no event within 10 s")
            .expect("stream ended")
            .unwrap();
        out.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    out
}

#[tokio::test]
async fn no_read_endpoint_shows_the_override_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let h = Harness::open(&db, EPOCH_MS);

    // The answers to mutations are reads too.
    let mut bodies: Vec<(String, Bytes)> = Vec::new();
    let r = h.create_yaml(&spec("checkout")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", text(&r.body));
    let first = r.json()["id"].as_i64().unwrap();
    bodies.push(("create".into(), r.body));
    for control in ["pause", "resume", "promote", "abort"] {
        let r = h
            .post(&format!("/v1/rollouts/checkout/{control}"), "")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{control}: {}", text(&r.body));
        bodies.push((control.into(), r.body));
    }
    // The next release of the name: one archived, one live.
    let r = h.create_yaml(&spec("checkout")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", text(&r.body));
    bodies.push(("create again".into(), r.body));

    let status = h.status("checkout").await;
    assert_eq!(status["spec"]["override"]["token"], REDACTED, "{status}");
    assert_eq!(
        status["spec"]["override"]["token_header"],
        "x-linnet-override-token"
    );
    let archived = h.status(&first.to_string()).await;
    assert_eq!(archived["finished"], true);
    assert_eq!(archived["spec"]["override"]["token"], REDACTED);

    let reads = [
        "/v1/rollouts".to_owned(),
        "/v1/rollouts/checkout".to_owned(),
        format!("/v1/rollouts/{first}"),
        "/v1/rollouts/checkout/explain?limit=1000".to_owned(),
        format!("/v1/rollouts/{first}/explain?limit=1000"),
        "/v1/history".to_owned(),
        "/v1/history?match=shop.example&name=checkout".to_owned(),
        "/v1/audit?limit=1000".to_owned(),
        "/v1/audit?rollout=checkout&limit=1000".to_owned(),
        "/metrics".to_owned(),
    ];
    for path in &reads {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", text(&r.body));
        bodies.push((path.clone(), r.body));
    }
    let audit = h.get("/v1/audit?limit=1000").await.json();
    let last = audit["next_after"].as_i64().unwrap();
    assert!(last >= 7, "{audit}");
    let sse = sse_text(&h, 0, last).await;
    assert!(sse.contains("event: created"), "{sse}");
    bodies.push(("/v1/events".into(), Bytes::from(sse)));

    for (what, body) in &bodies {
        let body = text(body);
        assert!(!body.contains(TOKEN), "{what} shows the token: {body}");
    }
    // The listing and status do say that a token is set.
    assert!(text(&bodies[0].1).contains(REDACTED));
    assert!(text(&h.get("/v1/rollouts").await.body).contains(REDACTED));

    // The filters need the real token, and get it with the poll token.
    let r = h
        .request(
            Method::GET,
            "/v1/snapshot",
            "",
            &[("authorization", &format!("Bearer {POLL}"))],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = linnet_core::SnapshotDoc::from_json(&r.body).unwrap();
    let served = doc.rollouts[0].override_.as_ref().unwrap();
    assert_eq!(served.token.as_deref(), Some(TOKEN));
    h.close().await;

    // The store: the rollouts table is the truth and keeps the token; no event has it.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let with_token = |table: &str, column: &str| -> i64 {
        conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE instr({column}, ?1) > 0"),
            [TOKEN],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(with_token("rollouts", "spec"), 2);
    assert_eq!(with_token("events", "data"), 0);
    let events: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, last);
}
