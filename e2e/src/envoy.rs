//! A real Envoy, started from one of the configs in `envoy/`, for as long as a test needs it.
//!
//! Configs are read from the shipped YAML and changed only where a test must: the listener and
//! admin ports become 0 (Envoy picks free ones and reports them, so tests run in parallel
//! without racing for ports), cluster endpoints point at the test's upstreams, the plugin
//! configuration is the test's, and `.wasm` paths become absolute.

use crate::http::{admin_get, Client};
use crate::{repo_root, Error, Wasm};
use serde_json::Value;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long Envoy may take to become ready (it compiles the .wasm with V8 first).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An Envoy bootstrap, as JSON, ready to be adjusted and written out.
#[derive(Debug, Clone)]
pub struct EnvoyConfig {
    doc: Value,
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
    pub admin: SocketAddr,
    pub listener: SocketAddr,
}

// === impl EnvoyConfig ===

impl EnvoyConfig {
    /// Reads a config shipped in the repository, e.g. `envoy/demo.yaml`.
    pub fn load(rel: &str) -> Result<Self, Error> {
        let path = repo_root().join(rel);
        let text = fs::read_to_string(&path)
            .map_err(|e| Error::new(format!("read {}: {e}", path.display())))?;
        let doc: Value =
            serde_saphyr::from_str(&text).map_err(|e| Error::new(format!("parse {rel}: {e}")))?;
        Ok(Self { doc })
    }

    /// The shipped demo config, made fit for a test: free ports, absolute paths, the given
    /// upstream ports, and stats flushed on every admin read so histograms show at once.
    pub fn demo(stable_port: u16, canary_port: u16) -> Result<Self, Error> {
        let mut c = Self::load("envoy/demo.yaml")?;
        c.ephemeral_ports();
        c.cluster_port("checkout-stable", stable_port)?;
        c.cluster_port("checkout-canary", canary_port)?;
        c.cluster_port("checkout-canary-shadow", canary_port)?;
        c.doc["stats_flush_on_admin"] = Value::Bool(true);
        Ok(c)
    }

    pub fn json(&self) -> &Value {
        &self.doc
    }

    /// Listener and admin ports to 0; `.wasm` paths to absolute ones.
    pub fn ephemeral_ports(&mut self) {
        if let Some(p) = self
            .doc
            .pointer_mut("/admin/address/socket_address/port_value")
        {
            *p = Value::from(0);
        }
        if let Some(Value::Array(ls)) = self.doc.pointer_mut("/static_resources/listeners") {
            for l in ls {
                if let Some(p) = l.pointer_mut("/address/socket_address/port_value") {
                    *p = Value::from(0);
                }
            }
        }
        let root = repo_root();
        visit(&mut self.doc, &mut |obj| {
            if let Some(Value::String(f)) = obj.get_mut("local").and_then(|l| l.get_mut("filename"))
            {
                if f.ends_with(".wasm") && Path::new(f.as_str()).is_relative() {
                    // The file the suites test (`$LINNET_WASM` for the filter); a missing or
                    // stale one is refused before Envoy starts (`crate::wasm`).
                    let path = Wasm::from_file_name(f)
                        .and_then(|w| w.path().ok())
                        .unwrap_or_else(|| root.join(f.as_str()));
                    *f = path.to_string_lossy().into_owned();
                }
            }
        });
    }

    /// Points every endpoint of a cluster at `127.0.0.1:port`.
    pub fn cluster_port(&mut self, cluster: &str, port: u16) -> Result<&mut Self, Error> {
        let c = self.cluster_mut(cluster)?;
        let mut n = 0;
        visit(c, &mut |obj| {
            if let Some(sa) = obj.get_mut("socket_address") {
                sa["address"] = Value::from("127.0.0.1");
                sa["port_value"] = Value::from(port);
                n += 1;
            }
        });
        if n == 0 {
            return Err(Error::new(format!(
                "cluster {cluster} has no socket address"
            )));
        }
        Ok(self)
    }

