#!/usr/bin/env bash
# Builds the release .wasm files (the filter and the benchmarks' baselines) into dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/wasm-cargo.sh build --release -p linnet-filter -p linnet-baselines -p linnet-baseline-lean
mkdir -p dist
cp target/wasm/wasm32-unknown-unknown/release/linnet_filter.wasm dist/linnet.wasm
cp target/wasm/wasm32-unknown-unknown/release/linnet_baselines.wasm dist/baselines.wasm
cp target/wasm/wasm32-unknown-unknown/release/linnet_baseline_lean.wasm dist/lean.wasm
ls -l dist/*.wasm
