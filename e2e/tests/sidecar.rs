//! The sidecar driving a real Envoy (two workers) through the filter's long-poll: weight
//! changes and the kill switch take effect, and a `kill -9` of the sidecar changes nothing
//! about routing while a restarted sidecar resumes where it was, and a sidecar that replaces
//! it on an empty database (its versions lower than the old ones) is followed all the same.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::envoy::Envoy;
use linnet_e2e::http::{Client, Request};
use linnet_e2e::sidecar::Sidecar;
use linnet_e2e::upstream::Upstream;
use linnet_e2e::{served_by, TestDir};
use serde_json::Value;
use std::time::{Duration, Instant};

const SALT: &[u8] = b"checkout";
/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

struct Setup {
    sidecar: Sidecar,
    envoy: Envoy,
    client: Client,
    _stable: Upstream,
    _canary: Upstream,
    _dir: TestDir,
}

fn setup(name: &str) -> Setup {
    let dir = TestDir::new("sidecar", name).unwrap();
    let sidecar = Sidecar::start(dir.path()).unwrap();
    let stable = Upstream::start("stable").unwrap();
    let canary = Upstream::start("canary").unwrap();
    let config = sidecar.envoy_config(stable.port(), canary.port()).unwrap();
    let envoy = Envoy::start_workers(&config, 2).unwrap();
    let client = envoy.client();
    Setup {
        sidecar,
        envoy,
        client,
        _stable: stable,
        _canary: canary,
        _dir: dir,
    }
}

const GATED: &str = "name: checkout
match: {authority: checkout.local}
stickiness: [{header: x-user-id}]
steps: [{weight: 20, pause: until promoted}, {weight: 100}]
";

fn variant(client: &mut Client, user: &str) -> String {
    let req = Request::get("/")
        .host("checkout.local")
        .header("x-user-id", user);
    let resp = client.send(&req).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    served_by(&resp).unwrap()
}

/// Users whose bucket lies in `lo..hi` basis points: they move when the weight crosses.
fn users_between(lo: u16, hi: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("user-{i}"))
        .filter(|u| (lo..hi).contains(&linnet_core::bucket(SALT, u.as_bytes())))
        .take(n)
        .collect()
}

