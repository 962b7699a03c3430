#!/usr/bin/env python3
"""Differential fuzzing of sidewire's HTTP/1 request-head parser (src/http1/head.rs) and
chunked decoder (src/http1/chunked.rs) against h11 (python-hyper/h11, Debian python3-h11), a
strict reference implementation of RFC 9112.

Not run by hand: tests/h1_differential.rs starts it and answers for sidewire. The protocol on
the pipes: for every input this script writes `H <hex>` on stdout and reads sidewire's verdict
back on stdin, one line, one of:

    reject <reason>          the head is refused (400/414/417/431)
    incomplete               the head (or the chunked body) needs more bytes
    accept <framing>         framing: `length N` (no body is `length 0`) or `chunked`
    accept chunked <body>    body: `done <consumed> <data-bytes>`, `error <reason>`,
                             `incomplete`, for the bytes after the head

h11 gives the same verdict on the same bytes. Every disagreement is either explained by one
of the documented choices in CHOICES (each a deliberate difference: where sidewire is stricter
or looser than h11, and why; README "HTTP/1 differential fuzzing" and head.rs's module doc list
them) or reported as unexplained; the closing line `S {json}` gives counts per choice and the
unexplained inputs, and the exit status is 1 if there are any.

Usage (by the test): h1-diff.py --seed N --count N
Inputs: a structured generator of request heads (methods, targets, versions, framing and Host
fields, separators, line ends), known request-smuggling vectors, and random mutations of both
(byte flips to delimiters, insertions, deletions, duplicated lines, truncation).
"""

import argparse
import json
import os
import random
import re
import sys

import h11
from h11._connection import _body_framing

# === the reference verdict ===


def h11_verdict(data):
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        ev = conn.next_event()
    except h11.RemoteProtocolError as e:
        return "reject " + str(e), None
    if ev is h11.NEED_DATA:
        return "incomplete", None
    if not isinstance(ev, h11.Request):
        return "reject unexpected event " + type(ev).__name__, None
    kind, args = _body_framing(ev.method, ev)
    if kind == "content-length":
        if args[0] == 0:
            return "accept length 0", ev
        return "accept length %d" % args[0], ev
    if kind == "chunked":
        # The body after the head, as far as it goes.
        got = 0
        while True:
            try:
                b = conn.next_event()
            except h11.RemoteProtocolError as e:
                return "accept chunked error " + str(e), ev
            if b is h11.NEED_DATA:
                return "accept chunked incomplete", ev
            if isinstance(b, h11.Data):
                got += len(b.data)
            elif isinstance(b, h11.EndOfMessage):
                rest = len(conn.trailing_data[0])
                head = len(data) - len(conn.trailing_data[0])
                return "accept chunked done %d %d" % (head, got), ev
            else:
                return "accept chunked error unexpected " + type(b).__name__, ev
    return "accept " + kind, ev


# === what a disagreement may be: the documented choices ===
#
# Each: (name, predicate(input, sidewire, h11) -> bool, why). The first that matches explains
# the disagreement. sidewire verdicts here are the strings above; `sw_reason` is the text after
# "reject ".

def lines(data):
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return re.split(rb"\r?\n", head)


def header_lines(data):
    return lines(data)[1:]


def field(data, name):
    """Values of header `name` (case-insensitive) as the raw bytes after the colon."""
    out = []
    for ln in header_lines(data):
        k, sep, v = ln.partition(b":")
        if sep and k.lower() == name:
            out.append(v.strip(b" \t"))
    return out


def request_line(data):
    return lines(data)[0]


def target(data):
    parts = request_line(data).split(b" ")
    return parts[1] if len(parts) >= 3 else b""


def sw_rejects(reason):
    return lambda d, sw, ref: sw.startswith("reject " + reason)


def both(*preds):
    return lambda d, sw, ref: all(p(d, sw, ref) for p in preds)


def ref_accepts(d, sw, ref):
    return ref.startswith("accept")


def ref_rejects(d, sw, ref):
    return ref.startswith("reject")


def sw_accepts(d, sw, ref):
    return sw.startswith("accept")


