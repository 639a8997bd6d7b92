//! Server-sent events: replay from the store after the client's last id, then live events,
//! with heartbeats. Subscribing before the replay and skipping ids already sent leaves no gap
//! and no duplicate at the switch-over.

use crate::controller::Controller;
use crate::slots::Slot;
use crate::store::Event;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How many stored events are read per replay query.
const REPLAY_BATCH: usize = 500;

/// A response body fed by a channel; it ends when the sender is dropped. It holds the
/// stream's place, given back when the server drops the body (the stream ended or the
/// client went away).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    _slot: Slot,
}

impl ChannelBody {
    /// A body of what `rx` receives, holding `slot` until it is dropped.
    pub fn new(rx: mpsc::Receiver<Bytes>, slot: Slot) -> ChannelBody {
        ChannelBody { rx, _slot: slot }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// One event as an SSE frame.
pub fn frame(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        event.id,
        event.kind()
    ))
}

/// Starts a stream of events after `after`, optionally for one rollout, holding `slot`.
pub fn stream(
    slot: Slot,
    ctl: Controller,
    after: i64,
    rollout: Option<String>,
    heartbeat: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    // Subscribe before replaying, so nothing committed meanwhile is missed.
    let mut live = ctl.subscribe();
    tokio::spawn(async move {
        let mut last = after;
        // A comment first, so the client sees the stream is open even before any event.
        if tx
            .send(Bytes::from_static(b": connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        if !replay(&ctl, &tx, &mut last, rollout.as_deref()).await {
            return;
        }
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            tokio::select! {
                got = live.recv() => match got {
                    Ok(ev) => {
                        if !send_if_new(&tx, &ev, &mut last, rollout.as_deref()).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the live stream: catch up from the store instead.
                        if !replay(&ctl, &tx, &mut last, rollout.as_deref()).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = beat.tick() => {
                    if tx.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                _ = crate::signal::stopped(&mut shutdown) => return,
            }
        }
    });
    ChannelBody { rx, _slot: slot }.boxed()
}

/// Sends stored events after `last`; `false` when the client is gone or the store failed.
async fn replay(
    ctl: &Controller,
    tx: &mpsc::Sender<Bytes>,
    last: &mut i64,
    rollout: Option<&str>,
) -> bool {
    loop {
        let batch = match ctl
            .events(*last, rollout.map(str::to_owned), REPLAY_BATCH)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "event replay failed");
                return false;
            }
        };
        let n = batch.len();
        for ev in batch {
            if !send_if_new(tx, &Arc::new(ev), last, rollout).await {
                return false;
            }
        }
        if n < REPLAY_BATCH {
            return true;
        }
    }
}

async fn send_if_new(
    tx: &mpsc::Sender<Bytes>,
    ev: &Arc<Event>,
    last: &mut i64,
    rollout: Option<&str>,
) -> bool {
    if ev.id <= *last {
        return true;
    }
    // Ids of other rollouts' events still move `last`: they are behind us either way.
    *last = ev.id;
    if rollout.is_some_and(|r| ev.rollout.as_deref() != Some(r)) {
        return true;
    }
    tx.send(frame(ev)).await.is_ok()
}
