//! Background load through Envoy: a few keep-alive connections, each on its own thread,
//! sending GETs from many distinct users (`x-user-id: u<i>`) at a steady, modest rate, so
//! analysis has real traffic on both variants to judge while a test watches the sidecar.
//!
//! The load ends when it is stopped (or dropped) and, whatever the test does, after its
//! maximum duration (and its maximum count of requests, if it has one).

use crate::http::{Client, Request};
use crate::{served_by, Error};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How far a connection may fall behind its schedule before it stops catching up: a slow
/// stretch (a delayed canary) lowers the rate instead of ending in a burst.
const MAX_LAG: Duration = Duration::from_secs(1);
/// The pause after a failed request, so a stopped Envoy does not spin a thread.
const AFTER_FAILURE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The Host of every request.
    pub host: String,
    /// Requests per second, across all connections.
    pub rate: u32,
    /// Connections, one thread each: several, so a slow answer holds up only its own.
    pub connections: u32,
    /// Distinct users, cycled through in order: `u0`, `u1`, ...
    pub users: u64,
    /// The load stops by itself after this long.
    pub max_duration: Duration,
    /// ... and after this many requests, across all connections, if set.
    pub max_requests: Option<u64>,
}

/// What the load has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests answered, whatever the status.
    pub answered: u64,
    /// Answers by upstream (`x-served-by`).
    pub canary: u64,
    pub stable: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    /// Requests without an answer (connection refused or reset, timeout).
    pub failed: u64,
}

/// A running load; stopped and joined on drop.
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Tally {
    answered: AtomicU64,
    canary: AtomicU64,
    stable: AtomicU64,
    server_errors: AtomicU64,
    failed: AtomicU64,
    /// Requests started so far; the next one is from user `started % users`.
    started: AtomicU64,
}

// === impl LoadConfig ===

impl LoadConfig {
    /// 300 requests a second from 10,000 users over 8 connections, for at most `max_duration`.
    pub fn new(host: &str, max_duration: Duration) -> Self {
        Self {
            host: host.to_owned(),
            rate: 300,
            connections: 8,
            users: 10_000,
            max_duration,
            max_requests: None,
        }
    }
}

// === impl Load ===

impl Load {
    /// Starts sending to `addr` (an Envoy listener).
    pub fn start(addr: SocketAddr, config: &LoadConfig) -> Result<Self, Error> {
        if config.rate == 0 || config.connections == 0 || config.users == 0 {
            return Err(Error::new(format!(
                "load needs a rate, connections and users above 0: {config:?}"
            )));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let period = Duration::from_secs(1) * config.connections / config.rate;
        let until = Instant::now() + config.max_duration;
        let mut threads = Vec::with_capacity(config.connections as usize);
        for k in 0..config.connections {
            let (stop, tally, config) = (stop.clone(), tally.clone(), config.clone());
            // Staggered, so the connections do not send in lockstep.
            let first = Instant::now() + period * k / config.connections;
            let t = thread::Builder::new()
                .name(format!("load-{k}"))
                .spawn(move || run(addr, &config, period, first, until, &stop, &tally))
                .map_err(Error::io("spawn a load thread"))?;
            threads.push(t);
        }
        Ok(Self {
            stop,
            tally,
            threads,
        })
    }

    pub fn counts(&self) -> Counts {
        let t = &self.tally;
        Counts {
            answered: t.answered.load(Ordering::Relaxed),
            canary: t.canary.load(Ordering::Relaxed),
            stable: t.stable.load(Ordering::Relaxed),
            server_errors: t.server_errors.load(Ordering::Relaxed),
            failed: t.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops, waits for every connection's last request, and returns the final counts.
    pub fn stop(mut self) -> Counts {
        self.halt();
        self.counts()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(
    addr: SocketAddr,
    config: &LoadConfig,
    period: Duration,
    first: Instant,
    until: Instant,
    stop: &AtomicBool,
    tally: &Tally,
) {
    let mut client = Client::new(addr);
    let mut next = first;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > MAX_LAG {
            next = now;
        }
        next += period;
        let n = tally.started.fetch_add(1, Ordering::Relaxed);
        if config.max_requests.is_some_and(|max| n >= max) {
            break;
        }
        let i = n % config.users;
        let req = Request::get("/")
            .host(&config.host)
            .header("x-user-id", format!("u{i}"));
        match client.send(&req) {
            Ok(resp) => {
                tally.answered.fetch_add(1, Ordering::Relaxed);
                if resp.status >= 500 {
                    tally.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                match served_by(&resp).as_deref() {
                    Some("canary") => tally.canary.fetch_add(1, Ordering::Relaxed),
                    Some("stable") => tally.stable.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
            Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                thread::sleep(AFTER_FAILURE);
            }
        }
    }
}
