//! Gates: a pipeline or a test suite decides whether a rollout may start (`pre_rollout`),
//! enter its next step (`pre_step`) or be promoted (`confirm_promotion`).
//!
//! A gate is asked only when the timer's move is otherwise due (the pause elapsed and analysis
//! passed). A 2xx lets the move happen; anything else, or no answer in the gate's timeout,
//! holds the rollout with the answer as the reason, and `gate_failures` answers like that in a
//! row roll it back. An operator's `promote` is an explicit decision and does not ask the
//! gates; nothing about a gate switches the guardrails off.
//!
//! A gate asks a webhook (`url`), or sends a bounded load burst to the canary (`load`, see
//! [`crate::load`]) and passes when the burst meets its thresholds.

use crate::clock::Millis;
use crate::controller::{Controller, GateTarget};
use crate::load::{Burst, Context, LoadSpec, Outcome};
use crate::machine::State;
use crate::spec::{parse_duration, RolloutSpec};
use linnet_core::config::validate_name;
use linnet_core::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a webhook gate may take to answer, unless the spec says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a held rollout waits before asking its gates again, unless the spec says.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(10);
/// Failed answers in a row that roll a held rollout back, unless the spec says.
pub const DEFAULT_FAILURES: u32 = 10;
/// How much of a gate's answer the audit keeps.
const ANSWER_BYTES: usize = 300;

/// A gate as the user writes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    pub name: String,
    /// `pre_rollout`, `pre_step` or `confirm_promotion`.
    pub on: GateOn,
    /// A webhook: `POST` of the rollout's state; 2xx lets the rollout go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A load burst: requests from a few users to the canary; passes when the burst meets
    /// its success rate and latency thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSpec>,
    /// How long the webhook may take (default 10s, at most 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// How long a held rollout waits before asking again (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// When a gate is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateOn {
    /// Before step 0 is entered.
    PreRollout,
    /// Before each later step is entered by the timer.
    PreStep,
    /// Before the last step's end promotes the rollout.
    ConfirmPromotion,
}

/// A validated gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub name: String,
    pub on: GateOn,
    pub call: Call,
    pub retry: Duration,
}

/// What asking a gate does.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Webhook { url: String, timeout: Duration },
    Load(Burst),
}

/// The move a gate lets happen; a passed gate is remembered for that move only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gated {
    /// Entering step 0.
    Start,
    /// Entering this step.
    Step(usize),
    Promotion,
}

/// What a webhook gate is sent.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GateRequest {
    pub gate: String,
    pub on: GateOn,
    pub rollout: String,
    pub rollout_id: i64,
    pub state: State,
    pub step: usize,
    pub weight: f64,
    /// The step the rollout would enter (absent for a promotion).
    pub next_step: Option<usize>,
    pub at_ms: Millis,
}

/// A gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Answer {
    pub gate: String,
    pub passed: bool,
    /// The status and the start of the body, or why there was no answer; for a load burst,
    /// its numbers in words.
    pub answer: String,
    /// What a load burst saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Outcome>,
}

// === impl GateOn ===

impl GateOn {
    pub const fn as_str(self) -> &'static str {
        match self {
            GateOn::PreRollout => "pre_rollout",
            GateOn::PreStep => "pre_step",
            GateOn::ConfirmPromotion => "confirm_promotion",
        }
    }
}

impl std::fmt::Display for GateOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Gated ===

impl Gated {
    pub const fn on(self) -> GateOn {
        match self {
            Gated::Start => GateOn::PreRollout,
            Gated::Step(_) => GateOn::PreStep,
            Gated::Promotion => GateOn::ConfirmPromotion,
        }
    }

    /// `step 2`, `step 0`, `the promotion`: what the gate holds.
    pub fn words(self) -> String {
        match self {
            Gated::Start => "step 0".into(),
            Gated::Step(i) => format!("step {i}"),
            Gated::Promotion => "the promotion".into(),
        }
    }
}

// === impl GateSpec ===

impl GateSpec {
    /// `at` is the gate's path (`gates[1]`); a load burst takes its override, key source
    /// and host from `rollout`.
    pub fn validate(&self, at: &str, rollout: &RolloutSpec) -> Result<Gate, ConfigError> {
        validate_name(&format!("{at}.name"), &self.name)?;
        let call = match (&self.url, &self.load) {
            (Some(url), None) => {
                webhook_url(&format!("{at}.url"), url)?;
                let timeout = bounded(
                    &format!("{at}.timeout"),
                    self.timeout.as_deref(),
                    DEFAULT_TIMEOUT,
                    MAX_TIMEOUT,
                )?;
                Call::Webhook {
                    url: url.clone(),
                    timeout,
                }
            }
            (None, Some(load)) => Call::Load(self.burst(at, load, rollout)?),
            (None, None) => {
                return Err(ConfigError::new(
                    format!("{at}.url"),
                    "a gate needs a `url` to ask, or a `load` burst to send",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    format!("{at}.load"),
                    "give a `url` to ask or a `load` burst to send, not both",
                ))
            }
        };
        let retry = bounded(
            &format!("{at}.retry"),
            self.retry.as_deref(),
            DEFAULT_RETRY,
            MAX_TIMEOUT,
        )?;
        Ok(Gate {
            name: self.name.clone(),
            on: self.on,
            call,
            retry,
        })
    }

