# InferMesh: `make demo` runs a node to play with, `make test` runs every test.

.PHONY: test demo bench setup lint test-rust test-fuzz test-interop test-browser wasm fuzz chaos

test: setup lint test-rust test-fuzz test-interop test-browser

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
