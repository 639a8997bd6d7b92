//! An in-process upstream that answers who served and records what it received.
//!
//! It answers every request `200` with `x-served-by: <name>` (and the name as the body), and
//! keeps each request's Host, path and headers, so a test can see exactly what Envoy sent:
//! which variant got the request, whether Linnet's headers leaked, and the shadow copies
//! (their Host ends in `-shadow`).
//!
//! It can also be told to misbehave while it runs ([`Upstream::set_faults`]): answer an exact
//! share of requests `500` and wait before every answer, so that analysis sees a bad canary.

use crate::http::read_message;
use crate::Error;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The status it was answered with: 500 when a fault was injected, else 200.
    pub status: u16,
}

/// How an upstream misbehaves; the default is not at all.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// The share of requests answered `500`, from 0 to 100, to a hundredth of a percent.
    pub error_percent: f64,
    /// How long to wait before answering each request.
    pub delay_ms: u64,
}

/// Validated [`Faults`] plus a count of requests so far, one count for live requests and one
/// for shadow copies: each kind gets its exact share of errors however the two interleave.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    /// The error share in hundredths of a percent (0..=10,000), so the rule is exact.
    error_bp: u64,
    delay: Duration,
    seen: [u64; 2],
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub error: bool,
    pub delay: Duration,
}

pub struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    faults: Arc<Mutex<FaultInjector>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

/// Whether a Host header value names a mirror policy's copy: Envoy appends `-shadow` to the
/// host (before any port).
pub fn is_shadow_host(host: &[u8]) -> bool {
    let name = host.split(|&c| c == b':').next().unwrap_or(host);
    name.ends_with(b"-shadow")
}

