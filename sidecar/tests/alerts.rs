//! `POST /v1/alertmanager`: a firing critical alert that matches a rollout's selector rolls it
//! back with the alert named; a warning holds stepping until it resolves; a resolved alert is
//! recorded; bad payloads and wrong tokens change nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const SPEC: &str = "name: checkout\nmatch: {authority: shop.example}\nalerts:\n- match: {service: checkout, severity: page}\n- match: {service: checkout, severity: ticket}\n  severity: warning\nsteps:\n- {weight: 10, pause: 10s}\n- {weight: 50, pause: 10s}\n- {weight: 100}\n";
const OTHER: &str = "name: search\nmatch: {authority: search.example}\nsteps:\n- {weight: 10, pause: 10s}\n- {weight: 100}\n";

fn hook(status: &str, severity: &str, fingerprint: &str) -> String {
    json!({
        "receiver": "linnet", "status": status, "version": "4", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "CanaryErrors", "service": "checkout", "severity": severity},
            "annotations": {"summary": "canary 5xx over 5%", "description": "3.2% of the budget an hour"},
            "startsAt": "2026-12-04T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": fingerprint
        }]
    })
    .to_string()
}

async fn alert(h: &Harness, body: &str) -> Value {
    let r = h.post("/v1/alertmanager", body).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()
}

#[tokio::test(start_paused = true)]
async fn a_firing_critical_alert_rolls_back_with_its_name_and_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    assert_eq!(h.create_yaml(SPEC).await.status, StatusCode::CREATED);
    assert_eq!(h.create_yaml(OTHER).await.status, StatusCode::CREATED);
    let got = alert(&h, &hook("firing", "page", "f1")).await;
    assert_eq!(got["received"], 1);
    assert_eq!(got["matched"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got["matched"][0]["rollout"], "checkout");
    assert_eq!(got["matched"][0]["action"], "rolled_back");
    let s = h.status("checkout").await;
    assert_eq!(
        (s["state"].as_str(), s["weight"].as_f64()),
        (Some("rolled_back"), Some(0.0))
    );
    let reason = s["transitions"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reason,
        "alert CanaryErrors firing: canary 5xx over 5% — 3.2% of the budget an hour"
    );
    // Only the matching rollout moved.
    assert_eq!(h.status("search").await["state"], "progressing");
    // The alert itself is in the audit, labels and all.
    let audit = h.get("/v1/audit?rollout=checkout").await.json();
    let seen: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "alert")
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["data"]["labels"]["service"], "checkout");
    assert_eq!(seen[0]["data"]["status"], "firing");
    // Resolved later: recorded, nothing else changes.
    let got = alert(&h, &hook("resolved", "page", "f1")).await;
    assert_eq!(
        got["matched"].as_array().unwrap().len(),
        0,
        "a finished rollout: {got}"
    );
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_warning_alert_holds_stepping_until_it_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    assert_eq!(h.create_yaml(SPEC).await.status, StatusCode::CREATED);
    let got = alert(&h, &hook("firing", "ticket", "w1")).await;
    assert_eq!(got["matched"][0]["action"], "held");
    // Alertmanager repeats a firing alert: one hold, one record.
    let again = alert(&h, &hook("firing", "ticket", "w1")).await;
    assert_eq!(again["matched"].as_array().unwrap().len(), 0);
    sleep_ms(30_000).await;
    let s = h.status("checkout").await;
    assert_eq!(
        (s["step"].as_u64(), s["state"].as_str()),
        (Some(0), Some("progressing"))
    );
    assert!(
        s["held_by"]
            .as_str()
            .unwrap()
            .starts_with("alert CanaryErrors firing"),
        "{s}"
    );
    let got = alert(&h, &hook("resolved", "ticket", "w1")).await;
    assert_eq!(got["matched"][0]["action"], "released");
    sleep_ms(1_000).await;
    let s = h.status("checkout").await;
    assert_eq!(s["step"], 1, "the overdue step is taken once released: {s}");
    assert!(s["held_by"].is_null());
    // A resolved alert nothing held is recorded too.
    let got = alert(&h, &hook("resolved", "page", "zz")).await;
    assert_eq!(got["matched"][0]["action"], "recorded");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn bad_payloads_and_wrong_tokens_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    assert_eq!(h.create_yaml(SPEC).await.status, StatusCode::CREATED);
    let before = h.fingerprint().await;
    for (body, says) in [
        ("not json", "invalid Alertmanager payload"),
        (
            r#"{"alerts": [{"status": "burning", "labels": {}}]}"#,
            "alerts[0].status",
        ),
        (
            r#"{"alerts": [{"status": "firing", "labels": {"service": 7}}]}"#,
            "alerts[0].labels.service",
        ),
        (r#"{"alerts": {}}"#, "alerts"),
    ] {
        let r = h.post("/v1/alertmanager", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.error().contains(says), "{body}: {}", r.error());
    }
    let firing = hook("firing", "page", "f1");
    for auth in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Bearer poll-token")],
    ] {
        let r = h
            .request(Method::POST, "/v1/alertmanager", &firing, &auth)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    // An alert no selector matches.
    let other = firing.replace("\"service\":\"checkout\"", "\"service\":\"cart\"");
    assert_eq!(
        alert(&h, &other).await["matched"].as_array().unwrap().len(),
        0
    );
    assert_eq!(h.fingerprint().await, before);
    h.close().await;
}
