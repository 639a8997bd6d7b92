# The commands the README names. `make test` is what CI runs.
.PHONY: setup wasm build test lint bench demo clean

CARGO ?= cargo

setup:
	@scripts/setup.sh

wasm: setup
	@scripts/build-wasm.sh

build: wasm
	$(CARGO) build --release --workspace --exclude linnet-filter --exclude linnet-baselines \
		--exclude linnet-baseline-lean

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	scripts/wasm-cargo.sh clippy -p linnet-filter -p linnet-baselines -p linnet-baseline-lean -- -D warnings
	scripts/wasm-cargo.sh clippy -p linnet-filter --features responses -- -D warnings

test: wasm lint
	$(CARGO) test --workspace --exclude linnet-baselines --exclude linnet-baseline-lean --no-fail-fast

bench: wasm
	$(CARGO) bench -p linnet-core --bench decision
	$(CARGO) build --release -p linnet-sidecar
	scripts/bench-envoy.sh
	scripts/bench-envoy-instructions.sh
	$(CARGO) run -q -p linnet-wasm-tests --example guest_cost
	scripts/bench-sidecar.sh
	scripts/bench-fanout.sh
	$(CARGO) run --release -p linnet-sidecar --example decision_quality

demo: wasm
	$(CARGO) build -p linnet-sidecar -p linnet-e2e --bins
	target/debug/demo

clean:
	rm -rf target dist
