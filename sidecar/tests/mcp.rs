//! The MCP server at `/mcp` called without a socket: what each scope lists and may call, a
//! rollout started and aborted by tools, a bad spec as a tool error naming its field, and
//! every bad JSON-RPC message answered with the spec's code and changing nothing; and MCP
//! 2026-07-28 requests: `server/discover`, the `_meta` envelope and routing headers checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const SPEC: &str =
    "name: web\nmatch: {authority: web.example}\nsteps: [{weight: 10, pause: until promoted}, {weight: 100}]";

async fn harness() -> (tempfile::TempDir, Harness) {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::open(&dir.path().join("l.db"), EPOCH_MS);
    (dir, h)
}

/// POSTs `body` to `/mcp`, as the admin (`token`) or anonymously.
async fn mcp(h: &Harness, body: &str, admin: bool) -> Reply {
    let auth = format!("Bearer {ADMIN}");
    let mut headers = vec![("content-type", "application/json")];
    if admin {
        headers.push(("authorization", auth.as_str()));
    }
    h.request(Method::POST, "/mcp", body, &headers).await
}

async fn call(h: &Harness, tool: &str, args: Value, admin: bool) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": tool, "arguments": args}});
    let r = mcp(h, &body.to_string(), admin).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let v = r.json();
    assert_eq!(v["id"], 7);
    v
}

