"""The model server's wire protocol (version 1).

One request per connection over a Unix domain socket: the client sends one JSON object on one line,
the server answers with one JSON object on one line and closes.

Request::  {"protocol": 1, "method": "transcribe", "params": {...}}
Reply::    {"protocol": 1, "ok": true, "result": ...}
           {"protocol": 1, "ok": false, "error": {"code": "...", "message": "..."}}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

PROTOCOL_VERSION = 1
#: Socket and lock live here, relative to the workflow's working directory, so two runs in two
#: directories never share a server (and the path stays short: AF_UNIX allows ~107 bytes).
RUNTIME_DIR = ".trax"
SOCKET_NAME = "server.sock"
LOCK_NAME = "server.lock"
#: Largest request line accepted (requests carry paths and settings, never audio).
MAX_REQUEST_BYTES = 1 << 20


class ErrorCode:
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    UNKNOWN_METHOD = "unknown_method"
    FORBIDDEN_PATH = "forbidden_path"
    INPUT_ERROR = "input_error"
    INTERNAL = "internal"


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def request(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "method": method, "params": params or {}}


def ok(result: Any) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "ok": True, "result": result}


def error(code: str, message: str) -> dict[str, Any]:
    return {"protocol": PROTOCOL_VERSION, "ok": False, "error": {"code": code, "message": message}}


def progress(stage: str, done: float, total: float) -> dict[str, Any]:
    """An interim message sent before the reply while a long request runs (no ``ok`` key)."""
    return {"protocol": PROTOCOL_VERSION, "progress": {"stage": stage, "done": round(done, 3), "total": round(total, 3)}}


SETTINGS_ENV = "TRAX_SERVER_CONFIG"


@dataclass(frozen=True)
class ServerSettings:
    """The ``server`` config section.

    None of these change any output byte, so they are kept out of rule params (changing them reruns
    nothing); the Snakefile hands them to jobs through ``$TRAX_SERVER_CONFIG``.

    Attributes:
        enabled: Route model work through the server; False loads models inside each job.
        workers: Requests decoded at the same time; more queue up.
        cpu_threads: CTranslate2 threads per decode inside the server. Measured: 1 vs 2 threads gave
            byte-identical transcripts, so this only trades speed.
        max_memory_gb: Budget for resident models before least-recently-used ones are unloaded.
        idle_timeout_s: The server exits after this long with no request in flight.
        request_timeout_s: A client gives up waiting for one reply after this long.
        start_timeout_s: A client gives up waiting for a new server to answer after this long.
    """

    enabled: bool = True
    workers: int = 2
    cpu_threads: int = 2
    max_memory_gb: float = 6.0
    idle_timeout_s: float = 120.0
    request_timeout_s: float = 900.0
    start_timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Settings from ``$TRAX_SERVER_CONFIG`` (JSON), defaults when unset."""
        raw = os.environ.get(SETTINGS_ENV)
        return cls(**json.loads(raw)) if raw else cls()

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
