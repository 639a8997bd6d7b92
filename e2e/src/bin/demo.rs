//! `make demo`: a stepped rollout told as it happens. It starts two backends that say who
//! served, the `linnet` sidecar, and Envoy (two workers) from `envoy/demo.yaml` with the
//! filter; creates the rollout in `examples/checkout.yaml`; sends bounded traffic from a few
//! hundred users; and narrates each step, the weight, and the split measured from responses,
//! until the rollout is promoted. Everything stays on 127.0.0.1 and stops by itself.

use linnet_e2e::envoy::{Envoy, EnvoyConfig};
use linnet_e2e::http::Request;
use linnet_e2e::sidecar::{Sidecar, POLL_TOKEN};
use linnet_e2e::upstream::Upstream;
use linnet_e2e::{repo_root, served_by, Error};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The demo ends by itself after this, promoted or not.
const DEADLINE: Duration = Duration::from_secs(150);
const USERS: usize = 400;

/// Requests served, by variant, since the last report; and stickiness violations overall.
#[derive(Default)]
struct Counts {
    stable: AtomicU64,
    canary: AtomicU64,
    failed: AtomicU64,
    /// A user seen on the canary who later got stable while the weight only rose.
    flips: AtomicU64,
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

fn demo(dir: &std::path::Path) -> Result<(), Error> {
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
        "envoy on {}, sidecar on {}",
        envoy.listener, sidecar.addr
    ));

    let spec = repo_root().join("examples/checkout.yaml");
    print!(
        "{}",
        sidecar.cli(&["rollout", "create", &spec.to_string_lossy()])?
    );
    say("the plan: mirror 100% (dark launch) → 5% → 20% → 50% → 100%, a pause after each step");
    wait_for_snapshot(&sidecar, &envoy)?;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (counts, stop, addr) = (counts.clone(), stop.clone(), envoy.listener);
        thread::spawn(move || traffic(addr, &counts, &stop))
    };

    let started = Instant::now();
    let mut last_step = None;
    let mut outcome = String::from("deadline reached");
    let mut shares: Vec<(f64, f64)> = Vec::new();
    while started.elapsed() < DEADLINE {
        thread::sleep(Duration::from_secs(1));
        let s = sidecar.get_json("/v1/rollouts/checkout")?;
        let (state, step, weight) = (
            s["state"].as_str().unwrap_or("?").to_owned(),
            s["step"].as_u64().unwrap_or(0),
            s["weight"].as_f64().unwrap_or(0.0),
        );
        let mirror = s["mirror"]["percent"].as_f64().unwrap_or(0.0);
        if last_step != Some(step) {
            say(&format!(
                "── step {} of 5: weight {weight}%, mirror {mirror}% ({state})",
                step + 1
            ));
            last_step = Some(step);
        }
        let (st, ca) = (
            counts.stable.swap(0, Ordering::Relaxed),
            counts.canary.swap(0, Ordering::Relaxed),
        );
        let total = st + ca;
        let share = if total == 0 {
            0.0
        } else {
            ca as f64 * 100.0 / total as f64
        };
        shares.push((weight, share));
        let shadow = canary.count(|r| r.is_shadow());
        let pause = s["remaining_pause_ms"]
            .as_u64()
            .map(|ms| format!(", next step in {}s", ms.div_ceil(1000)))
            .unwrap_or_default();
        say(&format!(
            "[{:>3}s] {state:<11} weight {weight:>5.1}% | last second: {total:>5} requests, canary {share:>5.1}% | shadow copies so far {shadow}{pause}",
            started.elapsed().as_secs()
        ));
        if matches!(
            state.as_str(),
            "promoted" | "rolled_back" | "aborted" | "timed_out"
        ) {
            outcome = state;
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();

    say("── summary");
    say(&format!(
        "outcome: {outcome} after {}s",
        started.elapsed().as_secs()
    ));
    say(&format!(
        "requests: stable backend {} (+{} shadow copies at the canary), canary backend {} live, {} failed",
        stable.count(|_| true),
        canary.count(|r| r.is_shadow()),
        canary.count(|r| !r.is_shadow()),
        counts.failed.load(Ordering::Relaxed)
    ));
    say(&format!(
        "stickiness: {} user(s) went back from canary to stable while the weight rose (expected 0)",
        counts.flips.load(Ordering::Relaxed)
    ));
    let mut by_weight: Vec<(f64, f64, usize)> = Vec::new();
    for (w, share) in shares.iter().filter(|(w, _)| *w > 0.0) {
        match by_weight.iter_mut().find(|(bw, _, _)| bw == w) {
            Some(e) => {
                e.1 += share;
                e.2 += 1;
            }
            None => by_weight.push((*w, *share, 1)),
        }
    }
    for (w, sum, n) in by_weight {
        say(&format!(
            "weight {w:>5.1}%: measured canary share {:.1}% (mean of {n} one-second samples)",
            sum / n as f64
        ));
    }
    if outcome == "promoted" {
        Ok(())
    } else {
        Err(Error::new(format!("the rollout ended {outcome}")))
    }
}

/// Waits (bounded) until Envoy routes by the snapshot the sidecar serves now.
fn wait_for_snapshot(sidecar: &Sidecar, envoy: &Envoy) -> Result<(), Error> {
    let metrics = linnet_e2e::http::admin_get(sidecar.addr, "/metrics")?.1;
    let served: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("linnet_snapshot_version ")?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| Error::new("the sidecar reports no snapshot version"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while envoy
        .stat("wasmcustom.linnet_snapshot_version")?
        .unwrap_or(0)
        < served
    {
        if Instant::now() > deadline {
            return Err(Error::new(
                "Envoy did not receive the sidecar's snapshot within 10 s",
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    say(&format!("envoy routes by snapshot version {served}"));
    Ok(())
}

/// Users send requests one after another on a keep-alive connection until told to stop.
fn traffic(addr: std::net::SocketAddr, counts: &Counts, stop: &AtomicBool) {
    let mut client = linnet_e2e::http::Client::new(addr);
    let mut on_canary: HashMap<usize, bool> = HashMap::new();
    let mut flipped: HashSet<usize> = HashSet::new();
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let user = i % USERS;
        i += 1;
        let req = Request::get("/")
            .host("checkout.local")
            .header("x-user-id", format!("user-{user}"));
        match client
            .send(&req)
            .ok()
            .as_ref()
            .and_then(served_by)
            .as_deref()
        {
            Some("canary") => {
                counts.canary.fetch_add(1, Ordering::Relaxed);
                on_canary.insert(user, true);
            }
            Some("stable") => {
                counts.stable.fetch_add(1, Ordering::Relaxed);
                if on_canary.insert(user, false) == Some(true) && flipped.insert(user) {
                    counts.flips.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                client = linnet_e2e::http::Client::new(addr);
            }
        }
        // About 1,000 requests a second: plenty to see the split, gentle on two cores.
        thread::sleep(Duration::from_micros(900));
    }
}

fn say(line: &str) {
    println!("{line}");
}
