//! The lifecycle of one service released again and again: at most one unfinished rollout per
//! traffic match, complete to hand over, finished rollouts archived with their own ids, names
//! used again, history, explain by name or id, and who may be retried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::Value;

fn release(name: &str, host: &str) -> String {
    format!(
        "name: {name}\nmatch: {{authority: {host}}}\nstickiness: [{{header: x-user-id}}]\nsteps: [{{weight: 10, pause: 1m}}, {{weight: 100}}]\n"
    )
}

async fn snapshot(h: &Harness) -> Value {
    h.request(
        Method::GET,
        "/v1/snapshot",
        "",
        &[("authorization", &format!("Bearer {POLL}"))],
    )
    .await
    .json()
}

/// The names in the snapshot, in the order the filter tries them.
async fn served(h: &Harness) -> Vec<String> {
    snapshot(h).await["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn history(h: &Harness, query: &str) -> Vec<(String, String, i64)> {
    let r = h.get(&format!("/v1/history{query}")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["state"].as_str().unwrap().to_owned(),
                e["id"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn releases_of_one_host_follow_each_other_and_are_archived() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let v2 = h
        .create_yaml(&release("checkout-v2", "checkout.local"))
        .await;
    assert_eq!(v2.status, StatusCode::CREATED, "{:?}", v2.body);
    let v2_id = v2.json()["id"].as_i64().unwrap();
    let promoted = h
        .post("/v1/rollouts/checkout-v2/promote", r#"{"full": true}"#)
        .await
        .json();
    assert_eq!(promoted["state"], "promoted");

    // Promoted but not completed: still serving 100%, and the next release must wait.
    let before = h.fingerprint().await;
    let r = h
        .create_yaml(&release("checkout-v3", "checkout.local"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let msg = r.error();
    for word in [
        "checkout-v2",
        "checkout.local",
        "complete it first",
        "linnet rollout complete checkout-v2",
    ] {
        assert!(msg.contains(word), "{msg:?} should name {word:?}");
    }
    assert_eq!(
        h.fingerprint().await,
        before,
        "a refused create changed the store"
    );

    // Complete: out of the snapshot, archived.
    let done = h.post("/v1/rollouts/checkout-v2/complete", "").await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    let done = done.json();
    assert_eq!(
        (done["state"].as_str(), done["finished"].as_bool()),
        (Some("completed"), Some(true))
    );
    assert_eq!(served(&h).await, Vec::<String>::new());
    assert_eq!(
        h.get("/v1/rollouts").await.json()["rollouts"],
        serde_json::json!([])
    );

    // v3 routes at once, alone.
    let v3 = h
        .create_yaml(&release("checkout-v3", "checkout.local"))
        .await;
    assert_eq!(v3.status, StatusCode::CREATED, "{:?}", v3.body);
    assert_eq!(served(&h).await, ["checkout-v3"]);
    assert_eq!(snapshot(&h).await["rollouts"][0]["weight"], 10.0);
    let aborted = h.post("/v1/rollouts/checkout-v3/abort", "").await.json();
    assert_eq!(aborted["state"], "aborted");
    assert_eq!(served(&h).await, Vec::<String>::new());

    // A name used again once its rollout is finished: a new release with its own id.
    let again = h
        .create_yaml(&release("checkout-v2", "checkout.local"))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
    let again_id = again.json()["id"].as_i64().unwrap();
    assert!(again_id > v2_id);
    assert_eq!(h.status("checkout-v2").await["id"], again_id);
    // By id, the archived one is still there, with its outcome.
    let old = h.status(&v2_id.to_string()).await;
    assert_eq!(
        (old["name"].as_str(), old["state"].as_str()),
        (Some("checkout-v2"), Some("completed"))
    );
    let explain = h.get(&format!("/v1/rollouts/{v2_id}/explain")).await.json();
    assert_eq!(
        (explain["id"].as_i64(), explain["state"].as_str()),
        (Some(v2_id), Some("completed"))
    );
    let text = serde_json::to_string(&explain["timeline"]).unwrap();
    assert!(text.contains("stable runs the promoted version"), "{text}");
    let latest = h.get("/v1/rollouts/checkout-v2/explain").await.json();
    assert_eq!(latest["id"], again_id);

    // History: newest first, every release, with its outcome.
    let all = history(&h, "").await;
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|(n, s, _)| (n.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("checkout-v2", "progressing"),
            ("checkout-v3", "aborted"),
            ("checkout-v2", "completed")
        ]
    );
    assert_eq!(history(&h, "?name=checkout-v3").await.len(), 1);
    assert_eq!(history(&h, "?limit=1").await[0].2, again_id);
    h.create_yaml(&release("search", "search.local")).await;
    assert_eq!(history(&h, "?match=checkout.local").await.len(), 3);
    assert_eq!(history(&h, "?match=search.local").await.len(), 1);
    assert_eq!(history(&h, "?match=*.local").await.len(), 4);
    for bad in ["?limit=0", "?limit=x", "?limit=100000", "?match=a%20b"] {
        let r = h.get(&format!("/v1/history{bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn overlapping_matches_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let api = "name: api\nmatch: {authority: shop.local, path_prefix: /api}\nsteps: [{weight: 10, pause: 1h}]\n";
    assert_eq!(h.create_yaml(api).await.status, StatusCode::CREATED);
    let before = h.fingerprint().await;
    let list = h.get("/v1/rollouts").await.body;
    for (spec, other) in [
        // The whole host, the same prefix, a longer prefix, a wildcard over it, any host.
        (release("whole", "shop.local"), "host shop.local under /api"),
        ("name: same\nmatch: {authority: shop.local, path_prefix: /api}\nsteps: [{weight: 1}]\n".into(), "api"),
        ("name: deeper\nmatch: {authority: shop.local, path_prefix: /api/v2}\nsteps: [{weight: 1}]\n".into(), "api"),
        (release("wild", "'*.local'"), "api"),
        ("name: anyhost\nsteps: [{weight: 1}]\n".into(), "any host"),
    ] {
        let r = h.create_yaml(&spec).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{spec}: {:?}", r.body);
        let msg = r.error();
        assert!(msg.contains(other) && msg.contains("overlaps"), "{msg}");
        assert_eq!(h.fingerprint().await, before, "{spec} changed the store");
    }
    assert_eq!(h.get("/v1/rollouts").await.body, list);
    // A match that shares no request with it is fine.
    let web = "name: web\nmatch: {authority: shop.local, path_prefix: /web}\nsteps: [{weight: 1, pause: 1h}]\n";
    assert_eq!(h.create_yaml(web).await.status, StatusCode::CREATED);
    assert_eq!(
        h.create_yaml(&release("other", "other.local")).await.status,
        StatusCode::CREATED
    );
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn complete_and_retry_are_refused_where_they_would_do_harm() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    h.create_yaml(&release("a", "a.local")).await;
    let r = h.post("/v1/rollouts/a/complete", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.error().contains("only a promoted rollout"),
        "{}",
        r.error()
    );
    let r = h.post("/v1/rollouts/a/complete", r#"{"x": 1}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = h.post("/v1/rollouts/nope/complete", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h.post("/v1/rollouts/999/complete", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.error().contains("id 999"), "{}", r.error());

    // Rolled back, then another release took the host: the old one cannot come back.
    let first = h.post("/v1/rollouts/a/abort", "").await.json();
    let first_id = first["id"].as_i64().unwrap();
    assert_eq!(
        h.create_yaml(&release("b", "a.local")).await.status,
        StatusCode::CREATED
    );
    let r = h.post("/v1/rollouts/a/retry", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.error().contains("\"b\""), "{}", r.error());
    h.post("/v1/rollouts/b/abort", "").await;
    // Once the host is free again it can.
    let back = h.post("/v1/rollouts/a/retry", "").await;
    assert_eq!(back.status, StatusCode::OK, "{:?}", back.body);
    assert_eq!(
        (back.json()["id"].as_i64(), back.json()["state"].as_str()),
        (Some(first_id), Some("progressing"))
    );
    assert_eq!(served(&h).await, ["a"]);
    // Only the latest release of a name is retried.
    h.post("/v1/rollouts/a/abort", "").await;
    let newer = h.create_yaml(&release("a", "a.local")).await.json();
    h.post("/v1/rollouts/a/abort", "").await;
    let r = h.post(&format!("/v1/rollouts/{first_id}/retry"), "").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.error()
            .contains(&format!("id {} is a later release", newer["id"])),
        "{}",
        r.error()
    );
    // Nothing but retry moves an archived rollout.
    for c in ["pause", "resume", "promote", "abort"] {
        let r = h.post(&format!("/v1/rollouts/{first_id}/{c}"), "").await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{c}");
    }
    let r = h
        .post(
            &format!("/v1/rollouts/{first_id}/kill-switch"),
            r#"{"on": true}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn complete_after_hands_over_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let spec = "name: auto\nmatch: {authority: auto.local}\ncomplete_after: 10m\nsteps: [{weight: 50, pause: 1m}, {weight: 100}]\n";
    assert_eq!(h.create_yaml(spec).await.status, StatusCode::CREATED);
    sleep_ms(61_000).await;
    assert_eq!(h.status("auto").await["state"], "promoted");
    assert_eq!(served(&h).await, ["auto"]);
    sleep_ms(9 * 60_000).await;
    assert_eq!(h.status("auto").await["state"], "promoted");
    sleep_ms(61_000).await;
    let s = h.status("auto").await;
    assert_eq!(s["state"], "completed");
    assert_eq!(served(&h).await, Vec::<String>::new());
    let bad = "name: x\ncomplete_after: soon\nsteps: [{weight: 1}]\n";
    let r = h.create_yaml(bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.error().contains("complete_after"), "{}", r.error());
    h.close().await;
}

/// What `linnet rollout status`, `list` and `history` print, from the API's JSON read into
/// the CLI's types.
#[tokio::test]
async fn the_cli_reads_status_list_and_history_as_the_api_wrote_them() {
    use linnet_sidecar::api::{HistoryPage, RolloutList};
    use linnet_sidecar::cli::{render_history, render_list, render_status};
    use linnet_sidecar::controller::Status;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(EPOCH_MS);
    let h = Harness::open_manual(&dir.path().join("l.db"), clock.clone());
    assert_eq!(h.create_yaml(CHECKOUT).await.status, StatusCode::CREATED);
    clock.advance(30_000);
    h.ctl.tick().await.unwrap();
    let status: Status = serde_json::from_value(h.status("checkout").await).unwrap();
    assert_eq!(
        render_status(&status).lines().collect::<Vec<_>>(),
        [
            "rollout checkout (id 1)",
            "  state:    progressing",
            "  step:     1 (of steps 0..3)",
            "  weight:   5.0%",
            "  mirror:   100.0% to checkout-shadow",
            "  pause left: 1m",
            "  recent transitions:",
            "    pending → progressing step 0 weight 5.0%: entered step 0",
            "    progressing → progressing step 1 weight 5.0%: step 0 pause elapsed; entered step 1",
        ]
    );
    let all: RolloutList = serde_json::from_value(h.get("/v1/rollouts").await.json()).unwrap();
    assert_eq!(
        render_list(&all.rollouts).lines().collect::<Vec<_>>(),
        [
            "NAME                     STATE          STEP   WEIGHT   MIRROR",
            "checkout                 progressing     1/3     5.0%     100%",
        ]
    );
    let history: HistoryPage = serde_json::from_value(h.get("/v1/history").await.json()).unwrap();
    let out = render_history(&history.releases);
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.contains("checkout             shop.example             progressing     5.0%"),
        "{out}"
    );
    h.close().await;
}
