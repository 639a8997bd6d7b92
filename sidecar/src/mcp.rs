//! The Model Context Protocol server at `/mcp`: AI agents list rollouts, read their status and
//! timeline, start a canary from a spec and control it, within their key's scope.
//!
//! JSON-RPC 2.0 over the Streamable HTTP transport, in two eras at the same route: every POST
//! carries one message and is answered with one JSON body, so the route sits in the API's one
//! table behind its body limit and token check like any other.
//!
//! - MCP 2026-07-28, the current revision ([`crate::mcp_modern`]): no handshake, no session;
//!   each request carries its protocol version and client capabilities in `params._meta`,
//!   `server/discover` says what the server speaks, `subscriptions/listen` is answered with
//!   a stream of resource updates. A request is of this era when its
//!   `MCP-Protocol-Version` header, its envelope or its method says so.
//! - The handshake era (2025-11-25, negotiated down to 2025-03-26), answered here as before:
//!   `initialize` makes a session ([`crate::mcp_session`]) only for subscriptions, told on
//!   `GET /mcp`; everything else needs none. An unknown resource is -32002 as that era's
//!   spec says (2026-07-28 made it -32602, SEP-2164).
//!
//! The JSON-RPC layer is written here rather than taken from `rmcp`, for measured reasons
//! (rmcp 3.11.0, its Streamable HTTP service in stateless JSON mode, probed on 2026-12-07 with
//! the bad messages sidecar/tests/mcp.rs and e2e/mcp/client.py send): 12 of those 19 bodies
//! (not JSON, a batch, no `jsonrpc`, a bad `id` or `method`, `params` not an object) get a
//! hard-coded plain-text 415 with no JSON-RPC code; a tool name or `arguments` of the wrong
//! type get -32601; an unknown argument is ignored; and it reads the body itself, so the
//! router's body limit does not reach it (a 2 MiB call ran). It would also add 49 crates (25
//! new to this lock, and second major versions of sha2 and digest) and about 4.9 MB to a
//! release binary. Here the route sits in the API's one table (the guard, the body limit
//! and timeout, the metrics labels, the OpenAPI operation), and every answer is JSON-RPC.
//!
//! Tools are one table ([`TOOLS`]): name, scope, hints, parameters. `tools/list` shows a
//! caller the tools its scope allows; calling any other is `-32602` naming the scope needed.
//! Arguments are checked against the same parameters: a wrong, missing or unknown one is a
//! tool error naming it (MCP 2025-11-25, SEP-1303, kept in 2026-07-28), as is what the
//! controller refuses (a bad spec, naming its field; a rollout not found; a control the state
//! does not allow): `isError: true`, which the agent can read and fix. Both eras share the
//! tools, the scopes and the resources.

use crate::api::{Created, Explanation, RolloutList};
use crate::auth::{Caller, Scope};
use crate::controller::{Controller, CtlError, RolloutRef};
use crate::machine::Control;
use crate::mcp_session::Sessions;
use crate::spec::{Format, RolloutSpec};
use linnet_core::SnapshotDoc;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::pin::Pin;

/// Handshake-era revisions this server speaks, newest first; `initialize` answers the
/// client's if listed, else the newest.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// Stateless-era revisions (no handshake: every request carries its own `_meta` envelope),
/// what `server/discover` answers as `supportedVersions`.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
/// 2026-07-28 routing headers, checked against the body they travel with.
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";
/// The 2026-07-28 per-request envelope in `params._meta`: the first two are required.
pub(crate) const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub(crate) const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub(crate) const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// JSON-RPC 2.0 and MCP error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2025-era code for a resource URI that names nothing (2026-07-28 uses -32602).
pub const RESOURCE_NOT_FOUND: i64 = -32002;
/// 2026-07-28: a routing header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// 2026-07-28: the envelope's protocol version is not one this server speaks.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

const DEFAULT_TIMELINE: usize = 100;
const MAX_TIMELINE: u64 = 1000;
const URI_PREFIX: &str = "linnet://rollouts/";
const TIMELINE_SUFFIX: &str = "/timeline";

