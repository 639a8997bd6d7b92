//! The admin HTTP API under `/v1`: rollouts and their controls, the kill switch, the audit
//! log, the filters' snapshot long-poll, server-sent events, health and metrics.
//!
//! Every route is declared once, in [`routes`]: its handler (whose `#[utoipa::path]` gives
//! the path, the method and the OpenAPI operation) and who may call it (nobody needs a
//! token, the filters' poll token, or a key of at least a scope). The router, the
//! 405s' `Allow`, the metrics labels and the OpenAPI document ([`openapi`]) all come from
//! that table. [`App::handle`] takes any request body, so tests call it without a socket.

use crate::auth::{Auth, Caller, Need, Scope};
use crate::controller::{Controller, CtlError, HistoryEntry, RolloutRef, Status, MAX_HISTORY};
use crate::explain::Line;
use crate::keys::{Buckets, KeyInfo, KeySpec, Limit as RateLimit};
use crate::machine::{Control, State as RolloutState};
use crate::report::Report;
use crate::slots::{Slot, Slots};
use crate::spec::{self, Format, RolloutSpec};
use crate::sse;
use crate::store::Event;
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, OriginalUri, Path, State};
use axum::handler::Handler;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use bytes::Bytes;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tower::Layer;
use tower::ServiceExt;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// What [`App::handle`] answers with.
pub type Body = axum::body::Body;

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
/// The security schemes' names in the OpenAPI document.
const BEARER: &str = "bearer";
const API_KEY: &str = "api_key";
const QUERY_TOKEN: &str = "query_token";

pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits and intervals of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub auth: Auth,
    /// Bodies above this are refused with 413.
    pub max_body_bytes: usize,
    /// A body not fully sent by then is answered 408: a slow client holds no handler.
    pub body_timeout: Duration,
    /// Comment lines on idle event streams, so proxies keep them open.
    pub heartbeat: Duration,
    /// Event streams open at once; one more is answered 503.
    pub max_sse: usize,
    /// Snapshot polls held at once (waiting for a change); one more is answered 503.
    pub max_polls: usize,
    /// The snapshot polls' own token bucket (`serve --poll-rate`, `--poll-burst`): polls
    /// never draw from a key's, so no caller's flood slows the filters.
    pub poll_limit: RateLimit,
}

/// Snapshot polls per second, sustained, from all filters together.
pub const DEFAULT_POLL_RATE: f64 = 500.0;
/// Snapshot polls at once (every filter answered by one change polls again).
pub const DEFAULT_POLL_BURST: u32 = 1000;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            auth: Auth::default(),
            max_body_bytes: 1 << 20,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            heartbeat: Duration::from_secs(15),
            max_sse: DEFAULT_MAX_SSE,
            max_polls: DEFAULT_MAX_POLLS,
            poll_limit: RateLimit {
                rate: DEFAULT_POLL_RATE,
                burst: DEFAULT_POLL_BURST,
            },
        }
    }
}

/// The API: the route table as a service, and what its handlers share.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
    service: NormalizePath<Router>,
}

/// What every handler reaches through `State`.
struct Shared {
    ctl: Controller,
    config: ApiConfig,
    shutdown: watch::Receiver<bool>,
    sse: Arc<Slots>,
    polls: Arc<Slots>,
    mcp: Arc<crate::mcp_session::Sessions>,
    /// A token bucket per key, and one (`POLL_BUCKET`) for the snapshot polls.
    rates: Buckets,
}

/// The snapshot polls' bucket and metrics label: not a valid key name, so no key shares it.
const POLL_BUCKET: &str = "_poll";

type Api = State<Arc<Shared>>;

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

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the field, parameter or limit.
    pub error: String,
}

// === request bodies and query parameters ===

/// `promote`: one step, or with `full` straight to 100%. No body is `{}`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    #[serde(default)]
    full: bool,
}

/// A control that takes no parameters: no body, `{}` or `null`.
#[derive(ToSchema)]
pub struct NoParameters {}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    /// Canary share in percent, 0 to 100.
    #[schema(minimum = 0.0, maximum = 100.0)]
    weight: f64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillBody {
    on: bool,
}

/// `limit`, `after` and a rollout filter, as the audit log and explain read them.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events after this id. Default 0.
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 0)]
    after: Option<i64>,
    /// How many events, 1 to 1000. Default 100.
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only this rollout's events.
    #[serde(default)]
    rollout: Option<String>,
}

/// Which stored notifications to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NotificationsQuery {
    /// How many, newest first, 1 to 1000. Default 100.
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only this rollout's.
    #[serde(default)]
    rollout: Option<String>,
    /// Only those in this state: `pending`, `retrying`, `delivered` or `failed`.
    #[serde(default)]
    #[param(value_type = Option<crate::notify::DeliveryState>)]
    state: Option<crate::notify::DeliveryState>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplainQuery {
    /// How many events the timeline reads, 1 to 1000. Default 100.
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many releases, 1 to 1000. Default 100.
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only releases of this name.
    #[serde(default)]
    name: Option<String>,
    /// Only releases whose match overlaps this host.
    #[serde(default, rename = "match")]
    #[param(rename = "match")]
    host: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// The version the caller has; absent: answer at once.
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 0)]
    version: Option<i64>,
    /// The epoch the caller has (empty before it has one).
    #[serde(default)]
    epoch: Option<String>,
    /// How long to hold the poll when nothing changed, in ms (clamped to 1000..=300000).
    #[serde(default, deserialize_with = "non_negative")]
    #[param(minimum = 1000, maximum = 300000)]
    timeout_ms: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Replay after this id; `latest`: no replay, only events after the newest one now
    /// (the `Last-Event-ID` header wins).
    #[serde(default)]
    last_event_id: Option<String>,
    /// Only this rollout's events.
    #[serde(default)]
    rollout: Option<String>,
}

// === response bodies ===
//
// The CLI reads the answers back into these same types.

/// `GET /v1/rollouts`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RolloutList {
    pub rollouts: Vec<Status>,
}

/// A created rollout: its status, and what its spec should reconsider.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    #[serde(flatten)]
    pub status: Status,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The global kill switch's position.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KillSwitch {
    pub on: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<Event>,
    /// Pass as `after` for the next page.
    pub next_after: i64,
}

/// `GET /v1/history`: releases, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    pub releases: Vec<HistoryEntry>,
}

/// `GET /v1/rollouts/{name}/explain`: where the rollout stands and its decision timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    pub rollout: String,
    pub id: i64,
    pub state: RolloutState,
    pub step: usize,
    pub weight: f64,
    pub timeline: Vec<Line>,
}

// === impl Explanation ===

impl Explanation {
    /// Where `status` stands, and `events` (its latest, oldest first) in plain words.
    pub fn of(status: Status, events: &[Event]) -> Explanation {
        Explanation {
            rollout: status.name,
            id: status.id,
            state: status.state,
            step: status.step,
            weight: status.weight,
            timeline: crate::explain::timeline(events),
        }
    }
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        r
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

// === the route table ===

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anybody: health, the dashboard page, the OpenAPI document.
    Open,
    /// The filters: the poll token or the admin token.
    Poll,
    /// A key of at least this scope (the admin token is an `admin` key; under
    /// `--open-reads`, no token is an `anonymous` reader).
    Key(Scope),
}