/// What an upstream named `name` answers, whole: `200` with the name as the body, or `500`
/// for an injected fault; both with `x-served-by: <name>`. The benchmark's upstream gives the
/// same answers when it is named (`--served-by`).
pub fn answer(name: &str, error: bool) -> Vec<u8> {
    let (status, reason, body) = if error {
        (
            500,
            "Internal Server Error",
            format!("{name}: injected fault"),
        )
    } else {
        (200, "OK", name.to_owned())
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\nx-served-by: {name}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Whether request `i` (counted from 0) fails when `error_bp` hundredths of a percent must:
/// iff `floor((i+1)·p/100) > floor(i·p/100)` for `p = error_bp/100` percent. Any first `n`
/// requests then hold exactly `floor(n·p/100)` failures, spread evenly, not drawn at random.
pub fn is_error(i: u64, error_bp: u64) -> bool {
    let (i, bp) = (u128::from(i), u128::from(error_bp.min(10_000)));
    (i + 1) * bp / 10_000 > i * bp / 10_000
}

// === impl Received ===

impl Received {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// A copy sent by a mirror policy: Envoy appends `-shadow` to the Host.
    pub fn is_shadow(&self) -> bool {
        is_shadow_host(self.host.as_bytes())
    }
}

// === impl Faults ===

impl Faults {
    /// No faults: every request answered `200` at once.
    pub const NONE: Faults = Faults {
        error_percent: 0.0,
        delay_ms: 0,
    };

    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

// === impl FaultInjector ===

impl FaultInjector {
    /// Checks the faults; an error names the field that is out of range.
    pub fn new(faults: Faults) -> Result<Self, Error> {
        let p = faults.error_percent;
        if !(0.0..=100.0).contains(&p) {
            return Err(Error::new(format!(
                "error_percent must be from 0 to 100, not {p}"
            )));
        }
        Ok(Self {
            // In range, so the cast is exact after rounding.
            error_bp: (p * 100.0).round() as u64,
            delay: Duration::from_millis(faults.delay_ms),
            seen: [0, 0],
        })
    }

    /// Counts one request (a shadow copy or a live one) and says what it gets.
    pub fn next(&mut self, shadow: bool) -> Fault {
        let seen = &mut self.seen[usize::from(shadow)];
        let i = *seen;
        *seen = seen.saturating_add(1);
        Fault {
            error: is_error(i, self.error_bp),
            delay: self.delay,
        }
    }
}

// === impl Upstream ===

impl Upstream {
    /// Binds a free loopback port and serves until dropped.
    pub fn start(name: &str) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind upstream"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("upstream address"))?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(FaultInjector::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (name, received, faults, stop) = (
                name.to_owned(),
                received.clone(),
                faults.clone(),
                stop.clone(),
            );
            thread::Builder::new()
                .name(format!("upstream-{name}"))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (name, received, faults) =
                            (name.clone(), received.clone(), faults.clone());
                        // One thread per connection, so a delayed answer holds up only its
                        // own connection; they end when Envoy closes the connection.
                        let _ = thread::Builder::new()
                            .spawn(move || serve(conn, &name, &received, &faults));
                    }
                })
                .map_err(Error::io("spawn upstream"))?
        };
        Ok(Self {
            addr,
            received,
            faults,
            stop,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Misbehaves from the next request on (or stops, with [`Faults::NONE`]). The exact error
    /// share counts from here: of the next `n` live requests, `floor(n·p/100)` fail.
    pub fn set_faults(&self, faults: Faults) -> Result<(), Error> {
        *lock(&self.faults) = FaultInjector::new(faults)?;
        Ok(())
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    pub fn count(&self, pred: impl Fn(&Received) -> bool) -> usize {
        lock(&self.received).iter().filter(|r| pred(r)).count()
    }

    pub fn clear(&self) {
        lock(&self.received).clear();
    }

    /// Waits until `pred` holds for at least `n` received requests, up to `timeout`; returns
    /// the count reached. Mirrored copies arrive after the client's answer, hence the wait.
    pub fn wait_for(&self, n: usize, timeout: Duration, pred: impl Fn(&Received) -> bool) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count(&pred);
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread cannot leave the values half-written; keep using them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn serve(
    conn: TcpStream,
    name: &str,
    received: &Mutex<Vec<Received>>,
    faults: &Mutex<FaultInjector>,
) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Ok(Some(req)) = read_message(&mut reader, true) {
        let mut headers = req.headers;
        let path = take(&mut headers, ":path");
        take(&mut headers, ":method");
        let host = headers
            .iter()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let fault = lock(faults).next(is_shadow_host(host.as_bytes()));
        lock(received).push(Received {
            host,
            path,
            headers,
            status: if fault.error { 500 } else { 200 },
        });
        if !fault.delay.is_zero() {
            thread::sleep(fault.delay);
        }
        if out.write_all(&answer(name, fault.error)).is_err() {
            return;
        }
    }
}

fn take(headers: &mut Vec<(String, Vec<u8>)>, name: &str) -> String {
    match headers.iter().position(|(n, _)| n == name) {
        Some(i) => String::from_utf8_lossy(&headers.remove(i).1).into_owned(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(bp: u64, n: u64) -> u64 {
        (0..n).filter(|&i| is_error(i, bp)).count() as u64
    }

    #[test]
    fn any_first_n_requests_hold_exactly_their_share_of_errors() {
        for bp in [0, 1, 250, 1_000, 3_333, 5_000, 9_999, 10_000] {
            for n in [0, 1, 3, 7, 10, 99, 100, 1_000, 10_007] {
                assert_eq!(errors(bp, n), n * bp / 10_000, "{bp} bp over {n}");
            }
        }
    }

    #[test]
    fn errors_are_spread_evenly_not_bunched() {
        // 10%: the 10th, 20th, ... requests fail.
        let failed: Vec<u64> = (0..40).filter(|&i| is_error(i, 1_000)).collect();
        assert_eq!(failed, [9, 19, 29, 39]);
        // 50%: every other one.
        assert!((0..100).all(|i| is_error(i, 5_000) == (i % 2 == 1)));
        assert!((0..100).all(|i| is_error(i, 10_000)));
        assert!((0..100).all(|i| !is_error(i, 0)));
    }

    #[test]
    fn the_rule_holds_at_the_counter_limit() {
        assert!(is_error(u64::MAX - 1, 10_000));
        assert!(!is_error(u64::MAX - 1, 0));
    }

    #[test]
    fn live_requests_and_shadow_copies_each_get_their_exact_share() {
        let mut f = FaultInjector::new(Faults {
            error_percent: 25.0,
            delay_ms: 3,
        })
        .unwrap();
        let (mut live, mut shadow) = (0, 0);
        for i in 0..400 {
            // Interleaved unevenly: two live requests, then one copy.
            let copy = i % 3 == 2;
            let fault = f.next(copy);
            assert_eq!(fault.delay, Duration::from_millis(3));
            if fault.error {
                *(if copy { &mut shadow } else { &mut live }) += 1;
            }
        }
        // 267 live requests and 133 copies.
        assert_eq!((live, shadow), (66, 33));
    }

    #[test]
    fn percentages_are_kept_to_a_hundredth() {
        let mut f = FaultInjector::new(Faults {
            error_percent: 0.05,
            delay_ms: 0,
        })
        .unwrap();
        let failed = (0..10_000).filter(|_| f.next(false).error).count();
        assert_eq!(failed, 5);
    }

    #[test]
    fn a_running_upstream_injects_faults_from_when_it_is_told() {
        use crate::http::{Client, Request};
        let up = Upstream::start("canary").unwrap();
        let mut client = Client::new(up.addr);
        let mut send = |host: &str| client.send(&Request::get("/").host(host)).unwrap();
        assert_eq!(send("checkout.local").status, 200);
        up.set_faults(Faults {
            error_percent: 20.0,
            delay_ms: 1,
        })
        .unwrap();
        let live: Vec<u16> = (0..10).map(|_| send("checkout.local").status).collect();
        assert_eq!(live, [200, 200, 200, 200, 500, 200, 200, 200, 200, 500]);
        let copies = (0..5)
            .filter(|_| send("checkout.local-shadow:80").status == 500)
            .count();
        assert_eq!(copies, 1);
        let resp = send("checkout.local");
        assert_eq!(resp.header_str("x-served-by").as_deref(), Some("canary"));
        up.set_faults(Faults::NONE).unwrap();
        assert!((0..10).all(|_| send("checkout.local").status == 200));
        assert_eq!(up.count(|r| r.status == 500), 3);
        assert!(up
            .set_faults(Faults {
                error_percent: 101.0,
                delay_ms: 0
            })
            .is_err());
    }

    #[test]
    fn out_of_range_percentages_are_refused_by_name() {
        for p in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            let e = FaultInjector::new(Faults {
                error_percent: p,
                delay_ms: 0,
            })
            .unwrap_err();
            assert!(e.to_string().contains("error_percent"), "{e}");
        }
        assert!(FaultInjector::new(Faults::default()).is_ok());
        assert!(Faults::default().is_none());
    }
}
