#!/usr/bin/env bash
# Runs a cargo command for wasm32-unknown-unknown into target/wasm, e.g.
#   scripts/wasm-cargo.sh build --release -p linnet-filter
#   scripts/wasm-cargo.sh clippy -p linnet-filter -- -D warnings
# Uses the rustup wasm32 target when installed, else Debian's rustc-web (and rust-web-clippy),
# which build std for wasm32 from source (-Zbuild-std). `make setup` installs the latter.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 CARGO-COMMAND [ARGS...]" >&2; exit 2; }
cmd="$1"
shift

if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    exec cargo "$cmd" --target wasm32-unknown-unknown --target-dir target/wasm "$@"
fi
if [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust ]; then
    echo "wasm-cargo: no wasm32 toolchain; run 'make setup' first" >&2
    exit 1
fi
if [ "$cmd" = clippy ] && [ ! -x /usr/bin/clippy-driver ]; then
    echo "wasm-cargo: no clippy for Debian's rustc-web; run 'make setup' first" >&2
    exit 1
fi
# Debian's rustc has no wasm linker of its own: borrow rust-lld from the rustup toolchain.
lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
# /usr/bin first, so that `cargo clippy` finds Debian's cargo-clippy, not rustup's proxy.
PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
    exec /usr/bin/cargo "$cmd" --target wasm32-unknown-unknown --target-dir target/wasm \
    -Zbuild-std=std,panic_abort "$@"