/// `access` and, with `query`, the token also as `?token=` (only the event stream:
/// EventSource cannot send headers).
#[derive(Debug, Clone, Copy)]
struct Guard {
    access: Access,
    query: bool,
}

const OPEN: Guard = Guard {
    access: Access::Open,
    query: false,
};
const POLL: Guard = Guard {
    access: Access::Poll,
    query: false,
};
const READ: Guard = Guard {
    access: Access::Key(Scope::Read),
    query: false,
};
const OPERATE: Guard = Guard {
    access: Access::Key(Scope::Operate),
    query: false,
};
const ADMIN: Guard = Guard {
    access: Access::Key(Scope::Admin),
    query: false,
};
const READ_OR_QUERY_TOKEN: Guard = Guard {
    access: Access::Key(Scope::Read),
    query: true,
};

/// One operation of the table: a handler at its documented path and method, behind its guard.
struct Op {
    path: String,
    method: Method,
    operation: Operation,
    guard: Guard,
    router: MethodRouter<Arc<Shared>>,
}

/// The route table. A route is one line: its handler and who may call it.
fn routes() -> Vec<Op> {
    vec![
        op::<__path_healthz, _, _>(healthz, OPEN),
        op::<__path_dashboard, _, _>(dashboard, OPEN),
        op::<__path_readyz, _, _>(readyz, OPEN),
        op::<__path_metrics, _, _>(metrics, READ),
        op::<__path_openapi_json, _, _>(openapi_json, OPEN),
        op::<__path_list, _, _>(list, READ),
        op::<__path_create, _, _>(create, ADMIN),
        op::<__path_status, _, _>(status, READ),
        op::<__path_delete, _, _>(delete, OPERATE),
        op::<__path_pause, _, _>(pause, OPERATE),
        op::<__path_resume, _, _>(resume, OPERATE),
        op::<__path_promote, _, _>(promote, OPERATE),
        op::<__path_abort, _, _>(abort, OPERATE),
        op::<__path_retry, _, _>(retry, OPERATE),
        op::<__path_complete, _, _>(complete, OPERATE),
        op::<__path_set_weight, _, _>(set_weight, OPERATE),
        op::<__path_post_weight, _, _>(post_weight, OPERATE),
        op::<__path_rollout_kill_switch, _, _>(rollout_kill_switch, ADMIN),
        op::<__path_explain, _, _>(explain, READ),
        op::<__path_report, _, _>(report, READ),
        op::<__path_history, _, _>(history, READ),
        op::<__path_kill_switch, _, _>(kill_switch, READ),
        op::<__path_set_kill_switch, _, _>(set_kill_switch, ADMIN),
        op::<__path_audit, _, _>(audit, READ),
        op::<__path_alertmanager, _, _>(alertmanager, OPERATE),
        op::<__path_notifications, _, _>(notifications, READ),
        op::<__path_resend, _, _>(resend, OPERATE),
        op::<__path_receivers, _, _>(receivers, READ),
        op::<__path_put_receiver, _, _>(put_receiver, ADMIN),
        op::<__path_delete_receiver, _, _>(delete_receiver, ADMIN),
        op::<__path_list_keys, _, _>(list_keys, ADMIN),
        op::<__path_create_key, _, _>(create_key, ADMIN),
        op::<__path_revoke_key, _, _>(revoke_key, ADMIN),
        op::<__path_snapshot, _, _>(snapshot, POLL),
        op::<__path_events, _, _>(events, READ_OR_QUERY_TOKEN),
        op::<__path_mcp, _, _>(mcp, READ),
        op::<__path_mcp_stream, _, _>(mcp_stream, READ),
        op::<__path_mcp_end, _, _>(mcp_end, READ),
    ]
}

/// Every route's method, path and who may call it, in the table's order.
pub fn access() -> Vec<(Method, String, Access)> {
    routes()
        .into_iter()
        .map(|o| (o.method, o.path, o.guard.access))
        .collect()
}

fn op<P, H, T>(handler: H, guard: Guard) -> Op
where
    P: utoipa::Path,
    H: Handler<T, Arc<Shared>>,
    T: 'static,
{
    let method = match P::methods().first() {
        Some(HttpMethod::Post) => Method::POST,
        Some(HttpMethod::Put) => Method::PUT,
        Some(HttpMethod::Delete) => Method::DELETE,
        _ => Method::GET,
    };
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    let mut operation = P::operation();
    // What the guard answers is documented by the guard, once.
    match guard.access {
        Access::Open => {}
        Access::Poll => {
            operation.security = Some(security(guard.query));
            error_response(
                &mut operation,
                StatusCode::UNAUTHORIZED,
                "No token, or a wrong one.",
            );
            error_response(
                &mut operation,
                StatusCode::TOO_MANY_REQUESTS,
                "Over the snapshot polls' rate limit (serve --poll-rate); see Retry-After.",
            );
        }
        Access::Key(scope) => {
            operation.security = Some(security(guard.query));
            let needs = format!("Needs a key of scope `{scope}` or above.");
            operation.description = Some(match operation.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{needs}"),
                _ => needs,
            });
            error_response(
                &mut operation,
                StatusCode::UNAUTHORIZED,
                "No token, a wrong one, or a revoked key.",
            );
            error_response(
                &mut operation,
                StatusCode::FORBIDDEN,
                &format!("The key's scope is below `{scope}`."),
            );
            error_response(
                &mut operation,
                StatusCode::TOO_MANY_REQUESTS,
                "The key is over its rate limit; see Retry-After.",
            );
        }
    }
    if operation.request_body.is_some() {
        // Every body is read by `Payload`, which bounds it in time.
        error_response(
            &mut operation,
            StatusCode::REQUEST_TIMEOUT,
            "The body did not arrive within the server's body timeout.",
        );
    }
    Op {
        path: P::path(),
        method,
        operation,
        guard,
        router: axum::routing::on(filter, handler),
    }
}

/// Documents that `operation` may answer `status` with an [`ErrorBody`].
fn error_response(operation: &mut Operation, status: StatusCode, description: &str) {
    operation.responses.responses.insert(
        status.as_str().to_owned(),
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build(),
        ),
    );
}

/// The OpenAPI security requirements (any one suffices) for `need`.
fn security(query: bool) -> Vec<SecurityRequirement> {
    let mut s = vec![
        SecurityRequirement::new::<_, _, &str>(BEARER, []),
        SecurityRequirement::new::<_, _, &str>(API_KEY, []),
    ];
    if query {
        s.push(SecurityRequirement::new::<_, _, &str>(QUERY_TOKEN, []));
    }
    s
}

