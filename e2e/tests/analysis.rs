//! SLO analysis end to end: the `linnet` sidecar drives a real Envoy (through the filter's
//! long-poll) while background load runs, judges the canary from real metrics — the Envoy
//! admin's, or a real Prometheus scraping that Envoy every second — and promotes, rolls back
//! or pauses on its own. Every assertion reads the sidecar's API: the rollout's state, its
//! audit events (each analysis run with its checks) and its explained timeline.
//!
//! Needs `.venv/bin/envoy` and `/usr/bin/prometheus` (`make setup`), `dist/linnet.wasm`
//! (`make wasm`) and the `linnet` binary (`cargo build -p linnet-sidecar`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::envoy::Envoy;
use linnet_e2e::http::Request;
use linnet_e2e::prometheus::Prometheus;
use linnet_e2e::sidecar::Sidecar;
use linnet_e2e::traffic::{Load, LoadConfig};
use linnet_e2e::upstream::{Faults, Upstream};
use linnet_e2e::{TestDir, Wasm};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ROLLOUT: &str = "checkout";
const HOST: &str = "checkout.local";
const OVERRIDE_TOKEN: &str = "e2e-override-token";
/// Every wait on the sidecar is bounded by this: far above the slowest rollout here (about
/// seven analysis runs), so only a stuck rollout reaches it.
const PATIENCE: Duration = Duration::from_secs(60);
/// The background load stops by itself after this long, whatever the test does.
const LOAD_LIMIT: Duration = Duration::from_secs(120);
/// Room for the sidecar's own work on top of the analysis schedule when timing a rollback:
/// a scrape and two store commits in a debug build, on two cores shared with Envoy, the
/// load and another test.
const SCHEDULING_ALLOWANCE_MS: i64 = 500;

/// Where analysis reads its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The Envoy admin, scraped by the sidecar itself at each run.
    Envoy,
    /// A real Prometheus scraping that admin every second.
    Prometheus,
}

// === impl Source ===

impl Source {
    /// The analysis interval, which is also each guardrail's window. The envoy source needs
    /// two of its own scrapes, one interval apart. Prometheus's `increase()` needs two samples
    /// of a series inside the window: three 1 s scrapes leave room for jitter.
    fn interval(self) -> Duration {
        match self {
            Source::Envoy => Duration::from_secs(2),
            Source::Prometheus => Duration::from_secs(3),
        }
    }
}

/// Everything one test runs: fields drop in order, so the load stops before Envoy goes.
struct Rig {
    load: Option<Load>,
    prometheus: Option<Prometheus>,
    envoy: Envoy,
    sidecar: Sidecar,
    _stable: Upstream,
    canary: Upstream,
    _dir: TestDir,
    /// The rollout the waits and reads are about: the last one created.
    name: std::cell::RefCell<String>,
}

// === impl Rig ===

impl Rig {
    /// A sidecar, the upstreams, an Envoy whose filter polls the sidecar (with no rollout of
    /// its own), Prometheus when the source is `prometheus`, and the load already running.
    fn start(name: &str, source: Source) -> Rig {
        Self::start_with(name, source, Wasm::Filter)
    }

