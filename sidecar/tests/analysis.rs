//! Analysis driving real rollouts through the controller, with a scripted source and a
//! manual clock (the test ticks; paused tokio time would jump ahead while the store works): promotion after passes, critical and warning failures, pauses for missing data
//! and the resume after, zero tolerance, the explanation, and memory across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use linnet_sidecar::analysis::policy::{EnvoySourceSpec, SourceSpec};
use linnet_sidecar::analysis::runner::{run_due, Sources};
use linnet_sidecar::analysis::source::{Answer, Query, Source};
use linnet_sidecar::analysis::window::{Histogram, Traffic, Window};
use linnet_sidecar::analysis::Observed;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// What the scripted source answers next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    /// Canary errors as often as stable (0.5%), 20 ms.
    Good,
    /// The canary's error rate, in percent.
    Errors(f64),
    /// The canary's every response takes this long.
    SlowMs(f64),
    Down,
    NaN,
    /// A zero-tolerance counter rose, and there is no traffic at all.
    Violation,
    /// Healthy, but no series matches the zero-tolerance metric.
    Misspelled,
}

struct Scripted {
    health: Mutex<Health>,
    queries: Mutex<Vec<Query>>,
}

impl Scripted {
    fn set(&self, h: Health) {
        *self.health.lock().unwrap() = h;
    }

    fn answer(&self, q: &Query) -> Result<Observed, String> {
        self.queries.lock().unwrap().push(q.clone());
        let h = *self.health.lock().unwrap();
        // Per 10 s: 1,000 canary and 9,000 stable requests, scaled to the window.
        let window = |span_ms: i64| {
            let k = span_ms as f64 / 10_000.0;
            let traffic = |n: f64, err_pct: f64, ms: f64| Traffic {
                requests: n * k,
                errors: n * k * err_pct / 100.0,
                latency: Histogram::from_buckets(vec![(ms, n * k), (f64::INFINITY, n * k)])
                    .unwrap(),
            };
            let (canary, stable) = match h {
                Good | Misspelled => (traffic(1000.0, 0.5, 20.0), traffic(9000.0, 0.5, 20.0)),
                Errors(p) => (traffic(1000.0, p, 20.0), traffic(9000.0, 0.5, 20.0)),
                SlowMs(ms) => (traffic(1000.0, 0.5, ms), traffic(9000.0, 0.5, 20.0)),
                NaN => (
                    Traffic {
                        requests: f64::NAN,
                        errors: f64::NAN,
                        latency: Histogram::default(),
                    },
                    traffic(9000.0, 0.5, 20.0),
                ),
                Violation | Down => (Traffic::default(), Traffic::default()),
            };
            Window {
                span_ms,
                covered_ms: span_ms,
                canary,
                stable,
                counters: q
                    .counters
                    .iter()
                    .map(|_| match h {
                        Violation => Some(1.0),
                        Misspelled => None,
                        _ => Some(0.0),
                    })
                    .collect(),
            }
        };
        use Health::*;
        if h == Down {
            return Err("127.0.0.1:9901/stats/prometheus: connection refused".into());
        }
        Ok(Observed {
            increment: window(q.increment_ms),
            windows: q.spans.iter().map(|s| window(*s)).collect(),
            missing: None,
        })
    }
}

impl Source for Scripted {
    fn observe<'a>(&'a self, query: &'a Query) -> Answer<'a> {
        let r = self.answer(query);
        Box::pin(async move { r })
    }
}

const ANALYSED: &str = r#"
name: web
stickiness: [{header: x-user-id}]
steps:
  - {weight: 10, pause: 20s}
  - {weight: 50, pause: 20s}
  - {weight: 100}
analysis:
  interval: 10s
  passes: 2
  failure_limit: 3
  nodata_limit: 2
  min_requests: 100
  slo: 99
  guardrails:
    - {error_rate: {max: 5}}
    - {latency: {quantile: p99, max_ms: 150}, severity: warning}
    - {compare: {ratio: 2, alpha: 0.01}}
    - {burn_rate: {windows: [{long: 30s, short: 10s, factor: 10}]}, severity: warning}
    - {zero_tolerance: {metric: 'checkout_security_violations_total{variant="canary"}'}}
"#;

