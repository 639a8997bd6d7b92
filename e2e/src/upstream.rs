//! An in-process upstream that answers who served and records what it received.
//!
//! It answers every request `200` with `x-served-by: <name>` (and the name as the body), and
//! keeps each request's Host, path and headers, so a test can see exactly what Envoy sent:
//! which variant got the request, whether Linnet's headers leaked, and the shadow copies
//! (their Host ends in `-shadow`).

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
}

pub struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
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
        self.host
            .split(':')
            .next()
            .is_some_and(|h| h.ends_with("-shadow"))
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
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (name, received, stop) = (name.to_owned(), received.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("upstream-{name}"))
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let (name, received) = (name.clone(), received.clone());
                        // Connection threads end when Envoy closes the connection.
                        let _ = thread::Builder::new().spawn(move || serve(conn, &name, &received));
                    }
                })
                .map_err(Error::io("spawn upstream"))?
        };
        Ok(Self {
            addr,
            received,
            stop,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
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

fn lock(m: &Mutex<Vec<Received>>) -> MutexGuard<'_, Vec<Received>> {
    // A panicking test thread cannot leave the list half-written; keep using it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn serve(conn: TcpStream, name: &str, received: &Mutex<Vec<Received>>) {
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
        lock(received).push(Received {
            host,
            path,
            headers,
        });
        let body = name.as_bytes();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-served-by: {name}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(body))
            .is_err()
        {
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
