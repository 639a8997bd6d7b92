//! MCP sessions: which resources each agent subscribed to, and the stream (`GET /mcp`) that
//! tells it `notifications/resources/updated` when one of them changes.
//!
//! A session is made by `initialize` and named by the `Mcp-Session-Id` header; it belongs to
//! the key that made it (another key's request naming it finds nothing). Sessions live in
//! memory: after a restart a client gets 404 and initializes again, as the transport says.
//! Everything is bounded: sessions (the oldest is dropped for a new one), subscriptions per
//! session, and streams (the API's `--max-sse` places, shared with `/v1/events`). The same
//! stream answers a 2026-07-28 `subscriptions/listen`, which needs no session.

use crate::controller::Controller;
use crate::slots::Slot;
use crate::sse::ChannelBody;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

pub const SESSION_HEADER: &str = "mcp-session-id";
/// Sessions held at once; a new one past this drops the oldest.
pub const MAX_SESSIONS: usize = 256;
/// Resources one session may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 64;
const ID_BYTES: usize = 16;

/// The server's sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
struct Session {
    key: String,
    /// Order of making, to drop the oldest.
    born: u64,
    /// Subscribed resource URIs.
    uris: BTreeSet<String>,
}

// === impl Sessions ===

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for `key`; `Err` when no random id can be made.
    pub fn open(&self, key: &str) -> Result<String, String> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| format!("no random session id: {e}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut by_id = self.lock();
        let born = by_id.values().map(|s| s.born + 1).max().unwrap_or(0);
        if by_id.len() >= MAX_SESSIONS {
            let oldest = by_id
                .iter()
                .min_by_key(|(_, s)| s.born)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                by_id.remove(&oldest);
            }
        }
        by_id.insert(
            id.clone(),
            Session {
                key: key.to_owned(),
                born,
                uris: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    /// Whether `id` is a session of `key`.
    pub fn exists(&self, id: &str, key: &str) -> bool {
        self.lock().get(id).is_some_and(|s| s.key == key)
    }

    /// Ends `id`; `false` when `key` has no such session.
    pub fn close(&self, id: &str, key: &str) -> bool {
        let mut by_id = self.lock();
        if by_id.get(id).is_some_and(|s| s.key == key) {
            by_id.remove(id);
            return true;
        }
        false
    }

    /// `Err` names the limit, or says the session is gone.
    pub fn subscribe(&self, id: &str, uri: &str) -> Result<(), String> {
        let mut by_id = self.lock();
        let s = by_id
            .get_mut(id)
            .ok_or_else(|| "the session has ended: initialize again".to_owned())?;
        if !s.uris.contains(uri) && s.uris.len() >= MAX_SUBSCRIPTIONS {
            return Err(format!(
                "uri: this session already has {MAX_SUBSCRIPTIONS} subscriptions, the most it may"
            ));
        }
        s.uris.insert(uri.to_owned());
        Ok(())
    }

    pub fn unsubscribe(&self, id: &str, uri: &str) {
        if let Some(s) = self.lock().get_mut(id) {
            s.uris.remove(uri);
        }
    }

    /// The URIs of `id` an event of `rollout` changes (every one with `None`: events were
    /// missed); `None` when the session has ended.
    fn touched(&self, id: &str, rollout: Option<&str>) -> Option<Vec<String>> {
        let by_id = self.lock();
        let s = by_id.get(id)?;
        Some(
            s.uris
                .iter()
                .filter(|u| rollout.is_none_or(|r| crate::mcp::uri_names(u, r)))
                .cloned()
                .collect(),
        )
    }
}

/// Who a stream tells: a handshake-era session (its subscriptions change while it runs), or a
/// 2026-07-28 `subscriptions/listen` (its URIs fixed by the request, every frame tagged with
/// the request's id).
pub enum Listener {
    Session(Arc<Sessions>, String),
    Listen {
        uris: Vec<String>,
        subscription: Value,
    },
}

/// 2026-07-28: the `_meta` key naming the `subscriptions/listen` a frame belongs to.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

// === impl Listener ===

impl Listener {
    /// The URIs an event of `rollout` changes (every one with `None`: events were missed);
    /// `None` when the session has ended.
    fn touched(&self, rollout: Option<&str>) -> Option<Vec<String>> {
        match self {
            Listener::Session(sessions, id) => sessions.touched(id, rollout),
            Listener::Listen { uris, .. } => Some(
                uris.iter()
                    .filter(|u| rollout.is_none_or(|r| crate::mcp::uri_names(u, r)))
                    .cloned()
                    .collect(),
            ),
        }
    }

    fn open(&self) -> bool {
        match self {
            Listener::Session(sessions, id) => sessions.lock().contains_key(id),
            Listener::Listen { .. } => true,
        }
    }

    /// The first frame: a comment for a session; for a listen, its acknowledgement naming
    /// what it will be told (only resource updates: nothing else here changes).
    fn first(&self) -> Bytes {
        match self {
            Listener::Session(..) => Bytes::from_static(b": connected\n\n"),
            Listener::Listen { uris, subscription } => frame(&json!({
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {
                    "notifications": {"resourceSubscriptions": uris},
                    "_meta": {SUBSCRIPTION_ID: subscription},
                },
            })),
        }
    }

    /// One `notifications/resources/updated` as an SSE frame.
    fn updated(&self, uri: &str) -> Bytes {
        let mut params = json!({"uri": uri});
        if let Listener::Listen { subscription, .. } = self {
            params["_meta"] = json!({SUBSCRIPTION_ID: subscription});
        }
        frame(&json!({
            "jsonrpc": "2.0",
            "method": "notifications/resources/updated",
            "params": params,
        }))
    }
}

fn frame(msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {msg}\n\n"))
}

/// The stream of `listener`, holding `slot`: the session's `GET /mcp` until the session ends,
/// or a `subscriptions/listen` response; either until the client goes or the server stops.
pub fn stream(
    slot: Slot,
    ctl: &Controller,
    listener: Listener,
    heartbeat: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut live = ctl.subscribe();
    tokio::spawn(async move {
        if tx.send(listener.first()).await.is_err() {
            return;
        }
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            let rollout = tokio::select! {
                got = live.recv() => match got {
                    Ok(ev) => match &ev.rollout {
                        Some(r) => Some(r.clone()),
                        None => continue,
                    },
                    // Too slow to follow: whatever it subscribed to may have changed.
                    Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = beat.tick() => {
                    // A session ended (or dropped for a newer one) ends its quiet stream too.
                    if !listener.open() || tx.send(Bytes::from_static(b": heartbeat\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
                _ = crate::signal::stopped(&mut shutdown) => return,
            };
            let Some(uris) = listener.touched(rollout.as_deref()) else {
                return;
            };
            for uri in uris {
                if tx.send(listener.updated(&uri)).await.is_err() {
                    return;
                }
            }
        }
    });
    ChannelBody::new(rx, slot).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_belong_to_their_key_and_are_bounded() {
        let s = Sessions::default();
        let a = s.open("alice").unwrap();
        assert!(s.exists(&a, "alice"));
        assert!(!s.exists(&a, "bob"));
        assert!(!s.close(&a, "bob"));
        s.subscribe(&a, "linnet://rollouts/x").unwrap();
        assert_eq!(
            s.touched(&a, Some("x")),
            Some(vec!["linnet://rollouts/x".to_owned()])
        );
        assert_eq!(s.touched(&a, Some("y")), Some(vec![]));
        for i in 0..MAX_SUBSCRIPTIONS - 1 {
            s.subscribe(&a, &format!("linnet://rollouts/r{i}")).unwrap();
        }
        let e = s.subscribe(&a, "linnet://rollouts/one-more").unwrap_err();
        assert!(e.starts_with("uri: this session already has 64"), "{e}");
        assert!(s.close(&a, "alice"));
        assert_eq!(s.touched(&a, None), None);

        let first = s.open("k").unwrap();
        for _ in 0..MAX_SESSIONS {
            s.open("k").unwrap();
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert!(!s.exists(&first, "k"), "the oldest was dropped");
    }
}
