//! A real Prometheus server (Debian's `/usr/bin/prometheus`) scraping Envoy admins on
//! loopback (and, when asked, the sidecar, with rule files loaded and their alerts sent to an
//! Alertmanager), for tests and the demo that judge a rollout from metrics as production would.
//!
//! It runs on a fixed free port with its config, log and data in the caller's directory, and
//! can be stopped and started again on the same port and data, to play a metrics source that
//! goes down and comes back. It is killed on drop.

use crate::daemon;
use crate::http::admin_get;
use crate::sidecar::free_port;
use crate::Error;
use serde_json::Value;
use std::fmt::Display;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

/// Debian's `prometheus` package puts the server here.
const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// The job the sidecar is scraped as: the one Linnet's rules (`monitoring/`) expect.
pub const SIDECAR_JOB: &str = "linnet";
/// How long Prometheus may take to open its storage and become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a Prometheus does beyond scraping the Envoy admins.
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// A `linnet` sidecar to scrape at `/metrics` as job [`SIDECAR_JOB`] (it must allow
    /// open reads).
    pub sidecar: Option<SocketAddr>,
    /// Rule files to load and evaluate every scrape interval.
    pub rule_files: Vec<PathBuf>,
    /// An Alertmanager (loopback) to send the rules' alerts to, as soon as they fire.
    pub alertmanager: Option<SocketAddr>,
}

pub struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

// === impl Prometheus ===

impl Prometheus {
    /// Writes `prometheus.yml` to scrape each Envoy admin (`127.0.0.1:port`) at
    /// `/stats/prometheus` as job `envoy`, starts Prometheus with its data in `dir/data`, and
    /// waits until it is ready.
    pub fn start<A: Display>(
        dir: &Path,
        envoy_admins: &[A],
        scrape_interval: Duration,
    ) -> Result<Self, Error> {
        Self::start_with(dir, envoy_admins, &Extras::default(), scrape_interval)
    }

    /// [`start`](Self::start), also scraping the sidecar and evaluating the rule files of
    /// `extras`.
    pub fn start_with<A: Display>(
        dir: &Path,
        envoy_admins: &[A],
        extras: &Extras,
        scrape_interval: Duration,
    ) -> Result<Self, Error> {
        if !Path::new(PROMETHEUS_BIN).is_file() {
            return Err(Error::new(format!(
                "no Prometheus at {PROMETHEUS_BIN}: run `make setup` first"
            )));
        }
        let config = config(envoy_admins, extras, scrape_interval)?;
        fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("prometheus.yml");
        fs::write(&path, config)
            .map_err(|e| Error::new(format!("write {}: {e}", path.display())))?;
        let mut p = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            dir: dir.to_path_buf(),
        };
        p.spawn()?;
        Ok(p)
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An instant query (`/api/v1/query`): its `data`, that is `resultType` and `result`.
    pub fn query(&self, promql: &str) -> Result<Value, Error> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = admin_get(self.addr, &path)?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| Error::new(format!("query {promql}: {status} {e}: {body}")))?;
        if status != 200 || v["status"] != "success" {
            return Err(Error::new(format!(
                "query {promql}: {status} {}: {}",
                v["errorType"].as_str().unwrap_or("?"),
                v["error"].as_str().unwrap_or(&body)
            )));
        }
        Ok(v["data"].clone())
    }

    /// The value of a query that yields one number: a scalar, or a vector of at most one
    /// series (`None` when it is empty, as `sum` of nothing scraped yet is).
    pub fn value(&self, promql: &str) -> Result<Option<f64>, Error> {
        let data = self.query(promql)?;
        let sample = match data["resultType"].as_str() {
            Some("scalar") => &data["result"],
            Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
                Some([]) => return Ok(None),
                Some([one]) => &one["value"],
                _ => {
                    return Err(Error::new(format!(
                        "query {promql}: more than one series: {data}"
                    )))
                }
            },
            _ => return Err(Error::new(format!("query {promql}: not a number: {data}"))),
        };
        // A sample is `[time, "value"]`; the value is text so NaN and ±Inf fit.
        sample[1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::new(format!("query {promql}: bad sample {sample}")))
    }

    /// Every rule loaded, from every group (`/api/v1/rules`): each with its `name`, `health`,
    /// `state` (an alert's `inactive`, `pending` or `firing`) and `lastEvaluation`.
    pub fn rules(&self) -> Result<Vec<Value>, Error> {
        let (status, body) = admin_get(self.addr, "/api/v1/rules")?;
        let v: Value = serde_json::from_str(&body)
            .map_err(|e| Error::new(format!("rules: {status} {e}: {body}")))?;
        let groups = v["data"]["groups"]
            .as_array()
            .filter(|_| status == 200)
            .ok_or_else(|| Error::new(format!("rules: {status} {body}")))?;
        Ok(groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Polls [`value`](Self::value) until `done` holds for it, up to `timeout`; returns the
    /// value reached, or an error with the last one seen.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(f64) -> bool,
    ) -> Result<f64, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.value(promql);
            if let Ok(Some(v)) = last {
                if done(v) {
                    return Ok(v);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{promql} not as expected after {timeout:?}; last: {last:?}"
                )));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills Prometheus: the metrics source is down until [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        daemon::stop(&mut self.child);
    }

    /// Starts Prometheus again on the same port, config and data, and waits until it is ready.
    pub fn start_again(&mut self) -> Result<(), Error> {
        self.stop();
        self.spawn()
    }

    /// Prometheus's log so far, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let mut command = Command::new(PROMETHEUS_BIN);
        command
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .current_dir(&self.dir);
        let log = self.dir.join("prometheus.log");
        let child = daemon::start(
            "prometheus",
            command,
            &log,
            self.addr,
            "/-/ready",
            READY_TIMEOUT,
        )?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `prometheus.yml`: job `envoy` over the given loopback admins, job [`SIDECAR_JOB`] over
