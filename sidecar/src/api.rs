//! The admin HTTP API under `/v1`: rollouts and their controls, the kill switch, the audit
//! log, the filters' snapshot long-poll, server-sent events, health and metrics.
//!
//! [`App::handle`] takes any request body, so tests call it directly without a socket.

use crate::auth::{Auth, Need};
use crate::controller::{Controller, CtlError, Releases, RolloutRef, Rollouts, MAX_HISTORY};
use crate::machine::Control;
use crate::slots::{Slot, Slots};
use crate::spec::{self, Format, RolloutSpec};
use crate::sse;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub type Body = BoxBody<Bytes, Infallible>;

pub use linnet_core::poll::{EPOCH_HEADER, POLLER_HEADER, VERSION_HEADER};
pub const LAST_EVENT_ID_HEADER: &str = "last-event-id";

use linnet_core::poll::{
    DEFAULT_TIMEOUT_MS as DEFAULT_POLL_TIMEOUT_MS, TIMEOUT_RANGE_MS as POLL_TIMEOUT_RANGE_MS,
};
const DEFAULT_AUDIT_LIMIT: usize = 100;
const MAX_AUDIT_LIMIT: usize = 1000;
pub const DEFAULT_MAX_SSE: usize = 64;
pub const DEFAULT_MAX_POLLS: usize = 256;
/// What a 503 for a full limit tells the client to wait, in seconds.
const RETRY_AFTER_SECS: u32 = 5;

/// Limits and intervals of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: Auth,
    /// Bodies above this are refused with 413.
    pub max_body_bytes: usize,
    /// Comment lines on idle event streams, so proxies keep them open.
    pub heartbeat: Duration,
    /// Event streams open at once; one more is answered 503.
    pub max_sse: usize,
    /// Snapshot polls held at once (waiting for a change); one more is answered 503.
    pub max_polls: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            auth: Auth::default(),
            max_body_bytes: 1 << 20,
            heartbeat: Duration::from_secs(15),
            max_sse: DEFAULT_MAX_SSE,
            max_polls: DEFAULT_MAX_POLLS,
        }
    }
}

#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    ctl: Controller,
    config: ApiConfig,
    shutdown: watch::Receiver<bool>,
    sse: Arc<Slots>,
    polls: Arc<Slots>,
}

/// A limit on requests that stay open, as its metrics label and in its 503's words.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Sse,
    Polls,
}

/// A 4xx or 5xx, answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pause,
    Resume,
    Promote,
    Abort,
    Retry,
    Complete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Rollouts,
    Rollout(RolloutRef),
    Control(RolloutRef, Action),
    Weight(RolloutRef),
    RolloutKill(RolloutRef),
    Explain(RolloutRef),
    History,
    KillSwitch,
    Audit,
    Snapshot,
    Events,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    #[serde(default)]
    full: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    on: bool,
}

// === impl ApiError ===

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<CtlError> for ApiError {
    fn from(e: CtlError) -> Self {
        let status = match &e {
            CtlError::NotFound(_) => StatusCode::NOT_FOUND,
            CtlError::Conflict(_) => StatusCode::CONFLICT,
            CtlError::Invalid(_) => StatusCode::BAD_REQUEST,
            CtlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

// === impl Limit ===

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Limit::Sse => "sse",
            Limit::Polls => "polls",
        }
    }

    fn full(self, cap: usize) -> String {
        match self {
            Limit::Sse => format!(
                "too many event streams: all {cap} are open (serve --max-sse); close one or retry later, resuming with Last-Event-ID"
            ),
            Limit::Polls => format!(
                "too many held snapshot polls: all {cap} are waiting (serve --max-polls); retry later"
            ),
        }
    }
}