    /// [`Rig::start`] with another build of the filter in Envoy.
    fn start_with(name: &str, source: Source, build: Wasm) -> Rig {
        let dir = TestDir::new("analysis", name).unwrap();
        let sidecar = Sidecar::start(dir.path()).unwrap();
        let stable = Upstream::start("stable").unwrap();
        let canary = Upstream::start("canary").unwrap();
        let mut config = sidecar.envoy_config(stable.port(), canary.port()).unwrap();
        config.filter_build(build).unwrap();
        let envoy = Envoy::start(&config).unwrap();
        let prometheus = (source == Source::Prometheus).then(|| {
            let p = Prometheus::start(
                &dir.path().join("prometheus"),
                &[envoy.admin],
                Duration::from_secs(1),
            )
            .unwrap();
            // Prometheus applies its targets a few seconds after it is ready: wait for two
            // scrapes, so the rollout starts on a source that is already collecting, as the
            // envoy source is from its first run.
            p.wait_for(r#"count_over_time(up{job="envoy"}[1m])"#, PATIENCE, |n| {
                n >= 2.0
            })
            .unwrap();
            p
        });
        let load = Load::start(envoy.listener, &LoadConfig::new(HOST, LOAD_LIMIT)).unwrap();
        Rig {
            load: Some(load),
            prometheus,
            envoy,
            sidecar,
            _stable: stable,
            canary,
            _dir: dir,
            name: std::cell::RefCell::new(ROLLOUT.into()),
        }
    }

    fn prometheus(&mut self) -> &mut Prometheus {
        self.prometheus.as_mut().expect("a rig with Prometheus")
    }

    /// The `source:` of the analysis section.
    fn source_yaml(&self) -> String {
        match &self.prometheus {
            None => format!("{{envoy: {{admin: ['{}']}}}}", self.envoy.admin),
            Some(p) => format!("{{prometheus: {{url: '{}'}}}}", p.url()),
        }
    }

    /// Creates a rollout; the rig's reads and waits are about it from now on.
    fn create(&self, yaml: &str) {
        self.sidecar.create(yaml).unwrap();
        let spec: Value = serde_saphyr::from_str(yaml).unwrap();
        *self.name.borrow_mut() = spec["name"].as_str().unwrap().to_owned();
    }

    fn name(&self) -> String {
        self.name.borrow().clone()
    }

    /// `linnet <args…>` about the current rollout (its name goes last).
    fn cli(&self, args: &[&str]) -> String {
        let name = self.name();
        let mut all = args.to_vec();
        all.push(&name);
        self.sidecar.cli(&all).unwrap()
    }

    /// `GET /v1/rollouts/<name>`.
    fn status(&self) -> Value {
        self.sidecar
            .get_json(&format!("/v1/rollouts/{}", self.name()))
            .unwrap()
    }

    /// The rollout's audit events, oldest first.
    fn events(&self) -> Vec<Value> {
        let v = self
            .sidecar
            .get_json(&format!("/v1/audit?rollout={}&limit=1000", self.name()))
            .unwrap();
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// `GET /v1/rollouts/checkout/explain`: the timeline's lines.
    fn explain(&self) -> Vec<Value> {
        let v = self
            .sidecar
            .get_json(&format!("/v1/rollouts/{}/explain?limit=1000", self.name()))
            .unwrap();
        v["timeline"].as_array().cloned().unwrap_or_default()
    }

    /// What to read when a wait fails: the timeline in words and the sidecar's last lines.
    fn story(&self) -> String {
        let mut out = String::from("timeline:\n");
        for line in self.explain() {
            out.push_str(&format!(
                "  {} {}\n",
                line["kind"].as_str().unwrap_or("?"),
                line["text"].as_str().unwrap_or("")
            ));
            for d in line["details"].as_array().into_iter().flatten() {
                out.push_str(&format!("      {}\n", d.as_str().unwrap_or("")));
            }
        }
        let log = self.sidecar.log();
        let lines: Vec<&str> = log.lines().collect();
        out.push_str("sidecar log (tail):\n");
        out.push_str(&lines[lines.len().saturating_sub(15)..].join("\n"));
        if let Some(load) = &self.load {
            out.push_str(&format!("\nload: {:?}", load.counts()));
        }
        out
    }

    /// Polls `f` until it returns something, for at most `timeout`.
    fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Rig) -> Option<T>) -> T {
        poll(what, timeout, || f(self), || self.story())
    }

    /// Waits for the rollout to be in `state`; fails at once if it ends in another.
    fn wait_state(&self, state: &str) -> Value {
        self.wait(&format!("state {state}"), PATIENCE, |rig| {
            let s = rig.status();
            let now = s["state"].as_str().unwrap_or("?").to_owned();
            if now == state {
                return Some(s);
            }
            let terminal = [
                "promoted",
                "completed",
                "rolled_back",
                "aborted",
                "timed_out",
            ];
            assert!(
                !terminal.contains(&now.as_str()),
                "waiting for {state}, the rollout ended {now}\n{}",
                rig.story()
            );
            None
        })
    }

    /// Waits for an analysis run after event `after` with this decision; returns it.
    fn wait_run(&self, after: i64, decision: &str) -> Value {
        self.wait(&format!("a {decision} run"), PATIENCE, |rig| {
            rig.events().into_iter().find(|e| {
                id(e) > after && e["kind"] == "analysis" && e["data"]["decision"] == decision
            })
        })
    }

    /// Makes the canary answer 30% of requests with 500s and waits for analysis to roll it
    /// back, by a critical guardrail, to weight 0; returns the status.
    fn canary_turns_bad(&self) -> Value {
        self.canary
            .set_faults(Faults {
                error_percent: 30.0,
                delay_ms: 0,
            })
            .unwrap();
        let status = self.wait_state("rolled_back");
        let (_, why) = last_transition(&status);
        assert!(why.starts_with("critical guardrail"), "{why}");
        assert_eq!(status["weight"], 0.0);
        status
    }

    /// Waits until the canary upstream has had no request for a second: the rollout's
    /// weight 0 has reached Envoy.
    fn wait_canary_quiet(&self) {
        let mut last = (self.canary.count(|_| true), Instant::now());
        self.wait("the canary left alone", PATIENCE, |rig| {
            let n = rig.canary.count(|_| true);
            if n != last.0 {
                last = (n, Instant::now());
            }
            (last.1.elapsed() >= Duration::from_secs(1)).then_some(())
        });
    }
}

