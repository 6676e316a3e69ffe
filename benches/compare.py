#!/usr/bin/env python3
r"""Peers, side by side: socketlab's daemon against the servers people would
otherwise use, under the same load, in one run.

    python3 benches/compare.py            # everything, about 14 minutes
    python3 benches/compare.py --quick    # a smoke run, about a minute
    python3 benches/compare.py --help     # runs, filters, where results go

    # More runs of just the figures a goal depends on:
    python3 benches/compare.py --sections echo --servers socketlab,tokio_ct \
        --scenarios "c100 d1 s64,c1000 d1 s64" --runs 9
    # Tables from saved results, several files pooled as more runs:
    python3 benches/compare.py --report target/compare/compare-*.json

It builds the release binary and the baseline servers
(`cargo build --release --bins --examples`), starts each server on its own
ephemeral port, drives it with `socketlab bench ... --json --progress`, and
measures on the *server's* side. At the end it prints one set of tables
with ratios against socketlab, checks the goals of the benchmark issue, and
writes `target/compare/latest.json` and `target/compare/latest.md` (and a
time-stamped copy of each). Only the Python 3 standard library is used;
`perf` is used when it is present and allowed, for system calls per message.

# What is compared

Echo servers: socketlab's echo service; a bare mio loop (the least
user-space work this design allows); tokio's echo example on the
current_thread and the multi_thread runtime; a thread per connection on
blocking std::net; Python's socketserver.ThreadingTCPServer. Chat servers:
socketlab's chat service; a server in the style of tokio's chat example
(a Mutex-protected map of per-peer channels, one String per recipient), on
both runtimes. The baselines live in benches/baselines/.

Workloads: echo of 64-byte messages at 1, 100 and 1,000 connections, depth
(messages in flight per connection) 1 and 16, and of 64 KiB messages on 10
connections; 10,000 idle connections held (`bench conns`: the server's RSS
per connection); chat fan-out with 500 and 1,000 members (`bench chat`:
deliveries per second as fast as the server goes, and delivery latency at
an equal, paced load).

# Why the figures are taken on the server's side

On a two-core machine the load generator takes one core, so messages per
second mostly say how much CPU the generator leaves over. Two figures do
not depend on that, and are the ones servers are compared by:

* **Server CPU time per message**: utime + stime of the server process
  (all its threads) from /proc/PID/stat, sampled at the start and the end
  of a window in which every connection is open and the load is steady,
  divided by the messages echoed in that same window. (The scheduler's
  nanosecond counters, /proc/PID/task/*/schedstat, are sampled alongside
  as a check on the clock-tick rounding.)
* **System calls per message**: `perf stat -e raw_syscalls:sys_enter` and
  one tracepoint per interesting system call, attached to the server's
  process (all threads) in a *later* window of the same run, because
  tracing every system call slows the server down and would inflate its
  CPU time.

# How the windows are aligned

`socketlab bench --progress` prints one status line per second of its own
clock with the messages completed in that second. The harness timestamps
each line as it arrives, which places the generator's clock on the
harness's to about a millisecond. Both windows span *whole generator
seconds*, so the messages in them are exact sums of status lines. (Within a
second the rate is not steady enough to interpolate: on a shared machine it
swings by 10% from one tenth of a second to the next.)

The CPU window is generator seconds 1 to 2 (or the second after all
connections are open, if that is later). Before the first status line
arrives, the generator's clock is placed at its start-up delay after the
spawn (2.5 to 7 ms, measured), which is the window's alignment error.

`perf stat -I 100` prints its counts every 100 ms, with a time stamp
relative to when counting began; those lines are timestamped on arrival
too. The syscall window is the first whole generator second after perf
has attached (attaching to a server with a thousand threads takes about a
second); the system calls in it are read off perf's 100 ms steps, during
which perf's own slowdown is uniform.

For socketlab, the daemon's own byte counters (`/stats` on the admin
endpoint) count the same windows independently; the difference between the
two counts is reported as the method's error (`cpu_count_check` and
`count_check` in the JSON; the median is within 0.1%, the worst few %).

# Everything ends

Every process the harness starts is kept in one registry and stopped by
its pid (SIGTERM, then SIGKILL after a grace period) when its part is done
and, whatever happens (the end, an error, Ctrl-C, SIGTERM), when the
harness exits; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RELEASE = REPO / "target" / "release"
SOCKETLAB = RELEASE / "socketlab"
EXAMPLES = RELEASE / "examples"
PY_ECHO = REPO / "benches" / "baselines" / "py_echo.py"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress for the person running the harness, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sleep_until(deadline: float) -> None:
    """Sleeps until time.monotonic() reaches `deadline` (no-op if past)."""
    remaining = deadline - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


# --------------------------------------------------------------------------
# Plans: what a full run and a quick run measure.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EchoScenario:
    conns: int
    depth: int
    size: int

    @property
    def key(self) -> str:
        return f"echo c{self.conns} d{self.depth} s{self.size}"

    @property
    def title(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size >= 1024 else f"{self.size} B"
        plural = "" if self.conns == 1 else "s"
        return f"{self.conns:,} connection{plural}, depth {self.depth}, {size}"


@dataclass(frozen=True)
class ChatScenario:
    members: int
    messages: int
    size: int
    # Lines per second for the paced run (equal offered load for every
    # server, so that latencies compare); None for the saturating run.
    rate: float | None

    @property
    def key(self) -> str:
        pace = f" r{self.rate:g}" if self.rate else ""
        return f"chat m{self.members} n{self.messages}{pace}"

    @property
    def title(self) -> str:
        how = f"paced at {self.rate * self.members:,.0f} deliveries/s" if self.rate else "as fast as possible"
        return f"{self.members:,} members, {self.messages:,} lines of {self.size} B, {how}"


@dataclass(frozen=True)
class Plan:
    runs: int
    echo: tuple[EchoScenario, ...]
    # Whole generator seconds in the CPU window and in the syscall window.
    cpu_window: int
    syscall_window: int
    idle_count: int
    idle_hold: str
    chat: tuple[ChatScenario, ...]


def chat_pair(members: int, messages: int, paced_s: float) -> tuple[ChatScenario, ChatScenario]:
    """A saturating run and a paced run (100,000 deliveries/s) for `members`."""
    rate = 100_000 / members
    return (
        ChatScenario(members, messages, 100, None),
        ChatScenario(members, max(1, round(rate * paced_s)), 100, rate),
    )


FULL = Plan(
    runs=3,
    echo=(
        EchoScenario(1, 1, 64),
        EchoScenario(1, 16, 64),
        EchoScenario(100, 1, 64),
        EchoScenario(100, 16, 64),
        EchoScenario(1000, 1, 64),
        EchoScenario(1000, 16, 64),
        EchoScenario(10, 1, 64 * 1024),
    ),
    cpu_window=1,
    syscall_window=1,
    idle_count=10_000,
    idle_hold="2s",
    chat=chat_pair(500, 1000, 2.0) + chat_pair(1000, 500, 2.0),
)

QUICK = Plan(
    runs=1,
    echo=(EchoScenario(100, 1, 64), EchoScenario(100, 16, 64)),
    cpu_window=1,
    syscall_window=1,
    idle_count=2_000,
    idle_hold="1s",
    chat=chat_pair(200, 200, 1.0),
)


# --------------------------------------------------------------------------
# Processes: every child in one registry, stopped by pid.
# --------------------------------------------------------------------------


class Processes:
    """Every process the harness starts, so that all of them end."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        # Popen runs the program itself (no shell), so `.pid` is the
        # server's own pid: the one /proc and perf must look at.
        child = subprocess.Popen([str(a) for a in argv], **kwargs)
        with self._lock:
            self._children.append(child)
        return child

    def stop(self, child: subprocess.Popen, grace: float = 5.0) -> None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL and reap."""
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=grace)
            except ProcessLookupError:
                pass
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream:
                stream.close()
        with self._lock:
            if child in self._children:
                self._children.remove(child)

    def stop_all(self) -> None:
        with self._lock:
            children = list(self._children)
        for child in children:
            self.stop(child, grace=2.0)


PROCESSES = Processes()


# --------------------------------------------------------------------------
# The server's side, from /proc.
# --------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of the whole process (every thread, live or exited),
    in seconds: CPU time in user space and in the kernel on its behalf."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: count after its ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds_precise(pid: int) -> float:
    """The same CPU time from the scheduler's nanosecond counters
    (/proc/PID/task/*/schedstat), summed over the live threads: a check on
    the clock-tick rounding of /proc/PID/stat."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # A thread that ended meanwhile.
    return total / 1e9


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def admin_stats(admin: str) -> dict:
    with urllib.request.urlopen(f"http://{admin}/stats", timeout=3) as reply:
        return json.load(reply)


# --------------------------------------------------------------------------
# Servers.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    key: str
    label: str
    kind: str  # "echo" or "chat"
    # None for socketlab (started through its ready file).
    argv: tuple[str, ...] | None
    # Chat only: whether the paced (latency) runs include this server.
    paced: bool = True


ECHO_SERVERS = (
    ServerSpec("socketlab", "socketlab", "echo", None),
    ServerSpec("mio", "bare mio loop", "echo", (str(EXAMPLES / "baseline_mio_echo"), "0")),
    ServerSpec(
        "tokio_ct",
        "tokio current_thread",
        "echo",
        (str(EXAMPLES / "baseline_tokio_echo"), "0", "current_thread"),
    ),
    ServerSpec(
        "tokio_mt",
        "tokio multi_thread",
        "echo",
        (str(EXAMPLES / "baseline_tokio_echo"), "0", "multi_thread"),
    ),
    ServerSpec("threads", "thread per connection", "echo", (str(EXAMPLES / "baseline_thread_echo"), "0")),
    ServerSpec("python", "Python ThreadingTCPServer", "echo", (sys.executable, str(PY_ECHO), "0")),
)

CHAT_SERVERS = (
    ServerSpec("socketlab", "socketlab chat", "chat", None),
    ServerSpec(
        "tokio_chat",
        "tokio chat example (multi_thread)",
        "chat",
        (str(EXAMPLES / "baseline_tokio_chat"), "0", "multi_thread"),
    ),
    ServerSpec(
        "tokio_chat_ct",
        "tokio chat example (current_thread)",
        "chat",
        (str(EXAMPLES / "baseline_tokio_chat"), "0", "current_thread"),
        # Shown for deliveries/s; its latency tells nothing the
        # multi_thread runs do not, and a full run must stay short.
        paced=False,
    ),
)


class ServerError(Exception):
    pass


class Server:
    """One running server: its process, the address under test, and for
    socketlab the admin endpoint."""

    def __init__(self, spec: ServerSpec, logs: Path) -> None:
        self.spec = spec
        self.addr = ""
        self.admin: str | None = None
        self._dir: Path | None = None
        self._log = open(logs / f"{spec.kind}-{spec.key}.log", "ab")
        try:
            if spec.argv is None:
                self._start_socketlab()
            else:
                self._start_baseline()
        except Exception:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _start_socketlab(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="socketlab-compare-"))
        ready = self._dir / "ready.json"
        self.process = PROCESSES.start(
            [
                SOCKETLAB,
                "serve",
                "--port-base",
                "0",
                "--data-dir",
                self._dir / "data",
                "--ready-file",
                ready,
                "--log-level",
                "warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.process.poll() is not None:
                raise ServerError(f"socketlab serve exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                raise ServerError("socketlab serve wrote no ready file within 15 s")
            time.sleep(0.02)
        # The daemon writes the ready file atomically (a rename).
        addresses = json.loads(ready.read_text())
        self.addr = addresses[self.spec.kind]["tcp"]
        self.admin = addresses["admin"]["tcp"]

    def _start_baseline(self) -> None:
        self.process = PROCESSES.start(
            list(self.spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        # Every baseline prints `listening <addr>` first; wait for it with
        # a deadline rather than a blocking readline.
        ready, _, _ = select.select([self.process.stdout], [], [], 15)
        line = self.process.stdout.readline().decode(errors="replace").strip() if ready else ""
        if not line.startswith("listening "):
            raise ServerError(f"{self.spec.label}: expected `listening <addr>`, got {line!r}")
        self.addr = line.split()[1]

    def stop(self) -> None:
        if hasattr(self, "process"):
            PROCESSES.stop(self.process)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._log.close()


# --------------------------------------------------------------------------
# The load generator, watched line by line.
# --------------------------------------------------------------------------

STATUS_LINE = re.compile(
    r"^\s*(?P<second>\d+)s\s+(?P<count>[\d,]+) \S+\s+.*?/s in\s+p99\s+(?P<p99>\S+)"
    r"\s+open\s+(?P<open>[\d,]+)\s+errors\s+(?P<errors>[\d,]+)\s*$"
)

# From spawning `socketlab bench` to its clock's zero: measured here at 2.5
# to 7 ms (exec, argument parsing, the first /proc and /stats samples).
GENERATOR_STARTUP = 0.004

# The generator prints second k's line at (its start + k + 0.2 s), so that
# every worker's report for second k has arrived (src/loadgen/mod.rs).
STATUS_DELAY = 0.2


def parse_latency(text: str) -> float:
    """`850ns`, `85.2µs`, `3.10ms`, `1.20s` (units::nanos) in microseconds."""
    for unit, scale in (("ns", 1e-3), ("µs", 1.0), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"not a latency: {text!r}")


@dataclass
class Status:
    second: int
    count: int
    p99_us: float
    open: int
    errors: int
    arrived: float  # harness clock


class BenchRun:
    """`socketlab bench ...` running in the background, its status lines
    collected (and timestamped) as they come."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.started = time.monotonic()
        self.timeout = timeout
        self.process = PROCESSES.start(
            [SOCKETLAB, "bench", *argv, "--json", "--progress"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.status: list[Status] = []
        self.other_stderr: list[str] = []
        self._stdout = b""
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            arrived = time.monotonic()
            line = raw.decode(errors="replace").rstrip("\n")
            match = STATUS_LINE.match(line)
            with self._cond:
                if match:
                    self.status.append(
                        Status(
                            second=int(match["second"]),
                            count=int(match["count"].replace(",", "")),
                            p99_us=parse_latency(match["p99"]),
                            open=int(match["open"].replace(",", "")),
                            errors=int(match["errors"].replace(",", "")),
                            arrived=arrived,
                        )
                    )
                else:
                    self.other_stderr.append(line)
                self._cond.notify_all()

    def _read_stdout(self) -> None:
        self._stdout = self.process.stdout.read()

    def wait_for_status(self, predicate, timeout: float) -> Status | None:
        """The first status line satisfying `predicate`, waiting at most
        `timeout` seconds; None if the run ends or time runs out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for s in self.status[seen:]:
                    if predicate(s):
                        return s
                seen = len(self.status)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    return None
                self._cond.wait(min(remaining, 0.1))

    def generator_start(self) -> float:
        """When the generator's clock read zero, on the harness's clock.

        Each line arrives a little after (start + k + 0.2 s): the earliest
        arrival, less its nominal offset, is the best estimate."""
        with self._cond:
            return min(s.arrived - s.second - STATUS_DELAY for s in self.status)

    def cumulative(self, t: float) -> float | None:
        """Units completed from generator time 0 to `t` (seconds): exact at
        whole seconds, interpolated in between. None past the last line."""
        with self._cond:
            counts = [(s.second, s.count) for s in self.status]
        total, previous = 0.0, 0
        for second, count in counts:
            if t <= second:
                return total + count * (t - previous) / (second - previous)
            total += count
            previous = second
        return None

    def units_in_seconds(self, first: int, last: int) -> int:
        """Units completed in generator seconds first+1 .. last, i.e. in the
        interval [first, last] of the generator's clock."""
        with self._cond:
            return sum(s.count for s in self.status if first < s.second <= last)

    def interrupt(self) -> None:
        """Ctrl-C: the generator stops sending, collects the replies in
        flight, and prints its summary."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def finish(self) -> dict:
        """Waits for the summary (bounded) and returns it as a dict."""
        try:
            self.process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            PROCESSES.stop(self.process)
            raise ServerError("the load generator did not finish in time")
        for reader in self._readers:
            reader.join(timeout=5)
        PROCESSES.stop(self.process)
        try:
            report = json.loads(self._stdout)
        except json.JSONDecodeError:
            tail = "; ".join(self.other_stderr[-3:])
            raise ServerError(f"no JSON summary from the load generator (exit {self.process.returncode}): {tail}")
        return report


# --------------------------------------------------------------------------
# System calls, from perf.
# --------------------------------------------------------------------------

# Per-syscall tracepoints, grouped the way the reading of the results needs
# them; whatever raw_syscalls counts beyond these is "other".
SYSCALL_GROUPS = {
    "read": ("read", "readv", "recvfrom", "recvmsg"),
    "write": ("write", "writev", "sendto", "sendmsg"),
    "poll": ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll"),
    "futex": ("futex",),
    "sched_yield": ("sched_yield",),
}
SYSCALLS = tuple(name for names in SYSCALL_GROUPS.values() for name in names)
RAW = "raw_syscalls:sys_enter"
PERF_EVENTS = (RAW,) + tuple(f"syscalls:sys_enter_{name}" for name in SYSCALLS)
PERF_INTERVAL_MS = 100


def perf_available() -> str | None:
    """None if `perf stat` can count syscall tracepoints here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed"
    try:
        probe = subprocess.run(
            ["perf", "stat", "-x", ",", "-e", ",".join(PERF_EVENTS), "--", "true"],
            capture_output=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return "perf stat did not answer"
    if probe.returncode != 0:
        return "perf stat cannot count syscall tracepoints: " + probe.stderr.decode(errors="replace").strip()[:200]
    return None


class PerfRun:
    """`perf stat -I 100` attached to a process, its interval lines
    timestamped as they arrive."""

    def __init__(self, pid: int) -> None:
        self.process = PROCESSES.start(
            ["perf", "stat", "-I", str(PERF_INTERVAL_MS), "-x", ",", "-e", ",".join(PERF_EVENTS), "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # interval time stamp (s since counting began) -> {event: count}
        self.intervals: dict[float, dict[str, int]] = {}
        # Earliest (arrival - time stamp): when counting began, on the
        # harness's clock.
        self.counting_began: float | None = None
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.process.stderr:
            arrived = time.monotonic()
            parts = raw.decode(errors="replace").strip().split(",")
            if len(parts) < 4:
                continue
            try:
                stamp = float(parts[0])
                count = int(parts[1])
            except ValueError:
                continue  # "<not counted>", or a header
            event = parts[3]
            with self._cond:
                self.intervals.setdefault(stamp, {})[event] = count
                began = arrived - stamp
                if self.counting_began is None or began < self.counting_began:
                    self.counting_began = began
                self._cond.notify_all()

    def wait_until_counting(self, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.counting_began is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    return None
                self._cond.wait(min(remaining, 0.1))
            return self.counting_began

    def wait_past(self, t: float, timeout: float) -> bool:
        """Waits until an interval ending after harness time `t` is in."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.intervals and self.counting_began + max(self.intervals) > t):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    return False
                self._cond.wait(min(remaining, 0.1))
            return True

    def cumulative(self, event: str, t: float) -> float | None:
        """Count of `event` from the start of counting to harness time `t`,
        interpolated linearly within perf's 100 ms steps."""
        with self._cond:
            began = self.counting_began
            points = sorted(self.intervals.items())
        if began is None:
            return None
        total, previous = 0.0, 0.0
        for stamp, counts in points:
            if t - began <= stamp:
                step = counts.get(event, 0)
                return total + step * (t - began - previous) / (stamp - previous)
            total += counts.get(event, 0)
            previous = stamp
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        PROCESSES.stop(self.process)
        self._reader.join(timeout=5)


# --------------------------------------------------------------------------
# The measurements.
# --------------------------------------------------------------------------


class RunFailed(Exception):
    pass


def measure_echo(server: Server, scenario: EchoScenario, plan: Plan, perf_ok: bool) -> dict:
    """One echo run: a CPU window, then a syscall window, then Ctrl-C."""
    bench = BenchRun(
        [
            "echo",
            "--addr",
            server.addr,
            "--conns",
            str(scenario.conns),
            "--size",
            str(scenario.size),
            "--depth",
            str(scenario.depth),
            "--duration",
            "120s",
            "--pid",
            str(server.pid),
        ]
        + (["--admin", server.admin] if server.admin else []),
        timeout=30,
    )
    perf: PerfRun | None = None
    try:
        # 1. The CPU window: whole generator seconds, from second 1 if every
        # connection is open by then, with nothing else attached to the
        # server. Until the first status line arrives (at 1.2 s), the
        # generator's clock is placed at its start-up delay after the
        # spawn; the error of that guess is a few milliseconds, and the
        # message count below uses the measured clock.
        first_second = 1
        anchor = bench.started + GENERATOR_STARTUP
        window = cpu_window(server, anchor + 1, plan.cpu_window)
        opened = bench.wait_for_status(lambda s: s.open >= scenario.conns, timeout=30)
        if opened is None:
            raise RunFailed(f"not all {scenario.conns} connections opened within 30 s")
        if opened.second > first_second:
            # Connections were still opening: a new window, once they are all open.
            first_second = opened.second + 1
            window = cpu_window(server, bench.generator_start() + first_second, plan.cpu_window)
        threads = thread_count(server.pid)

        # 3. The syscall window: whole generator seconds once perf counts.
        syscall = None
        if perf_ok:
            perf = PerfRun(server.pid)
            began = perf.wait_until_counting(timeout=20)
            if began is None:
                raise RunFailed("perf did not start counting within 20 s")
            start = bench.generator_start()
            first = math.ceil(began - start + 0.05)
            last = first + plan.syscall_window
            sleep_until(start + first)
            admin_c = _admin_echo(server)
            sleep_until(start + last)
            admin_d = _admin_echo(server)
            if not perf.wait_past(start + last, timeout=10):
                raise RunFailed("perf stopped reporting")
            if bench.wait_for_status(lambda s: s.second >= last, timeout=5) is None:
                raise RunFailed("the generator stopped reporting")
            syscall = _syscalls(perf, bench, start, first, last, scenario, admin_c, admin_d)
            perf.stop()
            perf = None

        # 4. Done: let the generator collect what is in flight.
        start = bench.generator_start()
        bench.interrupt()
        report = bench.finish()
    finally:
        if perf:
            perf.stop()
        if bench.process.poll() is None:
            bench.interrupt()
            try:
                bench.finish()
            except ServerError:
                pass

    if not report.get("clean"):
        raise RunFailed("the generator found errors: " + "; ".join(f["error"] for f in report["failures"][:3]))
    gen_a, gen_b = window.began - start, window.ended - start
    messages = bench.cumulative(gen_b) - bench.cumulative(gen_a)
    if messages <= 0:
        raise RunFailed("no messages in the CPU window")
    steady = [s for s in bench.status if first_second < s.second <= round(gen_b)]
    cpu = window.user + window.system
    record = {
        "messages_per_s": messages / window.length,
        "cpu_us_per_msg": cpu * 1e6 / messages,
        "cpu_user_us_per_msg": window.user * 1e6 / messages,
        "cpu_system_us_per_msg": window.system * 1e6 / messages,
        "cpu_utilisation": cpu / window.length,
        "cpu_us_per_msg_schedstat": window.precise * 1e6 / messages,
        "p99_us": max((s.p99_us for s in steady), default=report["latency"]["p99_us"]),
        "server_threads": threads,
        "cpu_window": {"from_s": gen_a, "to_s": gen_b, "messages": messages, "cpu_s": cpu},
        "client_total_messages": report["messages"],
    }
    if scenario.size >= 1024:
        record["mib_per_s"] = record["messages_per_s"] * scenario.size / 2**20
    if window.admin_bytes is not None:
        by_server = window.admin_bytes / scenario.size
        record["cpu_window"]["messages_by_server"] = by_server
        record["cpu_count_check"] = by_server / messages - 1
    if syscall:
        record.update(syscall)
    return record


@dataclass
class CpuWindow:
    """What the server spent between two instants (harness clock)."""

    began: float
    ended: float
    user: float  # seconds, from utime
    system: float  # seconds, from stime
    precise: float  # seconds, from schedstat (a check)
    admin_bytes: int | None  # socketlab's echo bytes received, if known

    @property
    def length(self) -> float:
        return self.ended - self.began


def cpu_window(server: Server, start: float, length: float) -> CpuWindow:
    """Samples the server's CPU time (and socketlab's byte counter) at
    harness time `start` and `length` seconds later."""
    sleep_until(start)
    began, (user_a, system_a), admin_a = time.monotonic(), cpu_times(server.pid), _admin_echo(server)
    precise_a = cpu_seconds_precise(server.pid)
    sleep_until(start + length)
    ended, (user_b, system_b), admin_b = time.monotonic(), cpu_times(server.pid), _admin_echo(server)
    precise_b = cpu_seconds_precise(server.pid)
    return CpuWindow(
        began=began,
        ended=ended,
        user=user_b - user_a,
        system=system_b - system_a,
        precise=precise_b - precise_a,
        admin_bytes=None if admin_a is None or admin_b is None else admin_b - admin_a,
    )


def _admin_echo(server: Server) -> int | None:
    """socketlab's own count of echo bytes received, if it has an admin
    endpoint."""
    if not server.admin:
        return None
    return admin_stats(server.admin)["services"]["echo"]["bytes_received"]


def _syscalls(perf, bench, start, first, last, scenario, admin_c, admin_d) -> dict:
    messages = bench.units_in_seconds(first, last)
    if messages <= 0:
        raise RunFailed("no messages in the syscall window")
    at = lambda event, second: perf.cumulative(event, start + second)  # noqa: E731
    per_event = {}
    for event in PERF_EVENTS:
        a, b = at(event, first), at(event, last)
        if a is None or b is None:
            raise RunFailed("perf did not cover the syscall window")
        per_event[event] = b - a
    per_message = {"total": per_event[RAW] / messages}
    grouped = 0.0
    for group, names in SYSCALL_GROUPS.items():
        count = sum(per_event[f"syscalls:sys_enter_{n}"] for n in names)
        per_message[group] = count / messages
        grouped += count
    per_message["other"] = max(0.0, per_event[RAW] - grouped) / messages
    detail = {
        name: per_event[f"syscalls:sys_enter_{name}"] / messages
        for name in SYSCALLS
        if per_event[f"syscalls:sys_enter_{name}"] > 0
    }
    result = {
        "syscalls_per_msg": per_message["total"],
        "syscalls_by_group": per_message,
        "syscalls_by_name": detail,
        "syscall_window": {"from_s": first, "to_s": last, "messages": messages, "syscalls": per_event[RAW]},
    }
    if admin_c is not None and admin_d is not None:
        by_server = (admin_d - admin_c) / scenario.size
        result["syscall_window"]["messages_by_server"] = by_server
        result["count_check"] = by_server / messages - 1
    return result


def measure_idle(spec: ServerSpec, count: int, hold: str, logs: Path) -> dict:
    """Idle-connection memory: a fresh server, `count` connections held."""
    server = Server(spec, logs)
    try:
        bench = BenchRun(
            [
                "conns",
                "--addr",
                server.addr,
                "--count",
                str(count),
                "--hold",
                hold,
                "--connect-rate",
                "5000",
                "--pid",
                str(server.pid),
            ],
            timeout=120,
        )
        report = bench.finish()
    finally:
        server.stop()
    memory = report.get("memory") or {}
    if report.get("connected") != count or memory.get("bytes_per_connection") is None:
        raise RunFailed(
            f"{report.get('connected')} of {count} connected, {report.get('connect_failed')} failed, "
            f"{report.get('closed_by_server')} closed by the server"
        )
    return {
        "bytes_per_conn": memory["bytes_per_connection"],
        "rss_before": memory["rss_before_bytes"],
        "rss_held": memory["rss_held_bytes"],
        "connects_per_s": report["connects_per_s"],
    }


def measure_chat(server: Server, scenario: ChatScenario) -> dict:
    argv = [
        "chat",
        "--addr",
        server.addr,
        "--members",
        str(scenario.members),
        "--messages",
        str(scenario.messages),
        "--size",
        str(scenario.size),
        "--time-limit",
        "60s",
        "--pid",
        str(server.pid),
    ]
    if scenario.rate:
        argv += ["--rate", f"{scenario.rate:g}"]
    report = BenchRun(argv, timeout=90).finish()
    if not report.get("clean"):
        raise RunFailed("the generator found errors: " + "; ".join(f["error"] for f in report["failures"][:3]))
    process = report.get("process") or {}
    return {
        "deliveries_per_s": report["deliveries_per_s"],
        "p50_us": report["latency"]["p50_us"],
        "p99_us": report["latency"]["p99_us"],
        "join_s": report["join_s"],
        "send_s": report["send_s"],
        # The whole run: joining (each join is announced to every member),
        # the lines, and whatever of the leaving the server did before the
        # generator took its last sample.
        "cpu_us_per_delivery_whole_run": process.get("cpu_per_unit_us"),
    }


# --------------------------------------------------------------------------
# Running the plan.
# --------------------------------------------------------------------------


@dataclass
class Results:
    records: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, scenario: str, server: str, run: int, values: dict) -> None:
        self.records.append({"section": section, "scenario": scenario, "server": server, "run": run, **values})

    def failed(self, section: str, scenario: str, server: str, run: int, why: str) -> None:
        log(f"  FAILED: {why}")
        self.records.append({"section": section, "scenario": scenario, "server": server, "run": run, "error": why})

    def median(self, section: str, scenario: str, server: str, metric: str) -> float | None:
        values = self.values(section, scenario, server, metric)
        return statistics.median(values) if values else None

    def values(self, section: str, scenario: str, server: str, metric: str) -> list[float]:
        """The metric from every clean run, in run order."""
        return [v for _, v in sorted(self._by_run(section, scenario, server, metric).items())]

    def per_run_ratios(self, section: str, scenario: str, ours: str, theirs: str, metric: str) -> list[float]:
        """ours / theirs for every run that measured both."""
        a = self._by_run(section, scenario, ours, metric)
        b = self._by_run(section, scenario, theirs, metric)
        return [a[run] / b[run] for run in sorted(a) if run in b and b[run]]

    def _by_run(self, section: str, scenario: str, server: str, metric: str) -> dict[int, float]:
        found = {}
        for r in self.records:
            if r["section"] == section and r["scenario"] == scenario and r["server"] == server and "error" not in r:
                value = _dig(r, metric)
                if value is not None:
                    found[r["run"]] = value
        return found


def _dig(record: dict, path: str):
    value = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def run_plan(plan: Plan, args, results: Results, logs: Path, perf_ok: bool) -> None:
    echo_servers = [s for s in ECHO_SERVERS if _selected(s, args)]
    chat_servers = [s for s in CHAT_SERVERS if _selected(s, args)]
    sections = set(args.sections.split(","))
    skipped: set[str] = set()
    for run in range(1, plan.runs + 1):
        # Runs are the outer loop, so that a noisy minute on this shared
        # machine hits one run of every server rather than every run of one.
        if "echo" in sections:
            # Every echo server runs for the whole of this run (an idle one
            # costs nothing), and each scenario visits them in turn, so the
            # runs of one scenario are seconds apart, not minutes: a burst of
            # load from elsewhere on the machine hits them alike. Every other
            # run visits them in reverse order.
            running: list[Server] = []
            for spec in echo_servers:
                if spec.key in skipped:
                    continue
                try:
                    running.append(Server(spec, logs))
                except (ServerError, OSError) as e:
                    skipped.add(spec.key)
                    results.notes.append(f"{spec.label} skipped: {e}")
                    log(f"{spec.label} skipped: {e}")
            if run % 2 == 0:
                running.reverse()
            try:
                for scenario in plan.echo:
                    for server in running:
                        log(f"run {run}/{plan.runs}: echo, {scenario.title}, {server.spec.label}")
                        try:
                            values = measure_echo(server, scenario, plan, perf_ok)
                            results.add("echo", scenario.key, server.spec.key, run, values)
                        except (RunFailed, ServerError, OSError) as e:
                            results.failed("echo", scenario.key, server.spec.key, run, str(e))
            finally:
                for server in running:
                    server.stop()
        if "idle" in sections:
            for spec in echo_servers:
                if spec.key in skipped:
                    continue
                log(f"run {run}/{plan.runs}: {plan.idle_count:,} idle connections, {spec.label}")
                key = f"idle {plan.idle_count}"
                try:
                    results.add("idle", key, spec.key, run, measure_idle(spec, plan.idle_count, plan.idle_hold, logs))
                except (RunFailed, ServerError, OSError) as e:
                    results.failed("idle", key, spec.key, run, str(e))
        if "chat" in sections:
            for scenario in plan.chat:
                for spec in chat_servers:
                    if spec.key in skipped or (scenario.rate and not spec.paced):
                        continue
                    log(f"run {run}/{plan.runs}: chat, {scenario.title}, {spec.label}")
                    # A fresh server for every run: a chat server may still be
                    # busy announcing the last run's members leaving.
                    try:
                        server = Server(spec, logs)
                    except (ServerError, OSError) as e:
                        skipped.add(spec.key)
                        results.notes.append(f"{spec.label} skipped: {e}")
                        continue
                    try:
                        results.add("chat", scenario.key, spec.key, run, measure_chat(server, scenario))
                    except (RunFailed, ServerError, OSError) as e:
                        results.failed("chat", scenario.key, spec.key, run, str(e))
                    finally:
                        server.stop()


def _selected(spec: ServerSpec, args) -> bool:
    return args.servers is None or spec.key in args.servers.split(",")


# --------------------------------------------------------------------------
# Tables and goals.
# --------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference in (None, 0):
        return "-"
    return f"{value / reference:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table (which also reads well as plain text)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def echo_tables(plan: Plan, results: Results, servers: list[ServerSpec]) -> list[str]:
    out = []
    for scenario in plan.echo:
        s = scenario.key
        ref_cpu = results.median("echo", s, "socketlab", "cpu_us_per_msg")
        ref_sys = results.median("echo", s, "socketlab", "syscalls_per_msg")
        rows = []
        for spec in servers:
            m = lambda metric: results.median("echo", s, spec.key, metric)  # noqa: E731
            cpu, sys_ = m("cpu_us_per_msg"), m("syscalls_per_msg")
            if m("messages_per_s") is None:
                continue
            rate = f"{m('mib_per_s'):,.0f} MiB/s" if scenario.size >= 1024 else fmt(m("messages_per_s"))
            kernel = m("cpu_system_us_per_msg")
            share = f"{100 * kernel / cpu:.0f}%" if cpu and kernel is not None else "-"
            rows.append(
                [
                    spec.label,
                    rate,
                    fmt(m("p99_us"), 1),
                    fmt(cpu),
                    ratio(cpu, ref_cpu),
                    share,
                    fmt(sys_, 3),
                    ratio(sys_, ref_sys),
                ]
            )
        if not rows:
            continue
        out += [f"### Echo: {scenario.title}", ""]
        out += table(
            [
                "server",
                "msg/s (client)" if scenario.size < 1024 else "each way",
                "p99 µs",
                "CPU µs/msg",
                "vs socketlab",
                "in kernel",
                "syscalls/msg",
                "vs socketlab",
            ],
            rows,
        )
        out.append("")
    return out


def breakdown_tables(plan: Plan, results: Results, servers: list[ServerSpec]) -> list[str]:
    out = ["### System calls per message, by kind", ""]
    rows = []
    for scenario in plan.echo:
        for spec in servers:
            g = lambda group: results.median("echo", scenario.key, spec.key, f"syscalls_by_group.{group}")  # noqa: E731
            if g("total") is None:
                continue
            rows.append(
                [scenario.title, spec.label]
                + [fmt(g(k), 3) for k in ("read", "write", "poll", "futex", "sched_yield", "other", "total")]
            )
    if not rows:
        return []
    out += table(["scenario", "server", "read", "write", "epoll/poll", "futex", "sched_yield", "other", "total"], rows)
    out.append("")
    return out


def idle_table(plan: Plan, results: Results, servers: list[ServerSpec]) -> list[str]:
    key = f"idle {plan.idle_count}"
    ref = results.median("idle", key, "socketlab", "bytes_per_conn")
    rows = []
    for spec in servers:
        b = results.median("idle", key, spec.key, "bytes_per_conn")
        if b is None:
            continue
        rows.append([spec.label, fmt(b, 0), ratio(b, ref), fmt(results.median("idle", key, spec.key, "connects_per_s"), 0)])
    if not rows:
        return []
    out = [f"### Idle connections: {plan.idle_count:,} held, server RSS per connection", ""]
    out += table(["server", "bytes/conn", "vs socketlab", "connects/s"], rows)
    return out + [""]


def chat_tables(plan: Plan, results: Results, servers: list[ServerSpec]) -> list[str]:
    """Saturating runs compare deliveries per second; paced runs, where
    every server is offered the same load, compare delivery latency."""
    out = []
    for scenario in plan.chat:
        s = scenario.key
        ref_rate = results.median("chat", s, "socketlab", "deliveries_per_s")
        ref_p99 = results.median("chat", s, "socketlab", "p99_us")
        rows = []
        for spec in servers:
            m = lambda metric: results.median("chat", s, spec.key, metric)  # noqa: E731
            rate, p50, p99 = m("deliveries_per_s"), m("p50_us"), m("p99_us")
            if rate is None:
                continue
            ms = lambda us: fmt(us / 1e3 if us is not None else None)  # noqa: E731
            if scenario.rate:
                rows.append([spec.label, fmt(rate, 0), ms(p50), ms(p99), ratio(p99, ref_p99)])
            else:
                cpu = m("cpu_us_per_delivery_whole_run")
                rows.append([spec.label, fmt(rate, 0), ratio(ref_rate, rate), ms(p50), ms(p99), fmt(cpu)])
        if not rows:
            continue
        out += [f"### Chat: {scenario.title}", ""]
        if scenario.rate:
            out += table(["server", "deliveries/s", "p50 ms", "p99 ms", "p99 vs socketlab"], rows)
        else:
            out += table(
                ["server", "deliveries/s", "socketlab / this", "p50 ms", "p99 ms", "CPU µs/delivery (whole run)"],
                rows,
            )
        out.append("")
    return out


def goals(plan: Plan, results: Results) -> list[dict]:
    """The goals of the benchmark issue, each with the figure and a verdict.

    A ratio between two servers is given two ways: the ratio of their
    medians, and the median of the per-run ratios (each run measures both
    servers seconds apart, so a noisy minute on the machine hits both). The
    verdict is "met" or "MISSED" when both agree, "uncertain" when they do
    not: more runs (`--runs`) are then needed to decide."""
    checks = []

    def check(goal: str, value, limit: float, at_most: bool, per_run: list[float]) -> None:
        def meets(v):
            return v <= limit if at_most else v >= limit

        paired = statistics.median(per_run) if per_run else None
        if value is None:
            verdict = "not measured"
        elif paired is None or meets(value) == meets(paired):
            verdict = "met" if meets(value) else "MISSED"
        else:
            verdict = "uncertain"
        checks.append(
            {
                "goal": goal,
                "value": value,
                "median_per_run": paired,
                "range_per_run": [min(per_run), max(per_run)] if per_run else None,
                "runs": len(per_run),
                "limit": limit,
                "verdict": verdict,
            }
        )

    def ratio_check(goal, section, scenario, ours, theirs, metric, limit, at_most=True):
        a = results.median(section, scenario, ours, metric)
        b = results.median(section, scenario, theirs, metric)
        value = a / b if a and b else None
        check(goal, value, limit, at_most, results.per_run_ratios(section, scenario, ours, theirs, metric))

    def value_check(goal, section, scenario, metric, limit):
        value = results.median(section, scenario, "socketlab", metric)
        check(goal, value, limit, True, results.values(section, scenario, "socketlab", metric))

    for scenario in plan.echo:
        if scenario.size != 64 or scenario.conns not in (100, 1000):
            continue
        ratio_check(
            f"echo CPU/msg, {scenario.title}: socketlab / tokio current_thread <= 0.9",
            "echo",
            scenario.key,
            "socketlab",
            "tokio_ct",
            "cpu_us_per_msg",
            0.9,
        )
        limit = 2.1 if scenario.depth == 1 else 0.17
        value_check(
            f"echo syscalls/msg, {scenario.title}: socketlab <= {limit}",
            "echo",
            scenario.key,
            "syscalls_per_msg",
            limit,
        )
    if plan.idle_count:
        value_check(
            f"idle memory, {plan.idle_count:,} connections: socketlab bytes/conn <= 256",
            "idle",
            f"idle {plan.idle_count}",
            "bytes_per_conn",
            256,
        )
    for scenario in plan.chat:
        if scenario.rate:
            continue
        ratio_check(
            f"chat deliveries/s, {scenario.members:,} members: socketlab / tokio chat example >= 2",
            "chat",
            scenario.key,
            "socketlab",
            "tokio_chat",
            "deliveries_per_s",
            2.0,
            at_most=False,
        )
    return checks


def goal_lines(checks: list[dict]) -> list[str]:
    rows = []
    for c in checks:
        low_high = c["range_per_run"]
        rows.append(
            [
                c["goal"],
                fmt(c["value"], 3),
                fmt(c["median_per_run"], 3),
                f"{fmt(low_high[0], 3)} to {fmt(low_high[1], 3)}" if low_high else "-",
                c["verdict"],
            ]
        )
    header = ["goal", "median", "median of per-run figures", "range over runs", "verdict"]
    return ["### Goals", ""] + table(header, rows) + [""]


def count_check_line(results: Results) -> str | None:
    """How far the generator's count of a window is from socketlab's own
    count of the same window: the error of the window alignment."""
    parts = []
    for key, name in (("cpu_count_check", "CPU"), ("count_check", "syscall")):
        checks = [r[key] for r in results.records if key in r]
        if checks:
            worst = max(checks, key=abs)
            parts.append(
                f"{name} windows ({len(checks)}): median {statistics.median(checks) * 100:+.2f}%, "
                f"worst {worst * 100:+.2f}%"
            )
    if not parts:
        return None
    return "Window alignment check, socketlab's byte counters against the generator's count: " + "; ".join(parts) + "."


# --------------------------------------------------------------------------
# The machine, and the command line.
# --------------------------------------------------------------------------


def machine() -> dict:
    def run(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    lscpu = run(["lscpu"])
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(),
        "rustc": run(["rustc", "--version"]),
        "python": platform.python_version(),
        "commit": run(["git", "rev-parse", "--short", "HEAD"]),
        "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "load_average_at_start": os.getloadavg(),
    }


def machine_line(host: dict) -> str:
    return (
        f"Machine: {host['cpus']} CPUs ({host['cpu_model']}), {host['memory_gib']} GiB, Linux {host['kernel']}, "
        f"{host['rustc']}, Python {host['python']}, commit {host['commit']}; "
        f"load average at start {host['load_average_at_start'][0]:.2f}."
    )


def build() -> None:
    log("building: cargo build --release --bins --examples")
    done = subprocess.run(["cargo", "build", "--release", "--bins", "--examples"], cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"the build failed (status {done.returncode})")


def raise_open_file_limit() -> None:
    """Children inherit it: the baselines do not raise their own."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _interrupt(*_) -> None:
    """SIGTERM ends the harness the way Ctrl-C does: report, then stop."""
    raise KeyboardInterrupt


def render(plan: Plan, results: Results, servers: list[str] | None, heading: str) -> tuple[str, list[dict], list[str]]:
    """The tables, the goals and the notes, as markdown."""
    echo_servers = [s for s in ECHO_SERVERS if servers is None or s.key in servers]
    chat_servers = [s for s in CHAT_SERVERS if servers is None or s.key in servers]
    checks = goals(plan, results)
    lines = [heading, ""]
    lines += echo_tables(plan, results, echo_servers)
    lines += breakdown_tables(plan, results, echo_servers)
    lines += idle_table(plan, results, echo_servers)
    lines += chat_tables(plan, results, chat_servers)
    lines += goal_lines(checks)
    check_line = count_check_line(results)
    failures = [r for r in results.records if "error" in r]
    notes = results.notes + ([check_line] if check_line else [])
    notes += [f"failed: {r['section']} {r['scenario']} {r['server']} run {r['run']}: {r['error']}" for r in failures]
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines), checks, notes


def report_files(paths: list[Path]) -> int:
    """Re-renders saved results; several files are pooled as more runs of
    the same plan (the first file's plan)."""
    documents = [json.loads(path.read_text()) for path in paths]
    first = documents[0]["plan"]
    plan = Plan(
        runs=sum(d["plan"]["runs"] for d in documents),
        echo=tuple(EchoScenario(**x) for x in first["echo"]),
        cpu_window=first["cpu_window_s"],
        syscall_window=first["syscall_window_s"],
        idle_count=first["idle"]["count"],
        idle_hold=first["idle"]["hold"],
        chat=tuple(ChatScenario(**x) for x in first["chat"]),
    )
    results = Results()
    offset = 0
    for d in documents:
        for record in d["records"]:
            results.records.append({**record, "run": record["run"] + offset})
        results.notes += d.get("harness_notes", [])
        offset += d["plan"]["runs"]
    names = ", ".join(p.name for p in paths)
    heading = f"## Results of {names} ({plan.runs} runs per figure, medians)\n\n{machine_line(documents[0]['machine'])}"
    text, _, _ = render(plan, results, None, heading)
    print(text)
    return 0


def main() -> int:
    paragraphs = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        description=paragraphs[0],
        epilog="\n\n".join(paragraphs[1:3]) + "\n\nThe docstring at the top of this file explains the method.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: one run, fewer scenarios, smaller counts")
    parser.add_argument("--runs", type=int, help="runs per figure (medians are reported); default 3, or 1 with --quick")
    parser.add_argument("--servers", help="comma-separated server keys: " + ",".join(s.key for s in ECHO_SERVERS + CHAT_SERVERS[1:]))
    parser.add_argument("--sections", default="echo,idle,chat", help="comma-separated: echo,idle,chat (default: all)")
    parser.add_argument(
        "--scenarios",
        help='comma-separated echo and chat scenarios to keep, matched against their keys, e.g. "c100 d1 s64,c1000 d1 s64" or "m1000"',
    )
    parser.add_argument("--no-build", action="store_true", help="use the binaries already in target/release")
    parser.add_argument("--out", type=Path, default=REPO / "target" / "compare", help="where results go")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: print the tables of saved results (several files are pooled as more runs)",
    )
    args = parser.parse_args()
    if args.report:
        return report_files(args.report)

    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(**{**plan.__dict__, "runs": args.runs})
    if args.scenarios:
        wanted = [w.strip() for w in args.scenarios.split(",")]
        keep = lambda scenarios: tuple(x for x in scenarios if any(w in x.key for w in wanted))  # noqa: E731
        plan = Plan(**{**plan.__dict__, "echo": keep(plan.echo), "chat": keep(plan.chat)})
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)

    # Whatever ends the harness (the end, an error, Ctrl-C, SIGTERM), every
    # process it started is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    host = machine()
    results = Results()
    try:
        if not args.no_build:
            build()
        raise_open_file_limit()
        perf_problem = perf_available()
        if perf_problem:
            results.notes.append(f"no syscall counts: {perf_problem}")
            log(f"note: {perf_problem}")
        run_plan(plan, args, results, logs, perf_problem is None)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
        results.notes.append("interrupted before the end")
    finally:
        PROCESSES.stop_all()
    elapsed = time.monotonic() - started

    heading = (
        f"## Comparison run of {datetime.datetime.now().isoformat(timespec='seconds')}"
        f" ({'quick' if args.quick else 'full'}, {plan.runs} run{'s' if plan.runs > 1 else ''} per figure,"
        f" medians; {elapsed / 60:.1f} min)\n\n{machine_line(host)}"
    )
    servers = args.servers.split(",") if args.servers else None
    text, checks, notes = render(plan, results, servers, heading)
    failures = [r for r in results.records if "error" in r]
    print(text)

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    document = {
        "machine": host,
        "plan": {
            "quick": args.quick,
            "runs": plan.runs,
            "cpu_window_s": plan.cpu_window,
            "syscall_window_s": plan.syscall_window,
            "echo": [s.__dict__ for s in plan.echo],
            "idle": {"count": plan.idle_count, "hold": plan.idle_hold},
            "chat": [s.__dict__ for s in plan.chat],
        },
        "elapsed_s": elapsed,
        "goals": checks,
        "notes": notes,
        "harness_notes": results.notes,
        "records": results.records,
    }
    for name in (f"compare-{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(text + "\n")
    log(f"results: {args.out / 'latest.md'} and {args.out / 'latest.json'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
