#!/usr/bin/env python3
"""Checks that rr_proxy.py loses no byte a backend sent before it closed:

1. reset: the backend reads only the first bytes of a large upload, answers, and
   closes with the rest unread, so its kernel resets the connection while the client
   is still sending (the situation of a server rejecting an oversize WebSocket frame,
   RW-LIMIT-1). The client must still get the whole answer.
2. half-close: the client sends a request and half-closes; the backend reads it to the
   end, answers and closes. The client must get the answer and then EOF.

usage: bench/redis/test_rr_proxy.py   (exit status 0 when both hold in every round)
"""
import os
import socket
import subprocess
import sys
import threading

ROUNDS = 20
ANSWER = b"E" * 200
TIMEOUT = 10  # seconds; an upper bound for a failing run only


def backend(srv, mode):
    while True:
        c, _ = srv.accept()
        if mode == "reset":
            c.recv(10)  # only the "frame header"
        else:
            while c.recv(65536):
                pass
        c.sendall(ANSWER)
        c.close()


def client(addr, mode):
    s = socket.create_connection(addr, timeout=TIMEOUT)
    writer = None
    if mode == "reset":
        def upload():
            try:
                for _ in range(64):
                    s.sendall(b"x" * 65536)
            except OSError:
                pass
        writer = threading.Thread(target=upload)
        writer.start()
    else:
        s.sendall(b"request")
        s.shutdown(socket.SHUT_WR)
    got, end = b"", "eof"
    try:
        while d := s.recv(4096):
            got += d
    except OSError as e:
        end = type(e).__name__
    s.close()
    if writer:
        writer.join()
    return got, end


def main():
    proxy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rr_proxy.py")
    failures = 0
    for mode in ("reset", "half-close"):
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        threading.Thread(target=backend, args=(srv, mode), daemon=True).start()
        p = subprocess.Popen(
            [sys.executable, proxy, "127.0.0.1:%d" % srv.getsockname()[1]],
            stdout=subprocess.PIPE, text=True)
        try:
            host, port = p.stdout.readline().strip().rsplit(":", 1)
            ok = 0
            for _ in range(ROUNDS):
                got, end = client((host, int(port)), mode)
                ok += got == ANSWER and (mode == "reset" or end == "eof")
            print(f"{mode}: {ok}/{ROUNDS} clients got the whole answer", flush=True)
            failures += ROUNDS - ok
        finally:
            p.kill()
            p.wait()
            srv.close()
    sys.exit(1 if failures else 0)


main()
