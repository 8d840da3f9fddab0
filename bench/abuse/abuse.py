#!/usr/bin/env python3
"""Replays connection abuse against a running Runwire server and measures how it copes
(spec section 17, RW-SEC-11 to RW-SEC-14). Python 3 standard library only.

    bench/abuse/abuse.py http://127.0.0.1:7070 [--count N] [--interval-ms MS]
        [--header-timeout-ms MS] [--shed-wait-s S] [--runs N] [--token T] [--cases a,b]

Cases:
  slowloris   N connections each send one byte of a request head every interval
  silent      N TCP connections that send nothing
  handshake   N WebSocket upgrades that complete and then never send hello
  runflood    connections that subscribe and unsubscribe many new run ids (measured
              only: how long it takes, and whether the server stays responsive)

For each case the script prints how long the server took to shed the connections (or
that it did not within --shed-wait-s) and whether a fresh client got `welcome` within
1 s while the abusive connections were held. It exits 1 when a case fails its
expectation: the abusive connections must all be closed by the server within the wait,
and the fresh client must be welcomed in time.

A fresh client connects from another loopback address (127.0.0.2) when the server is on
loopback, so that a per-address pre-hello limit, which the abusive connections fill, does
not refuse it: that limit exists precisely to keep one address from locking out others.
"""

import argparse
import base64
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

WELCOME_WITHIN_S = 1.0


def parse_url(url):
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("http", "ws"):
        sys.exit("abuse.py: only http:// or ws:// URLs (no TLS)")
    return u.hostname, u.port or 80


