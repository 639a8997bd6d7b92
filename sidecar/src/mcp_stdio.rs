//! `linnet mcp`: the MCP server on stdio, for agents that start a local process. Each line on
//! stdin is one JSON-RPC message, POSTed to the sidecar's `/mcp` with the CLI's token, and
//! each answer is one line on stdout; logs go to stderr.
//!
//! A bridge rather than a second server: the tools run in the sidecar, under the same token
//! check, scopes and audit as every other call, and an agent on stdio sees exactly what one
//! on HTTP with the same key sees.

use crate::client::Client;
use crate::mcp::{INTERNAL_ERROR, INVALID_REQUEST};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The longest message read from stdin; the server has its own limit (`serve --max-body`).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Bridges stdin to `client`'s server until stdin ends.
pub async fn run(client: &Client) -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdout = tokio::io::stdout();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut stdin)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("reading stdin: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE_BYTES {
            // The rest of the line cannot be told from the next message: stop here.
            write_line(
                &mut stdout,
                &error(
                    Value::Null,
                    INVALID_REQUEST,
                    format!("a message over {MAX_LINE_BYTES} bytes"),
                ),
            )
            .await?;
            return Err(format!("stdin: a message over {MAX_LINE_BYTES} bytes"));
        }
        let msg = line.trim_ascii();
        if msg.is_empty() {
            continue;
        }
        if let Some(answer) = forward(client, msg).await {
            write_line(&mut stdout, &answer).await?;
        }
    }
}

/// The line to answer `msg` with, if any (a notification has none).
async fn forward(client: &Client, msg: &[u8]) -> Option<Value> {
    let sent = client
        .send(
            Method::POST,
            "/mcp",
            Some((Bytes::copy_from_slice(msg), "application/json")),
        )
        .await;
    let id = serde_json::from_slice::<Value>(msg)
        .ok()
        .and_then(|v| v.get("id").cloned());
    let (status, body) = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!("{e}");
            return id.map(|id| error(id, INTERNAL_ERROR, e));
        }
    };
    if status == StatusCode::ACCEPTED {
        return None;
    }
    let answer: Option<Value> = serde_json::from_slice(&body).ok();
    match answer {
        // A JSON-RPC answer (200, or a 400 for a message that is not a request).
        Some(v) if v.get("jsonrpc").is_some() => Some(v),
        // An HTTP refusal (401, 413, 5xx): said as a JSON-RPC error to the request's id.
        other => {
            let why = other
                .as_ref()
                .and_then(|v| v["error"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            let message = format!("the server answered {status}: {why}");
            tracing::error!("{message}");
            let code = if status.is_client_error() {
                INVALID_REQUEST
            } else {
                INTERNAL_ERROR
            };
            id.map(|id| error(id, code, message))
        }
    }
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

async fn write_line(out: &mut tokio::io::Stdout, v: &Value) -> Result<(), String> {
    let mut bytes = v.to_string().into_bytes();
    bytes.push(b'\n');
    out.write_all(&bytes)
        .await
        .and(out.flush().await)
        .map_err(|e| format!("writing stdout: {e}"))
}
