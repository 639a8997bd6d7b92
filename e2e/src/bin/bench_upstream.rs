//! The load benchmark's upstream: answers every HTTP/1.1 request on a keep-alive connection
//! with `200` and a two-byte body, at once, so that Envoy, not the upstream, is measured.
//! Told to, it misbehaves as the in-process upstream does (an exact share of `500`s, a delay
//! before each answer), for the demo and for analysis to judge a bad canary. Named
//! (`--served-by NAME`), it answers as the in-process upstream does, with `x-served-by: NAME`
//! and the name as the body, so that a client sees which variant served it.
//!
//! Usage: `linnet-bench-upstream [--error-percent P] [--delay-ms D] [--served-by NAME]
//! [127.0.0.1:8090]` (loopback only); runs until killed.

use linnet_e2e::upstream::{answer, is_shadow_host, FaultInjector, Faults};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
const FAULT: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nfault";
const USAGE: &str = "usage: linnet-bench-upstream [--error-percent P] [--delay-ms D] [--served-by NAME] [127.0.0.1:PORT]";

struct Args {
    addr: SocketAddr,
    faults: Faults,
    served_by: Option<String>,
}

/// The two answers, built once: the request path only writes them.
struct Answers {
    ok: Vec<u8>,
    fault: Vec<u8>,
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };
    // Without faults no request is counted or locked for: the benchmark's path stays as it was.
    let faults = if args.faults.is_none() {
        None
    } else {
        match FaultInjector::new(args.faults) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => return fail(&e.to_string()),
        }
    };
    let answers = Arc::new(match &args.served_by {
        None => Answers {
            ok: RESPONSE.to_vec(),
            fault: FAULT.to_vec(),
        },
        Some(name) => Answers {
            ok: answer(name, false),
            fault: answer(name, true),
        },
    });
    let listener = match TcpListener::bind(args.addr) {
        Ok(l) => l,
        Err(e) => return fail(&format!("bind {}: {e}", args.addr)),
    };
    for conn in listener.incoming().flatten() {
        let (faults, answers) = (faults.clone(), answers.clone());
        // One thread per connection, so a delayed answer holds up only its own connection.
        let _ = thread::Builder::new().spawn(move || serve(conn, faults.as_deref(), &answers));
    }
}

fn fail(msg: &str) {
    eprintln!("linnet-bench-upstream: {msg}\n{USAGE}");
    std::process::exit(2);
}

/// `--error-percent P`, `--delay-ms D` and `--served-by NAME` (also as `--flag=value`), and
/// the address.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut addr = None;
    let mut faults = Faults::NONE;
    let mut served_by = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if arg.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--error-percent" => {
                let v = value()?;
                faults.error_percent = v
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        format!("bad --error-percent {v:?}: must be a number from 0 to 100")
                    })?;
            }
            "--delay-ms" => {
                let v = value()?;
                faults.delay_ms = v.parse().map_err(|_| {
                    format!("bad --delay-ms {v:?}: must be a whole number of milliseconds")
                })?;
            }
            "--served-by" => {
                let v = value()?;
                // A header value: printable ASCII without spaces keeps the answer well formed.
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "bad --served-by {v:?}: must be printable ASCII without spaces"
                    ));
                }
                served_by = Some(v);
            }
            f if f.starts_with('-') => return Err(format!("unknown flag {f}")),
            _ if addr.is_some() => return Err(format!("unexpected argument {arg:?}")),
            _ => {
                let a: SocketAddr = arg
                    .parse()
                    .map_err(|e| format!("bad address {arg:?}: {e}"))?;
                if !a.ip().is_loopback() {
                    return Err("refusing a non-loopback address".into());
                }
                addr = Some(a);
            }
        }
    }
    Ok(Args {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8090))),
        faults,
        served_by,
    })
}

/// Reads request heads (the benchmark sends GETs without bodies) and answers each one.
fn serve(conn: TcpStream, faults: Option<&Mutex<FaultInjector>>, answers: &Answers) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(16 * 1024, conn);
    let mut line = Vec::with_capacity(256);
    let mut shadow = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // The empty line ends a request head: answer it.
        let head_done = matches!(line.as_slice(), b"\r\n" | b"\n");
        if !head_done {
            if faults.is_some() && line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:") {
                shadow = is_shadow_host(line[5..].trim_ascii());
            }
            continue;
        }
        let response = match faults {
            None => &answers.ok,
            Some(f) => {
                let fault = f.lock().unwrap_or_else(|p| p.into_inner()).next(shadow);
                shadow = false;
                if !fault.delay.is_zero() {
                    thread::sleep(fault.delay);
                }
                if fault.error {
                    &answers.fault
                } else {
                    &answers.ok
                }
            }
        };
        if out.write_all(response).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_are_the_benchmarks() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.addr.to_string(), "127.0.0.1:8090");
        assert!(a.faults.is_none());
        assert_eq!(a.served_by, None);
        assert_eq!(parse(&["127.0.0.1:9"]).unwrap().addr.port(), 9);
    }

    #[test]
    fn faults_are_read_from_flags_in_either_form() {
        let a = parse(&["--error-percent", "12.5", "127.0.0.1:9", "--delay-ms=40"]).unwrap();
        assert_eq!(
            a.faults,
            Faults {
                error_percent: 12.5,
                delay_ms: 40
            }
        );
    }

    #[test]
    fn a_named_upstream_says_who_served() {
        let a = parse(&["--served-by=canary", "127.0.0.1:9"]).unwrap();
        assert_eq!(a.served_by.as_deref(), Some("canary"));
        let ok = String::from_utf8(answer("canary", false)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\r\nx-served-by: canary\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\ncanary"), "{ok}");
    }

    #[test]
    fn bad_values_are_reported_by_flag() {
        for (args, want) in [
            (&["--error-percent", "x"][..], "--error-percent"),
            (&["--error-percent", "101"], "--error-percent"),
            (&["--error-percent", "NaN"], "--error-percent"),
            (&["--error-percent"], "--error-percent needs a value"),
            (&["--delay-ms", "-1"], "--delay-ms"),
            (&["--delay-ms=1.5"], "--delay-ms"),
            (&["--served-by"], "--served-by needs a value"),
            (&["--served-by", ""], "--served-by"),
            (&["--served-by", "a b"], "--served-by"),
            (&["--slow"], "unknown flag --slow"),
            (&["10.0.0.1:80"], "non-loopback"),
            (&["127.0.0.1:1", "127.0.0.1:2"], "unexpected argument"),
        ] {
            let e = parse(args).err().unwrap();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
