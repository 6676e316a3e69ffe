#!/usr/bin/env python3
"""One large file through the files service, each way, against the limit.

Run it from the repository's root (Python 3 standard library only):

    cargo build --release
    python3 benches/files_bench.py              # 1 GiB, 3 runs of each figure
    python3 benches/files_bench.py --size-mib 256 --runs 1   # a quick look

It starts its own release daemon (`serve --port-base 0 --ready-file`) on a
temporary data directory, adds a user, and in each of `--runs` runs writes a
new file of pseudo-random bytes into a temporary directory (under $TMPDIR,
else /tmp, which also holds the daemon's data) and measures the following;
each figure is the median of the runs. At most two copies of the file are
on disk at a time, and it says so before it starts if they do not fit.

- `put`: `socketlab files put` of the file. The client hashes the file
  (the request carries its SHA-256), then sends it; the daemon writes it to
  a staging file and hashes it as it arrives, fsyncs it and confirms the
  digest, which the client checks.
- `get`: `socketlab files get` of the uploaded file into a new local file.
  Before each run the remote file's mtime is changed, so the daemon hashes
  it again rather than answering from its digest cache; the client hashes
  what it receives, fsyncs it and checks the digest. `get (cached)` is the
  same without the touch: the daemon's hash is already known.
- `copy`: the limit on moving the bytes: a Python sender (`socket.sendfile`,
  i.e. sendfile(2)) and a Python receiver (`recv_into` a 1 MiB buffer,
  `write` to a file, `fsync`) over 127.0.0.1, two processes, copying the
  daemon's stored copy of the file (the same bytes).
- `sha256sum`: coreutils hashing the file from the page cache; Python's
  `hashlib` (OpenSSL) alongside for reference.
- `login`: `socketlab files pwd`, the fixed cost inside every command.

Rates are MiB/s of wall time per command, login included. CPU is utime +
stime: the daemon's from /proc/PID/stat before and after, the client's from
its rusage once reaped, in microseconds per MiB moved. Every temporary file, directory
and process is removed at the end, also after a failure or Ctrl-C.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "socketlab")
MIB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")
PASSWORD = "files-bench-password"
USER = "bench"

RECEIVER = r"""
import os, socket, sys
out, fd_ready = sys.argv[1], int(sys.argv[2])
lsock = socket.socket()
lsock.bind(("127.0.0.1", 0))
lsock.listen(1)
os.write(fd_ready, str(lsock.getsockname()[1]).encode() + b"\n")
os.close(fd_ready)
conn, _ = lsock.accept()
buf = bytearray(1 << 20)
view = memoryview(buf)
with open(out, "wb", buffering=0) as f:
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        f.write(view[:n])
    os.fsync(f.fileno())
"""

SENDER = r"""
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port))
with open(path, "rb") as f:
    s.sendfile(f)
s.close()
"""


def proc_cpu(pid):
    """utime + stime of a process, every thread, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def run_timed(argv, stdin=None, cwd=None):
    """Runs argv to the end; returns (wall s, stdout, stderr, status)."""
    start = time.perf_counter()
    p = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
    )
    out, err = p.communicate(stdin)
    wall = time.perf_counter() - start
    # communicate() reaped it; its rusage is in the children's totals.
    return wall, out.decode(), err.decode(), p.returncode


class Children:
    """CPU of reaped children, as a difference of RUSAGE_CHILDREN."""

    def __enter__(self):
        r = os.times()
        self.start = r.children_user + r.children_system
        return self

    def __exit__(self, *exc):
        r = os.times()
        self.cpu = r.children_user + r.children_system - self.start


