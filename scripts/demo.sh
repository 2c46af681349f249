#!/usr/bin/env bash
# Builds the npm package and the node, starts a node that serves the demo
# page, and prints the URL and how to join from a terminal.
source "$(dirname "$0")/ci/env.sh"

bash scripts/ci/build-wasm.sh
step "build the infermesh binary"
# All targets: the same crate graph as `make test`, so neither rebuilds the other.
cargo build --locked --workspace --all-targets
BIN="$TARGET_DIR/debug/infermesh"
DATA="${DEMO_DATA_DIR:-$PWD/.demo/node}"
LISTEN_IP="${DEMO_LISTEN_IP:-127.0.0.1}"
API_PORT="${DEMO_API_PORT:-5001}"
rm -f "$DATA/addrs.json"

"$BIN" node --data-dir "$DATA" --listen-ip "$LISTEN_IP" --no-mdns --www www --api-port "$API_PORT" \
  --compute --compute-threads 1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; wait $NODE 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 100); do
  [ -f "$DATA/addrs.json" ] && [ "$(grep -c '/p2p/' "$DATA/addrs.json")" -ge 4 ] && break
  kill -0 $NODE 2>/dev/null || { echo "the node did not start"; exit 1; }
  sleep 0.1
done
TCP=$(grep -o '"/ip4/[^"]*/tcp/[0-9]*/p2p/[^"]*"' "$DATA/addrs.json" | head -1 | tr -d '"')
API=$(grep -o '"api": "[^"]*"' "$DATA/addrs.json" | cut -d'"' -f4)
cat <<MSG

InferMesh demo node is running (data in $DATA).

  Open  $API/  in two browser tabs (or two browsers): each tab is a node.
  Chat on a topic, send direct messages, switch between WebSocket and
  WebRTC-direct at the top right. In the Compute card, create a network
  in one tab, invite the other, contribute a tab and search the chat by
  meaning. This node computes too once it joins with the tab's token:

  $BIN --data-dir $DATA network join <token>

Join from another terminal with a node and its prompt:

  $BIN connect $TCP

then try:  subscribe lobby   |   publish lobby hello   |   peers   |   status

Status and metrics:  $API/api/status   $API/metrics
Stop with Ctrl-C.
MSG
wait $NODE
