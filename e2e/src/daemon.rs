//! A server the tests run as a child process on loopback (Prometheus, Alertmanager): its
//! output appended to a log file in the test's directory, started only once an HTTP path
//! answers 200, and the log's tail in every error, so a server that will not come up says why.

use crate::http::admin_get;
use crate::Error;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Spawns `command` with its stdout and stderr appended to `log`, and waits until
/// `GET ready_path` on `addr` answers 200. A child that exits or is not ready within
/// `timeout` is an error with `name` and the log's tail (and is killed, if it still runs).
pub fn start(
    name: &str,
    mut command: Command,
    log: &Path,
    addr: SocketAddr,
    ready_path: &str,
    timeout: Duration,
) -> Result<Child, Error> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::new(format!("open {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::new(format!("{}: {e}", log.display())))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::new(format!("spawn {name}: {e}")))?;
    let deadline = Instant::now() + timeout;
    while !matches!(admin_get(addr, ready_path), Ok((200, _))) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::new(format!(
                "{name} exited during start ({status}):\n{}",
                log_tail(log, 30)
            )));
        }
        if Instant::now() > deadline {
            stop(&mut Some(child));
            return Err(Error::new(format!(
                "{name} not ready after {timeout:?}:\n{}",
                log_tail(log, 30)
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// Kills and reaps the child, if there is one.
pub fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The last `lines` lines of a log file (empty if there is none yet).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