// === impl Route ===

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let path = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segs: Vec<&str> = path.split('/').skip(1).collect();
        Some(match segs.as_slice() {
            ["healthz"] => Route::Healthz,
            ["readyz"] => Route::Readyz,
            ["metrics"] => Route::Metrics,
            ["v1", "rollouts"] => Route::Rollouts,
            ["v1", "rollouts", name] => Route::Rollout(RolloutRef::parse(name)),
            ["v1", "rollouts", name, action] => {
                let name = RolloutRef::parse(name);
                match *action {
                    "pause" => Route::Control(name, Action::Pause),
                    "resume" => Route::Control(name, Action::Resume),
                    "promote" => Route::Control(name, Action::Promote),
                    "abort" => Route::Control(name, Action::Abort),
                    "retry" => Route::Control(name, Action::Retry),
                    "complete" => Route::Control(name, Action::Complete),
                    "weight" => Route::Weight(name),
                    "kill-switch" => Route::RolloutKill(name),
                    "explain" => Route::Explain(name),
                    _ => return None,
                }
            }
            ["v1", "history"] => Route::History,
            ["v1", "kill-switch"] => Route::KillSwitch,
            ["v1", "audit"] => Route::Audit,
            ["v1", "snapshot"] => Route::Snapshot,
            ["v1", "events"] => Route::Events,
            _ => return None,
        })
    }

    /// The route's pattern, for metrics labels and logs.
    fn pattern(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Rollouts => "/v1/rollouts",
            Route::Rollout(_) => "/v1/rollouts/{name}",
            Route::Control(_, Action::Pause) => "/v1/rollouts/{name}/pause",
            Route::Control(_, Action::Resume) => "/v1/rollouts/{name}/resume",
            Route::Control(_, Action::Promote) => "/v1/rollouts/{name}/promote",
            Route::Control(_, Action::Abort) => "/v1/rollouts/{name}/abort",
            Route::Control(_, Action::Retry) => "/v1/rollouts/{name}/retry",
            Route::Control(_, Action::Complete) => "/v1/rollouts/{name}/complete",
            Route::Weight(_) => "/v1/rollouts/{name}/weight",
            Route::RolloutKill(_) => "/v1/rollouts/{name}/kill-switch",
            Route::Explain(_) => "/v1/rollouts/{name}/explain",
            Route::History => "/v1/history",
            Route::KillSwitch => "/v1/kill-switch",
            Route::Audit => "/v1/audit",
            Route::Snapshot => "/v1/snapshot",
            Route::Events => "/v1/events",
        }
    }

    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Rollouts | Route::KillSwitch => &[Method::GET, Method::POST],
            Route::Rollout(_) => &[Method::GET, Method::DELETE],
            Route::Control(..) | Route::RolloutKill(_) => &[Method::POST],
            Route::Weight(_) => &[Method::PUT, Method::POST],
            _ => &[Method::GET],
        }
    }

    fn need(&self, method: &Method) -> Option<Need> {
        match self {
            Route::Healthz | Route::Readyz => None,
            Route::Snapshot => Some(Need::Poll),
            _ if method == Method::GET => Some(Need::Read),
            _ => Some(Need::Write),
        }
    }
}

// === impl App ===

impl App {
    /// `shutdown` turning true ends long-polls and event streams, so a drain can finish.
    pub fn new(ctl: Controller, config: ApiConfig, shutdown: watch::Receiver<bool>) -> App {
        let sse = Slots::new(
            config.max_sse,
            ctl.metrics().slots_in_use(Limit::Sse.label()),
        );
        let polls = Slots::new(
            config.max_polls,
            ctl.metrics().slots_in_use(Limit::Polls.label()),
        );
        App {
            inner: Arc::new(AppInner {
                ctl,
                config,
                shutdown,
                sse,
                polls,
            }),
        }
    }

