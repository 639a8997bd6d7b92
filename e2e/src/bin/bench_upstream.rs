//! The load benchmark's upstream: answers every HTTP/1.1 request on a keep-alive connection
//! with `200` and a two-byte body, at once, so that Envoy, not the upstream, is measured.
//!
//! Usage: `linnet-bench-upstream 127.0.0.1:8090` (loopback only); runs until killed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => return fail(&format!("bad address {addr:?}: {e}")),
    };
    if !addr.ip().is_loopback() {
        return fail("refusing a non-loopback address");
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => return fail(&format!("bind {addr}: {e}")),
    };
    for conn in listener.incoming().flatten() {
        let _ = thread::Builder::new().spawn(move || serve(conn));
    }
}

fn fail(msg: &str) {
    eprintln!("linnet-bench-upstream: {msg}");
    std::process::exit(2);
}

/// Reads request heads (the benchmark sends GETs without bodies) and answers each one.
fn serve(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(16 * 1024, conn);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // The empty line ends a request head: answer it.
        let head_done = matches!(line.as_slice(), b"\r\n" | b"\n");
        if head_done && out.write_all(RESPONSE).is_err() {
            return;
        }
    }
}