/// the sidecar if there is one, the rule files, and the Alertmanager their alerts go to.
fn config<A: Display>(
    envoy_admins: &[A],
    extras: &Extras,
    scrape_interval: Duration,
) -> Result<String, Error> {
    let mut targets = Vec::with_capacity(envoy_admins.len());
    for a in envoy_admins {
        targets.push(format!("'{}'", loopback(&a.to_string())?));
    }
    if targets.is_empty() {
        return Err(Error::new("no Envoy admin to scrape"));
    }
    let ms = scrape_interval.as_millis().max(1);
    // The timeout may not exceed the interval, and Prometheus's default (10 s) would.
    let mut out = format!(
        "global:
  scrape_interval: {ms}ms
  scrape_timeout: {ms}ms
  evaluation_interval: {ms}ms
scrape_configs:
  - job_name: envoy
    metrics_path: /stats/prometheus
    static_configs:
      - targets: [{}]
",
        targets.join(", ")
    );
    if let Some(s) = extras.sidecar {
        let s = loopback(&s.to_string())?;
        out.push_str(&format!(
            "  - job_name: {SIDECAR_JOB}
    metrics_path: /metrics
    static_configs:
      - targets: ['{s}']
"
        ));
    }
    if !extras.rule_files.is_empty() {
        out.push_str("rule_files:\n");
        for f in &extras.rule_files {
            // JSON strings are YAML strings: any path quoted safely.
            let quoted = serde_json::to_string(&f.to_string_lossy())
                .map_err(|e| Error::new(format!("rule file {}: {e}", f.display())))?;
            out.push_str(&format!("  - {quoted}\n"));
        }
    }
    if let Some(a) = extras.alertmanager {
        let a = loopback(&a.to_string())?;
        out.push_str(&format!(
            "alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{a}']
"
        ));
    }
    Ok(out)
}

/// A target to scrape or send alerts to, refused unless it is a loopback address.
fn loopback(a: &str) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = a
        .parse()
        .map_err(|e| Error::new(format!("target {a:?}: {e}")))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(Error::new(format!("target {a}: only loopback is reached")))
    }
}

/// Percent-encodes all but the unreserved characters of RFC 3986.
fn url_encode(s: &str) -> String {
    s.bytes()
        .fold(String::with_capacity(s.len() * 3), |mut out, b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            url_encode(r#"sum(x{a="b c"}[1m])"#),
            "sum%28x%7Ba%3D%22b%20c%22%7D%5B1m%5D%29"
        );
        assert_eq!(url_encode("a-b_c.d~9"), "a-b_c.d~9");
    }

    #[test]
    fn the_config_scrapes_each_loopback_admin() {
        let none = Extras::default();
        let c = config(
            &["127.0.0.1:9901", "127.0.0.1:9902"],
            &none,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(c.contains("scrape_interval: 1000ms"), "{c}");
        assert!(c.contains("metrics_path: /stats/prometheus"), "{c}");
        assert!(
            c.contains("targets: ['127.0.0.1:9901', '127.0.0.1:9902']"),
            "{c}"
        );
        assert!(
            !c.contains("job_name: linnet") && !c.contains("rule_files"),
            "{c}"
        );
        assert!(!c.contains("alerting"), "{c}");
        assert!(config(&["10.1.1.1:9901"], &none, Duration::from_secs(1)).is_err());
        assert!(config(&["envoy:9901"], &none, Duration::from_secs(1)).is_err());
        assert!(config::<&str>(&[], &none, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_config_scrapes_the_sidecar_and_loads_the_rule_files() {
        let extras = Extras {
            sidecar: Some(SocketAddr::from(([127, 0, 0, 1], 7070))),
            rule_files: vec![PathBuf::from(
                "/repo/monitoring/prometheus/linnet-rules.yml",
            )],
            alertmanager: None,
        };
        let c = config(&["127.0.0.1:9901"], &extras, Duration::from_secs(1)).unwrap();
        assert!(
            c.contains("job_name: linnet\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['127.0.0.1:7070']"),
            "{c}"
        );
        assert!(
            c.contains("rule_files:\n  - \"/repo/monitoring/prometheus/linnet-rules.yml\"\n"),
            "{c}"
        );
        let remote = Extras {
            sidecar: Some(SocketAddr::from(([10, 1, 1, 1], 7070))),
            ..Extras::default()
        };
        assert!(config(&["127.0.0.1:9901"], &remote, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn the_config_sends_alerts_to_a_loopback_alertmanager() {
        let extras = Extras {
            alertmanager: Some(SocketAddr::from(([127, 0, 0, 1], 9093))),
            ..Extras::default()
        };
        let c = config(&["127.0.0.1:9901"], &extras, Duration::from_millis(500)).unwrap();
        // Rules are evaluated as often as Envoy is scraped, so an alert fires within a scrape.
        assert!(c.contains("evaluation_interval: 500ms"), "{c}");
        assert!(
            c.ends_with("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:9093']\n"),
            "{c}"
        );
        let remote = Extras {
            alertmanager: Some(SocketAddr::from(([10, 1, 1, 1], 9093))),
            ..Extras::default()
        };
        assert!(config(&["127.0.0.1:9901"], &remote, Duration::from_secs(1)).is_err());
    }
}
