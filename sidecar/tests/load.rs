//! Load bursts over real HTTP on loopback: a burst counts every answer and sends its users in
//! turn; a `load` gate lets a healthy canary's rollout step on, and holds, then rolls back, one
//! whose canary answers a fifth of its requests with 500, naming the success rate; and
//! `linnet load` runs the same burst by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::StatusCode;
use linnet_core::snapshot::Source;
use linnet_sidecar::load::{Context, Headers, LoadSpec, Outcome};
use std::collections::BTreeMap;

/// 100 requests from 5 users at 500 a second: a fifth of a second of sending.
async fn burst(url: &str, min_success: Option<f64>) -> Outcome {
    let spec = LoadSpec {
        target: format!("{url}/health?deep=1"),
        host: Some("checkout.local".into()),
        requests: Some(100),
        users: Some(5),
        rate: Some(500),
        min_success,
        ..LoadSpec::default()
    };
    let context = Context {
        headers: Headers::parse("--header", &["x-suite: smoke".into()]).unwrap(),
        user_key: Some(Source::Header("x-user-id".into())),
        ..Context::default()
    };
    let burst = spec.validate(&|f| format!("--{f}"), context).unwrap();
    burst.run().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_counts_every_answer_and_sends_its_users_in_turn() {
    let canary = Receiver::start(200).await;
    let o = burst(&canary.url, Some(99.0)).await;
    assert_eq!(
        (o.requests, o.users, o.sent, o.succeeded, o.unanswered),
        (100, 5, 100, 100, 0)
    );
    assert_eq!(o.success, 100.0);
    assert_eq!(o.statuses, BTreeMap::from([(200, 100)]));
    assert!(o.passed && o.missed.is_empty(), "{o:?}");
    assert!(o.p50_ms.is_some() && o.p99_ms >= o.p50_ms, "{o:?}");
    let seen = canary.seen();
    assert_eq!(seen.len(), 100);
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    for r in &seen {
        assert!(
            r.head.starts_with("GET /health?deep=1 HTTP/1.1"),
            "{}",
            r.head
        );
        assert_eq!(r.header("host").as_deref(), Some("checkout.local"));
        assert_eq!(r.header("x-suite").as_deref(), Some("smoke"));
        assert_eq!(r.header("accept").as_deref(), Some("*/*"));
        *per_user.entry(r.header("x-user-id").unwrap()).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = (1..=5).map(|u| (format!("user-{u}"), 20)).collect();
    assert_eq!(per_user, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_with_a_fifth_of_500s_misses_its_success_rate() {
    let canary = Receiver::start(200).await;
    canary.fail_every(5);
    let o = burst(&canary.url, Some(99.0)).await;
    assert_eq!((o.sent, o.succeeded, o.unanswered), (100, 80, 0));
    assert_eq!(o.success, 80.0);
    assert_eq!(o.statuses, BTreeMap::from([(200, 80), (500, 20)]));
    assert!(!o.passed);
    assert_eq!(o.missed, ["success 80.0% < 99%"]);
    // Without a threshold the same numbers pass: nothing was asked of them.
    canary.fail_every(5);
    let o = burst(&canary.url, None).await;
    assert_eq!((o.success, o.passed), (80.0, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_nothing_listens_on_answers_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let o = burst(&dead, Some(99.0)).await;
    assert_eq!((o.sent, o.succeeded, o.unanswered), (100, 0, 100));
    assert_eq!(o.success, 0.0);
    assert!(o.statuses.is_empty() && o.p50_ms.is_none(), "{o:?}");
    assert!(o.first_error.is_some(), "{o:?}");
}

// === the gate ===

const TOKEN: &str = "s3cret-override";

/// A rollout whose step 1 waits for a load burst through "Envoy" (the receiver stands in for
/// the listener and the canary behind it).
fn rollout(target: &str, limit: u32) -> String {
    format!(
        "name: checkout\nmatch: {{authority: shop.example}}\nstickiness: [{{header: x-user-id}}]\noverride: {{token: {TOKEN}}}\ngate_failures: {limit}\ngates:\n- {{name: smoke, on: pre_step, retry: 200ms, load: {{target: '{target}/api/cart', requests: 100, users: 5, rate: 500}}}}\nsteps:\n- {{weight: 10, pause: 1s}}\n- {{weight: 100}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_gate_lets_a_healthy_canary_step_on() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let canary = Receiver::start(200).await;
    let _stop = gate_runner(&h);
    let r = h.create_yaml(&rollout(&canary.url, 2)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let s = wait_for(&h, "checkout", "promoted", |s| s["state"] == "promoted").await;
    assert!(s["held_by"].is_null(), "{s}");
    // One burst, every request choosing the canary by the override and its token.
    let seen = canary.seen();
    assert_eq!(seen.len(), 100);
    for r in &seen {
        assert!(r.head.starts_with("GET /api/cart HTTP/1.1"), "{}", r.head);
        assert_eq!(r.header("host").as_deref(), Some("shop.example"));
        assert_eq!(r.header("x-linnet-override").as_deref(), Some("canary"));
        assert_eq!(r.header("x-linnet-override-token").as_deref(), Some(TOKEN));
        assert!(r.header("x-user-id").unwrap().starts_with("user-"));
    }
    // The audit keeps the burst's numbers; no read shows the token.
    let audit = h.get("/v1/audit?rollout=checkout&limit=500").await;
    let events = audit.json();
    let gate = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "gate")
        .unwrap();
    let answer = &gate["data"]["answers"][0];
    assert_eq!(answer["passed"], true);
    assert!(
        answer["answer"]
            .as_str()
            .unwrap()
            .starts_with("100 requests from 5 users: 100.0% succeeded (min 99%), p50 "),
        "{answer}"
    );
    assert_eq!(answer["load"]["success"], 100.0);
    assert_eq!(answer["load"]["statuses"]["200"], 100);
    let explained = h.get("/v1/rollouts/checkout/explain").await;
    let status = h.get("/v1/rollouts/checkout").await;
    for body in [&audit.body, &explained.body, &status.body] {
        assert!(!String::from_utf8_lossy(body).contains(TOKEN));
    }
    assert!(
        String::from_utf8_lossy(&explained.body)
            .contains("gates pre_step let step 1: smoke answered 100 requests from 5 users"),
        "{:?}",
        explained.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_gate_holds_then_rolls_back_a_canary_answering_a_fifth_500s() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    let canary = Receiver::start(200).await;
    canary.fail_every(5);
    let _stop = gate_runner(&h);
    let r = h.create_yaml(&rollout(&canary.url, 2)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let s = wait_for(&h, "checkout", "held by smoke", |s| {
        s["held_by"].is_string()
    })
    .await;
    let held = s["held_by"].as_str().unwrap();
    assert!(
        held.starts_with("gate smoke (pre_step) holds step 1: 100 requests from 5 users: 80.0% succeeded (min 99%), p50 "),
        "{held}"
    );
    assert!(
        held.contains(": failed; answers 200 × 80, 500 × 20 (failure 1 of 2)"),
        "{held}"
    );
    assert_eq!(
        (s["state"].as_str(), s["step"].as_u64()),
        (Some("progressing"), Some(0))
    );
    let s = wait_for(&h, "checkout", "rolled back", |s| {
        s["state"] == "rolled_back"
    })
    .await;
    let reason = s["transitions"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with("gate smoke (pre_step) held step 1 2 times in a row: 100 requests from 5 users: 80.0% succeeded (min 99%)"),
        "{reason}"
    );
    assert_eq!(
        canary.seen().len(),
        200,
        "one burst per failure, none after"
    );
}

// === by hand ===

async fn by_hand(args: &[&str]) -> Result<(), String> {
    use clap::Parser;
    let cli =
        linnet_sidecar::cli::Cli::try_parse_from(["linnet", "load"].iter().chain(args).copied())
            .map_err(|e| e.to_string())?;
    linnet_sidecar::cli::run(cli).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linnet_load_fails_only_a_burst_that_misses_its_threshold() {
    let canary = Receiver::start(200).await;
    let flags = |min: &'static str| {
        vec![
            "--requests",
            "50",
            "--rate",
            "500",
            "--user-header",
            "x-user-id",
            "--header",
            "x-linnet-override:canary",
            "--min-success",
            min,
        ]
    };
    let target = format!("{}/", canary.url);
    let mut healthy = flags("99");
    healthy.extend(["--target", &target]);
    by_hand(&healthy).await.unwrap();
    assert_eq!(canary.seen().len(), 50);
    assert_eq!(
        canary.seen()[0].header("x-linnet-override").as_deref(),
        Some("canary")
    );
    canary.fail_every(5);
    let e = by_hand(&healthy).await.unwrap_err();
    assert_eq!(e, "the burst missed success 80.0% < 99%");
    // A lower bar passes the same canary.
    let mut lenient = flags("75");
    lenient.extend(["--target", &target]);
    by_hand(&lenient).await.unwrap();
    // Refused before anything is sent, by flag.
    for (args, words) in [
        (
            vec!["--target", "http://10.1.2.3/"],
            "--target: \"10.1.2.3\" is not loopback",
        ),
        (
            vec!["--target", &target, "--requests", "0"],
            "--requests: 0 is outside 1..=10000",
        ),
        (
            vec!["--target", &target, "--header", "no-colon"],
            "--header: give each header as name:value",
        ),
    ] {
        let e = by_hand(&args).await.unwrap_err();
        assert!(e.contains(words), "{args:?}: {e}");
    }
    assert_eq!(canary.seen().len(), 150);
}
