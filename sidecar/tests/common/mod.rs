//! Shared test helpers: a controller and API on a temp-dir SQLite file, called without a socket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use linnet_sidecar::api::{ApiConfig, App};
use linnet_sidecar::auth::Auth;
use linnet_sidecar::clock::{Clock, Millis, SharedClock, TokioClock};
use linnet_sidecar::controller::Controller;
use linnet_sidecar::metrics::Metrics;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const ADMIN: &str = "admin-token";
pub const POLL: &str = "poll-token";
/// 2026-01-01, so timestamps look like timestamps.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

pub struct Harness {
    pub app: App,
    pub ctl: Controller,
    pub clock: SharedClock,
    pub db: PathBuf,
    shutdown: watch::Sender<bool>,
    /// The timers; absent when a test moves time and ticks by hand.
    driver: Option<JoinHandle<()>>,
}

/// A clock that moves only when told, for tests that must not race the runtime's own
/// (paused, auto-advancing) time.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(at_ms: Millis) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(at_ms)))
    }

    pub fn advance(&self, ms: Millis) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap().to_owned()
    }
}

pub fn api_config() -> ApiConfig {
    ApiConfig {
        auth: Auth {
            admin: Some(ADMIN.into()),
            poll: Some(POLL.into()),
            open_reads: true,
            ..Auth::default()
        },
        max_body_bytes: 1 << 20,
        body_timeout: linnet_sidecar::api::DEFAULT_BODY_TIMEOUT,
        heartbeat: Duration::from_secs(15),
        max_sse: 64,
        max_polls: 256,
        ..ApiConfig::default()
    }
}

impl Harness {
    /// A sidecar on `db`, its clock reading `epoch_ms` now.
    pub fn open(db: &Path, epoch_ms: i64) -> Harness {
        Self::open_with(db, epoch_ms, api_config())
    }

    pub fn open_with(db: &Path, epoch_ms: i64, config: ApiConfig) -> Harness {
        let clock = Arc::new(TokioClock::starting_at(epoch_ms));
        Self::build(db, clock, config, true)
    }

    /// A sidecar on `db` reading `clock`, with no timer task: the test ticks.
    pub fn open_manual(db: &Path, clock: SharedClock) -> Harness {
        Self::build(db, clock, api_config(), false)
    }

    fn build(db: &Path, clock: SharedClock, config: ApiConfig, timers: bool) -> Harness {
        let ctl = Controller::open(db, clock.clone(), Arc::new(Metrics::new())).unwrap();
        let (shutdown, rx) = watch::channel(false);
        let driver = timers.then(|| ctl.spawn_driver(rx.clone()));
        let app = App::new(ctl.clone(), config, rx);
        Harness {
            app,
            ctl,
            clock,
            db: db.to_owned(),
            shutdown,
            driver,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Stops the timers and ends streams; the store closes when the last handle drops.
    pub async fn close(self) -> i64 {
        let now = self.now_ms();
        self.shutdown.send_replace(true);
        if let Some(d) = self.driver {
            d.await.unwrap();
        }
        now
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self
            .app
            .handle(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, "", &[]).await
    }

    /// An admin POST with a JSON body.
    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request(
            Method::POST,
            path,
            body,
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await
    }

    pub async fn create_yaml(&self, yaml: &str) -> Reply {
        self.request(
            Method::POST,
            "/v1/rollouts",
            yaml,
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("content-type", "application/yaml"),
            ],
        )
        .await
    }

    pub async fn status(&self, name: &str) -> Value {
        let r = self.get(&format!("/v1/rollouts/{name}")).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.json()
    }

    /// (version, rollouts, events): unchanged by any refused request.
    pub async fn fingerprint(&self) -> (u64, usize, u64) {
        self.ctl.fingerprint().await.unwrap()
    }
}

/// A rollout: 5% for 30s, mirror for 1m, 50% until promoted, then 100%.
pub const CHECKOUT: &str = r#"
name: checkout
match: {authority: shop.example}
stickiness: [{header: x-user-id}]
mirror_cluster: checkout-shadow
steps:
  - {weight: 5, pause: 30s}
  - {mirror: 100, pause: 1m}
  - {weight: 50, pause: until promoted}
  - {weight: 100}
"#;

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// An HTTP receiver on loopback that answers every request with the status it is set to (or
/// every nth with 500, see [`Receiver::fail_every`]), and keeps each request's path, headers
/// and body.
pub struct Receiver {
    pub url: String,
    status: Arc<std::sync::atomic::AtomicU16>,
    fail_every: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

impl Receiver {
    pub async fn start(status: u16) -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let status = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fail_every = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, sn, fe) = (
            Arc::clone(&status),
            Arc::clone(&seen),
            Arc::clone(&fail_every),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (st, sn, fe) = (Arc::clone(&st), Arc::clone(&sn), Arc::clone(&fe));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body_at, len) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                            let r = Received {
                                head: head.clone(),
                                body: Vec::new(),
                            };
                            let len = r
                                .header("content-length")
                                .and_then(|v| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            break (head, i + 4, len);
                        }
                    };
                    while buf.len() < body_at + len {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = buf[body_at..body_at + len].to_vec();
                    let nth = {
                        let mut seen = sn.lock().unwrap();
                        seen.push(Received { head, body });
                        seen.len()
                    };
                    let every = fe.load(Ordering::SeqCst);
                    let code = if every > 0 && nth % every == 0 {
                        500
                    } else {
                        st.load(Ordering::SeqCst)
                    };
                    let text = format!("receiver says {code}");
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                        text.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Receiver {
            url,
            status,
            fail_every,
            seen,
            task,
        }
    }

    /// Answers the nth, 2nth… request (counting from the first ever) with 500; 0: none.
    pub fn fail_every(&self, n: usize) {
        self.fail_every.store(n, Ordering::SeqCst);
    }

    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the gates' runner on `h` until the returned sender is dropped or set.
pub fn gate_runner(h: &Harness) -> watch::Sender<bool> {
    let (tx, rx) = watch::channel(false);
    linnet_sidecar::gate::spawn_runner(h.ctl.clone(), rx);
    tx
}

/// Waits (bounded) until `f` holds for the rollout's status, and returns that status.
pub async fn wait_for(h: &Harness, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..400 {
        let s = h.status(name).await;
        if f(&s) {
            return s;
        }
        sleep_ms(25).await;
    }
    panic!("{name}: never {what}: {}", h.status(name).await);
}
