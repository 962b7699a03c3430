"""A real gRPC server and client (grpcio) for tests/http2.rs, without generated code: the
methods of service `sidewire.test.Echo` move raw bytes.

  echo.py server          prints the port it listens on, serves until stdin closes
  echo.py client ADDR     calls every method through ADDR, prints "ok" if all answers match
"""
import sys
import threading

import grpc

SERVICE = "sidewire.test.Echo"
ident = lambda b: b  # noqa: E731  (messages are raw bytes)


def unary(req, ctx):
    return req[::-1]


def server_stream(req, ctx):
    for i in range(int(req)):
        yield b"item-%d" % i


def client_stream(reqs, ctx):
    return b"+".join(reqs)


def bidi(reqs, ctx):
    for r in reqs:
        yield r.upper()


def fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


def serve():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, ident, ident),
    }
    from concurrent import futures

    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    print(port, flush=True)
    sys.stdin.read()  # until the test drops our stdin
    srv.stop(0)


def client(addr):
    ch = grpc.insecure_channel(addr)
    m = lambda kind, name: getattr(ch, kind)(f"/{SERVICE}/{name}", ident, ident)  # noqa: E731
    assert m("unary_unary", "Unary")(b"hello", timeout=10) == b"olleh"
    got = list(m("unary_stream", "ServerStream")(b"50", timeout=10))
    assert got == [b"item-%d" % i for i in range(50)], got
    assert m("stream_unary", "ClientStream")(iter([b"a", b"b", b"c"]), timeout=10) == b"a+b+c"
    got = list(m("stream_stream", "Bidi")(iter([b"x", b"y" * 100000, b"z"]), timeout=10))
    assert got == [b"X", b"Y" * 100000, b"Z"], [len(g) for g in got]
    try:
        m("unary_unary", "Fail")(b"", timeout=10)
        raise AssertionError("Fail succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
    print("ok", flush=True)


if __name__ == "__main__":
    serve() if sys.argv[1] == "server" else client(sys.argv[2])
