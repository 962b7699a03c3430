#!/usr/bin/env python3
"""HTTP/2 server-side conformance cases for sidewire, written from RFC 9113 (HTTP/2),
RFC 7541 (HPACK) and RFC 9110 (HTTP semantics), modelled on h2spec's case list.

Usage: conformance.py HOST:PORT [CASE_ID ...]

Every case opens its own connection, sends raw frames (built here byte by byte, so malformed
frames and field blocks are possible; request field blocks are HPACK literals without Huffman
coding) and checks the outcome the RFC requires (MUST level):

  conn(CODE)     a connection error: GOAWAY with CODE (RFC 9113 §5.4.1)
  stream(CODE)   a stream error: RST_STREAM with CODE on the stream, or GOAWAY with CODE (an
                 endpoint MAY treat a stream error as a connection error, §5.4.1)
  malformed      a malformed request (§8.1.1): stream error PROTOCOL_ERROR (or GOAWAY with
                 it), or a 4xx answer the upstream did not make; the upstream never receives it
                 as a complete request (checked by the Rust driver, tests/h2_conformance.rs)
  response       the request reaches the upstream and its 200 comes back
  usable         the frames are ignored: a PING sent after them is answered, no error

Output: one JSON object per case on stdout (id, section, title, expect, passed, detail, path,
never_forwarded), then {"summary": ...}. Needs only `hpack` (Debian python3-hpack) to decode
the responses' field blocks.
"""

import json
import socket
import struct
import sys
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Error codes (RFC 9113 §7).
CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR",
    0xb: "ENHANCE_YOUR_CALM", 0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED",
}
NAMES = {v: k for k, v in CODES.items()}
PROTOCOL_ERROR = NAMES["PROTOCOL_ERROR"]
FLOW_CONTROL_ERROR = NAMES["FLOW_CONTROL_ERROR"]
STREAM_CLOSED = NAMES["STREAM_CLOSED"]
FRAME_SIZE_ERROR = NAMES["FRAME_SIZE_ERROR"]
REFUSED_STREAM = NAMES["REFUSED_STREAM"]
COMPRESSION_ERROR = NAMES["COMPRESSION_ERROR"]

# Settings identifiers (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)

# How long any one outcome may take; only a failing case ever waits this long.
TIMEOUT = 3.0


def frame(ftype, flags, sid, payload=b""):
    """One frame: 24-bit length, type, flags, R bit + 31-bit stream id (RFC 9113 §4.1)."""
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def settings(*pairs, ack=False, sid=0):
    return frame(SETTINGS, ACK if ack else 0, sid,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(data=b"sidewire", ack=False, sid=0, flags=None):
    return frame(PING, flags if flags is not None else (ACK if ack else 0), sid, data)


def rst(sid, code):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def goaway(last, code, sid=0):
    return frame(GOAWAY, 0, sid, struct.pack(">II", last, code))


def priority(sid, dep, weight=15, exclusive=False):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", dep | (exclusive << 31), weight))


def data(sid, body, end=True, pad=None):
    if pad is None:
        return frame(DATA, END_STREAM if end else 0, sid, body)
    return frame(DATA, (END_STREAM if end else 0) | PADDED, sid,
                 bytes([pad]) + body + b"\0" * pad)


def hint(n, prefix_bits, first=0):
    """An HPACK integer (RFC 7541 §5.1) with `first` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out, n = [first | limit], n - limit
    while n >= 128:
        out.append((n & 0x7f) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def hstr(s):
    """A raw (not Huffman coded) HPACK string literal (RFC 7541 §5.2)."""
    if isinstance(s, str):
        s = s.encode("latin-1")
    return hint(len(s), 7) + s


def lit(name, value, indexing=False):
    """A literal field line with a literal name: without indexing (0x00) or with incremental
    indexing (0x40) (RFC 7541 §6.2). Nothing is lower-cased or checked: that's the point."""
    return bytes([0x40 if indexing else 0x00]) + hstr(name) + hstr(value)


def block(fields):
    return b"".join(lit(n, v) for n, v in fields)


def req(path, method="GET", extra=(), authority="conformance.test", scheme="http"):
    """The fields of a request, in order."""
    return [(":method", method), (":scheme", scheme), (":path", path),
            (":authority", authority)] + list(extra)


def headers(sid, fields_or_block, end_stream=True, end_headers=True, pad=None, prio=None):
    """A HEADERS frame; `prio` = (dependency, weight) sets the PRIORITY flag."""
    hb = fields_or_block if isinstance(fields_or_block, bytes) else block(fields_or_block)
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = hb
    if prio is not None:
        flags |= PRIORITY_FLAG
        payload = struct.pack(">IB", prio[0], prio[1]) + payload
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad]) + payload + b"\0" * pad
    return frame(HEADERS, flags, sid, payload)


def continuation(sid, hb, end_headers=True):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, hb)


class Closed(Exception):
    pass


class Conn:
    """A raw HTTP/2 client connection."""

    def __init__(self, addr, handshake=True, client_settings=()):
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.decoder = hpack.Decoder()
        self.server_settings = {}
        self.frames = []  # everything received, for the failure detail
        if handshake:
            self.handshake(client_settings)

    def send(self, *frames):
        """Sends; a peer that already closed is not an error here: what it sent before
        closing (a GOAWAY) is still read, and the outcome is judged on that."""
        try:
            self.sock.sendall(b"".join(frames))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def handshake(self, client_settings=()):
        """Preface + SETTINGS; waits for the server's SETTINGS and its ACK of ours (§3.4)."""
        self.send(PREFACE, settings(*client_settings))
        got_settings = got_ack = False
        deadline = time.monotonic() + TIMEOUT
        while not (got_settings and got_ack):
            t, f, sid, p = self.recv(deadline)
            if t == SETTINGS and not f & ACK:
                for i in range(0, len(p), 6):
                    k, v = struct.unpack(">HI", p[i:i + 6])
                    self.server_settings[k] = v
                self.send(settings(ack=True))
                got_settings = True
            elif t == SETTINGS:
                got_ack = True

    def recv(self, deadline):
        """The next frame (type, flags, stream, payload); raises Closed on EOF or reset,
        socket.timeout past the deadline."""
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    t, f = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                    p, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
                    self.frames.append(describe(t, f, sid, p))
                    if t == HEADERS:
                        # Decoded at once, in order: the HPACK context is per connection.
                        p = self.decode(p, f)
                    return t, f, sid, p
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                raise Closed()
            if not chunk:
                raise Closed()
            self.buf += chunk

    def fields(self, payload, flags):
        """The fields of a HEADERS frame [`recv`] returned."""
        return payload

    def decode(self, payload, flags):
        """Decodes a response HEADERS payload (the server sends no CONTINUATION here)."""
        if flags & PADDED:
            payload = payload[1:len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        return dict((k if isinstance(k, str) else k.decode(), v if isinstance(v, str)
                     else v.decode("latin-1")) for k, v in self.decoder.decode(payload))

    def close(self):
        self.sock.close()


def describe(t, f, sid, p):
    name = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
            "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"][t] if t < 10 else "type%d" % t
    extra = ""
    if t == RST_STREAM and len(p) == 4:
        extra = " " + CODES.get(int.from_bytes(p, "big"), hex(int.from_bytes(p, "big")))
    if t == GOAWAY and len(p) >= 8:
        extra = " " + CODES.get(int.from_bytes(p[4:8], "big"), "?")
    return "%s(s=%d,f=%#x,len=%d%s)" % (name, sid, f, len(p), extra)


