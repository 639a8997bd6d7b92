//! A real Alertmanager (Debian's `/usr/bin/prometheus-alertmanager`) that sends every alert
//! to the `linnet` sidecar's `POST /v1/alertmanager` with the admin token as a bearer token,
//! wired as a deployment would be, for the test that rolls a canary back on an alert.
//!
//! It runs on a free loopback port with clustering off and its config, log and data in the
//! caller's directory; alerts are grouped and sent within about a second. It is killed on
//! drop.

use crate::daemon;
use crate::http::admin_get;
use crate::sidecar::free_port;
use crate::Error;
use serde_json::Value;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// Debian's `prometheus-alertmanager` package puts the server here.
const ALERTMANAGER_BIN: &str = "/usr/bin/prometheus-alertmanager";
/// The name the receiver has in the config, and in every payload it posts.
pub const RECEIVER: &str = "linnet";
/// How long Alertmanager may take to load its config and become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Alertmanager {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

// === impl Alertmanager ===

impl Alertmanager {
    /// Writes `alertmanager.yml` routing every alert to the sidecar at `sidecar` (loopback)
    /// with `token`, starts Alertmanager with its data in `dir/data`, and waits until it is
    /// ready.
    pub fn start(dir: &Path, sidecar: SocketAddr, token: &str) -> Result<Self, Error> {
        if !Path::new(ALERTMANAGER_BIN).is_file() {
            return Err(Error::new(format!(
                "no Alertmanager at {ALERTMANAGER_BIN}: run `make setup` first"
            )));
        }
        let config = config(sidecar, token)?;
        fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("alertmanager.yml");
        fs::write(&path, config)
            .map_err(|e| Error::new(format!("write {}: {e}", path.display())))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut command = Command::new(ALERTMANAGER_BIN);
        command
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            // Empty: no gossip port, no peers; one Alertmanager is the whole cluster.
            .arg("--cluster.listen-address=")
            .current_dir(dir);
        let child = daemon::start(
            "alertmanager",
            command,
            &dir.join("alertmanager.log"),
            addr,
            "/-/ready",
            READY_TIMEOUT,
        )?;
        Ok(Self {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
        })
    }

    /// The address Prometheus sends alerts to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`: active, silenced and
    /// inhibited), each with its `labels`, `annotations` and `status`.
    pub fn alerts(&self) -> Result<Vec<Value>, Error> {
        match admin_get(self.addr, "/api/v2/alerts")? {
            (200, body) => serde_json::from_str(&body)
                .map_err(|e| Error::new(format!("alertmanager alerts: {e}: {body}"))),
            (status, body) => Err(Error::new(format!("alertmanager alerts: {status} {body}"))),
        }
    }

    /// Alertmanager's log so far: where a failed notification is said.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        daemon::stop(&mut self.child);
    }
}

/// `alertmanager.yml`: one route, grouped per alert and service, to one webhook receiver,
/// the sidecar's `/v1/alertmanager`, with the token sent as `Authorization: Bearer`.
fn config(sidecar: SocketAddr, token: &str) -> Result<String, Error> {
    if !sidecar.ip().is_loopback() {
        return Err(Error::new(format!(
            "sidecar {sidecar}: only loopback is reached"
        )));
    }
    // JSON strings are YAML strings: any token quoted safely.
    let token = serde_json::to_string(token).map_err(|e| Error::new(format!("token: {e}")))?;
    // group_wait is the pause before a new group's first notification; group_interval the one
    // before a changed group is sent again: seconds, so a firing alert reaches the sidecar at
    // once. Alertmanager repeats an unchanged group only every repeat_interval, and the
    // sidecar acts on the first.
    Ok(format!(
        "route:
  receiver: {RECEIVER}
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: {RECEIVER}
    webhook_configs:
      - url: 'http://{sidecar}/v1/alertmanager'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_posts_to_the_sidecar_with_its_token() {
        let c = config(SocketAddr::from(([127, 0, 0, 1], 7070)), "s3cret").unwrap();
        assert!(
            c.contains("url: 'http://127.0.0.1:7070/v1/alertmanager'"),
            "{c}"
        );
        assert!(
            c.contains(
                "authorization:\n            type: Bearer\n            credentials: \"s3cret\"\n"
            ),
            "{c}"
        );
        assert!(c.contains("group_wait: 1s"), "{c}");
        assert!(config(SocketAddr::from(([10, 1, 1, 1], 7070)), "t").is_err());
    }
}