    fn burst(
        &self,
        at: &str,
        load: &LoadSpec,
        rollout: &RolloutSpec,
    ) -> Result<Burst, ConfigError> {
        if self.timeout.is_some() {
            return Err(ConfigError::new(
                format!("{at}.timeout"),
                "is the webhook's; a burst's requests take theirs from `load.timeout`",
            ));
        }
        let field = |f: &str| format!("{at}.load.{f}");
        let context = Context::for_rollout(rollout, load.via.unwrap_or_default(), &field)?;
        let mut burst = load.validate(&field, context)?;
        burst
            .thresholds
            .min_success
            .get_or_insert(crate::load::DEFAULT_MIN_SUCCESS);
        Ok(burst)
    }
}

/// Validates a list of gates of `rollout`: names unique.
pub fn validate_all(gates: &[GateSpec], rollout: &RolloutSpec) -> Result<Vec<Gate>, ConfigError> {
    let mut out: Vec<Gate> = Vec::with_capacity(gates.len());
    for (i, g) in gates.iter().enumerate() {
        let at = format!("gates[{i}]");
        let gate = g.validate(&at, rollout)?;
        if out.iter().any(|o| o.name == gate.name) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!(
                    "{:?} names another gate too; give each its own name",
                    gate.name
                ),
            ));
        }
        out.push(gate);
    }
    Ok(out)
}

/// An `http://host:port/path` URL; `Err` names the field.
pub fn webhook_url(field: &str, url: &str) -> Result<(), ConfigError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ConfigError::new(field, format!("{url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(ConfigError::new(
            field,
            format!(
                "{url:?}: use http://host:port/path (TLS belongs to a proxy or relay in front)"
            ),
        ));
    }
    Ok(())
}

/// A duration in `(0, max]`, `default` when absent; `Err` names the field.
pub fn bounded(
    field: &str,
    value: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let d = parse_duration(v).map_err(|m| ConfigError::new(field, m))?;
    if d.is_zero() || d > max {
        return Err(ConfigError::new(
            field,
            format!(
                "{v:?} must be longer than 0 and at most {}",
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

// === impl Gate ===

impl Gate {
    /// Asks the gate; never fails: no answer is an answer that holds.
    pub async fn ask(&self, request: &GateRequest) -> Answer {
        match &self.call {
            Call::Webhook { url, timeout } => self.ask_webhook(url, *timeout, request).await,
            Call::Load(burst) => self.send_burst(burst).await,
        }
    }

    /// Sends the burst; its numbers are the answer, and its thresholds the verdict.
    async fn send_burst(&self, burst: &Burst) -> Answer {
        let (passed, answer, load) = match burst.run().await {
            Ok(o) => (o.passed, o.words(&burst.thresholds), Some(o)),
            Err(e) => (false, e, None),
        };
        Answer {
            gate: self.name.clone(),
            passed,
            answer,
            load,
        }
    }

    async fn ask_webhook(&self, url: &str, timeout: Duration, request: &GateRequest) -> Answer {
        let answer = |passed: bool, answer: String| Answer {
            gate: self.name.clone(),
            passed,
            answer,
            load: None,
        };
        let body = match serde_json::to_vec(request) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => return answer(false, format!("could not write the request: {e}")),
        };
        let (client, path) = match crate::outbound::client(url) {
            Ok((c, path)) => (c.with_timeout(timeout), path),
            Err(e) => return answer(false, e),
        };
        match client
            .send(hyper::Method::POST, path, Some((body, "application/json")))
            .await
        {
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body);
                let text = text.trim();
                let mut said = format!("{}", status.as_u16());
                if let Some(reason) = status.canonical_reason() {
                    said.push(' ');
                    said.push_str(reason);
                }
                if !text.is_empty() {
                    said.push_str(": ");
                    said.push_str(&clip(text, ANSWER_BYTES));
                }
                answer(status.is_success(), said)
            }
            Err(e) => answer(false, e),
        }
    }
}

/// At most `max` bytes of `s`, cut at a character boundary, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// === the runner ===

/// How often the runner looks for moves its gates hold.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Asks the gates of every held move until `shutdown`: each move's gates in order, a move
/// at a time per rollout, asked again `retry` after an answer that held. A slow gate delays
/// only its own rollout; the controller is never waited on by a call.
pub fn spawn_runner(
    ctl: Controller,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut asking: JoinSet<((i64, Gated), Millis)> = JoinSet::new();
        let mut busy: HashSet<(i64, Gated)> = HashSet::new();
        let mut next_try: HashMap<(i64, Gated), Millis> = HashMap::new();
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = look.tick() => {}
                Some(done) = asking.join_next() => {
                    if let Ok((key, at)) = done {
                        busy.remove(&key);
                        next_try.insert(key, at);
                    }
                    continue;
                }
                _ = crate::signal::stopped(&mut shutdown) => break,
            }
            let targets = match ctl.gate_targets().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list the rollouts gates hold");
                    continue;
                }
            };
            let now = ctl.now_ms();
            let due: HashSet<(i64, Gated)> = targets.iter().map(|t| (t.id, t.to)).collect();
            // A move that is no longer held needs no retry time.
            next_try.retain(|k, _| due.contains(k));
            for target in targets {
                let key = (target.id, target.to);
                if busy.contains(&key) || next_try.get(&key).is_some_and(|at| *at > now) {
                    continue;
                }
                busy.insert(key);
                let ctl = ctl.clone();
                asking.spawn(async move {
                    let (answers, retry) = ask_all(&target).await;
                    let name = target.name.clone();
                    if let Err(e) = ctl.record_gate(target, answers).await {
                        tracing::warn!(rollout = %name, error = %e, "could not record a gate's answer");
                    }
                    (key, ctl.now_ms().saturating_add(retry))
                });
            }
        }
        asking.abort_all();
    })
}