# === outcomes ===

class Outcome:
    never_forwarded = False
    barrier = True

    def __str__(self):
        return self.name


class ConnError(Outcome):
    def __init__(self, code):
        self.code, self.name = code, "conn(%s)" % CODES[code]

    def check(self, c, sid):
        deadline = time.monotonic() + TIMEOUT
        while True:
            t, f, s, p = c.recv(deadline)
            if t == GOAWAY:
                code = int.from_bytes(p[4:8], "big")
                if code == self.code:
                    return True, "GOAWAY %s" % CODES[code]
                return False, "GOAWAY %s" % CODES.get(code, hex(code))
            if t == RST_STREAM:
                return False, "RST_STREAM %s instead of a connection error" % \
                    CODES.get(int.from_bytes(p, "big"), "?")
            if t == PING and f & ACK and p == b"barrier2":
                return False, "no error: the connection is still usable"
            if t == PING and f & ACK and p == b"barrier1":
                # One more round trip, so frames queued behind the first ack are out.
                c.send(ping(b"barrier2"))


class StreamError(Outcome):
    def __init__(self, code):
        self.code, self.name = code, "stream(%s)" % CODES[code]

    def check(self, c, sid):
        deadline = time.monotonic() + TIMEOUT
        while True:
            t, f, s, p = c.recv(deadline)
            if t == GOAWAY or (t == RST_STREAM and s == sid):
                code = int.from_bytes(p[4:8] if t == GOAWAY else p, "big")
                kind = "GOAWAY" if t == GOAWAY else "RST_STREAM"
                return code == self.code, "%s %s" % (kind, CODES.get(code, hex(code)))
            if t == HEADERS and s == sid:
                return False, "answered %s" % c.fields(p, f).get(":status")
            if t == PING and f & ACK and p == b"barrier2":
                return False, "no error: the connection is still usable"
            if t == PING and f & ACK and p == b"barrier1":
                c.send(ping(b"barrier2"))


class Malformed(Outcome):
    """§8.1.1: a stream error PROTOCOL_ERROR; a server MAY send an HTTP response (4xx) first.
    Waits for the stream's end (no barrier: sidewire's own checks run in the stream task)."""
    name = "malformed"
    never_forwarded = True
    barrier = False

    def check(self, c, sid):
        deadline = time.monotonic() + TIMEOUT
        while True:
            t, f, s, p = c.recv(deadline)
            if t == GOAWAY or (t == RST_STREAM and s == sid):
                code = int.from_bytes(p[4:8] if t == GOAWAY else p, "big")
                kind = "GOAWAY" if t == GOAWAY else "RST_STREAM"
                return code == PROTOCOL_ERROR, "%s %s" % (kind, CODES.get(code, hex(code)))
            if t == HEADERS and s == sid:
                h = c.fields(p, f)
                st = h.get(":status", "")
                ok = st.startswith("4") and "x-upstream" not in h
                return ok, "answered %s%s" % (st, " by the upstream" if "x-upstream" in h
                                               else "")


class Refused(Outcome):
    """Refused one way or another (an error or a 4xx), and never forwarded."""
    name = "refused"
    never_forwarded = True
    barrier = False

    def check(self, c, sid):
        deadline = time.monotonic() + TIMEOUT
        while True:
            t, f, s, p = c.recv(deadline)
            if t == GOAWAY or (t == RST_STREAM and s == sid):
                code = int.from_bytes(p[4:8] if t == GOAWAY else p, "big")
                return True, "%s %s" % ("GOAWAY" if t == GOAWAY else "RST_STREAM",
                                        CODES.get(code, hex(code)))
            if t == HEADERS and s == sid:
                h = c.fields(p, f)
                st = h.get(":status", "")
                return st.startswith("4") and "x-upstream" not in h, "answered %s" % st


class Response(Outcome):
    """The upstream's 200 arrives on the stream, then its whole body (END_STREAM)."""
    name = "response"
    barrier = False

    def __init__(self, body_len=None):
        self.body_len = body_len

    def check(self, c, sid):
        deadline = time.monotonic() + TIMEOUT
        status, got = None, 0
        while True:
            t, f, s, p = c.recv(deadline)
            if t == GOAWAY:
                return False, "GOAWAY %s" % CODES.get(int.from_bytes(p[4:8], "big"), "?")
            if s != sid:
                continue
            if t == RST_STREAM:
                return False, "RST_STREAM %s" % CODES.get(int.from_bytes(p, "big"), "?")
            if t == HEADERS:
                h = c.fields(p, f)
                if status is None:
                    status = h.get(":status")
                    if status != "200" or "x-upstream" not in h:
                        return False, "answered %s (%s)" % (status, h.get("sidewire-error"))
            if t == DATA:
                got += len(p) - (p[0] + 1 if f & PADDED else 0)
                if p:
                    c.send(window_update(0, len(p)), window_update(sid, len(p)))
            if f & END_STREAM and t in (DATA, HEADERS):
                if self.body_len is not None and got != self.body_len:
                    return False, "body of %d bytes, not %d" % (got, self.body_len)
                return True, "200, %d body bytes" % got