    fn cluster_mut(&mut self, cluster: &str) -> Result<&mut Value, Error> {
        let Some(Value::Array(cs)) = self.doc.pointer_mut("/static_resources/clusters") else {
            return Err(Error::new("config has no static clusters"));
        };
        cs.iter_mut()
            .find(|c| c["name"] == cluster)
            .ok_or_else(|| Error::new(format!("config has no cluster {cluster}")))
    }

    /// Replaces the plugin configuration (the JSON text) of every wasm filter.
    pub fn plugin_config(&mut self, json: &str) -> &mut Self {
        self.for_each_wasm(|cfg| {
            cfg["configuration"] = serde_json::json!({
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": json,
            });
        });
        self
    }

    /// Runs another build of the filter (e.g. `Wasm::Responses`) wherever the config runs
    /// Linnet's default one.
    pub fn filter_build(&mut self, build: Wasm) -> Result<&mut Self, Error> {
        let path = build.path().map_err(Error::new)?;
        let path = path.to_string_lossy().into_owned();
        let mut n = 0;
        self.for_each_wasm(|cfg| {
            if let Some(Value::String(f)) = cfg.pointer_mut("/vm_config/code/local/filename") {
                if Wasm::from_file_name(f) == Some(Wasm::Filter) {
                    *f = path.clone();
                    n += 1;
                }
            }
        });
        if n == 0 {
            return Err(Error::new("config runs no Linnet filter"));
        }
        Ok(self)
    }

    /// The plugin configuration (JSON text) of the first wasm filter that runs Linnet (its
    /// code is a `linnet.wasm`; the benchmark's baselines run `baselines.wasm`).
    pub fn plugin_config_text(&self) -> Option<String> {
        let mut doc = self.doc.clone();
        let mut found = None;
        visit(&mut doc, &mut |obj| {
            let runs_linnet = obj
                .pointer("/vm_config/code/local/filename")
                .and_then(Value::as_str)
                .is_some_and(|f| f.ends_with("linnet.wasm"));
            if found.is_none() && runs_linnet {
                found = obj
                    .get("configuration")
                    .and_then(|c| c.get("value"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
        });
        found
    }

    /// Calls `f` with each wasm filter's `PluginConfig` (the object holding `vm_config`).
    fn for_each_wasm(&mut self, mut f: impl FnMut(&mut Value)) {
        visit(&mut self.doc, &mut |obj| {
            if obj.get("vm_config").is_some() {
                f(obj);
            }
        });
    }

    /// Writes the config as JSON (which Envoy reads like YAML) to `path`.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let text =
            serde_json::to_string_pretty(&self.doc).map_err(|e| Error::new(e.to_string()))?;
        fs::write(path, text).map_err(|e| Error::new(format!("write {}: {e}", path.display())))
    }
}

/// Depth-first over every JSON object in `v`, parents before children.
fn visit(v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match v {
        Value::Object(_) => {
            f(v);
            if let Value::Object(m) = v {
                for child in m.values_mut() {
                    visit(child, f);
                }
            }
        }
        Value::Array(a) => {
            for child in a {
                visit(child, f);
            }
        }
        _ => {}
    }
}

// === impl Envoy ===

impl Envoy {
    /// Starts Envoy with one worker and waits until its admin says it is ready.
    pub fn start(config: &EnvoyConfig) -> Result<Self, Error> {
        Self::start_workers(config, 1)
    }

    /// Starts Envoy with `workers` worker threads (one filter VM each).
    pub fn start_workers(config: &EnvoyConfig, workers: u32) -> Result<Self, Error> {
        let dir = scratch_dir()?;
        let config_path = dir.join("envoy.json");
        config.write(&config_path)?;
        let admin_path = dir.join("admin-address");
        let child = spawn(
            &config_path,
            &dir,
            &[
                "--admin-address-path",
                &admin_path.to_string_lossy(),
                "--concurrency",
                &workers.to_string(),
            ],
        )?;
        let mut envoy = Self {
            child,
            dir,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        envoy.wait_ready(&admin_path)?;
        Ok(envoy)
    }

    fn wait_ready(&mut self, admin_path: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::new(format!(
                    "envoy exited during start ({status}):\n{}",
                    self.log_tail(40)
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "envoy not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                )));
            }
            let addr = fs::read_to_string(admin_path)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                self.admin = addr;
                if matches!(admin_get(addr, "/ready"), Ok((200, _))) {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(25));
        }
        let (_, body) = admin_get(self.admin, "/listeners?format=json")?;
        let v: Value =
            serde_json::from_str(&body).map_err(|e| Error::new(format!("/listeners: {e}")))?;
        let port = v
            .pointer("/listener_statuses/0/local_address/socket_address/port_value")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| Error::new(format!("no listener port in /listeners: {body}")))?;
        self.listener = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(())
    }

    /// A keep-alive client to the listener.
    pub fn client(&self) -> Client {
        Client::new(self.listener)
    }

    /// A GET on the admin interface; anything but 200 is an error.
    pub fn admin(&self, path: &str) -> Result<String, Error> {
        match admin_get(self.admin, path)? {
            (200, body) => Ok(body),
            (status, body) => Err(Error::new(format!("admin {path}: {status} {body}"))),
        }
    }

    /// The value of one counter or gauge from `/stats`, `None` if Envoy has no such stat.
    pub fn stat(&self, name: &str) -> Result<Option<u64>, Error> {
        let body = self.admin(&format!("/stats?filter=^{}$", regex_escape(name)))?;
        Ok(body.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        }))
    }

