#!/usr/bin/env python3
"""Redis CPU of one node reader's `XREAD` over many streams (docs/scale-out.md,
"Internet scale, on paper"; the `xread_key_us` figure of bench/scale/model.py).

On one Redis, a node's reader follows every run it watches with one `XREAD BLOCK`
naming all their streams (docs/scale-out.md, "Live fan-out across nodes"). Its cost to
Redis grows with the number of streams named. This starts a private redis-server
(no persistence), creates N streams of one ~250-byte entry each, and measures Redis's
own CPU (`INFO cpu`, user + system) per call:

- a non-blocking `XREAD` naming all N streams, none with a new entry;
- the same with a new entry in 1 % of them;
- the reader's real pattern: `XREAD BLOCK` naming all N, woken by one `XADD` to one
  of them from another connection (the reader is seen blocked in `INFO clients`
  before the `XADD` is sent).

usage: python3 bench/scale/xread_cost.py [N ...]     (default: 1000 13000)
needs: redis-server on the PATH. Standard library only.
"""

import os
import socket
import subprocess
import sys
import tempfile

PAYLOAD = "x" * 250


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """A minimal RESP2 connection."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def send(self, *args):
        self.sock.sendall(enc(*args))

    def read(self):
        line = self.file.readline()
        kind = line[:1]
        if kind == b"-":
            raise RuntimeError(line.decode().strip())
        if kind in b"+:":
            return line[1:].strip()
        if kind == b"$":
            n = int(line[1:])
            return None if n < 0 else self.file.read(n + 2)[:-2]
        if kind == b"*":
            n = int(line[1:])
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.send(*args)
        return self.read()

    def info(self, section):
        text = self.call("INFO", section).decode()
        return dict(x.split(":", 1) for x in text.split("\r\n") if ":" in x)

    def cpu_s(self):
        v = self.info("cpu")
        return float(v["used_cpu_sys"]) + float(v["used_cpu_user"])


def start_redis():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    d = tempfile.mkdtemp(prefix="xread-cost-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", d],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "Ready to accept connections" in line:
            break
    else:
        raise RuntimeError("redis-server did not start")
    return proc, port


def measure(n, rounds=200, wakeups=100):
    proc, port = start_redis()
    try:
        c = Conn(port)
        other = Conn(port)
        keys = [f"rw:{{run-{i}}}:s" for i in range(n)]
        c.sock.sendall(b"".join(enc("XADD", k, "1-0", "e", PAYLOAD) for k in keys))
        for _ in keys:
            c.read()
        ids = ["1-0"] * n

        def timed(fn, times):
            c0 = c.cpu_s()
            for _ in range(times):
                fn()
            return (c.cpu_s() - c0) * 1e6 / times

        def plain():
            c.call("XREAD", "COUNT", 100, "STREAMS", *keys, *ids)

        idle = timed(plain, rounds)
        for k in keys[::100]:
            c.call("XADD", k, "2-0", "e", PAYLOAD)
        some = timed(plain, rounds)
        last = ["2-0" if i % 100 == 0 else "1-0" for i in range(n)]
        state = {"j": 0, "polls": 0}
        # The polls of INFO clients below cost Redis CPU too: measured, subtracted.
        info_cost = timed(lambda: other.info("clients"), rounds)

        def woken():
            j = state["j"]
            state["j"] += 1
            c.send("XREAD", "COUNT", 100, "BLOCK", 10000, "STREAMS", *keys, *last)
            while True:
                state["polls"] += 1
                if other.info("clients").get("blocked_clients", "0").strip() == "1":
                    break
            k = (j * 37) % n
            nid = f"{3 + j}-0"
            other.call("XADD", keys[k], nid, "e", PAYLOAD)
            if c.read() is None:
                raise RuntimeError("XREAD BLOCK timed out")
            last[k] = nid

        blocked = timed(woken, wakeups) - info_cost * state["polls"] / wakeups
        return idle, some, blocked
    finally:
        proc.kill()
        proc.wait()


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 13000]
    print(f"redis CPU per call (INFO cpu), pid {os.getpid()}")
    for n in sizes:
        idle, some, blocked = measure(n)
        print(f"{n:>6} streams named: XREAD, nothing new {idle:8.0f} us ({idle / n:.2f} us/stream); "
              f"1 % new {some:8.0f} us ({some / n:.2f} us/stream); "
              f"XREAD BLOCK woken by one XADD {blocked:8.0f} us ({blocked / n:.2f} us/stream)")


if __name__ == "__main__":
    main()