/// Where the rollouts name their variants' clusters (`envoy/demo.yaml`'s): analysis judges
/// each variant from Envoy's stats of its cluster.
const CLUSTERS: &str = "clusters: {stable: checkout-stable, canary: checkout-canary}\n";

/// The rollout these tests drive: steps of 10% and 50% that each last one
/// interval, then 100%, judged by four critical guardrails, from the clusters' stats.
fn rollout(interval: Duration, source: &str, extra: &str) -> String {
    let i = format!("{}ms", interval.as_millis());
    format!(
        r#"name: {ROLLOUT}
match: {{authority: {HOST}}}
{CLUSTERS}stickiness: [{{header: x-user-id}}]
override: {{header: x-linnet-override, token_header: x-linnet-token, token: {OVERRIDE_TOKEN}}}
steps: [{{weight: 10, pause: {i}}}, {{weight: 50, pause: {i}}}, {{weight: 100}}]
analysis:
  interval: {i}
  source: {source}
  passes: 2
  min_requests: 20
  slo: 99{extra}
  guardrails:
    - {{error_rate: {{max: 5}}}}
    - {{latency: {{quantile: p99, max_ms: 150}}, severity: critical}}
    - {{compare: {{ratio: 2, alpha: 0.01}}}}
    - {{zero_tolerance: {{metric: '{CANARY_CRASHES}'}}}}
"#
    )
}

/// [`linnet_e2e::poll`], failing the test past `timeout`.
fn poll<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Option<T>,
    story: impl Fn() -> String,
) -> T {
    linnet_e2e::poll(what, timeout, f, story).unwrap()
}

fn id(event: &Value) -> i64 {
    event["id"].as_i64().unwrap_or(0)
}

fn at_ms(event: &Value) -> i64 {
    event["at_ms"].as_i64().unwrap_or(0)
}

fn runs(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["kind"] == "analysis").collect()
}

fn decision(run: &Value) -> &str {
    run["data"]["decision"].as_str().unwrap_or("?")
}

fn reason(event: &Value) -> &str {
    event["data"]["reason"].as_str().unwrap_or("")
}

/// The check of one guardrail in a run.
fn check<'a>(run: &'a Value, guardrail: &str) -> &'a Value {
    run["data"]["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["guardrail"] == guardrail))
        .unwrap_or_else(|| panic!("no {guardrail} check in {run}"))
}

fn first<'a>(events: &'a [Value], kind: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["kind"] == kind)
}

/// The most recent transition in a status, as `(to, reason)`.
fn last_transition(status: &Value) -> (String, String) {
    let t = status["transitions"]
        .as_array()
        .and_then(|ts| ts.last())
        .unwrap_or_else(|| panic!("no transition in {status}"));
    (
        t["to"].as_str().unwrap_or("").to_owned(),
        t["reason"].as_str().unwrap_or("").to_owned(),
    )
}

// === scenarios, for either source ===

/// A healthy canary steps through 10%, 50% and 100% to `promoted` on passing checks alone;
/// `by_filter`: judged from the filter's per-variant metrics (the responses build's) instead
/// of the clusters' stats.
fn promoted_with_no_human(source: Source, name: &str, by_filter: bool) {
    let build = if by_filter {
        Wasm::Responses
    } else {
        Wasm::Filter
    };
    let mut rig = Rig::start_with(name, source, build);
    let started = Instant::now();
    let mut spec = rollout(source.interval(), &rig.source_yaml(), "");
    if by_filter {
        spec = spec.replace(CLUSTERS, "");
    }
    rig.create(&spec);
    let status = rig.wait_state("promoted");
    eprintln!("{source:?}: promoted after {:?}", started.elapsed());
    assert_eq!(status["weight"], 100.0);

    let events = rig.events();
    let runs = runs(&events);
    // Each step advanced only after its two passing checks, and nothing went wrong.
    for step in 0..3 {
        let passes = runs
            .iter()
            .filter(|r| r["data"]["step"] == step && decision(r) == "pass")
            .count();
        assert!(passes >= 2, "step {step}: {passes} passes\n{}", rig.story());
    }
    for r in &runs {
        assert!(
            matches!(decision(r), "pass" | "hold"),
            "run {r}\n{}",
            rig.story()
        );
    }
    // No human in the loop: every transition after the creation was the sidecar's own.
    let moves: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] != "analysis" && e["kind"] != "created")
        .collect();
    let kinds: Vec<&str> = moves.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["started", "step", "step", "promoted"],
        "{}",
        rig.story()
    );
    for e in moves {
        assert!(!reason(e).contains("operator"), "{e}");
    }
    let timeline = rig.explain();
    assert_eq!(timeline.last().unwrap()["kind"], "promoted");

    let counts = rig.load.take().unwrap().stop();
    eprintln!("{source:?}: load {counts:?}");
    assert!(counts.canary > 0 && counts.stable > 0, "{counts:?}");
    assert_eq!(counts.server_errors, 0, "{counts:?}");
}