/// The router of the table: operations grouped by path, each path answering 405 (with
/// `Allow`, in the table's order) for the methods it does not serve, HEAD included.
fn router(shared: Arc<Shared>) -> Router {
    let mut paths: Vec<(String, Vec<Op>)> = Vec::new();
    for op in routes() {
        match paths.iter_mut().find(|(p, _)| *p == op.path) {
            Some((_, ops)) => ops.push(op),
            None => paths.push((op.path.clone(), vec![op])),
        }
    }
    let mut router = Router::new();
    for (path, ops) in paths {
        let allow = ops
            .iter()
            .map(|o| o.method.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let not_allowed = {
            let (pattern, allow) = (path.clone(), allow.clone());
            move |method: Method| async move { method_not_allowed(&method, &pattern, &allow) }
        };
        let mut methods = MethodRouter::new();
        for op in ops {
            let what = format!("{} {}", op.method, op.path);
            methods = methods.merge(guarded(&shared, op.guard, what, op.router));
        }
        methods = methods
            .on(MethodFilter::HEAD, not_allowed.clone())
            .fallback(not_allowed);
        if path == "/v1/snapshot" {
            // Errors too, so a poller always learns the current version.
            methods = methods.layer(middleware::from_fn_with_state(
                Arc::clone(&shared),
                stamp_version,
            ));
        }
        router = router.route(&path, methods);
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), count))
        .layer(axum::extract::DefaultBodyLimit::max(
            shared.config.max_body_bytes,
        ))
        .with_state(shared)
}

/// `router` behind `guard`: the token, the scope and the rate limit. `what` is the route
/// (`POST /v1/rollouts/{name}/abort`) as a 403 names it. The caller goes to the handler as a
/// request extension.
fn guarded(
    shared: &Arc<Shared>,
    guard: Guard,
    what: String,
    router: MethodRouter<Arc<Shared>>,
) -> MethodRouter<Arc<Shared>> {
    if guard.access == Access::Open {
        return router;
    }
    let shared = Arc::clone(shared);
    let what = Arc::new(what);
    router.route_layer(middleware::from_fn(
        move |mut req: Request<Body>, next: Next| {
            let shared = Arc::clone(&shared);
            let what = Arc::clone(&what);
            async move {
                let token = guard
                    .query
                    .then(|| query::<TokenQuery>(req.uri()).ok()?.token)
                    .flatten();
                let admitted = match guard.access {
                    Access::Open => Ok(()),
                    Access::Poll => shared.admit_poll(req.headers()),
                    Access::Key(needs) => shared
                        .admit(needs, &what, req.headers(), token.as_deref())
                        .map(|caller| {
                            req.extensions_mut().insert(caller);
                        }),
                };
                match admitted {
                    Ok(()) => next.run(req).await,
                    Err(e) => e.into_response(),
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: Option<String>,
}

fn method_not_allowed(method: &Method, pattern: &str, allow: &str) -> Response {
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on {pattern}; use {allow}"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(allow) {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Counts every answer under its route's pattern (`unmatched` for none), so clients cannot
/// make new metric series.
async fn count(
    State(shared): Api,
    matched: Option<MatchedPath>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let pattern = matched
        .as_ref()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let resp = next.run(req).await;
    tracing::debug!(%method, route = pattern, status = resp.status().as_u16(), "request");
    shared
        .ctl
        .metrics()
        .count_request(method.as_str(), &pattern, resp.status().as_u16());
    resp
}

async fn stamp_version(State(shared): Api, req: Request<Body>, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if !resp.headers().contains_key(VERSION_HEADER) {
        let v = shared.ctl.snapshot().borrow().version;
        resp.headers_mut()
            .insert(VERSION_HEADER, HeaderValue::from(v));
    }
    resp
}

/// The OpenAPI 3.1 document of the table. `linnet openapi` prints it; it ships as
/// `sidecar/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    for op in routes() {
        let method = match op.method {
            Method::POST => HttpMethod::Post,
            Method::PUT => HttpMethod::Put,
            Method::DELETE => HttpMethod::Delete,
            _ => HttpMethod::Get,
        };
        doc.paths
            .add_path_operation(&op.path, vec![method], op.operation);
    }
    doc
}

/// [`openapi`] as pretty JSON, as `sidecar/openapi.json` holds it.
pub fn openapi_json_text() -> Result<String, String> {
    openapi()
        .to_pretty_json()
        .map_err(|e| format!("cannot encode the OpenAPI document: {e}"))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Linnet admin API",
        description = "Rollouts and their controls, the kill switch, the audit log, API keys, the filters' snapshot long-poll, server-sent events, health and metrics. A call presents the admin token or a named API key; each operation says the scope it needs (read < operate < admin); reads need none under --open-reads; the snapshot needs the poll token or the admin token. Keys are rate limited (429 with Retry-After)."
    ),
    components(schemas(
        ErrorBody, NoParameters, PromoteBody, WeightBody, KillBody, RolloutSpec, RolloutList,
        Created, Status, KillSwitch, AuditPage, HistoryPage, Explanation, Report, AlertsReceived,
        crate::alerts::Webhook, crate::alerts::Alert, crate::alerts::AlertStatus,
        crate::controller::AlertOutcome, NotificationsPage, Receivers, ReceiverPut,
        crate::notify::ReceiverSpec, crate::notify::Delivery, crate::notify::DeliveryState,
        crate::notify::Topic, crate::notify::Format, Scope, KeySpec, KeyInfo, KeyCreated, KeyList
    )),
    modifiers(&SecuritySchemes)
)]
struct Doc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityScheme;
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token or an API key (or, for the snapshot, the poll token).",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                crate::auth::API_KEY_HEADER,
                "The same token or key as the bearer one.",
            ))),
        );
        c.add_security_scheme(
            QUERY_TOKEN,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The admin token or a key as ?token=, on the event stream only (EventSource cannot send headers).",
            ))),
        );
    }
}

// === extractors ===

/// Query parameters through serde; a bad one is a 400 that names it.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut hyper::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        query(&parts.uri).map(Params).map_err(ApiError::bad)
    }
}

fn query<T: DeserializeOwned>(uri: &hyper::Uri) -> Result<T, String> {
    let q = uri.query().unwrap_or("");
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| e.to_string())
}

/// An integer parameter that must not be negative; empty is absent.
fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = String::deserialize(d)?;
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{v:?} is not a non-negative integer")))
}

/// `limit` between 1 and `max`; `default` when absent.
fn limit(l: Option<i64>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = l.map_or(default, |l| usize::try_from(l).unwrap_or(0));
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad(format!("limit: must be between 1 and {max}")));
    }
    Ok(limit)
}

/// The `{name}` segment: a rollout's name, or a release id.
struct Name(RolloutRef);

impl<S: Send + Sync> FromRequestParts<S> for Name {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut hyper::http::request::Parts,
        s: &S,
    ) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::bad(format!("name: {}", e.body_text())))?;
        Ok(Name(RolloutRef::parse(&name)))
    }
}

/// Who calls, as the audit names them: the key its route's guard admitted.
struct By(String);

impl<S: Send + Sync> FromRequestParts<S> for By {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut hyper::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        match parts.extensions.get::<Caller>() {
            Some(c) => Ok(By(c.key.clone())),
            // Only a route without a key guard has no caller, and none of those changes a thing.
            None => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this route admitted no caller to name in the audit",
            )),
        }
    }
}

/// The request body, refused with 413 past the limit (declared or streamed).
struct Payload(Bytes);

