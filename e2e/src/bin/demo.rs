//! `make demo`: three releases of one service, `checkout` on `checkout.local`, each its own
//! rollout judged by analysis from Envoy's own stats, told as it happens. It starts two backends that say who served (the canary
//! one can be made to fail or slow down), the `linnet` sidecar, and Envoy (two workers) from
//! `envoy/demo.yaml` with the filter, sends bounded traffic from a few hundred users, and:
//!
//! 1. v2, healthy: promoted step by step (dark launch, 5%, 20%, 50%, 100%) with no human, then
//!    completed (stable now runs v2), which hands the host back for the next release;
//! 2. v3, 20% of answers are 500s: rolled back by itself during the dark launch;
//! 3. v4, 200 ms slower, shipped without a dark launch: rolled back at 5%.
//!
//! The history of `checkout.local` lists all three at the end.
//!
//! The rollouts come from `examples/checkout.yaml`. Everything stays on 127.0.0.1 and stops
//! by itself.

use linnet_e2e::envoy::{Envoy, EnvoyConfig};
use linnet_e2e::http::Request;
use linnet_e2e::sidecar::{Sidecar, POLL_TOKEN};
use linnet_e2e::upstream::{Faults, Upstream};
use linnet_e2e::{repo_root, served_by, Error};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The one host every release of the service is on.
const HOST: &str = "checkout.local";
/// Each act ends by itself after this, whatever the rollout did.
const ACT_DEADLINE: Duration = Duration::from_secs(120);
const USERS: usize = 400;
const CLIENTS: usize = 6;

struct Act {
    title: &'static str,
    name: &'static str,
    faults: Faults,
    dark_launch: bool,
    expect: &'static str,
}

const ACTS: [Act; 3] = [
    Act {
        title: "v2, a healthy release",
        name: "checkout-v2",
        faults: Faults {
            error_percent: 0.0,
            delay_ms: 0,
        },
        dark_launch: true,
        expect: "promoted",
    },
    Act {
        title: "v3, which answers 500 to one request in five",
        name: "checkout-v3",
        faults: Faults {
            error_percent: 20.0,
            delay_ms: 0,
        },
        dark_launch: true,
        expect: "rolled_back",
    },
    Act {
        title: "v4, 200 ms slower, shipped without a dark launch",
        name: "checkout-v4",
        faults: Faults {
            error_percent: 0.0,
            delay_ms: 200,
        },
        dark_launch: false,
        expect: "rolled_back",
    },
];

