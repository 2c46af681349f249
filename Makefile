# InferMesh: `make demo` runs a node to play with, `make test` runs every test.

.PHONY: test demo bench setup lint test-rust test-fuzz test-interop test-browser wasm fuzz chaos

test: setup lint test-rust test-fuzz test-chaos test-interop test-browser

setup:
	bash scripts/ci/setup.sh

lint:
	bash scripts/ci/lint.sh

test-rust:
	bash scripts/ci/test-rust.sh

# Every decoder of peer input, 15 s each (`make fuzz`: 10 minutes each).
test-fuzz:
	bash scripts/ci/fuzz.sh

fuzz: setup
	FUZZ_SECONDS=600 bash scripts/ci/fuzz.sh

# Partitions and kill -9 among real nodes in network namespaces (one short
# round; `make chaos`: seven nodes, five rounds).
test-chaos:
	bash scripts/ci/chaos.sh

chaos: setup
	CHAOS_ARGS="--nodes 7 --rounds 5 --write-seconds 20" bash scripts/ci/chaos.sh

test-interop:
	bash scripts/ci/test-interop.sh

test-browser:
	bash scripts/ci/test-browser.sh

# The npm package in wasm/pkg (and a copy in www/pkg for the demo page).
wasm: setup
	bash scripts/ci/build-wasm.sh

bench: setup
	bash scripts/ci/bench.sh

demo: setup
	bash scripts/demo.sh
