#!/usr/bin/env python3
r"""Where a long loop turn's time goes: the loop's own work, or waiting for a
CPU.

    cargo build --release --bin socketlab
    python3 benches/turn_anatomy.py                    # echo, 1,000 connections
    python3 benches/turn_anatomy.py --load chat        # chat, 1,000 members
    python3 benches/turn_anatomy.py --load echo --conns 100 --duration 5

The daemon measures a turn by the clock: from `poll()` returning to the next
`poll()` (`socketlab_loop_turn_seconds`, `loop.max_turn_seconds`). On a
machine whose cores are shared, that wall time includes every moment the
scheduler gave the loop's CPU to someone else (the load generator, a
compiler), and the figure cannot say which part was the loop's own work.

The kernel can. This script starts a release daemon, puts a load on it, and
meanwhile records with `perf` (tracepoints only; no hardware counters
needed) three things about the loop's thread: entering `epoll_wait`,
leaving it, and every context switch into or out of the thread. A turn is
then the span from leaving `epoll_wait` to entering it again, as the
daemon counts it; its **off-CPU** time is the part of that span during
which the thread was switched out (preempted, since a turn does not
block), and its **on-CPU** time the rest: the work the loop did. It prints
the longest turns both ways, how many were over 10 ms (the loop's goal,
BENCHMARKS.md) by each measure, and the preemptions during turns.

Needs `perf` with access to tracepoints (root, or
`kernel.perf_event_paranoid` at -1). Only the Python 3 standard library is
used.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

GOAL_MS = 10.0


def start_daemon(binary, work):
    ready = os.path.join(work, "ready.json")
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [binary, "serve", "--port-base", "0", "--data-dir",
         os.path.join(work, "data"), "--ready-file", ready,
         "--log-level", "warn"],
        stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.path.exists(ready) and os.path.getsize(ready) > 0:
            with open(ready) as f:
                return daemon, json.load(f)
        if daemon.poll() is not None:
            sys.exit("the daemon exited before it was ready")
        time.sleep(0.05)
    daemon.kill()
    sys.exit("the daemon did not get ready in 10 s")


def record(tid, out):
    """Starts perf on the loop thread's epoll waits and context switches."""
    switch = f"prev_pid == {tid} || next_pid == {tid}"
    mine = f"common_pid == {tid}"
    events = []
    for name, filt in [
        ("sched:sched_switch", switch),
        ("syscalls:sys_enter_epoll_wait", mine),
        ("syscalls:sys_exit_epoll_wait", mine),
        ("syscalls:sys_enter_epoll_pwait", mine),
        ("syscalls:sys_exit_epoll_pwait", mine),
    ]:
        events += ["-e", name, "--filter", filt]
    return subprocess.Popen(
        ["perf", "record", "-q", "-a", "-o", out] + events,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


LINE = re.compile(r"\s(\d+\.\d+):\s+(\S+):\s(.*)$")


def turns_of(script_text, tid):
    """(start, end, off_cpu, preemptions) per turn, seconds."""
    turns = []
    on_cpu = True
    switched_out_at = None
    turn_start = None
    off = 0.0
    preempted = 0
    for line in script_text.splitlines():
        m = LINE.search(line)
        if not m:
            continue
        t, event, rest = float(m.group(1)), m.group(2), m.group(3)
        if event == "sched:sched_switch":
            prev = re.search(r"prev_pid=(\d+).*prev_state=(\S+)", rest)
            nxt = re.search(r"next_pid=(\d+)", rest)
            if prev and int(prev.group(1)) == tid:
                on_cpu = False
                switched_out_at = t
                if turn_start is not None and prev.group(2).startswith("R"):
                    preempted += 1
            elif nxt and int(nxt.group(1)) == tid:
                if not on_cpu and switched_out_at is not None and turn_start is not None:
                    off += t - max(switched_out_at, turn_start)
                on_cpu = True
                switched_out_at = None
        elif event.startswith("syscalls:sys_exit_epoll"):
            turn_start = t
            off = 0.0
            preempted = 0
        elif event.startswith("syscalls:sys_enter_epoll") and turn_start is not None:
            turns.append((turn_start, t, off, preempted))
            turn_start = None
    return turns


def run_load(binary, load, addrs, conns, duration):
    if load == "echo":
        args = [binary, "bench", "echo", "--addr", addrs["echo"]["tcp"],
                "--conns", str(conns), "--duration", f"{duration}s"]
    else:
        args = [binary, "bench", "chat", "--addr", addrs["chat"]["tcp"],
                "--members", str(conns), "--messages", "1000"]
    subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default="target/release/socketlab")
    p.add_argument("--load", choices=["echo", "chat"], default="echo")
    p.add_argument("--conns", type=int, default=1000,
                   help="echo connections or chat members (default 1000)")
    p.add_argument("--duration", type=int, default=10, help="echo seconds (default 10)")
    p.add_argument("--top", type=int, default=5, help="longest turns to list")
    a = p.parse_args()
    if not shutil.which("perf"):
        sys.exit("perf is not installed")
    work = tempfile.mkdtemp(prefix="socketlab-turns-")
    daemon, addrs = start_daemon(a.binary, work)
    tid = daemon.pid  # The first reactor runs on the main thread.
    data = os.path.join(work, "perf.data")
    perf = record(tid, data)
    time.sleep(1)  # perf attaches its tracepoints before the load starts.
    load_avg = os.getloadavg()[0]
    try:
        run_load(a.binary, a.load, addrs, a.conns, a.duration)
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=10)
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True,
                            text=True, check=False).stdout
    shutil.rmtree(work, ignore_errors=True)
    turns = turns_of(script, tid)
    if not turns:
        sys.exit("no turns recorded: are the epoll tracepoints available?")
    rows = [((end - start) * 1e3, (end - start - off) * 1e3, off * 1e3, pre)
            for start, end, off, pre in turns]
    wall_over = sum(1 for w, *_ in rows if w > GOAL_MS)
    on_over = sum(1 for _, on, *_ in rows if on > GOAL_MS)
    print(f"load: {a.load}, {a.conns} {'connections' if a.load == 'echo' else 'members'}; "
          f"load average {load_avg:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    print(f"turns recorded            {len(rows):>10,}")
    print(f"longest turn, wall        {max(r[0] for r in rows):>10.2f} ms")
    print(f"longest turn, on CPU      {max(r[1] for r in rows):>10.2f} ms")
    print(f"turns over {GOAL_MS:.0f} ms, wall    {wall_over:>10,}")
    print(f"turns over {GOAL_MS:.0f} ms, on CPU  {on_over:>10,}")
    print(f"preemptions within turns  {sum(r[3] for r in rows):>10,}")
    print(f"the {a.top} longest turns by wall time (wall / on CPU / off CPU, preemptions):")
    for w, on, off, pre in sorted(rows, reverse=True)[: a.top]:
        print(f"  {w:8.2f} ms = {on:7.2f} on + {off:7.2f} off, {pre} preempted")


if __name__ == "__main__":
    main()
