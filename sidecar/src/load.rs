//! A bounded load burst: a fixed number of `GET`s from a set of users to the canary, at a
//! bounded rate and within a bounded time, judged by success rate and latency quantiles.
//!
//! One implementation, used by the `load` gate (the runbook's "100 queries from 5 users"
//! before a step) and by `linnet load` by hand. A burst goes only to loopback, or to a target
//! `linnet load --allow-target` names: it is a smoke test of a canary beside its Envoy, never
//! a load generator pointed at the world. Every loop is bounded in count and in time.

use crate::client::Client;
use crate::spec::RolloutSpec;
use linnet_core::snapshot::Source;
use linnet_core::{ConfigError, PluginConfig, Variant};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub const DEFAULT_REQUESTS: u32 = 100;
pub const DEFAULT_USERS: u32 = 5;
pub const DEFAULT_RATE: u32 = 50;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The success rate a gate's burst needs when its spec names none, in percent.
pub const DEFAULT_MIN_SUCCESS: f64 = 99.0;
pub const MAX_REQUESTS: u32 = 10_000;
pub const MAX_USERS: u32 = 1_000;
/// Requests per second.
pub const MAX_RATE: u32 = 1_000;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a burst may spend sending (`requests / rate`); its budget adds one `timeout`.
pub const MAX_SPAN: Duration = Duration::from_secs(300);
/// Requests in flight at once: a target slower than `rate` makes the burst wait, not pile up.
const MAX_IN_FLIGHT: usize = 256;
/// How much of an error a result keeps.
const ERROR_BYTES: usize = 200;

/// A burst as a gate's spec writes it (`gates[].load`); `linnet load`'s flags fill the same.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// `http://host:port/path`: Envoy's listener (`via: override`) or the canary itself
    /// (`via: direct`). Loopback only (127.0.0.0/8, ::1, localhost).
    pub target: String,
    /// The Host to send. Default: the rollout's `match.authority` when it names one host
    /// (`via: override`), else the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `override` (default): through Envoy, with the rollout's override header (and its
    /// token), so the filter sends every request to the canary. `direct`: straight to the
    /// canary's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// How many requests (default 100, at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// How many users send them, in turn: keys `user-1`… in the rollout's first stickiness
    /// source (default 5, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u32>,
    /// Requests per second (default 50, at most 1000); `requests / rate` at most 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// How long each request may take (default 5s, at most 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The share of requests that must answer 2xx or 3xx, in percent (a gate's default: 99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_success: Option<f64>,
    /// The most the answers' median latency may be, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p50_ms: Option<f64>,
    /// The most the answers' p90 latency may be, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p90_ms: Option<f64>,
    /// The most the answers' p99 latency may be, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
}

/// How a burst reaches the canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// Through Envoy, choosing the canary with the rollout's override header and token.
    #[default]
    Override,
    /// Straight to the canary's own address.
    Direct,
}

/// What a burst takes from where it runs: its rollout for a gate, flags for `linnet load`.
#[derive(Debug, Default)]
pub struct Context {
    /// Sent with every request: the override and its token, or `--header`s.
    pub headers: Headers,
    /// Where each user's key goes.
    pub user_key: Option<Source>,
    /// The Host sent when the spec names none.
    pub default_host: Option<String>,
    /// Targets besides loopback a burst may go to (`--allow-target host:port`).
    pub allowed: Vec<String>,
    /// The rollout Envoy must pick for the burst's requests, when they go through it.
    pub route: Option<Route>,
}

/// A rollout compiled by the filter's own rules, to check that Envoy would pick it.
#[derive(Debug)]
pub struct Route {
    snapshot: linnet_core::Snapshot,
    rollout: String,
    path_prefix: Option<String>,
}

/// Headers whose values are never shown: one of them may be the override token.
#[derive(Clone, Default, PartialEq)]
pub struct Headers(Vec<(String, String)>);

