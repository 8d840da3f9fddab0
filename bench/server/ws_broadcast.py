"""Python `websockets` broadcast server for the Runwire fanout comparison.

Subscribers send "sub"; a controller sends "burst N" and the server sends N
pre-built ~250-byte event frames to every subscriber, one frame per event.
"""

import asyncio
import json

import websockets

subs = set()


def frame(seq):
    return json.dumps(
        {
            "type": "event",
            "event": {
                "event_id": "0193b8a0-7c1e-7d2a-9f00-%012d" % seq,
                "run_id": "bench-run",
                "seq": seq,
                "type": "run.progress",
                "time": "2026-11-22T02:30:00.000Z",
                "data": {"percent": 42.5, "step": "Compiling crate 17 of 40", "current": 17, "total": 40, "message": "building"},
            },
        },
        separators=(",", ":"),
    )


async def handler(ws):
    try:
        async for msg in ws:
            if msg == "sub":
                subs.add(ws)
                await ws.send("ok")
            elif msg.startswith("burst "):
                n = int(msg[6:])
                for i in range(1, n + 1):
                    websockets.broadcast(subs, frame(i))
                    if i % 64 == 0:
                        # Let the event loop flush sockets, as a real server must.
                        await asyncio.sleep(0)
    finally:
        subs.discard(ws)


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"127.0.0.1:{port}", flush=True)
        await asyncio.Future()


asyncio.run(main())
