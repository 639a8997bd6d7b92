//! MCP 2026-07-28 at `/mcp`: stateless requests, each carrying its own `_meta` envelope,
//! beside the handshake era [`crate::mcp`] answers as before.
//!
//! No `initialize` and no session: a request names its protocol version and client
//! capabilities in `params._meta`, which is checked (with the routing headers, when sent)
//! before anything runs. `server/discover` says what this server speaks. Results carry
//! `resultType`, lists their cache hints. The tools, scopes and resources are the handshake
//! era's, through the same functions. `subscriptions/listen` replaces the session's
//! subscriptions: its response is the stream of `notifications/resources/updated` for the
//! URIs it names, tagged with its id.

use crate::mcp::{
    error_response, invalid_params, resource_templates, resources_list, resources_read,
    server_info, tools_call, tools_list, Context, Reply, Resource, RpcError, HEADER_MISMATCH,
    INSTRUCTIONS, INVALID_PARAMS, INVALID_REQUEST, META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION,
    META_SERVER_INFO, METHOD_NOT_FOUND, MODERN_VERSIONS, UNSUPPORTED_PROTOCOL_VERSION,
};
use crate::mcp_session::{Listener, MAX_SUBSCRIPTIONS};
use serde_json::{json, Map, Value};

/// Answers one 2026-07-28 request: its envelope checked, then its method.
pub async fn handle(
    cx: &Context<'_>,
    id: Value,
    method: &str,
    params: &Map<String, Value>,
) -> Reply {
    let answer = match check_envelope(cx, method, params) {
        Ok(()) if method == "subscriptions/listen" => match listen(&id, params) {
            Ok(listener) => return Reply::Listen(listener),
            Err(e) => Err(plain(e)),
        },
        Ok(()) => dispatch(cx, method, params).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(mut result) => {
            result["resultType"] = Value::from("complete");
            Reply::Response(json!({"jsonrpc": "2.0", "id": id, "result": result}))
        }
        Err((e, data)) => {
            let mut body = error_response(id, e.code, e.message);
            if let Some(data) = data {
                body["error"]["data"] = data;
            }
            Reply::Failed(http_status(e.code), body)
        }
    }
}

/// An error, and its `data` when the spec gives it one.
type Failure = (RpcError, Option<Value>);

fn plain(e: RpcError) -> Failure {
    (e, None)
}

/// The transport's status for an error code: a request the server could not take is a 400,
/// an unknown method a 404; what a handler fails with stays 200.
fn http_status(code: i64) -> u16 {
    match code {
        METHOD_NOT_FOUND => 404,
        INVALID_PARAMS | INVALID_REQUEST | HEADER_MISMATCH | UNSUPPORTED_PROTOCOL_VERSION => 400,
        _ => 200,
    }
}

