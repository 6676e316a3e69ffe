#!/usr/bin/env python3
"""Baseline: the classic Python socketserver.ThreadingTCPServer echo server.

    python3 benches/baselines/py_echo.py [PORT]

It binds 127.0.0.1:PORT (PORT 0, the default, picks a free port) and prints
`listening <addr>` on stdout before anything else, so a harness can start it
on an ephemeral port and read the address back. One thread per connection,
as ThreadingTCPServer does; sockets get TCP_NODELAY like every other server
compared.
"""

import socket
import socketserver
import sys


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                self.request.sendall(data)
            except OSError:
                return


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 would drop connects from a load test.
    request_queue_size = 1024


def main():
    try:
        port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    except ValueError:
        print("usage: py_echo.py [PORT]", file=sys.stderr)
        sys.exit(2)
    with Server(("127.0.0.1", port), EchoHandler) as server:
        host, bound_port = server.server_address[:2]
        print(f"listening {host}:{bound_port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
