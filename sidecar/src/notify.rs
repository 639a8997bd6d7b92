//! Notifications: chat and pipelines hear about every step, pause and rollback.
//!
//! The audit log is the source. An outbox reads events past a stored cursor and, in one
//! transaction, stores a delivery per (event, receiver) and moves the cursor: a delivery is
//! in SQLite before it is sent, and an event is never half turned into deliveries. A sender
//! posts each receiver's oldest waiting delivery (so a receiver sees them in order and one that
//! is down holds back only itself), signed with HMAC-SHA256 of the body, with an
//! `Idempotency-Key` that stays the same across retries and restarts: at least once, and a
//! receiver that keeps the keys it saw gets each notification once. Failures back off
//! (doubling, capped at five minutes) and, after `max_attempts`, are kept as `failed`.

use crate::clock::Millis;
use crate::controller::Controller;
use crate::event::{Event, Payload};
use crate::gate::{clip, webhook_url};
use crate::machine::{Move, State};
use crate::spec::{parse_duration, REDACTED};
use crate::store::{Store, StoreError};
use hmac::{Hmac, Mac};
use linnet_core::config::validate_name;
use linnet_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use std::collections::HashSet;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The header that carries `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-linnet-signature";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
pub const TOPIC_HEADER: &str = "x-linnet-event";
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_ATTEMPTS: u32 = 20;
/// Events the outbox reads per transaction.
const BATCH: usize = 200;
/// Deliveries in flight at once (one per receiver).
const IN_FLIGHT: usize = 16;
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Where notifications go, in a rollout's `notify:` or, for every rollout, in `/v1/receivers`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSpec {
    pub name: String,
    /// `http://host:port/path`; TLS belongs to a relay in front.
    pub url: String,
    /// `json` (the default) or `slack` (incoming-webhook `{"text": …}`).
    #[serde(default)]
    pub format: Format,
    /// Signs each body: `X-Linnet-Signature: sha256=<hex HMAC-SHA256>`. Reads show it redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A file holding the secret (read when a delivery is stored), instead of `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// The topics it hears; empty or absent: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<Topic>,
    /// The first retry's wait, doubling up to 5m (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// Attempts before a delivery is kept as `failed` (default 20, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// How long one attempt may take (default 10s, at most 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    #[default]
    Json,
    Slack,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Started,
    Step,
    Paused,
    Resumed,
    Promoted,
    Completed,
    RolledBack,
    Aborted,
    TimedOut,
    /// An analysis run found a guardrail failing (it may not act yet).
    AnalysisFailing,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Stored, not yet tried.
    Pending,
    /// Tried and refused or unanswered; tried again at `next_ms`.
    Retrying,
    Delivered,
    /// Given up after `max_attempts`, or could not be signed.
    Failed,
}

/// A delivery about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub event_id: i64,
    pub rollout: Option<String>,
    pub rollout_id: Option<i64>,
    pub receiver: String,
    pub topic: String,
    pub url: String,
    pub body: String,
    pub content_type: String,
    pub signature: Option<String>,
    pub idempotency_key: String,
    pub state: DeliveryState,
    pub max_attempts: u32,
    pub backoff_ms: Millis,
    pub timeout_ms: Millis,
    pub at_ms: Millis,
    pub error: Option<String>,
}

/// A stored delivery, as `GET /v1/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    pub rollout: Option<String>,
    pub rollout_id: Option<i64>,
    /// `name` of a global receiver, `rollout/name` of a rollout's own.
    pub receiver: String,
    pub topic: String,
    pub url: String,
    pub body: String,
    pub content_type: String,
    #[serde(skip)]
    pub signature: Option<String>,
    pub idempotency_key: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(skip)]
    pub backoff_ms: Millis,
    #[serde(skip)]
    pub timeout_ms: Millis,
    /// When it is (or was last) due.
    pub next_ms: Millis,
    pub last_error: Option<String>,
    pub created_ms: Millis,
    pub delivered_ms: Option<Millis>,
}

// === impl Format, Topic, DeliveryState ===

impl Format {
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

impl Topic {
    pub const fn as_str(self) -> &'static str {
        match self {
            Topic::Started => "started",
            Topic::Step => "step",
            Topic::Paused => "paused",
            Topic::Resumed => "resumed",
            Topic::Promoted => "promoted",
            Topic::Completed => "completed",
            Topic::RolledBack => "rolled_back",
            Topic::Aborted => "aborted",
            Topic::TimedOut => "timed_out",
            Topic::AnalysisFailing => "analysis_failing",
        }
    }