impl FromRequest<Arc<Shared>> for Payload {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let limit = shared.config.max_body_bytes;
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
        let within = shared.config.body_timeout;
        match tokio::time::timeout(within, Bytes::from_request(req, shared)).await {
            Ok(Ok(b)) => Ok(Payload(b)),
            Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_big()),
            Ok(Err(e)) => Err(ApiError::bad(format!(
                "cannot read the body: {}",
                e.body_text()
            ))),
            Err(_) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} (serve --body-timeout)",
                    humantime::format_duration(within)
                ),
            )),
        }
    }
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

fn text(body: impl Into<String>) -> Response {
    let mut r = body.into().into_response();
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

// === impl App ===

impl App {
    /// `shutdown` turning true ends long-polls and event streams, so a drain can finish.
    /// The API answers to the controller's keys, whatever `config.auth.keys` held.
    pub fn new(ctl: Controller, mut config: ApiConfig, shutdown: watch::Receiver<bool>) -> App {
        config.auth.keys = ctl.keyring().clone();
        let sse = Slots::new(
            config.max_sse,
            ctl.metrics().slots_in_use(Limit::Sse.label()),
        );
        let polls = Slots::new(
            config.max_polls,
            ctl.metrics().slots_in_use(Limit::Polls.label()),
        );
        let shared = Arc::new(Shared {
            ctl,
            config,
            shutdown,
            sse,
            polls,
            mcp: Arc::default(),
            rates: Buckets::default(),
        });
        // `/v1/rollouts/` is `/v1/rollouts`.
        let service = NormalizePathLayer::trim_trailing_slash().layer(router(Arc::clone(&shared)));
        App { shared, service }
    }

    pub fn controller(&self) -> &Controller {
        &self.shared.ctl
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut req = req.map(Body::new);
        // The path as sent, for the 404's words (the router sees it without a trailing slash).
        let original = OriginalUri(req.uri().clone());
        req.extensions_mut().insert(original);
        match self.service.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

// === impl Shared ===

impl Shared {
    /// The caller, if its token is good (else 401), its scope at least `needs` (else 403,
    /// naming both) and its bucket not empty (else 429).
    fn admit(
        &self,
        needs: Scope,
        what: &str,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let caller = self
            .config
            .auth
            .caller(headers, query_token)
            .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
        if caller.scope < needs && caller.key == crate::auth::ANONYMOUS {
            // No token at all: authenticate first (401), as before keys had scopes.
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing token: {what} needs a key of scope {needs}; send `Authorization: Bearer <token>` or `{}: <token>`",
                    crate::auth::API_KEY_HEADER
                ),
            ));
        }
        if caller.scope < needs {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "key {:?} has scope {}; {what} needs {needs}",
                    caller.key, caller.scope
                ),
            ));
        }
        if let Some(limit) = caller.limit {
            self.draw(&caller.key, limit, || {
                format!(
                    "key {:?} is over its rate limit of {} requests/s (burst {})",
                    caller.key, limit.rate, limit.burst
                )
            })?;
        }
        Ok(caller)
    }

    /// A snapshot poll with a good token (else 401), within the polls' own bucket (else 429).
    fn admit_poll(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.config
            .auth
            .check(Need::Poll, headers, None)
            .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
        let limit = self.config.poll_limit;
        self.draw(POLL_BUCKET, limit, || {
            format!(
                "snapshot polls are over their rate limit of {} requests/s (burst {}; serve --poll-rate, --poll-burst)",
                limit.rate, limit.burst
            )
        })
    }

    /// One request from `bucket`, or a 429 with `Retry-After` and the words of `over`.
    fn draw(
        &self,
        bucket: &str,
        limit: RateLimit,
        over: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        self.rates
            .take(bucket, limit, self.ctl.now_ms())
            .map_err(|secs| {
                self.ctl.metrics().count_rate_limited(bucket);
                ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    message: format!("{}; retry in {secs} s", over()),
                    retry_after: Some(secs),
                }
            })
    }

    /// A place under `limit`, or a 503 that names the cap and says what to do.
    fn take(&self, limit: Limit) -> Result<Slot, ApiError> {
        let slots = match limit {
            Limit::Sse => &self.sse,
            Limit::Polls => &self.polls,
        };
        slots.try_take().ok_or_else(|| {
            self.ctl.metrics().count_rejected(limit.label());
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: limit.full(slots.cap()),
                retry_after: Some(RETRY_AFTER_SECS),
            }
        })
    }

    async fn control(
        &self,
        name: RolloutRef,
        control: Control,
        By(by): By,
    ) -> Result<Json<Status>, ApiError> {
        Ok(Json(self.ctl.control(name, control, by).await?))
    }

    /// A control without parameters.
    async fn plain(
        &self,
        name: RolloutRef,
        body: &[u8],
        control: Control,
        by: By,
    ) -> Result<Json<Status>, ApiError> {
        empty_body(body)?;
        self.control(name, control, by).await
    }
}

// === handlers, one per route ===

type Answer<T> = Result<Json<T>, ApiError>;

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process answers.", body = String, content_type = "text/plain")))]
async fn healthz() -> Response {
    text("ok\n")
}

/// The page holds no data (it reads the API like any client, with the tab's token): open.
#[utoipa::path(get, path = "/ui", tag = "dashboard",
    responses((status = 200, description = "The live dashboard: one page, its script and style inline.", body = String, content_type = "text/html")))]
async fn dashboard() -> Response {
    page(crate::ui::dashboard())
}

/// An HTML page, under the pages' content security policy.
fn page(html: String) -> Response {
    let mut r = Response::new(Body::from(html));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::ui::CSP),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        hyper::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The store answers.", body = String, content_type = "text/plain"),
        (status = 503, description = "The store does not answer.", body = ErrorBody)))]
async fn readyz(State(s): Api) -> Result<Response, ApiError> {
    match s.ctl.ping().await {
        Ok(()) => Ok(text("ready\n")),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {e}"),
        )),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus metrics.", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
async fn metrics(State(s): Api) -> Response {
    let mut r = text(s.ctl.metrics().render());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// The document holds no secret, and a client needs it before it has a token: open.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document.", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts",
    responses(
        (status = 200, description = "Every rollout, finished ones included.", body = RolloutList)))]
async fn list(State(s): Api) -> Answer<RolloutList> {
    Ok(Json(RolloutList {
        rollouts: s.ctl.list().await?,
    }))
}

#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts",
    request_body(content(
        (RolloutSpec = "application/json", example = json!({
            "name": "checkout",
            "match": {"authority": "checkout.example"},
            "steps": [{"weight": 10, "pause": "5m"}, {"weight": 50, "pause": "until promoted"}, {"weight": 100}]
        })),
        (RolloutSpec = "application/yaml"))),
    responses(
        (status = 201, description = "Created and started.", body = Created),
        (status = 400, description = "An invalid spec, naming the field.", body = ErrorBody),
        (status = 409, description = "A rollout of that name is unfinished.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody),
        (status = 415, description = "Neither JSON nor YAML.", body = ErrorBody)))]