/// A validated burst: what [`Burst::run`] sends, and what it must see.
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    /// `http://host:port`, and the `/path?query` every request asks for.
    pub server: String,
    pub path: String,
    pub host: Option<String>,
    pub headers: Headers,
    pub user_key: Option<Source>,
    pub requests: u32,
    pub users: u32,
    pub rate: u32,
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

/// What a burst must see to pass; nothing set passes any burst.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// Percent of the requests.
    pub min_success: Option<f64>,
    /// Milliseconds, per quantile of [`QUANTILES`].
    pub max_ms: [Option<f64>; 3],
}

/// The quantiles a burst reports, with the spec field that bounds each.
pub const QUANTILES: [(&str, f64, &str); 3] = [
    ("p50", 0.5, "max_p50_ms"),
    ("p90", 0.9, "max_p90_ms"),
    ("p99", 0.99, "max_p99_ms"),
];

/// What a burst saw: the numbers a gate's answer and `linnet load` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub requests: u32,
    pub users: u32,
    /// Requests sent before the burst's budget ran out.
    pub sent: u32,
    /// Answered 2xx or 3xx.
    pub succeeded: u32,
    /// `succeeded` of `requests`, in percent: a request never sent or never answered failed.
    pub success: f64,
    /// How many answers had each status.
    pub statuses: BTreeMap<u16, u32>,
    /// Requests with no answer (refused, reset, timed out).
    pub unanswered: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Latency quantiles of the answered requests, whatever their status, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The thresholds it missed, in words; empty: it passed.
    pub missed: Vec<String>,
    pub passed: bool,
}

/// Answers and errors as they come back.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u32>,
    latencies_ms: Vec<f64>,
    unanswered: u32,
    first_error: Option<String>,
}

// === impl LoadSpec ===

impl LoadSpec {
    /// `field` names a field where it was written (`gates[0].load.rate`, `--rate`).
    pub fn validate(
        &self,
        field: &dyn Fn(&str) -> String,
        context: Context,
    ) -> Result<Burst, ConfigError> {
        let (server, path) = target(&field("target"), &self.target, &context.allowed)?;
        let host = match &self.host {
            Some(h) => Some(host(&field("host"), h)?),
            None => context.default_host,
        };
        if let Some(route) = &context.route {
            let authority = host
                .clone()
                .unwrap_or_else(|| server.split("://").nth(1).unwrap_or("").to_owned());
            route.check(field, &authority, &path)?;
        }
        let requests = count(
            &field("requests"),
            self.requests,
            DEFAULT_REQUESTS,
            MAX_REQUESTS,
        )?;
        let users = count(&field("users"), self.users, DEFAULT_USERS, MAX_USERS)?;
        if users > requests {
            return Err(ConfigError::new(
                field("users"),
                format!("{users} users for {requests} requests: some would send none"),
            ));
        }
        let rate = count(&field("rate"), self.rate, DEFAULT_RATE, MAX_RATE)?;
        let span = Duration::from_secs_f64(f64::from(requests) / f64::from(rate));
        if span > MAX_SPAN {
            return Err(ConfigError::new(
                field("rate"),
                format!(
                    "{requests} requests at {rate} a second take {}; a burst may take at most {}: raise the rate or send fewer",
                    humantime::format_duration(span),
                    humantime::format_duration(MAX_SPAN)
                ),
            ));
        }
        let timeout = crate::gate::bounded(
            &field("timeout"),
            self.timeout.as_deref(),
            DEFAULT_TIMEOUT,
            MAX_TIMEOUT,
        )?;
        let min_success = self
            .min_success
            .map(|p| crate::spec::percent(&field("min_success"), p).map(|_| p))
            .transpose()?;
        let mut max_ms = [None; 3];
        let given = [self.max_p50_ms, self.max_p90_ms, self.max_p99_ms];
        for ((slot, value), (_, _, name)) in max_ms.iter_mut().zip(given).zip(QUANTILES) {
            if let Some(ms) = value {
                if !(ms.is_finite() && ms > 0.0) {
                    return Err(ConfigError::new(
                        field(name),
                        format!("{ms} is not a latency: give milliseconds above 0"),
                    ));
                }
                *slot = Some(ms);
            }
        }
        Ok(Burst {
            server,
            path,
            host,
            headers: context.headers,
            user_key: context.user_key,
            requests,
            users,
            rate,
            timeout,
            thresholds: Thresholds {
                min_success,
                max_ms,
            },
        })
    }
}