struct Rig {
    _dir: tempfile::TempDir,
    h: Harness,
    clock: Arc<ManualClock>,
    source: Arc<Scripted>,
    sources: Sources,
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(EPOCH_MS);
    let h = Harness::open_manual(&dir.path().join("l.db"), clock.clone());
    let source = Arc::new(Scripted {
        health: Mutex::new(Health::Good),
        queries: Mutex::new(Vec::new()),
    });
    let mut sources = Sources::default();
    sources.insert(default_source(), source.clone());
    Rig {
        _dir: dir,
        h,
        clock,
        source,
        sources,
    }
}

/// The spec's default: the local Envoy admin.
fn default_source() -> SourceSpec {
    SourceSpec {
        envoy: Some(EnvoySourceSpec {
            admin: vec!["127.0.0.1:9901".into()],
        }),
        prometheus: None,
    }
}

impl Rig {
    /// Lets `secs` pass, running analysis each second as the runner would.
    async fn run_for(&mut self, secs: u64) {
        for _ in 0..secs {
            self.h.ctl.tick().await.unwrap();
            run_due(&self.h.ctl, &mut self.sources).await.unwrap();
            self.clock.advance(1000);
        }
    }

    async fn state(&self) -> (String, u64, f64) {
        let s = self.h.status("web").await;
        (
            s["state"].as_str().unwrap().to_owned(),
            s["step"].as_u64().unwrap(),
            s["weight"].as_f64().unwrap(),
        )
    }

    async fn explain(&self) -> Value {
        let r = self.h.get("/v1/rollouts/web/explain").await;
        assert_eq!(r.status, hyper::StatusCode::OK, "{:?}", r.body);
        r.json()
    }

    /// The reason of the (first) rollback.
    async fn rollback_reason(&self) -> String {
        let back = self.events("rolled_back").await;
        back[0]["data"]["reason"].as_str().unwrap().to_owned()
    }

