"""Runs a seed server program unchanged, on a port the kernel picks, and reports the port.

Usage: python3 launch.py SEED.py HOST [ARGS...]

The seed servers take HOST PORT on the command line and print nothing reliable once they are
ready, so a test could only guess when to connect. This launcher passes port 0 and wraps
socket.listen (TCP) and socket.bind (UDP) so that, the moment the socket is ready, it prints
`READY <port>` on stderr. The seed's own code runs as its __main__, untouched.
"""
import runpy
import socket
import sys

seed, host, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
_bind, _listen = socket.socket.bind, socket.socket.listen


def _ready(sock):
    print("READY %d" % sock.getsockname()[1], file=sys.stderr, flush=True)


def bind(self, addr):
    _bind(self, addr)
    if self.type == socket.SOCK_DGRAM:
        _ready(self)


def listen(self, *args):
    _listen(self, *args)
    _ready(self)


socket.socket.bind = bind
socket.socket.listen = listen
sys.argv = [seed, host, "0"] + rest
runpy.run_path(seed, run_name="__main__")