/// What one POST to `/mcp` is answered with.
pub enum Reply {
    /// A response to a request (200).
    Response(Value),
    /// `initialize`'s response, and the session it made (sent as `Mcp-Session-Id`).
    Initialized(Value, String),
    /// A notification or a client's response was taken (202, no body).
    Accepted,
    /// Not a JSON-RPC message this server takes: a 400 carrying a JSON-RPC error without id.
    Rejected(Value),
    /// A 2026-07-28 error response, with the HTTP status that era's transport gives its code.
    Failed(u16, Value),
    /// A 2026-07-28 `subscriptions/listen`: its response is the stream of what it asked for.
    Listen(crate::mcp_session::Listener),
}

/// A JSON-RPC error: its code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

/// What a tool answers: its result as JSON, or a refusal the agent reads (`isError`).
type ToolResult = Result<Value, ToolFailure>;

enum ToolFailure {
    /// The tool ran and was refused: a tool result with `isError: true`.
    Refused(String),
    /// The server failed: a JSON-RPC internal error.
    Internal(String),
}

// === the tool table ===

/// An argument's JSON type, as its schema declares and [`check_arguments`] enforces.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Bool,
    /// An integer in `1..=max`.
    Count(u64),
    /// A spec: YAML or JSON text, or a JSON object.
    Spec,
}

#[derive(Debug)]
struct Param {
    name: &'static str,
    kind: Kind,
    required: bool,
    description: &'static str,
}

/// What an agent is told a tool does to the world.
#[derive(Debug, Clone, Copy)]
struct Hints {
    read_only: bool,
    destructive: bool,
    idempotent: bool,
}

#[derive(Debug)]
pub struct Tool {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    scope: Scope,
    hints: Hints,
    params: &'static [Param],
    call: Call,
}

type Args = Map<String, Value>;
type ToolFuture<'a> = Pin<Box<dyn Future<Output = ToolResult> + Send + 'a>>;
/// A tool's handler, given arguments [`check_arguments`] passed.
type Call = for<'a> fn(&'a Controller, &'a Caller, &'a Args) -> ToolFuture<'a>;

const READS: Hints = Hints {
    read_only: true,
    destructive: false,
    idempotent: true,
};
/// Changes what traffic sees, and can be undone (pause/resume, a further step).
const STEERS: Hints = Hints {
    read_only: false,
    destructive: false,
    idempotent: false,
};
/// Ends a rollout for good.
const ENDS: Hints = Hints {
    read_only: false,
    destructive: true,
    idempotent: false,
};

const NAME: Param = Param {
    name: "name",
    kind: Kind::Str,
    required: true,
    description: "A rollout's name (its unfinished rollout, else its latest) or a release id",
};

