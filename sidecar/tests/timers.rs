//! Rollouts moving on their own: timed steps, manual gates, deadlines and restarts, in tokio's
//! paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::StatusCode;

#[tokio::test(start_paused = true)]
async fn steps_through_weights_on_timers() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let r = h.create_yaml(CHECKOUT).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let s = r.json();
    assert_eq!(
        (
            s["state"].as_str(),
            s["step"].as_u64(),
            s["weight"].as_f64()
        ),
        (Some("progressing"), Some(0), Some(5.0))
    );
    assert_eq!(s["remaining_pause_ms"], 30_000);

    sleep_ms(29_000).await;
    let s = h.status("checkout").await;
    assert_eq!(
        (s["step"].as_u64(), s["remaining_pause_ms"].as_i64()),
        (Some(0), Some(1_000))
    );

    sleep_ms(2_000).await;
    let s = h.status("checkout").await;
    assert_eq!(
        (s["step"].as_u64(), s["weight"].as_f64()),
        (Some(1), Some(5.0))
    );
    assert_eq!(s["mirror"]["cluster"], "checkout-shadow");
    assert_eq!(s["mirror"]["percent"], 100.0);

    sleep_ms(60_000).await;
    let s = h.status("checkout").await;
    assert_eq!(
        (
            s["step"].as_u64(),
            s["weight"].as_f64(),
            s["at_gate"].as_bool()
        ),
        (Some(2), Some(50.0), Some(true))
    );
    assert!(s["mirror"].is_null());
    assert!(s["remaining_pause_ms"].is_null());
    // Transitions so far: pending → progressing, then two step advances.
    let t = s["transitions"].as_array().unwrap();
    assert_eq!(t.len(), 3, "{t:?}");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn manual_gate_waits_for_promote() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    h.create_yaml("name: gated\nsteps: [{weight: 10, pause: until promoted}, {weight: 100}]")
        .await;
    sleep_ms(3_600_000).await;
    let s = h.status("gated").await;
    assert_eq!(
        (
            s["state"].as_str(),
            s["weight"].as_f64(),
            s["at_gate"].as_bool()
        ),
        (Some("progressing"), Some(10.0), Some(true))
    );
    let r = h.post("/v1/rollouts/gated/promote", "").await;
    assert_eq!(r.status, StatusCode::OK);
    // The last step has no pause, so it completes at once.
    let s = r.json();
    assert_eq!(
        (s["state"].as_str(), s["weight"].as_f64()),
        (Some("promoted"), Some(100.0))
    );
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn deadline_times_out_and_leaves_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    h.create_yaml("name: slow\ndeadline: 10m\nsteps: [{weight: 20, pause: 1h}, {weight: 100}]")
        .await;
    sleep_ms(9 * 60_000).await;
    assert_eq!(h.status("slow").await["state"], "progressing");
    sleep_ms(61_000).await;
    let s = h.status("slow").await;
    assert_eq!(
        (s["state"].as_str(), s["weight"].as_f64()),
        (Some("timed_out"), Some(0.0))
    );
    let snap = h
        .request(
            hyper::Method::GET,
            "/v1/snapshot",
            "",
            &[("authorization", &format!("Bearer {POLL}"))],
        )
        .await
        .json();
    // Timed out: archived, out of the snapshot, so the route's stable cluster serves all.
    assert_eq!(snap["rollouts"], serde_json::json!([]), "{snap}");
    assert_eq!(s["finished"], true);
    assert!(s["finished_at_ms"].as_i64().is_some(), "{s}");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn restart_resumes_at_the_same_step_with_the_remaining_pause() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let h = Harness::open(&db, EPOCH_MS);
    h.create_yaml(
        "name: a\nmatch: {authority: a.example}\nsteps: [{weight: 5, pause: 30s}, {weight: 20, pause: 1m}, {weight: 100}]",
    )
    .await;
    h.create_yaml(
        "name: b\nmatch: {authority: b.example}\nsteps: [{weight: 5, pause: 10s}, {weight: 20, pause: 1m}, {weight: 100}]",
    )
    .await;
    sleep_ms(40_000).await; // a: step 1 with 50s left; b: step 1 with 30s left
    let (version, _, events) = h.fingerprint().await;
    let before = h.get("/v1/audit?limit=1000").await.json();
    let stopped_at = h.close().await;

    // Down for 40 s: a's step 1 has 10 s left; b's step 1 ended 10 s ago and advances at once.
    let h = Harness::open(&db, stopped_at + 40_000);
    let a = h.status("a").await;
    assert_eq!(
        (
            a["state"].as_str(),
            a["step"].as_u64(),
            a["remaining_pause_ms"].as_i64()
        ),
        (Some("progressing"), Some(1), Some(10_000))
    );
    sleep_ms(1).await;
    let b = h.status("b").await;
    assert_eq!(
        (b["state"].as_str(), b["weight"].as_f64()),
        (Some("promoted"), Some(100.0))
    );
    sleep_ms(10_000).await;
    let a = h.status("a").await;
    assert_eq!(a["state"], "promoted");

    let (version2, _, events2) = h.fingerprint().await;
    assert!(version2 > version, "{version2} > {version}");
    assert!(events2 > events);
    // Event ids are contiguous across the restart, and the old ones are unchanged.
    let after = h.get("/v1/audit?limit=1000").await.json();
    let ids: Vec<i64> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        &after["events"].as_array().unwrap()[..before["events"].as_array().unwrap().len()],
        before["events"].as_array().unwrap().as_slice()
    );
    h.close().await;
}
