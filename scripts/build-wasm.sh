#!/usr/bin/env bash
# Builds the release .wasm files (the filter and the no-op baseline) into dist/.
# Uses the rustup wasm32 target when installed, else Debian's rustc-web with -Zbuild-std.
set -euo pipefail
cd "$(dirname "$0")/.."

crates=(-p linnet-filter -p linnet-noop-filter)
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    cargo build --release --target wasm32-unknown-unknown --target-dir target/wasm "${crates[@]}"
else
    if [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust ]; then
        echo "build-wasm: no wasm32 toolchain; run 'make setup' first" >&2
        exit 1
    fi
    # Debian's rustc has no wasm linker of its own: borrow rust-lld from the rustup toolchain.
    lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
        /usr/bin/cargo build --release --target wasm32-unknown-unknown --target-dir target/wasm \
        -Zbuild-std=std,panic_abort "${crates[@]}"
fi
mkdir -p dist
cp target/wasm/wasm32-unknown-unknown/release/linnet_filter.wasm dist/linnet.wasm
cp target/wasm/wasm32-unknown-unknown/release/linnet_noop_filter.wasm dist/noop.wasm
ls -l dist/*.wasm
