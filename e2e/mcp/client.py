"""Drives Linnet's MCP server with the official MCP Python SDK (`mcp`), as an agent would.

Run by e2e/tests/mcp.rs against a real `linnet serve` (open reads, an admin token):
  client.py --base http://127.0.0.1:PORT --token TOKEN --linnet path/to/linnet --read-key KEY
Each check prints `ok: ...`; the first that fails raises, and the exit status is non-zero.
Every wait is bounded (the SDK's timeouts, and `TIMEOUT_S` on raw requests).
"""

import argparse
import asyncio
import json
import http.client
import sys
import urllib.parse
import urllib.request

import httpx2

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError

TIMEOUT_S = 20
READ_TOOLS = {"list_rollouts", "rollout_status", "explain", "whereis"}
ALL_TOOLS = READ_TOOLS | {"pause", "resume", "promote", "abort", "complete", "start_rollout"}
NAME = "mcp-demo"
SPEC = f"""
name: {NAME}
match: {{authority: mcp.local}}
stickiness: [{{header: x-user-id}}]
steps:
  - {{weight: 10, pause: until promoted}}
  - {{weight: 100}}
"""
BAD_SPEC = """
name: mcp-bad
match: {authority: bad.local}
steps:
  - {weight: 10}
  - {weight: 250}
"""


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def structured(result):
    """A tool result's JSON: its structured content, else its text."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


def text(result):
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


async def expect_rpc_error(call, code, needle, what):
    try:
        await call
    except MCPError as e:
        check(e.error.code == code, f"{what}: code {e.error.code}, wanted {code}: {e.error.message}")
        check(needle in e.error.message, f"{what}: {e.error.message!r} lacks {needle!r}")
        print(f"ok: {what}: {code} {e.error.message}")
        return
    raise AssertionError(f"{what}: no error")


def updates_queue():
    """A queue of the URIs of `notifications/resources/updated`, and the handler that fills it."""
    updates = asyncio.Queue()

    async def on_message(m):
        m = getattr(m, "root", m)
        if getattr(m, "method", None) == "notifications/resources/updated":
            updates.put_nowait(str(m.params.uri))

    return updates, on_message


async def admin_session(base, token):
    updates, on_message = updates_queue()

    # The SDK takes its HTTP client ready-made to send a token (its docs' way to add headers);
    # reads wait longer, as the session's stream is quiet between heartbeats.
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(TIMEOUT_S, read=300)
    )
    async with http, streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as s:
            init = await s.initialize()
            check(init.server_info.name == "linnet", f"server name {init.server_info.name}")
            print(f"ok: initialized, protocol {init.protocol_version}")

            tools = {t.name: t for t in (await s.list_tools()).tools}
            check(set(tools) == ALL_TOOLS, f"admin tools: {sorted(tools)}")
            check(tools["abort"].annotations.destructive_hint is True, "abort is destructive")
            check(tools["list_rollouts"].annotations.read_only_hint is True, "list is read-only")
            check(tools["start_rollout"].input_schema["required"] == ["spec"], "start_rollout needs spec")
            print(f"ok: admin lists all {len(tools)} tools with hints")

            r = await s.call_tool("start_rollout", {"spec": SPEC})
            check(not r.is_error, f"start_rollout: {text(r)}")
            created = structured(r)
            check(created["name"] == NAME, f"created {created}")
            print(f"ok: start_rollout -> {created['state']} at {created['weight']}%")

            r = await s.call_tool("list_rollouts", {})
            check([x["name"] for x in structured(r)["rollouts"]] == [NAME], f"list {structured(r)}")
            r = await s.call_tool("rollout_status", {"name": NAME})
            status = structured(r)
            check(not r.is_error and status["weight"] == 10, f"status {status}")
            print(f"ok: rollout_status -> {status['state']} at {status['weight']}%")

            uri = f"linnet://rollouts/{NAME}"
            await s.subscribe_resource(uri)
            r = await s.call_tool("pause", {"name": NAME})
            check(not r.is_error and structured(r)["state"] == "paused", f"pause: {text(r)}")
            got = await asyncio.wait_for(updates.get(), TIMEOUT_S)
            check(got == uri, f"updated {got}")
            print(f"ok: subscribed, pause -> notifications/resources/updated {got}")
            await s.unsubscribe_resource(uri)
            r = await s.call_tool("resume", {"name": NAME})
            check(not r.is_error, f"resume: {text(r)}")

            r = await s.call_tool("whereis", {"name": NAME, "key": "alice"})
            check(not r.is_error and "alice" in structured(r)["answer"], f"whereis: {text(r)}")
            print("ok: whereis answers for a key")

            res = await s.read_resource(f"linnet://rollouts/{NAME}")
            check(json.loads(res.contents[0].text)["name"] == NAME, "status resource")
            res = await s.read_resource(f"linnet://rollouts/{NAME}/timeline")
            check(json.loads(res.contents[0].text)["rollout"] == NAME, "timeline resource")
            uris = {str(r.uri) for r in (await s.list_resources()).resources}
            check(f"linnet://rollouts/{NAME}/timeline" in uris, f"resources {uris}")
            print("ok: resources list and read (status, timeline)")

            r = await s.call_tool("start_rollout", {"spec": BAD_SPEC})
            check(r.is_error, "a bad spec is a tool error")
            check("steps[1].weight" in text(r), f"the error names the field: {text(r)}")
            print(f"ok: bad spec -> tool error: {text(r)}")

            # A wrong argument of a known tool is a tool error the model can read (MCP 2025-11-25).
            r = await s.call_tool("promote", {"name": NAME, "full": "yes"})
            check(r.is_error and "argument full" in text(r), f"wrong argument type: {text(r)}")
            print(f"ok: wrong argument type -> tool error: {text(r)}")
            await expect_rpc_error(s.call_tool("no_such_tool", {}), -32602, "unknown tool", "unknown tool")

            r = await s.call_tool("abort", {"name": NAME})
            check(not r.is_error, f"abort: {text(r)}")
            r = await s.call_tool("rollout_status", {"name": NAME})
            check(structured(r)["state"] == "aborted", f"after abort: {structured(r)}")
            check(structured(r)["weight"] == 0, f"after abort: {structured(r)}")
            print("ok: abort -> aborted at 0%")

            r = await s.call_tool("explain", {"name": NAME})
            check(len(structured(r)["timeline"]) >= 2, f"explain: {structured(r)}")
            print(f"ok: explain -> {len(structured(r)['timeline'])} lines")


async def read_only_session(base, key):
    """A `read` key's session, then an anonymous one (open reads): the same four tools."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S)
    async with http, streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            check(tools == READ_TOOLS, f"read key's tools: {sorted(tools)}")
            print(f"ok: read key lists only {sorted(tools)}")
            await expect_rpc_error(s.call_tool("abort", {"name": NAME}), -32602, "needs scope operate", "read key's abort")
    async with streamable_http_client(f"{base}/mcp") as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            check(tools == READ_TOOLS, f"read-only tools: {sorted(tools)}")
            print(f"ok: read-only key lists only {sorted(tools)}")
            r = await s.call_tool("list_rollouts", {})
            check(structured(r)["rollouts"] == [], f"nothing unfinished: {structured(r)}")
            r = await s.call_tool("rollout_status", {"name": NAME})
            check(structured(r)["state"] == "aborted", f"read-only status: {structured(r)}")
            await expect_rpc_error(s.call_tool("abort", {"name": NAME}), -32602, "needs scope operate", "read-only abort")


