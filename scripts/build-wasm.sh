#!/usr/bin/env bash
# Builds the release .wasm files (the filter, its `responses` build, and the benchmarks'
# baselines) into dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/wasm/wasm32-unknown-unknown/release
mkdir -p dist
# The filter twice: the `responses` build (per-variant response metrics from the filter) first,
# as the two share one output file.
scripts/wasm-cargo.sh build --release -p linnet-filter --features responses
cp "$out/linnet_filter.wasm" dist/linnet-responses.wasm
scripts/wasm-cargo.sh build --release -p linnet-filter -p linnet-baselines -p linnet-baseline-lean
cp "$out/linnet_filter.wasm" dist/linnet.wasm
cp "$out/linnet_baselines.wasm" dist/baselines.wasm
cp "$out/linnet_baseline_lean.wasm" dist/lean.wasm
ls -l dist/*.wasm