/// Every tool, once: what `tools/list` shows, what `tools/call` checks.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "list_rollouts",
        title: "List rollouts",
        description: "The unfinished rollouts: state, step, canary weight. A finished one is read by name with rollout_status or explain.",
        scope: Scope::Read,
        hints: READS,
        params: &[],
        call: list_rollouts,
    },
    Tool {
        name: "rollout_status",
        title: "Rollout status",
        description: "One rollout's state, step, weight, analysis and what it waits for.",
        scope: Scope::Read,
        hints: READS,
        params: &[NAME],
        call: rollout_status,
    },
    Tool {
        name: "explain",
        title: "Explain a rollout",
        description: "A rollout's decision timeline in plain words: steps, analysis checks, rollbacks, and why.",
        scope: Scope::Read,
        hints: READS,
        params: &[
            NAME,
            Param {
                name: "limit",
                kind: Kind::Count(MAX_TIMELINE),
                required: false,
                description: "How many of the latest events to read (default 100, at most 1000)",
            },
        ],
        call: tool_explain,
    },
    Tool {
        name: "whereis",
        title: "Where a user key goes",
        description: "Which variant (stable or canary) a user key gets in a rollout, and why, from the live snapshot the filters use.",
        scope: Scope::Read,
        hints: READS,
        params: &[
            NAME,
            Param {
                name: "key",
                kind: Kind::Str,
                required: true,
                description: "The user key a request carries (the rollout's stickiness source)",
            },
        ],
        call: tool_whereis,
    },
    Tool {
        name: "pause",
        title: "Pause",
        description: "Stops stepping; the canary keeps its weight.",
        scope: Scope::Operate,
        hints: STEERS,
        params: &[NAME],
        call: pause,
    },
    Tool {
        name: "resume",
        title: "Resume",
        description: "Steps again after a pause.",
        scope: Scope::Operate,
        hints: STEERS,
        params: &[NAME],
        call: resume,
    },
    Tool {
        name: "promote",
        title: "Promote",
        description: "Ends the current step's wait and goes to the next step, or with full to 100%.",
        scope: Scope::Operate,
        hints: STEERS,
        params: &[
            NAME,
            Param {
                name: "full",
                kind: Kind::Bool,
                required: false,
                description: "Skip the remaining steps and send all traffic to the canary",
            },
        ],
        call: promote,
    },
    Tool {
        name: "abort",
        title: "Abort",
        description: "Sends all traffic back to stable (weight 0) and ends the rollout for good.",
        scope: Scope::Operate,
        hints: ENDS,
        params: &[NAME],
        call: abort,
    },
    Tool {
        name: "complete",
        title: "Complete",
        description: "Hands a fully promoted rollout over: the canary is the release; the rollout ends.",
        scope: Scope::Operate,
        hints: ENDS,
        params: &[NAME],
        call: complete,
    },
    Tool {
        name: "start_rollout",
        title: "Start a rollout",
        description: "Creates and starts a canary rollout from a spec (the same YAML or JSON as `linnet rollout create`). An invalid spec is refused with every error naming its field.",
        scope: Scope::Admin,
        hints: STEERS,
        params: &[
            Param {
                name: "spec",
                kind: Kind::Spec,
                required: true,
                description: "The rollout spec: YAML or JSON text, or a JSON object",
            },
            Param {
                name: "format",
                kind: Kind::Str,
                required: false,
                description: "`yaml` (the default for text; JSON is YAML too) or `json`",
            },
        ],
        call: tool_start_rollout,
    },
];

// === impl Tool ===

impl Tool {
    fn find(name: &str) -> Option<&'static Tool> {
        TOOLS.iter().find(|t| t.name == name)
    }

    /// The tool as `tools/list` shows it.
    fn listing(&self) -> Value {
        let mut properties = Map::new();
        for p in self.params {
            properties.insert(p.name.into(), p.schema());
        }
        let required: Vec<&str> = self
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name)
            .collect();
        json!({
            "name": self.name,
            "title": self.title,
            "description": format!("{} Needs scope {}.", self.description, self.scope.as_str()),
            "inputSchema": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            },
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.hints.read_only,
                "destructiveHint": self.hints.destructive,
                "idempotentHint": self.hints.idempotent,
                "openWorldHint": false,
            },
        })
    }
}