/// The answers of a move's gates, in order, up to the first that holds; and how long to wait
/// before asking again if one held.
async fn ask_all(target: &GateTarget) -> (Vec<Answer>, Millis) {
    let mut answers = Vec::new();
    for gate in &target.gates {
        let request = GateRequest {
            gate: gate.name.clone(),
            ..target.request.clone()
        };
        let answer = gate.ask(&request).await;
        let held = !answer.passed;
        answers.push(answer);
        if held {
            return (answers, crate::clock::millis(gate.retry));
        }
    }
    (answers, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<Vec<Gate>, ConfigError> {
        let specs: Vec<GateSpec> = serde_saphyr::from_str(yaml).map_err(|e| ConfigError {
            field: "yaml".into(),
            message: e.to_string(),
        })?;
        let (rollout, _) = RolloutSpec::parse(
            b"name: r\noverride: {}\nsteps: [{weight: 1}]",
            crate::spec::Format::Yaml,
        )?;
        validate_all(&specs, &rollout)
    }

    #[test]
    fn a_gate_has_defaults() {
        let g = spec("- {name: ci, on: confirm_promotion, url: 'http://127.0.0.1:9/gate?x=1'}")
            .unwrap();
        assert_eq!(
            g,
            [Gate {
                name: "ci".into(),
                on: GateOn::ConfirmPromotion,
                call: Call::Webhook {
                    url: "http://127.0.0.1:9/gate?x=1".into(),
                    timeout: DEFAULT_TIMEOUT
                },
                retry: DEFAULT_RETRY,
            }]
        );
    }

    #[test]
    fn bad_gates_are_refused_by_field() {
        for (yaml, field, words) in [
            ("- {name: ci, on: pre_step}", "gates[0].url", "needs a `url`"),
            ("- {name: ci, on: pre_step, url: 'https://ci/x'}", "gates[0].url", "TLS"),
            ("- {name: ci, on: pre_step, url: 'not a url'}", "gates[0].url", "not a URL"),
            ("- {name: 'a b', on: pre_step, url: 'http://h/'}", "gates[0].name", ""),
            (
                "- {name: ci, on: pre_step, url: 'http://h/', timeout: 0s}",
                "gates[0].timeout",
                "longer than 0",
            ),
            (
                "- {name: ci, on: pre_step, url: 'http://h/', retry: 1h}",
                "gates[0].retry",
                "at most 5m",
            ),
            (
                "- {name: ci, on: pre_step, url: 'http://h/', timeout: soon}",
                "gates[0].timeout",
                "not a duration",
            ),
            (
                "- {name: ci, on: pre_step, url: 'http://h/', load: {target: 'http://127.0.0.1/'}}",
                "gates[0].load",
                "not both",
            ),
            (
                "- {name: ci, on: pre_step, timeout: 1s, load: {target: 'http://127.0.0.1/'}}",
                "gates[0].timeout",
                "load.timeout",
            ),
            (
                "- {name: ci, on: pre_step, load: {target: 'http://127.0.0.1/', requests: 0}}",
                "gates[0].load.requests",
                "1..=10000",
            ),
            (
                "- {name: ci, on: pre_step, url: 'http://h/'}\n- {name: ci, on: pre_rollout, url: 'http://h/'}",
                "gates[1].name",
                "names another gate",
            ),
        ] {
            let e = spec(yaml).unwrap_err();
            assert_eq!(e.field, field, "{yaml}: {e}");
            assert!(e.message.contains(words), "{yaml}: {e}");
        }
    }

    #[test]
    fn answers_are_clipped_at_a_character() {
        assert_eq!(clip("héllo", 2), "h…");
        assert_eq!(clip("hi", 2), "hi");
    }
}
