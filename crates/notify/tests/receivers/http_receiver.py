#!/usr/bin/python3
"""A webhook receiver for perimeter-notify's tests, on 127.0.0.1 only.

It listens on a port the kernel picks and prints "PORT <n>" on stdout once
it accepts connections. Every request it reads is appended to the record
file as one JSON line: method, path, headers, body, and whether the
X-Perimeter-Signature header verifies under the key in --key-file. The
verification is written here with Python's hmac module, from the scheme's
description, not from perimeter's code.

--mode says how it answers:
  ok          200 "ok"
  status:N    status N with a short body (429 and 503 add "Retry-After: 7")
  hang        reads the request and never answers
  huge        200 with a 100 MB body; records how much of it got out
"""

import argparse
import hmac
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 300
MAX_BODY = 10 * 1024 * 1024
HUGE_BODY = 100 * 1024 * 1024

record_lock = threading.Lock()


def record(path, entry):
    with record_lock, open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")
        out.flush()


def verify(key, header, body):
    """Stripe's scheme: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    if header is None:
        return False, "no signature header"
    try:
        parts = [part.strip().split("=", 1) for part in header.split(",")]
        timestamps = [value for name, value in parts if name == "t"]
        signatures = [value for name, value in parts if name == "v1"]
    except ValueError:
        return False, "malformed header"
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        return False, "malformed header"
    expected = hmac.new(key, timestamps[0].encode() + b"." + body, "sha256").hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        return False, "mismatch"
    if abs(time.time() - int(timestamps[0])) > TOLERANCE_SECONDS:
        return False, "stale"
    return True, "ok"


def make_handler(args, key):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(min(length, MAX_BODY))
            valid, why = verify(key, self.headers.get("X-Perimeter-Signature"), body)
            record(
                args.record,
                {
                    "method": "POST",
                    "path": self.path,
                    "headers": {name.lower(): value for name, value in self.headers.items()},
                    "body": body.decode("utf-8", "replace"),
                    "signature_valid": valid,
                    "signature_check": why,
                },
            )
            mode = args.mode
            if mode == "ok":
                self.answer(200, b"ok")
            elif mode.startswith("status:"):
                status = int(mode.split(":", 1)[1])
                extra = {"Retry-After": "7"} if status in (429, 503) else {}
                self.answer(status, b"no_such_hook\r\nX-Evil: \x1b[2J", extra)
            elif mode == "hang":
                # Accept, read, and say nothing; the test kills us.
                time.sleep(3600)
            elif mode == "huge":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(HUGE_BODY))
                self.end_headers()
                chunk = b"x" * 65536
                written = 0
                try:
                    while written < HUGE_BODY:
                        self.wfile.write(chunk)
                        written += len(chunk)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass
                record(args.record, {"huge_bytes_written": written})
                self.close_connection = True

        def answer(self, status, body, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--key-file", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    # A fixed port, for a test that stops the receiver and starts it again
    # where the sender already points (0: the kernel picks).
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with open(args.key_file, "rb") as key_file:
        key = key_file.read()

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args, key))
    server.daemon_threads = True
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
