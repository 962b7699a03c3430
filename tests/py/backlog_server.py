"""An HTTP/1.0 server like `python3 -m http.server` (ThreadingHTTPServer, listen backlog 5,
one connection per request), bound to 127.0.0.1 port 0. Prints its port, then serves until
its stdin closes. Used to test upstreams that accept slowly (issue 16)."""

import http.server
import sys
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


# socketserver's default request_queue_size is 5: the listen backlog of `http.server`.
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