/// A canary failing 20% of its requests is rolled back by the error-rate guardrail; returns
/// the time from entering a weighted step to the rollback, by the events' timestamps.
fn rolled_back_on_errors(source: Source, name: &str) -> i64 {
    let rig = Rig::start(name, source);
    rig.canary
        .set_faults(Faults {
            error_percent: 20.0,
            delay_ms: 0,
        })
        .unwrap();
    rig.create(&rollout(source.interval(), &rig.source_yaml(), ""));
    let status = rig.wait_state("rolled_back");
    assert_eq!(status["weight"], 0.0);
    let (to, why) = last_transition(&status);
    assert_eq!(to, "rolled_back");
    assert!(why.contains("error-rate"), "{why}");

    let events = rig.events();
    let entered = events
        .iter()
        .find(|e| e["data"]["to"] == "progressing" && e["data"]["weight"].as_f64() > Some(0.0))
        .unwrap_or_else(|| panic!("no weighted step entered\n{}", rig.story()));
    let rolled = first(&events, "rolled_back").unwrap();
    assert!(
        reason(rolled).starts_with("critical guardrail error-rate failed"),
        "{rolled}"
    );
    assert!(first(&events, "promoted").is_none());
    let deciding = runs(&events)
        .into_iter()
        .rev()
        .find(|r| decision(r) == "roll_back")
        .unwrap();
    let c = check(deciding, "error-rate");
    assert_eq!(c["verdict"], "fail", "{c}");
    let rate = c["observed"].as_f64().unwrap();
    assert!((0.1..=0.3).contains(&rate), "observed error rate {rate}");
    // The explanation names the failed guardrail too.
    let timeline = rig.explain();
    let line = timeline
        .iter()
        .find(|l| l["kind"] == "check:roll_back")
        .unwrap_or_else(|| panic!("{}", rig.story()));
    let details: Vec<&str> = line["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("error-rate (critical, fail)")),
        "{details:?}"
    );
    // Weight 0 reaches Envoy: the canary gets no more users.
    rig.wait_canary_quiet();
    let took = at_ms(rolled) - at_ms(entered);
    eprintln!("{source:?}: rolled back {took} ms after the canary got traffic");
    took
}

// === tests ===

#[test]
fn healthy_canary_is_promoted_to_100_with_no_human() {
    promoted_with_no_human(Source::Envoy, "healthy", false);
}

#[test]
fn canary_with_20_percent_errors_is_rolled_back_within_two_intervals() {
    let took = rolled_back_on_errors(Source::Envoy, "errors");
    // The first run only takes the baseline scrape, and comes at the runner's next look for
    // rollouts (at most 1 s, under one interval, after the step began); the next run, one
    // interval later, judges the first window and rolls back.
    let limit = 2 * Source::Envoy.interval().as_millis() as i64 + SCHEDULING_ALLOWANCE_MS;
    assert!(
        took <= limit,
        "rolled back after {took} ms, limit {limit} ms"
    );
}

#[test]
fn canary_200ms_slower_is_rolled_back_by_the_p99_guardrail() {
    let rig = Rig::start("latency", Source::Envoy);
    rig.canary
        .set_faults(Faults {
            error_percent: 0.0,
            delay_ms: 200,
        })
        .unwrap();
    rig.create(&rollout(Source::Envoy.interval(), &rig.source_yaml(), ""));
    let status = rig.wait_state("rolled_back");
    let (_, why) = last_transition(&status);
    assert!(
        why.starts_with("critical guardrail p99-latency failed"),
        "{why}"
    );

    let events = rig.events();
    let deciding = runs(&events)
        .into_iter()
        .rev()
        .find(|r| decision(r) == "roll_back")
        .unwrap();
    let c = check(deciding, "p99-latency");
    assert_eq!(c["verdict"], "fail", "{c}");
    let p99 = c["observed"].as_f64().unwrap();
    assert!(p99 > 150.0, "p99 {p99} ms");
    // Errors were fine: latency alone decided.
    assert_eq!(check(deciding, "error-rate")["verdict"], "pass");
}

/// The canary's own crashes (connections it closed with a request in flight), the
/// zero-tolerance series the shipped example watches.
const CANARY_CRASHES: &str = r#"envoy_cluster_upstream_cx_destroy_remote_with_active_rq{envoy_cluster_name="checkout-canary"}"#;

