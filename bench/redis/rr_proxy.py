#!/usr/bin/env python3
"""Round-robin TCP proxy: each new connection goes to the next backend in turn, so
the WebSocket clients (and HTTP connections) of a test spread over every node.

Each direction is copied on its own, straight between the sockets, and never holds
data back: what is read is written before the next read. When one side closes (EOF)
or resets, everything it sent before has been forwarded, and the other side is
half-closed (a FIN after that data), so the other direction keeps flowing, as through a
kernel TCP proxy. A failure in one direction does not cut the other: if the backend
resets while the client is still sending, the backend's last bytes (say, an error
frame) are still read out and forwarded. Both sockets are closed once both directions
are over.

usage: rr_proxy.py HOST:PORT [HOST:PORT ...]   (prints its own address first)
"""
import asyncio
import itertools
import socket
import sys


async def pipe(loop, src, dst):
    """Copies src to dst until src ends (EOF or reset) or dst fails, then half-closes
    dst for writing."""
    try:
        while data := await loop.sock_recv(src, 65536):
            await loop.sock_sendall(dst, data)
    except OSError:
        pass  # src reset, or dst failed: this direction is over
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


async def serve(loop, client, host, port):
    backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    backend.setblocking(False)
    try:
        try:
            await loop.sock_connect(backend, (host, port))
        except OSError:
            return
        for s in (client, backend):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pipe(loop, client, backend), pipe(loop, backend, client))
    finally:
        client.close()
        backend.close()


async def main():
    loop = asyncio.get_running_loop()
    backends = [a.rsplit(":", 1) for a in sys.argv[1:]]
    turn = itertools.cycle(backends)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    host, port = listener.getsockname()[:2]
    print(f"{host}:{port}", flush=True)
    tasks = set()  # keeps the connection tasks referenced until they end
    while True:
        client, _ = await loop.sock_accept(listener)
        client.setblocking(False)
        bhost, bport = next(turn)
        task = loop.create_task(serve(loop, client, bhost, int(bport)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


asyncio.run(main())