async fn create(
    State(s): Api,
    By(by): By,
    req: Request<Body>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
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
    let Payload(body) = Payload::from_request(req, &s).await?;
    let (spec, plan) = RolloutSpec::parse(&body, format)
        .map_err(|e| ApiError::bad(format!("invalid rollout spec: {e}")))?;
    let warnings = spec.warnings(&plan);
    for w in &warnings {
        tracing::warn!(rollout = %spec.name, "{w}");
    }
    let status = s.ctl.create(spec, plan, by).await?;
    Ok((StatusCode::CREATED, Json(Created { status, warnings })))
}

#[utoipa::path(get, path = "/v1/rollouts/{name}", tag = "rollouts",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    responses(
        (status = 200, description = "The rollout.", body = Status),
        (status = 404, description = "No such rollout.", body = ErrorBody)))]
async fn status(State(s): Api, Name(name): Name) -> Answer<Status> {
    Ok(Json(s.ctl.status(name).await?))
}

/// Aborts.
#[utoipa::path(delete, path = "/v1/rollouts/{name}", tag = "rollouts",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    responses(
        (status = 200, description = "Aborted.", body = Status),
        (status = 404, description = "No such rollout.", body = ErrorBody),
        (status = 409, description = "Not in a state that allows it.", body = ErrorBody)))]
async fn delete(State(s): Api, Name(name): Name, by: By) -> Answer<Status> {
    s.control(name, Control::Abort, by).await
}

/// Declares a control without parameters: its path and its handler.
macro_rules! plain_control {
    ($fn:ident, $path:literal, $control:expr, $what:literal) => {
        #[doc = $what]
        #[utoipa::path(post, path = $path, tag = "controls",
            params(("name" = String, Path, description = "A rollout's name, or a release id")),
            request_body(content = Option<NoParameters>, description = "No body, `{}` or `null`."),
            responses(
                (status = 200, description = "Done.", body = Status),
                (status = 400, description = "A body with parameters, or malformed JSON.", body = ErrorBody),
                (status = 404, description = "No such rollout.", body = ErrorBody),
                (status = 409, description = "Not in a state that allows it.", body = ErrorBody),
                (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
        async fn $fn(
            State(s): Api,
            Name(name): Name,
            by: By,
            Payload(body): Payload,
        ) -> Answer<Status> {
            s.plain(name, &body, $control, by).await
        }
    };
}

plain_control!(
    pause,
    "/v1/rollouts/{name}/pause",
    Control::Pause,
    "Stops stepping."
);
plain_control!(
    resume,
    "/v1/rollouts/{name}/resume",
    Control::Resume,
    "Steps again."
);
plain_control!(
    abort,
    "/v1/rollouts/{name}/abort",
    Control::Abort,
    "Back to weight 0, for good."
);
plain_control!(
    retry,
    "/v1/rollouts/{name}/retry",
    Control::Retry,
    "Starts an ended rollout again."
);
plain_control!(
    complete,
    "/v1/rollouts/{name}/complete",
    Control::Complete,
    "Hands a promoted rollout over."
);

#[utoipa::path(post, path = "/v1/rollouts/{name}/promote", tag = "controls",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    request_body(content = Option<PromoteBody>, description = "No body is `{}`."),
    responses(
        (status = 200, description = "Promoted.", body = Status),
        (status = 400, description = "An unknown field, or malformed JSON.", body = ErrorBody),
        (status = 404, description = "No such rollout.", body = ErrorBody),
        (status = 409, description = "Not in a state that allows it.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn promote(
    State(s): Api,
    Name(name): Name,
    by: By,
    Payload(body): Payload,
) -> Answer<Status> {
    let p: PromoteBody = if is_blank(&body) {
        PromoteBody::default()
    } else {
        json_body(&body)?
    };
    s.control(name, Control::Promote { full: p.full }, by).await
}

/// Sets a manual weight (and pauses).
#[utoipa::path(put, path = "/v1/rollouts/{name}/weight", tag = "controls",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    request_body = WeightBody,
    responses(
        (status = 200, description = "Set.", body = Status),
        (status = 400, description = "An invalid weight or body.", body = ErrorBody),
        (status = 404, description = "No such rollout.", body = ErrorBody),
        (status = 409, description = "Not in a state that allows it.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn set_weight(
    State(s): Api,
    Name(name): Name,
    by: By,
    Payload(body): Payload,
) -> Answer<Status> {
    let w: WeightBody = json_body(&body)?;
    spec::percent("weight", w.weight).map_err(|e| ApiError::bad(e.to_string()))?;
    s.control(name, Control::SetWeight(w.weight), by).await
}

/// The same as PUT.
#[utoipa::path(post, path = "/v1/rollouts/{name}/weight", tag = "controls",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    request_body = WeightBody,
    responses(
        (status = 200, description = "Set.", body = Status),
        (status = 400, description = "An invalid weight or body.", body = ErrorBody),
        (status = 404, description = "No such rollout.", body = ErrorBody),
        (status = 409, description = "Not in a state that allows it.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn post_weight(state: Api, name: Name, by: By, body: Payload) -> Answer<Status> {
    set_weight(state, name, by, body).await
}

#[utoipa::path(post, path = "/v1/rollouts/{name}/kill-switch", tag = "controls",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    request_body = KillBody,
    responses(
        (status = 200, description = "Set.", body = Status),
        (status = 400, description = "An invalid body.", body = ErrorBody),
        (status = 404, description = "No such rollout.", body = ErrorBody),
        (status = 409, description = "Not in a state that allows it.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn rollout_kill_switch(
    State(s): Api,
    Name(name): Name,
    by: By,
    Payload(body): Payload,
) -> Answer<Status> {
    let k: KillBody = json_body(&body)?;
    s.control(name, Control::KillSwitch(k.on), by).await
}

#[utoipa::path(get, path = "/v1/rollouts/{name}/explain", tag = "rollouts",
    params(("name" = String, Path, description = "A rollout's name, or a release id"), ExplainQuery),
    responses(
        (status = 200, description = "The decision timeline.", body = Explanation),
        (status = 400, description = "A bad parameter, named.", body = ErrorBody),
        (status = 404, description = "No such rollout.", body = ErrorBody)))]
async fn explain(
    State(s): Api,
    Name(name): Name,
    Params(q): Params<ExplainQuery>,
) -> Answer<Explanation> {
    let limit = limit(q.limit, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT)?;
    let (status, events) = s.ctl.timeline(name, limit).await?;
    Ok(Json(Explanation::of(status, &events)))
}

/// The MCP server for AI agents (Streamable HTTP): one JSON-RPC 2.0 message per POST,
/// answered with one JSON body. The caller's scope decides which tools it lists and may call.
/// MCP 2026-07-28 requests carry their `_meta` envelope and need no session; in the
/// handshake era `initialize` answers an `Mcp-Session-Id` for subscriptions.
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    request_body(content = Value, content_type = "application/json",
        description = "One JSON-RPC 2.0 message (MCP Streamable HTTP)."),
    responses(
        (status = 200, description = "The JSON-RPC response (a result, or an error with its code); for an MCP 2026-07-28 `subscriptions/listen`, server-sent events: its acknowledgement, then a notification per change of a resource it names.", body = Value),
        (status = 202, description = "A notification, taken."),
        (status = 400, description = "Not a JSON-RPC request (-32700 or -32600), or an unsupported MCP-Protocol-Version: a JSON-RPC error without id. In MCP 2026-07-28 also a request it cannot take (-32602, -32020, -32022), with its id.", body = Value),
        (status = 404, description = "MCP 2026-07-28: an unknown method (-32601), with its id.", body = Value),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn mcp(State(s): Api, headers: HeaderMap, Payload(body): Payload) -> Response {
    use crate::mcp::{self, Reply};
    let (caller, session) = match mcp_session(&s, &headers, false) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or_default());
    let routing = mcp::Routing {
        version: header(mcp::PROTOCOL_VERSION_HEADER),
        method: header(mcp::METHOD_HEADER),
        name: header(mcp::NAME_HEADER),
    };
    let known = |v: &&str| mcp::PROTOCOL_VERSIONS.contains(v) || mcp::MODERN_VERSIONS.contains(v);
    if let Some(v) = routing.version.filter(|v| !known(v)) {
        let e = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {
            "code": mcp::INVALID_REQUEST,
            "message": format!("{}: {v:?} is not one of {}, {}", mcp::PROTOCOL_VERSION_HEADER, mcp::MODERN_VERSIONS.join(", "), mcp::PROTOCOL_VERSIONS.join(", ")),
        }});
        return (StatusCode::BAD_REQUEST, Json(e)).into_response();
    }
    let cx = mcp::Context {
        ctl: &s.ctl,
        caller: &caller,
        sessions: &s.mcp,
        session: session.as_deref(),
        routing,
    };
    match mcp::handle(&cx, &body).await {
        Reply::Response(v) => Json(v).into_response(),
        Reply::Initialized(v, id) => {
            let mut r = Json(v).into_response();
            if let Ok(id) = HeaderValue::from_str(&id) {
                r.headers_mut()
                    .insert(crate::mcp_session::SESSION_HEADER, id);
            }
            r
        }
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Rejected(v) => (StatusCode::BAD_REQUEST, Json(v)).into_response(),
        Reply::Listen(listener) => match s.take(Limit::Sse) {
            Ok(slot) => mcp_events(&s, slot, listener),
            Err(e) => e.into_response(),
        },
        Reply::Failed(status, v) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            Json(v),
        )
            .into_response(),
    }
}

/// The caller, and the MCP session its request names (required with `need_session`): 401
/// for no caller, 400 for no session where one is needed, 404 for one that is not the
/// caller's (ended, dropped, or never made), as the transport says.
fn mcp_session(
    s: &Shared,
    headers: &HeaderMap,
    need_session: bool,
) -> Result<(crate::auth::Caller, Option<String>), ApiError> {
    use crate::mcp_session::SESSION_HEADER;
    let caller = s
        .config
        .auth
        .caller(headers, None)
        .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
    let session = headers
        .get(SESSION_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    match &session {
        None if need_session => Err(ApiError::bad(format!(
            "{SESSION_HEADER}: missing: send the session initialize answered"
        ))),
        Some(id) if !s.mcp.exists(id, &caller.key) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{SESSION_HEADER}: no such session: initialize again"),
        )),
        _ => Ok((caller, session)),
    }
}

