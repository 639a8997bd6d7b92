//! A minimal HTTP/1.1 client and message reader over a plain `TcpStream`.
//!
//! Hand-written on purpose: the tests send header bytes no HTTP library would let through
//! (non-UTF-8, 8 KB values, junk cookies), and they only ever talk to Envoy on loopback.

use crate::Error;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a single read or write may block before the request counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bigger heads than this are refused: nothing in these tests sends or expects one.
const MAX_HEAD: usize = 256 * 1024;

/// One request to send: method, path and raw header bytes.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A parsed response (or, read by an upstream, a parsed request's head and body).
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// A keep-alive connection that reconnects when the server closed it.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

// === impl Request ===

impl Request {
    pub fn get(path: &str) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header; the value may be any bytes but CR and LF.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    pub fn host(self, host: &str) -> Self {
        self.header("host", host)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(format!("{} {} HTTP/1.1\r\n", self.method, self.path).as_bytes());
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            out.extend_from_slice(b"host: localhost\r\n");
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

// === impl Response ===

impl Response {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of a header as (lossy) text.
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// === impl Client ===

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Sends one request and reads its response. A connection the server closed between
    /// requests is reopened once.
    pub fn send(&mut self, req: &Request) -> Result<Response, Error> {
        let reused = self.conn.is_some();
        match self.try_send(req) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.conn = None;
                self.try_send(req)
            }
            Err(e) => Err(e),
        }
    }

    fn try_send(&mut self, req: &Request) -> Result<Response, Error> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .map_err(|e| Error::new(format!("connect {}: {e}", self.addr)))?;
                stream
                    .set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(Error::io("set timeout"))?;
                stream
                    .set_write_timeout(Some(IO_TIMEOUT))
                    .map_err(Error::io("set timeout"))?;
                stream.set_nodelay(true).map_err(Error::io("set nodelay"))?;
                self.conn.insert(BufReader::new(stream))
            }
        };
        let sent = conn.get_mut().write_all(&req.encode());
        if let Err(e) = sent {
            self.conn = None;
            return Err(Error::new(format!("write request: {e}")));
        }
        let resp = match read_message(conn, false) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.conn = None;
                return Err(Error::new("connection closed before a response"));
            }
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        let close = resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
        if close {
            self.conn = None;
        }
        Ok(resp)
    }
}

/// Reads one HTTP/1.1 message (a request when `is_request`, else a response) with a
/// `content-length` or chunked body. A request's method and path come back as the first two
/// headers, `:method` and `:path`. `Ok(None)`: the peer closed cleanly before a message.
pub fn read_message<R: BufRead>(r: &mut R, is_request: bool) -> Result<Option<Response>, Error> {
    let mut line = Vec::new();
    let mut head_len = 0usize;
    // Start line, skipping stray empty lines between messages.
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(Error::io("read start line"))?;
        if n == 0 {
            return Ok(None);
        }
        head_len += n;
        if trim_crlf(&line).is_empty() {
            continue;
        }
        break;
    }
    let start = String::from_utf8_lossy(trim_crlf(&line)).into_owned();
    let mut msg = Response::default();
    let mut parts = start.splitn(3, ' ');
    let (a, b) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if is_request {
        msg.headers.push((":method".into(), a.as_bytes().to_vec()));
        msg.headers.push((":path".into(), b.as_bytes().to_vec()));
    } else {
        msg.status = b
            .parse()
            .map_err(|_| Error::new(format!("bad status line {start:?}")))?;
    }
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(Error::io("read header"))?;
        if n == 0 {
            return Err(Error::new("connection closed inside a message head"));
        }
        head_len += n;
        if head_len > MAX_HEAD {
            return Err(Error::new("message head too large"));
        }
        let l = trim_crlf(&line);
        if l.is_empty() {
            break;
        }
        let Some(colon) = l.iter().position(|&c| c == b':') else {
            return Err(Error::new(format!(
                "bad header line {:?}",
                String::from_utf8_lossy(l)
            )));
        };
        let name = String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase();
        let value = trim_ows(&l[colon + 1..]).to_vec();
        msg.headers.push((name, value));
    }
    let chunked = msg
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        loop {
            line.clear();
            r.read_until(b'\n', &mut line)
                .map_err(Error::io("read chunk size"))?;
            let size_text = String::from_utf8_lossy(trim_crlf(&line)).into_owned();
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| Error::new(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    line.clear();
                    r.read_until(b'\n', &mut line)
                        .map_err(Error::io("read trailer"))?;
                    if trim_crlf(&line).is_empty() {
                        break;
                    }
                }
                break;
            }
            let at = msg.body.len();
            msg.body.resize(at + size, 0);
            r.read_exact(&mut msg.body[at..])
                .map_err(Error::io("read chunk"))?;
            line.clear();
            r.read_until(b'\n', &mut line)
                .map_err(Error::io("read chunk end"))?;
        }
    } else if let Some(len) = msg.header("content-length") {
        let len: usize = String::from_utf8_lossy(len)
            .trim()
            .parse()
            .map_err(|_| Error::new("bad content-length"))?;
        msg.body.resize(len, 0);
        r.read_exact(&mut msg.body)
            .map_err(Error::io("read body"))?;
    } else if !is_request && msg.status != 204 && msg.status != 304 && msg.status >= 200 {
        // No length: the body runs to the end of the connection.
        r.read_to_end(&mut msg.body)
            .map_err(Error::io("read body"))?;
    }
    Ok(Some(msg))
}

fn trim_crlf(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A plain GET to Envoy's admin interface, returning status and body text.
pub fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let mut c = Client::new(addr);
    let resp = c.send(&Request::get(path).header("connection", "close"))?;
    Ok((resp.status, resp.body_str()))
}