    async fn events(&self, kind: &str) -> Vec<Value> {
        let all = self.h.get("/v1/audit?rollout=web&limit=1000").await.json();
        all["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect()
    }
}

#[tokio::test]
async fn a_healthy_canary_is_promoted_after_passing_checks() {
    let mut r = rig().await;
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    // 20 s pause, but two passes (10 s apart) are needed: step 1 at 20 s.
    r.run_for(15).await;
    assert_eq!(r.state().await, ("progressing".into(), 0, 10.0));
    r.run_for(10).await;
    assert_eq!(r.state().await, ("progressing".into(), 1, 50.0));
    r.run_for(30).await;
    assert_eq!(r.state().await.0, "promoted", "{:#}", r.explain().await);
    let runs = r.events("analysis").await;
    assert!(runs.len() >= 4, "{runs:?}");
    assert!(runs.iter().all(|e| e["data"]["decision"] != "roll_back"));
    // Each run carries every check and the numbers they were judged on.
    let last = &runs[runs.len() - 1]["data"];
    assert_eq!(last["checks"].as_array().unwrap().len(), 5);
    assert!(
        last["observed"]["increment"]["canary"]["requests"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let explain = r.explain().await;
    let text = serde_json::to_string(&explain["timeline"]).unwrap();
    assert!(text.contains("passed"), "{text}");
    assert!(text.contains("the last step's pause elapsed"), "{text}");
    // The source was asked for every window the guardrails judge, and the increment since
    // the last run.
    let q = r.source.queries.lock().unwrap().last().cloned().unwrap();
    assert_eq!(q.spans, vec![10_000, 30_000]);
    assert_eq!(q.increment_ms, 10_000);
    assert_eq!(q.counters.len(), 1);
    r.h.close().await;
}

#[tokio::test]
async fn a_critical_failure_rolls_back_at_the_first_run_that_sees_it() {
    let mut r = rig().await;
    r.source.set(Health::Errors(20.0));
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(1).await;
    let (state, _, weight) = r.state().await;
    assert_eq!((state.as_str(), weight), ("rolled_back", 0.0));
    let reason = r.rollback_reason().await;
    assert!(
        reason.contains("critical guardrail error-rate failed"),
        "{reason}"
    );
    assert!(reason.contains("20%"), "{reason}");
    let explain = r.explain().await;
    let details = serde_json::to_string(&explain["timeline"]).unwrap();
    assert!(details.contains("error-rate (critical, fail)"), "{details}");
    r.h.close().await;
}

#[tokio::test]
async fn twice_the_errors_of_stable_are_caught_by_the_comparison() {
    let mut r = rig().await;
    // 1% against stable's 0.5%: under every absolute limit, but twice stable's rate.
    r.source.set(Health::Errors(1.0));
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(120).await;
    assert_eq!(r.state().await.0, "rolled_back");
    let reason = r.rollback_reason().await;
    assert!(reason.contains("vs-stable"), "{reason}");
    r.h.close().await;
}

#[tokio::test]
async fn warnings_roll_back_only_after_the_failure_limit_in_a_row() {
    let mut r = rig().await;
    r.source.set(Health::SlowMs(400.0));
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(15).await; // runs at 0 s and 10 s: two warnings
    assert_eq!(r.state().await.0, "progressing");
    r.source.set(Health::Good);
    r.run_for(10).await; // a pass resets the count
    r.source.set(Health::SlowMs(400.0));
    r.run_for(20).await; // two more: still under the limit of 3 in a row
    assert_eq!(r.state().await.0, "progressing");
    r.run_for(10).await;
    assert_eq!(r.state().await.0, "rolled_back");
    let reason = r.rollback_reason().await;
    assert!(reason.contains("p99-latency"), "{reason}");
    assert!(reason.contains("3 failing checks in a row"), "{reason}");
    r.h.close().await;
}

#[tokio::test]
async fn missing_data_never_promotes_pauses_with_the_reason_and_resumes_after() {
    for bad in [Health::Down, Health::NaN] {
        let mut r = rig().await;
        r.source.set(bad);
        assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
        r.run_for(5).await;
        assert_eq!(r.state().await.0, "progressing", "{bad:?}");
        r.run_for(10).await; // the second run without data reaches the limit of 2
        let (state, step, _) = r.state().await;
        assert_eq!((state.as_str(), step), ("paused", 0), "{bad:?}");
        let paused = r.events("paused").await;
        let reason = paused[0]["data"]["reason"].as_str().unwrap();
        assert!(reason.contains("no data"), "{reason}");
        if bad == Health::Down {
            assert!(reason.contains("connection refused"), "{reason}");
        } else {
            assert!(
                reason.contains("not a number") || reason.contains("not finite"),
                "{reason}"
            );
        }
        // Long past every pause: still no promotion.
        let asked = r.source.queries.lock().unwrap().len();
        r.run_for(60).await;
        assert_eq!(r.state().await.0, "paused", "{bad:?}");
        let asked = r.source.queries.lock().unwrap().len() - asked;
        if bad == Health::Down {
            // Six runs, but a source that keeps failing is backed off, not hammered, and the
            // checks say so.
            assert!(asked <= 2, "asked {asked} times in 60 s");
            let runs = r.events("analysis").await;
            assert!(
                runs.iter().any(|e| e["data"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("failed 3 times in a row since")),
                "{runs:?}"
            );
        } else {
            // An answer, however bad, is not a failure of the source.
            assert_eq!(asked, 6);
        }
        r.source.set(Health::Good);
        // Seen again within the longest backoff (four intervals).
        r.run_for(40).await;
        assert_eq!(r.state().await.0, "progressing", "{bad:?}");
        r.run_for(60).await;
        assert_eq!(r.state().await.0, "promoted", "{bad:?}");
        r.h.close().await;
    }
}

#[tokio::test]
async fn an_operator_pause_keeps_judging_and_a_bad_canary_is_rolled_back_while_paused() {
    let mut r = rig().await;
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    assert_eq!(r.h.post("/v1/rollouts/web/pause", "").await.status, 200);
    r.run_for(60).await;
    // Judged every interval, passing, and still held: a pass never lifts an operator's pause.
    assert_eq!(r.state().await.0, "paused");
    let runs = r.events("analysis").await;
    assert!(runs.len() >= 5, "{runs:?}");
    assert!(r.events("resumed").await.is_empty());
    // No data while held: a hold that says so, and neither an analysis pause nor a resume
    // once data is back.
    r.source.set(Health::Down);
    r.run_for(30).await;
    r.source.set(Health::Good);
    r.run_for(20).await;
    assert_eq!(r.state().await.0, "paused");
    assert!(r.events("resumed").await.is_empty());
    let held = r.events("analysis").await;
    assert!(
        held.iter().any(|e| e["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("already held by an operator")),
        "{held:?}"
    );
    // The canary turns bad while paused: rolled back at the next run.
    r.source.set(Health::Errors(20.0));
    r.run_for(10).await;
    assert_eq!(r.state().await, ("rolled_back".into(), 0, 0.0));
    assert!(r.rollback_reason().await.contains("error-rate"));
    r.h.close().await;
}

#[tokio::test]
async fn a_manual_weight_keeps_judging_and_a_bad_canary_is_rolled_back() {
    let mut r = rig().await;
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(5).await;
    let set =
        r.h.post("/v1/rollouts/web/weight", r#"{"weight": 30}"#)
            .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    r.run_for(30).await;
    assert_eq!(r.state().await, ("paused".into(), 0, 30.0));
    r.source.set(Health::SlowMs(400.0));
    r.run_for(40).await; // three warnings in a row, then the limit
    assert_eq!(r.state().await, ("rolled_back".into(), 0, 0.0));
    assert!(r.rollback_reason().await.contains("p99-latency"));
    r.h.close().await;
}

#[tokio::test]
async fn a_zero_tolerance_counter_rolls_back_at_once_even_without_traffic() {
    let mut r = rig().await;
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(11).await;
    r.source.set(Health::Violation);
    r.run_for(10).await;
    assert_eq!(r.state().await.0, "rolled_back");
    let reason = r.rollback_reason().await;
    assert!(
        reason.contains("checkout_security_violations_total"),
        "{reason}"
    );
    assert!(reason.contains("rose by 1"), "{reason}");
    r.h.close().await;
}

#[tokio::test]
async fn a_zero_tolerance_series_that_does_not_exist_is_no_data_then_pauses() {
    let mut r = rig().await;
    r.source.set(Health::Misspelled);
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(15).await;
    let (state, step, _) = r.state().await;
    assert_eq!((state.as_str(), step), ("paused", 0));
    let paused = r.events("paused").await;
    let reason = paused[0]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("no series matches"), "{reason}");
    assert!(
        reason.contains("checkout_security_violations_total"),
        "{reason}"
    );
    r.h.close().await;
}

#[tokio::test]
async fn passes_and_evidence_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("l.db");
    let source = Arc::new(Scripted {
        health: Mutex::new(Health::Errors(0.9)),
        queries: Mutex::new(Vec::new()),
    });
    let mut sources = Sources::default();
    sources.insert(default_source(), source.clone());
    let clock = ManualClock::new(EPOCH_MS);
    let h = Harness::open_manual(&db, clock.clone());
    assert_eq!(h.create_yaml(ANALYSED).await.status, 201);
    for _ in 0..11 {
        run_due(&h.ctl, &mut sources).await.unwrap();
        clock.advance(1000);
    }
    let before = h.status("web").await;
    h.close().await;
    let h = Harness::open_manual(&db, clock.clone());
    let after = h.status("web").await;
    assert_eq!(before["state"], after["state"]);
    let audit = h.get("/v1/audit?rollout=web&limit=1000").await.json();
    let runs: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "analysis")
        .collect();
    assert_eq!(runs.len(), 2);
    // The evidence gathered before the restart is where the next run starts from.
    clock.advance(10_000);
    run_due(&h.ctl, &mut sources).await.unwrap();
    clock.advance(10_000);
    run_due(&h.ctl, &mut sources).await.unwrap();
    let audit = h.get("/v1/audit?rollout=web&limit=1000").await.json();
    let odds: Vec<f64> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "analysis")
        .filter_map(|e| {
            e["data"]["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["guardrail"] == "vs-stable")
                .and_then(|c| c["observed"].as_f64())
        })
        .collect();
    assert!(odds.len() >= 3, "{odds:?}");
    assert!(
        odds.windows(2).all(|w| w[1] > w[0]),
        "evidence only grows for a canary erring more than stable: {odds:?}"
    );
    h.close().await;
}

/// Replays what the simulation observed, one run after another.
struct Replay {
    runs: Mutex<std::collections::VecDeque<Observed>>,
}

impl Source for Replay {
    fn observe<'a>(&'a self, _query: &'a Query) -> Answer<'a> {
        let next = self.runs.lock().unwrap().pop_front();
        Box::pin(async move { next.ok_or_else(|| "the replay ran out".to_owned()) })
    }
}

/// The decision-quality figures hold for the product only if the runner and the controller,
/// given the simulation's windows at the simulation's times, decide what it decided and end
/// where it ended, run by run.
#[tokio::test]
async fn the_runner_decides_run_by_run_as_the_simulation_does() {
    use linnet_sidecar::analysis::sim;
    use linnet_sidecar::spec::{Format, RolloutSpec};
    let (_, plan) = RolloutSpec::parse(sim::PLAN.as_bytes(), Format::Yaml).unwrap();
    let interval = plan.analysis.as_ref().unwrap().interval_ms;
    let mut compared = 0;
    let mut endings = std::collections::BTreeSet::new();
    for (load, seeds) in [(sim::HEALTHY, 0..3_u64), (sim::BAD, 10..16)] {
        for seed in seeds {
            let runs = sim::linnet_runs(&plan, &load, seed, sim::CAP_MS).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(EPOCH_MS);
            let h = Harness::open_manual(&dir.path().join("l.db"), clock.clone());
            let mut sources = Sources::default();
            sources.insert(
                default_source(),
                Arc::new(Replay {
                    runs: Mutex::new(runs.iter().map(|r| r.observed.clone()).collect()),
                }),
            );
            assert_eq!(h.create_yaml(sim::PLAN).await.status, 201);
            for (k, want) in runs.iter().enumerate() {
                clock.advance(if k == 0 { 0 } else { interval });
                assert_eq!(h.now_ms() - EPOCH_MS, want.at_ms);
                run_due(&h.ctl, &mut sources).await.unwrap();
                h.ctl.tick().await.unwrap();
                let audit = h.get("/v1/audit?rollout=checkout&limit=1000").await.json();
                let last = audit["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .rev()
                    .find(|e| e["kind"] == "analysis")
                    .cloned()
                    .unwrap();
                let got = serde_json::from_value::<linnet_sidecar::analysis::Ruling>(
                    serde_json::json!({"action": last["data"]["decision"], "reason": last["data"]["reason"]}),
                )
                .unwrap();
                let s = h.status("checkout").await;
                let ctx = format!("seed {seed}, run {k} at {} ms", want.at_ms);
                assert_eq!(got, want.decision, "{ctx}");
                assert_eq!(s["state"].as_str().unwrap(), want.state.as_str(), "{ctx}");
                assert_eq!(s["step"].as_u64().unwrap() as usize, want.step, "{ctx}");
                assert_eq!(s["weight"].as_f64().unwrap(), want.weight, "{ctx}");
                compared += 1;
            }
            endings.insert(runs.last().unwrap().state.as_str());
            h.close().await;
        }
    }
    // Both kinds of ending were compared, over many runs.
    assert!(endings.contains("rolled_back"), "{endings:?}");
    assert!(compared > 60, "{compared} runs compared");
}

/// Never answers: a source that hangs (up to its timeout, in the product).
struct Hanging {
    asked: Mutex<u32>,
}

impl Source for Hanging {
    fn observe<'a>(&'a self, _query: &'a Query) -> Answer<'a> {
        *self.asked.lock().unwrap() += 1;
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_source_delays_no_other_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(EPOCH_MS);
    let h = Harness::open_manual(&dir.path().join("l.db"), clock.clone());
    let admin = |a: &str| SourceSpec {
        envoy: Some(EnvoySourceSpec {
            admin: vec![a.into()],
        }),
        prometheus: None,
    };
    let spec = |name: &str, admin: &str| {
        ANALYSED
            .replace(
                "name: web",
                &format!("name: {name}\nmatch: {{authority: {name}.local}}"),
            )
            .replace(
                "  interval: 10s",
                &format!("  interval: 10s\n  source: {{envoy: {{admin: ['{admin}']}}}}"),
            )
            .replace(
                r#"{variant="canary"}"#,
                &format!(r#"{{variant="canary",rollout="{name}"}}"#),
            )
    };
    let good = Arc::new(Scripted {
        health: Mutex::new(Health::Good),
        queries: Mutex::new(Vec::new()),
    });
    let hanging = Arc::new(Hanging {
        asked: Mutex::new(0),
    });
    let mut sources = Sources::default();
    sources.insert(admin("127.0.0.1:9911"), good.clone());
    sources.insert(admin("127.0.0.1:9922"), hanging.clone());
    assert_eq!(
        h.create_yaml(&spec("slow", "127.0.0.1:9922")).await.status,
        201
    );
    assert_eq!(
        h.create_yaml(&spec("fast", "127.0.0.1:9911")).await.status,
        201
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    let runner = linnet_sidecar::analysis::runner::spawn_with(h.ctl.clone(), sources, rx);
    let runs = |name: &'static str| {
        let h = &h;
        async move {
            let all = h
                .get(&format!("/v1/audit?rollout={name}&limit=1000"))
                .await
                .json();
            all["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "analysis")
                .count()
        }
    };
    for want in 1..=4 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while runs("fast").await < want {
            assert!(
                std::time::Instant::now() < deadline,
                "fast got no run {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        clock.advance(10_000);
    }
    // The slow one is still out, asked once: not started again while in flight.
    assert_eq!(runs("slow").await, 0);
    assert_eq!(*hanging.asked.lock().unwrap(), 1);
    assert!(good.queries.lock().unwrap().len() >= 4);
    stop.send_replace(true);
    runner.await.unwrap();
    h.close().await;
}

/// The timeline end to end: events the controller wrote, read back through the store and the
/// API's JSON into the CLI's types, rendered as `linnet explain` prints them. A field the
/// timeline needs that the writer and the reader spell differently fails here.
#[tokio::test]
async fn the_cli_prints_the_timeline_the_controller_wrote() {
    use linnet_sidecar::api::Explanation;
    use linnet_sidecar::event::{Event, Payload};
    let mut r = rig().await;
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(25).await;
    r.source.set(Health::Errors(20.0));
    r.run_for(11).await;
    let audit = r.h.get("/v1/audit?rollout=web&limit=1000").await.json();
    let events: Vec<Event> = serde_json::from_value(audit["events"].clone()).unwrap();
    assert!(events.len() >= 6, "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.payload, Payload::Unread { .. })),
        "{events:#?}"
    );
    let explained: Explanation = serde_json::from_value(r.explain().await).unwrap();
    let out = linnet_sidecar::cli::render_explain(&explained);
    let expected = [
        "web: rolled_back at step 1, weight 0.0%",
        "00:00:00           created with 3 steps (created by operator)  [by admin]",
        "00:00:00           entered step 0 → progressing, step 0, weight 10%  [by admin]",
        "00:00:00–00:00:10  2 checks at step 0, weight 10%: passed: all 5 guardrails passed (2 of 2 passes needed to advance)  [by analysis]",
        "00:00:20           step 0 pause elapsed; entered step 1 → progressing, step 1, weight 50%  [by schedule]",
        "00:00:20           check at step 1, weight 50%: passed: all 5 guardrails passed (1 of 2 passes needed to advance)  [by analysis]",
        "00:00:30           check at step 1, weight 50%: ROLL BACK: critical guardrail error-rate failed: canary error rate 20% (200 of 1000 in 10s) is above 5%  [by analysis]",
        "                     - error-rate (critical, fail): canary error rate 20% (200 of 1000 in 10s) is above 5%",
        "                     - vs-stable (critical, fail): odds that canary errs 2× as often as stable: 1000000000000 to 1, past 100 to 1 (canary 215 of 4000 failed, stable 180 of 36000; canary 5.38%, stable 0.5%)",
        "                     - burn-rate (warning, fail): canary burns the 99% SLO error budget 20× over 30s and 20× over 10s (limit 10×)",
        "00:00:30           critical guardrail error-rate failed: canary error rate 20% (200 of 1000 in 10s) is above 5% → rolled_back, step 1, weight 0%  [by analysis]",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");
    r.h.close().await;
}

#[tokio::test]
async fn each_variant_is_read_where_the_spec_says_it_is_counted() {
    use linnet_core::decide::Variant;
    use linnet_sidecar::analysis::series::Counted;
    let asked = |r: &Rig| {
        let q = r.source.queries.lock().unwrap().last().cloned().unwrap();
        (q.canary, q.stable)
    };
    // Without `clusters`: the filter's per-variant counts.
    let mut r = rig().await;
    assert_eq!(r.h.create_yaml(ANALYSED).await.status, 201);
    r.run_for(11).await;
    assert_eq!(
        asked(&r),
        (
            Counted::filter("web", Variant::Canary),
            Counted::filter("web", Variant::Stable)
        )
    );
    r.h.close().await;

    // With them: Envoy's stats of each variant's cluster; while only copies reach the
    // canary, the shadow cluster's.
    let mut r = rig().await;
    let spec = ANALYSED.replace(
        "steps:\n  - {weight: 10, pause: 20s}",
        "clusters: {stable: web-stable, canary: web-canary}\nmirror_cluster: web-shadow\nsteps:\n  - {mirror: 100, pause: 20s}\n  - {weight: 10, pause: 20s}",
    );
    assert_eq!(r.h.create_yaml(&spec).await.status, 201, "{spec}");
    r.run_for(11).await;
    assert_eq!(r.state().await, ("shadowing".into(), 0, 0.0));
    let cluster = |c: &str| Counted::Cluster(c.into());
    assert_eq!(asked(&r), (cluster("web-shadow"), cluster("web-stable")));
    r.run_for(20).await;
    assert_eq!(r.state().await, ("progressing".into(), 1, 10.0));
    assert_eq!(asked(&r), (cluster("web-canary"), cluster("web-stable")));
}
