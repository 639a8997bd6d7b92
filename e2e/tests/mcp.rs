//! The MCP server as an agent sees it: the official MCP Python SDK (`mcp`, in the project's
//! venv) drives a real `linnet serve` over Streamable HTTP at `/mcp` and `linnet mcp` over
//! stdio (e2e/mcp/client.py): it starts a rollout from a YAML spec, reads it, subscribes to it
//! and is told of its pause on the session's stream, aborts it; a bad spec is a tool error
//! naming the field; a `read` key (made with `linnet key create`) and an anonymous reader list
//! only the read tools and are refused `abort`; malformed JSON-RPC, unknown methods and tools,
//! and an oversized body get the spec's error codes, wrong arguments of a known tool a tool
//! error naming them (MCP 2025-11-25), and none of it changes anything. The SDK's 2026-07-28
//! client (`server/discover`, no handshake) does the same over HTTP and through the bridge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::sidecar::{linnet_bin, Sidecar, ADMIN_TOKEN};
use linnet_e2e::{repo_root, run_bounded, TestDir};
use std::process::Command;
use std::time::Duration;

/// Past this the client is killed and the test fails; it takes a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn an_agent_drives_rollouts_over_mcp_within_its_scope() {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "no {}: run `make setup` (scripts/setup.sh installs the MCP SDK)",
        python.display()
    );
    let dir = TestDir::new("mcp", "client").unwrap();
    let sidecar = Sidecar::start(dir.path()).unwrap();
    // A key of scope read, made as an operator would; the CLI prints its secret once.
    let read_key = sidecar
        .cli(&["key", "create", "--name", "agent-ro", "--scope", "read"])
        .unwrap()
        .trim()
        .to_owned();
    assert!(read_key.starts_with("lnk_"), "{read_key}");
    let out_path = dir.path().join("client.out");
    let (status, report) = run_bounded(
        Command::new(&python)
            .arg(repo_root().join("e2e/mcp/client.py"))
            .args(["--base", &format!("http://{}", sidecar.addr)])
            .args(["--token", ADMIN_TOKEN])
            .arg("--linnet")
            .arg(linnet_bin().unwrap())
            .args(["--read-key", &read_key]),
        &out_path,
        DEADLINE,
    )
    .unwrap();
    assert!(
        status.success(),
        "the MCP client failed ({status}):\n{report}\nsidecar log:\n{}",
        sidecar.log()
    );
    // Each check prints one `ok:` line; a check skipped by mistake shows as a missing line.
    for expected in [
        "ok: admin lists all 10 tools with hints",
        "ok: start_rollout -> progressing",
        "ok: subscribed, pause -> notifications/resources/updated linnet://rollouts/mcp-demo",
        "ok: bad spec -> tool error: invalid rollout spec: steps[1].weight",
        "ok: abort -> aborted at 0%",
        "ok: read key lists only ['explain', 'list_rollouts', 'rollout_status', 'whereis']",
        "ok: read key's abort: -32602 tool abort needs scope operate",
        "ok: read-only key lists only ['explain', 'list_rollouts', 'rollout_status', 'whereis']",
        "ok: read-only abort: -32602 tool abort needs scope operate",
        "ok: linnet mcp (stdio) lists 10 tools",
        "ok: linnet mcp (stdio) subscribed, pause -> notifications/resources/updated",
        "ok: linnet mcp (stdio) at 2026-07-28 lists 10 tools, calls rollout_status",
        "ok: linnet mcp (stdio) subscriptions/listen: -32601",
        "ok: 2026-07-28 discover -> ['2026-07-28']",
        "ok: 2026-07-28 admin lists all 10 tools",
        "ok: 2026-07-28 start_rollout -> progressing",
        "ok: 2026-07-28 rollout_status -> progressing at 10",
        "ok: 2026-07-28 subscriptions/listen, pause -> resource updated linnet://rollouts/mcp-modern",
        "ok: 2026-07-28 bad spec -> tool error: invalid rollout spec: steps[1].weight",
        "ok: 2026-07-28 abort -> aborted at 0%",
        "ok: 2026-07-28 unknown resource: -32602 resource not found",
        "ok: 2026-07-28 read key lists only ['explain', 'list_rollouts', 'rollout_status', 'whereis']",
        "ok: 2026-07-28 read key's abort: -32602 tool abort needs scope operate",
        "ok: malformed JSON -> 400 -32700",
        "ok: unknown method -> 200 -32601",
        "ok: unknown tool -> 200 -32602",
        "ok: wrong argument type -> tool error: argument full",
        "ok: name an integer -> tool error argument name",
        "ok: extra argument -> tool error argument force",
        "ok: oversized",
        "the rollouts and the audit are unchanged",
        "all ok",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(expected) || l.contains(expected)),
            "no {expected:?} in:\n{report}"
        );
    }
}
