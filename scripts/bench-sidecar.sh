#!/usr/bin/env bash
# The sidecar on loopback: admin API requests/s and p99 (wrk, GET /v1/rollouts/{name} and
# GET /v1/rollouts), and resident memory before and with 1,000 server-sent-event
# subscribers. Bounded: a few seconds per measurement; stops by itself.
#
# Env: BENCH_SECONDS (default 5), BENCH_CONNECTIONS (default 16), BENCH_SUBSCRIBERS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${BENCH_SECONDS:-5}"
CONNS="${BENCH_CONNECTIONS:-16}"
SUBS="${BENCH_SUBSCRIBERS:-1000}"
PORT=19911
TOKEN=bench-token
BIN=target/release/linnet

die() { echo "bench-sidecar: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "no wrk: run 'make setup'"
[ -x "$BIN" ] || die "no $BIN: run 'cargo build --release -p linnet-sidecar'"

dir=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
"$BIN" serve --listen "127.0.0.1:$PORT" --db "$dir/linnet.db" --token "$TOKEN" 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
curl -sf "127.0.0.1:$PORT/readyz" >/dev/null || die "sidecar not ready: $(cat "$dir/log")"
"$BIN" --server "http://127.0.0.1:$PORT" --token "$TOKEN" rollout create examples/checkout.yaml >/dev/null

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
measure() {
    local out
    out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT$1" 2>&1)
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '%-28s %10s req/s   p99 %s\n' "GET $1" "$rps" "$p99"
}

echo "sidecar admin API on loopback, $CONNS connections, ${SECS}s each:"
measure /v1/rollouts/checkout
measure /v1/rollouts
measure /healthz

before=$(rss_kb)
coproc SUBSCRIBERS { python3 bench/sse_subscribers.py "$PORT" "$TOKEN" "$SUBS" 60; }
read -r ready <&"${SUBSCRIBERS[0]}" || die "subscribers failed"
sleep 1
with=$(rss_kb)
# Every subscriber receives a change while they are all connected.
"$BIN" --server "http://127.0.0.1:$PORT" --token "$TOKEN" rollout pause checkout >/dev/null
sleep 1
after_event=$(rss_kb)
exec {SUBSCRIBERS[1]}>&-
wait "$SUBSCRIBERS_PID" 2>/dev/null || true
printf 'sidecar memory (RSS): %d KiB idle, %d KiB with %s SSE subscribers (%s), %d KiB after an event to all\n' \
    "$before" "$with" "$SUBS" "$ready" "$after_event"
awk -v a="$before" -v b="$with" -v n="$SUBS" 'BEGIN { printf "per subscriber: %.1f KiB\n", (b - a) / n }'
