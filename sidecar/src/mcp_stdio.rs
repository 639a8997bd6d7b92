//! `linnet mcp`: the MCP server on stdio, for agents that start a local process. Each line on
//! stdin is one JSON-RPC message, POSTed to the sidecar's `/mcp` with the CLI's token, and
//! each answer is one line on stdout; logs go to stderr. The session `initialize` answers is
//! kept and sent with every later message, and its `GET /mcp` stream is relayed to stdout
//! too, so subscriptions work as over HTTP; the session is ended when stdin ends. MCP
//! 2026-07-28 lines are relayed the same way (their `_meta` envelope says the era), but for
//! `subscriptions/listen`, whose answer is an endless stream: the bridge refuses it itself.
//!
//! A bridge rather than a second server: the tools run in the sidecar, under the same token
//! check, scopes and audit as every other call, and an agent on stdio sees exactly what one
//! on HTTP with the same key sees.

use crate::client::Client;
use crate::mcp::{INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND};
use crate::mcp_session::SESSION_HEADER;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// The longest message read from stdin; the server has its own limit
/// (`serve --max-body-bytes`).
pub const MAX_LINE_BYTES: usize = 4 << 20;
/// The longest event read from the session's stream before it is given up.
const MAX_EVENT_BYTES: usize = 1 << 20;
/// Lines waiting for stdout.
const OUT_QUEUE: usize = 64;

/// Bridges stdin to `client`'s server until stdin ends.
pub async fn run(client: &Client) -> Result<(), String> {
    let (out, rx) = mpsc::channel::<Value>(OUT_QUEUE);
    let writer = tokio::spawn(write_lines(rx));
    let mut session: Option<(String, tokio::task::JoinHandle<()>)> = None;
    let read = read_lines(client, &out, &mut session).await;
    if let Some((id, stream)) = session {
        stream.abort();
        let ended = client
            .exchange(Method::DELETE, "/mcp", None, &[(SESSION_HEADER, &id)])
            .await;
        if let Err(e) = ended {
            tracing::warn!("ending the MCP session: {e}");
        }
    }
    drop(out);
    let written = writer
        .await
        .map_err(|e| format!("the stdout writer failed: {e}"))?;
    read.and(written)
}

async fn read_lines(
    client: &Client,
    out: &mpsc::Sender<Value>,
    session: &mut Option<(String, tokio::task::JoinHandle<()>)>,
) -> Result<(), String> {
    let mut stdin = BufReader::new(tokio::io::stdin());
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
            let too_big = format!("a message over {MAX_LINE_BYTES} bytes");
            let _ = out
                .send(error(Value::Null, INVALID_REQUEST, too_big.clone()))
                .await;
            return Err(format!("stdin: {too_big}"));
        }
        let msg = line.trim_ascii();
        if msg.is_empty() {
            continue;
        }
        let id = session.as_ref().map(|(id, _)| id.as_str());
        let (answer, made) = forward(client, msg, id).await;
        if let (Some(made), None) = (made, &session) {
            let stream = tokio::spawn(relay(client.clone(), made.clone(), out.clone()));
            *session = Some((made, stream));
        }
        if let Some(answer) = answer {
            if out.send(answer).await.is_err() {
                return Err("stdout is closed".into());
            }
        }
    }
}

/// The line to answer `msg` with, if any (a notification has none), and the session the
/// server made, if it made one.
async fn forward(
    client: &Client,
    msg: &[u8],
    session: Option<&str>,
) -> (Option<Value>, Option<String>) {
    let parsed = serde_json::from_slice::<Value>(msg).ok();
    let id = parsed.as_ref().and_then(|v| v.get("id").cloned());
    if parsed.as_ref().and_then(|v| v["method"].as_str()) == Some("subscriptions/listen") {
        // Its answer is a stream that never ends; read as one answer it would stall every
        // line after it. The bridge answers for the server instead.
        let why = "subscriptions/listen is not relayed by linnet mcp: connect over HTTP to listen";
        return (id.map(|id| error(id, METHOD_NOT_FOUND, why)), None);
    }
    let headers: Vec<(&str, &str)> = session.map(|s| (SESSION_HEADER, s)).into_iter().collect();
    let sent = client
        .exchange(
            Method::POST,
            "/mcp",
            Some((Bytes::copy_from_slice(msg), "application/json")),
            &headers,
        )
        .await;
    let (status, head, body) = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!("{e}");
            return (id.map(|id| error(id, INTERNAL_ERROR, e)), None);
        }
    };
    let made = head
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status == StatusCode::ACCEPTED {
        return (None, made);
    }
    let answer: Option<Value> = serde_json::from_slice(&body).ok();
    let line = match answer {
        // A JSON-RPC answer (200, or a 400 for a message that is not a request).
        Some(v) if v.get("jsonrpc").is_some() => Some(v),
        // An HTTP refusal (401, 404, 413, 5xx): said as a JSON-RPC error to the request's id.
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
    };
    (line, made)
}

/// Relays the session's `GET /mcp` stream (its notifications) to stdout until it ends.
async fn relay(client: Client, session: String, out: mpsc::Sender<Value>) {
    let headers = [
        (SESSION_HEADER, session.as_str()),
        ("accept", "text/event-stream"),
    ];
    let resp = match client.open("/mcp", &headers).await {
        Ok(r) if r.status() == StatusCode::OK => r,
        Ok(r) => {
            tracing::warn!(status = %r.status(), "the MCP session's stream was refused: no notifications");
            return;
        }
        Err(e) => {
            tracing::warn!("the MCP session's stream: {e}");
            return;
        }
    };
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    // Ends with the stream (the session ended, the server stopped) or with stdout.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
        }
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            for line in event.split(|b| *b == b'\n') {
                let Some(data) = line.strip_prefix(b"data: ") else {
                    continue;
                };
                if let Ok(msg) = serde_json::from_slice::<Value>(data) {
                    if out.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        }
        if buf.len() > MAX_EVENT_BYTES {
            tracing::warn!("the MCP session's stream sent an event over {MAX_EVENT_BYTES} bytes; no more notifications");
            return;
        }
    }
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// Writes each message as one line, until every sender is gone.
async fn write_lines(mut rx: mpsc::Receiver<Value>) -> Result<(), String> {
    let mut stdout = tokio::io::stdout();
    while let Some(v) = rx.recv().await {
        let mut bytes = v.to_string().into_bytes();
        bytes.push(b'\n');
        stdout
            .write_all(&bytes)
            .await
            .and(stdout.flush().await)
            .map_err(|e| format!("writing stdout: {e}"))?;
    }
    Ok(())
}
