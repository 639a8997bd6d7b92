//! Debian's Chromium, headless, driven by playwright-core (`e2e/browser/driver.mjs`, installed
//! by `make setup`) through a line protocol: one JSON command per line in, one answer per line
//! out. The tests that open Linnet's pages (the dashboard at `/ui`, the evidence reports) use
//! it to load, wait, click, type, read and take screenshots, and to read the page's console
//! errors. The browser is closed on drop.

use crate::{repo_root, Error};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// How long a `wait` looks for what it waits for unless told otherwise.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

// === impl Browser ===

impl Browser {
    /// Starts Chromium with one empty page.
    pub fn start() -> Result<Self, Error> {
        let dir = repo_root().join("e2e/browser");
        if !dir.join("node_modules/playwright-core").is_dir() {
            return Err(Error::new(
                "no playwright-core under e2e/browser/node_modules: run 'make setup'",
            ));
        }
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(Error::io("start node e2e/browser/driver.mjs"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(Error::new("the browser driver's pipes were not opened"));
        };
        let stdout = BufReader::new(stdout);
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one command and reads its answer: the value, or the driver's error.
    fn call(&mut self, cmd: Value) -> Result<Value, Error> {
        let line = format!("{cmd}\n");
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(Error::io("write to the browser driver"))?;
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .map_err(Error::io("read from the browser driver"))?;
        if n == 0 {
            return Err(Error::new(format!(
                "the browser driver exited during {cmd}"
            )));
        }
        let answer: Value = serde_json::from_str(&answer)
            .map_err(|e| Error::new(format!("browser driver answered {answer:?}: {e}")))?;
        if answer["ok"] == true {
            Ok(answer["value"].clone())
        } else {
            Err(Error::new(format!("{}: {}", cmd["op"], answer["error"])))
        }
    }

    /// Loads `url` and waits for its load event.
    pub fn goto(&mut self, url: &str) -> Result<(), Error> {
        self.call(json!({"op": "goto", "url": url})).map(drop)
    }

    /// Waits up to `timeout` for an element matching the CSS `selector` to be visible, with
    /// `text` in its text when given; answers its text.
    pub fn wait_for(
        &mut self,
        selector: &str,
        text: Option<&str>,
        timeout: Duration,
    ) -> Result<String, Error> {
        let v = self.call(json!({
            "op": "wait", "selector": selector, "text": text,
            "timeout_ms": timeout.as_millis() as u64,
        }))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// [`wait_for`](Self::wait_for) with the default [`WAIT`].
    pub fn wait(&mut self, selector: &str, text: &str) -> Result<String, Error> {
        self.wait_for(selector, Some(text), WAIT)
    }

    /// The text of the first element matching `selector`.
    pub fn text(&mut self, selector: &str) -> Result<String, Error> {
        let v = self.call(json!({"op": "text", "selector": selector}))?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    pub fn click(&mut self, selector: &str) -> Result<(), Error> {
        self.call(json!({"op": "click", "selector": selector}))
            .map(drop)
    }

    pub fn fill(&mut self, selector: &str, value: &str) -> Result<(), Error> {
        self.call(json!({"op": "fill", "selector": selector, "value": value}))
            .map(drop)
    }

    /// The JSON value of a JavaScript expression evaluated in the page (a promise is awaited).
    pub fn eval(&mut self, js: &str) -> Result<Value, Error> {
        self.call(json!({"op": "eval", "js": js}))
    }

    /// A full-page PNG at `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), Error> {
        self.call(json!({"op": "screenshot", "path": path}))
            .map(drop)
    }

    /// Every console error and uncaught exception of the page so far.
    pub fn errors(&mut self) -> Result<Vec<String>, Error> {
        let v = self.call(json!({"op": "errors"}))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        let _ = self.stdin.flush();
        for _ in 0..20 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