/// A count in `1..=max`, `default` when absent.
fn count(field: &str, value: Option<u32>, default: u32, max: u32) -> Result<u32, ConfigError> {
    match value.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(n),
        n => Err(ConfigError::new(field, format!("{n} is outside 1..={max}"))),
    }
}

/// `http://host:port` and `/path?query` of a target on loopback or in `allowed`.
fn target(field: &str, url: &str, allowed: &[String]) -> Result<(String, String), ConfigError> {
    crate::gate::webhook_url(field, url)?;
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ConfigError::new(field, format!("{url:?} is not a URL: {e}")))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let with_port = format!(
        "{}:{}",
        uri.host().unwrap_or(""),
        uri.port_u16().unwrap_or(80)
    );
    let listed = allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(&with_port) || a.eq_ignore_ascii_case(authority));
    if !crate::outbound::is_loopback(url) && !listed {
        return Err(ConfigError::new(
            field,
            format!("{authority:?} is not loopback (127.0.0.0/8, ::1, localhost): a burst goes only to the canary's Envoy or the canary beside this sidecar"),
        ));
    }
    let (server, path) = crate::outbound::split_url(url);
    Ok((server.to_owned(), path.to_owned()))
}

/// A Host value: a host with an optional port.
fn host(field: &str, h: &str) -> Result<String, ConfigError> {
    let ok = !h.is_empty()
        && h.parse::<hyper::http::uri::Authority>()
            .is_ok_and(|a| a.as_str() == h && !h.contains('@'));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("{h:?} is not a host (host or host:port)"),
        ));
    }
    Ok(h.to_owned())
}

// === impl Route ===

impl Route {
    /// `Err` unless the filter would pick this rollout for the burst's host and path; it
    /// names the path's field (`target`) when the path is outside, else the host's.
    fn check(
        &self,
        field: &dyn Fn(&str) -> String,
        authority: &str,
        path: &str,
    ) -> Result<(), ConfigError> {
        let path = path.split('?').next().unwrap_or("/");
        let picked = self.snapshot.find(authority.as_bytes(), path.as_bytes());
        if picked.is_some_and(|(_, r)| r.name == self.rollout) {
            return Ok(());
        }
        let outside_path = self
            .path_prefix
            .as_deref()
            .is_some_and(|p| !path.starts_with(p));
        let (blamed, fix) = if outside_path {
            ("target", "give a path under its `path_prefix`")
        } else {
            ("host", "name a `host` it matches")
        };
        Err(ConfigError::new(
            field(blamed),
            format!(
                "host {authority:?} and path {path:?} are outside rollout {:?}'s match: Envoy would not route the burst by it, and stable would be judged; {fix}",
                self.rollout
            ),
        ))
    }
}

// === impl Context ===