/// The MCP session's stream: `notifications/resources/updated` for its subscriptions.
#[utoipa::path(get, path = "/mcp", tag = "mcp",
    params(("mcp-session-id" = String, Header, description = "The session `initialize` answered")),
    responses(
        (status = 200, description = "Server-sent events: a JSON-RPC notification per change of a subscribed resource, with heartbeats.", body = String, content_type = "text/event-stream"),
        (status = 400, description = "No session header.", body = ErrorBody),
        (status = 404, description = "No such session: initialize again.", body = ErrorBody),
        (status = 503, description = "All event streams are open; see Retry-After.", body = ErrorBody)))]
async fn mcp_stream(State(s): Api, headers: HeaderMap) -> Result<Response, ApiError> {
    let (_, session) = mcp_session(&s, &headers, true)?;
    let slot = s.take(Limit::Sse)?;
    let listener =
        crate::mcp_session::Listener::Session(Arc::clone(&s.mcp), session.unwrap_or_default());
    Ok(mcp_events(&s, slot, listener))
}

/// An MCP stream as a server-sent events response.
fn mcp_events(
    s: &Shared,
    slot: crate::slots::Slot,
    listener: crate::mcp_session::Listener,
) -> Response {
    let body = crate::mcp_session::stream(
        slot,
        &s.ctl,
        listener,
        s.config.heartbeat,
        s.shutdown.clone(),
    );
    let mut r = Response::new(Body::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Ends an MCP session (its subscriptions and stream).
#[utoipa::path(delete, path = "/mcp", tag = "mcp",
    params(("mcp-session-id" = String, Header, description = "The session `initialize` answered")),
    responses(
        (status = 204, description = "Ended."),
        (status = 400, description = "No session header.", body = ErrorBody),
        (status = 404, description = "No such session.", body = ErrorBody)))]
async fn mcp_end(State(s): Api, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let (caller, session) = mcp_session(&s, &headers, true)?;
    s.mcp.close(&session.unwrap_or_default(), &caller.key);
    Ok(StatusCode::NO_CONTENT)
}

/// The evidence report: JSON when the `Accept` header asks for `application/json`, else one
/// self-contained HTML file.
#[utoipa::path(get, path = "/v1/rollouts/{name}/report", tag = "rollouts",
    params(("name" = String, Path, description = "A rollout's name, or a release id")),
    responses(
        (status = 200, description = "The report.", content(
            (Report = "application/json"),
            (String = "text/html"))),
        (status = 404, description = "No such rollout.", body = ErrorBody)))]
async fn report(State(s): Api, Name(name): Name, headers: HeaderMap) -> Result<Response, ApiError> {
    let report = s.ctl.report(name).await?;
    if wants_json(&headers) {
        return Ok(Json(report).into_response());
    }
    let html = crate::report::html(&report)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("report: {e}")))?;
    Ok(page(html))
}

/// `Accept` names JSON (before any HTML it also names).
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let at = |what: &str| accept.find(what);
    match (at("application/json"), at("text/html")) {
        (Some(j), Some(h)) => j < h,
        (Some(_), None) => true,
        _ => false,
    }
}

#[utoipa::path(get, path = "/v1/history", tag = "rollouts",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Releases, newest first.", body = HistoryPage),
        (status = 400, description = "A bad parameter, named.", body = ErrorBody)))]
async fn history(State(s): Api, Params(q): Params<HistoryQuery>) -> Answer<HistoryPage> {
    let limit = limit(q.limit, DEFAULT_AUDIT_LIMIT, MAX_HISTORY)?;
    let name = q.name.filter(|n| !n.is_empty());
    let host = q.host.filter(|h| !h.is_empty());
    Ok(Json(HistoryPage {
        releases: s.ctl.history(name, host, limit).await?,
    }))
}

#[utoipa::path(get, path = "/v1/kill-switch", tag = "kill switch",
    responses(
        (status = 200, description = "The global kill switch.", body = KillSwitch)))]
async fn kill_switch(State(s): Api) -> Answer<KillSwitch> {
    Ok(Json(KillSwitch {
        on: s.ctl.kill_switch().await?,
    }))
}

