//! The dashboard (`/ui`) and the evidence reports, in Debian's Chromium, against a real sidecar
//! judging a real Envoy under load: the page lists a rollout and follows it live, shows a
//! failing check with its reason, and its controls ask for the token; a promoted and a rolled
//! back release each get a report that opens from a file with no server, draws its charts and
//! says what the store says, one for one.
//!
//! Needs `make setup` (Envoy, Chromium, playwright-core), `dist/linnet.wasm` and the `linnet`
//! binary. Screenshots go to `target/screenshots/`; with `LINNET_UPDATE_SCREENSHOTS=1` also to
//! `docs/`, where the README shows them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::browser::Browser;
use linnet_e2e::envoy::Envoy;
use linnet_e2e::http::admin_get;
use linnet_e2e::sidecar::{Sidecar, ADMIN_TOKEN};
use linnet_e2e::traffic::{Load, LoadConfig};
use linnet_e2e::upstream::{Faults, Upstream};
use linnet_e2e::{repo_root, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const HOST: &str = "checkout.local";
/// Every wait is bounded by this; only a stuck rollout or page reaches it.
const PATIENCE: Duration = Duration::from_secs(60);
const LOAD_LIMIT: Duration = Duration::from_secs(150);

/// A sidecar judging an Envoy under load; fields drop in order, the load first.
struct Rig {
    _load: Load,
    envoy: Envoy,
    sidecar: Sidecar,
    _stable: Upstream,
    canary: Upstream,
    dir: TestDir,
}

impl Rig {
    fn start(name: &str) -> Rig {
        let dir = TestDir::new("dashboard", name).unwrap();
        let sidecar = Sidecar::start(dir.path()).unwrap();
        let stable = Upstream::start("stable").unwrap();
        let canary = Upstream::start("canary").unwrap();
        let config = sidecar.envoy_config(stable.port(), canary.port()).unwrap();
        let envoy = Envoy::start(&config).unwrap();
        let load = Load::start(envoy.listener, &LoadConfig::new(HOST, LOAD_LIMIT)).unwrap();
        Rig {
            _load: load,
            envoy,
            sidecar,
            _stable: stable,
            canary,
            dir,
        }
    }

    /// Creates a rollout from `yaml`; returns its release id.
    fn create(&self, yaml: &str) -> i64 {
        self.sidecar.create(yaml).unwrap();
        let spec: Value = serde_saphyr::from_str(yaml).unwrap();
        self.status(spec["name"].as_str().unwrap())["id"]
            .as_i64()
            .unwrap()
    }

    fn status(&self, rollout: &str) -> Value {
        self.sidecar
            .get_json(&format!("/v1/rollouts/{rollout}"))
            .unwrap()
    }

    fn wait_state(&self, rollout: &str, state: &str) -> Value {
        wait(&format!("{rollout} {state}"), || {
            let s = self.status(rollout);
            (s["state"] == state).then_some(s)
        })
    }

    fn canary_errors(&self, percent: f64) {
        self.canary
            .set_faults(Faults {
                error_percent: percent,
                delay_ms: 0,
            })
            .unwrap();
    }

    /// A rollout of `checkout.local` judged from its clusters' stats every second.
    fn spec(&self, steps: &str, guardrails: &str) -> String {
        format!(
            "name: checkout\nmatch: {{authority: {HOST}}}\n\
             clusters: {{stable: checkout-stable, canary: checkout-canary}}\n\
             stickiness: [{{header: x-user-id}}]\nsteps: {steps}\n\
             analysis:\n  interval: 1s\n  source: {{envoy: {{admin: ['{}']}}}}\n  passes: 1\n  \
             min_requests: 20\n  failure_limit: 1000\n  guardrails: {guardrails}\n",
            self.envoy.admin
        )
    }
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Saves a screenshot the test took, and into `docs/` when asked to.
fn screenshot(browser: &mut Browser, name: &str) {
    let dir = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    browser.screenshot(&path).unwrap();
    if std::env::var_os("LINNET_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        std::fs::copy(&path, repo_root().join("docs").join(name)).unwrap();
    }
}

#[test]
fn the_dashboard_follows_a_release_live_and_its_controls_need_the_token() {
    let rig = Rig::start("live");
    // The page is open before the rollout exists: the rollout arrives over the event stream.
    let mut b = Browser::start().unwrap();
    b.goto(&rig.sidecar.url("/ui")).unwrap();
    b.wait("[data-role=live]", "live").unwrap();
    let id = rig.create(&rig.spec(
        "[{weight: 10, pause: 5s}, {weight: 30, pause: 1h}, {weight: 100}]",
        "[{error_rate: {max: 5}, severity: warning}]",
    ));
    b.wait("[data-rollout=checkout] .name", "checkout").unwrap();
    b.wait("[data-role=detail-weight]", "10%").unwrap();
    // Marked once: were the page reloaded, the mark would be gone.
    b.eval("window.linnetMark = 'first load'").unwrap();

    // The plan steps on by itself; the page hears it over the event stream.
    let at_30 = rig.wait_state("checkout", "progressing");
    wait("step 1", || {
        (rig.status("checkout")["step"] == 1).then_some(())
    });
    let seen = Instant::now();
    b.wait_for(
        "[data-role=detail-weight]",
        Some("30%"),
        Duration::from_secs(5),
    )
    .unwrap();
    println!("the page showed 30% {:?} after the API did", seen.elapsed());
    assert_eq!(b.eval("window.linnetMark").unwrap(), "first load");
    assert_eq!(at_30["id"], id);

    // A failing check appears with its reason, in the words of `linnet explain`.
    rig.canary_errors(30.0);
    let detail = b
        .wait_for(
            "[data-role=timeline] li.detail",
            Some("fail): canary error rate"),
            PATIENCE,
        )
        .unwrap();
    let explained = rig
        .sidecar
        .get_json("/v1/rollouts/checkout/explain?limit=1000")
        .unwrap();
    let api_details: Vec<&str> = explained["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["details"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        api_details.iter().any(|d| *d == detail.trim()),
        "{detail:?} not among the API's details {api_details:?}"
    );

    // Pause without the token: refused with a message, and nothing changes.
    b.click("[data-control=pause]").unwrap();
    let what = b.text("[data-role=what]").unwrap();
    assert!(what.contains("Stops automatic stepping"), "{what}");
    b.fill("[data-role=token]", "").unwrap();
    b.click("[data-role=confirm-button]").unwrap();
    let refused = b.wait("[data-role=message]", "refused").unwrap();
    assert!(refused.contains("needs a token"), "{refused}");
    assert_eq!(rig.status("checkout")["state"], "progressing");

    // With the token: paused, on the server and on the page.
    b.click("[data-control=pause]").unwrap();
    b.fill("[data-role=token]", ADMIN_TOKEN).unwrap();
    b.click("[data-role=confirm-button]").unwrap();
    b.wait("[data-role=state]", "paused").unwrap();
    let status = rig.status("checkout");
    assert_eq!(status["state"], "paused");
    let last = status["transitions"].as_array().unwrap().last().unwrap();
    assert!(
        last["reason"].as_str().unwrap().contains("by operator"),
        "{last}"
    );
    // The token lives in the tab's sessionStorage only: no cookie, not in the address.
    assert_eq!(b.eval("document.cookie").unwrap(), "");
    assert_eq!(
        b.eval("sessionStorage.getItem('linnet.token')").unwrap(),
        ADMIN_TOKEN
    );
    assert!(!b
        .eval("location.href")
        .unwrap()
        .as_str()
        .unwrap()
        .contains(ADMIN_TOKEN));
    // The report button fetches the evidence report with the tab's token, as one HTML file.
    b.eval(
        "window.linnetReport = null; const made = URL.createObjectURL; \
         URL.createObjectURL = (blob) => { window.linnetReport = blob; return made(blob); }",
    )
    .unwrap();
    b.click("[data-control=report]").unwrap();
    let html = wait("the downloaded report", || {
        let text = b
            .eval("window.linnetReport ? window.linnetReport.text() : null")
            .unwrap();
        text.as_str().map(String::from)
    });
    assert!(
        html.contains("<!doctype html>") && html.contains(&format!("\"id\":{id},")),
        "{}",
        &html[..html.len().min(300)]
    );
    screenshot(&mut b, "dashboard.png");
    assert_eq!(b.errors().unwrap(), Vec::<String>::new());
}

/// The store's transitions and checks of a release, as rows.
fn stored(db: &Path, id: i64) -> (Vec<Value>, Vec<Value>) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut t = conn
        .prepare(
            "SELECT id, at_ms, from_state, to_state, step, weight, reason FROM transitions
             WHERE rollout_id = ?1 ORDER BY id",
        )
        .unwrap();
    let transitions = t
        .query_map([id], |r| {
            Ok(serde_json::json!({
                "id": r.get::<_, i64>(0)?, "at_ms": r.get::<_, i64>(1)?,
                "from": r.get::<_, String>(2)?, "to": r.get::<_, String>(3)?,
                "step": r.get::<_, i64>(4)?, "weight": r.get::<_, f64>(5)?,
                "reason": r.get::<_, String>(6)?,
            }))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut c = conn
        .prepare(
            "SELECT event, guardrail, verdict, observed, limit_value, text FROM checks
             WHERE rollout_id = ?1 ORDER BY event, guardrail",
        )
        .unwrap();
    let checks = c
        .query_map([id], |r| {
            Ok(serde_json::json!({
                "event": r.get::<_, i64>(0)?, "guardrail": r.get::<_, String>(1)?,
                "verdict": r.get::<_, String>(2)?, "observed": r.get::<_, Option<f64>>(3)?,
                "limit": r.get::<_, Option<f64>>(4)?, "text": r.get::<_, String>(5)?,
            }))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (transitions, checks)
}

/// A report's checks in the store's row shape and order.
fn report_checks(report: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|run| {
            run["checks"].as_array().unwrap().iter().map(move |c| {
                serde_json::json!({
                    "event": run["event"], "guardrail": c["guardrail"], "verdict": c["verdict"],
                    "observed": c.get("observed").cloned().unwrap_or(Value::Null),
                    "limit": c.get("limit").cloned().unwrap_or(Value::Null), "text": c["text"],
                })
            })
        })
        .collect();
    out.sort_by_key(|c| {
        (
            c["event"].as_i64(),
            c["guardrail"].as_str().map(String::from),
        )
    });
    out
}

/// Checks release `id`'s report against the store, in the reports directory and opened in
/// Chromium from the file; returns the report.
fn check_report(rig: &Rig, b: &mut Browser, id: i64, shot: &str) -> Value {
    let out = rig.dir.path().join(format!("report-{id}.json"));
    rig.sidecar
        .cli(&[
            "report",
            &id.to_string(),
            "--json",
            "--out",
            &out.to_string_lossy(),
        ])
        .unwrap();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let (transitions, checks) = stored(&rig.sidecar.db(), id);
    assert!(!transitions.is_empty() && !checks.is_empty());
    assert_eq!(report["transitions"], Value::from(transitions));
    assert_eq!(report_checks(&report), checks);

    // The file the sidecar wrote when the release ended says the same.
    let stem = format!("checkout-{id}");
    let written = wait(&format!("{stem}.json in the reports directory"), || {
        std::fs::read_to_string(rig.sidecar.reports().join(format!("{stem}.json"))).ok()
    });
    let mut written: Value = serde_json::from_str(&written).unwrap();
    let mut now = report.clone();
    written["generated_at_ms"] = Value::Null;
    now["generated_at_ms"] = Value::Null;
    assert_eq!(
        written, now,
        "the report written at the end and the one made later differ"
    );

    // Opened from the file, no server: it draws its charts.
    let html: PathBuf = rig.sidecar.reports().join(format!("{stem}.html"));
    b.goto(&format!("file://{}", html.display())).unwrap();
    b.wait("h1", "checkout").unwrap();
    for chart in ["weight", "rps", "errors", "p99"] {
        let drawn = b
            .eval(&format!(
                "(() => {{ const f = document.querySelector('figure[data-chart={chart}]'); \
                 return [Number(f.dataset.points), f.querySelectorAll('svg path').length]; }})()"
            ))
            .unwrap();
        assert!(
            drawn[0].as_f64().unwrap() > 0.0 && drawn[1].as_u64().unwrap() > 0,
            "{chart}: {drawn}"
        );
    }
    let rows = b
        .eval("document.querySelectorAll('table[data-table=checks] tr.check').length")
        .unwrap();
    assert_eq!(
        rows.as_u64().unwrap() as usize,
        report_checks(&report).len()
    );
    screenshot(b, shot);
    assert_eq!(b.errors().unwrap(), Vec::<String>::new());
    report
}

#[test]
fn reports_of_a_promoted_and_a_rolled_back_release_say_what_the_store_says() {
    let rig = Rig::start("reports");
    let mut b = Browser::start().unwrap();
    // The latency limit is loose: a loaded CI machine makes a healthy canary's p99 slow too.
    let guardrails = "[{error_rate: {max: 5}}, {latency: {quantile: p99, max_ms: 5000}}]";

    // A healthy canary, promoted by analysis, then completed by an operator.
    let first = rig.create(&rig.spec("[{weight: 20, pause: 2s}, {weight: 100}]", guardrails));
    rig.wait_state("checkout", "promoted");
    rig.sidecar
        .cli(&["rollout", "complete", "checkout"])
        .unwrap();
    rig.wait_state(&first.to_string(), "completed");
    let promoted = check_report(&rig, &mut b, first, "report-promoted.png");
    // The operator's CLI calls with the admin token: the bootstrap `admin` key.
    assert_eq!(promoted["decision"]["actor"], "admin");
    let kinds: Vec<&str> = promoted["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"promoted") && kinds.contains(&"completed"),
        "{kinds:?}"
    );

    // The same service's next release, whose canary fails: rolled back by analysis.
    rig.canary_errors(30.0);
    let second = rig.create(&rig.spec("[{weight: 20, pause: 1h}, {weight: 100}]", guardrails));
    assert_ne!(first, second);
    rig.wait_state(&second.to_string(), "rolled_back");
    let rolled_back = check_report(&rig, &mut b, second, "report-rolled-back.png");
    assert_eq!(rolled_back["state"], "rolled_back");
    assert_eq!(rolled_back["decision"]["actor"], "analysis");
    let why = rolled_back["decision"]["reason"].as_str().unwrap();
    assert!(why.contains("error"), "{why}");

    // An unknown release: 404 with the name, as HTML or JSON.
    let (code, body) = admin_get(rig.sidecar.addr, "/v1/rollouts/nope/report").unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("nope"), "{body}");
}
