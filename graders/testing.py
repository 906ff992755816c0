"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests, benchmarks and offline demos.

    with ScriptedJudgeServer(lambda body, n: Reply(content='{"result": 0.8}')) as server:
        spec = {"type": "score_model", "base_url": server.base_url, "model": "judge", ...}

`script(body, n)` gets the parsed request body and the request's number (0, 1, ...) and returns a
`Reply`: a status, the assistant text (or raw bytes for garbage), headers and a delay. The server only ever
listens on loopback, serves each request in its own thread (so slow replies overlap) and keeps the
request bodies in `.requests`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    content: str | None = '{"result": 1.0, "steps": []}'
    status: int = 200
    raw: bytes | None = None  # sent as-is instead of a chat completion (garbage, truncated JSON, ...)
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0


def default_script(body: dict, n: int) -> Reply:
    return Reply()


class ScriptedJudgeServer:
    def __init__(self, script=default_script, latency_s: float = 0.0):
        self.script, self.latency_s = script, latency_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []  # request headers, in the same order as `requests`
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "ScriptedJudgeServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                with owner._lock:
                    n = len(owner.requests)
                    owner.requests.append(body)
                    owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                try:
                    reply = owner.script(body, n)
                    delay = owner.latency_s + reply.delay_s
                    if delay:
                        time.sleep(delay)
                finally:
                    with owner._lock:
                        owner.in_flight -= 1
                if reply.raw is not None:
                    data = reply.raw
                elif reply.status >= 400:
                    data = json.dumps({"error": {"message": reply.content or f"error {reply.status}",
                                                 "type": "scripted", "code": reply.status}}).encode()
                else:
                    data = json.dumps(_completion(body, reply.content)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); nothing to do

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default (5) makes concurrent clients wait out SYN retries
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="judge-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _completion(body: dict, content: str | None) -> dict:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    completion_tokens = len((content or "").split())
    return {
        "id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_chars // 4 + completion_tokens},
    }


def main(argv=None) -> int:
    """`python -m graders.testing [--latency-ms 50]`: serve constant answers on loopback until stdin closes.
    Prints the base URL as the first line (benchmarks run the server in its own process this way)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(description="a scripted OpenAI-compatible judge server on 127.0.0.1")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--answer", default='{"result": 1.0, "steps": []}')
    args = p.parse_args(argv)
    with ScriptedJudgeServer(lambda body, n: Reply(args.answer), latency_s=args.latency_ms / 1000) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