    pub fn prometheus(&self) -> Result<Vec<Sample>, Error> {
        Ok(parse_prometheus(&self.admin("/stats/prometheus")?))
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.log(), lines)
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("envoy's config and log are kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs Envoy with a config it is expected to refuse: returns its exit status and log, or an
/// error if it is still running (that is, it accepted the config) after `timeout`.
pub fn run_to_exit(config: &EnvoyConfig, timeout: Duration) -> Result<(ExitStatus, String), Error> {
    let dir = scratch_dir()?;
    let config_path = dir.join("envoy.json");
    config.write(&config_path)?;
    let mut child = spawn(&config_path, &dir, &[])?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(Error::io("wait for envoy"))? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(25));
    };
    let log = fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
    let _ = fs::remove_dir_all(&dir);
    match status {
        Some(s) => Ok((s, log)),
        None => Err(Error::new(format!(
            "envoy still running after {timeout:?}:\n{}",
            tail(&log, 40)
        ))),
    }
}

/// `envoy --mode validate -c <path>` from the repo root: whether it passed, and its output.
pub fn validate(rel: &str) -> Result<(bool, String), Error> {
    let out = Command::new(crate::envoy_bin()?)
        .args(["--mode", "validate", "-c", rel, "-l", "warning"])
        .current_dir(repo_root())
        .output()
        .map_err(Error::io("run envoy --mode validate"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn spawn(config: &Path, dir: &Path, extra: &[&str]) -> Result<Child, Error> {
    let log = fs::File::create(dir.join("envoy.log")).map_err(Error::io("create envoy.log"))?;
    let log2 = log.try_clone().map_err(Error::io("clone envoy.log"))?;
    Command::new(crate::envoy_bin()?)
        .arg("-c")
        .arg(config)
        .args([
            "--disable-hot-restart",
            "-l",
            "warning",
            "--component-log-level",
            "wasm:info",
        ])
        .args(extra)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(Error::io("spawn envoy"))
}

/// A fresh directory for one Envoy's config and log.
fn scratch_dir() -> Result<PathBuf, Error> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "linnet-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| Error::new(format!("create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// One line of Prometheus text output.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text exposition (comments skipped; label values without escapes, which
/// is all Envoy's own names produce).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            Some(Sample {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}
