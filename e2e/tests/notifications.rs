//! Notifications from the real `linnet` binary to a receiver on loopback: every step, pause
//! and promotion of a rollout arrives in order, signed (checked here with HMAC-SHA256 computed
//! independently of the sidecar), and what happens while the receiver is down and the sidecar
//! is killed with SIGKILL still arrives after the restart, each idempotency key once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hmac::{Hmac, Mac};
use linnet_e2e::http::admin_get;
use linnet_e2e::sidecar::{free_port, Sidecar};
use linnet_e2e::TestDir;
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const SECRET: &str = "e2e-notify-secret";
/// Every wait here is bounded by this.
const PATIENCE: Duration = Duration::from_secs(30);

/// One POST the receiver answered 200.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// A webhook receiver on a fixed loopback port that can go down (its socket closed, so
/// connections are refused) and come back on the same port.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut r = Receiver {
            addr,
            got: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop = Arc::new(AtomicBool::new(false));
        let (got, stop) = (Arc::clone(&self.got), Arc::clone(&self.stop));
        self.thread = Some(thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        if let Some(r) = read_post(s) {
                            got.lock().unwrap().push(r);
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Closes the socket: the sidecar's attempts are refused from now on.
    fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds of what was received; bounded by [`PATIENCE`].
    fn wait(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited {PATIENCE:?} for {what}; got topics {:?}",
                topics(&got)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// Reads one HTTP/1.1 request and answers 200 (closing the connection).
fn read_post(mut s: TcpStream) -> Option<Received> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .ok()?;
    Some(Received { headers, body })
}

fn topics(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| {
            let j = r.json();
            let who = j["receiver"].as_str().unwrap_or("slack").to_owned();
            format!("{who}:{}", j["topic"].as_str().unwrap_or("?"))
        })
        .collect()
}

/// The signing receiver's notifications (the JSON ones), in arrival order.
fn signed(got: &[Received]) -> Vec<&Received> {
    got.iter()
        .filter(|r| r.json()["receiver"] == "checkout/hook")
        .collect()
}

/// `sha256=<hex>` of HMAC-SHA256, computed here, not by the sidecar's code.
fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn spec(port: u16) -> String {
    format!(
        "name: checkout
match: {{authority: checkout.local}}
stickiness: [{{header: x-user-id}}]
steps: [{{weight: 10, pause: 1s}}, {{weight: 30, pause: until promoted}}, {{weight: 100}}]
notify:
  - name: hook
    url: http://127.0.0.1:{port}/hooks/linnet
    secret: {SECRET}
    backoff: 100ms
"
    )
}

#[test]
fn every_notification_arrives_in_order_signed_and_survives_a_kill_9_while_the_receiver_is_down() {
    let dir = TestDir::new("notifications", "kill9").unwrap();
    let port = free_port().unwrap();
    let mut receiver = Receiver::start(port);
    let mut sidecar = Sidecar::start(dir.path()).unwrap();

    // A global receiver in Slack's format hears only rollbacks and promotions.
    let slack = format!("http://127.0.0.1:{port}/slack?token=hidden");
    let added = sidecar
        .cli(&[
            "receiver",
            "add",
            "--name",
            "chat",
            "--url",
            &slack,
            "--format",
            "slack",
            "--on",
            "promoted,rolled_back",
        ])
        .unwrap();
    assert!(
        added.contains("chat") && !added.contains("hidden"),
        "{added}"
    );

    sidecar.create(&spec(port)).unwrap();
    // started, then the timer enters step 1 and stops at its manual gate.
    receiver.wait("started and step", |got| signed(got).len() >= 2);
    sidecar.cli(&["rollout", "pause", "checkout"]).unwrap();
    sidecar.cli(&["rollout", "resume", "checkout"]).unwrap();
    sidecar.cli(&["rollout", "promote", "checkout"]).unwrap();
    let got = receiver.wait(
        "paused, resumed, step, promoted and the Slack text",
        |got| signed(got).len() >= 6 && got.len() >= 7,
    );
    let hook = signed(&got);
    let seen: Vec<String> = hook
        .iter()
        .map(|r| r.json()["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        seen,
        ["started", "step", "paused", "resumed", "step", "promoted"],
        "in the order they happened"
    );
    for r in &hook {
        assert_eq!(r.header("x-linnet-signature"), expected_signature(&r.body));
        let j = r.json();
        assert_eq!(r.header("idempotency-key"), j["idempotency_key"]);
        assert_eq!(j["rollout"], "checkout");
    }
    let ids: Vec<i64> = hook
        .iter()
        .map(|r| r.json()["event_id"].as_i64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "event ids rise: {ids:?}"
    );
    let slack_texts: Vec<String> = got
        .iter()
        .filter(|r| r.json().get("receiver").is_none())
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(slack_texts.len(), 1, "{slack_texts:?}");
    assert!(
        slack_texts[0].contains("rollout checkout was promoted"),
        "{slack_texts:?}"
    );
    assert!(
        got.iter().all(
            |r| r.header("x-linnet-signature").is_empty() || r.json().get("receiver").is_some()
        ),
        "the unsigned receiver's bodies carry no signature"
    );

    // The receiver goes down; the rollout is completed and a second release starts and is
    // aborted: all of it is stored, none of it delivered, when the sidecar is killed.
    receiver.down();
    sidecar.cli(&["rollout", "complete", "checkout"]).unwrap();
    sidecar.create(&spec(port)).unwrap();
    sidecar.cli(&["rollout", "abort", "checkout"]).unwrap();
    let waiting = |s: &Sidecar| {
        s.get_json("/v1/notifications?state=retrying&limit=1000")
            .unwrap()["deliveries"]
            .as_array()
            .unwrap()
            .len()
            + s.get_json("/v1/notifications?state=pending&limit=1000")
                .unwrap()["deliveries"]
                .as_array()
                .unwrap()
                .len()
    };
    let deadline = Instant::now() + PATIENCE;
    while waiting(&sidecar) < 3 {
        assert!(
            Instant::now() < deadline,
            "the outbox never held the new events"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let failing = sidecar
        .cli(&["notifications", "--state", "retrying"])
        .unwrap();
    assert!(failing.contains("checkout/hook"), "{failing}");
    assert!(
        !failing.contains("hidden"),
        "a URL's query is never shown: {failing}"
    );
    let (_, metrics) = admin_get(sidecar.addr, "/metrics").unwrap();
    assert!(
        metrics.contains("linnet_notification_attempts_total{result=\"retrying\"}"),
        "refused attempts are counted: {metrics}"
    );
    sidecar.kill9();
    sidecar.restart().unwrap();
    receiver.up();

    // completed; started, aborted for the second release (its first step's timer may have
    // entered no step before the abort): and the Slack receiver hears none of these.
    let got = receiver.wait("every notification after the restart", |got| {
        let hook = signed(got);
        hook.iter().any(|r| r.json()["topic"] == "aborted")
    });
    let hook = signed(&got);
    let after: Vec<String> = hook[6..]
        .iter()
        .map(|r| r.json()["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        after.first().map(String::as_str),
        Some("completed"),
        "{after:?}"
    );
    assert_eq!(
        after.get(1).map(String::as_str),
        Some("started"),
        "{after:?}"
    );
    assert_eq!(
        after.last().map(String::as_str),
        Some("aborted"),
        "{after:?}"
    );
    let mut keys: Vec<&str> = hook.iter().map(|r| r.header("idempotency-key")).collect();
    let n = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "no idempotency key arrived twice");
    for r in &hook {
        assert_eq!(r.header("x-linnet-signature"), expected_signature(&r.body));
    }
    // The store agrees: nothing waits, nothing failed.
    let waiting_now = waiting(&sidecar);
    assert_eq!(waiting_now, 0);
    let failed = sidecar.get_json("/v1/notifications?state=failed").unwrap();
    assert_eq!(
        failed["deliveries"].as_array().unwrap().len(),
        0,
        "{failed}"
    );
    println!(
        "{} notifications to the signing receiver, {} to Slack; after the kill: {after:?}",
        hook.len(),
        got.len() - hook.len()
    );
}
