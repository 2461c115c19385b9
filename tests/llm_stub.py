"""A local stand-in for an OpenAI-compatible chat-completions endpoint, for the LLM layout tests and
bench/llm_fallback.py: the standard library's HTTP server on 127.0.0.1 (an ephemeral port) in a thread.

Replies are scripted per user prompt: `stub.script(prompt, content, kind="ok")`, where kind is "ok" (answer
`content` at once), "slow" (answer after `delay` seconds), "http500", or "proxy" (ask `backend(messages)`, e.g. a
local llama-cpp model, for the content). `stub.calls` counts the requests, so a test can show a re-run asked nothing.

    with LLMStub() as stub:
        stub.script("fruit", '{"prompt": "red apple"}')
        rewrite("fruit", "llm", vocab, llm=LLMConfig(url=stub.url, model="stub"))
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LLMStub:
    def __init__(self, backend=None):
        self.replies: dict[str, tuple[str, str, float]] = {}
        self.calls = 0
        self.backend = backend  # messages -> content, for kind "proxy"
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.calls += 1
                kind, content, delay = stub.replies.get(body["messages"][-1]["content"], ("ok", "{}", 0.0))
                if kind == "slow":
                    time.sleep(delay)
                if kind == "http500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if kind == "proxy":
                    content = stub.backend(body["messages"])
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (the slow case): the point
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def script(self, prompt: str, content: str | dict = "{}", kind: str = "ok", delay: float = 0.0) -> None:
        """The reply to a request whose user message is `prompt` (a dict is sent as its JSON)."""
        self.replies[prompt] = (kind, content if isinstance(content, str) else json.dumps(content), delay)

    def __enter__(self) -> "LLMStub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
