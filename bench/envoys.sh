# Sourced by scripts/bench-envoy.sh and scripts/bench-envoy-instructions.sh: the seven Envoy
# configs they compare, their ports, and the upstream they share. The sourcing script defines
# die() and sets `pids` (killed on exit) and `work` (removed on exit). scripts/bench-fanout.sh
# uses the helpers (ports_free, bench_start, wait_ok) with ports of its own.

CONFIGS=(nowasm native lean noop key reroute linnet)
# As in envoy/bench-*.yaml.
declare -A LISTENER=([nowasm]=10001 [noop]=10002 [linnet]=10003 [reroute]=10004 [key]=10005 [lean]=10006
    [native]=10007)
declare -A ADMIN=([nowasm]=9902 [noop]=9903 [linnet]=9904 [reroute]=9905 [key]=9906 [lean]=9907 [native]=9908)
UPSTREAM=8090

# A plain HTTP/1.1 GET over bash's /dev/tcp; succeeds on a 200. A subshell, because a failed
# `exec` redirection would end the script.
http_ok() (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    status=$(head -n1 <&3 || true)
    [[ $status == *" 200 "* ]]
) 2>/dev/null

# ratio A B: A / B to three decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

# ports_free PORT...: dies naming the first of the loopback ports that is taken.
ports_free() {
    local p
    for p in "$@"; do
        ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "127.0.0.1:$p is in use"
    done
}

# wait_ok PORT PATH TRIES: until a GET of PATH answers 200, trying every 50 ms; fails after TRIES.
wait_ok() {
    local _
    for _ in $(seq "$3"); do http_ok "$1" "$2" && return 0; sleep 0.05; done
    return 1
}

# Builds the upstream; creates $work, `pids` and the exit trap.
bench_start() {
    cargo build --quiet --release -p linnet-e2e --bin linnet-bench-upstream
    work=$(mktemp -d)
    pids=()
    trap bench_cleanup EXIT
}

# Checks the wasm files and that no port is taken; creates $work and the exit trap.
bench_prepare() {
    local w
    for w in dist/baselines.wasm dist/lean.wasm dist/linnet.wasm; do [ -f "$w" ] || die "no $w: run 'make wasm'"; done
    ports_free "${LISTENER[@]}" "${ADMIN[@]}" "$UPSTREAM"
    bench_start
}

bench_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# start_upstream [COMMAND PREFIX...]: the upstream every Envoy routes to, serving when it returns.
start_upstream() {
    "$@" target/release/linnet-bench-upstream "127.0.0.1:$UPSTREAM" &
    pids+=($!)
    wait_ok "$UPSTREAM" / 100 || die "the upstream did not start"
}