/// What users saw since the last report.
#[derive(Default)]
struct Counts {
    stable: AtomicU64,
    canary: AtomicU64,
    errors: AtomicU64,
    failed: AtomicU64,
    /// Answers that took longer than 100 ms.
    slow: AtomicU64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("linnet-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io("create the demo directory"))?;
    let result = demo(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(dir: &Path) -> Result<(), Error> {
    say("starting two backends (stable, canary), the linnet sidecar, and Envoy with the filter");
    let stable = Upstream::start("stable")?;
    let canary = Upstream::start("canary")?;
    let sidecar = Sidecar::start(dir)?;
    let mut config = EnvoyConfig::demo(stable.port(), canary.port())?;
    config.cluster_port("linnet_sidecar", sidecar.addr.port())?;
    // The shipped plugin configuration, pointed at this sidecar's poll token.
    let text = config
        .plugin_config_text()
        .ok_or_else(|| Error::new("envoy/demo.yaml has no plugin configuration"))?;
    let mut plugin: Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("demo plugin configuration: {e}")))?;
    plugin["sidecar"]["token"] = POLL_TOKEN.into();
    config.plugin_config(&plugin.to_string());
    let envoy = Envoy::start_workers(&config, 2)?;
    say(&format!(
        "envoy on {} (admin {}), sidecar on {}",
        envoy.listener, envoy.admin, sidecar.addr
    ));
    let example = load_example()?;
    say("every rollout is judged every 3 s from Envoy's stats: error rate ≤ 10%, p99 ≤ 100 ms,");
    say("errors against stable (sequential test), error-budget burn, and canary crashes (zero tolerance)");

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (counts, stop, addr) = (counts.clone(), stop.clone(), envoy.listener);
            thread::spawn(move || traffic(c, addr, &counts, &stop))
        })
        .collect();

    let mut results = Vec::new();
    for (i, act) in ACTS.iter().enumerate() {
        canary
            .set_faults(act.faults)
            .map_err(|e| Error::new(format!("canary faults: {e}")))?;
        say("");
        say(&format!("══ act {}: {} ══", i + 1, act.title));
        let result = play(act, &example, dir, &sidecar, &envoy, &counts);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        if result.0 == "promoted" {
            // Stable now runs this version (in production: the stable deployment is updated
            // to it); completing hands checkout.local back for the next release.
            say(&format!(
                "── linnet rollout complete {}  (stable now runs {})",
                act.name, act.name
            ));
            sidecar.cli(&["rollout", "complete", act.name])?;
        }
        results.push(result);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }

    say("");
    say("══ summary ══");
    let mut all_as_expected = true;
    for (act, (outcome, secs, reason)) in ACTS.iter().zip(&results) {
        let ok = outcome == act.expect;
        all_as_expected &= ok;
        say(&format!(
            "{:<12} {:<12} after {secs:>3}s{}  {}",
            act.name,
            outcome,
            if ok { "" } else { " (NOT as expected)" },
            reason
        ));
    }
    say(&format!(
        "requests: stable backend {}, canary backend {} live + {} shadow copies; {} failed to connect",
        stable.count(|_| true),
        canary.count(|r| !r.is_shadow()),
        canary.count(|r| r.is_shadow()),
        counts.failed.load(Ordering::Relaxed)
    ));
    say(&format!("── linnet rollout history --match {HOST}"));
    print!("{}", sidecar.cli(&["rollout", "history", "--match", HOST])?);
    say("the whole story of a rollout, in plain words: linnet explain <rollout or id>");
    if all_as_expected {
        Ok(())
    } else {
        Err(Error::new("an act did not end as expected"))
    }
}

/// Runs one act: creates its rollout, narrates each second, and returns the outcome, the
/// seconds it took and the reason of its last transition.
fn play(
    act: &Act,
    example: &Value,
    dir: &Path,
    sidecar: &Sidecar,
    envoy: &Envoy,
    counts: &Counts,
) -> Result<(String, u64, String), Error> {
    let spec = spec_for(act, example, envoy);
    let path = dir.join(format!("{}.json", act.name));
    std::fs::write(&path, spec.to_string()).map_err(Error::io("write the rollout spec"))?;
    sidecar.cli(&["rollout", "create", &path.to_string_lossy()])?;
    let plan: Vec<String> = spec["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| match (s["weight"].as_f64(), s["mirror"].as_f64()) {
            (Some(w), _) => format!("{w}%"),
            (None, Some(m)) => format!("mirror {m}%"),
            _ => "?".into(),
        })
        .collect();
    say(&format!(
        "rollout {} created: {}",
        act.name,
        plan.join(" → ")
    ));
    let started = Instant::now();
    let mut after = 0i64;
    let mut outcome = String::from("deadline reached");
    let mut last_reason = String::new();
    while started.elapsed() < ACT_DEADLINE {
        thread::sleep(Duration::from_secs(1));
        let s = sidecar.get_json(&format!("/v1/rollouts/{}", act.name))?;
        let state = s["state"].as_str().unwrap_or("?").to_owned();
        let weight = s["weight"].as_f64().unwrap_or(0.0);
        let mirror = s["mirror"]["percent"].as_f64().unwrap_or(0.0);
        let (st, ca, err, slow) = (
            counts.stable.swap(0, Ordering::Relaxed),
            counts.canary.swap(0, Ordering::Relaxed),
            counts.errors.swap(0, Ordering::Relaxed),
            counts.slow.swap(0, Ordering::Relaxed),
        );
        let total = (st + ca).max(1);
        say(&format!(
            "[{:>3}s] {state:<11} weight {weight:>3}%{} | users: {:>4} req/s, {:>5.1}% on canary, {err} errors, {slow} slower than 100 ms",
            started.elapsed().as_secs(),
            if mirror > 0.0 { format!(" + mirror {mirror}%") } else { String::new() },
            st + ca,
            ca as f64 * 100.0 / total as f64,
        ));
        let events = sidecar.get_json(&format!(
            "/v1/audit?rollout={}&after={after}&limit=100",
            act.name
        ))?;
        for e in events["events"].as_array().into_iter().flatten() {
            after = e["id"].as_i64().unwrap_or(after);
            let d = &e["data"];
            let reason = d["reason"].as_str().unwrap_or("").to_owned();
            match e["kind"].as_str().unwrap_or("") {
                "analysis" => {
                    let decision = d["decision"].as_str().unwrap_or("?");
                    say(&format!(
                        "        check ({}): {decision}: {reason}",
                        d["subject"].as_str().unwrap_or("?")
                    ));
                }
                "created" => {}
                kind => {
                    say(&format!("        ▶ {kind}: {reason}"));
                    last_reason = reason;
                }
            }
        }
        if matches!(
            state.as_str(),
            "promoted" | "rolled_back" | "aborted" | "timed_out"
        ) {
            outcome = state;
            break;
        }
    }
    let secs = started.elapsed().as_secs();
    say(&format!("── linnet explain {}", act.name));
    print!("{}", sidecar.cli(&["explain", act.name, "--limit", "60"])?);
    Ok((outcome, secs, last_reason))
}

