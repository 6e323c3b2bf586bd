#!/usr/bin/env python3
"""A client for `sockit serve ... exec`, written from PROTOCOL.md sections 1, 5 and 6 alone.

Usage: python3 exec_client.py HOST PORT TOKEN_FILE CMD [ARGS...]

It connects over TCP, does the handshake (HELLO, AUTH, WELCOME, checking the server's proof),
sends one EXEC with stdin=1, closes the command's stdin at once (STDIN_EOF), copies STDOUT and
STDERR to its own stdout and stderr, and exits the way `sockit exec` does: with the command's
code, 128 + the signal that killed it, 124 on a timeout, 127 if the command was not found, 126
if it could not be executed, 255 if the connection or the authentication failed.

Standard library only: socket, struct, hmac, hashlib, os, sys.
"""
import hashlib
import hmac
import os
import socket
import struct
import sys

# Message types (section 5).
HELLO, AUTH, WELCOME = 0x01, 0x02, 0x03
EXEC, STDIN, STDIN_EOF, SIGNAL = 0x10, 0x11, 0x12, 0x13
STARTED, STDOUT, STDERR, EXIT = 0x20, 0x21, 0x22, 0x23
ERROR = 0x7F

SERVICE_EXEC = 1
MAX_MESSAGE = 1 << 20  # a message longer than 1 MiB ends the connection
HASH = 32


class Failure(Exception):
    """The connection or the authentication failed: exit 255."""


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Failure("server closed the connection in the middle of a message"
                          if buf else "server closed the connection")
        buf += chunk
    return bytes(buf)


def recv_msg(sock):
    """One message: a `len` frame whose first payload byte is the type. Returns (type, body)."""
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if n == 0:
        raise Failure("protocol error: an empty frame has no message type")
    if n > MAX_MESSAGE:
        raise Failure("protocol error: message of %d bytes exceeds 1 MiB" % n)
    payload = recv_exact(sock, n)
    return payload[0], payload[1:]


def send_msg(sock, kind, body=b""):
    sock.sendall(struct.pack(">IB", len(body) + 1, kind) + body)


def error_text(body):
    if len(body) < 1:
        raise Failure("protocol error: ERROR without a code")
    return body[0], body[1:].decode("utf-8", "replace")


def handshake(sock, token):
    kind, body = recv_msg(sock)
    if kind == ERROR:
        code, text = error_text(body)
        raise Failure("refused (code %d): %s" % (code, text))
    if kind != HELLO or len(body) != 3 + HASH:
        raise Failure("protocol error: expected HELLO, got type 0x%02x (%d bytes)" % (kind, len(body)))
    version, service, auth = body[0], body[1], body[2]
    ns = body[3:]
    if version != 1:
        raise Failure("unsupported protocol version %d" % version)
    if service != SERVICE_EXEC:
        raise Failure("the server does not run the exec service (service %d)" % service)
    if auth == 0:
        return
    if auth != 1:
        raise Failure("protocol error: HELLO auth byte %d" % auth)
    if token is None:
        raise Failure("the server requires a token")
    nc = os.urandom(HASH)
    svc = bytes([service])
    mac = hmac.new(token, b"sockit-auth-v1 client" + svc + ns + nc, hashlib.sha256).digest()
    send_msg(sock, AUTH, nc + mac)
    kind, body = recv_msg(sock)
    if kind == ERROR:
        code, text = error_text(body)
        raise Failure("authentication refused (code %d): %s" % (code, text))
    if kind != WELCOME or len(body) != HASH:
        raise Failure("protocol error: expected WELCOME, got type 0x%02x" % kind)
    want = hmac.new(token, b"sockit-auth-v1 server" + svc + ns + nc, hashlib.sha256).digest()
    if not hmac.compare_digest(body, want):
        raise Failure("the server's proof is wrong: it does not know the token")


def run(sock, argv):
    """Runs argv; returns the exit code to exit with."""
    args = [a.encode("utf-8", "surrogateescape") for a in argv]
    send_msg(sock, EXEC, struct.pack(">IB", 0, 1) + b"\0".join(args))
    kind, body = recv_msg(sock)
    if kind == ERROR:
        code, text = error_text(body)
        sys.stderr.write("exec_client: %s\n" % text)
        # Section 6 names 127 and 126; any other refusal is treated like a failed connection.
        return {4: 127, 5: 126}.get(code, 255)
    if kind != STARTED or len(body) != 4:
        raise Failure("protocol error: expected STARTED, got type 0x%02x" % kind)
    send_msg(sock, STDIN_EOF)
    out, err = sys.stdout.buffer, sys.stderr.buffer
    while True:
        kind, body = recv_msg(sock)
        if kind == STDOUT:
            out.write(body)
            out.flush()
        elif kind == STDERR:
            err.write(body)
            err.flush()
        elif kind == EXIT:
            if len(body) != 5:
                raise Failure("protocol error: EXIT of %d bytes" % len(body))
            how, code = struct.unpack(">BI", body)
            if how == 0:
                return code
            if how == 1:
                return 128 + code
            if how == 2:
                sys.stderr.write("exec_client: timed out\n")
                return 124
            raise Failure("protocol error: EXIT how=%d" % how)
        elif kind == ERROR:
            code, text = error_text(body)
            raise Failure("error (code %d): %s" % (code, text))
        else:
            raise Failure("protocol error: unexpected message type 0x%02x" % kind)


def main():
    if len(sys.argv) < 5:
        sys.stderr.write("usage: exec_client.py HOST PORT TOKEN_FILE CMD [ARGS...]\n")
        return 2
    host, port, token_file, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    with open(token_file, "rb") as f:
        token = f.read().strip()
    try:
        sock = socket.create_connection((host, port), timeout=30)
        try:
            handshake(sock, token)
            return run(sock, argv)
        finally:
            sock.close()
    except (Failure, OSError) as e:
        sys.stderr.write("exec_client: %s\n" % e)
        return 255


if __name__ == "__main__":
    sys.exit(main())