fn tool_names(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(start_paused = true)]
async fn each_scope_lists_and_calls_only_its_tools() {
    let (_d, h) = harness().await;
    let list = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#;
    let admin = mcp(&h, list, true).await.json();
    assert_eq!(tool_names(&admin).len(), 10);
    let anonymous = mcp(&h, list, false).await.json();
    assert_eq!(
        tool_names(&anonymous),
        ["explain", "list_rollouts", "rollout_status", "whereis"]
    );

    let started = call(&h, "start_rollout", json!({"spec": SPEC}), true).await;
    assert_eq!(started["result"]["isError"], false, "{started}");
    assert_eq!(started["result"]["structuredContent"]["weight"], 10.0);

    let before = h.fingerprint().await;
    for (tool, needs) in [
        ("abort", "operate"),
        ("pause", "operate"),
        ("start_rollout", "admin"),
    ] {
        let args = if tool == "start_rollout" {
            json!({"spec": SPEC})
        } else {
            json!({"name": "web"})
        };
        let refused = call(&h, tool, args, false).await;
        assert_eq!(refused["error"]["code"], -32602, "{refused}");
        let msg = refused["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("needs scope {needs}")), "{msg}");
    }
    assert_eq!(
        h.fingerprint().await,
        before,
        "a refused call changed something"
    );

    let status = call(&h, "rollout_status", json!({"name": "web"}), false).await;
    assert_eq!(
        status["result"]["structuredContent"]["state"],
        "progressing"
    );
    // An operate key aborts; the audit names it.
    let made = h
        .post("/v1/keys", r#"{"name": "agent", "scope": "operate"}"#)
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{:?}", made.body);
    let secret = made.json()["secret"].as_str().unwrap().to_owned();
    let body = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
        "params": {"name": "abort", "arguments": {"name": "web"}}});
    let bearer = format!("Bearer {secret}");
    let r = h
        .request(
            Method::POST,
            "/mcp",
            &body.to_string(),
            &[
                ("content-type", "application/json"),
                ("authorization", &bearer),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let aborted = r.json();
    assert_eq!(aborted["result"]["structuredContent"]["state"], "aborted");
    assert_eq!(h.status("web").await["weight"], 0.0);
    // The audit names the key that called each tool (the admin token is the `admin` key).
    let audit = h.get("/v1/audit?rollout=web").await.json();
    let actors: Vec<(&str, &str)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(actors.first(), Some(&("created", "admin")), "{actors:?}");
    assert_eq!(actors.last(), Some(&("aborted", "agent")), "{actors:?}");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_bad_spec_is_a_tool_error_naming_the_field() {
    let (_d, h) = harness().await;
    let before = h.fingerprint().await;
    let bad = "name: web\nmatch: {authority: web.example}\nsteps: [{weight: 10}, {weight: 250}]";
    let r = call(&h, "start_rollout", json!({"spec": bad}), true).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("steps[1].weight"), "{text}");
    // A rollout that is not there is the tool's refusal too, not the protocol's.
    let r = call(&h, "pause", json!({"name": "nope"}), true).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert_eq!(h.fingerprint().await, before);
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn bad_messages_get_the_spec_codes_and_change_nothing() {
    let (_d, h) = harness().await;
    h.create_yaml(SPEC).await;
    let before = h.fingerprint().await;
    let cases: &[(&str, StatusCode, i64)] = &[
        (
            r#"{"jsonrpc": "2.0", "id": 1, "method": "#,
            StatusCode::BAD_REQUEST,
            -32700,
        ),
        ("", StatusCode::BAD_REQUEST, -32700),
        (
            r#"[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc": "1.0", "id": 1, "method": "ping"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": null, "method": "ping"}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1}"#,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1, "method": "rollouts/drop"}"#,
            StatusCode::OK,
            -32601,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rm"}}"#,
            StatusCode::OK,
            -32602,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "linnet://rollouts/nope"}}"#,
            StatusCode::OK,
            -32002,
        ),
        (
            r#"{"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": "linnet://rollouts/web"}}"#,
            StatusCode::OK,
            -32600,
        ),
    ];
    for (body, status, code) in cases {
        let r = mcp(&h, body, true).await;
        assert_eq!(r.status, *status, "{body}: {:?}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["code"], *code, "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{v}");
    }
    // Arguments of a known tool that are wrong, missing or unknown: a tool error naming the
    // argument (MCP 2025-11-25, SEP-1303), so the agent can read it and call again.
    for (args, tool, words) in [
        (json!({"name": 3}), "abort", "argument name"),
        (json!({}), "abort", "argument name: missing"),
        (
            json!({"name": "web", "full": 1}),
            "promote",
            "argument full",
        ),
        (
            json!({"name": "web", "force": true}),
            "abort",
            "argument force",
        ),
    ] {
        let v = call(&h, tool, args.clone(), true).await;
        assert_eq!(v["result"]["isError"], true, "{args}: {v}");
        let text = v["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(words), "{args}: {text}");
    }
    let notification = mcp(
        &h,
        r#"{"jsonrpc": "2.0", "method": "notifications/initialized"}"#,
        true,
    )
    .await;
    assert_eq!(notification.status, StatusCode::ACCEPTED);
    assert!(notification.body.is_empty());
    let big = format!(
        r#"{{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {{"name": "start_rollout", "arguments": {{"spec": "{}"}}}}}}"#,
        "x".repeat(2 << 20)
    );
    assert_eq!(
        mcp(&h, &big, true).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let stranger = h
        .request(
            Method::POST,
            "/mcp",
            "{}",
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(stranger.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.fingerprint().await,
        before,
        "a bad message changed something"
    );
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_session_belongs_to_its_key() {
    let (_d, h) = harness().await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = mcp(&h, &init.to_string(), true).await;
    assert_eq!(r.json()["result"]["protocolVersion"], "2025-06-18");
    let session = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let ping = r#"{"jsonrpc": "2.0", "id": 2, "method": "ping"}"#;
    let auth = format!("Bearer {ADMIN}");
    let with = |admin: bool| {
        let mut hs = vec![("mcp-session-id", session.as_str())];
        if admin {
            hs.push(("authorization", auth.as_str()));
        }
        hs
    };
    let ok = h.request(Method::POST, "/mcp", ping, &with(true)).await;
    assert_eq!(ok.status, StatusCode::OK);
    // Another key (here the anonymous reader) cannot use it, nor end it.
    let other = h.request(Method::POST, "/mcp", ping, &with(false)).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    let end = h.request(Method::DELETE, "/mcp", "", &with(false)).await;
    assert_eq!(end.status, StatusCode::NOT_FOUND);
    let end = h.request(Method::DELETE, "/mcp", "", &with(true)).await;
    assert_eq!(end.status, StatusCode::NO_CONTENT);
    let gone = h.request(Method::POST, "/mcp", ping, &with(true)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    h.close().await;
}

/// The next SSE message of `body` that is not a comment, or `None` when the stream ends.
async fn next_message(body: &mut linnet_sidecar::api::Body, buf: &mut String) -> Option<Value> {
    use http_body_util::BodyExt;
    // Bounded: a stream that says nothing for a minute of (paused) time fails the test.
    for _ in 0..100 {
        if let Some(end) = buf.find("\n\n") {
            let raw: String = buf.drain(..end + 2).collect();
            if let Some(data) = raw.lines().find_map(|l| l.strip_prefix("data: ")) {
                return Some(serde_json::from_str(data).unwrap());
            }
            continue;
        }
        let frame = tokio::time::timeout(std::time::Duration::from_secs(60), body.frame())
            .await
            .expect("no frame within 60 s");
        match frame {
            None => return None,
            Some(f) => buf.push_str(std::str::from_utf8(f.unwrap().data_ref().unwrap()).unwrap()),
        }
    }
    panic!("no message in 100 frames: {buf:?}");
}

#[tokio::test(start_paused = true)]
async fn a_subscribed_session_is_told_of_changes_until_it_ends() {
    let (_d, h) = harness().await;
    h.create_yaml(SPEC).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let session = mcp(&h, &init.to_string(), true).await.headers["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("mcp-session-id", session.as_str()),
        ("authorization", auth.as_str()),
    ];
    let mut get = hyper::Request::get("/mcp");
    for (k, v) in headers {
        get = get.header(k, v);
    }
    let resp = h
        .app
        .handle(
            get.body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();

    let sub = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe",
        "params": {"uri": "linnet://rollouts/web"}});
    let r = h
        .request(Method::POST, "/mcp", &sub.to_string(), &headers)
        .await;
    assert_eq!(r.json()["result"], json!({}), "{:?}", r.body);
    let pause = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "pause", "arguments": {"name": "web"}}});
    let r = h
        .request(Method::POST, "/mcp", &pause.to_string(), &headers)
        .await;
    assert_eq!(r.json()["result"]["structuredContent"]["state"], "paused");

    let told = next_message(&mut body, &mut buf).await.unwrap();
    assert_eq!(
        told,
        json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
            "params": {"uri": "linnet://rollouts/web"}})
    );
    let end = h.request(Method::DELETE, "/mcp", "", &headers).await;
    assert_eq!(end.status, StatusCode::NO_CONTENT);
    // Its stream ends at the next heartbeat, its place freed.
    assert_eq!(next_message(&mut body, &mut buf).await, None);
    h.close().await;
}

/// A 2026-07-28 request: `params` with the `_meta` envelope added, and the routing headers
/// a client sends with it, each replaceable by `headers`.
async fn modern(h: &Harness, method: &str, mut params: Value, headers: &[(&str, &str)]) -> Reply {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": params});
    let auth = format!("Bearer {ADMIN}");
    let mut sent: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    sent.retain(|(k, _)| !headers.iter().any(|(h, _)| h == k));
    sent.extend_from_slice(headers);
    h.request(Method::POST, "/mcp", &body.to_string(), &sent)
        .await
}

/// A 2026-07-28 request refused: method, params, headers, HTTP status, code, message words.
type Refusal<'a> = (
    &'a str,
    Value,
    &'a [(&'a str, &'a str)],
    StatusCode,
    i64,
    &'a str,
);

