#!/bin/bash
# One daemon with REACTORS loops, one load: `echo` (100 connections, DEPTH
# messages of 64 B in flight on each, default 16, for 10 s, the generator
# on GEN_THREADS threads) or `chat` (MEMBERS members, default 500, and
# MESSAGES lines of 100 B, default 1,000).
# Prints the load average before and after, and the generator's JSON.
# Run after `cargo build --release`, e.g.: DEPTH=1 benches/reactors.sh 2 echo 1
# (BIN=path runs another build of the daemon and generator).
set -e
R=$1; KIND=$2; T=${3:-1}
B=${BIN:-"$(dirname "$0")/../target/release/socketlab"}
D=$(mktemp -d)
$B serve --port-base 0 --data-dir $D/data --ready-file $D/r.json --log-level warn --reactors $R &
PID=$!
for i in $(seq 100); do [ -f $D/r.json ] && break; sleep 0.05; done
addr() { python3 -c "import json;print(json.load(open('$D/r.json'))['$1']['tcp'])"; }
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ $KIND = echo ]; then
  $B bench echo --addr $(addr echo) --conns 100 --depth ${DEPTH:-16} --size 64 --duration 10s --threads $T --pid $PID --json
else
  $B bench chat --addr $(addr chat) --members ${MEMBERS:-500} --messages ${MESSAGES:-1000} --size 100 --pid $PID --json
fi
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
kill -TERM $PID; wait $PID
rm -rf $D
