#!/usr/bin/env python3
"""Helpers of scripts/bench-idle.sh: one-thread epoll servers, and a client that holds N
idle connections, then uses each once more.

  idle-conns.py echo PORT            echo every connection until EOF (selectors, one thread)
  idle-conns.py http PORT            answer every HTTP/1.1 request (keep-alive) with a 200
                                     and a 16-byte body
  idle-conns.py hold ADDR:PORT N [KIND]
                                     open N connections, print "open <n>", wait for a line on
                                     stdin, use each once, print "echoed <ok> <failed>
                                     <seconds>", wait for a line on stdin, exit. KIND:
                                     opaque (default: nothing sent until the echo of 16 bytes),
                                     http1 (one keep-alive GET answered before "open", one
                                     more after), http2 (h2c prior knowledge: preface,
                                     SETTINGS, one GET on stream 1 answered before "open", one
                                     more on stream 3 after)
"""
import selectors
import socket
import sys
import time


def serve(port, on_data):
    """One-thread server on 127.0.0.1:`port`: `on_data(sock, data, pending)` handles each
    read (`pending` is that connection's leftover bytes; it returns the new leftover, or None
    to close the connection)."""
    sel = selectors.DefaultSelector()
    lsn = socket.socket()
    lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsn.bind(("127.0.0.1", port))
    lsn.listen(4096)
    lsn.setblocking(False)
    sel.register(lsn, selectors.EVENT_READ)
    leftover = {}
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
                    leftover[c] = b""
                    sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            rest = on_data(s, data, leftover[s]) if data else None
            if rest is None:
                sel.unregister(s)
                del leftover[s]
                s.close()
            else:
                leftover[s] = rest


def echo(port):
    def on_data(s, data, _):
        try:
            s.sendall(data)  # 16-byte messages: always fits the send buffer
        except OSError:
            return None
        return b""

    serve(port, on_data)


HTTP_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n0123456789abcdef"


def http(port):
    """Answers each request head with HTTP_ANSWER (requests carry no body)."""

    def on_data(s, data, buf):
        buf += data
        while b"\r\n\r\n" in buf:
            _, buf = buf.split(b"\r\n\r\n", 1)
            try:
                s.sendall(HTTP_ANSWER)
            except OSError:
                return None
        return buf

    serve(port, on_data)


def frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


# :method GET, :scheme http, :path /, :authority x (HPACK, RFC 7541 appendix A).
H2_GET = bytes([0x82, 0x86, 0x84, 0x41, 0x01]) + b"x"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def request(kind, i, stream=1):
    """The bytes of one request of `kind` on connection `i`."""
    if kind == "opaque":
        return b"%015d\n" % i
    if kind == "http1":
        return b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i
    head = frame(1, 0x5, stream, H2_GET)  # HEADERS, END_STREAM | END_HEADERS
    if stream == 1:
        return H2_PREFACE + frame(4, 0, 0) + head
    return frame(4, 1, 0) + head  # SETTINGS ACK of the server's SETTINGS, then the request


def answered(kind, msg, got, stream=1):
    """True when `got` holds the whole answer, False while it may still come, None when it
    cannot be right."""
    if kind == "opaque":
        return True if got == msg else (False if msg.startswith(got) else None)
    if kind == "http1":
        if not HTTP_ANSWER.startswith(got[: len(HTTP_ANSWER)]):
            return None
        return True if len(got) >= len(HTTP_ANSWER) else False
    # http2: frames until one on `stream` with END_STREAM (a 200 HEADERS, then DATA).
    off = 0
    while off + 9 <= len(got):
        n = int.from_bytes(got[off : off + 3], "big")
        kind_, flags, sid = got[off + 3], got[off + 4], int.from_bytes(got[off + 5 : off + 9], "big")
        if off + 9 + n > len(got):
            return False
        if kind_ in (3, 7):  # RST_STREAM, GOAWAY
            return None
        if sid == stream and kind_ in (0, 1) and flags & 0x1:
            return True
        off += 9 + n
    return False


def exchange_all(conns, kind, stream):
    """Sends one request on each connection and waits for the answers; returns (ok, failed)."""
    sel = selectors.DefaultSelector()
    pending = {}
    for i, c in enumerate(conns):
        msg = request(kind, i, stream)
        c.setblocking(False)
        try:
            c.send(msg)
        except OSError:
            continue
        pending[c] = (msg, b"")
        sel.register(c, selectors.EVENT_READ)
    ok = 0
    deadline = time.time() + 60
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            c = key.fileobj
            msg, got = pending[c]
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            got += data
            state = answered(kind, msg, got, stream) if data else None
            if state is None:
                sel.unregister(c)
                del pending[c]
            elif state:
                ok += 1
                sel.unregister(c)
                del pending[c]
            else:
                pending[c] = (msg, got)
    sel.close()
    return ok, len(conns) - ok


def hold(addr, n, kind="opaque"):
    host, port = addr.rsplit(":", 1)
    conns = []
    for _ in range(n):
        try:
            c = socket.create_connection((host, int(port)), timeout=5)
        except OSError as e:
            print(f"connect failed after {len(conns)}: {e}", file=sys.stderr)
            break
        conns.append(c)
    if kind != "opaque":
        # One exchange each, so every connection is an idle keep-alive one of its protocol.
        ok, failed = exchange_all(conns, kind, 1)
        if failed:
            print(f"{failed} first requests failed", file=sys.stderr)
    print(f"open {len(conns)}", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    ok, failed = exchange_all(conns, kind, 3)
    print(f"echoed {ok} {failed} {time.time() - t0:.2f}", flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    if sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    elif sys.argv[1] == "http":
        http(int(sys.argv[2]))
    else:
        hold(sys.argv[2], int(sys.argv[3]), *sys.argv[4:5])
