#!/bin/bash
# The chat cluster (chat.cluster) against one daemon alone, and Redis's own
# pub/sub as the ceiling. Starts its own redis-server on a Unix socket in a
# temp dir (persistence off), then runs `bench chat` (MEMBERS members,
# default 100, MESSAGES lines of 100 B, default 2000, as fast as the
# window allows or RATE lines per second) against:
#   1. one daemon, no cluster;
#   2. one daemon on Redis (every line makes the round trip);
#   3. two daemons on the same Redis, the members split between them;
# and `redis-benchmark` PUBLISHing 100 B messages (pipelined, 64 deep) with
# 0 and with 2 subscribers. Prints the load average and each JSON.
# Needs redis-server and redis-benchmark (.ci/install-tools).
# Run after `cargo build --release`: benches/chat_cluster.sh, or e.g.
# MESSAGES=2000 RATE=500 benches/chat_cluster.sh for latency at a low rate,
# or REACTORS=2 benches/chat_cluster.sh for daemons of two reactors each.
set -e
MEMBERS=${MEMBERS:-100}; MESSAGES=${MESSAGES:-2000}; REACTORS=${REACTORS:-1}
B="$(dirname "$0")/../target/release/socketlab"
D=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT

redis-server --port 0 --unixsocket "$D/redis.sock" --save '' --appendonly no --dir "$D" >"$D/redis.log" 2>&1 &
PIDS+=($!)
for i in $(seq 100); do [ -S "$D/redis.sock" ] && break; sleep 0.05; done

# serve NAME [--set KEY=VALUE ...]: starts a daemon; sets ADDR to its chat
# address. (Not in $(...): the daemon would hold the substitution open.)
serve() {
  local n=$1; shift
  "$B" serve --port-base 0 --data-dir "$D/$n" --ready-file "$D/$n.json" --log-level warn --reactors "$REACTORS" "$@" \
    >"$D/$n.log" 2>&1 &
  PIDS+=($!)
  for i in $(seq 100); do [ -f "$D/$n.json" ] && break; sleep 0.05; done
  ADDR=$(python3 -c "import json;print(json.load(open('$D/$n.json'))['chat']['tcp'])")
}
chat() { "$B" bench chat --addr "$1" --members "$MEMBERS" --messages "$MESSAGES" --size 100 --time-limit 60s ${RATE:+--rate $RATE} --json; }
CLUSTER="chat.cluster=unix:$D/redis.sock"

echo "load: $(cut -d' ' -f1-3 /proc/loadavg); reactors per daemon: $REACTORS"
echo "== one daemon, no cluster"
serve solo; chat "$ADDR"
echo "== one daemon on Redis"
serve a --set "$CLUSTER"; A=$ADDR
sleep 1 # the link connects in the background (the log is at warn, so no line says so)
chat "$A"
echo "== two daemons on one Redis"
serve b --set "$CLUSTER"; B2=$ADDR
sleep 1
chat "$A,$B2"
echo "== redis-benchmark: PUBLISH, 100 B, 0 subscribers"
MSG=$(head -c 100 /dev/zero | tr '\0' x)
redis-benchmark -s "$D/redis.sock" -n 1000000 -P 64 -q PUBLISH bench "$MSG" | tr "\r" "\n" | tail -n 2
echo "== redis-benchmark: PUBLISH, 100 B, 2 subscribers"
for i in 1 2; do redis-cli -s "$D/redis.sock" SUBSCRIBE bench >/dev/null 2>&1 & PIDS+=($!); done
sleep 0.5
redis-benchmark -s "$D/redis.sock" -n 1000000 -P 64 -q PUBLISH bench "$MSG" | tr "\r" "\n" | tail -n 2
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
