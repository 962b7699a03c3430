#!/usr/bin/env python3
"""Helpers of scripts/bench-idle.sh: a one-thread epoll echo server, and a client that holds
N idle connections, then echoes once on each.

  idle-conns.py echo PORT            echo every connection until EOF (selectors, one thread)
  idle-conns.py hold ADDR:PORT N     open N connections, print "open <n>", wait for a line on
                                     stdin, echo 16 bytes on each, print "echoed <ok> <failed>
                                     <seconds>", wait for a line on stdin, exit
"""
import selectors
import socket
import sys
import time


def echo(port):
    sel = selectors.DefaultSelector()
    lsn = socket.socket()
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.bind(("127.0.0.1", port))
    lsn.listen(4096)
    lsn.setblocking(False)
    sel.register(lsn, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is lsn:
                while True:
                    try:
                        c, _ = lsn.accept()
                    except (BlockingIOError, OSError):
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                continue
            try:
                s.sendall(data)  # 16-byte messages: always fits the send buffer
            except OSError:
                sel.unregister(s)
                s.close()


def hold(addr, n):
    host, port = addr.rsplit(":", 1)
    conns = []
    for _ in range(n):
        try:
            c = socket.create_connection((host, int(port)), timeout=5)
        except OSError as e:
            print(f"connect failed after {len(conns)}: {e}", file=sys.stderr)
            break
        conns.append(c)
    print(f"open {len(conns)}", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    sel = selectors.DefaultSelector()
    pending = {}
    for i, c in enumerate(conns):
        msg = b"%015d\n" % i
        c.setblocking(False)
        try:
            c.send(msg)
        except OSError:
            continue
        pending[c] = (msg, b"")
        sel.register(c, selectors.EVENT_READ)
    ok = 0
    deadline = time.time() + 30
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            c = key.fileobj
            msg, got = pending[c]
            try:
                got += c.recv(64)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                got = None
            if got is None or got == b"" or not msg.startswith(got):
                sel.unregister(c)
                del pending[c]
            elif got == msg:
                ok += 1
                sel.unregister(c)
                del pending[c]
            else:
                pending[c] = (msg, got)
    print(f"echoed {ok} {len(conns) - ok} {time.time() - t0:.2f}", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        hold(sys.argv[2], int(sys.argv[3]))