impl Context {
    /// What a gate's burst takes from its rollout: the override and token (`via: override`),
    /// the key source users send, and the host its match names.
    pub fn for_rollout(
        spec: &RolloutSpec,
        via: Via,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Context, ConfigError> {
        let config = PluginConfig {
            rollouts: vec![spec.rollout_config(100.0, None, false)],
            ..PluginConfig::default()
        };
        let snapshot = config.compile(0)?;
        let Some(rollout) = snapshot.rollout(&spec.name).cloned() else {
            return Err(ConfigError::new(
                field("via"),
                "the rollout did not compile",
            ));
        };
        // Users' keys go where the filter looks first.
        let user_key = rollout.stickiness.into_iter().next();
        if via == Via::Direct {
            return Ok(Context {
                user_key,
                ..Context::default()
            });
        }
        // The override as the filter compiled it: its header names are the ones it reads.
        let Some(o) = rollout.override_ else {
            return Err(ConfigError::new(
                field("via"),
                "`override` sends the rollout's override header, but the rollout has no `override` block: add one, or send `via: direct` to the canary's own address",
            ));
        };
        let mut headers = vec![(o.header, Variant::Canary.as_str().to_owned())];
        if let Some(token) = o.token {
            headers.push((o.token_header, String::from_utf8_lossy(&token).into_owned()));
        }
        // A wildcard match leaves the host to the spec: the route check asks for one.
        let default_host = spec
            .matcher
            .authority
            .as_deref()
            .filter(|a| !a.starts_with('*'))
            .map(str::to_owned);
        Ok(Context {
            headers: Headers::new("override.token", headers)?,
            user_key,
            default_host,
            allowed: Vec::new(),
            route: Some(Route {
                snapshot,
                rollout: spec.name.clone(),
                path_prefix: spec.matcher.path_prefix.clone(),
            }),
        })
    }
}

// === impl Headers ===

impl Headers {
    /// Checks each name and value; `Err` names `field` and never shows a value.
    pub fn new(field: &str, headers: Vec<(String, String)>) -> Result<Headers, ConfigError> {
        for (name, value) in &headers {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::new(
                    field,
                    format!("{name:?} is not a valid HTTP header name"),
                ));
            }
            if hyper::header::HeaderValue::from_str(value).is_err() {
                return Err(ConfigError::new(
                    field,
                    format!("the value of {name} is not a valid header value"),
                ));
            }
        }
        Ok(Headers(headers))
    }

    /// `name:value` or `name: value`, as `--header` takes it.
    pub fn parse(field: &str, lines: &[String]) -> Result<Headers, ConfigError> {
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            let Some((k, v)) = line.split_once(':') else {
                return Err(ConfigError::new(field, "give each header as name:value"));
            };
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        Headers::new(field, out)
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|(k, _)| format!("{k}: {}", crate::spec::REDACTED)),
            )
            .finish()
    }
}

// === impl Burst ===

impl Burst {
    /// The most a burst may take: its requests at its rate, and one timeout for the last.
    pub fn budget(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.requests) / f64::from(self.rate)) + self.timeout
    }

    /// Sends the burst and judges it. `Err`: no request could be made at all.
    pub async fn run(&self) -> Result<Outcome, String> {
        let clients = (1..=self.users)
            .map(|u| self.client_for(u).map(Arc::new))
            .collect::<Result<Vec<_>, String>>()?;
        let path: Arc<str> = Arc::from(self.path.as_str());
        let period = Duration::from_secs_f64(1.0 / f64::from(self.rate));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flying: JoinSet<Result<(u16, f64), String>> = JoinSet::new();
        let mut tally = Tally::default();
        let mut sent: u32 = 0;
        let deadline = Instant::now() + self.budget();
        let sending = async {
            while sent < self.requests {
                ticks.tick().await;
                while flying.len() >= MAX_IN_FLIGHT {
                    if let Some(done) = flying.join_next().await {
                        tally.add(done);
                    }
                }
                // Users take turns, so each sends `requests / users` of them.
                let i = usize::try_from(sent % self.users).unwrap_or(0);
                let Some(client) = clients.get(i).map(Arc::clone) else {
                    break;
                };
                let path = Arc::clone(&path);
                flying.spawn(async move {
                    let start = Instant::now();
                    let (status, _) = client.send(hyper::Method::GET, &path, None).await?;
                    // Microseconds are the finest a loopback answer's time means anything.
                    let ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
                    Ok((status.as_u16(), ms))
                });
                sent += 1;
            }
            while let Some(done) = flying.join_next().await {
                tally.add(done);
            }
        };
        let _ = tokio::time::timeout_at(deadline, sending).await;
        // Whatever is still in flight at the deadline gets no more time: it failed.
        let cut = u32::try_from(flying.len()).unwrap_or(u32::MAX);
        flying.abort_all();
        if cut > 0 {
            tally.unanswered = tally.unanswered.saturating_add(cut);
            tally.first_error.get_or_insert_with(|| {
                format!(
                    "no answer within the burst's {}",
                    humantime::format_duration(self.budget())
                )
            });
        }
        Ok(tally.judge(self, sent))
    }

    /// A user's client: the burst's headers, the Host, and the user's key.
    fn client_for(&self, user: u32) -> Result<Client, String> {
        let mut c = Client::new(&self.server, None)?.with_timeout(self.timeout);
        if !self.headers.0.iter().any(|(k, _)| k == "accept") {
            // What a browser's fetch sends, not the JSON the admin client asks for.
            c = c.with_header("accept", "*/*");
        }
        if let Some(h) = &self.host {
            c = c.with_header("host", h);
        }
        for (k, v) in &self.headers.0 {
            c = c.with_header(k, v);
        }
        let key = format!("user-{user}");
        match &self.user_key {
            Some(Source::Header(h)) => c = c.with_header(h, &key),
            Some(Source::Cookie(name)) => c = c.with_header("cookie", &format!("{name}={key}")),
            None => {}
        }
        Ok(c)
    }
}

