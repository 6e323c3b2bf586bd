"""Echo server on asyncio streams: the idiomatic Python async baseline for `bench/compare`.

Usage: python3 asyncio_echo.py HOST PORT    (port 0: the kernel picks one)

Prints `READY <port>` on stderr once it listens. Each connection reads up to 64 KiB at a time
and writes it back, waiting for the write buffer to drain (backpressure), until the peer closes.
"""
import asyncio
import sys


async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def main(host, port):
    server = await asyncio.start_server(handle, host, port, reuse_address=True, backlog=4096)
    print("READY %d" % server.sockets[0].getsockname()[1], file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