/// The shipped example's guardrails and settings, read from `examples/checkout.yaml`, on this
/// rig's source, with one long step so that it is judged for as long as a test needs.
fn shipped_example(rig: &Rig, pause: Duration) -> String {
    let path = linnet_e2e::repo_root().join("examples/checkout.yaml");
    let mut spec: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    spec["analysis"]["source"] = serde_saphyr::from_str(&rig.source_yaml()).unwrap();
    spec["steps"] =
        json!([{"weight": 20, "pause": format!("{}s", pause.as_secs())}, {"weight": 100}]);
    spec["deadline"] = json!("10m");
    serde_json::to_string(&spec).unwrap()
}

#[test]
fn wrong_override_tokens_at_100_per_second_for_a_minute_do_not_roll_the_example_back() {
    let rig = Rig::start("override-flood", Source::Envoy);
    rig.create(&shipped_example(&rig, Duration::from_secs(75)));
    rig.wait_run(0, "pass");
    // 100 requests a second for a minute, each with a made-up override token.
    let mut client = rig.envoy.client();
    let start = Instant::now();
    let mut sent = 0u32;
    while sent < 6000 && start.elapsed() < Duration::from_secs(70) {
        let due = start + Duration::from_millis(u64::from(sent) * 10);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let resp = client.send(
            &Request::get("/")
                .host(HOST)
                .header("x-user-id", format!("mallory-{sent}"))
                .header("x-linnet-override", "canary")
                .header("x-linnet-override-token", format!("guess-{sent}")),
        );
        if resp.is_err() {
            client = rig.envoy.client();
        }
        sent += 1;
        if sent.is_multiple_of(1000) {
            let state = rig.status()["state"].as_str().unwrap_or("?").to_owned();
            assert_eq!(
                state,
                "progressing",
                "after {sent} wrong tokens\n{}",
                rig.story()
            );
        }
    }
    eprintln!("sent {sent} wrong override tokens in {:?}", start.elapsed());
    assert!(sent >= 6000, "only {sent} sent");
    let rejected = rig
        .envoy
        .stat("wasmcustom.linnet_override_rejected_total.rollout.checkout")
        .unwrap()
        .unwrap_or(0);
    assert!(rejected >= 5000, "the filter saw {rejected} rejections");
    let status = rig.status();
    assert_eq!(status["state"], "progressing", "{}", rig.story());
    // Judged all along, and the crash guardrail passed every time: nothing a client did counts.
    let events = rig.events();
    let judged = runs(&events);
    assert!(judged.len() >= 15, "{} runs", judged.len());
    assert!(
        judged.iter().all(|r| decision(r) != "roll_back"),
        "{}",
        rig.story()
    );
    let last = judged.last().unwrap();
    assert_eq!(check(last, "canary-crashed")["verdict"], "pass", "{last}");
}

#[test]
fn a_misspelled_zero_tolerance_metric_is_no_data_then_pauses_with_the_reason() {
    let rig = Rig::start("misspelled", Source::Envoy);
    let typo = CANARY_CRASHES.replace("active_rq", "active_rqq");
    let spec = rollout(
        Source::Envoy.interval(),
        &rig.source_yaml(),
        "\n  nodata_limit: 2",
    )
    .replace(CANARY_CRASHES, &typo);
    assert!(spec.contains(&typo));
    rig.create(&spec);
    let status = rig.wait_state("paused");
    let (_, why) = last_transition(&status);
    assert!(why.contains("no series matches"), "{why}");
    assert!(why.contains("active_rqq"), "{why}");
    let events = rig.events();
    let first_run = runs(&events)[0];
    let c = check(
        first_run,
        "envoy_cluster_upstream_cx_destroy_remote_with_active_rqq",
    );
    assert_eq!(c["verdict"], "no_data", "{c}");
    assert!(first(&events, "promoted").is_none());
    assert_eq!(status["step"], 0, "{}", rig.story());
}

#[test]
fn an_operator_pause_does_not_stop_a_bad_canary_being_rolled_back() {
    let rig = Rig::start("paused-bad", Source::Envoy);
    rig.create(&rollout(Source::Envoy.interval(), &rig.source_yaml(), ""));
    rig.cli(&["rollout", "pause"]);
    let paused = rig.wait_state("paused");
    rig.wait_run(0, "pass");
    let status = rig.canary_turns_bad();
    let from = status["transitions"].as_array().unwrap().last().unwrap()["from"].clone();
    assert_eq!(from, "paused", "{}", rig.story());
    assert_eq!(paused["weight"], 10.0);
    rig.wait_canary_quiet();
}