#[tokio::test(start_paused = true)]
async fn a_2026_request_needs_no_handshake_and_is_checked_against_its_headers() {
    let (_d, h) = harness().await;
    h.create_yaml(SPEC).await;
    let before = h.fingerprint().await;

    let r = modern(&h, "server/discover", json!({}), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let found = r.json()["result"].clone();
    assert_eq!(found["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(found["resultType"], "complete");
    assert_eq!(found["capabilities"]["tools"]["listChanged"], false);
    // Subscriptions are by subscriptions/listen in this era.
    assert_eq!(found["capabilities"]["resources"]["subscribe"], true);
    assert_eq!(
        found["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "linnet"
    );
    assert!(
        r.headers.get("mcp-session-id").is_none(),
        "a session was made"
    );

    let r = modern(&h, "tools/list", json!({}), &[]).await.json();
    assert_eq!(tool_names(&r).len(), 10);
    assert_eq!(r["result"]["resultType"], "complete");
    assert_eq!(r["result"]["ttlMs"], 0);
    assert_eq!(r["result"]["cacheScope"], "private");

    let name = [("mcp-name", "rollout_status")];
    let args = json!({"name": "rollout_status", "arguments": {"name": "web"}});
    let r = modern(&h, "tools/call", args.clone(), &name).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["result"]["structuredContent"]["weight"], 10.0);

    // Every refusal: (method, params, headers, HTTP status, code, words in the message).
    let cases: &[Refusal] = &[
        (
            "tools/call",
            args.clone(),
            &[("mcp-name", "abort")],
            StatusCode::BAD_REQUEST,
            -32020,
            "mcp-name",
        ),
        (
            "tools/list",
            json!({}),
            &[("mcp-method", "tools/call")],
            StatusCode::BAD_REQUEST,
            -32020,
            "mcp-method",
        ),
        (
            "tools/list",
            json!({}),
            &[("mcp-protocol-version", "2025-11-25")],
            StatusCode::BAD_REQUEST,
            -32020,
            "mcp-protocol-version",
        ),
        (
            "resources/read",
            json!({"uri": "linnet://rollouts/nope"}),
            &[("mcp-name", "linnet://rollouts/nope")],
            StatusCode::BAD_REQUEST,
            -32602,
            "resource not found",
        ),
        (
            "initialize",
            json!({}),
            &[],
            StatusCode::NOT_FOUND,
            -32601,
            "initialize",
        ),
    ];
    for (method, params, headers, status, code, words) in cases {
        let r = modern(&h, method, params.clone(), headers).await;
        assert_eq!(r.status, *status, "{method}: {:?}", r.body);
        let v = r.json();
        assert_eq!(v["id"], 9, "{v}");
        assert_eq!(v["error"]["code"], *code, "{method}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{method}: {message}");
    }

    // Without the envelope's required keys: invalid params naming what is missing.
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    let bare = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}"#;
    let half = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}"#;
    for (body, words) in [
        (bare, "params._meta: missing"),
        (half, "io.modelcontextprotocol/clientCapabilities"),
    ] {
        let r = h.request(Method::POST, "/mcp", body, &headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        let v = r.json();
        assert_eq!(v["error"]["code"], -32602, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(words),
            "{v}"
        );
    }
    // An envelope naming a revision this server does not speak: -32022 with what it does.
    let future = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2027-01-01", "io.modelcontextprotocol/clientCapabilities": {}}}}"#;
    let r = mcp(&h, future, true).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let v = r.json();
    assert_eq!(v["error"]["code"], -32022, "{v}");
    assert_eq!(v["error"]["data"]["supported"], json!(["2026-07-28"]));

    // The read key's scope holds in this era too: abort is not listed and is refused.
    let r = h
        .request(
            Method::POST,
            "/mcp",
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
                "name": "abort", "arguments": {"name": "web"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {}}}})
            .to_string(),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("needs scope operate"));
    assert_eq!(h.fingerprint().await, before, "a refusal changed something");
    h.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_2026_listen_is_a_stream_of_the_resources_it_names() {
    let (_d, h) = harness().await;
    h.create_yaml(SPEC).await;
    let listen = |uris: Value| {
        json!({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen", "params": {
            "notifications": {"resourceSubscriptions": uris, "toolsListChanged": true},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}})
        .to_string()
    };
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let bad = h
        .request(
            Method::POST,
            "/mcp",
            &listen(json!(["file:///etc"])),
            &headers,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let v = bad.json();
    assert_eq!(v["error"]["code"], -32602, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("resourceSubscriptions[0]"), "{message}");

    let mut post = hyper::Request::post("/mcp");
    for (k, v) in headers {
        post = post.header(k, v);
    }
    let resp = h
        .app
        .handle(
            post.body(http_body_util::Full::new(bytes::Bytes::from(listen(
                json!(["linnet://rollouts/web", "linnet://rollouts/other"]),
            ))))
            .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut buf = String::new();
    // First the acknowledgement: resource updates only (the tools never change here).
    let ack = next_message(&mut body, &mut buf).await.unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourceSubscriptions": ["linnet://rollouts/web", "linnet://rollouts/other"]})
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-1"
    );
    call(&h, "pause", json!({"name": "web"}), true).await;
    let told = next_message(&mut body, &mut buf).await.unwrap();
    assert_eq!(
        told,
        json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
            "params": {"uri": "linnet://rollouts/web",
                "_meta": {"io.modelcontextprotocol/subscriptionId": "listen-1"}}})
    );
    drop(body);
    h.close().await;
}