def ref_chunked_incomplete(d, sw, ref):
    return ref == "accept chunked incomplete"


def version(d):
    parts = request_line(d).rsplit(b" ", 1)
    return parts[-1] if len(parts) == 2 else b""


CHOICES = [
    ("early-reject",
     lambda d, sw, ref: sw.startswith("reject") and ref == "incomplete"
     and h11_verdict(d + b"\r\n\r\n")[0].startswith("reject"),
     "sidewire (httparse) refuses a head at the first byte that cannot belong to a valid one; "
     "h11 waits for the whole head, then refuses it too (checked: the head completed with "
     "CRLF CRLF is refused by h11)"),
    ("http-version",
     both(ref_accepts, sw_rejects("unsupported HTTP version")),
     "RFC 9112 §2.3, RFC 9110 §2.5: only HTTP/1.0 and HTTP/1.1 are accepted (400); h11 takes "
     "any `HTTP/d.d` (HTTP/1.2, HTTP/2.0, HTTP/0.9); a higher 1.x minor SHOULD be read as 1.1, "
     "but the proxy would forward a version line the server may read differently"),
    ("ctl-in-field-value",
     both(ref_accepts, lambda d, sw, ref: sw.startswith("reject invalid header value")
          or sw == "accept chunked error invalid trailer field value"),
     "RFC 9110 §5.5: CTL characters (other than HTAB) and DEL are invalid in field values; a "
     "recipient MAY keep them (h11 does, all but NUL), sidewire refuses them (httparse in "
     "heads, the chunked decoder in trailers)"),
    ("content-length-and-transfer-encoding",
     both(ref_accepts, sw_rejects("both Content-Length and Transfer-Encoding")),
     "RFC 9112 §6.3: with both, Transfer-Encoding wins but it \"ought to be handled as an "
     "error\" (smuggling); h11 frames by chunked, sidewire refuses (400)"),
    ("content-length-overflow",
     both(ref_accepts, sw_rejects("invalid Content-Length"),
          lambda d, sw, ref: any(len(v.strip(b" \t")) > 18 for v in field(d, b"content-length"))),
     "RFC 9110 §8.6: recipients MUST guard against overflow; sidewire accepts at most 19 "
     "digits that fit in u64, h11 any integer"),
    ("duplicate-content-length",
     both(ref_accepts, sw_rejects("duplicate Content-Length")),
     "RFC 9110 §8.6: identical repeated Content-Length MAY be merged (h11 does) or rejected; "
     "sidewire rejects any repetition, so no two parties can pick different lines"),
    ("content-length-list",
     both(ref_accepts, sw_rejects("invalid Content-Length"),
          lambda d, sw, ref: any(b"," in v for v in field(d, b"content-length"))),
     "RFC 9110 §8.6: a list `5, 5` MAY be accepted as 5 (h11 does); sidewire accepts digits only"),
    ("transfer-coding-before-chunked",
     both(ref_rejects, lambda d, sw, ref: sw.startswith("accept chunked")
          or sw.startswith("incomplete")),
     "RFC 9112 §6.1: codings may precede the final chunked (`gzip, chunked`); h11 supports only "
     "`chunked` and refuses the rest; sidewire forwards them (it frames by the final chunked)"),
    ("transfer-encoding-http10",
     both(ref_accepts, sw_rejects("Transfer-Encoding in an HTTP/1.0 request")),
     "RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message MUST be treated as faulty framing"),
    ("obs-fold",
     both(ref_accepts, lambda d, sw, ref: sw == "accept chunked error obs-fold in trailers" or (
         sw.startswith("reject") and any(ln[:1] in (b" ", b"\t") for ln in header_lines(d)))),
     "RFC 9112 §5.2: a server MUST reject obs-fold or replace it with SP; h11 unfolds, "
     "sidewire rejects (400), in the head and in trailers"),
    ("target-syntax",
     both(ref_accepts, lambda d, sw, ref: sw.startswith("reject") and any(
         r in sw for r in ("target", "CONNECT", "userinfo"))),
     "RFC 9112 §3.2 / RFC 3986: sidewire routes by the target, so it accepts only the four "
     "forms with RFC 3986 characters (no `#`, `\"`, `<`, `{`, raw non-ASCII, bad `%`), each "
     "only with its method; h11 accepts any non-whitespace target"),
    ("host-syntax",
     both(ref_accepts, lambda d, sw, ref: sw.startswith("reject") and "Host" in sw),
     "RFC 9110 §7.2, RFC 9112 §3.2: sidewire routes by Host, so a Host that is not "
     "`host[:port]` or appears twice is a 400; h11 checks only that one is present"),
    ("expectation",
     both(ref_accepts, sw_rejects("unsupported expectation")),
     "RFC 9110 §10.1.1: an expectation other than 100-continue MAY get 417 (sidewire does); "
     "h11 leaves Expect to the application"),
    ("leading-empty-line",
     both(ref_rejects, sw_accepts, lambda d, sw, ref: d[:1] in (b"\r", b"\n")),
     "RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line "
     "(sidewire/httparse does); h11 refuses it"),
    ("chunked-early-error",
     both(ref_chunked_incomplete, lambda d, sw, ref: sw.startswith("accept chunked error")),
     "RFC 9112 §7.1: sidewire refuses a chunked body at the first byte that cannot belong to "
     "one (bare LF or CR in a chunk line or trailer, a size over 16 hex digits); h11 waits for "
     "a CRLF that would end the line, and has no size limit"),
    ("bare-cr-lf-in-chunked",
     both(ref_accepts, lambda d, sw, ref: sw.startswith("accept chunked error bare ")),
     "RFC 9112 §2.2, §7.1: sidewire takes only CRLF as a line end in chunked framing (a bare "
     "CR MUST be refused or replaced; a bare LF MAY be taken, and parsers that differ on it "
     "differ on where the body ends); h11 takes a bare LF in trailers and a CR in extensions"),
    ("bws-before-chunk-ext",
     both(lambda d, sw, ref: sw.startswith("accept chunked done"),
          lambda d, sw, ref: ref.startswith("accept chunked error illegal chunk header"),
          lambda d, sw, ref: re.search(rb"\n[0-9a-fA-F]+[ \t]+;", d) is not None),
     "RFC 9112 §7.1.1: chunk-ext = *( BWS \";\" ... ): whitespace before `;` is allowed "
     "(sidewire); h11's chunk-header pattern refuses it"),
    ("chunk-ext-grammar",
     both(ref_accepts,
          lambda d, sw, ref: sw.startswith("accept chunked error malformed chunk extension")),
     "RFC 9112 §7.1.1: a chunk extension is `;` name [`=` token or quoted-string], whitespace "
     "only around `;` and `=`; sidewire refuses anything else (an empty name, a CTL, an "
     "unterminated quote, whitespace before the CRLF); h11 takes anything from `;` to the CRLF"),
]