#[test]
fn a_manual_weight_does_not_stop_a_bad_canary_being_rolled_back() {
    let rig = Rig::start("weight-bad", Source::Envoy);
    rig.create(&rollout(Source::Envoy.interval(), &rig.source_yaml(), ""));
    rig.wait_state("progressing");
    let name = rig.name();
    rig.sidecar
        .cli(&["rollout", "weight", &name, "30"])
        .unwrap();
    let held = rig.wait_state("paused");
    assert_eq!(held["weight"], 30.0);
    rig.wait_run(0, "pass");
    rig.canary_turns_bad();
    rig.wait_canary_quiet();
}

#[test]
fn prometheus_down_pauses_the_rollout_and_back_up_resumes_it_to_promotion() {
    let mut rig = Rig::start("prom-down", Source::Prometheus);
    let extra = "\n  nodata_limit: 2";
    rig.create(&rollout(
        Source::Prometheus.interval(),
        &rig.source_yaml(),
        extra,
    ));
    rig.wait_run(0, "pass");
    // The next run is an interval away: the step read now is the one it will be judged in.
    rig.prometheus().stop();
    let step = rig.status()["step"].clone();

    let status = rig.wait_state("paused");
    let (to, why) = last_transition(&status);
    assert_eq!(to, "paused");
    // The source is down for every guardrail: said once, naming Prometheus, blaming none.
    assert!(
        why.starts_with("no data: Prometheus at http://127.0.0.1:"),
        "{why}"
    );
    assert!(why.contains("did not answer"), "{why}");
    assert!(why.contains("paused until data is back"), "{why}");
    // Blind, it did not step on: still where the last pass left it.
    assert_eq!(status["step"], step, "{}", rig.story());
    let paused_at = id(first(&rig.events(), "paused").unwrap());

    rig.prometheus().start_again().unwrap();
    let resumed = rig.wait("resumed after Prometheus came back", PATIENCE, |rig| {
        rig.events()
            .into_iter()
            .find(|e| id(e) > paused_at && e["kind"] == "resumed")
    });
    assert_eq!(resumed["data"]["to"], "progressing", "{resumed}");
    assert!(reason(&resumed).starts_with("data is back"), "{resumed}");
    rig.wait_state("promoted");

    let events = rig.events();
    assert!(runs(&events).iter().all(|r| decision(r) != "roll_back"));
    let paused: Vec<&Value> = events.iter().filter(|e| e["kind"] == "paused").collect();
    assert_eq!(paused.len(), 1, "{}", rig.story());
}

#[test]
fn nan_from_prometheus_is_no_data_and_never_promotes() {
    let rig = Rig::start("prom-nan", Source::Prometheus);
    let url = rig.prometheus.as_ref().unwrap().url();
    // A request count that is always NaN, as a ratio of two zeros is.
    let nan = r#"(sum(increase(envoy_cluster_upstream_rq_total{envoy_cluster_name="{cluster}"}[{window}])) or vector(0)) * 0 / 0"#;
    let source =
        format!("{{prometheus: {{url: '{url}', queries: {{cluster_requests: '{nan}'}}}}}}");
    rig.create(&rollout(
        Source::Prometheus.interval(),
        &source,
        "\n  nodata_limit: 2",
    ));
    let status = rig.wait_state("paused");
    let (_, why) = last_transition(&status);
    assert!(
        why.starts_with("no data for error-rate: canary request count is not a number"),
        "{why}"
    );
    // Paused, it keeps judging (to resume when data is back) and keeps holding.
    let paused_at = id(first(&rig.events(), "paused").unwrap());
    rig.wait("two runs while paused", PATIENCE, |rig| {
        let events = rig.events();
        let later = runs(&events)
            .into_iter()
            .filter(|r| id(r) > paused_at)
            .count();
        (later >= 2).then_some(())
    });
    let status = rig.status();
    assert_eq!(status["state"], "paused");
    assert_eq!(status["step"], 0);
    let events = rig.events();
    for r in runs(&events) {
        assert!(matches!(decision(r), "hold" | "pause"), "{r}");
        let c = check(r, "error-rate");
        assert_eq!(c["verdict"], "no_data", "{c}");
        assert!(
            c.get("observed").is_none(),
            "NaN is not reported as a number: {c}"
        );
    }
}

#[test]
fn prometheus_source_promotes_the_healthy_canary_from_the_filter_metrics() {
    promoted_with_no_human(Source::Prometheus, "prom-healthy", true);
}

#[test]
fn prometheus_source_rolls_back_the_canary_with_20_percent_errors() {
    rolled_back_on_errors(Source::Prometheus, "prom-errors");
}