impl Param {
    fn schema(&self) -> Value {
        let mut s = match self.kind {
            Kind::Str => json!({"type": "string"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Count(max) => json!({"type": "integer", "minimum": 1, "maximum": max}),
            Kind::Spec => json!({"type": ["string", "object"]}),
        };
        s["description"] = Value::from(self.description);
        s
    }

    /// `Err` names the argument and what it should be.
    fn check(&self, v: &Value) -> Result<(), String> {
        let ok = match self.kind {
            Kind::Str => v.is_string(),
            Kind::Bool => v.is_boolean(),
            Kind::Count(max) => v.as_u64().is_some_and(|n| (1..=max).contains(&n)),
            Kind::Spec => v.is_string() || v.is_object(),
        };
        if ok {
            return Ok(());
        }
        let want = match self.kind {
            Kind::Str => "a string".to_owned(),
            Kind::Bool => "a boolean".to_owned(),
            Kind::Count(max) => format!("an integer from 1 to {max}"),
            Kind::Spec => "YAML or JSON text, or an object".to_owned(),
        };
        Err(format!("argument {}: expected {want}, got {v}", self.name))
    }
}

/// The tool's arguments checked against its parameters: no unknown one, every required one,
/// each of its type. `Err` names the argument.
fn check_arguments(tool: &Tool, args: &Map<String, Value>) -> Result<(), String> {
    if let Some(unknown) = args
        .keys()
        .find(|k| !tool.params.iter().any(|p| p.name == k.as_str()))
    {
        let known: Vec<&str> = tool.params.iter().map(|p| p.name).collect();
        return Err(format!(
            "argument {unknown}: {} takes no such argument (it takes: {})",
            tool.name,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    }
    for p in tool.params {
        match args.get(p.name) {
            Some(v) => p.check(v)?,
            None if p.required => return Err(format!("argument {}: missing", p.name)),
            None => {}
        }
    }
    Ok(())
}

// === the JSON-RPC layer ===

/// Who asks, in which session, of what.
pub struct Context<'a> {
    pub ctl: &'a Controller,
    pub caller: &'a Caller,
    pub sessions: &'a Sessions,
    /// The `Mcp-Session-Id` sent, already checked to be one of the caller's.
    pub session: Option<&'a str>,
    /// The routing headers sent, if any (the stdio bridge relays bodies without them).
    pub routing: Routing<'a>,
}

/// The `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers of one POST.
#[derive(Debug, Default, Clone, Copy)]
pub struct Routing<'a> {
    pub version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Answers one POSTed body.
pub async fn handle(cx: &Context<'_>, body: &[u8]) -> Reply {
    let ctl = cx.ctl;
    let caller = cx.caller;
    let msg: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return rejected(PARSE_ERROR, format!("parse error: not JSON: {e}")),
    };
    let Value::Object(msg) = msg else {
        let what = if msg.is_array() {
            "a batch: this server takes one message per POST (MCP 2025-06-18 removed batches)"
        } else {
            "not a JSON-RPC message object"
        };
        return rejected(INVALID_REQUEST, format!("invalid request: {what}"));
    };
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rejected(INVALID_REQUEST, "invalid request: jsonrpc: must be \"2.0\"");
    }
    let id = match msg.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(other) => {
            return rejected(
                INVALID_REQUEST,
                format!("invalid request: id: must be a string or a number, got {other}"),
            )
        }
    };
    let method = match msg.get("method") {
        Some(Value::String(m)) => m.as_str(),
        Some(other) => {
            return rejected(
                INVALID_REQUEST,
                format!("invalid request: method: must be a string, got {other}"),
            )
        }
        // A response to a request of ours: this server sends none, so there is nothing to do.
        None if msg.contains_key("result") || msg.contains_key("error") => return Reply::Accepted,
        None => return rejected(INVALID_REQUEST, "invalid request: method: missing"),
    };
    // Notifications (initialized, cancelled) need nothing: no request of ours is pending.
    let Some(id) = id else {
        return Reply::Accepted;
    };
    let params = match msg.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(other) => {
            return Reply::Response(error_response(
                id,
                INVALID_PARAMS,
                format!("params: must be an object, got {other}"),
            ))
        }
    };
    if is_modern(cx.routing, method, &params) {
        return crate::mcp_modern::handle(cx, id, method, &params).await;
    }
    if method == "initialize" {
        let result = initialize(&params);
        return match cx.sessions.open(&caller.key) {
            Ok(session) => Reply::Initialized(
                json!({"jsonrpc": "2.0", "id": id, "result": result}),
                session,
            ),
            // Without a session everything but subscriptions still works.
            Err(e) => {
                tracing::warn!("mcp: {e}");
                Reply::Response(json!({"jsonrpc": "2.0", "id": id, "result": result}))
            }
        };
    }
    let answer = match method {
        "ping" => Ok(json!({})),
        "tools/list" => Ok(tools_list(caller)),
        "tools/call" => tools_call(ctl, caller, &params).await,
        "resources/list" => resources_list(ctl).await,
        "resources/templates/list" => Ok(resource_templates()),
        "resources/read" => resources_read(ctl, &params, RESOURCE_NOT_FOUND).await,
        "resources/subscribe" => subscribe(cx, &params, true).await,
        "resources/unsubscribe" => subscribe(cx, &params, false).await,
        other => Err(RpcError {
            code: METHOD_NOT_FOUND,
            message: format!("method not found: {other}"),
        }),
    };
    Reply::Response(match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => error_response(id, e.code, e.message),
    })
}