class NoError(Outcome):
    """Nothing the peer does in return is an error: a PING is answered, or the connection
    ends with GOAWAY NO_ERROR or a close."""
    name = "no error"
    barrier = False

    def check(self, c, sid):
        c.send(ping(b"usable!!"))
        deadline = time.monotonic() + TIMEOUT
        try:
            while True:
                t, f, s, p = c.recv(deadline)
                if t == GOAWAY:
                    code = int.from_bytes(p[4:8], "big")
                    return code == 0, "GOAWAY %s" % CODES.get(code, hex(code))
                if t == RST_STREAM:
                    return False, "RST_STREAM %s" % CODES.get(int.from_bytes(p, "big"), "?")
                if t == PING and f & ACK and p == b"usable!!":
                    return True, "PING answered"
        except (Closed, BrokenPipeError):
            return True, "closed"


class Usable(Outcome):
    """The frames were ignored: a PING is answered and no error came first."""
    name = "usable"
    barrier = False

    def check(self, c, sid):
        c.send(ping(b"usable!!"))
        deadline = time.monotonic() + TIMEOUT
        while True:
            t, f, s, p = c.recv(deadline)
            if t == GOAWAY:
                return False, "GOAWAY %s" % CODES.get(int.from_bytes(p[4:8], "big"), "?")
            if t == RST_STREAM and s == sid:
                return False, "RST_STREAM %s" % CODES.get(int.from_bytes(p, "big"), "?")
            if t == PING and f & ACK and p == b"usable!!":
                return True, "PING answered"


def conn(code):
    return ConnError(code)


def stream(code):
    return StreamError(code)


MALFORMED, RESPONSE, USABLE, REFUSED = Malformed(), Response(), Usable(), Refused()


# === cases ===
#
# A case is (id, section, title, run, expect). `run(c, path)` sends the frames (after the
# handshake) and returns the stream the outcome is about. `path` is unique per case: the
# upstream records the paths it receives. Paths under /hang never get an answer, which keeps
# the stream open on the server's side.

CASES = []


def case(cid, section, title, expect, handshake=True, client_settings=()):
    def wrap(run):
        CASES.append(dict(id=cid, section=section, title=title, run=run, expect=expect,
                          handshake=handshake, client_settings=client_settings))
        return run
    return wrap


def get(c, sid, path, **kw):
    c.send(headers(sid, req(path, **kw)))
    return sid


def hang(c, sid, path, end_stream=True):
    """Opens stream `sid` for a request the upstream never answers."""
    c.send(headers(sid, req("/hang" + path, method="POST"), end_stream=end_stream))
    return sid


# --- RFC 9113 §3.4: the connection preface ---

@case("3.4/1", "RFC 9113 §3.4", "client preface followed by a PING instead of SETTINGS",
      conn(PROTOCOL_ERROR), handshake=False)
def _(c, p):
    c.send(PREFACE, ping())
    return 0


@case("3.4/2", "RFC 9113 §3.4, §6.5.3", "the server's first frame is SETTINGS and it ACKs ours",
      USABLE, handshake=False)
def _(c, p):
    c.send(PREFACE, settings())
    t, f, s, _ = c.recv(time.monotonic() + TIMEOUT)
    if t != SETTINGS or f & ACK:
        raise AssertionError("first frame from the server: " + c.frames[-1])
    c.handshake_acked = False
    c.send(settings(ack=True))
    deadline = time.monotonic() + TIMEOUT
    while True:
        t, f, s, _ = c.recv(deadline)
        if t == SETTINGS and f & ACK:
            return 0


# --- §4.1 frame format ---

@case("4.1/1", "RFC 9113 §4.1, §5.5", "a frame of unknown type is ignored", USABLE)
def _(c, p):
    c.send(frame(0x16, 0, 0, b"\x01\x02\x03"), frame(0xfe, 0xff, 1, b"x"))
    return 0


@case("4.1/2", "RFC 9113 §4.1", "undefined flags on a PING are ignored", USABLE)
def _(c, p):
    c.send(ping(b"flags!!!", flags=0xfe))
    return 0


@case("4.1/3", "RFC 9113 §4.1", "the reserved bit of the stream identifier is ignored", USABLE)
def _(c, p):
    c.send(ping(b"reserved", sid=0x80000000))
    return 0


@case("4.1/4", "RFC 9113 §4.1", "undefined flags on HEADERS are ignored", RESPONSE)
def _(c, p):
    f = bytearray(headers(1, req(p)))
    f[4] |= 0x2 | 0x10 | 0x40 | 0x80
    c.send(bytes(f))
    return 1


# --- §4.2 frame size ---

@case("4.2/1", "RFC 9113 §4.2", "a DATA frame of SETTINGS_MAX_FRAME_SIZE octets is accepted",
      RESPONSE)
def _(c, p):
    size = c.server_settings.get(MAX_FRAME_SIZE, 16384)
    c.send(headers(1, req(p, method="POST"), end_stream=False), data(1, b"a" * size))
    return 1


@case("4.2/2", "RFC 9113 §4.2", "a DATA frame over SETTINGS_MAX_FRAME_SIZE",
      stream(FRAME_SIZE_ERROR))
def _(c, p):
    size = c.server_settings.get(MAX_FRAME_SIZE, 16384)
    c.send(headers(1, req("/hang" + p, method="POST"), end_stream=False),
           data(1, b"a" * (size + 1)))
    return 1


@case("4.2/3", "RFC 9113 §4.2", "a HEADERS frame over SETTINGS_MAX_FRAME_SIZE (carries a field "
      "block: connection error)", conn(FRAME_SIZE_ERROR))
def _(c, p):
    size = c.server_settings.get(MAX_FRAME_SIZE, 16384)
    c.send(headers(1, req(p, extra=[("x-big", "a" * size)])))
    return 1


@case("4.2/4", "RFC 9113 §4.2", "a frame over the server's SETTINGS_MAX_FRAME_SIZE is never "
      "sent: a 20 KiB response arrives in frames of at most 16384 octets", RESPONSE)
def _(c, p):
    c.send(headers(1, req("/big/20000" + p)))
    deadline = time.monotonic() + TIMEOUT
    got = 0
    while got < 20000:
        t, f, s, pl = c.recv(deadline)
        if t == DATA:
            if len(pl) > 16384:
                raise AssertionError("DATA frame of %d octets" % len(pl))
            got += len(pl)
            c.send(window_update(0, len(pl)), window_update(1, len(pl)))
        if t in (GOAWAY, RST_STREAM):
            raise AssertionError(c.frames[-1])
    c.send(headers(3, req(p + "/again")))
    return 3