/// One release of `checkout.local`, held at `weight` until promoted and judged all along.
/// Every release shares the salt, so a user keeps their bucket from one release to the next.
fn release(name: &str, weight: u32, rig: &Rig) -> String {
    let i = format!("{}ms", Source::Envoy.interval().as_millis());
    format!(
        r#"name: {name}
match: {{authority: {HOST}}}
{CLUSTERS}stickiness: [{{header: x-user-id}}]
salt: checkout
steps: [{{weight: {weight}, pause: until promoted}}, {{weight: 100}}]
analysis:
  interval: {i}
  source: {}
  passes: 2
  min_requests: 20
  guardrails:
    - {{error_rate: {{max: 5}}}}
    - {{compare: {{ratio: 2, alpha: 0.01}}}}
"#,
        rig.source_yaml()
    )
}

/// Sends one request for each of 10,000 users and checks that each is served by the variant
/// its bucket says at `weight_bp` (everyone on stable at 0). Waits first until users at the
/// edge of the split route by it on fresh connections, so every worker has the snapshot.
/// Returns how many were on the canary.
fn ten_thousand_users(rig: &Rig, weight_bp: u16) -> usize {
    let users: Vec<String> = (0..10_000).map(|i| format!("shopper-{i}")).collect();
    let expect = |u: &str| {
        if linnet_core::bucket(b"checkout", u.as_bytes()) < weight_bp {
            "canary"
        } else {
            "stable"
        }
    };
    let serve = |client: &mut linnet_e2e::http::Client, u: &str| -> String {
        let resp = client
            .send(&Request::get("/").host(HOST).header("x-user-id", u))
            .unwrap();
        linnet_e2e::served_by(&resp).unwrap_or_default()
    };
    let edge: Vec<&String> = users
        .iter()
        .filter(|u| {
            let b = i32::from(linnet_core::bucket(b"checkout", u.as_bytes()));
            (b - i32::from(weight_bp)).abs() < 300
        })
        .take(12)
        .collect();
    rig.wait(
        &format!("weight {weight_bp} bp in every worker"),
        PATIENCE,
        |rig| {
            let ok = (0..4).all(|_| {
                let mut c = rig.envoy.client();
                edge.iter().all(|u| serve(&mut c, u) == expect(u))
            });
            ok.then_some(())
        },
    );
    let mut client = rig.envoy.client();
    let mut canary = 0;
    for u in &users {
        let got = serve(&mut client, u);
        assert_eq!(got, expect(u), "{u} at {weight_bp} bp");
        canary += usize::from(got == "canary");
    }
    canary
}

