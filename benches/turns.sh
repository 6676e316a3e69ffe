#!/bin/sh
# The daemon's longest loop turn under the loads BENCHMARKS.md reports
# ("The loop never stalls"): echo at 1,000 connections, chat at 1,000
# members, and `true` run in a loop through exec. Each load runs RUNS times
# (default 3) against a fresh daemon, so every figure is that load's alone.
#
# Run (release): cargo build --release --bin socketlab --example exec_bench
#                sh benches/turns.sh [RUNS]
#
# SOCKETLAB and EXEC_BENCH name other builds to measure (exec_bench runs
# the socketlab found one directory above its own); LOADS picks the loads
# (default "echo chat exec"), e.g. LOADS=echo sh benches/turns.sh 5.
#
# Each line: the load, the longest turn, how many turns took over 10 ms
# (from the turn histogram in /stats), and the 1-minute load average when
# the run ended, since the machine may be shared.
set -eu
runs=${1:-3}
bin=${SOCKETLAB:-target/release/socketlab}
example=${EXEC_BENCH:-target/release/examples/exec_bench}
loads=${LOADS:-echo chat exec}
wants() { case " $loads " in *" $1 "*) return 0;; *) return 1;; esac; }
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

start() {
    rm -rf "$dir/data" "$dir/ready.json"
    $bin serve --port-base 0 --data-dir "$dir/data" --ready-file "$dir/ready.json"\
        --log-level warn 2>>"$dir/stderr" &
    pid=$!
    i=0
    while [ ! -s "$dir/ready.json" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    addr() { python3 -c "import json,sys; print(json.load(open('$dir/ready.json'))['$1']['tcp'])"; }
    admin=$(addr admin); echo_addr=$(addr echo); chat=$(addr chat)
}

report() {
    python3 - "$1" "$admin" <<'PY'
import json, os, socket, sys
name, admin = sys.argv[1], sys.argv[2]
host, port = admin.rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /stats HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
loop = json.loads(data.split(b"\r\n\r\n", 1)[1])["loop"]
h = loop.get("turn_histogram")
over = "-"
if h:
    under_10ms = next(b["count"] for b in h["buckets"] if abs(b["le"] - 0.01) < 1e-9)
    over = f"{h['count'] - under_10ms} of {h['count']}"
print(f"{name:<6} longest turn {loop['max_turn_seconds'] * 1e3:7.2f} ms   "
      f"turns over 10 ms {over:>14}   load {os.getloadavg()[0]:.2f}")
PY
}

stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

if wants echo; then for _ in $(seq "$runs"); do
    start
    $bin bench echo --addr "$echo_addr" --conns 1000 --duration 10s >/dev/null 2>&1
    report echo
    stop
done; fi
if wants chat; then for _ in $(seq "$runs"); do
    start
    $bin bench chat --addr "$chat" --members 1000 --messages 1000 >/dev/null 2>&1
    report chat
    stop
done; fi
if wants exec; then for _ in $(seq "$runs"); do
    # exec_bench starts its own daemon and prints its longest turn.
    $example 500 64 | grep -E "through the daemon|locally|ratio|longest" | head -4 | tr -s ' ' | paste -sd' '
    echo "exec   load $(cut -d' ' -f1 /proc/loadavg)"
done; fi
