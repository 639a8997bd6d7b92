#!/usr/bin/env bash
# Instructions per request through Envoy, for the seven configs of scripts/bench-envoy.sh (no
# wasm, Envoy's own sticky weighted split, the lean no-op filter without the SDK, the SDK no-op
# filter, the key-read floor, the reroute floor, Linnet), counted by valgrind's callgrind.
#
# Requests/s on a shared VM move by ±20% between runs; an instruction count is the same for the
# same binary and inputs whatever else the machine does, so small differences can be read.
# Each Envoy (one worker) runs under callgrind; after a warm-up, the counters are zeroed, exactly
# $COUNT requests are sent over one keep-alive connection (bench/requests.py, distinct
# x-user-id each), and the counters are dumped. Instructions / requests is the whole process's
# cost per request: Envoy, V8 and the filter. When Envoy is CPU-bound, throughput is inversely
# proportional to it, so noop / linnet here is the throughput ratio the goal is stated in.
# It measures; it does not fail on a missed goal. About 4 minutes (Envoy starts slowly under
# valgrind).
#
# Env: BENCH_COUNT (requests per config, default 2000); BENCH_CONFIGS, a subset of the configs to
# run (e.g. "nowasm noop linnet": fewer Envoys under valgrind at once start sooner on a busy
# machine); nowasm is always run, as every row is read against it.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT="${BENCH_COUNT:-2000}"
WARMUP=300
die() { echo "bench-envoy-instructions: $*" >&2; exit 1; }
envoy_bin=$(ls .venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1)
[ -x "$envoy_bin" ] || die "no Envoy binary under .venv: run 'make setup'"
command -v valgrind >/dev/null || die "no valgrind: run 'make setup'"
source bench/envoys.sh
if [ -n "${BENCH_CONFIGS:-}" ]; then
    for cfg in $BENCH_CONFIGS; do [ -n "${LISTENER[$cfg]:-}" ] || die "BENCH_CONFIGS: no config $cfg (${CONFIGS[*]})"; done
    read -r -a CONFIGS <<<"nowasm ${BENCH_CONFIGS//nowasm/}"
fi
bench_prepare
start_upstream

# measure CONFIG: writes "$work/CONFIG" with instructions per request.
measure() {
    local cfg=$1 out="$work/cg.$1" vg
    valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$out" \
        "$envoy_bin" -c "envoy/bench-$cfg.yaml" --concurrency 1 --disable-hot-restart -l error \
        >"$work/log.$cfg" 2>&1 &
    vg=$!
    # Under valgrind Envoy takes a minute or more to start; give up after 10.
    for _ in $(seq 600); do http_ok "${ADMIN[$cfg]}" /ready && break; sleep 1; done
    http_ok "${LISTENER[$cfg]}" / || { kill "$vg"; cat "$work/log.$cfg" >&2; die "$cfg: Envoy did not serve"; }
    python3 bench/requests.py "${LISTENER[$cfg]}" "$WARMUP" >/dev/null
    callgrind_control -z "$vg" >/dev/null 2>&1
    python3 bench/requests.py "${LISTENER[$cfg]}" "$COUNT" "$WARMUP" >/dev/null ||
        { kill "$vg"; die "$cfg: requests failed"; }
    callgrind_control -d "$vg" >/dev/null 2>&1
    for _ in $(seq 100); do [ -s "$out.1" ] && grep -q '^summary:' "$out.1" && break; sleep 0.2; done
    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    local total
    total=$(sed -n 's/^summary: //p' "$out.1" | head -1)
    [ -n "$total" ] || die "$cfg: callgrind wrote no summary"
    echo $((total / COUNT)) >"$work/$cfg"
}

echo "bench-envoy-instructions: ${#CONFIGS[@]} Envoys under callgrind, $COUNT requests each"
mpids=()
for cfg in "${CONFIGS[@]}"; do
    measure "$cfg" &
    mpids+=($!)
done
for pid in "${mpids[@]}"; do wait "$pid" || die "a measurement failed"; done

n() { cat "$work/$1"; }
has() { [ -f "$work/$1" ]; }
base=noop
has noop || base=nowasm
echo
echo "Envoy 1 worker, loopback, one connection, instructions per request (callgrind, $COUNT requests)"
printf '%-8s | %14s | %14s | %18s\n' config "instr/request" "over no wasm" "throughput vs $base"
printf -- '---------+----------------+----------------+-------------------\n'
for cfg in "${CONFIGS[@]}"; do
    printf '%-8s | %14s | %14s | %17sx\n' "$cfg" "$(n "$cfg")" \
        "$(($(n "$cfg") - $(n nowasm)))" "$(ratio "$(n "$base")" "$(n "$cfg")")"
done
echo
# line A B TEXT: "A / B throughput" when both were run.
line() { has "$1" && has "$2" && printf '%-40s %s   %s\n' "$1 / $2 throughput (CPU-bound):" "$(ratio "$(n "$2")" "$(n "$1")")" "$3"; return 0; }
line linnet noop "(goal >= 0.95)"
line linnet native "(Envoy's own sticky split)"
line lean noop "(what the SDK's dispatcher costs)"
line key noop "(the floor for reading a sticky key)"
line reroute noop "(the floor for routing by header)"
has linnet && printf '%-40s %s instructions per request   (goal <= 25000)\n' "linnet over no wasm:" "$(($(n linnet) - $(n nowasm)))"
has linnet && has reroute && printf '%-40s %s instructions per request\n' "linnet over reroute:" "$(($(n linnet) - $(n reroute)))"
exit 0
