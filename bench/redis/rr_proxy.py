#!/usr/bin/env python3
"""Round-robin TCP proxy: each new connection goes to the next backend in turn, so
the WebSocket clients (and HTTP connections) of a test spread over every node.

usage: rr_proxy.py HOST:PORT [HOST:PORT ...]   (prints its own address first)
"""
import asyncio
import itertools
import sys


async def pipe(reader, writer):
    """Copies one direction; at EOF half-closes (the other direction keeps flowing,
    as through a kernel TCP proxy); on a reset closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, asyncio.CancelledError):
        writer.transport.abort()


async def main():
    backends = [a.rsplit(":", 1) for a in sys.argv[1:]]
    turn = itertools.cycle(backends)

    async def handle(reader, writer):
        host, port = next(turn)
        try:
            r2, w2 = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
        for w in (writer, w2):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