/// Whether a request is of the 2026-07-28 era: it says so by its version header, its
/// `_meta` envelope, or its method (`server/discover` exists in no handshake revision).
/// Everything else is answered as the handshake era always was.
fn is_modern(routing: Routing<'_>, method: &str, params: &Map<String, Value>) -> bool {
    routing
        .version
        .is_some_and(|v| !PROTOCOL_VERSIONS.contains(&v))
        || params
            .get("_meta")
            .and_then(Value::as_object)
            .is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION))
        || method == "server/discover"
}

pub(crate) fn error_response(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// A message that is not a request this server can answer by id.
fn rejected(code: i64, message: impl Into<String>) -> Reply {
    Reply::Rejected(error_response(Value::Null, code, message))
}

pub(crate) fn invalid_params(message: impl Into<String>) -> RpcError {
    RpcError {
        code: INVALID_PARAMS,
        message: message.into(),
    }
}

pub(crate) const INSTRUCTIONS: &str = "Linnet runs canary rollouts for Envoy. list_rollouts and rollout_status show where each stands; explain says why; start_rollout takes the same spec as `linnet rollout create`; abort sends all traffic back to stable. The tools listed are the ones this key's scope allows.";

pub(crate) fn server_info() -> Value {
    json!({"name": "linnet", "title": "Linnet canary rollouts", "version": env!("CARGO_PKG_VERSION")})
}

fn initialize(params: &Map<String, Value>) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| Some(**v) == asked)
        .unwrap_or(&PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
        },
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

pub(crate) fn tools_list(caller: &Caller) -> Value {
    let tools: Vec<Value> = TOOLS
        .iter()
        .filter(|t| t.scope <= caller.scope)
        .map(Tool::listing)
        .collect();
    json!({ "tools": tools })
}

pub(crate) async fn tools_call(
    ctl: &Controller,
    caller: &Caller,
    params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    let name = match params.get("name") {
        Some(Value::String(n)) => n.as_str(),
        Some(other) => {
            return Err(invalid_params(format!(
                "name: must be a string, got {other}"
            )))
        }
        None => return Err(invalid_params("name: missing: the tool to call")),
    };
    let tool = Tool::find(name).ok_or_else(|| invalid_params(format!("unknown tool: {name}")))?;
    if tool.scope > caller.scope {
        // Unlisted for this caller, so unknown to it: the same code, and the scope it needs.
        return Err(invalid_params(format!(
            "tool {name} needs scope {}; key {:?} has scope {}",
            tool.scope.as_str(),
            caller.key,
            caller.scope.as_str()
        )));
    }
    let args = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(other) => {
            return Err(invalid_params(format!(
                "arguments: must be an object, got {other}"
            )))
        }
    };
    if let Err(m) = check_arguments(tool, &args) {
        // Input validation is a tool execution error in MCP 2025-11-25 (SEP-1303): the agent
        // reads it and calls again, instead of a protocol error it may not show the model.
        return Ok(tool_result(Value::from(m), true));
    }
    match (tool.call)(ctl, caller, &args).await {
        Ok(v) => Ok(tool_result(v, false)),
        Err(ToolFailure::Refused(m)) => Ok(tool_result(Value::from(m), true)),
        Err(ToolFailure::Internal(m)) => Err(RpcError {
            code: INTERNAL_ERROR,
            message: m,
        }),
    }
}

/// A tool's result: its JSON as text, and as structured content when it is an object.
fn tool_result(v: Value, is_error: bool) -> Value {
    let text = match &v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut r = json!({"content": [{"type": "text", "text": text}], "isError": is_error});
    if v.is_object() {
        r["structuredContent"] = v;
    }
    r
}

// === the tools, one function each ===

/// Arguments checked by [`check_arguments`], so only their presence is in question here.
fn arg_str<'a>(args: &'a Map<String, Value>, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or_default()
}