def fs_type(path):
    """The filesystem type of the mount holding path, from /proc/mounts."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, typ = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, kind = mnt, typ
    return kind, best


def write_random(path, size, seed=1):
    """size bytes from a seeded generator, 64 MiB at a time."""
    rng = random.Random(seed)
    left = size
    with open(path, "wb") as f:
        while left:
            n = min(left, 64 * MIB)
            f.write(rng.randbytes(n))
            left -= n
        os.fsync(f.fileno())


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(4 * MIB)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class Bench:
    def __init__(self, args):
        self.args = args
        self.size = args.size_mib * MIB
        self.tmp = tempfile.mkdtemp(prefix="files-bench-")
        self.data = os.path.join(self.tmp, "data")
        self.local = os.path.join(self.tmp, "big.bin")
        self.daemon = None
        self.results = {}

    # -- the daemon -------------------------------------------------------

    def start(self):
        ready = os.path.join(self.tmp, "ready.json")
        self.daemon_err = open(os.path.join(self.tmp, "daemon.stderr"), "wb")
        self.daemon = subprocess.Popen(
            [BIN, "serve", "--port-base", "0", "--data-dir", self.data,
             "--ready-file", ready, "--log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.daemon_err,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.daemon.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("daemon not ready in 30 s")
            time.sleep(0.02)
        with open(ready) as f:
            self.addr = json.load(f)["files"]["tcp"]
        subprocess.run(
            [BIN, "user", "add", USER, "--password-stdin", "--data-dir", self.data],
            input=PASSWORD.encode(), check=True, capture_output=True,
        )

    def files(self, *argv):
        """One `socketlab files` command: (wall, client cpu, daemon cpu, json)."""
        cmd = [BIN, "files", "--addr", self.addr, "--user", USER, "--password-stdin",
               "--timeout", "5m", "--json", *argv]
        d0 = proc_cpu(self.daemon.pid)
        with Children() as c:
            wall, out, err, status = run_timed(cmd, stdin=PASSWORD.encode(), cwd=self.tmp)
        d1 = proc_cpu(self.daemon.pid)
        if status != 0:
            raise RuntimeError(f"{' '.join(argv)}: status {status}: {out}{err}")
        return wall, c.cpu, d1 - d0, json.loads(out.strip().splitlines()[-1])

    def remote_path(self, name):
        for top, _, names in os.walk(os.path.join(self.data, "files")):
            if ".staging" not in top and name in names:
                return os.path.join(top, name)
        raise RuntimeError(f"{name} not found under the data dir")

    # -- the measurements -------------------------------------------------

    def record(self, key, wall, client=None, daemon=None):
        self.results.setdefault(key, []).append(
            {"wall": wall, "client_cpu": client, "daemon_cpu": daemon}
        )
        rate = self.size / MIB / wall
        extra = ""
        if client is not None:
            extra = f"  cpu client {client:.2f} s, daemon {daemon:.2f} s"
        print(f"  {key:14} {wall:7.2f} s  {rate:8.1f} MiB/s{extra}", file=sys.stderr, flush=True)

    def measure(self):
        """Each run: put, get twice, copy, hash. At most two copies of the
        file are on disk at any time (the disk this runs on may be small):
        the local file is written before the put and removed after it, and
        the copy and the hashes read the daemon's copy, the same bytes."""
        runs = self.args.runs
        for i in range(runs):
            print(f"run {i + 1} of {runs}", file=sys.stderr, flush=True)
            write_random(self.local, self.size, seed=i + 1)
            expect = sha256_file(self.local)
            wall, _, _, _ = self.files("pwd")
            self.results.setdefault("login", []).append({"wall": wall})

            # put: a new remote name each run; the previous one is removed.
            if i > 0:
                os.remove(self.remote)
            os.sync()
            name = f"up-{i}.bin"
            wall, c, d, answer = self.files("put", self.local, name)
            if answer.get("sha256") != expect:
                raise RuntimeError(f"put confirmed {answer.get('sha256')}, expected {expect}")
            self.record("put", wall, c, d)
            self.remote = self.remote_path(name)
            os.remove(self.local)

            # get, the daemon hashing again: a new mtime is a new file identity.
            for key, touch in (("get", True), ("get (cached)", False)):
                if touch:
                    now = time.time_ns()
                    os.utime(self.remote, ns=(now, now))
                got = os.path.join(self.tmp, "got.bin")
                os.sync()
                wall, c, d, answer = self.files("get", name, got)
                if answer.get("sha256") != expect or os.path.getsize(got) != self.size:
                    raise RuntimeError(f"get returned {answer}, expected {expect}")
                self.record(key, wall, c, d)
                os.remove(got)

            os.sync()
            self.record("copy", *self.copy(self.remote))
            with Children() as c:
                wall, out, _, status = run_timed(["sha256sum", self.remote])
            if status != 0 or not out.startswith(expect):
                raise RuntimeError(f"sha256sum: {status} {out}")
            self.record("sha256sum", wall, c.cpu, 0.0)
            start = time.perf_counter()
            sha256_file(self.remote)
            self.record("hashlib", time.perf_counter() - start)

    def copy(self, source):
        """The raw loopback copy of source: (wall, sender+receiver cpu, 0)."""
        out = os.path.join(self.tmp, "copy.bin")
        r, w = os.pipe()
        with Children() as c:
            receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, out, str(w)], pass_fds=(w,))
            os.close(w)
            with os.fdopen(r) as f:
                port = f.readline().strip()
            start = time.perf_counter()
            sender = subprocess.run([sys.executable, "-c", SENDER, port, source])
            receiver.wait()
            wall = time.perf_counter() - start
        if sender.returncode or receiver.returncode or os.path.getsize(out) != self.size:
            raise RuntimeError("the raw copy failed")
        os.remove(out)
        return wall, c.cpu, 0.0

    # -- the report -------------------------------------------------------

    def report(self):
        mib = self.size / MIB
        med = {k: statistics.median(r["wall"] for r in v) for k, v in self.results.items()}
        rate = {k: mib / w for k, w in med.items()}

        def cpu(key, who):
            vals = [r[who] for r in self.results[key] if r.get(who) is not None]
            return statistics.median(vals) / mib * 1e6 if vals else None

        limit = min(rate["copy"], rate["sha256sum"])
        strict = min(rate["copy"], rate["hashlib"])
        kind, mnt = fs_type(self.tmp)
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"\nsize {mib:.0f} MiB, {self.args.runs} runs, medians; temp dir on {mnt} ({kind}); "
              f"load average now {' '.join(load)}")
        print(f"login (files pwd): {med['login'] * 1000:.0f} ms per command\n")
        print("| what | MiB/s | vs limit | vs strict limit | daemon CPU µs/MiB | client CPU µs/MiB |")
        print("|---|---|---|---|---|---|")
        for key in ("get", "get (cached)", "put"):
            print(f"| `{key}` | {rate[key]:.0f} | {rate[key] / limit:.2f}x | {rate[key] / strict:.2f}x | "
                  f"{cpu(key, 'daemon_cpu'):.0f} | {cpu(key, 'client_cpu'):.0f} |")
        print(f"| raw copy: Python sendfile → recv_into, write, fsync | {rate['copy']:.0f} | | | | "
              f"{cpu('copy', 'client_cpu'):.0f} (both ends) |")
        print(f"| `sha256sum` | {rate['sha256sum']:.0f} | | | | {cpu('sha256sum', 'client_cpu'):.0f} |")
        print(f"| Python `hashlib.sha256` (OpenSSL) | {rate['hashlib']:.0f} | | | | |")
        print(f"| limit: min(copy, `sha256sum`) | {limit:.0f} | 1.00x | | | |")
        print(f"| strict limit: min(copy, `hashlib`) | {strict:.0f} | | 1.00x | | |")
        print("\n" + json.dumps({"size": self.size, "results": self.results}))

    def cleanup(self):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    # SIGTERM unwinds like Ctrl-C, so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    try:
        kind, mnt = fs_type(bench.tmp)
        print(f"temp dir {bench.tmp} on {mnt} ({kind})", file=sys.stderr, flush=True)
        free = shutil.disk_usage(bench.tmp).free
        if free < 2.2 * bench.size:
            raise RuntimeError(f"{free // MIB} MiB free in {bench.tmp}: two copies of the file must fit")
        bench.start()
        bench.measure()
        bench.report()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