    pub fn controller(&self) -> &Controller {
        &self.inner.ctl
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let route = Route::parse(req.uri().path());
        let pattern = route.as_ref().map_or("unmatched", Route::pattern);
        let resp = match route {
            None => error(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {}", req.uri().path()),
            )),
            Some(route) => match self.dispatch(route, req).await {
                Ok(r) => r,
                Err(e) => error(e),
            },
        };
        let mut resp = resp;
        if pattern == Route::Snapshot.pattern() && !resp.headers().contains_key(VERSION_HEADER) {
            // Errors too, so a poller always learns the current version.
            let v = self.inner.ctl.snapshot().borrow().version;
            resp.headers_mut()
                .insert(VERSION_HEADER, HeaderValue::from(v));
        }
        tracing::debug!(%method, route = pattern, status = resp.status().as_u16(), "request");
        self.inner
            .ctl
            .metrics()
            .count_request(method.as_str(), pattern, resp.status().as_u16());
        resp
    }

    async fn dispatch<B>(&self, route: Route, req: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let allowed = route.methods();
        if !allowed.contains(&method) {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut r = error(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {method} is not allowed on {}; use {allow}",
                    route.pattern()
                ),
            ));
            if let Ok(v) = HeaderValue::from_str(&allow) {
                r.headers_mut().insert(ALLOW, v);
            }
            return Ok(r);
        }
        let query = Query::parse(req.uri().query());
        if let Some(need) = route.need(&method) {
            // Only the event stream takes a token in the query: EventSource cannot send headers.
            let qt = if route == Route::Events {
                query.get("token")
            } else {
                None
            };
            self.inner
                .config
                .auth
                .check(need, req.headers(), qt)
                .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
        }
        let ctl = &self.inner.ctl;
        match (route, method) {
            (Route::Healthz, _) => Ok(text(StatusCode::OK, "ok\n")),
            (Route::Readyz, _) => match ctl.ping().await {
                Ok(()) => Ok(text(StatusCode::OK, "ready\n")),
                Err(e) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {e}"),
                )),
            },
            (Route::Metrics, _) => {
                let mut r = text(StatusCode::OK, ctl.metrics().render());
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(r)
            }
            (Route::Rollouts, Method::GET) => Ok(ok_json(&Rollouts {
                rollouts: ctl.list().await?,
            })),
            (Route::Rollouts, _) => {
                let ct = req
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let format = Format::from_content_type(ct.as_deref()).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "Content-Type {:?} is neither JSON nor YAML",
                            ct.unwrap_or_default()
                        ),
                    )
                })?;
                let body = self.body(req).await?;
                let (spec, plan) = RolloutSpec::parse(&body, format)
                    .map_err(|e| ApiError::bad(format!("invalid rollout spec: {e}")))?;
                let warnings = plan.warnings();
                for w in &warnings {
                    tracing::warn!(rollout = %spec.name, "{w}");
                }
                let status = ctl.create(spec, plan).await?;
                let mut body = json!(status);
                body["warnings"] = json!(warnings);
                Ok(json_response(StatusCode::CREATED, &body))
            }
            (Route::Rollout(name), Method::GET) => Ok(ok_json(&ctl.status(name).await?)),
            (Route::Explain(name), _) => {
                let limit = query.limit()?;
                let (status, events) = ctl.timeline(name, limit).await?;
                Ok(ok_json(&crate::explain::Explained {
                    rollout: status.name,
                    id: status.id,
                    state: status.state,
                    step: status.step,
                    weight: status.weight,
                    timeline: crate::explain::timeline(&events),
                }))
            }
            (Route::Rollout(name), _) => Ok(ok_json(&ctl.control(name, Control::Abort).await?)),
            (Route::Control(name, action), _) => {
                let body = self.body(req).await?;
                let control = match action {
                    Action::Pause => empty_body(&body).map(|()| Control::Pause)?,
                    Action::Resume => empty_body(&body).map(|()| Control::Resume)?,
                    Action::Abort => empty_body(&body).map(|()| Control::Abort)?,
                    Action::Retry => empty_body(&body).map(|()| Control::Retry)?,
                    Action::Complete => empty_body(&body).map(|()| Control::Complete)?,
                    Action::Promote => {
                        let p: PromoteBody = if is_blank(&body) {
                            PromoteBody::default()
                        } else {
                            json_body(&body)?
                        };
                        Control::Promote { full: p.full }
                    }
                };
                Ok(ok_json(&ctl.control(name, control).await?))
            }
            (Route::Weight(name), _) => {
                let body = self.body(req).await?;
                let w: WeightBody = json_body(&body)?;
                spec::percent("weight", w.weight).map_err(|e| ApiError::bad(e.to_string()))?;
                Ok(ok_json(
                    &ctl.control(name, Control::SetWeight(w.weight)).await?,
                ))
            }
            (Route::RolloutKill(name), _) => {
                let body = self.body(req).await?;
                let k: KillBody = json_body(&body)?;
                Ok(ok_json(
                    &ctl.control(name, Control::KillSwitch(k.on)).await?,
                ))
            }
            (Route::History, _) => {
                let limit = match query.int("limit")? {
                    None => DEFAULT_AUDIT_LIMIT,
                    Some(l) => usize::try_from(l)
                        .ok()
                        .filter(|l| (1..=MAX_HISTORY).contains(l))
                        .ok_or_else(|| {
                            ApiError::bad(format!("limit: must be between 1 and {MAX_HISTORY}"))
                        })?,
                };
                let name = query
                    .get("name")
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned);
                let host = query
                    .get("match")
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned);
                let releases = ctl.history(name, host, limit).await?;
                Ok(ok_json(&Releases { releases }))
            }
            (Route::KillSwitch, Method::GET) => {
                Ok(ok_json(&json!({ "on": ctl.kill_switch().await? })))
            }
            (Route::KillSwitch, _) => {
                let body = self.body(req).await?;
                let k: KillBody = json_body(&body)?;
                Ok(ok_json(&json!({ "on": ctl.set_kill_switch(k.on).await? })))
            }
            (Route::Audit, _) => {
                let after = query.int("after")?.unwrap_or(0);
                let limit = query.limit()?;
                let rollout = query
                    .get("rollout")
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned);
                let events = ctl.events(after, rollout, limit).await?;
                let next_after = events.last().map_or(after, |e| e.id);
                Ok(ok_json(
                    &json!({ "events": events, "next_after": next_after }),
                ))
            }
            (Route::Snapshot, _) => self.snapshot(&req, &query).await,
            (Route::Events, _) => {
                let header = req
                    .headers()
                    .get(LAST_EVENT_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let after = match header.as_deref().or(query.get("last_event_id")) {
                    None | Some("") => 0,
                    Some(s) => s.trim().parse::<i64>().map_err(|_| {
                        ApiError::bad(format!("last_event_id: {s:?} is not an integer event id"))
                    })?,
                };
                let rollout = query
                    .get("rollout")
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned);
                let slot = self.take(Limit::Sse)?;
                let body = sse::stream(
                    slot,
                    ctl.clone(),
                    after,
                    rollout,
                    self.inner.config.heartbeat,
                    self.inner.shutdown.clone(),
                );
                let mut r = Response::new(body);
                let h = r.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(r)
            }
        }
    }

    /// `GET /v1/snapshot?version=N&epoch=E&timeout_ms=T`: 200 with the snapshot at once when
    /// the caller's version differs from the current one (or is absent), or its epoch does
    /// (a filter that knows epochs always sends one, empty before it has one); otherwise wait
    /// for a change (200) or the timeout (304, empty body). Without `epoch`, as before epochs.
    async fn snapshot<B>(
        &self,
        req: &Request<B>,
        query: &Query,
    ) -> Result<Response<Body>, ApiError> {
        let have = query.int("version")?;
        let timeout_ms = match query.int("timeout_ms")? {
            None => DEFAULT_POLL_TIMEOUT_MS,
            Some(t) => u64::try_from(t)
                .unwrap_or(0)
                .clamp(POLL_TIMEOUT_RANGE_MS.0, POLL_TIMEOUT_RANGE_MS.1),
        };
        let timeout = Duration::from_millis(timeout_ms);
        if let Some(id) = req
            .headers()
            .get(POLLER_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            if !id.is_empty() && id.len() <= 256 {
                self.inner.ctl.metrics().saw_poller(id, timeout);
            }
        }
        let mut rx = self.inner.ctl.snapshot();
        let current = rx.borrow_and_update().clone();
        let have = have.and_then(|v| u64::try_from(v).ok());
        // Another run's version N says nothing about this run's N.
        let other_epoch = query
            .get("epoch")
            .is_some_and(|e| e != current.epoch.as_str());
        if have != Some(current.version) || other_epoch {
            return Ok(snapshot_body(&current));
        }
        // Held from here until answered, or dropped with the request if the client goes.
        let _slot = self.take(Limit::Polls)?;
        let mut shutdown = self.inner.shutdown.clone();
        tokio::select! {
            changed = rx.changed() => {
                let latest = rx.borrow_and_update().clone();
                if changed.is_ok() && latest.version != current.version {
                    return Ok(snapshot_body(&latest));
                }
                Ok(not_modified(&current))
            }
            _ = tokio::time::sleep(timeout) => Ok(not_modified(&current)),
            _ = crate::signal::stopped(&mut shutdown) => Ok(not_modified(&current)),
        }
    }

    /// A place under `limit`, or a 503 that names the cap and says what to do.
    fn take(&self, limit: Limit) -> Result<Slot, ApiError> {
        let slots = match limit {
            Limit::Sse => &self.inner.sse,
            Limit::Polls => &self.inner.polls,
        };
        slots.try_take().ok_or_else(|| {
            self.inner.ctl.metrics().count_rejected(limit.label());
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: limit.full(slots.cap()),
                retry_after: Some(RETRY_AFTER_SECS),
            }
        })
    }

    /// The body, refused with 413 past the limit.
    async fn body<B>(&self, req: Request<B>) -> Result<Bytes, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.inner.config.max_body_bytes;
        let too_big = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than the limit of {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_big());
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_big()),
            Err(e) => Err(ApiError::bad(format!("cannot read the body: {e}"))),
        }
    }
}