def connect(host, port, source=None, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        try:
            s.bind((source, 0))
        except OSError:
            pass
    s.connect((host, port))
    return s


def ws_frame(text):
    """A masked client text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytearray([0x81])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(s):
    """One server frame's (opcode, payload); None on close/EOF."""
    def exact(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise EOFError
            b += c
        return b

    h = exact(2)
    op = h[0] & 0x0F
    n = h[1] & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    return op, exact(n)


class Refused(EOFError):
    """An upgrade answered 503 (an admission limit, RW-SEC-12), with its Retry-After."""

    def __init__(self, status, retry_after):
        super().__init__(status)
        self.retry_after = retry_after


def upgrade(host, port, token=None, source=None, timeout=5.0):
    s = connect(host, port, source, timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    s.sendall(
        (
            f"GET /v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{auth}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(4096)
        if not c:
            raise EOFError("closed during the upgrade")
        head += c
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status:
        if " 503 " in status:
            retry = 1.0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode(errors="replace").partition(":")
                if name.strip().lower() == "retry-after":
                    try:
                        retry = float(value.strip())
                    except ValueError:
                        pass
            raise Refused(status, retry)
        raise EOFError(status)
    return s


def upgrade_honouring_retry_after(host, port, token=None, attempts=5):
    """Upgrades as a well-behaved client does: a 503 refusal is retried after its
    Retry-After (a server sheds the previous case's sockets over its deadlines)."""
    for i in range(attempts):
        try:
            return upgrade(host, port, token)
        except Refused as r:
            if i + 1 == attempts:
                raise
            time.sleep(r.retry_after)


def fresh_welcome(host, port, token, source):
    """Seconds until a fresh client got welcome, or None with the reason."""
    t0 = time.monotonic()
    try:
        s = upgrade(host, port, token, source, timeout=WELCOME_WITHIN_S)
        hello = {"type": "hello", "versions": ["1.0"]}
        if token:
            hello["token"] = token
        s.sendall(ws_frame(json.dumps(hello)))
        while True:
            op, payload = read_frame(s)
            if op == 1 and b'"welcome"' in payload:
                dt = time.monotonic() - t0
                s.close()
                return dt, None
            if op == 8:
                return None, "closed before welcome"
    except (OSError, EOFError) as e:
        return None, str(e) or type(e).__name__


class Held:
    """Abusive sockets and when the server closed each."""

    def __init__(self):
        self.socks = []
        self.closed_at = {}
        self.refused = 0
        self.lock = threading.Lock()

    def watch(self, s, start):
        def run():
            s.settimeout(None)
            try:
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    if b.startswith(b"HTTP/1.1 503"):
                        with self.lock:
                            self.refused += 1
            except OSError:
                pass
            with self.lock:
                self.closed_at[id(s)] = time.monotonic() - start

        threading.Thread(target=run, daemon=True).start()

    def open_count(self):
        with self.lock:
            return len(self.socks) - len(self.closed_at)


def shed(held, wait_s, start):
    deadline = start + wait_s
    while time.monotonic() < deadline and held.open_count() > 0:
        time.sleep(0.05)
    with held.lock:
        if len(held.closed_at) < len(held.socks):
            return None
        return max(held.closed_at.values(), default=0.0)


def case_slowloris(a, host, port):
    held = Held()
    start = time.monotonic()
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Pad: {'a' * 4096}\r\n\r\n".encode()
    for _ in range(a.count):
        try:
            s = connect(host, port)
        except OSError:
            continue
        held.socks.append(s)
        held.watch(s, start)
    stop = threading.Event()

    def drip():
        i = 0
        while not stop.is_set() and i < len(request):
            for s in list(held.socks):
                try:
                    s.send(request[i : i + 1])
                except OSError:
                    pass
            i += 1
            stop.wait(a.interval_ms / 1000)

    threading.Thread(target=drip, daemon=True).start()
    return held, start, stop


def case_silent(a, host, port):
    held = Held()
    start = time.monotonic()
    for _ in range(a.count):
        try:
            s = connect(host, port)
        except OSError:
            continue
        held.socks.append(s)
        held.watch(s, start)
    return held, start, threading.Event()


def case_handshake(a, host, port):
    held = Held()
    start = time.monotonic()
    for _ in range(a.count):
        try:
            s = upgrade(host, port, a.token)
        except (OSError, EOFError):
            held.refused += 1
            continue
        held.socks.append(s)
        held.watch(s, start)
    return held, start, threading.Event()


def run_flood(a, host, port):
    """Subscribes and unsubscribes --runs new run ids over a few connections."""
    t0 = time.monotonic()
    conns = max(1, min(4, a.runs // 50 or 1))
    done = [0]
    errors = []

    def worker(k):
        try:
            s = upgrade_honouring_retry_after(host, port, a.token)
            hello = {"type": "hello", "versions": ["1.0"]}
            if a.token:
                hello["token"] = a.token
            s.sendall(ws_frame(json.dumps(hello)))
            while True:
                op, p = read_frame(s)
                if op == 1 and b'"welcome"' in p:
                    break
            per = a.runs // conns
            for i in range(per):
                run = f"abuse-{os.getpid()}-{k}-{i}"
                s.sendall(ws_frame(json.dumps({"type": "subscribe", "subscriptions": [{"run_id": run}]})))
                while True:
                    op, p = read_frame(s)
                    if op == 8:
                        raise EOFError("closed: " + p[2:].decode(errors="replace"))
                    if op == 1 and (b'"subscribed"' in p or b'"error"' in p or b'"reset"' in p):
                        if b'"rate_limited"' in p:
                            raise EOFError("rate_limited")
                        break
                    if op == 9:
                        s.sendall(bytes([0x8A, 0x80]) + os.urandom(4))
                s.sendall(ws_frame(json.dumps({"type": "unsubscribe", "run_ids": [run]})))
                done[0] += 1
                # Stay under the default message rate (50/s, two messages per run).
                time.sleep(0.045)
            s.close()
        except (OSError, EOFError) as e:
            errors.append(str(e))

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(conns)]
    for t in ts:
        t.start()
    welcome_times = []
    while any(t.is_alive() for t in ts):
        dt, why = fresh_welcome(host, port, a.token, a.fresh_source)
        welcome_times.append(dt)
        time.sleep(0.2)
    for t in ts:
        t.join()
    return time.monotonic() - t0, done[0], errors, welcome_times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the server's base URL, http://HOST:PORT")
    p.add_argument("--count", type=int, default=50, help="abusive connections per case (default 50)")
    p.add_argument("--interval-ms", type=int, default=1000, help="slowloris: ms between bytes (default 1000)")
    p.add_argument("--shed-wait-s", type=float, default=30.0, help="how long the server may take to shed a case's connections (default 30)")
    p.add_argument("--runs", type=int, default=200, help="runflood: run ids to subscribe and unsubscribe (default 200)")
    p.add_argument("--token", default=None, help="a consumer token, if the server requires auth")
    p.add_argument("--cases", default="slowloris,silent,handshake,runflood")
    a = p.parse_args()
    host, port = parse_url(a.url)
    a.fresh_source = "127.0.0.2" if host in ("127.0.0.1", "localhost") else None
    failed = False
    for case in a.cases.split(","):
        case = case.strip()
        if case == "runflood":
            took, done, errors, welcomes = run_flood(a, host, port)
            worst = max((w for w in welcomes if w is not None), default=0.0)
            missed = sum(1 for w in welcomes if w is None or w > WELCOME_WITHIN_S)
            ok = not errors and missed == 0
            print(
                f"runflood   {done} runs subscribed and unsubscribed in {took:.2f} s"
                f" ({done / took if took else 0:.0f}/s); fresh welcome worst {worst * 1000:.0f} ms,"
                f" {missed} of {len(welcomes)} over {WELCOME_WITHIN_S:.0f} s"
                + (f"; errors: {errors[:3]}" if errors else "")
                + ("  OK" if ok else "  FAIL")
            )
            failed |= not ok
            continue
        fn = {"slowloris": case_slowloris, "silent": case_silent, "handshake": case_handshake}.get(case)
        if fn is None:
            sys.exit(f"abuse.py: unknown case {case!r}")
        held, start, stop = fn(a, host, port)
        dt, why = fresh_welcome(host, port, a.token, a.fresh_source)
        took = shed(held, a.shed_wait_s, start)
        stop.set()
        welcomed = dt is not None and dt <= WELCOME_WITHIN_S
        ok = took is not None and welcomed
        shed_text = (
            f"shed all {len(held.socks)} in {took:.2f} s"
            if took is not None
            else f"did NOT shed: {held.open_count()} of {len(held.socks)} still open after {a.shed_wait_s:.0f} s"
        )
        welcome_text = f"fresh welcome in {dt * 1000:.0f} ms" if dt is not None else f"no fresh welcome ({why})"
        print(
            f"{case:10} {shed_text} ({held.refused} refused with 503); {welcome_text}"
            + ("  OK" if ok else "  FAIL")
        )
        failed |= not ok
        for s in held.socks:
            try:
                s.close()
            except OSError:
                pass
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
