"""Echo server in the seeds' style: socketserver.ThreadingTCPServer, one thread per client.

Usage: python3 threaded_echo.py HOST PORT    (port 0: the kernel picks one)

Prints `READY <port>` on stderr once it listens. Each connection's thread does recv(65536) and
sendall until the peer closes.
"""
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 4096


if __name__ == "__main__":
    with Server((sys.argv[1], int(sys.argv[2])), Echo) as server:
        print("READY %d" % server.server_address[1], file=sys.stderr, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