# --- §4.3 field section compression ---

@case("4.3/1", "RFC 9113 §4.3; RFC 7541 §2.3.3", "a field block indexing past the tables",
      conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + hint(70, 7, 0x80)))
    return 1


@case("4.3/2", "RFC 9113 §4.3", "a PRIORITY frame between HEADERS and CONTINUATION",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p), end_headers=False), priority(1, 0),
           continuation(1, lit("x-a", "b")))
    return 1


@case("4.3/3", "RFC 9113 §4.3", "HEADERS of another stream between HEADERS and CONTINUATION",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p), end_headers=False), headers(3, req(p + "/3")),
           continuation(1, lit("x-a", "b")))
    return 1


@case("4.3/4", "RFC 9113 §4.3", "the HPACK dynamic table is one per connection: a later field "
      "block may index an entry an earlier one added", RESPONSE)
def _(c, p):
    c.send(headers(1, block(req(p)) + lit("x-shared", "dynamic", indexing=True)))
    Response().check(c, 1)
    c.send(headers(3, block(req(p + "/second")) + hint(62, 7, 0x80)))
    return 3


# --- RFC 7541 (HPACK) decoding errors: connection errors COMPRESSION_ERROR (§4.3) ---

@case("hpack/1", "RFC 7541 §6.1; RFC 9113 §4.3", "indexed field with index 0",
      conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + b"\x80"))
    return 1


@case("hpack/2", "RFC 7541 §6.3, §4.2", "dynamic table size update over "
      "SETTINGS_HEADER_TABLE_SIZE", conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, hint(4097, 5, 0x20) + block(req(p))))
    return 1


@case("hpack/3", "RFC 7541 §4.2", "dynamic table size update after a field line",
      conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + hint(0, 5, 0x20)))
    return 1


@case("hpack/4", "RFC 7541 §5.2", "a Huffman string containing EOS", conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + b"\x00\x84\xff\xff\xff\xff\x01a"))
    return 1


@case("hpack/5", "RFC 7541 §5.2", "Huffman padding longer than 7 bits",
      conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + b"\x00\x82\x1f\xff\x01a"))
    return 1


@case("hpack/6", "RFC 7541 §5.2", "Huffman padding that is not the EOS prefix",
      conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + b"\x00\x81\x18\x01a"))
    return 1


@case("hpack/7", "RFC 7541 §5.2; RFC 9113 §4.3", "a string literal longer than the field "
      "block", conn(COMPRESSION_ERROR))
def _(c, p):
    c.send(headers(1, block(req(p)) + b"\x00\x05ab"))
    return 1


# --- §5.1 stream states ---

