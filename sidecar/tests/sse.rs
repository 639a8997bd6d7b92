//! Server-sent events: read some, disconnect, reconnect with Last-Event-ID (header or query)
//! and receive every later event exactly once, replayed and then live.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use linnet_sidecar::api::Body;
use std::time::Duration;

/// Reads an event stream's frames as they arrive.
struct Stream {
    body: Body,
    buf: String,
}

#[derive(Debug, PartialEq)]
enum Frame {
    Event {
        id: i64,
        kind: String,
        data: serde_json::Value,
    },
    Comment(String),
}

impl Stream {
    async fn open(h: &Harness, uri: &str, last_event_id: Option<&str>) -> Stream {
        let mut b = Request::get(uri);
        if let Some(id) = last_event_id {
            b = b.header("last-event-id", id);
        }
        let resp = h.app.handle(b.body(Full::new(Bytes::new())).unwrap()).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Stream {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                if let Some(c) = raw.strip_prefix(": ") {
                    return Frame::Comment(c.trim().to_owned());
                }
                let mut id = 0;
                let mut kind = String::new();
                let mut data = serde_json::Value::Null;
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().unwrap();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        kind = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(v).unwrap();
                    }
                }
                return Frame::Event { id, kind, data };
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("no frame within 10 s")
                .expect("stream ended")
                .unwrap();
            self.buf
                .push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
    }

    /// The next `n` events, skipping comments.
    async fn events(&mut self, n: usize) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Frame::Event { id, kind, data } = self.next().await {
                assert_eq!(data["id"], id);
                out.push((id, kind));
            }
        }
        out
    }
}

#[tokio::test]
async fn resumes_with_last_event_id_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config();
    config.heartbeat = Duration::from_millis(50);
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
    let spec = "name: s\nsteps: [{weight: 1, pause: 1h}, {weight: 2, pause: 1h}, {weight: 100}]";
    h.create_yaml(spec).await; // events 1 (created), 2 (started)

    let mut s = Stream::open(&h, "/v1/events", None).await;
    assert_eq!(s.next().await, Frame::Comment("connected".into()));
    assert_eq!(
        s.events(2).await,
        vec![(1, "created".into()), (2, "started".into())]
    );
    // Live after the replay.
    h.post("/v1/rollouts/s/pause", "").await; // 3
    assert_eq!(s.events(1).await, vec![(3, "paused".into())]);
    // Heartbeats while idle.
    loop {
        if s.next().await == Frame::Comment("heartbeat".into()) {
            break;
        }
    }
    drop(s); // disconnect

    h.post("/v1/rollouts/s/resume", "").await; // 4
    h.post("/v1/kill-switch", r#"{"on": true}"#).await; // 5, global
    let mut s = Stream::open(&h, "/v1/events", Some("3")).await;
    // Commit more while the replay may still be running: no gap, no duplicate.
    h.post("/v1/rollouts/s/promote", "").await; // 6
    h.post("/v1/rollouts/s/weight", r#"{"weight": 3}"#).await; // 7
    let got = s.events(4).await;
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![4, 5, 6, 7]);
    assert_eq!(got[1].1, "kill_switch");
    h.post("/v1/rollouts/s/abort", "").await; // 8
    assert_eq!(s.events(1).await, vec![(8, "aborted".into())]);

    // The query form (EventSource sends no headers) and the rollout filter.
    let mut s = Stream::open(&h, "/v1/events?rollout=s&last_event_id=4", None).await;
    let ids: Vec<i64> = s.events(3).await.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![6, 7, 8]);
    h.close().await;
}

#[tokio::test]
async fn sse_takes_the_token_in_the_query_when_reads_are_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config();
    config.auth.open_reads = false;
    let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
    let r = h.get("/v1/events").await;
    assert_eq!(r.status, 401);
    let mut s = Stream::open(&h, &format!("/v1/events?token={ADMIN}"), None).await;
    assert_eq!(s.next().await, Frame::Comment("connected".into()));
    // The query token is only for the event stream.
    assert_eq!(
        h.get(&format!("/v1/rollouts?token={ADMIN}")).await.status,
        401
    );
    h.close().await;
}