#[utoipa::path(post, path = "/v1/kill-switch", tag = "kill switch",
    request_body = KillBody,
    responses(
        (status = 200, description = "Set.", body = KillSwitch),
        (status = 400, description = "An invalid body.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn set_kill_switch(State(s): Api, By(by): By, Payload(body): Payload) -> Answer<KillSwitch> {
    let k: KillBody = json_body(&body)?;
    Ok(Json(KillSwitch {
        on: s.ctl.set_kill_switch(k.on, by).await?,
    }))
}

/// What `POST /v1/alertmanager` did with a webhook.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertsReceived {
    /// Alerts in the payload.
    pub received: usize,
    /// Each (alert, rollout) pair whose selector matched, and what it did.
    pub matched: Vec<crate::controller::AlertOutcome>,
}

/// Alertmanager's webhook receiver (`webhook_configs` with `http_config.authorization`).
#[utoipa::path(post, path = "/v1/alertmanager", tag = "alerts",
    request_body = crate::alerts::Webhook,
    responses(
        (status = 200, description = "Taken: each match and what it did.", body = AlertsReceived),
        (status = 400, description = "Not an Alertmanager webhook payload, naming the field.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn alertmanager(State(s): Api, By(by): By, Payload(body): Payload) -> Answer<AlertsReceived> {
    let hook = crate::alerts::parse(&body)
        .map_err(|e| ApiError::bad(format!("invalid Alertmanager payload: {e}")))?;
    let received = hook.alerts.len();
    Ok(Json(AlertsReceived {
        received,
        matched: s.ctl.alerts(hook, by).await?,
    }))
}

/// Stored notifications, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotificationsPage {
    pub deliveries: Vec<crate::notify::Delivery>,
}

/// The receivers every rollout notifies (a rollout's own are in its spec's `notify`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Receivers {
    pub receivers: Vec<crate::notify::ReceiverSpec>,
}

/// What `POST /v1/receivers` did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiverPut {
    /// The receiver as stored, its secret redacted.
    pub receiver: crate::notify::ReceiverSpec,
    /// It replaced a receiver of the same name.
    pub replaced: bool,
}

#[utoipa::path(get, path = "/v1/notifications", tag = "notifications",
    params(NotificationsQuery),
    responses(
        (status = 200, description = "Deliveries, newest first; no signature or secret.", body = NotificationsPage),
        (status = 400, description = "A bad parameter, named.", body = ErrorBody)))]
async fn notifications(
    State(s): Api,
    Params(q): Params<NotificationsQuery>,
) -> Answer<NotificationsPage> {
    let limit = limit(q.limit, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT)?;
    let rollout = q.rollout.filter(|r| !r.is_empty());
    Ok(Json(NotificationsPage {
        deliveries: s.ctl.notifications(rollout, q.state, limit).await?,
    }))
}

/// Sends a failed (given up) delivery again, under its idempotency key.
#[utoipa::path(post, path = "/v1/notifications/{id}/resend", tag = "notifications",
    params(("id" = i64, Path, description = "A delivery's id")),
    responses(
        (status = 200, description = "Waiting to be sent again.", body = crate::notify::Delivery),
        (status = 400, description = "Not a delivery id.", body = ErrorBody),
        (status = 404, description = "No such delivery.", body = ErrorBody),
        (status = 409, description = "It has not failed.", body = ErrorBody)))]
async fn resend(State(s): Api, Path(id): Path<String>) -> Answer<crate::notify::Delivery> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("id: {id:?} is not a delivery id")))?;
    Ok(Json(s.ctl.resend(id).await?))
}

#[utoipa::path(get, path = "/v1/receivers", tag = "notifications",
    responses(
        (status = 200, description = "The global receivers, secrets redacted.", body = Receivers)))]
async fn receivers(State(s): Api) -> Answer<Receivers> {
    Ok(Json(Receivers {
        receivers: s.ctl.receivers().await?,
    }))
}

/// Adds a receiver every rollout notifies, or replaces the one of that name. It hears events
/// from now on.
#[utoipa::path(post, path = "/v1/receivers", tag = "notifications",
    request_body = crate::notify::ReceiverSpec,
    responses(
        (status = 200, description = "Stored.", body = ReceiverPut),
        (status = 400, description = "An invalid receiver, naming the field.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn put_receiver(State(s): Api, Payload(body): Payload) -> Answer<ReceiverPut> {
    let spec: crate::notify::ReceiverSpec = json_body(&body)?;
    let replaced = s.ctl.put_receiver(spec.clone()).await?;
    Ok(Json(ReceiverPut {
        receiver: spec.redacted(),
        replaced,
    }))
}

/// Removes a global receiver; what it was sent stays listed.
#[utoipa::path(delete, path = "/v1/receivers/{name}", tag = "notifications",
    params(("name" = String, Path, description = "The receiver's name")),
    responses(
        (status = 200, description = "Removed.", body = Receivers),
        (status = 404, description = "No such receiver.", body = ErrorBody)))]
async fn delete_receiver(State(s): Api, Path(name): Path<String>) -> Answer<Receivers> {
    s.ctl.delete_receiver(name).await?;
    Ok(Json(Receivers {
        receivers: s.ctl.receivers().await?,
    }))
}

/// `POST /v1/keys`: the key, and its secret, which is never shown again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    #[serde(flatten)]
    pub key: KeyInfo,
    /// Send as `Authorization: Bearer <secret>` or `x-api-key: <secret>`. Shown once: only
    /// its hash is stored.
    pub secret: String,
}

/// `GET /v1/keys`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "Every key, revoked ones included; never a secret or its hash.", body = KeyList)))]
async fn list_keys(State(s): Api) -> Answer<KeyList> {
    Ok(Json(KeyList {
        keys: s.ctl.keys().await?,
    }))
}

/// Makes a named key. Its secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body(content = KeySpec, example = json!({"name": "ci", "scope": "operate"})),
    responses(
        (status = 201, description = "Made; the secret is shown this once.", body = KeyCreated),
        (status = 400, description = "An invalid spec, naming the field.", body = ErrorBody),
        (status = 409, description = "A key of that name exists, or existed and was revoked.", body = ErrorBody),
        (status = 413, description = "The body is over the limit.", body = ErrorBody)))]
async fn create_key(
    State(s): Api,
    By(by): By,
    Payload(body): Payload,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    let spec: KeySpec = json_body(&body)?;
    let (key, secret) = s.ctl.create_key(spec, by).await?;
    Ok((StatusCode::CREATED, Json(KeyCreated { key, secret })))
}

/// Revokes a key: it is refused from the next request on. Its name is not used again.
#[utoipa::path(delete, path = "/v1/keys/{name}", tag = "keys",
    params(("name" = String, Path, description = "The key's name")),
    responses(
        (status = 200, description = "Revoked.", body = KeyInfo),
        (status = 404, description = "No such key.", body = ErrorBody),
        (status = 409, description = "Revoked already.", body = ErrorBody)))]
