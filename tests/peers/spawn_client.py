#!/usr/bin/env python3
"""A client for `sockit serve ... spawn` with a token, written from PROTOCOL.md sections 5 and 9.

Usage: python3 spawn_client.py HOST PORT TOKEN_FILE [--reset-after-line]

It connects over TCP and does the handshake (HELLO for service 3, AUTH, WELCOME, checking the
server's proof); from then on the connection is the program's stdin and stdout. It sends its own
stdin, half-closes, and copies everything the program writes to its stdout until the server
closes. With --reset-after-line it sends nothing: it copies one line of output, then closes the
connection with a reset (SO_LINGER 0), as a client that crashes on a lossy network might.

Exits 0, or 1 with one line on stderr if the connection or the handshake failed.

Standard library only: socket, struct, hmac, hashlib, os, sys.
"""
import hashlib
import hmac
import os
import socket
import struct
import sys

HELLO, AUTH, WELCOME, ERROR = 0x01, 0x02, 0x03, 0x7F
SERVICE_SPAWN = 3


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("the server closed the connection during the handshake")
        buf += chunk
    return bytes(buf)


def recv_msg(sock):
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if not 1 <= n <= 1024:
        raise ValueError(f"a handshake message of {n} bytes")
    payload = recv_exact(sock, n)
    if payload[0] == ERROR:
        raise ValueError(f"refused: {payload[2:].decode(errors='replace')} (code {payload[1]})")
    return payload[0], payload[1:]


def send_msg(sock, kind, body):
    sock.sendall(struct.pack(">I", len(body) + 1) + bytes([kind]) + body)


def mac(token, label, ns, nc):
    return hmac.new(token, label + bytes([SERVICE_SPAWN]) + ns + nc, hashlib.sha256).digest()


def handshake(sock, token):
    kind, body = recv_msg(sock)
    if kind != HELLO or len(body) != 35:
        raise ValueError(f"expected HELLO, got type {kind:#x}")
    version, service, auth, ns = body[0], body[1], body[2], body[3:]
    if (version, service, auth) != (1, SERVICE_SPAWN, 1):
        raise ValueError(f"not a spawn server with a token: version {version}, service {service}, auth {auth}")
    nc = os.urandom(32)
    send_msg(sock, AUTH, nc + mac(token, b"sockit-auth-v1 client", ns, nc))
    kind, proof = recv_msg(sock)
    if kind != WELCOME:
        raise ValueError(f"expected WELCOME, got type {kind:#x}")
    if not hmac.compare_digest(proof, mac(token, b"sockit-auth-v1 server", ns, nc)):
        raise ValueError("the server could not prove it holds the token")


def main():
    host, port, token_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    reset_after_line = "--reset-after-line" in sys.argv[4:]
    with open(token_file, "rb") as f:
        # Leading and trailing spaces, tabs, CR, LF and form feeds are not part of the token.
        token = f.read().strip(b" \t\r\n\x0c")
    try:
        sock = socket.create_connection((host, port), timeout=20)
        handshake(sock, token)
    except (OSError, EOFError, ValueError) as e:
        sys.stderr.write(f"spawn_client: {e}\n")
        return 1
    out = sys.stdout.buffer
    if reset_after_line:
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                break
            line += chunk
        out.write(line)
        out.flush()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return 0
    sock.sendall(sys.stdin.buffer.read())
    sock.shutdown(socket.SHUT_WR)
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        out.write(chunk)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