MODERN = "mcp-modern"
MODERN_SPEC = SPEC.replace(NAME, MODERN).replace("mcp.local", "modern.local")


async def modern_sessions(base, token, key):
    """MCP 2026-07-28: `server/discover`, then stateless requests each carrying their `_meta`
    envelope and routing headers (the SDK's `discover()` adopts the era), as admin and read key."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)
    async with http, streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write) as s:
            found = await s.discover()
            check("2026-07-28" in found.supported_versions, f"discover: {found}")
            check(s.initialize_result is None, "the modern era has no initialize")
            print(f"ok: 2026-07-28 discover -> {found.supported_versions}")

            tools = {t.name for t in (await s.list_tools()).tools}
            check(tools == ALL_TOOLS, f"2026-07-28 admin tools: {sorted(tools)}")
            print(f"ok: 2026-07-28 admin lists all {len(tools)} tools")

            r = await s.call_tool("start_rollout", {"spec": MODERN_SPEC})
            check(not r.is_error, f"2026-07-28 start_rollout: {text(r)}")
            print(f"ok: 2026-07-28 start_rollout -> {structured(r)['state']} at {structured(r)['weight']}%")
            r = await s.call_tool("rollout_status", {"name": MODERN})
            check(not r.is_error and structured(r)["weight"] == 10, f"2026-07-28 status {structured(r)}")
            print(f"ok: 2026-07-28 rollout_status -> {structured(r)['state']} at {structured(r)['weight']}%")

            uri = f"linnet://rollouts/{MODERN}"
            async with listen(s, resource_subscriptions=[uri]) as sub:
                check(sub.honored.resource_subscriptions == [uri], f"listen honored {sub.honored}")
                r = await s.call_tool("pause", {"name": MODERN})
                check(not r.is_error, f"2026-07-28 pause: {text(r)}")
                event = await asyncio.wait_for(sub.__anext__(), TIMEOUT_S)
                check(getattr(event, "uri", None) == uri, f"listen event {event}")
            print(f"ok: 2026-07-28 subscriptions/listen, pause -> resource updated {event.uri}")

            r = await s.call_tool("start_rollout", {"spec": BAD_SPEC})
            check(r.is_error and "steps[1].weight" in text(r), f"2026-07-28 bad spec: {text(r)}")
            print(f"ok: 2026-07-28 bad spec -> tool error: {text(r)}")

            r = await s.call_tool("abort", {"name": MODERN})
            check(not r.is_error, f"2026-07-28 abort: {text(r)}")
            r = await s.call_tool("rollout_status", {"name": MODERN})
            check(structured(r)["state"] == "aborted" and structured(r)["weight"] == 0, f"{structured(r)}")
            print("ok: 2026-07-28 abort -> aborted at 0%")

            await expect_rpc_error(
                s.read_resource("linnet://rollouts/nope"), -32602, "resource not found", "2026-07-28 unknown resource"
            )

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT_S)
    async with http, streamable_http_client(f"{base}/mcp", http_client=http) as (read, write):
        async with ClientSession(read, write) as s:
            await s.discover()
            tools = {t.name for t in (await s.list_tools()).tools}
            check(tools == READ_TOOLS, f"2026-07-28 read key's tools: {sorted(tools)}")
            print(f"ok: 2026-07-28 read key lists only {sorted(tools)}")
            await expect_rpc_error(
                s.call_tool("abort", {"name": MODERN}), -32602, "needs scope operate", "2026-07-28 read key's abort"
            )


async def stdio_session(base, token, linnet):
    params = StdioServerParameters(command=linnet, args=["mcp", "--server", base, "--token", token])
    updates, on_message = updates_queue()
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as s:
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            check(tools == ALL_TOOLS, f"stdio tools: {sorted(tools)}")
            r = await s.call_tool("list_rollouts", {})
            check(structured(r)["rollouts"] == [], f"stdio list_rollouts: {structured(r)}")
            r = await s.call_tool("rollout_status", {"name": NAME})
            check(structured(r)["state"] == "aborted", f"stdio status: {structured(r)}")
            print(f"ok: linnet mcp (stdio) lists {len(tools)} tools, calls list_rollouts and rollout_status")

            spec = SPEC.replace(f"name: {NAME}", "name: mcp-stdio").replace("mcp.local", "stdio.local")
            r = await s.call_tool("start_rollout", {"spec": spec})
            check(not r.is_error, f"stdio start_rollout: {text(r)}")
            uri = "linnet://rollouts/mcp-stdio"
            await s.subscribe_resource(uri)
            r = await s.call_tool("pause", {"name": "mcp-stdio"})
            check(not r.is_error, f"stdio pause: {text(r)}")
            got = await asyncio.wait_for(updates.get(), TIMEOUT_S)
            check(got == uri, f"stdio updated {got}")
            r = await s.call_tool("abort", {"name": "mcp-stdio"})
            check(structured(r)["state"] == "aborted", f"stdio abort: {text(r)}")
            print(f"ok: linnet mcp (stdio) subscribed, pause -> notifications/resources/updated {got}")

    # The bridge relays lines, so a 2026-07-28 client works through it too (no headers on
    # stdio: the envelope alone says the era).
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.discover()
            tools = {t.name for t in (await s.list_tools()).tools}
            check(tools == ALL_TOOLS, f"stdio 2026-07-28 tools: {sorted(tools)}")
            r = await s.call_tool("rollout_status", {"name": NAME})
            check(structured(r)["state"] == "aborted", f"stdio 2026-07-28 status: {structured(r)}")
            print(f"ok: linnet mcp (stdio) at 2026-07-28 lists {len(tools)} tools, calls rollout_status")
            await expect_rpc_error(
                listen(s, resource_subscriptions=[f"linnet://rollouts/{NAME}"]).__aenter__(),
                -32601,
                "connect over HTTP",
                "linnet mcp (stdio) subscriptions/listen",
            )


def raw(base, body, token=None, headers=None):
    """POSTs `body` to /mcp; returns (status, parsed JSON or None)."""
    url = urllib.parse.urlsplit(base)
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    h.update(headers or {})
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=TIMEOUT_S)
    try:
        try:
            conn.request("POST", "/mcp", body=body, headers=h)
        except (BrokenPipeError, ConnectionResetError):
            # A body over the limit is answered (413) and the connection closed before all of
            # it is sent: the answer is still there to read.
            pass
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
    finally:
        conn.close()
    try:
        return status, json.loads(data) if data else None
    except ValueError:
        return status, None


def get(base, path):
    with urllib.request.urlopen(f"{base}{path}", timeout=TIMEOUT_S) as resp:
        return json.loads(resp.read())


def rpc(method, params=None, id=1):
    m = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        m["params"] = params
    return json.dumps(m).encode()


def bad_input(base, token):
    before = (get(base, "/v1/rollouts"), get(base, "/v1/audit?limit=1000"))
    cases = [
        ("malformed JSON", b'{"jsonrpc": "2.0", "id": 1, "method": ', 400, -32700),
        ("a batch", b"[" + rpc("tools/list") + b"]", 400, -32600),
        ("no jsonrpc", b'{"id": 1, "method": "tools/list"}', 400, -32600),
        ("id an object", b'{"jsonrpc": "2.0", "id": {}, "method": "ping"}', 400, -32600),
        ("method a number", b'{"jsonrpc": "2.0", "id": 1, "method": 7}', 400, -32600),
        ("unknown method", rpc("rollouts/delete_all"), 200, -32601),
        ("params an array", rpc("tools/call", [1]), 200, -32602),
        ("unknown tool", rpc("tools/call", {"name": "drop_table", "arguments": {}}), 200, -32602),
        ("tool name a number", rpc("tools/call", {"name": 5}), 200, -32602),
        ("arguments a string", rpc("tools/call", {"name": "abort", "arguments": "x"}), 200, -32602),
        ("unknown resource", rpc("resources/read", {"uri": "file:///etc/passwd"}), 200, -32002),
        ("subscribe without a session", rpc("resources/subscribe", {"uri": f"linnet://rollouts/{NAME}"}), 200, -32600),
    ]
    for what, body, want_status, want_code in cases:
        status, answer = raw(base, body, token)
        check(status == want_status, f"{what}: HTTP {status}, wanted {want_status}: {answer}")
        err = (answer or {}).get("error") or {}
        check(err.get("code") == want_code, f"{what}: {answer}, wanted code {want_code}")
        check(err.get("message"), f"{what}: no message")
        print(f"ok: {what} -> {status} {want_code} {err['message']}")

    # Arguments of a known tool that are wrong: a tool error naming the argument (SEP-1303).
    tool_errors = [
        ("name an integer", {"name": "abort", "arguments": {"name": 1}}, "argument name"),
        ("extra argument", {"name": "abort", "arguments": {"name": NAME, "force": True}}, "argument force"),
        ("limit too big", {"name": "explain", "arguments": {"name": NAME, "limit": 10**9}}, "argument limit"),
        ("spec a number", {"name": "start_rollout", "arguments": {"spec": 3}}, "argument spec"),
    ]
    for what, params, needle in tool_errors:
        status, answer = raw(base, rpc("tools/call", params), token)
        result = (answer or {}).get("result") or {}
        said = (result.get("content") or [{}])[0].get("text", "")
        check(status == 200 and result.get("isError") is True, f"{what}: {status} {answer}")
        check(needle in said, f"{what}: {said!r} lacks {needle!r}")
        print(f"ok: {what} -> tool error {said}")

    status, answer = raw(base, rpc("tools/list"), token, {"MCP-Protocol-Version": "1999-01-01"})
    check(status == 400 and answer["error"]["code"] == -32600, f"bad protocol version: {status} {answer}")
    print(f"ok: unsupported MCP-Protocol-Version -> 400 {answer['error']['message']}")

    status, answer = raw(base, rpc("tools/list"), token, {"Mcp-Session-Id": "no-such-session"})
    check(status == 404, f"unknown session: {status} {answer}")
    print(f"ok: an unknown session -> 404 {answer and answer.get('error')}")

    status, answer = raw(base, rpc("tools/list"), "wrong-token")
    check(status == 401, f"wrong token: {status} {answer}")
    print("ok: a wrong token -> 401")

    # Over `serve --max-body` (1 MiB by default): refused before it is read.
    big = rpc("tools/call", {"name": "start_rollout", "arguments": {"spec": "x" * (2 << 20)}})
    status, answer = raw(base, big, token)
    check(status == 413, f"oversized: {status} {answer}")
    print(f"ok: oversized ({len(big)} bytes) -> 413 {answer and answer.get('error')}")

    status, answer = raw(base, b'{"jsonrpc": "2.0", "method": "notifications/initialized"}', token)
    check(status == 202 and answer is None, f"notification: {status} {answer}")
    print("ok: a notification -> 202, no body")

    after = (get(base, "/v1/rollouts"), get(base, "/v1/audit?limit=1000"))
    check(before == after, "bad input changed the rollouts or the audit")
    print(f"ok: after {len(cases) + 5} bad inputs the rollouts and the audit are unchanged")


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--linnet", required=True)
    p.add_argument("--read-key", required=True)
    a = p.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    await asyncio.wait_for(admin_session(a.base, a.token), TIMEOUT_S * 3)
    await asyncio.wait_for(read_only_session(a.base, a.read_key), TIMEOUT_S * 3)
    await asyncio.wait_for(stdio_session(a.base, a.token, a.linnet), TIMEOUT_S * 3)
    await asyncio.wait_for(modern_sessions(a.base, a.token, a.read_key), TIMEOUT_S * 3)
    bad_input(a.base, a.token)
    print("all ok")


if __name__ == "__main__":
    asyncio.run(main())
