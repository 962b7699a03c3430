#!/usr/bin/env python3
"""Backend for scripts/bench-body.sh: HTTP/1.1 with large bodies, one thread per connection.

  GET /cl/<N>          200 with N bytes of body, Content-Length
  GET /chunked/<N>/<C> 200 with N bytes of body, chunked in chunks of C bytes
  POST (any path)      reads the body (Content-Length or chunked), answers 200 with its length

Usage: body-server.py PORT [close]  (127.0.0.1; keep-alive until the client closes, or with
`close` one exchange per connection: each response says `connection: close` and the server
closes after it, so every exchange meets a fresh connection)
"""
import socket
import sys
import threading

BLOCK = bytes(range(256)) * 4096  # 1 MiB, not all one byte
CLOSE = len(sys.argv) > 2 and sys.argv[2] == "close"
CONN = b"connection: close\r\n" if CLOSE else b""


def body_bytes(n):
    while n > 0:
        k = min(n, len(BLOCK))
        yield memoryview(BLOCK)[:k]
        n -= k


class Conn:
    def __init__(self, s):
        self.s = s
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def skip(self, n):
        take = min(n, len(self.buf))
        self.buf = self.buf[take:]
        n -= take
        scratch = bytearray(1 << 20)
        while n > 0:
            got = self.s.recv_into(scratch, min(n, len(scratch)))
            if not got:
                raise EOFError
            n -= got


def serve(s):
    c = Conn(s)
    try:
        while True:
            req = c.line().split()
            headers = {}
            while True:
                h = c.line()
                if not h:
                    break
                k, _, v = h.partition(b":")
                headers[k.strip().lower()] = v.strip()
            method, path = req[0], req[1].decode()
            if method == b"POST":
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    total = 0
                    while True:
                        size = int(c.line().split(b";")[0], 16)
                        if size == 0:
                            while c.line():
                                pass
                            break
                        c.skip(size)
                        total += size
                        if c.line():
                            raise ValueError("chunk data longer than its size")
                else:
                    total = int(headers.get(b"content-length", b"0"))
                    c.skip(total)
                msg = str(total).encode()
                s.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s" % (CONN, len(msg), msg))
            elif path.startswith("/cl/"):
                n = int(path[4:])
                s.sendall(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n" % (CONN, n))
                for b in body_bytes(n):
                    s.sendall(b)
            elif path.startswith("/chunked/"):
                n, size = (int(x) for x in path[9:].split("/"))
                s.sendall(b"HTTP/1.1 200 OK\r\n%stransfer-encoding: chunked\r\n\r\n" % CONN)
                left = n
                while left > 0:
                    k = min(size, left)
                    s.sendall(b"%x\r\n" % k)
                    for b in body_bytes(k):
                        s.sendall(b)
                    s.sendall(b"\r\n")
                    left -= k
                s.sendall(b"0\r\n\r\n")
            else:
                s.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            if CLOSE:
                break
    except (EOFError, ConnectionError, ValueError):
        pass
    finally:
        s.close()


def main():
    ls = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=64)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


if __name__ == "__main__":
    main()
