#!/usr/bin/env bash
# Builds the release .wasm files (the filter and the benchmarks' baselines) into dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/wasm-cargo.sh build --release -p linnet-filter -p linnet-baselines
mkdir -p dist
cp target/wasm/wasm32-unknown-unknown/release/linnet_filter.wasm dist/linnet.wasm
cp target/wasm/wasm32-unknown-unknown/release/linnet_baselines.wasm dist/baselines.wasm
ls -l dist/*.wasm