// === impl Tally ===

impl Tally {
    fn add(&mut self, done: Result<Result<(u16, f64), String>, tokio::task::JoinError>) {
        match done {
            Ok(Ok((status, ms))) => {
                *self.statuses.entry(status).or_default() += 1;
                self.latencies_ms.push(ms);
            }
            Ok(Err(e)) => self.failed(e),
            Err(e) => self.failed(e.to_string()),
        }
    }

    fn failed(&mut self, error: String) {
        self.unanswered = self.unanswered.saturating_add(1);
        self.first_error
            .get_or_insert_with(|| crate::gate::clip(&error, ERROR_BYTES));
    }

    fn judge(mut self, burst: &Burst, sent: u32) -> Outcome {
        let succeeded: u32 = self
            .statuses
            .iter()
            .filter(|(s, _)| (200..400).contains(*s))
            .map(|(_, n)| *n)
            .sum();
        let success = 100.0 * f64::from(succeeded) / f64::from(burst.requests.max(1));
        self.latencies_ms.sort_by(f64::total_cmp);
        let [p50, p90, p99] = QUANTILES.map(|(_, q, _)| quantile(&self.latencies_ms, q));
        let mut missed = Vec::new();
        if let Some(min) = burst.thresholds.min_success {
            if success < min {
                missed.push(format!("success {success:.1}% < {}%", trim(min)));
            }
        }
        for ((name, _, _), (max, seen)) in QUANTILES
            .iter()
            .zip(burst.thresholds.max_ms.iter().zip([p50, p90, p99]))
        {
            match (max, seen) {
                (Some(max), Some(v)) if v > *max => {
                    missed.push(format!("{name} {} ms > {} ms", trim(v), trim(*max)));
                }
                (Some(_), None) => missed.push(format!("{name}: no answers to measure")),
                _ => {}
            }
        }
        Outcome {
            requests: burst.requests,
            users: burst.users,
            sent,
            succeeded,
            success,
            statuses: self.statuses,
            unanswered: self.unanswered,
            first_error: self.first_error,
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
            passed: missed.is_empty(),
            missed,
        }
    }
}

/// The nearest-rank quantile of sorted values; `None` for none.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // ceil(q·n) as a rank from 1; the cast is of a value already in 1..=n.
    let rank = (q * n as f64).ceil().clamp(1.0, n as f64) as usize;
    sorted.get(rank - 1).copied()
}

fn trim(v: f64) -> String {
    crate::analysis::judge::trim(v)
}

// === impl Outcome ===