fn snapshot_body(p: &crate::controller::Published) -> Response<Body> {
    let mut r = Response::new(Full::new(p.body.clone()).boxed());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    stamp_headers(h, p);
    r
}

fn not_modified(p: &crate::controller::Published) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    stamp_headers(r.headers_mut(), p);
    r
}

/// The version and epoch the answer is about, in the body's words (a 304 has no body).
fn stamp_headers(h: &mut hyper::HeaderMap, p: &crate::controller::Published) {
    h.insert(VERSION_HEADER, HeaderValue::from(p.version));
    // An epoch is 1 to 64 of A-Z a-z 0-9 - _, which is always a valid header value.
    if let Ok(epoch) = HeaderValue::from_str(p.epoch.as_str()) {
        h.insert(EPOCH_HEADER, epoch);
    }
}

/// Query parameters, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `limit`: how many events to return, 1 to the maximum; default 100.
    fn limit(&self) -> Result<usize, ApiError> {
        let limit = self
            .int("limit")?
            .map_or(DEFAULT_AUDIT_LIMIT, |l| usize::try_from(l).unwrap_or(0));
        if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
            return Err(ApiError::bad(format!(
                "limit: must be between 1 and {MAX_AUDIT_LIMIT}"
            )));
        }
        Ok(limit)
    }

    /// An integer parameter; `Err` names it.
    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad(format!("{key}: {v:?} is not a non-negative integer"))
                }),
        }
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => Some(hi * 16 + lo),
            _ => None,
        };
        match (b[i], decoded) {
            (_, Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// Controls without parameters accept no body, `{}` or `null`.
fn empty_body(body: &[u8]) -> Result<(), ApiError> {
    if is_blank(body) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Null) => Ok(()),
        Ok(Value::Object(m)) if m.is_empty() => Ok(()),
        Ok(Value::Object(m)) => Err(ApiError::bad(format!(
            "unknown field {:?}: this control takes no parameters",
            m.keys().next().map(String::as_str).unwrap_or_default()
        ))),
        Ok(_) => Err(ApiError::bad("body: expected a JSON object or nothing")),
        Err(e) => Err(ApiError::bad(format!("malformed JSON body: {e}"))),
    }
}

fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    linnet_core::config::parse_json(body).map_err(|e| ApiError::bad(format!("invalid body: {e}")))
}

pub fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

fn text(status: StatusCode, s: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(s.into())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, v: &T) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => {
            let mut r = Response::new(Full::new(Bytes::from(b)).boxed());
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => error(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}"),
        )),
    }
}

fn ok_json<T: serde::Serialize + ?Sized>(v: &T) -> Response<Body> {
    json_response(StatusCode::OK, v)
}

fn error(e: ApiError) -> Response<Body> {
    let body = serde_json::to_vec(&json!({ "error": e.message })).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = e.status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/v1/rollouts/"), Some(Route::Rollouts));
        assert_eq!(
            Route::parse("/v1/rollouts/a/promote"),
            Some(Route::Control(
                RolloutRef::Name("a".into()),
                Action::Promote
            ))
        );
        assert_eq!(
            Route::parse("/v1/rollouts/12/complete"),
            Some(Route::Control(RolloutRef::Id(12), Action::Complete))
        );
        assert_eq!(Route::parse("/v1/rollouts/a/bogus"), None);
        assert_eq!(Route::parse("/"), None);
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some("a=1&b=x%20y+z&c&d=%zz&e=%4"));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x y z"));
        assert_eq!(q.get("c"), Some(""));
        assert_eq!(q.get("d"), Some("%zz"));
        assert_eq!(q.get("e"), Some("%4"));
        assert!(q.int("b").unwrap_err().message.starts_with("b:"));
    }
}
