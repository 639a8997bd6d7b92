//! Gates over real HTTP on loopback: a `confirm_promotion` gate that answers 500 holds the
//! rollout with its answer as the reason, and lets it be promoted once it answers 200; a gate
//! that keeps holding rolls the rollout back at the limit; an unreachable or slow gate holds
//! only its own rollout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::StatusCode;

fn spec(name: &str, authority: &str, gates: &str, limit: u32) -> String {
    format!(
        "name: {name}\nmatch: {{authority: {authority}}}\ngate_failures: {limit}\ngates:\n{gates}steps:\n- {{weight: 10, pause: 1s}}\n- {{weight: 100}}\n"
    )
}

fn gate(name: &str, on: &str, url: &str, timeout: &str) -> String {
    format!("- {{name: {name}, on: {on}, url: '{url}', timeout: {timeout}, retry: 200ms}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_promotion_holds_on_500_with_the_answer_and_promotes_on_200() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let ci = Receiver::start(500).await;
    let _stop = gate_runner(&h);
    let yaml = spec(
        "checkout",
        "shop.example",
        &gate(
            "ci",
            "confirm_promotion",
            &format!("{}/gate?suite=smoke", ci.url),
            "2s",
        ),
        0,
    );
    let r = h.create_yaml(&yaml).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let s = wait_for(&h, "checkout", "held by ci", |s| s["held_by"].is_string()).await;
    let held = s["held_by"].as_str().unwrap();
    assert!(
        held.starts_with("gate ci (confirm_promotion) holds the promotion: 500 Internal Server Error: receiver says 500"),
        "{held}"
    );
    assert_eq!(
        (s["state"].as_str(), s["step"].as_u64()),
        (Some("progressing"), Some(1))
    );
    // What the gate was sent: the rollout's state and the move it decides.
    let asked = ci.seen();
    let first = &asked[0];
    assert!(
        first.head.starts_with("POST /gate?suite=smoke HTTP/1.1"),
        "{}",
        first.head
    );
    let body = first.json();
    assert_eq!(body["gate"], "ci");
    assert_eq!(body["on"], "confirm_promotion");
    assert_eq!(body["rollout"], "checkout");
    assert_eq!(body["weight"], 100.0);
    assert!(body["next_step"].is_null());
    // Still held after more answers (no limit), and asked again after each retry.
    let s = wait_for(&h, "checkout", "asked three times", |_| {
        ci.seen().len() >= 3
    })
    .await;
    assert_eq!(s["state"], "progressing");

    ci.answer(200);
    let s = wait_for(&h, "checkout", "promoted", |s| s["state"] == "promoted").await;
    assert!(s["held_by"].is_null(), "{s}");
    // The audit has every answer, and `explain` words them.
    let audit = h.get("/v1/audit?rollout=checkout&limit=500").await.json();
    let gates: Vec<&serde_json::Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "gate")
        .collect();
    assert!(gates.len() >= 3, "{gates:?}");
    assert_eq!(gates.last().unwrap()["data"]["passed"], true);
    assert_eq!(gates[0]["data"]["passed"], false);
    assert_eq!(gates[0]["data"]["failures"], 1);
    let explained = h.get("/v1/rollouts/checkout/explain").await;
    let text = String::from_utf8_lossy(&explained.body).into_owned();
    assert!(
        text.contains("gate ci (confirm_promotion) holds the promotion: 500"),
        "{text}"
    );
    assert!(
        text.contains("gates confirm_promotion let the promotion: ci answered 200"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_keeps_holding_rolls_back_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let ci = Receiver::start(503).await;
    let _stop = gate_runner(&h);
    let yaml = spec(
        "checkout",
        "shop.example",
        &gate("ci", "pre_rollout", &ci.url, "2s"),
        3,
    );
    assert_eq!(h.create_yaml(&yaml).await.status, StatusCode::CREATED);
    let s = wait_for(&h, "checkout", "rolled back", |s| {
        s["state"] == "rolled_back"
    })
    .await;
    let reason = s["transitions"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with(
            "gate ci (pre_rollout) held step 0 3 times in a row: 503 Service Unavailable"
        ),
        "{reason}"
    );
    assert_eq!(ci.seen().len(), 3, "asked once per failure, never after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_slow_gates_hold_only_their_own_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    // A port nothing listens on, and a listener that never answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = format!("http://{}", silent.local_addr().unwrap());
    let _stop = gate_runner(&h);
    let a = spec(
        "a",
        "a.example",
        &gate("down", "pre_rollout", &dead, "1s"),
        0,
    );
    let b = spec(
        "b",
        "b.example",
        &gate("slow", "pre_rollout", &slow, "300ms"),
        0,
    );
    let c = "name: c\nmatch: {authority: c.example}\nsteps:\n- {weight: 10, pause: 1s}\n- {weight: 100}\n";
    for y in [a.as_str(), b.as_str(), c] {
        assert_eq!(h.create_yaml(y).await.status, StatusCode::CREATED);
    }
    let s = wait_for(&h, "a", "held", |s| s["held_by"].is_string()).await;
    let held = s["held_by"].as_str().unwrap();
    assert!(
        held.starts_with("gate down (pre_rollout) holds step 0: "),
        "{held}"
    );
    let s = wait_for(&h, "b", "held", |s| s["held_by"].is_string()).await;
    let held = s["held_by"].as_str().unwrap();
    assert!(held.contains("300ms"), "the timeout is the answer: {held}");
    // The rollout without gates went on by itself meanwhile.
    let s = wait_for(&h, "c", "promoted", |s| s["state"] == "promoted").await;
    assert_eq!(s["weight"], 100.0);
    assert_eq!(h.status("a").await["state"], "pending");
    assert_eq!(h.status("b").await["state"], "pending");
    drop(silent);
}