impl Outcome {
    /// `100 requests from 5 users: 80.0% succeeded (min 99%), p50 2 ms, p90 3 ms, p99 9 ms:
    /// failed; answers 200 × 80, 500 × 20`: what a gate's answer and `linnet load` say.
    pub fn words(&self, thresholds: &Thresholds) -> String {
        let users = if self.users == 1 { "user" } else { "users" };
        let mut s = format!(
            "{} requests from {} {users}: {:.1}% succeeded",
            self.requests, self.users, self.success
        );
        if let Some(min) = thresholds.min_success {
            s += &format!(" (min {}%)", trim(min));
        }
        let seen = [self.p50_ms, self.p90_ms, self.p99_ms];
        for ((name, _, _), (v, max)) in QUANTILES
            .iter()
            .zip(seen.iter().zip(thresholds.max_ms.iter()))
        {
            if let Some(v) = v {
                s += &format!(", {name} {} ms", trim(*v));
                if let Some(max) = max {
                    s += &format!(" (max {} ms)", trim(*max));
                }
            }
        }
        s += if self.passed { ": passed" } else { ": failed" };
        if !self.statuses.is_empty() {
            let answers: Vec<String> = self
                .statuses
                .iter()
                .map(|(status, n)| format!("{status} × {n}"))
                .collect();
            s += &format!("; answers {}", answers.join(", "));
        }
        let unsent = self.requests.saturating_sub(self.sent);
        if unsent > 0 {
            s += &format!("; {unsent} not sent within the burst's time");
        }
        if self.unanswered > 0 {
            s += &format!("; {} without an answer", self.unanswered);
            if let Some(e) = &self.first_error {
                s += &format!(" (first: {e})");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;

    const ROLLOUT: &str = "name: checkout\nmatch: {authority: shop.example, path_prefix: /api}\nstickiness: [{header: x-user-id}]\noverride: {token: hunter2}\nsteps: [{weight: 10}]\n";

    fn plan(load: &str) -> Result<crate::spec::Plan, ConfigError> {
        let yaml = format!("{ROLLOUT}gates:\n- {{name: smoke, on: pre_step, load: {load}}}\n");
        RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).map(|(_, plan)| plan)
    }

    fn burst(load: &str) -> Burst {
        match plan(load).unwrap().gates.remove(0).call {
            crate::gate::Call::Load(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_burst_through_envoy_carries_the_override_the_host_and_the_defaults() {
        let b = burst("{target: 'http://127.0.0.1:10000/api/health'}");
        assert_eq!(
            (b.server.as_str(), b.path.as_str(), b.host.as_deref()),
            (
                "http://127.0.0.1:10000",
                "/api/health",
                Some("shop.example")
            )
        );
        assert_eq!(
            b.headers,
            Headers(vec![
                ("x-linnet-override".into(), "canary".into()),
                ("x-linnet-override-token".into(), "hunter2".into()),
            ])
        );
        assert_eq!(b.user_key, Some(Source::Header("x-user-id".into())));
        assert_eq!(
            (b.requests, b.users, b.rate, b.timeout),
            (100, 5, 50, DEFAULT_TIMEOUT)
        );
        assert_eq!(b.thresholds.min_success, Some(DEFAULT_MIN_SUCCESS));
        assert_eq!(b.budget(), Duration::from_secs(2) + DEFAULT_TIMEOUT);
        // The token is a secret: a plan's debug output never shows it.
        let shown = format!("{:?}", plan("{target: 'http://127.0.0.1:1/api'}").unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("x-linnet-override-token"), "{shown}");
        // Direct: no override, no default host; the users' keys still go.
        let d = burst("{target: 'http://[::1]:8080/', via: direct, requests: 10, users: 10}");
        assert_eq!((d.headers, d.host), (Headers::default(), None));
        assert_eq!(d.user_key, Some(Source::Header("x-user-id".into())));
    }

    #[test]
    fn bad_bursts_are_refused_by_field() {
        let at = "gates[0].load";
        for (load, field, words) in [
            ("{target: 'http://10.0.0.1/api'}", "target", "not loopback"),
            (
                "{target: 'http://example.com/api'}",
                "target",
                "not loopback",
            ),
            ("{target: 'https://127.0.0.1/api'}", "target", "TLS"),
            (
                "{target: 'http://127.0.0.1/other'}",
                "target",
                "outside rollout",
            ),
            (
                "{target: 'http://127.0.0.1/api', host: other.example}",
                "host",
                "outside rollout",
            ),
            (
                "{target: 'http://127.0.0.1/api', host: 'a b'}",
                "host",
                "not a host",
            ),
            (
                "{target: 'http://127.0.0.1/api', requests: 0}",
                "requests",
                "1..=10000",
            ),
            (
                "{target: 'http://127.0.0.1/api', requests: 10001}",
                "requests",
                "1..=10000",
            ),
            (
                "{target: 'http://127.0.0.1/api', users: 0}",
                "users",
                "1..=1000",
            ),
            (
                "{target: 'http://127.0.0.1/api', requests: 3, users: 4}",
                "users",
                "send none",
            ),
            (
                "{target: 'http://127.0.0.1/api', rate: 1001}",
                "rate",
                "1..=1000",
            ),
            (
                "{target: 'http://127.0.0.1/api', requests: 10000, rate: 10}",
                "rate",
                "at most 5m",
            ),
            (
                "{target: 'http://127.0.0.1/api', timeout: 0s}",
                "timeout",
                "longer than 0",
            ),
            (
                "{target: 'http://127.0.0.1/api', timeout: 1m}",
                "timeout",
                "at most 30s",
            ),
            (
                "{target: 'http://127.0.0.1/api', timeout: soon}",
                "timeout",
                "not a duration",
            ),
            (
                "{target: 'http://127.0.0.1/api', min_success: 101}",
                "min_success",
                "0..=100",
            ),
            (
                "{target: 'http://127.0.0.1/api', max_p99_ms: 0}",
                "max_p99_ms",
                "above 0",
            ),
            (
                "{target: 'http://127.0.0.1/api', max_p50_ms: -1}",
                "max_p50_ms",
                "above 0",
            ),
        ] {
            let e = plan(load).unwrap_err();
            assert_eq!(e.field, format!("{at}.{field}"), "{load}: {e}");
            assert!(e.message.contains(words), "{load}: {e}");
        }
        // Through Envoy needs the rollout's override, and one host to send.
        let no_override = "name: a\nsteps: [{weight: 1}]\ngates: [{name: s, on: pre_step, load: {target: 'http://127.0.0.1/'}}]";
        let e = RolloutSpec::parse(no_override.as_bytes(), Format::Yaml).unwrap_err();
        assert_eq!(e.field, "gates[0].load.via", "{e}");
        let wildcard = "name: a\nmatch: {authority: '*.example'}\noverride: {}\nsteps: [{weight: 1}]\ngates: [{name: s, on: pre_step, load: {target: 'http://127.0.0.1/'}}]";
        let e = RolloutSpec::parse(wildcard.as_bytes(), Format::Yaml).unwrap_err();
        assert_eq!(e.field, "gates[0].load.host", "{e}");
        let e = RolloutSpec::parse(
            wildcard
                .replace("load: {", "load: {host: a.example, ")
                .as_bytes(),
            Format::Yaml,
        );
        assert!(e.is_ok(), "{e:?}");
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn an_outcome_is_judged_and_worded() {
        let b = burst("{target: 'http://127.0.0.1/api', max_p99_ms: 5}");
        let mut tally = Tally::default();
        for i in 0..100 {
            let status = if i % 5 == 4 { 500 } else { 200 };
            tally.add(Ok(Ok((status, f64::from(i % 10)))));
        }
        let o = tally.judge(&b, 100);
        assert_eq!((o.succeeded, o.success, o.passed), (80, 80.0, false));
        assert_eq!(o.missed, ["success 80.0% < 99%", "p99 9 ms > 5 ms"]);
        assert_eq!(
            o.words(&b.thresholds),
            "100 requests from 5 users: 80.0% succeeded (min 99%), p50 4 ms, p90 8 ms, p99 9 ms (max 5 ms): failed; answers 200 × 80, 500 × 20"
        );
        // Unsent and unanswered requests fail, and say why.
        let mut tally = Tally::default();
        tally.add(Ok(Err("refused".into())));
        let o = tally.judge(&b, 60);
        assert_eq!((o.success, o.unanswered), (0.0, 1));
        let words = o.words(&b.thresholds);
        assert!(words.ends_with(": failed; 40 not sent within the burst's time; 1 without an answer (first: refused)"), "{words}");
    }
}