fn rollout(args: &Map<String, Value>) -> RolloutRef {
    RolloutRef::parse(arg_str(args, "name"))
}

fn list_rollouts<'a>(ctl: &'a Controller, _: &'a Caller, _: &'a Args) -> ToolFuture<'a> {
    Box::pin(async move {
        to_json(&RolloutList {
            rollouts: ctl.list().await?,
        })
    })
}

fn rollout_status<'a>(ctl: &'a Controller, _: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(async move { to_json(&ctl.status(rollout(args)).await?) })
}

fn tool_explain<'a>(ctl: &'a Controller, _: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(explain(ctl, args))
}

fn tool_whereis<'a>(ctl: &'a Controller, _: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(std::future::ready(whereis(ctl, args)))
}

fn pause<'a>(ctl: &'a Controller, by: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(control(ctl, by, args, Control::Pause))
}

fn resume<'a>(ctl: &'a Controller, by: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(control(ctl, by, args, Control::Resume))
}

fn promote<'a>(ctl: &'a Controller, by: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    let full = args.get("full").and_then(Value::as_bool).unwrap_or(false);
    Box::pin(control(ctl, by, args, Control::Promote { full }))
}

fn abort<'a>(ctl: &'a Controller, by: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(control(ctl, by, args, Control::Abort))
}

fn complete<'a>(ctl: &'a Controller, by: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(control(ctl, by, args, Control::Complete))
}

fn tool_start_rollout<'a>(ctl: &'a Controller, by: &'a Caller, args: &'a Args) -> ToolFuture<'a> {
    Box::pin(start_rollout(ctl, by, args))
}

fn to_json<T: Serialize>(v: &T) -> ToolResult {
    serde_json::to_value(v).map_err(|e| ToolFailure::Internal(format!("serializing: {e}")))
}

async fn control(ctl: &Controller, by: &Caller, args: &Args, c: Control) -> ToolResult {
    to_json(&ctl.control(rollout(args), c, by.key.clone()).await?)
}

async fn explain(ctl: &Controller, args: &Map<String, Value>) -> ToolResult {
    let limit = args
        .get("limit")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_TIMELINE);
    let (status, events) = ctl.timeline(rollout(args), limit).await?;
    to_json(&Explanation::of(status, &events))
}

fn whereis(ctl: &Controller, args: &Map<String, Value>) -> ToolResult {
    let body = ctl.snapshot().borrow().body.clone();
    let doc = SnapshotDoc::from_json(&body)
        .map_err(|e| ToolFailure::Internal(format!("the snapshot: {e}")))?;
    let (name, key) = (arg_str(args, "name"), arg_str(args, "key"));
    let answer = crate::cli::where_key_goes(&doc, name, key).map_err(ToolFailure::Refused)?;
    Ok(json!({"rollout": name, "key": key, "answer": answer}))
}

async fn start_rollout(ctl: &Controller, by: &Caller, args: &Args) -> ToolResult {
    let format = match args.get("format").and_then(Value::as_str) {
        None | Some("yaml") => Format::Yaml,
        Some("json") => Format::Json,
        Some(other) => {
            return Err(ToolFailure::Refused(format!(
                "format: {other:?} is neither yaml nor json"
            )))
        }
    };
    let (text, format) = match args.get("spec") {
        Some(Value::String(s)) => (s.clone(), format),
        Some(object) => (object.to_string(), Format::Json),
        None => (String::new(), format),
    };
    let (spec, plan) = RolloutSpec::parse(text.as_bytes(), format)
        .map_err(|e| ToolFailure::Refused(format!("invalid rollout spec: {e}")))?;
    let warnings = spec.warnings(&plan);
    let status = ctl.create(spec, plan, by.key.clone()).await?;
    to_json(&Created { status, warnings })
}

impl From<CtlError> for ToolFailure {
    fn from(e: CtlError) -> Self {
        match e {
            CtlError::Store(_) => {
                tracing::error!(error = %e, "mcp tool failed");
                ToolFailure::Internal(e.to_string())
            }
            other => ToolFailure::Refused(other.to_string()),
        }
    }
}