/// The example rollout, as JSON.
fn load_example() -> Result<Value, Error> {
    let path = repo_root().join("examples/checkout.yaml");
    let text = std::fs::read_to_string(&path).map_err(Error::io("read examples/checkout.yaml"))?;
    serde_saphyr::from_str(&text).map_err(|e| Error::new(format!("examples/checkout.yaml: {e}")))
}

/// The example, renamed for the act, reading this Envoy's admin, with or without its dark
/// launch.
fn spec_for(act: &Act, example: &Value, envoy: &Envoy) -> Value {
    let mut spec = example.clone();
    spec["name"] = act.name.into();
    spec["match"]["authority"] = HOST.into();
    spec["analysis"]["source"]["envoy"]["admin"] = serde_json::json!([envoy.admin.to_string()]);
    if !act.dark_launch {
        if let Some(steps) = spec["steps"].as_array_mut() {
            steps.retain(|s| s["weight"].is_number());
        }
    }
    spec
}

/// Users send requests one after another on keep-alive connections until told to stop; each
/// client thread has its own share of the users.
fn traffic(client_no: usize, addr: std::net::SocketAddr, counts: &Counts, stop: &AtomicBool) {
    let mut client = linnet_e2e::http::Client::new(addr);
    let deadline = Instant::now() + ACT_DEADLINE * 3;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let user = (i * CLIENTS + client_no) % USERS;
        i += 1;
        let req = Request::get("/")
            .host(HOST)
            .header("x-user-id", format!("user-{user}"));
        let sent = Instant::now();
        match client.send(&req) {
            Ok(resp) => {
                if sent.elapsed() > Duration::from_millis(100) {
                    counts.slow.fetch_add(1, Ordering::Relaxed);
                }
                if resp.status >= 500 {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
                match served_by(&resp).as_deref() {
                    Some("canary") => counts.canary.fetch_add(1, Ordering::Relaxed),
                    _ => counts.stable.fetch_add(1, Ordering::Relaxed),
                };
            }
            Err(_) => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                client = linnet_e2e::http::Client::new(addr);
            }
        }
        // About 100 requests a second per client: plenty to judge, gentle on two cores.
        thread::sleep(Duration::from_millis(10));
    }
}

fn say(line: &str) {
    println!("{line}");
}