    /// The topic of an audit event, if it has one.
    fn of(payload: &Payload) -> Option<Topic> {
        match payload {
            Payload::Moved(m, _) => match m {
                Move::Started => Some(Topic::Started),
                Move::Step => Some(Topic::Step),
                Move::Paused => Some(Topic::Paused),
                Move::Resumed => Some(Topic::Resumed),
                Move::Promoted => Some(Topic::Promoted),
                Move::Completed => Some(Topic::Completed),
                Move::RolledBack => Some(Topic::RolledBack),
                Move::Aborted => Some(Topic::Aborted),
                Move::TimedOut => Some(Topic::TimedOut),
                Move::Weight | Move::KillSwitch | Move::Retried => None,
            },
            Payload::Analysis(run) => run
                .checks
                .iter()
                .any(|c| c.verdict == crate::analysis::judge::Verdict::Fail)
                .then_some(Topic::AnalysisFailing),
            _ => None,
        }
    }
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Retrying,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

// === impl ReceiverSpec ===

impl ReceiverSpec {
    /// `at` is the receiver's path (`notify[0]`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_name(&format!("{at}.name"), &self.name)?;
        webhook_url(&format!("{at}.url"), &self.url)?;
        if self.secret.is_some() && self.secret_file.is_some() {
            return Err(ConfigError::new(
                format!("{at}.secret_file"),
                "give `secret` or `secret_file`, not both",
            ));
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new(
                format!("{at}.secret"),
                "must not be empty",
            ));
        }
        if let Some(f) = &self.secret_file {
            read_secret(f).map_err(|m| ConfigError::new(format!("{at}.secret_file"), m))?;
        }
        self.backoff_ms(&format!("{at}.backoff"))?;
        self.timeout_ms(&format!("{at}.timeout"))?;
        if self.max_attempts.is_some_and(|n| n == 0 || n > 100) {
            return Err(ConfigError::new(
                format!("{at}.max_attempts"),
                "must be between 1 and 100",
            ));
        }
        Ok(())
    }

    /// The same, its secret (and its URL's query, where tokens tend to be) shown as
    /// [`REDACTED`].
    pub fn redacted(&self) -> ReceiverSpec {
        ReceiverSpec {
            url: shown_url(&self.url),
            secret: self.secret.as_ref().map(|_| REDACTED.to_owned()),
            ..self.clone()
        }
    }

    fn hears(&self, topic: Topic) -> bool {
        self.on.is_empty() || self.on.contains(&topic)
    }

    fn backoff_ms(&self, field: &str) -> Result<Millis, ConfigError> {
        duration_ms(field, self.backoff.as_deref(), DEFAULT_BACKOFF)
    }

    fn timeout_ms(&self, field: &str) -> Result<Millis, ConfigError> {
        duration_ms(field, self.timeout.as_deref(), DEFAULT_TIMEOUT)
    }

    fn secret(&self) -> Result<Option<String>, String> {
        match (&self.secret, &self.secret_file) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(f)) => read_secret(f).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// Validates a list of receivers (`at` is `notify`): names unique.
pub fn validate_all(at: &str, receivers: &[ReceiverSpec]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, r) in receivers.iter().enumerate() {
        let at = format!("{at}[{i}]");
        r.validate(&at)?;
        if !names.insert(r.name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}.name"),
                format!("{:?} names another receiver too", r.name),
            ));
        }
    }
    Ok(())
}

fn duration_ms(field: &str, v: Option<&str>, default: Duration) -> Result<Millis, ConfigError> {
    let d = match v {
        None => default,
        Some(v) => parse_duration(v).map_err(|m| ConfigError::new(field, m))?,
    };
    if d.is_zero() || d > MAX_BACKOFF {
        return Err(ConfigError::new(
            field,
            "must be longer than 0 and at most 5m",
        ));
    }
    Ok(Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX))
}

fn read_secret(path: &str) -> Result<String, String> {
    let s = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("{path}: the file is empty"));
    }
    Ok(s.to_owned())
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this arm is never taken.
        return String::new();
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + bytes.len() * 2);
    out.push_str("sha256=");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

// === the outbox ===

/// What one event says, in the words a notification uses.
#[derive(Debug, Clone, Serialize)]
struct Notice<'a> {
    topic: &'static str,
    rollout: &'a str,
    rollout_id: i64,
    event_id: i64,
    at_ms: Millis,
    state: Option<State>,
    step: Option<usize>,
    weight: Option<f64>,
    reason: &'a str,
    text: String,
}