def explain(data, sw, ref):
    for name, pred, _ in CHOICES:
        try:
            if pred(data, sw, ref):
                return name
        except Exception:  # noqa: a predicate that cannot parse the input does not match
            pass
    # A head h11 still waits for that sidewire refused: h11's verdict on the completed head
    # may be an acceptance that another choice explains.
    if sw.startswith("reject") and ref == "incomplete" and not data.endswith(b"\r\n\r\n"):
        done = data + b"\r\n\r\n"
        return explain(done, sw, h11_verdict(done)[0])
    return None


def same(sw, ref):
    """Whether two verdicts agree: accept/reject/incomplete and the framing (reasons differ)."""
    if sw.startswith("reject") and ref.startswith("reject"):
        return True
    if sw.startswith("accept chunked error") and ref.startswith("accept chunked error"):
        return True
    return sw == ref


# === the inputs ===

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
    b"GET /search?q=a%20b&x=1 HTTP/1.1\r\nHost: www.example.com:8080\r\nAccept: text/html,"
    b"application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, "
    b"deflate, br\r\nConnection: keep-alive\r\nCookie: a=1; b=2\r\nUpgrade-Insecure-Requests: "
    b"1\r\n\r\n",
    b"POST /api/items HTTP/1.1\r\nHost: api.internal\r\nContent-Type: application/json\r\n"
    b"Content-Length: 13\r\n\r\n{\"name\":\"a\"}\n",
    b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"HEAD /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /f HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"DELETE /r/1 HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 0\r\n\r\n",
    # Smuggling vectors (PortSwigger, RFC 9112 §6.3, §11.2).
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nG",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    b"8\r\nSMUGGLED\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n"
    b"0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
    b"POST / HTTP/1.1\nHost: h\nContent-Length: 5\n\nhello",
    b"POST / HTTP/1.1\r\nHost: h\r\nX: a\rContent-Length: 5\r\n\r\nhello",
    b"GET / HTTP/1.1\r\nHost: h\r\n\rX: y\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX\x00Y: 1\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
]

METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"DELETE", b"PATCH",
           b"get", b"M-SEARCH", b"G\x00T", b"GE(T", b"", b"\xc3\xa9"]
TARGETS = [b"/", b"/a/b?c=d&e", b"*", b"http://example.com/x", b"https://example.com",
           b"example.com:443", b"/a%20b", b"/%zz", b"/#f", b"//x", b"/\xc3\xbc", b"/\x7f",
           b"http://u@h/", b"ftp://h/", b"/a b", b"/?q=\"x\"", b"/{}", b"h:80", b"/a|b", b""]
VERSIONS = [b"HTTP/1.1"] * 6 + [b"HTTP/1.0"] * 3 + [b"HTTP/1.2", b"HTTP/2.0", b"http/1.1",
                                                    b"HTTP/11", b"HTTP/0.9", b"HTTP/1.1 ",
                                                    b"HTTP/1.x", b""]
HOSTS = [b"example.com", b"example.com:8080", b"", b"a b", b"[::1]:80", b"h@x", b"h:",
         b"h:99999", b"1.2.3.4", b"-x", b"x_y", b"\xc3\xa9.com", b"h:80:80", b" h ", b"[::1"]
LENGTHS = [b"0", b"5", b"05", b"+5", b" 5 ", b"5, 5", b"5,6", b"-1", b"99999999999999999999999",
           b"0x5", b"5 5", b"", b"18446744073709551615", b"1e3"]
CODINGS = [b"chunked", b"CHUNKED", b"gzip, chunked", b"chunked, gzip", b"identity", b"x",
           b"chunked;q=1", b"", b" chunked", b"gzip,chunked", b"chunked,", b",chunked",
           b"\tchunked", b"chunked\t"]
OTHER = [(b"Connection", b"close"), (b"Connection", b"keep-alive"), (b"Connection", b"upgrade"),
         (b"Upgrade", b"websocket"), (b"Upgrade", b"h2c"), (b"Expect", b"100-continue"),
         (b"Expect", b"x"), (b"Expect", b""), (b"Accept", b"*/*"), (b"X-Empty", b""),
         (b"X-Obs", b"caf\xc3\xa9"), (b"X-Ctl", b"a\x01b"), (b"X-Del", b"a\x7fb"),
         (b"X-Tab", b"a\tb"), (b"X Y", b"1"), (b"X:Y", b"1"), (b"", b"1"), (b"X\t", b"1"),
         (b"Cookie", b"a=1"), (b"x-UPPER", b"v")]
INTERESTING = [b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\x80", b"a", b",", b";",
               b"0", b"\xff", b"/", b"\r\n", b"\r\n\r\n", b"-"]
CHUNKS = [b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"5;a=b\r\nhello\r\n0\r\n\r\n",
          b"5\r\nhello\r\n0\r\nt: 1\r\n\r\n", b"A\r\n0123456789\r\n0\r\n\r\n",
          b"5\r\nhel", b"5\r\nhello", b"5 ;x\r\nhello\r\n0\r\n\r\n",
          b"0005\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n", b"x\r\n\r\n"]