/// Sends requests from several users until each gets `want`, or fails after PATIENCE.
/// Returns how long it took. Several users, because one keep-alive connection lands on one
/// worker: the others are reached by the Envoy's other connections over time.
fn until_all(s: &mut Setup, users: &[String], want: &str) -> Duration {
    let start = Instant::now();
    loop {
        // A fresh connection each round so both workers get traffic.
        s.client = s.envoy.client();
        if users.iter().all(|u| variant(&mut s.client, u) == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "users not on {want} after {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `until_all`, then as many fresh connections in a row routing every user to `want`: with
/// two workers, a worker left on another snapshot shows within a few.
fn until_steady(s: &mut Setup, users: &[String], want: &str, in_a_row: usize) {
    until_all(s, users, want);
    let start = Instant::now();
    let mut seen = 0;
    while seen < in_a_row {
        assert!(
            start.elapsed() < PATIENCE,
            "users not steadily on {want} after {PATIENCE:?}"
        );
        s.client = s.envoy.client();
        let landed = users.iter().all(|u| variant(&mut s.client, u) == want);
        seen = if landed { seen + 1 } else { 0 };
    }
}

/// A gauge's value in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The snapshot version the sidecar serves, from its metrics.
fn served_version(sidecar: &Sidecar) -> u64 {
    let metrics = linnet_e2e::http::admin_get(sidecar.addr, "/metrics")
        .unwrap()
        .1;
    gauge(&metrics, "linnet_snapshot_version").unwrap_or_else(|| panic!("{metrics}"))
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn weight_changes_and_kill_switch_reach_every_worker() {
    let mut s = setup("weight");
    s.sidecar.create(GATED).unwrap();
    let movers = users_between(2000, 8000, 4);
    let canary_users = users_between(0, 2000, 4);
    until_all(&mut s, &canary_users, "canary");
    until_all(&mut s, &movers, "stable");

    // Weight changes, one after the other; each must reach Envoy. The time from the API call
    // returning to Envoy routing by it is printed, not asserted.
    let mut took = Vec::new();
    for round in 0..10 {
        let (w, want) = if round % 2 == 0 {
            ("80", "canary")
        } else {
            ("20", "stable")
        };
        s.sidecar
            .cli(&["rollout", "weight", "checkout", w])
            .unwrap();
        took.push(until_all(&mut s, &movers, want));
    }
    took.sort();
    eprintln!(
        "propagation over {} changes: p50 {:?}, max {:?}",
        took.len(),
        quantile(&took, 0.5),
        took[took.len() - 1]
    );

    // The kill switch sends everyone to stable, and releasing it restores the split.
    s.sidecar.cli(&["kill-switch", "on"]).unwrap();
    until_all(&mut s, &canary_users, "stable");
    s.sidecar.cli(&["kill-switch", "off"]).unwrap();
    until_all(&mut s, &canary_users, "canary");
    // Per rollout too.
    s.sidecar
        .cli(&["kill-switch", "on", "--rollout", "checkout"])
        .unwrap();
    until_all(&mut s, &canary_users, "stable");

    // Envoy routes by the version the sidecar serves, and one poller speaks for both workers.
    let metrics = linnet_e2e::http::admin_get(s.sidecar.addr, "/metrics")
        .unwrap()
        .1;
    let served = served_version(&s.sidecar);
    let prom = s.envoy.admin("/stats/prometheus").unwrap();
    assert_eq!(gauge(&prom, "linnet_snapshot_version{}"), Some(served));
    assert_eq!(
        gauge(&metrics, "linnet_connected_filters"),
        Some(1),
        "{metrics}"
    );
}

#[test]
fn kill_9_of_the_sidecar_changes_nothing_and_a_restart_resumes() {
    let mut s = setup("kill9");
    let yaml = "name: checkout
match: {authority: checkout.local}
stickiness: [{header: x-user-id}]
steps: [{weight: 20, pause: 1h}, {weight: 50, pause: 1h}, {weight: 100}]
";
    s.sidecar.create(yaml).unwrap();
    s.sidecar.cli(&["rollout", "promote", "checkout"]).unwrap(); // to step 1, weight 50
    let users: Vec<String> = (0..400).map(|i| format!("u{i}")).collect();
    let in_canary = |u: &String| linnet_core::bucket(SALT, u.as_bytes()) < 5000;
    let expected: Vec<&str> = users
        .iter()
        .map(|u| if in_canary(u) { "canary" } else { "stable" })
        .collect();
    // Wait for the snapshot to land on every worker: a fresh connection lands on either one,
    // so the users between the old and the new weight must be canary on several in a row.
    let between = users_between(2000, 5000, 4);
    let start = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 8 {
        assert!(
            start.elapsed() < PATIENCE,
            "weight 50 did not reach every worker"
        );
        s.client = s.envoy.client();
        let landed = between
            .iter()
            .all(|u| variant(&mut s.client, u) == "canary");
        in_a_row = if landed { in_a_row + 1 } else { 0 };
    }
    let check_split = |s: &mut Setup| {
        s.client = s.envoy.client();
        for (u, want) in users.iter().zip(&expected) {
            assert_eq!(variant(&mut s.client, u), *want, "user {u}");
        }
    };
    let before = s.sidecar.get_json("/v1/rollouts/checkout").unwrap();
    let events_before = s.sidecar.get_json("/v1/audit?limit=1000").unwrap();

    s.sidecar.kill9();
    // While it is down: the split is exactly what it was, on fresh connections too.
    check_split(&mut s);
    std::thread::sleep(Duration::from_millis(1500));
    check_split(&mut s);
    let errors = s
        .envoy
        .stat("wasmcustom.linnet_snapshot_poll_errors_total")
        .unwrap()
        .unwrap_or(0);
    assert!(errors >= 1, "the filter noticed the sidecar was gone");

    s.sidecar.restart().unwrap();
    let after = s.sidecar.get_json("/v1/rollouts/checkout").unwrap();
    assert_eq!(after["state"], before["state"]);
    assert_eq!(after["step"], before["step"]);
    assert_eq!(after["weight"], before["weight"]);
    let (rb, ra) = (
        before["remaining_pause_ms"].as_u64().unwrap(),
        after["remaining_pause_ms"].as_u64().unwrap(),
    );
    assert!(
        ra <= rb && ra + 60_000 > rb,
        "remaining pause {rb} ms before, {ra} ms after"
    );
    check_split(&mut s);

    // Nothing recorded was lost, and ids stay contiguous across the crash.
    s.sidecar.cli(&["rollout", "promote", "checkout"]).unwrap();
    let events = s.sidecar.get_json("/v1/audit?limit=1000").unwrap();
    let ids = |v: &Value| -> Vec<u64> {
        let list = v
            .get("events")
            .or(Some(v))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        list.iter().filter_map(|e| e["id"].as_u64()).collect()
    };
    let (old, new) = (ids(&events_before), ids(&events));
    assert!(!old.is_empty() && new.len() > old.len(), "{events}");
    assert_eq!(
        &new[..old.len()],
        &old[..],
        "earlier events kept as they were"
    );
    assert!(
        new.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous ids: {new:?}"
    );
    // And the new step reaches Envoy.
    let movers = users_between(5000, 10_000, 4);
    until_all(&mut s, &movers, "canary");
}

#[test]
fn a_sidecar_replaced_on_an_empty_database_is_followed_by_every_worker() {
    let mut s = setup("empty-db");
    s.sidecar.create(GATED).unwrap();
    // Several changes: the version climbs well above what a new database starts at.
    for w in ["30", "40", "50", "60", "70", "80"] {
        s.sidecar
            .cli(&["rollout", "weight", "checkout", w])
            .unwrap();
    }
    let old = served_version(&s.sidecar);
    assert!(old >= 7, "version {old}");
    let movers = users_between(2000, 8000, 4);
    let canary_users = users_between(0, 2000, 4);
    until_steady(&mut s, &movers, "canary", 8);

    // The sidecar dies and another takes its port, on an empty database.
    s.sidecar.kill9();
    let fresh = s._dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    s.sidecar = Sidecar::start_on(&fresh, s.sidecar.addr).unwrap();
    s.sidecar.create(GATED).unwrap();
    let new = served_version(&s.sidecar);
    assert!(new < old, "version {new} on the new database, {old} before");

    // Weight 20 now: the movers go back to stable on every worker, the first 20% stay.
    until_steady(&mut s, &movers, "stable", 8);
    until_steady(&mut s, &canary_users, "canary", 8);
    // And the new sidecar's next change reaches Envoy too.
    s.sidecar
        .cli(&["rollout", "weight", "checkout", "80"])
        .unwrap();
    until_steady(&mut s, &movers, "canary", 8);
    let prom = s.envoy.admin("/stats/prometheus").unwrap();
    assert_eq!(
        gauge(&prom, "linnet_snapshot_version{}"),
        Some(served_version(&s.sidecar))
    );
}
