//! A harness for testing Linnet's filter in a real Envoy: Envoy started from the shipped
//! configs on free ports, in-process upstreams that record what they receive, and a small
//! HTTP/1.1 client that can send any header bytes. Everything stays on 127.0.0.1.
#![forbid(unsafe_code)]

pub mod alertmanager;
pub mod browser;
pub mod daemon;
pub mod envoy;
pub mod http;
pub mod prometheus;
pub mod sidecar;
pub mod traffic;
pub mod upstream;

use envoy::{Envoy, EnvoyConfig};
use http::{Client, Request, Response};
use std::fmt;
use std::path::{Path, PathBuf};
use upstream::Upstream;

/// A fresh directory for one test under the system temp dir, removed on drop unless the test
/// failed: then it stays, with the logs of whatever ran in it.
pub struct TestDir(PathBuf);

impl TestDir {
    /// `<tmp>/linnet-e2e-<suite>-<pid>-<name>`, emptied first.
    pub fn new(suite: &str, name: &str) -> Result<TestDir, Error> {
        let dir =
            std::env::temp_dir().join(format!("linnet-e2e-{suite}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(Error::io("create the test directory"))?;
        Ok(TestDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the test's logs are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A harness error: a message meant to be read by whoever runs the tests.
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
        move |e| Error(format!("{what}: {e}"))
    }
}

// Debug prints the message as is, so `unwrap()` in a test shows a readable log tail.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub use linnet_testkit::{repo_root, Wasm};

/// The Envoy binary: `$LINNET_ENVOY`, else the project's `.venv/bin/envoy`.
pub fn envoy_bin() -> Result<PathBuf, Error> {
    let path = match std::env::var_os("LINNET_ENVOY") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv/bin/envoy"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::new(format!(
            "no Envoy at {}: run `make setup` first",
            path.display()
        )))
    }
}

/// A built `.wasm`: the file to load, or why there is none fit to test.
pub fn wasm(which: Wasm) -> Result<PathBuf, Error> {
    which.path().map_err(Error::new)
}

/// Waits until the filter has handed what it counted to Envoy: it does so on its tick (every
/// 200 ms without a sidecar, 50 ms with one), so two ticks are enough.
pub fn counts_settle() {
    std::thread::sleep(std::time::Duration::from_millis(450));
}

/// How often [`poll`] asks.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Calls `f` every 50 ms until it returns something, for at most `timeout`; past it, an error
/// that says what was awaited, followed by `story()`: what to read to see why (state, logs).
pub fn poll<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
    story: impl Fn() -> String,
) -> Result<T, Error> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::new(format!(
                "{what}: not after {timeout:?}\n{}",
                story()
            )));
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr to `out`) until it exits, for at most
/// `deadline`: past it the process is killed and the error carries what it printed so far.
/// Returns its exit status and everything it printed.
pub fn run_bounded(
    cmd: &mut std::process::Command,
    out: &Path,
    deadline: std::time::Duration,
) -> Result<(std::process::ExitStatus, String), Error> {
    let file = std::fs::File::create(out).map_err(Error::io("create the output file"))?;
    let err = file.try_clone().map_err(Error::io("output file"))?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(Error::io("spawn"))?;
    let printed = || std::fs::read_to_string(out).unwrap_or_default();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(Error::io("wait"))? {
            return Ok((status, printed()));
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(format!(
                "{:?} ran past {deadline:?}:\n{}",
                cmd.get_program(),
                printed()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Which upstream answered a request, from its `x-served-by` header.
pub fn served_by(resp: &Response) -> Option<String> {
    resp.header_str("x-served-by")
}

/// The demo topology under test: Envoy from `envoy/demo.yaml` with the test's plugin
/// configuration, a stable upstream, and a canary upstream that also receives the shadow
/// cluster's copies (as in the demo, the shadow cluster is the canary's address).
pub struct Stack {
    pub envoy: Envoy,
    pub stable: Upstream,
    pub canary: Upstream,
    pub config: EnvoyConfig,
    client: Client,
}

impl Stack {
    /// Starts the upstreams and Envoy with this plugin configuration.
    pub fn start(plugin_config: &serde_json::Value) -> Result<Self, Error> {
        Self::start_with(Wasm::Filter, plugin_config)
    }

    /// [`Stack::start`] with another build of the filter (`Wasm::Responses`).
    pub fn start_with(build: Wasm, plugin_config: &serde_json::Value) -> Result<Self, Error> {
        wasm(build)?;
        let stable = Upstream::start("stable")?;
        let canary = Upstream::start("canary")?;
        let mut config = EnvoyConfig::demo(stable.port(), canary.port())?;
        config.filter_build(build)?;
        config.plugin_config(&plugin_config.to_string());
        let envoy = Envoy::start(&config)?;
        let client = envoy.client();
        Ok(Self {
            envoy,
            stable,
            canary,
            config,
            client,
        })
    }

    /// Stops Envoy and starts a new one, with a new plugin configuration if given; the
    /// upstreams (and what they recorded) stay.
    pub fn restart(&mut self, plugin_config: Option<&serde_json::Value>) -> Result<(), Error> {
        if let Some(pc) = plugin_config {
            self.config.plugin_config(&pc.to_string());
        }
        // The old Envoy is killed as it is replaced.
        self.envoy = Envoy::start(&self.config)?;
        self.client = self.envoy.client();
        Ok(())
    }

    /// Sends a request on the stack's keep-alive connection.
    pub fn send(&mut self, req: &Request) -> Result<Response, Error> {
        self.client.send(req)
    }

    /// A GET for `checkout.local` with these headers; returns the upstream that answered.
    pub fn variant_of(&mut self, headers: &[(&str, &[u8])]) -> Result<String, Error> {
        let mut req = Request::get("/").host("checkout.local");
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let resp = self.send(&req)?;
        if resp.status != 200 {
            return Err(Error::new(format!(
                "status {} for {headers:?}: {}",
                resp.status,
                resp.body_str()
            )));
        }
        served_by(&resp).ok_or_else(|| Error::new("response without x-served-by"))
    }

    /// The variant a user (by `x-user-id`) is routed to.
    pub fn user(&mut self, id: &str) -> Result<String, Error> {
        self.variant_of(&[("x-user-id", id.as_bytes())])
    }
}
