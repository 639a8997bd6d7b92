//! The `linnet` sidecar as a child process on loopback: started on a fixed free port with its
//! own database, killed with SIGKILL (or on drop), restarted on the same port and database,
//! or replaced on the same port by one with another database.

use crate::envoy::EnvoyConfig;
use crate::http::admin_get;
use crate::{repo_root, Error};
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "e2e-admin-token";
pub const POLL_TOKEN: &str = "e2e-poll-token";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Sidecar {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// The `linnet` binary: `$LINNET_BIN`, else the workspace's debug then release build.
pub fn linnet_bin() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("LINNET_BIN") {
        return Ok(PathBuf::from(p));
    }
    ["target/debug/linnet", "target/release/linnet"]
        .iter()
        .map(|p| repo_root().join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::new("no linnet binary: run `cargo build -p linnet-sidecar` (or `make build`)")
        })
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, Error> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind a free port"))?;
    Ok(l.local_addr().map_err(Error::io("free port"))?.port())
}

// === impl Sidecar ===

impl Sidecar {
    /// The demo Envoy config for these upstreams, its filter polling this sidecar and
    /// holding no rollout of its own: the sidecar's snapshot decides everything.
    pub fn envoy_config(&self, stable_port: u16, canary_port: u16) -> Result<EnvoyConfig, Error> {
        let mut config = EnvoyConfig::demo(stable_port, canary_port)?;
        config.cluster_port("linnet_sidecar", self.addr.port())?;
        config.plugin_config(
            &serde_json::json!({
                "rollouts": [],
                "sidecar": {"cluster": "linnet_sidecar", "token": POLL_TOKEN, "poll_timeout_ms": 5000}
            })
            .to_string(),
        );
        Ok(config)
    }

    /// Starts a sidecar with a fresh database under `dir`.
    pub fn start(dir: &Path) -> Result<Self, Error> {
        Self::start_on(dir, SocketAddr::from(([127, 0, 0, 1], free_port()?)))
    }

    /// Starts a sidecar on `addr` with the database under `dir` (fresh if there is none):
    /// in another directory, a sidecar that replaces this one on an empty database.
    pub fn start_on(dir: &Path, addr: SocketAddr) -> Result<Self, Error> {
        let mut s = Sidecar {
            child: None,
            addr,
            dir: dir.to_path_buf(),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sidecar.log"))
            .map_err(Error::io("open sidecar.log"))?;
        let err = log.try_clone().map_err(Error::io("sidecar log"))?;
        let child = Command::new(linnet_bin()?)
            .args(["serve", "--listen", &self.addr.to_string()])
            .arg("--db")
            .arg(self.db())
            .arg("--reports")
            .arg(self.reports())
            // Tokens given, so no token file is made; reads open, as `get_json` sends none.
            .args([
                "--token",
                ADMIN_TOKEN,
                "--poll-token",
                POLL_TOKEN,
                "--open-reads",
                "--drain-timeout",
                "1s",
                // Gates and notifications a test (or the fuzzer) makes up stay on this host.
                "--outbound-loopback-only",
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(Error::io("spawn linnet serve"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !matches!(admin_get(self.addr, "/readyz"), Ok((200, _))) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(Error::new(format!(
                    "linnet serve exited ({status}):\n{}",
                    self.log()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "linnet serve not ready:\n{}",
                    self.log()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL: no drain, no goodbye, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and database.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill9();
        self.spawn()
    }

    /// Runs the `linnet` CLI against this sidecar with the admin token.
    pub fn cli(&self, args: &[&str]) -> Result<String, Error> {
        let out: Output = Command::new(linnet_bin()?)
            .args([
                "--server",
                &format!("http://{}", self.addr),
                "--token",
                ADMIN_TOKEN,
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io("run linnet"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(Error::new(format!(
                "linnet {args:?} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    /// Creates a rollout from its spec (YAML or JSON) with the CLI, as an operator would:
    /// the spec is written next to the database, as `<name>.yaml`.
    pub fn create_rollout(&self, name: &str, spec: &str) -> Result<String, Error> {
        let path = self.dir.join(format!("{name}.yaml"));
        fs::write(&path, spec).map_err(|e| Error::new(format!("write {}: {e}", path.display())))?;
        self.cli(&["rollout", "create", &path.to_string_lossy()])
    }

    /// A GET on the admin API; anything but 200 is an error.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, Error> {
        match admin_get(self.addr, path)? {
            (200, body) => {
                serde_json::from_str(&body).map_err(|e| Error::new(format!("{path}: {e}: {body}")))
            }
            (status, body) => Err(Error::new(format!("GET {path}: {status} {body}"))),
        }
    }

    /// The store.
    pub fn db(&self) -> PathBuf {
        self.dir.join("linnet.db")
    }

    /// Where `serve --reports` writes each ended release's report.
    pub fn reports(&self) -> PathBuf {
        self.dir.join("reports")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sidecar.log")).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill9();
    }
}