@case("5.1/1", "RFC 9113 §5.1 (idle)", "DATA on an idle stream", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(data(1, b"x"))
    return 1


@case("5.1/2", "RFC 9113 §5.1 (idle), §6.4", "RST_STREAM on an idle stream",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(rst(1, 8))
    return 1


@case("5.1/3", "RFC 9113 §5.1 (idle)", "WINDOW_UPDATE on an idle stream", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(window_update(1, 100))
    return 1


@case("5.1/4", "RFC 9113 §5.1 (idle), §6.10", "CONTINUATION on an idle stream",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(continuation(1, block(req(p))))
    return 1


@case("5.1/5", "RFC 9113 §5.1 (idle)", "PRIORITY on an idle stream is allowed", USABLE)
def _(c, p):
    c.send(priority(7, 0))
    return 0


@case("5.1/6", "RFC 9113 §5.1 (half-closed remote), §6.1", "DATA after END_STREAM",
      stream(STREAM_CLOSED))
def _(c, p):
    hang(c, 1, p)
    c.send(data(1, b"late"))
    return 1


@case("5.1/7", "RFC 9113 §5.1 (half-closed remote)", "HEADERS after END_STREAM",
      stream(STREAM_CLOSED))
def _(c, p):
    hang(c, 1, p)
    c.send(headers(1, [("x-late", "1")]))
    return 1


@case("5.1/8", "RFC 9113 §5.1 (half-closed remote)", "WINDOW_UPDATE and PRIORITY after "
      "END_STREAM are allowed", USABLE)
def _(c, p):
    hang(c, 1, p)
    c.send(window_update(1, 1000), priority(1, 0))
    return 1


@case("5.1/9", "RFC 9113 §5.1 (closed), §6.4", "DATA after the client's RST_STREAM",
      stream(STREAM_CLOSED))
def _(c, p):
    hang(c, 1, p, end_stream=False)
    c.send(rst(1, 8), data(1, b"late"))
    return 1


@case("5.1/10", "RFC 9113 §5.1 (closed)", "HEADERS after the client's RST_STREAM",
      stream(STREAM_CLOSED))
def _(c, p):
    hang(c, 1, p, end_stream=False)
    c.send(rst(1, 8), headers(1, [("x-late", "1")]))
    return 1


@case("5.1/11", "RFC 9113 §5.1 (closed), §6.1", "DATA on a stream closed by both END_STREAMs",
      stream(STREAM_CLOSED))
def _(c, p):
    c.send(headers(1, req(p)))
    ok, why = Response().check(c, 1)
    if not ok:
        raise AssertionError(why)
    c.send(data(1, b"late"))
    return 1


@case("5.1.1/1", "RFC 9113 §5.1.1", "a client stream with an even identifier",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(2, req(p)))
    return 2


@case("5.1.1/2", "RFC 9113 §5.1.1", "a stream identifier lower than one already used",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(5, req(p)))
    Response().check(c, 5)
    c.send(headers(3, req(p + "/lower")))
    return 3


@case("5.1.2/1", "RFC 9113 §5.1.2", "one stream over SETTINGS_MAX_CONCURRENT_STREAMS",
      stream(REFUSED_STREAM))
def _(c, p):
    n = c.server_settings.get(MAX_CONCURRENT_STREAMS)
    if n is None or n > 64:
        raise AssertionError("SETTINGS_MAX_CONCURRENT_STREAMS %s: configure a small one" % n)
    for i in range(n):
        hang(c, 1 + 2 * i, p + "/%d" % i)
    sid = 1 + 2 * n
    c.send(headers(sid, req(p + "/over")))
    return sid


# --- §5.3 priority ---

@case("5.3.1/1", "RFC 9113 §5.3.1", "HEADERS whose priority depends on its own stream",
      stream(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p), prio=(1, 15)))
    return 1


@case("5.3.1/2", "RFC 9113 §5.3.1", "PRIORITY making a stream depend on itself",
      stream(PROTOCOL_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(priority(1, 1))
    return 1


# --- §5.4 error handling ---

@case("5.4.1/1", "RFC 9113 §5.4.1", "after a connection error's GOAWAY the server closes the "
      "TCP connection", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(data(0, b"x"))
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            t, f, s, pl = c.recv(deadline)
            if t == GOAWAY:
                code = int.from_bytes(pl[4:8], "big")
                if code != PROTOCOL_ERROR:
                    raise AssertionError("GOAWAY %s" % CODES.get(code))
                break
        while True:
            c.recv(deadline)
    except Closed:
        pass
    c.replay_goaway = True
    return 0


# --- §5.5 extending HTTP/2 ---

@case("5.5/1", "RFC 9113 §5.5", "an unknown frame type inside a field block",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p), end_headers=False), frame(0x16, 0, 1, b"ext"),
           continuation(1, lit("x-a", "b")))
    return 1


# --- §6.1 DATA ---

@case("6.1/1", "RFC 9113 §6.1", "DATA on stream 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(data(0, b"x"))
    return 0


@case("6.1/2", "RFC 9113 §6.1", "DATA whose padding length is the payload length or more",
      conn(PROTOCOL_ERROR))
def _(c, p):
    hang(c, 1, p, end_stream=False)
    c.send(frame(DATA, END_STREAM | PADDED, 1, b"\x06abc"))
    return 1


@case("6.1/3", "RFC 9113 §6.1", "padded DATA: the padding is removed", RESPONSE)
def _(c, p):
    c.send(headers(1, req("/echo" + p, method="POST"), end_stream=False),
           data(1, b"0123456789", pad=20))
    return 1


# --- §6.2 HEADERS ---

@case("6.2/1", "RFC 9113 §6.2", "HEADERS on stream 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(0, req(p)))
    return 0


@case("6.2/2", "RFC 9113 §6.2", "HEADERS whose padding length exceeds the payload",
      conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1,
                 bytes([200]) + block(req(p))))
    return 1


@case("6.2/3", "RFC 9113 §6.2", "padded HEADERS with a priority block", RESPONSE)
def _(c, p):
    c.send(headers(1, req(p), pad=10, prio=(0, 200)))
    return 1


@case("6.2/4", "RFC 9113 §6.2", "HEADERS without END_HEADERS, then DATA", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p, method="POST"), end_stream=False, end_headers=False),
           data(1, b"x"))
    return 1


# --- §6.3 PRIORITY ---

@case("6.3/1", "RFC 9113 §6.3", "PRIORITY on stream 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(priority(0, 1))
    return 0


@case("6.3/2", "RFC 9113 §6.3", "PRIORITY of 4 octets", stream(FRAME_SIZE_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(frame(PRIORITY, 0, 1, b"\0\0\0\0"))
    return 1


# --- §6.4 RST_STREAM ---

@case("6.4/1", "RFC 9113 §6.4", "RST_STREAM on stream 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(rst(0, 8))
    return 0


@case("6.4/2", "RFC 9113 §6.4", "RST_STREAM of 3 octets", conn(FRAME_SIZE_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(frame(RST_STREAM, 0, 1, b"\0\0\x08"))
    return 1


@case("6.4/3", "RFC 9113 §6.4, §5.1", "RST_STREAM closes one stream; the connection and "
      "other streams carry on", RESPONSE)
def _(c, p):
    hang(c, 1, p)
    c.send(rst(1, 8), headers(3, req(p + "/after")))
    return 3


# --- §6.5 SETTINGS ---

@case("6.5/1", "RFC 9113 §6.5", "SETTINGS ACK with a payload", conn(FRAME_SIZE_ERROR))
def _(c, p):
    c.send(frame(SETTINGS, ACK, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 100)))
    return 0


@case("6.5/2", "RFC 9113 §6.5", "SETTINGS on a stream other than 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(settings((INITIAL_WINDOW_SIZE, 100), sid=1))
    return 0


@case("6.5/3", "RFC 9113 §6.5", "SETTINGS whose length is not a multiple of 6",
      conn(FRAME_SIZE_ERROR))
def _(c, p):
    c.send(frame(SETTINGS, 0, 0, b"\0\x03\0"))
    return 0


@case("6.5.2/1", "RFC 9113 §6.5.2", "SETTINGS_ENABLE_PUSH of 2", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(settings((ENABLE_PUSH, 2)))
    return 0


@case("6.5.2/2", "RFC 9113 §6.5.2", "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
      conn(FLOW_CONTROL_ERROR))
def _(c, p):
    c.send(settings((INITIAL_WINDOW_SIZE, 1 << 31)))
    return 0


@case("6.5.2/3", "RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE under 16384", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(settings((MAX_FRAME_SIZE, 16383)))
    return 0


@case("6.5.2/4", "RFC 9113 §6.5.2", "SETTINGS_MAX_FRAME_SIZE over 2^24-1", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(settings((MAX_FRAME_SIZE, 1 << 24)))
    return 0


@case("6.5.2/5", "RFC 9113 §6.5.2", "an unknown setting is ignored", USABLE)
def _(c, p):
    c.send(settings((0xff, 1), (0x4242, 7)))
    return 0


@case("6.5.3/1", "RFC 9113 §6.5.3", "a later SETTINGS is acknowledged", USABLE)
def _(c, p):
    c.send(settings((INITIAL_WINDOW_SIZE, 100000)))
    deadline = time.monotonic() + TIMEOUT
    while True:
        t, f, s, _ = c.recv(deadline)
        if t == SETTINGS and f & ACK:
            return 0
        if t == GOAWAY:
            raise AssertionError(c.frames[-1])


# --- §6.7 PING ---

@case("6.7/1", "RFC 9113 §6.7", "PING is answered with ACK and the same payload", USABLE)
def _(c, p):
    c.send(ping(b"\x00\x01\x02\x03\xfc\xfd\xfe\xff"))
    deadline = time.monotonic() + TIMEOUT
    while True:
        t, f, s, pl = c.recv(deadline)
        if t == PING:
            if not f & ACK or pl != b"\x00\x01\x02\x03\xfc\xfd\xfe\xff":
                raise AssertionError(c.frames[-1])
            return 0


@case("6.7/2", "RFC 9113 §6.7", "a PING with ACK is not answered", USABLE)
def _(c, p):
    c.send(ping(b"unsolic.", ack=True), ping(b"solicit."))
    deadline = time.monotonic() + TIMEOUT
    while True:
        t, f, s, pl = c.recv(deadline)
        if t == PING:
            if pl != b"solicit.":
                raise AssertionError("answered the ACK: " + c.frames[-1])
            return 0


@case("6.7/3", "RFC 9113 §6.7", "PING on a stream other than 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(ping(sid=1))
    return 0


@case("6.7/4", "RFC 9113 §6.7", "PING of 6 octets", conn(FRAME_SIZE_ERROR))
def _(c, p):
    c.send(ping(b"123456"))
    return 0


# --- §6.8 GOAWAY ---

@case("6.8/1", "RFC 9113 §6.8", "GOAWAY on a stream other than 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(goaway(0, 0, sid=1))
    return 0


# --- §6.9 WINDOW_UPDATE and flow control ---

@case("6.9/1", "RFC 9113 §6.9", "connection WINDOW_UPDATE of 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(window_update(0, 0))
    return 0


@case("6.9/2", "RFC 9113 §6.9", "stream WINDOW_UPDATE of 0", stream(PROTOCOL_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(window_update(1, 0))
    return 1


@case("6.9/3", "RFC 9113 §6.9", "WINDOW_UPDATE of 3 octets", conn(FRAME_SIZE_ERROR))
def _(c, p):
    c.send(frame(WINDOW_UPDATE, 0, 0, b"\0\0\x01"))
    return 0


@case("6.9.1/1", "RFC 9113 §6.9.1", "the connection window over 2^31-1",
      conn(FLOW_CONTROL_ERROR))
def _(c, p):
    c.send(window_update(0, 0x7fffffff), window_update(0, 0x7fffffff))
    return 0


@case("6.9.1/2", "RFC 9113 §6.9.1", "a stream window over 2^31-1", stream(FLOW_CONTROL_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(window_update(1, 0x7fffffff), window_update(1, 0x7fffffff))
    return 1


@case("6.9.1/3", "RFC 9113 §6.9.1", "the server respects the client's window: "
      "SETTINGS_INITIAL_WINDOW_SIZE 1 gets one DATA octet until a WINDOW_UPDATE",
      RESPONSE, client_settings=((INITIAL_WINDOW_SIZE, 1),))
def _(c, p):
    c.send(headers(1, req("/big/100" + p)))
    deadline = time.monotonic() + TIMEOUT
    while True:
        t, f, s, pl = c.recv(deadline)
        if t == DATA and s == 1:
            if len(pl) != 1:
                raise AssertionError("first DATA frame of %d octets" % len(pl))
            break
        if t in (GOAWAY, RST_STREAM):
            raise AssertionError(c.frames[-1])
    # Nothing more may come until the window opens: a PING round trip shows none did.
    c.send(ping(b"window.."))
    while True:
        t, f, s, pl = c.recv(deadline)
        if t == DATA and pl:
            raise AssertionError("DATA past the window: " + c.frames[-1])
        if t == PING and f & ACK:
            break
    c.send(window_update(1, 99), window_update(0, 100))
    got = 1
    while got < 100:
        t, f, s, pl = c.recv(deadline)
        if t == DATA and s == 1:
            got += len(pl)
    # Only now: a response on stream 3 meanwhile (its window is 1 too) would have its DATA
    # taken by the loop above instead of the check, which grants the window as it reads.
    c.send(headers(3, req(p + "/after")))
    return 3


@case("6.9.2/1", "RFC 9113 §6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE pushing an open stream's "
      "window over 2^31-1", conn(FLOW_CONTROL_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(window_update(1, 0x7fffffff - 65535), settings((INITIAL_WINDOW_SIZE, 65536)))
    return 1


@case("6.9.2/2", "RFC 9113 §6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE 0 stops DATA; a "
      "WINDOW_UPDATE resumes it", RESPONSE, client_settings=((INITIAL_WINDOW_SIZE, 0),))
def _(c, p):
    c.send(headers(1, req("/big/10" + p)), ping(b"window0."))
    deadline = time.monotonic() + TIMEOUT
    while True:
        t, f, s, pl = c.recv(deadline)
        if t == DATA and pl:
            raise AssertionError("DATA with a zero window: " + c.frames[-1])
        if t == HEADERS and s == 1:
            c.fields(pl, f)
            break
    c.send(window_update(1, 10))
    while True:
        t, f, s, pl = c.recv(deadline)
        if t == DATA and s == 1 and f & END_STREAM:
            break
        if t in (GOAWAY, RST_STREAM):
            raise AssertionError(c.frames[-1])
    c.send(settings((INITIAL_WINDOW_SIZE, 65535)), headers(3, req(p + "/after")))
    return 3


# --- §6.10 CONTINUATION ---

@case("6.10/1", "RFC 9113 §6.10", "a field block in HEADERS and several CONTINUATIONs",
      RESPONSE)
def _(c, p):
    hb = block(req(p, extra=[("x-a", "1"), ("x-b", "2"), ("x-c", "3")]))
    third = len(hb) // 3
    c.send(headers(1, hb[:third], end_headers=False),
           continuation(1, hb[third:2 * third], end_headers=False),
           continuation(1, hb[2 * third:]))
    return 1


@case("6.10/2", "RFC 9113 §6.10", "CONTINUATION after a HEADERS with END_HEADERS",
      conn(PROTOCOL_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(continuation(1, lit("x-a", "b")))
    return 1


@case("6.10/3", "RFC 9113 §6.10", "CONTINUATION on stream 0", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p), end_headers=False), continuation(0, lit("x-a", "b")))
    return 1


@case("6.10/4", "RFC 9113 §6.10", "CONTINUATION of another stream", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req(p), end_headers=False), continuation(3, lit("x-a", "b")))
    return 1


@case("6.10/5", "RFC 9113 §6.10", "CONTINUATION after DATA", conn(PROTOCOL_ERROR))
def _(c, p):
    c.send(headers(1, req("/hang" + p, method="POST"), end_stream=False), data(1, b"x", False),
           continuation(1, lit("x-a", "b")))
    return 1


# --- §7 error codes ---

@case("7/1", "RFC 9113 §7", "RST_STREAM with an unknown error code closes just that stream",
      RESPONSE)
def _(c, p):
    hang(c, 1, p)
    c.send(rst(1, 0xdead), headers(3, req(p + "/after")))
    return 3


@case("7/2", "RFC 9113 §7, §6.8", "GOAWAY with an unknown error code: no error in return",
      NoError())
def _(c, p):
    c.send(goaway(0, 0xdead))
    return 0


# --- §8.1 HTTP message framing ---

@case("8.1/1", "RFC 9113 §8.1", "request with DATA and a trailer section", RESPONSE)
def _(c, p):
    c.send(headers(1, req("/echo" + p, method="POST", extra=[("te", "trailers")]),
                   end_stream=False),
           data(1, b"body", end=False), headers(1, [("x-trailer", "t")]))
    return 1


@case("8.1/2", "RFC 9113 §8.1", "a second HEADERS without END_STREAM", MALFORMED)
def _(c, p):
    c.send(headers(1, req(p, method="POST"), end_stream=False), data(1, b"body", end=False),
           headers(1, [("x-trailer", "t")], end_stream=False))
    return 1


@case("8.1.1/1", "RFC 9113 §8.1.1", "content-length larger than the DATA", MALFORMED)
def _(c, p):
    c.send(headers(1, req(p, method="POST", extra=[("content-length", "10")]),
                   end_stream=False), data(1, b"1234"))
    return 1


@case("8.1.1/2", "RFC 9113 §8.1.1", "DATA larger than content-length", MALFORMED)
def _(c, p):
    c.send(headers(1, req(p, method="POST", extra=[("content-length", "1")]),
                   end_stream=False), data(1, b"1234"))
    return 1


@case("8.1.1/3", "RFC 9113 §8.1.1", "content-length over several DATA frames, summed",
      MALFORMED)
def _(c, p):
    c.send(headers(1, req(p, method="POST", extra=[("content-length", "5")]),
                   end_stream=False), data(1, b"123", end=False), data(1, b"456"))
    return 1


@case("8.1.1/4", "RFC 9113 §8.1.1", "content-length matching the DATA", RESPONSE)
def _(c, p):
    c.send(headers(1, req(p, method="POST", extra=[("content-length", "6")]),
                   end_stream=False), data(1, b"123", end=False), data(1, b"456"))
    return 1


# --- §8.2 field validity ---

def malformed_field(cid, section, title, name, value, pseudo=False):
    @case(cid, section, title, MALFORMED)
    def _(c, p):
        fields = req(p)
        fields.insert(0 if pseudo else len(fields), (name, value))
        c.send(headers(1, fields))
        return 1


malformed_field("8.2/1", "RFC 9113 §8.2", "upper-case field name", "X-Upper", "1")
malformed_field("8.2.1/1", "RFC 9113 §8.2.1", "field name with a space", "x bad", "1")
malformed_field("8.2.1/2", "RFC 9113 §8.2.1", "field name with a colon", "x:bad", "1")
malformed_field("8.2.1/3", "RFC 9113 §8.2.1", "field name with NUL", "x\0bad", "1")
malformed_field("8.2.1/4", "RFC 9113 §8.2.1", "field name with a non-ASCII octet",
                "x\xffbad", "1")
malformed_field("8.2.1/5", "RFC 9113 §8.2.1", "empty field name", "", "1")
malformed_field("8.2.1/6", "RFC 9113 §8.2.1", "field value with NUL", "x-v", "a\0b")
malformed_field("8.2.1/7", "RFC 9113 §8.2.1", "field value with CR", "x-v", "a\rb")
malformed_field("8.2.1/8", "RFC 9113 §8.2.1", "field value with LF", "x-v", "a\nb")
malformed_field("8.2.1/9", "RFC 9113 §8.2.1", "field value with a leading space", "x-v", " a")
malformed_field("8.2.1/10", "RFC 9113 §8.2.1", "field value with a trailing space", "x-v",
                "a ")
malformed_field("8.2.1/11", "RFC 9113 §8.2.1", "field value with a trailing tab", "x-v",
                "a\t")
malformed_field("8.2.2/1", "RFC 9113 §8.2.2; RFC 9110 §7.6.1", "connection-specific field: "
                "connection", "connection", "keep-alive")
malformed_field("8.2.2/2", "RFC 9113 §8.2.2", "connection-specific field: keep-alive",
                "keep-alive", "timeout=5")
malformed_field("8.2.2/3", "RFC 9113 §8.2.2", "connection-specific field: proxy-connection",
                "proxy-connection", "keep-alive")
malformed_field("8.2.2/4", "RFC 9113 §8.2.2", "connection-specific field: transfer-encoding",
                "transfer-encoding", "chunked")
malformed_field("8.2.2/5", "RFC 9113 §8.2.2", "connection-specific field: upgrade",
                "upgrade", "websocket")
malformed_field("8.2.2/6", "RFC 9113 §8.2.2", "te other than \"trailers\"", "te", "gzip")


@case("8.2.2/7", "RFC 9113 §8.2.2", "te: trailers is allowed", RESPONSE)
def _(c, p):
    c.send(headers(1, req(p, extra=[("te", "trailers")])))
    return 1


@case("8.2.3/1", "RFC 9113 §8.2.3", "cookie split into several field lines", RESPONSE)
def _(c, p):
    c.send(headers(1, req(p, extra=[("cookie", "a=1"), ("cookie", "b=2")])))
    return 1


# --- §8.3 pseudo-header fields ---

malformed_field("8.3/1", "RFC 9113 §8.3", "unknown pseudo-header field", ":foo", "bar", True)
malformed_field("8.3/2", "RFC 9113 §8.3, §8.3.2", "response pseudo-header in a request",
                ":status", "200", True)


@case("8.3/3", "RFC 9113 §8.3", "pseudo-header field after a regular field", MALFORMED)
def _(c, p):
    c.send(headers(1, [(":method", "GET"), (":scheme", "http"), ("x-a", "1"),
                       (":path", p), (":authority", "conformance.test")]))
    return 1


@case("8.3/4", "RFC 9113 §8.1, §8.3", "pseudo-header field in the trailer section", MALFORMED)
def _(c, p):
    c.send(headers(1, req(p, method="POST"), end_stream=False), data(1, b"x", end=False),
           headers(1, [(":method", "POST"), ("x-t", "1")]))
    return 1


def without(name, p):
    return [f for f in req(p) if f[0] != name]


def twice(name, p):
    fields = req(p)
    i = [f[0] for f in fields].index(name)
    return fields[:i + 1] + [fields[i]] + fields[i + 1:]


for n, pseudo in enumerate([":method", ":scheme", ":path"]):
    @case("8.3.1/%d" % (n + 1), "RFC 9113 §8.3.1", "request without " + pseudo, MALFORMED)
    def _(c, p, pseudo=pseudo):
        c.send(headers(1, without(pseudo, p)))
        return 1

for n, pseudo in enumerate([":method", ":scheme", ":path", ":authority"]):
    @case("8.3.1/%d" % (n + 4), "RFC 9113 §8.3", "request with " + pseudo + " twice",
          MALFORMED)
    def _(c, p, pseudo=pseudo):
        c.send(headers(1, twice(pseudo, p)))
        return 1


@case("8.3.1/8", "RFC 9113 §8.3.1", "empty :path", MALFORMED)
def _(c, p):
    c.send(headers(1, [(":method", "GET"), (":scheme", "http"), (":path", ""),
                       (":authority", "conformance.test")]))
    return 1


@case("8.3.1/9", "RFC 9113 §8.3.1", ":path * in an OPTIONS request", RESPONSE)
def _(c, p):
    c.send(headers(1, [(":method", "OPTIONS"), (":scheme", "http"), (":path", "*"),
                       (":authority", "conformance.test"), ("x-case", p)]))
    return 1


@case("8.3.1/11", "RFC 9113 §8.3.1", ":path in absolute form", MALFORMED)
def _(c, p):
    c.send(headers(1, req("http://elsewhere.test" + p, extra=[("x-case", p)])))
    return 1


@case("8.3.1/12", "RFC 9113 §8.3.1", ":path not starting with /", MALFORMED)
def _(c, p):
    c.send(headers(1, req(p.lstrip("/"), extra=[("x-case", p)])))
    return 1


@case("8.3.1/14", "RFC 9113 §8.3.1", ":path starting with ?", MALFORMED)
def _(c, p):
    c.send(headers(1, req("?q=1", extra=[("x-case", p)])))
    return 1


@case("8.3.1/13", "RFC 9113 §8.3.1", ":path * in a GET request", MALFORMED)
def _(c, p):
    c.send(headers(1, req("*", extra=[("x-case", p)])))
    return 1


@case("8.3.1/15", "RFC 9113 §8.3.1; RFC 3986 §3.3", ":path with a character outside RFC 3986",
      MALFORMED)
def _(c, p):
    c.send(headers(1, req(p + '/a"b{c}', extra=[("x-case", p)])))
    return 1


@case("8.3.1/16", "RFC 9113 §8.3.1", ":authority with userinfo", MALFORMED)
def _(c, p):
    c.send(headers(1, req(p, authority="user@conformance.test")))
    return 1


@case("8.3.1/17", "RFC 9112 §3.2 (the HTTP/1.1 request it may become)",
      "two Host fields and no :authority", MALFORMED)
def _(c, p):
    c.send(headers(1, [(":method", "GET"), (":scheme", "http"), (":path", p),
                       ("host", "conformance.test"), ("host", "other.test")]))
    return 1


@case("8.3.1/10", "RFC 9113 §8.3.1; RFC 9110 §7.2", "no :authority, routed by Host", RESPONSE)
def _(c, p):
    c.send(headers(1, [(":method", "GET"), (":scheme", "http"), (":path", p),
                       ("host", "conformance.test")]))
    return 1


# --- §8.4 server push ---

@case("8.4/1", "RFC 9113 §8.4, §6.6", "a client sends PUSH_PROMISE", conn(PROTOCOL_ERROR))
def _(c, p):
    hang(c, 1, p)
    c.send(frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + block(req(p + "/push"))))
    return 1


# --- §8.5 CONNECT ---

@case("8.5/1", "RFC 9113 §8.5", "CONNECT with :scheme and :path", MALFORMED)
def _(c, p):
    c.send(headers(1, [(":method", "CONNECT"), (":scheme", "http"), (":path", p),
                       (":authority", "conformance.test:443")]))
    return 1


# --- §10.5.1 limits on field block size ---

@case("10.5.1/1", "RFC 9113 §10.5.1, §6.5.2", "a field section over "
      "SETTINGS_MAX_HEADER_LIST_SIZE (in CONTINUATIONs) is refused, not forwarded", REFUSED)
def _(c, p):
    limit = c.server_settings.get(MAX_HEADER_LIST_SIZE, 16384)
    fields = req(p) + [("x-fill-%d" % i, "v" * 1000) for i in range(limit // 1000 + 2)]
    hb = block(fields)
    frames = [headers(1, hb[:8000], end_headers=False)]
    for i in range(8000, len(hb), 8000):
        frames.append(continuation(1, hb[i:i + 8000], end_headers=i + 8000 >= len(hb)))
    c.send(*frames)
    return 1


def run(addr, only):
    results = []
    for k in CASES:
        if only and k["id"] not in only:
            continue
        path = "/c/" + k["id"].replace("/", "-").replace(".", "_")
        expect = k["expect"]
        res = dict(id=k["id"], section=k["section"], title=k["title"], expect=str(expect),
                   path=path, never_forwarded=expect.never_forwarded)
        c = None
        try:
            c = Conn(addr, k["handshake"], k["client_settings"])
            sid = k["run"](c, path)
            if getattr(c, "replay_goaway", False):
                ok, why = True, "GOAWAY PROTOCOL_ERROR, then the server closed"
            else:
                if expect.barrier:
                    c.send(ping(b"barrier1"))
                ok, why = expect.check(c, sid)
        except AssertionError as e:
            ok, why = False, str(e)
        except socket.timeout:
            ok, why = False, "timed out"
        except (Closed, BrokenPipeError, ConnectionResetError):
            ok, why = False, "connection closed without GOAWAY"
        except Exception as e:  # noqa: a broken case is a failed case, reported
            ok, why = False, "%s: %s" % (type(e).__name__, e)
        finally:
            if c is not None:
                res["frames"] = c.frames[-8:]
                c.close()
        res["passed"], res["detail"] = ok, why
        results.append(res)
        print(json.dumps(res), flush=True)
    passed = sum(r["passed"] for r in results)
    print(json.dumps({"summary": {"passed": passed, "total": len(results)}}), flush=True)


if __name__ == "__main__":
    host, port = sys.argv[1].rsplit(":", 1)
    run((host, int(port)), set(sys.argv[2:]))