#[test]
fn three_releases_of_one_host_each_route_by_their_own_rollout() {
    let rig = Rig::start("releases", Source::Envoy);
    let healthy = Faults {
        error_percent: 0.0,
        delay_ms: 0,
    };
    let mut shares = Vec::new();

    // v2: 20%, then promoted, then completed: stable runs v2 and the host is free.
    rig.create(&release("checkout-v2", 20, &rig));
    rig.wait_run(0, "pass");
    shares.push(("v2", 20, ten_thousand_users(&rig, 2000)));
    rig.cli(&["rollout", "promote", "--full"]);
    rig.wait_state("promoted");
    assert_eq!(ten_thousand_users(&rig, 10_000), 10_000);
    rig.cli(&["rollout", "complete"]);
    assert_eq!(rig.status()["state"], "completed");
    assert_eq!(ten_thousand_users(&rig, 0), 0);

    // v3: 30%, then its canary turns bad and analysis rolls it back.
    rig.create(&release("checkout-v3", 30, &rig));
    rig.wait_run(0, "pass");
    shares.push(("v3", 30, ten_thousand_users(&rig, 3000)));
    rig.canary_turns_bad();
    rig.canary.set_faults(healthy).unwrap();
    assert_eq!(ten_thousand_users(&rig, 0), 0);

    // v4: 40%, then promoted.
    rig.create(&release("checkout-v4", 40, &rig));
    rig.wait_run(0, "pass");
    shares.push(("v4", 40, ten_thousand_users(&rig, 4000)));
    rig.cli(&["rollout", "promote", "--full"]);
    rig.wait_state("promoted");
    assert_eq!(ten_thousand_users(&rig, 10_000), 10_000);

    for (v, weight, canary) in &shares {
        let pct = *canary as f64 / 100.0;
        eprintln!("{v}: weight {weight}%, {canary} of 10000 users on the canary ({pct}%)");
        assert!(
            (pct - f64::from(*weight)).abs() < 2.0,
            "{v}: {pct}% at {weight}%"
        );
    }
    let history = rig
        .sidecar
        .get_json(&format!("/v1/history?match={HOST}"))
        .unwrap();
    let listed: Vec<(&str, &str)> = history["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("checkout-v4", "promoted"),
            ("checkout-v3", "rolled_back"),
            ("checkout-v2", "completed")
        ]
    );
    let text = rig
        .sidecar
        .cli(&["rollout", "history", "--match", HOST])
        .unwrap();
    eprintln!("{text}");
    for name in ["checkout-v2", "checkout-v3", "checkout-v4"] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn one_envoy_of_three_stopped_mid_rollout_is_named_and_the_others_still_judge() {
    let dir = TestDir::new("analysis", "three-envoys").unwrap();
    let sidecar = Sidecar::start(dir.path()).unwrap();
    let stable = Upstream::start("stable").unwrap();
    let canary = Upstream::start("canary").unwrap();
    let config = sidecar.envoy_config(stable.port(), canary.port()).unwrap();
    let mut envoys: Vec<Envoy> = (0..3).map(|_| Envoy::start(&config).unwrap()).collect();
    let mut loads: Vec<Load> = envoys
        .iter()
        .map(|e| {
            let mut c = LoadConfig::new(HOST, LOAD_LIMIT);
            c.rate = 120;
            Load::start(e.listener, &c).unwrap()
        })
        .collect();
    let admins: Vec<String> = envoys.iter().map(|e| format!("'{}'", e.admin)).collect();
    let i = format!("{}ms", Source::Envoy.interval().as_millis());
    let spec = format!(
        r#"name: {ROLLOUT}
match: {{authority: {HOST}}}
{CLUSTERS}stickiness: [{{header: x-user-id}}]
steps: [{{weight: 10, pause: 8s}}, {{weight: 50, pause: 8s}}, {{weight: 100}}]
analysis:
  interval: {i}
  source: {{envoy: {{admin: [{}]}}}}
  passes: 2
  min_requests: 20
  guardrails:
    - {{error_rate: {{max: 5}}}}
    - {{compare: {{ratio: 2, alpha: 0.01}}}}
"#,
        admins.join(", ")
    );
    sidecar.create(&spec).unwrap();
    let events = || -> Vec<Value> {
        sidecar
            .get_json(&format!("/v1/audit?rollout={ROLLOUT}&limit=1000"))
            .unwrap()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let wait = |what: &str, f: &dyn Fn(&[Value]) -> Option<Value>| -> Value {
        poll(what, PATIENCE, || f(&events()), || sidecar.log())
    };
    let passed = wait("a pass with three Envoys", &|ev| {
        runs(ev)
            .into_iter()
            .find(|r| decision(r) == "pass")
            .cloned()
    });
    // The third Envoy goes away mid-rollout.
    drop(loads.pop());
    let gone = envoys.pop().unwrap();
    let gone_admin = gone.admin.to_string();
    drop(gone);
    let partial = wait("a run without the third Envoy", &|ev| {
        runs(ev)
            .into_iter()
            .find(|r| {
                id(r) > id(&passed)
                    && check(r, "error-rate")["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("left out"))
            })
            .cloned()
    });
    // Still judged on the other two: checks pass, not no data, and say who is missing.
    let c = check(&partial, "error-rate");
    assert_eq!(c["verdict"], "pass", "{c}");
    let text = c["text"].as_str().unwrap();
    assert!(text.contains("2 of 3 Envoys answered"), "{text}");
    assert!(
        text.contains(&gone_admin),
        "{text} should name {gone_admin}"
    );
    assert_eq!(decision(&partial), "pass", "{partial}");
    wait("promoted on two Envoys", &|ev| {
        ev.iter().find(|e| e["kind"] == "promoted").cloned()
    });
    drop(loads);
}

#[test]
fn after_a_crash_and_restart_the_first_run_judges() {
    let mut rig = Rig::start("restart", Source::Envoy);
    rig.create(&release(ROLLOUT, 20, &rig));
    let first = rig.wait_run(0, "pass");
    rig.wait_run(id(&first), "pass");
    let before = rig.events().last().map_or(0, id);
    rig.sidecar.kill9();
    std::thread::sleep(Duration::from_secs(1));
    rig.sidecar.restart().unwrap();
    // The first run after the restart has a window: from the last scrape kept before the
    // crash, not "a window needs two".
    let after = rig.wait("the first run after the restart", PATIENCE, |rig| {
        runs(&rig.events())
            .into_iter()
            .find(|r| id(r) > before)
            .cloned()
    });
    assert_eq!(decision(&after), "pass", "{after}\n{}", rig.story());
    let c = check(&after, "error-rate");
    assert_eq!(c["verdict"], "pass", "{c}");
    assert!(
        after["data"]["observed"]["increment"]["covered_ms"]
            .as_i64()
            .unwrap()
            >= 1000,
        "{after}"
    );
}
