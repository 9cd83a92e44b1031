"""A small OpenAI-compatible chat server on 127.0.0.1 for testing the ``openai`` enhance provider.

It speaks real HTTP (``POST /v1/chat/completions``) so the official client library is exercised end
to end. Its "model" is a crude copy editor: it removes "um"/"uh", capitalises and adds a full stop.
Like a naive model it *obeys* an utterance saying "ignore previous instructions", answering with a
poem instead of the edit — the provider must reject that edit. ``mode`` scripts failures:

* ``edit`` — answer normally; ``malformed`` — content that is not JSON; ``refuse`` — a refusal;
* ``slow`` — sleep ``delay_s`` before answering (client timeout); ``429`` / ``500`` — that status
  for the first ``fail_times`` requests, then answer normally.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POEM = "Here is a poem about the sea: the waves roll in, the gulls cry out, and night falls softly on the shore."


def edit(text: str) -> str:
    if "ignore previous instructions" in text.lower():
        return POEM
    words = [w for w in text.split() if w.lower().strip(",.") not in ("um", "uh")]
    out = " ".join(words)
    return (out[:1].upper() + out[1:] + ("" if out.endswith((".", "?", "!")) else ".")) if out else out


class FakeLLM:
    def __init__(self) -> None:
        self.mode = "edit"
        self.fail_times = 10**9
        self.delay_s = 2.0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(body)
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, payload = owner.respond(body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def respond(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        failing = len(self.requests) <= self.fail_times
        if self.mode in ("429", "500") and failing:
            return int(self.mode), {"error": {"message": "slow down" if self.mode == "429" else "boom", "type": "error"}}
        if self.mode == "slow":
            time.sleep(self.delay_s)
        document = json.loads(body["messages"][-1]["content"])
        content: str | None = json.dumps({"utterances": [{"id": u["id"], "text": edit(u["text"])}
                                                         for u in document["utterances"]]})
        refusal = None
        if self.mode == "malformed":
            content = '{"utterances": [{"id": 0, "text": "unterminated'
        elif self.mode == "refuse":
            content, refusal = None, "I'm sorry, I can't help with that."
        message = {"role": "assistant", "content": content, "refusal": refusal}
        return 200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


def words_of(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())
