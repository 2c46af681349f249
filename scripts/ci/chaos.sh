#!/usr/bin/env bash
# Fault harness (scripts/chaos/chaos.py): real nodes in network namespaces,
# a partition while both halves write, kill -9 and restarts during writes;
# every replica must converge with no acknowledged write lost. CI runs one
# short round on 5 nodes; `make chaos` passes CHAOS_ARGS for a long run.
source "$(dirname "$0")/env.sh"

step "building the infermesh binary"
cargo build --locked -p infermesh-node
binary="$TARGET_DIR/debug/infermesh"

step "chaos: ${CHAOS_ARGS:---nodes 5 --rounds 1 --write-seconds 8}"
# shellcheck disable=SC2086
python3 scripts/chaos/chaos.py --binary "$binary" ${CHAOS_ARGS:---nodes 5 --rounds 1 --write-seconds 8}