async fn revoke_key(State(s): Api, By(by): By, Path(name): Path<String>) -> Answer<KeyInfo> {
    Ok(Json(s.ctl.revoke_key(name, by).await?))
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "Events after `after`, oldest first.", body = AuditPage),
        (status = 400, description = "A bad parameter, named.", body = ErrorBody)))]
async fn audit(State(s): Api, Params(q): Params<AuditQuery>) -> Answer<AuditPage> {
    let after = q.after.unwrap_or(0);
    let limit = limit(q.limit, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT)?;
    let rollout = q.rollout.filter(|r| !r.is_empty());
    let events = s.ctl.events(after, rollout, limit).await?;
    let next_after = events.last().map_or(after, |e| e.id);
    Ok(Json(AuditPage { events, next_after }))
}

/// `GET /v1/snapshot?version=N&epoch=E&timeout_ms=T`: 200 with the snapshot at once when the
/// caller's version differs from the current one (or is absent), or its epoch does (a filter
/// that knows epochs always sends one, empty before it has one); otherwise wait for a change
/// (200) or the timeout (304, empty body). Without `epoch`, as before epochs.
#[utoipa::path(get, path = "/v1/snapshot", tag = "filters",
    params(SnapshotQuery,
        ("x-linnet-poller" = Option<String>, Header, description = "The poller's id, for metrics")),
    responses(
        (status = 200, description = "The snapshot.", body = Object,
            headers(("x-linnet-version" = u64), ("x-linnet-epoch" = String))),
        (status = 304, description = "Nothing changed before the timeout.",
            headers(("x-linnet-version" = u64), ("x-linnet-epoch" = String))),
        (status = 400, description = "A bad parameter, named.", body = ErrorBody),
        (status = 503, description = "All held polls are taken; see Retry-After.", body = ErrorBody)))]
async fn snapshot(
    State(s): Api,
    headers: HeaderMap,
    Params(q): Params<SnapshotQuery>,
) -> Result<Response, ApiError> {
    let timeout_ms = match q.timeout_ms {
        None => DEFAULT_POLL_TIMEOUT_MS,
        Some(t) => u64::try_from(t)
            .unwrap_or(0)
            .clamp(POLL_TIMEOUT_RANGE_MS.0, POLL_TIMEOUT_RANGE_MS.1),
    };
    let timeout = Duration::from_millis(timeout_ms);
    if let Some(id) = headers.get(POLLER_HEADER).and_then(|v| v.to_str().ok()) {
        if !id.is_empty() && id.len() <= 256 {
            s.ctl.metrics().saw_poller(id, timeout);
        }
    }
    let mut rx = s.ctl.snapshot();
    let current = rx.borrow_and_update().clone();
    let have = q.version.and_then(|v| u64::try_from(v).ok());
    // Another run's version N says nothing about this run's N.
    let other_epoch = q.epoch.is_some_and(|e| e != current.epoch.as_str());
    if have != Some(current.version) || other_epoch {
        return Ok(snapshot_body(&current));
    }
    // Held from here until answered, or dropped with the request if the client goes.
    let _slot = s.take(Limit::Polls)?;
    let mut shutdown = s.shutdown.clone();
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

#[utoipa::path(get, path = "/v1/events", tag = "audit",
    params(EventsQuery,
        ("last-event-id" = Option<i64>, Header, description = "Replay after this id")),
    responses(
        (status = 200, description = "Server-sent events: replay, then live, with heartbeats.", body = String, content_type = "text/event-stream"),
        (status = 400, description = "A bad event id.", body = ErrorBody),
        (status = 503, description = "All event streams are open; see Retry-After.", body = ErrorBody)))]
async fn events(
    State(s): Api,
    headers: HeaderMap,
    Params(q): Params<EventsQuery>,
) -> Result<Response, ApiError> {
    let header = headers
        .get(LAST_EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let after = match header.or(q.last_event_id).as_deref() {
        None | Some("") => 0,
        Some("latest") => s.ctl.last_event_id().await?,
        Some(s) => s.trim().parse::<i64>().map_err(|_| {
            ApiError::bad(format!("last_event_id: {s:?} is not an integer event id"))
        })?,
    };
    let rollout = q.rollout.filter(|r| !r.is_empty());
    let slot = s.take(Limit::Sse)?;
    let body = sse::stream(
        slot,
        s.ctl.clone(),
        after,
        rollout,
        s.config.heartbeat,
        s.shutdown.clone(),
    );
    let mut r = Response::new(Body::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn snapshot_body(p: &crate::controller::Published) -> Response {
    let mut r = Response::new(Body::from(p.body.clone()));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    stamp_headers(h, p);
    r
}

fn not_modified(p: &crate::controller::Published) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    stamp_headers(r.headers_mut(), p);
    r
}

/// The version and epoch the answer is about, in the body's words (a 304 has no body).
fn stamp_headers(h: &mut HeaderMap, p: &crate::controller::Published) {
    h.insert(VERSION_HEADER, HeaderValue::from(p.version));
    // An epoch is 1 to 64 of A-Z a-z 0-9 - _, which is always a valid header value.
    if let Ok(epoch) = HeaderValue::from_str(p.epoch.as_str()) {
        h.insert(EPOCH_HEADER, epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_openapi_json_is_the_generated_one() {
        let generated = openapi_json_text().unwrap() + "\n";
        let shipped = include_str!("../openapi.json");
        assert!(
            generated == shipped,
            "sidecar/openapi.json is stale: regenerate it with `cargo run -q -p linnet-sidecar -- openapi > sidecar/openapi.json`"
        );
    }

    #[test]
    fn every_route_is_documented_once() {
        let doc = openapi();
        let mut seen = Vec::new();
        for op in routes() {
            let item = doc.paths.paths.get(&op.path).unwrap();
            let documented = match op.method {
                Method::POST => item.post.is_some(),
                Method::PUT => item.put.is_some(),
                Method::DELETE => item.delete.is_some(),
                _ => item.get.is_some(),
            };
            assert!(documented, "{} {}", op.method, op.path);
            let key = (op.method.clone(), op.path.clone());
            assert!(!seen.contains(&key), "{} {} twice", op.method, op.path);
            seen.push(key);
        }
        assert_eq!(seen.len(), 38);
    }

    #[test]
    fn query_decoding() {
        #[derive(Deserialize, Debug)]
        struct Q {
            a: Option<String>,
            b: Option<String>,
            c: Option<String>,
            d: Option<String>,
            e: Option<String>,
            #[serde(default, deserialize_with = "non_negative")]
            n: Option<i64>,
        }
        let uri: hyper::Uri = "/x?a=1&b=x%20y+z&c&d=%zz&e=%4".parse().unwrap();
        let q: Q = query(&uri).unwrap();
        assert_eq!(q.a.as_deref(), Some("1"));
        assert_eq!(q.b.as_deref(), Some("x y z"));
        assert_eq!(q.c.as_deref(), Some(""));
        assert_eq!(q.d.as_deref(), Some("%zz"));
        assert_eq!(q.e.as_deref(), Some("%4"));
        assert_eq!(q.n, None);
        let uri: hyper::Uri = "/x?n=b".parse().unwrap();
        let e = query::<Q>(&uri).unwrap_err();
        assert_eq!(e, "n: \"b\" is not a non-negative integer");
    }
}
