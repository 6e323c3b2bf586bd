#!/usr/bin/env python3
"""Starts a program the way systemd socket activation does.

    activate.py [--pid ours|other|none] [--names NAME:NAME…] SPEC… -- PROGRAM ARGS…

Each SPEC becomes one descriptor, from 3 up, in order:

    tcp              a TCP socket listening on 127.0.0.1, port chosen by the kernel
    udp              a UDP socket bound to 127.0.0.1, port chosen by the kernel
    unix:PATH        a Unix stream socket listening on PATH
    unix-dgram:PATH  a Unix datagram socket bound to PATH
    file:PATH        a regular file (not a socket), opened for reading

Then LISTEN_FDS is set to the number of SPECs, LISTEN_FDNAMES to --names (if given), and
LISTEN_PID to this process's pid, which PROGRAM keeps because this process becomes it with
exec (as systemd does after its fork). --pid other sets a pid that is not PROGRAM's, as when
the variables leak to a child by accident; --pid none leaves LISTEN_PID out.

The kernel-chosen ports are not printed: a sockit server says where it listens.
"""

import os
import socket
import sys


def make(spec):
    kind, _, arg = spec.partition(":")
    if kind == "tcp":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        return s
    if kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        return s
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(arg)
        s.listen(16)
        return s
    if kind == "unix-dgram":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(arg)
        return s
    if kind == "file":
        return open(arg, "rb")
    sys.exit(f"activate.py: unknown spec {spec!r}")


def main():
    args = sys.argv[1:]
    if "--" not in args:
        sys.exit(__doc__)
    split = args.index("--")
    options, program = args[:split], args[split + 1 :]
    pid_mode, names, specs = "ours", None, []
    while options:
        opt = options.pop(0)
        if opt == "--pid":
            pid_mode = options.pop(0)
        elif opt == "--names":
            names = options.pop(0)
        else:
            specs.append(opt)
    objects = [make(s) for s in specs]
    # Out of the way first, so that placing one on 3, 4, … never overwrites another.
    high = [os.dup(o.fileno()) for o in objects]
    high = [fcntl_dup_high(fd) for fd in high]
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i, inheritable=True)
        os.close(fd)
    env = dict(os.environ)
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(k, None)
    env["LISTEN_FDS"] = str(len(specs))
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    if pid_mode == "ours":
        env["LISTEN_PID"] = str(os.getpid())
    elif pid_mode == "other":
        env["LISTEN_PID"] = "1"
    os.execve(program[0], program, env)


def fcntl_dup_high(fd):
    import fcntl

    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)
    os.close(fd)
    return moved


if __name__ == "__main__":
    main()