/// The envelope's required keys, the routing headers against the body, then the version:
/// a client that disagrees with itself is told so before it is told its version is unknown.
fn check_envelope(
    cx: &Context<'_>,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), Failure> {
    let Some(meta) = params.get("_meta").and_then(Value::as_object) else {
        return Err(plain(invalid_params(format!(
            "params._meta: missing: a 2026-07-28 request carries {META_PROTOCOL_VERSION:?} and {META_CLIENT_CAPABILITIES:?} in it"
        ))));
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(plain(invalid_params(format!(
            "params._meta: missing {}",
            missing.join(", ")
        ))));
    }
    let version = &meta[META_PROTOCOL_VERSION];
    let r = cx.routing;
    let mismatch = |header: &str, body: &str| {
        plain(RpcError {
            code: HEADER_MISMATCH,
            message: format!("header {header} does not match the body's {body}"),
        })
    };
    if r.version.is_some_and(|h| version.as_str() != Some(h)) {
        return Err(mismatch(
            crate::mcp::PROTOCOL_VERSION_HEADER,
            "params._meta protocol version",
        ));
    }
    if r.method.is_some_and(|h| h != method) {
        return Err(mismatch(crate::mcp::METHOD_HEADER, "method"));
    }
    let named = match method {
        "tools/call" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let (Some(field), Some(h)) = (named, r.name) {
        if params.get(field).and_then(Value::as_str) != Some(h) {
            return Err(mismatch(
                crate::mcp::NAME_HEADER,
                &format!("params.{field}"),
            ));
        }
    }
    let Some(version) = version.as_str() else {
        return Err(plain(invalid_params(format!(
            "params._meta {META_PROTOCOL_VERSION}: must be a string, got {version}"
        ))));
    };
    if !MODERN_VERSIONS.contains(&version) {
        return Err((
            RpcError {
                code: UNSUPPORTED_PROTOCOL_VERSION,
                message: format!(
                    "protocol version {version:?} is not one of {}",
                    MODERN_VERSIONS.join(", ")
                ),
            },
            Some(json!({"supported": MODERN_VERSIONS, "requested": version})),
        ));
    }
    Ok(())
}

/// Cache hints for a list result: none may be kept (rollouts change any moment), and what a
/// key sees is its own (the tools listed depend on its scope).
fn uncached(mut v: Value) -> Value {
    v["ttlMs"] = Value::from(0);
    v["cacheScope"] = Value::from("private");
    v
}

async fn dispatch(
    cx: &Context<'_>,
    method: &str,
    params: &Map<String, Value>,
) -> Result<Value, Failure> {
    match method {
        "server/discover" => Ok(uncached(discover())),
        "tools/list" => Ok(uncached(tools_list(cx.caller))),
        "tools/call" => tools_call(cx.ctl, cx.caller, params).await.map_err(plain),
        "resources/list" => resources_list(cx.ctl).await.map(uncached).map_err(plain),
        "resources/templates/list" => Ok(uncached(resource_templates())),
        // 2026-07-28 names an unknown resource as invalid params.
        "resources/read" => resources_read(cx.ctl, params, INVALID_PARAMS)
            .await
            .map_err(plain),
        other => Err(plain(RpcError {
            code: METHOD_NOT_FOUND,
            message: format!("method not found: {other} (in MCP 2026-07-28)"),
        })),
    }
}

/// `subscriptions/listen`: the resources named in `notifications.resourceSubscriptions`, each
/// one of a rollout's URIs (at most [`MAX_SUBSCRIPTIONS`]). Nothing else here changes at run
/// time (the tools and the resource templates are fixed), so nothing else is honoured, and the
/// acknowledgement says so by omitting it.
fn listen(id: &Value, params: &Map<String, Value>) -> Result<Listener, RpcError> {
    let Some(wanted) = params.get("notifications").and_then(Value::as_object) else {
        return Err(invalid_params("notifications: missing: an object"));
    };
    let uris = match wanted.get("resourceSubscriptions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, u)| match u.as_str() {
                Some(u) if Resource::parse(u).is_some() => Ok(u.to_owned()),
                _ => Err(invalid_params(format!(
                    "notifications.resourceSubscriptions[{i}]: {u} is not a rollout's URI (linnet://rollouts/{{name}}[/timeline])"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(invalid_params(format!(
                "notifications.resourceSubscriptions: must be an array of URIs, got {other}"
            )))
        }
    };
    if uris.len() > MAX_SUBSCRIPTIONS {
        return Err(invalid_params(format!(
            "notifications.resourceSubscriptions: {} URIs, at most {MAX_SUBSCRIPTIONS}",
            uris.len()
        )));
    }
    Ok(Listener::Listen {
        uris,
        subscription: id.clone(),
    })
}

fn discover() -> Value {
    json!({
        "supportedVersions": MODERN_VERSIONS,
        "capabilities": {
            "tools": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
        },
        "instructions": INSTRUCTIONS,
        "_meta": {META_SERVER_INFO: server_info()},
    })
}
