#!/usr/bin/env bash
# Linnet's config path at fleet scale, on loopback: one sidecar, BENCH_ENVOYS real Envoys (two
# workers each, the Linnet filter polling the sidecar: envoy/bench-fanout.yaml) and
# BENCH_POLLERS simulated filters holding the snapshot long-poll (bench/fanout.py). It makes
# BENCH_CHANGES weight changes to the rollout bench/fanout.yaml and reports, from sending each
# change and from its answer, the time until every worker of every Envoy routes by it (probed
# with fresh connections and a user key the change flips, found with `linnet whereis`) and
# until every poller has it; and the sidecar's resident memory idle and with BENCH_HELD held
# polls (measured first, before the changes).
# It measures; it does not fail on a missed goal (p99 <= 250 ms). Bounded: every wait has a
# limit; stops by itself (about a minute by default) and stops everything it started.
#
# Env: BENCH_ENVOYS (default 3), BENCH_CHANGES (100), BENCH_POLLERS (1000), BENCH_HELD (10000),
#      BENCH_RUN (10: consecutive probes on the new variant that count as routing).
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOYS="${BENCH_ENVOYS:-3}"
CHANGES="${BENCH_CHANGES:-100}"
POLLERS="${BENCH_POLLERS:-1000}"
HELD="${BENCH_HELD:-10000}"
RUN="${BENCH_RUN:-10}"
# As in envoy/bench-fanout.yaml: Envoy i listens on 10111+i, its admin on 9931+i.
SIDECAR=19931 STABLE=8093 CANARY=8094 LISTEN0=10111 ADMIN0=9931
TOKEN=bench-token POLL_TOKEN=bench-poll-token
# The weights the changes alternate between: a key with its bucket in [LOW, HIGH) flips each time.
LOW=20 HIGH=60
BIN=target/release/linnet
PYTHON=.venv/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

die() { echo "bench-fanout: $*" >&2; exit 1; }
[ -x .venv/bin/envoy ] || die "no .venv/bin/envoy: run 'make setup'"
[ -x "$BIN" ] || die "no $BIN: run 'cargo build --release -p linnet-sidecar'"
[ -f dist/linnet.wasm ] || die "no dist/linnet.wasm: run 'make wasm'"
source bench/envoys.sh

listeners=() admins=()
for i in $(seq 0 $((ENVOYS - 1))); do listeners+=($((LISTEN0 + i))) admins+=($((ADMIN0 + i))); done
ports_free "$SIDECAR" "$STABLE" "$CANARY" "${listeners[@]}" "${admins[@]}"
# Each held poll is a socket in the sidecar and one in the pollers' process.
need=$((HELD + POLLERS + 1024))
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$need" ] ||
    die "BENCH_HELD=$HELD needs $need open files; the hard limit is $(ulimit -Hn)"
ulimit -n "$need"
echo "bench-fanout: building the upstream"
bench_start