def structured(rng):
    sp = rng.choice([b" "] * 12 + [b"  ", b"\t"])
    eol = rng.choice([b"\r\n"] * 14 + [b"\n", b"\r"])
    line = rng.choice(METHODS) + sp + rng.choice(TARGETS) + sp + rng.choice(VERSIONS)
    fields = []
    if rng.random() < 0.9:
        fields.append((b"Host", rng.choice(HOSTS)))
    if rng.random() < 0.1:
        fields.append((b"Host", rng.choice(HOSTS)))
    body = b""
    r = rng.random()
    if r < 0.35:
        fields.append((b"Content-Length", rng.choice(LENGTHS)))
        if rng.random() < 0.15:
            fields.append((b"Content-Length", rng.choice(LENGTHS)))
        body = b"hello"
    elif r < 0.7:
        fields.append((b"Transfer-Encoding", rng.choice(CODINGS)))
        if rng.random() < 0.15:
            fields.append((b"Transfer-Encoding", rng.choice(CODINGS)))
        if rng.random() < 0.15:
            fields.append((b"Content-Length", rng.choice(LENGTHS)))
        body = rng.choice(CHUNKS)
    for _ in range(rng.randrange(4)):
        fields.append(rng.choice(OTHER))
    rng.shuffle(fields)
    out = line + eol
    for k, v in fields:
        colon = rng.choice([b": "] * 10 + [b":", b" : ", b":\t", b": \t"])
        out += k + colon + v + eol
        if rng.random() < 0.03:
            out += rng.choice([b" ", b"\t"]) + b"folded" + eol
    return out + eol + body


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        if not data:
            break
        op = rng.random()
        i = rng.randrange(len(data))
        if op < 0.3:
            data[i:i + 1] = rng.choice(INTERESTING)
        elif op < 0.5:
            data[i:i] = rng.choice(INTERESTING)
        elif op < 0.65:
            del data[i:i + rng.randrange(1, 4)]
        elif op < 0.8:
            # Duplicate a line.
            ls = bytes(data).split(b"\r\n")
            j = rng.randrange(len(ls))
            ls.insert(j, ls[j])
            data = bytearray(b"\r\n".join(ls))
        elif op < 0.9:
            data[i] = rng.randrange(256)
        else:
            del data[i:]
    return bytes(data)


def inputs(seed, count):
    rng = random.Random(seed)
    for s in SEEDS:
        yield s
    for n in range(count - len(SEEDS)):
        r = rng.random()
        if r < 0.45:
            yield structured(rng)
        elif r < 0.75:
            yield mutate(rng, rng.choice(SEEDS))
        else:
            yield mutate(rng, structured(rng))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=10000)
    args = ap.parse_args()
    # H1_DIFF_DUMP=FILE: every unexplained disagreement, as JSON lines, for study.
    dump = open(os.environ["H1_DIFF_DUMP"], "w") if os.environ.get("H1_DIFF_DUMP") else None
    counts = {"inputs": 0, "agree": 0, "disagree": 0}
    choices = {name: 0 for name, _, _ in CHOICES}
    unexplained = []
    for data in inputs(args.seed, args.count):
        sys.stdout.write("H " + data.hex() + "\n")
        sys.stdout.flush()
        sw = sys.stdin.readline().strip()
        ref, _ = h11_verdict(data)
        counts["inputs"] += 1
        if same(sw, ref):
            counts["agree"] += 1
            continue
        counts["disagree"] += 1
        why = explain(data, sw, ref)
        if dump and not why:
            dump.write(json.dumps({"input": data.decode("latin-1"), "sidewire": sw,
                                   "h11": ref}) + "\n")
        if why:
            choices[why] += 1
        elif len(unexplained) < 50:
            unexplained.append({"input": data.decode("latin-1"), "sidewire": sw, "h11": ref})
        else:
            unexplained.append(None)
    summary = dict(counts, choices=choices, unexplained=len(unexplained),
                   examples=[u for u in unexplained if u][:50])
    sys.stdout.write("S " + json.dumps(summary) + "\n")
    sys.stdout.flush()
    sys.exit(1 if unexplained else 0)


if __name__ == "__main__":
    main()