fn notice<'a>(event: &'a Event, topic: Topic, rollout: &'a str, id: i64) -> Notice<'a> {
    let (state, step, weight, reason) = match &event.payload {
        Payload::Moved(_, m) => (Some(m.to), Some(m.step), Some(m.weight), m.reason.as_str()),
        Payload::Analysis(a) => (None, Some(a.step), Some(a.weight), a.reason.as_str()),
        _ => (None, None, None, ""),
    };
    let at = match (step, weight) {
        (Some(s), Some(w)) => format!(" at step {s} ({w}%)"),
        _ => String::new(),
    };
    let what = match topic {
        Topic::Started => "started",
        Topic::Step => "entered a step",
        Topic::Paused => "paused",
        Topic::Resumed => "resumed",
        Topic::Promoted => "was promoted",
        Topic::Completed => "completed",
        Topic::RolledBack => "was rolled back",
        Topic::Aborted => "was aborted",
        Topic::TimedOut => "timed out",
        Topic::AnalysisFailing => "is failing analysis",
    };
    Notice {
        topic: topic.as_str(),
        rollout,
        rollout_id: id,
        event_id: event.id,
        at_ms: event.at_ms,
        state,
        step,
        weight,
        reason,
        text: format!("linnet: rollout {rollout} {what}{at}: {reason}"),
    }
}

/// Turns the events past the cursor into stored deliveries; returns how many it stored.
pub fn enqueue(store: &mut Store, now: Millis) -> Result<usize, StoreError> {
    let mut stored = 0;
    loop {
        let after = store.notify_cursor()?;
        let events = store.events(after, None, BATCH)?;
        let Some(last) = events.last().map(|e| e.id) else {
            return Ok(stored);
        };
        let global = store.receivers()?;
        let mut out = Vec::new();
        for event in &events {
            let (Some(topic), Some(name), Some(id)) = (
                Topic::of(&event.payload),
                event.rollout.as_deref(),
                event.rollout_id,
            ) else {
                continue;
            };
            let own: Vec<ReceiverSpec> = store
                .release(id)?
                .map(|r| r.spec.notify)
                .unwrap_or_default();
            let n = notice(event, topic, name, id);
            let everyone = global.iter().map(|r| (r.name.clone(), r));
            let its = own.iter().map(|r| (format!("{name}/{}", r.name), r));
            for (label, r) in everyone.chain(its) {
                if r.hears(topic) {
                    out.push(delivery(&n, &label, r, now));
                }
            }
        }
        stored += out.len();
        store.enqueue(last, &out)?;
        if events.len() < BATCH {
            return Ok(stored);
        }
    }
}

fn delivery(n: &Notice<'_>, label: &str, r: &ReceiverSpec, now: Millis) -> NewDelivery {
    let key = format!("linnet-{}-{label}", n.event_id);
    let body = match r.format {
        Format::Json => {
            let mut v = serde_json::to_value(n).unwrap_or_else(|_| json!({}));
            v["receiver"] = json!(label);
            v["idempotency_key"] = json!(key);
            v.to_string()
        }
        Format::Slack => json!({ "text": n.text }).to_string(),
    };
    let (signature, error) = match r.secret() {
        Ok(s) => (s.map(|s| sign(&s, body.as_bytes())), None),
        Err(e) => (None, Some(format!("cannot sign: secret_file {e}"))),
    };
    NewDelivery {
        event_id: n.event_id,
        rollout: Some(n.rollout.to_owned()),
        rollout_id: Some(n.rollout_id),
        receiver: label.to_owned(),
        topic: n.topic.to_owned(),
        url: r.url.clone(),
        body,
        content_type: "application/json".into(),
        signature,
        idempotency_key: key,
        state: if error.is_some() {
            DeliveryState::Failed
        } else {
            DeliveryState::Pending
        },
        max_attempts: r.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
        backoff_ms: r.backoff_ms("").unwrap_or(1_000),
        timeout_ms: r.timeout_ms("").unwrap_or(10_000),
        at_ms: now,
        error,
    }
}

/// One attempt: `Ok` on a 2xx.
pub async fn attempt(d: &Delivery) -> Result<(), String> {
    let timeout = Duration::from_millis(u64::try_from(d.timeout_ms).unwrap_or(10_000));
    let (client, path) = crate::outbound::client(&d.url)?;
    let mut client = client
        .with_timeout(timeout)
        .with_header(IDEMPOTENCY_HEADER, &d.idempotency_key)
        .with_header(TOPIC_HEADER, &d.topic);
    if let Some(sig) = &d.signature {
        client = client.with_header(SIGNATURE_HEADER, sig);
    }
    let body = bytes::Bytes::from(d.body.clone());
    let (status, answer) = client
        .send(hyper::Method::POST, path, Some((body, &d.content_type)))
        .await?;
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&answer);
    Err(format!("{status}: {}", clip(text.trim(), 200)))
}

