//! Retention: archived rollouts' audit and global events are pruned by age and by count,
//! on the policy's timer; every live rollout's audit and every release stay, and event ids
//! keep growing past what was pruned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use linnet_sidecar::retention::Retention;
use linnet_sidecar::store::Pruned;
use std::time::Duration;
use tokio::sync::watch;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn spec(name: &str) -> String {
    format!("name: {name}\nmatch: {{authority: {name}.example}}\nsteps: [{{weight: 5, pause: 1h}}, {{weight: 100}}]")
}

/// A rollout created and aborted now: archived.
async fn archived(h: &Harness, name: &str) {
    assert_eq!(h.create_yaml(&spec(name)).await.status, 201);
    assert_eq!(
        h.post(&format!("/v1/rollouts/{name}/abort"), "")
            .await
            .status,
        200
    );
}

/// The ids of a name's events (all of its releases), oldest first.
async fn audit(h: &Harness, rollout: Option<&str>) -> Vec<i64> {
    let q = rollout.map_or(String::new(), |r| format!("&rollout={r}"));
    let r = h.get(&format!("/v1/audit?limit=1000{q}")).await;
    assert_eq!(r.status, 200);
    r.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

async fn history(h: &Harness) -> Vec<(String, Option<String>)> {
    h.get("/v1/history").await.json()["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

async fn metrics(h: &Harness) -> String {
    String::from_utf8(h.get("/metrics").await.body.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn prunes_archived_audit_by_age_on_its_timer_and_keeps_live_audit_and_every_release() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(EPOCH_MS);
    let h = Harness::open_manual(&dir.path().join("r.db"), clock.clone());
    // Day 0: `live` starts and never finishes; `old` is archived; the kill switch flips.
    assert_eq!(h.create_yaml(&spec("live")).await.status, 201);
    archived(&h, "old").await;
    h.post("/v1/kill-switch", r#"{"on": true}"#).await;
    h.post("/v1/kill-switch", r#"{"on": false}"#).await;
    // Day 20: `recent` is archived.
    clock.advance(20 * DAY_MS);
    archived(&h, "recent").await;
    let (live, old, recent) = (
        audit(&h, Some("live")).await,
        audit(&h, Some("old")).await,
        audit(&h, Some("recent")).await,
    );
    let all = audit(&h, None).await;
    assert_eq!(all.len(), live.len() + old.len() + recent.len() + 2);
    assert!(!old.is_empty());

    // Day 31: `old` finished 31 days ago, the global events are 31 days old; `live` started
    // 31 days ago too, but it is not finished.
    clock.advance(11 * DAY_MS);
    let (stop, rx) = watch::channel(false);
    let task = Retention {
        interval: Duration::from_secs(60),
        ..Retention::default()
    }
    .spawn(h.ctl.clone(), rx);
    sleep_ms(1_000).await; // the first prune runs at once
    assert!(audit(&h, Some("old")).await.is_empty());
    assert_eq!(audit(&h, Some("live")).await, live);
    assert_eq!(audit(&h, Some("recent")).await, recent);
    assert_eq!(audit(&h, None).await.len(), live.len() + recent.len());
    let m = metrics(&h).await;
    let pruned = old.len() + 2;
    assert!(
        m.contains(&format!(
            r#"linnet_store_pruned_total{{table="events"}} {pruned}"#
        )),
        "{m}"
    );
    assert!(
        m.contains(r#"linnet_store_pruned_total{table="transitions"}"#),
        "{m}"
    );
    // Every release stays, and `old` keeps its last transition: the history's reason.
    let hist = history(&h).await;
    let names: Vec<&str> = hist.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["recent", "old", "live"]);
    assert!(hist.iter().all(|(_, reason)| reason.is_some()), "{hist:?}");
    let old_status = h.status("old").await;
    assert_eq!(old_status["state"], "aborted");
    assert_eq!(old_status["transitions"].as_array().unwrap().len(), 1);

    // On the timer, not only at start: 30 more days and `recent` goes too.
    clock.advance(30 * DAY_MS);
    sleep_ms(60_000).await;
    assert!(audit(&h, Some("recent")).await.is_empty());
    assert_eq!(audit(&h, Some("live")).await, live);
    stop.send_replace(true);
    task.await.unwrap();
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn prunes_the_oldest_archived_events_by_count_and_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(EPOCH_MS);
    let h = Harness::open_manual(&dir.path().join("r.db"), clock.clone());
    assert_eq!(h.create_yaml(&spec("live")).await.status, 201);
    archived(&h, "a").await;
    archived(&h, "b").await; // the newest event of all is b's
    let (live, a, b) = (
        audit(&h, Some("live")).await,
        audit(&h, Some("a")).await,
        audit(&h, Some("b")).await,
    );
    let all = audit(&h, None).await;
    let newest = *all.last().unwrap();
    assert_eq!(b.last(), Some(&newest));
    assert!(live[0] < a[0], "live's are the oldest events");
    let total = u64::try_from(all.len()).unwrap();

    // Two over the count: a's first two go, not live's, though they are older.
    let policy = |max_events| Retention {
        max_events,
        ..Retention::default()
    };
    let pruned = policy(total - 2).prune(&h.ctl).await.unwrap();
    assert_eq!((pruned.events, pruned.checks), (2, 0));
    assert_eq!(audit(&h, Some("a")).await, a[2..]);
    assert_eq!(audit(&h, Some("live")).await, live);
    // Nothing is due again at the same count.
    assert_eq!(
        policy(total - 2).prune(&h.ctl).await.unwrap(),
        Pruned::default()
    );

    // A count below what live rollouts hold: every archived event goes, no live one.
    let pruned = policy(1).prune(&h.ctl).await.unwrap();
    assert_eq!(
        usize::try_from(pruned.events).unwrap(),
        a.len() - 2 + b.len()
    );
    assert_eq!(audit(&h, None).await, live);
    assert_eq!(history(&h).await.len(), 3);
    assert_eq!(h.status("live").await["state"], "progressing");

    // The newest id was pruned; the next event's id is still above it, so a stream resuming
    // from it (Last-Event-ID) gets the new event.
    h.post("/v1/kill-switch", r#"{"on": true}"#).await;
    let after = audit(&h, None).await;
    assert_eq!(after.len(), live.len() + 1);
    assert!(*after.last().unwrap() > newest, "{after:?} after {newest}");
    let r = h.get(&format!("/v1/audit?after={newest}")).await;
    assert_eq!(r.json()["events"].as_array().unwrap().len(), 1);
    h.close().await;
}
