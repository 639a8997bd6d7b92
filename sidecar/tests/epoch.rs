//! The snapshot long-poll and the sidecar's epoch: every run serves its own, a poller from
//! another epoch (or none yet) is answered at once whatever its version, and one that sends
//! no epoch is held as before epochs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use linnet_core::SnapshotDoc;

const AUTH: [(&str, &str); 1] = [("authorization", "Bearer poll-token")];

async fn poll(h: &Harness, query: &str) -> Reply {
    let path = format!("/v1/snapshot?{query}&timeout_ms=500");
    h.request(Method::GET, &path, "", &AUTH).await
}

/// The epoch a snapshot answer names, checked to be the same in its body and its header.
fn epoch_of(r: &Reply) -> String {
    let doc = SnapshotDoc::from_json(&r.body).unwrap();
    let epoch = doc.epoch.unwrap().to_string();
    assert_eq!(r.headers["x-linnet-epoch"], epoch.as_str());
    epoch
}

#[tokio::test(start_paused = true)]
async fn a_poller_from_another_epoch_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    h.create_yaml(CHECKOUT).await;
    let r = poll(&h, "").await;
    assert_eq!(r.status, StatusCode::OK);
    let epoch = epoch_of(&r);
    let v = SnapshotDoc::from_json(&r.body).unwrap().version;
    assert!(v > 0);

    // This run's version: held, and the 304 names the epoch too.
    let r = poll(&h, &format!("version={v}&epoch={epoch}")).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers["x-linnet-epoch"], epoch.as_str());
    // The same number from another run, or from a filter that has no epoch yet: at once.
    for other in ["0123456789abcdef", ""] {
        let r = poll(&h, &format!("version={v}&epoch={other}")).await;
        assert_eq!(r.status, StatusCode::OK, "epoch {other:?}");
        assert_eq!(epoch_of(&r), epoch);
    }
    // A version this run never served (a database since replaced counted higher): at once.
    let r = poll(&h, &format!("version={}&epoch={epoch}", v + 7)).await;
    assert_eq!(r.status, StatusCode::OK);
    // A filter from before epochs sends none: held as it always was.
    let r = poll(&h, &format!("version={v}")).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn every_run_has_its_own_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let h = Harness::open(&db, EPOCH_MS);
    h.create_yaml(CHECKOUT).await;
    let first = epoch_of(&poll(&h, "").await);
    let at = h.close().await;
    // The same database: the versions go on, the epoch is new all the same (a restored
    // backup looks just like this, with versions below the ones served before).
    let h = Harness::open(&db, at);
    let again = poll(&h, "").await;
    assert_ne!(epoch_of(&again), first);
    assert!(SnapshotDoc::from_json(&again.body).unwrap().version > 0);
    h.close().await;
    // An empty database counts from 0 again, under another epoch.
    let h = Harness::open(&dir.path().join("empty.db"), at);
    let fresh = poll(&h, "").await;
    assert_ne!(epoch_of(&fresh), first);
    assert_eq!(SnapshotDoc::from_json(&fresh.body).unwrap().version, 0);
    h.close().await;
}