// === resources ===

/// The resources of one rollout: `linnet://rollouts/{name}` and its `/timeline`.
#[derive(Debug, PartialEq)]
pub(crate) enum Resource {
    Status(String),
    Timeline(String),
}

impl Resource {
    pub(crate) fn parse(uri: &str) -> Option<Resource> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (name, timeline) = match rest.strip_suffix(TIMELINE_SUFFIX) {
            Some(name) => (name, true),
            None => (rest, false),
        };
        if name.is_empty() || name.contains('/') {
            return None;
        }
        Some(if timeline {
            Resource::Timeline(name.to_owned())
        } else {
            Resource::Status(name.to_owned())
        })
    }
}

pub(crate) async fn resources_list(ctl: &Controller) -> Result<Value, RpcError> {
    let rollouts = ctl.list().await.map_err(internal)?;
    let mut resources = Vec::with_capacity(rollouts.len() * 2);
    for r in rollouts {
        resources.push(json!({
            "uri": format!("{URI_PREFIX}{}", r.name),
            "name": r.name,
            "title": format!("Rollout {} (release {})", r.name, r.id),
            "mimeType": "application/json",
        }));
        resources.push(json!({
            "uri": format!("{URI_PREFIX}{}{TIMELINE_SUFFIX}", r.name),
            "name": format!("{}{TIMELINE_SUFFIX}", r.name),
            "title": format!("Rollout {}: decision timeline", r.name),
            "mimeType": "application/json",
        }));
    }
    Ok(json!({ "resources": resources }))
}

pub(crate) fn resource_templates() -> Value {
    json!({"resourceTemplates": [
        {
            "uriTemplate": format!("{URI_PREFIX}{{name}}"),
            "name": "rollout",
            "title": "A rollout's status",
            "mimeType": "application/json",
        },
        {
            "uriTemplate": format!("{URI_PREFIX}{{name}}{TIMELINE_SUFFIX}"),
            "name": "rollout-timeline",
            "title": "A rollout's decision timeline",
            "mimeType": "application/json",
        },
    ]})
}

/// Whether resource `uri` is one of `rollout`'s.
pub fn uri_names(uri: &str, rollout: &str) -> bool {
    match Resource::parse(uri) {
        Some(Resource::Status(n) | Resource::Timeline(n)) => n == rollout,
        None => false,
    }
}

fn uri_param(params: &Map<String, Value>) -> Result<&str, RpcError> {
    match params.get("uri") {
        Some(Value::String(u)) => Ok(u.as_str()),
        Some(other) => Err(invalid_params(format!(
            "uri: must be a string, got {other}"
        ))),
        None => Err(invalid_params("uri: missing")),
    }
}

/// `resources/subscribe` (`on`) and `resources/unsubscribe`: the session's, told on its
/// `GET /mcp` stream. A subscription is to a rollout that exists, by its name.
async fn subscribe(
    cx: &Context<'_>,
    params: &Map<String, Value>,
    on: bool,
) -> Result<Value, RpcError> {
    let uri = uri_param(params)?;
    let Some(session) = cx.session else {
        return Err(RpcError {
            code: INVALID_REQUEST,
            message:
                "subscriptions need a session: send the Mcp-Session-Id header initialize answered"
                    .into(),
        });
    };
    if !on {
        cx.sessions.unsubscribe(session, uri);
        return Ok(json!({}));
    }
    let not_found = |why: String| RpcError {
        code: RESOURCE_NOT_FOUND,
        message: format!("resource not found: {uri}: {why}"),
    };
    let (Resource::Status(name) | Resource::Timeline(name)) =
        Resource::parse(uri).ok_or_else(|| {
            not_found(format!(
                "expected {URI_PREFIX}{{name}} or {URI_PREFIX}{{name}}{TIMELINE_SUFFIX}"
            ))
        })?;
    cx.ctl
        .status(RolloutRef::Name(name))
        .await
        .map_err(|e| match e {
            CtlError::NotFound(m) => not_found(m),
            other => internal(other),
        })?;
    cx.sessions
        .subscribe(session, uri)
        .map_err(invalid_params)?;
    Ok(json!({}))
}