linnet() { "$BIN" --server "http://127.0.0.1:$SIDECAR" --token "$TOKEN" "$@"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$sidecar/status"; }
# metric NAME: its value in the sidecar's /metrics (the first series, labels and all, as given).
metric() {
    curl -sf -H "Authorization: Bearer $TOKEN" "127.0.0.1:$SIDECAR/metrics" |
        awk -v m="$1" '$1 == m { print $2; exit }'
}

"$BIN" serve --listen "127.0.0.1:$SIDECAR" --db "$work/linnet.db" --token "$TOKEN" \
    --poll-token "$POLL_TOKEN" --max-polls $((HELD + POLLERS + ENVOYS + 16)) 2>"$work/sidecar.log" &
sidecar=$!
pids+=("$sidecar")
wait_ok "$SIDECAR" /readyz 100 || die "sidecar not ready: $(cat "$work/sidecar.log")"
linnet rollout create bench/fanout.yaml >/dev/null
linnet rollout weight checkout "$LOW" >/dev/null

target/release/linnet-bench-upstream --served-by stable "127.0.0.1:$STABLE" &
pids+=($!)
target/release/linnet-bench-upstream --served-by canary "127.0.0.1:$CANARY" &
pids+=($!)
wait_ok "$STABLE" / 100 && wait_ok "$CANARY" / 100 || die "the upstreams did not start"

for i in $(seq 0 $((ENVOYS - 1))); do
    sed -e "s/port_value: $LISTEN0 /port_value: ${listeners[$i]} /" \
        -e "s/port_value: $ADMIN0 /port_value: ${admins[$i]} /" envoy/bench-fanout.yaml >"$work/envoy-$i.yaml"
    .venv/bin/envoy -c "$work/envoy-$i.yaml" --concurrency 2 --disable-hot-restart -l error \
        >"$work/envoy-$i.log" 2>&1 &
    pids+=($!)
done
for i in $(seq 0 $((ENVOYS - 1))); do
    wait_ok "${admins[$i]}" /ready 300 || { cat "$work/envoy-$i.log" >&2; die "Envoy $i not ready"; }
done
# Every Envoy polls (one poll per process, whatever its worker count).
for _ in $(seq 100); do [ "$(metric linnet_connected_filters)" = "$ENVOYS" ] && break; sleep 0.1; done
[ "$(metric linnet_connected_filters)" = "$ENVOYS" ] ||
    die "$(metric linnet_connected_filters) of $ENVOYS Envoys poll the sidecar: $(cat "$work"/envoy-*.log)"

# A user key whose bucket (linnet-core's, as `whereis` computes it) lies in [LOW, HIGH).
key=
for n in $(seq 200); do
    bucket=$(linnet whereis checkout "user-$n" | sed -n 's/^  bucket: \([0-9]*\).*/\1/p')
    if [ -n "$bucket" ] && [ "$bucket" -ge $((LOW * 100)) ] && [ "$bucket" -lt $((HIGH * 100)) ]; then
        key="user-$n"
        break
    fi
done
[ -n "$key" ] || die "no key of user-1..user-200 has its bucket in [$((LOW * 100)), $((HIGH * 100)))"

# Memory first, so that what the allocator keeps from the changes' pollers is not counted.
idle=$(rss_kb)
coproc HOLDERS { "$PYTHON" bench/fanout.py pollers "$SIDECAR" "$POLL_TOKEN" "$HELD" 120; }
read -r ready <&"${HOLDERS[0]}" || die "the $HELD pollers failed"
sleep 1
held=$(metric 'linnet_api_slots_in_use{limit="polls"}')
with=$(rss_kb)
exec {HOLDERS[1]}>&-
wait "$HOLDERS_PID" 2>/dev/null || true

echo "bench-fanout: $CHANGES changes between $LOW% and $HIGH% (key $key, bucket $bucket), $ENVOYS Envoys, $POLLERS pollers"
"$PYTHON" bench/fanout.py changes --sidecar "$SIDECAR" --token "$TOKEN" --poll-token "$POLL_TOKEN" \
    --envoys "$(IFS=,; echo "${listeners[*]}")" --key "$key" --low "$LOW" --high "$HIGH" \
    --changes "$CHANGES" --pollers "$POLLERS" --run "$RUN" --limit 600
kib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
printf '%-56s %8s MiB\n' "sidecar RSS, idle ($ENVOYS Envoys polling)" "$(kib "$idle")"
printf '%-56s %8s MiB  (%s)\n' "sidecar RSS, $held held polls" "$(kib "$with")" "$ready"
printf '%-56s %8s KiB\n' "sidecar RSS per held poll" "$(awk -v a="$idle" -v b="$with" -v n="$held" 'BEGIN { printf "%.1f", (b - a) / n }')"
# The probes' fresh connections, per worker: both workers of every Envoy were probed.
spread=()
for i in $(seq 0 $((ENVOYS - 1))); do
    stats=$(curl -sf "127.0.0.1:${admins[$i]}/stats?filter=listener.127.0.0.1_${listeners[$i]}.worker_.\.downstream_cx_total")
    spread+=("$(awk '{ printf "%s%s", (NR > 1 ? "/" : ""), $2 }' <<<"$stats")")
done
echo "(probe connections per worker, by Envoy: ${spread[*]})"