/// After a failed attempt (`attempts` made, this one included): when to try again, or
/// `None` to give up.
pub fn retry_at(d: &Delivery, attempts: u32, now: Millis) -> Option<Millis> {
    if attempts >= d.max_attempts {
        return None;
    }
    let shift = attempts.saturating_sub(1).min(20);
    let wait = d
        .backoff_ms
        .saturating_mul(1 << shift)
        .min(Millis::try_from(MAX_BACKOFF.as_millis()).unwrap_or(300_000));
    Some(now.saturating_add(wait))
}

/// Stores and sends notifications until `shutdown`. A delivery cut off by a stop or a crash
/// is sent again after the start, under the same idempotency key.
pub fn spawn(ctl: Controller, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sending: JoinSet<(Delivery, Result<(), String>)> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = look.tick() => {}
                Some(done) = sending.join_next() => {
                    if let Ok((d, result)) = done {
                        busy.remove(&d.receiver);
                        if let Err(e) = ctl.delivery_attempted(d, result).await {
                            tracing::warn!(error = %e, "could not record a notification attempt");
                        }
                    }
                    continue;
                }
                _ = crate::signal::stopped(&mut shutdown) => break,
            }
            let due = match ctl.outbox(IN_FLIGHT).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "the notification outbox failed");
                    continue;
                }
            };
            for d in due {
                if sending.len() >= IN_FLIGHT || !busy.insert(d.receiver.clone()) {
                    continue;
                }
                sending.spawn(async move {
                    let result = attempt(&d).await;
                    (d, result)
                });
            }
        }
    })
}

/// `url` as reads show it: a query string, where webhook tokens tend to be, is redacted.
pub fn shown_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?{REDACTED}"),
        None => url.to_owned(),
    }
}

/// The global receivers with their secrets redacted, and a rollout spec's too.
pub fn redact_all(receivers: &[ReceiverSpec]) -> Vec<ReceiverSpec> {
    receivers.iter().map(ReceiverSpec::redacted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(json: serde_json::Value) -> ReceiverSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn signatures_are_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_receivers_name_the_field() {
        let ok = serde_json::json!({"name": "chat", "url": "http://127.0.0.1:9/hook"});
        assert!(validate_all("notify", &[receiver(ok.clone())]).is_ok());
        for (patch, field) in [
            (serde_json::json!({"url": "https://x/"}), "notify[0].url"),
            (serde_json::json!({"name": "Bad Name"}), "notify[0].name"),
            (serde_json::json!({"secret": ""}), "notify[0].secret"),
            (
                serde_json::json!({"secret": "a", "secret_file": "/x"}),
                "notify[0].secret_file",
            ),
            (
                serde_json::json!({"secret_file": "/nonexistent/linnet"}),
                "notify[0].secret_file",
            ),
            (serde_json::json!({"backoff": "0s"}), "notify[0].backoff"),
            (serde_json::json!({"timeout": "1h"}), "notify[0].timeout"),
            (
                serde_json::json!({"max_attempts": 0}),
                "notify[0].max_attempts",
            ),
        ] {
            let mut v = ok.clone();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let e = validate_all("notify", &[receiver(v)]).unwrap_err();
            assert_eq!(e.field, field, "{patch}: {e:?}");
        }
        let twice = validate_all("notify", &[receiver(ok.clone()), receiver(ok)]).unwrap_err();
        assert_eq!(twice.field, "notify[1].name");
    }

    #[test]
    fn backoff_doubles_to_its_cap_then_gives_up() {
        let d = Delivery {
            id: 1,
            event_id: 1,
            rollout: None,
            rollout_id: None,
            receiver: "r".into(),
            topic: "started".into(),
            url: "http://127.0.0.1:9/".into(),
            body: String::new(),
            content_type: "application/json".into(),
            signature: None,
            idempotency_key: "k".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            max_attempts: 12,
            backoff_ms: 1_000,
            timeout_ms: 1_000,
            next_ms: 0,
            last_error: None,
            created_ms: 0,
            delivered_ms: None,
        };
        assert_eq!(retry_at(&d, 1, 0), Some(1_000));
        assert_eq!(retry_at(&d, 2, 0), Some(2_000));
        assert_eq!(retry_at(&d, 4, 10), Some(8_010));
        assert_eq!(retry_at(&d, 11, 0), Some(300_000));
        assert_eq!(retry_at(&d, 12, 0), None);
    }

    #[test]
    fn a_redacted_receiver_keeps_that_it_has_a_secret() {
        let r = receiver(
            serde_json::json!({"name": "c", "url": "http://127.0.0.1:1/", "secret": "s3"}),
        );
        assert_eq!(r.redacted().secret.as_deref(), Some(REDACTED));
        assert!(!serde_json::to_string(&r.redacted())
            .unwrap()
            .contains("s3\""));
    }
}