/// `resources/read`; a URI that names nothing is `not_found` (-32002 in the handshake
/// era, -32602 in 2026-07-28).
pub(crate) async fn resources_read(
    ctl: &Controller,
    params: &Map<String, Value>,
    not_found: i64,
) -> Result<Value, RpcError> {
    let uri = uri_param(params)?;
    let code = not_found;
    let not_found = |why: String| RpcError {
        code,
        message: format!("resource not found: {uri}: {why}"),
    };
    let resource = Resource::parse(uri).ok_or_else(|| {
        not_found(format!(
            "expected {URI_PREFIX}{{name}} or {URI_PREFIX}{{name}}{TIMELINE_SUFFIX}"
        ))
    })?;
    let value = match resource {
        Resource::Status(name) => {
            serde_json::to_value(ctl.status(RolloutRef::parse(&name)).await.map_err(
                |e| match e {
                    CtlError::NotFound(m) => not_found(m),
                    other => internal(other),
                },
            )?)
        }
        Resource::Timeline(name) => {
            let (status, events) = ctl
                .timeline(RolloutRef::parse(&name), DEFAULT_TIMELINE)
                .await
                .map_err(|e| match e {
                    CtlError::NotFound(m) => not_found(m),
                    other => internal(other),
                })?;
            serde_json::to_value(Explanation::of(status, &events))
        }
    }
    .map_err(internal)?;
    Ok(
        json!({"contents": [{"uri": uri, "mimeType": "application/json", "text": value.to_string()}]}),
    )
}

fn internal(e: impl std::fmt::Display) -> RpcError {
    tracing::error!(error = %e, "mcp request failed");
    RpcError {
        code: INTERNAL_ERROR,
        message: format!("internal error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once_with_a_scope_and_hints() {
        let mut names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 10);
        let read: Vec<&str> = TOOLS
            .iter()
            .filter(|t| t.scope == Scope::Read)
            .map(|t| t.name)
            .collect();
        assert_eq!(
            read,
            ["list_rollouts", "rollout_status", "explain", "whereis"]
        );
        for t in TOOLS {
            // A read tool says so; nothing else does.
            assert_eq!(t.hints.read_only, t.scope == Scope::Read, "{}", t.name);
        }
        let abort = Tool::find("abort").unwrap().listing();
        assert_eq!(abort["annotations"]["destructiveHint"], true);
        assert_eq!(abort["inputSchema"]["required"], json!(["name"]));
    }

    #[test]
    fn arguments_are_checked_by_name() {
        let promote = Tool::find("promote").unwrap();
        let args = |v: Value| v.as_object().cloned().unwrap();
        assert!(check_arguments(promote, &args(json!({"name": "a", "full": true}))).is_ok());
        let e = check_arguments(promote, &args(json!({"name": "a", "full": "yes"}))).unwrap_err();
        assert!(e.starts_with("argument full: expected a boolean"), "{e}");
        let e = check_arguments(promote, &args(json!({}))).unwrap_err();
        assert_eq!(e, "argument name: missing");
        let e = check_arguments(promote, &args(json!({"name": "a", "fast": 1}))).unwrap_err();
        assert!(
            e.starts_with("argument fast: promote takes no such argument"),
            "{e}"
        );
        let explain = Tool::find("explain").unwrap();
        let e = check_arguments(explain, &args(json!({"name": "a", "limit": 0}))).unwrap_err();
        assert!(e.contains("from 1 to 1000"), "{e}");
    }

    #[test]
    fn resource_uris() {
        assert_eq!(
            Resource::parse("linnet://rollouts/checkout"),
            Some(Resource::Status("checkout".into()))
        );
        assert_eq!(
            Resource::parse("linnet://rollouts/checkout/timeline"),
            Some(Resource::Timeline("checkout".into()))
        );
        assert_eq!(Resource::parse("linnet://rollouts/"), None);
        assert_eq!(Resource::parse("linnet://rollouts/a/b"), None);
        assert_eq!(Resource::parse("file:///etc/passwd"), None);
    }
}
