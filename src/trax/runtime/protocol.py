"""The model server's wire protocol (version 4).

One request per connection over a Unix domain socket: the client sends one JSON object on one line;
the server answers with interim messages, then one reply, each one JSON object on one line, and
closes.

Request::   {"protocol": 4, "method": "transcribe", "params": {...}, "heartbeat_s": 5}
Interim::   {"protocol": 4, "heartbeat": {"request": 7, "state": "queued", "queued_s": 1.2, "work_s": 0}}
            {"protocol": 4, "progress": {"stage": "transcribe", "done": 12.0, "total": 600.0}}
Reply::     {"protocol": 4, "ok": true, "result": ..., "timing": {"request": 7, "queued_s": ..., "work_s": ...}}
            {"protocol": 4, "ok": false, "error": {"code": "...", "message": "...", "request": 7,
                                                   "traceback": "..." (internal errors only)}}

Liveness, not a stopwatch (version 2): the server sends a heartbeat as soon as it has read a
request and then every ``heartbeat_s`` seconds (the client chooses it, at most
:data:`MAX_HEARTBEAT_S`) while the request waits for a worker and while it runs. A client gives up
only after ``request_timeout_s`` with no message at all, so a request may wait an hour in the queue
while a wedged server is still noticed within that silence limit. A client that hangs up cancels
its request: the server stops the work at its next progress report (every decoded segment, every
diarized piece) and logs it. Every reply, errors included, carries the server's protocol version,
so a client that meets an older server can stop it in the older server's own terms. Version 3
added the ``enroll`` method (speaker profiles built with the server's diarizer). Version 4:
``refine`` takes an ``output_path`` and writes the refined transcript itself (replying with a
short summary), so a transcript that grows with the recording never crosses the socket; an older
server would reply with the whole document and write nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trax.errors import TraxError

PROTOCOL_VERSION = 4  # 3: the enroll method; 4: refine writes its output file
#: The longest interval between heartbeats a client may ask for; what a server sends when the
#: request names none. Five seconds keeps a queue of a hundred waiting jobs at 20 lines a second.
MAX_HEARTBEAT_S = 5.0
#: The shortest interval (a client with a tiny silence limit must not make the server spin).
MIN_HEARTBEAT_S = 0.05
#: Overrides the base of the node-local runtime directory (see :func:`runtime_dir`).
RUNTIME_ENV = "TRAX_RUNTIME_DIR"
SOCKET_NAME = "server.sock"
LOCK_NAME = "server.lock"
#: AF_UNIX socket paths hold at most 107 bytes on Linux (108 with the terminating NUL).
MAX_SOCKET_PATH = 107
#: Largest request line accepted (requests carry paths and settings, never audio).
MAX_REQUEST_BYTES = 1 << 20


def runtime_base() -> Path:
    """Where per-user runtime directories go on this node.

    ``$TRAX_RUNTIME_DIR`` when set; else ``$XDG_RUNTIME_DIR`` when it is a directory of this user
    (a batch job may inherit the variable from a login node where it exists and the compute node
    lacks it); else the temporary directory (``$TMPDIR`` or ``/tmp``).
    """
    explicit = os.environ.get(RUNTIME_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        try:
            info = os.stat(xdg)
        except OSError:
            info = None
        if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            return Path(xdg)
    return Path(tempfile.gettempdir())


def runtime_dir(workdir: str | os.PathLike[str] | None = None) -> Path:
    """The model server's runtime directory (socket and start lock) for a workflow directory.

    ``<base>/trax-<uid>/<host>-<hash>``: node-local, because a Unix socket on a shared filesystem
    cannot be reached from another node (on a cluster each node gets its own server); keyed by host
    name too, in case the base is shared after all; and by a hash of the resolved workflow
    directory, so runs in two directories never share a server.

    Args:
        workdir: The workflow's working directory; the current directory when None.
    """
    resolved = Path(workdir if workdir is not None else os.getcwd()).resolve()
    digest = hashlib.sha256(str(resolved).encode("utf-8")).hexdigest()[:16]
    host = socket.gethostname().split(".")[0] or "localhost"
    return runtime_base() / f"trax-{os.getuid()}" / f"{host}-{digest}"


def socket_path(workdir: str | os.PathLike[str] | None = None) -> str:
    """The model server's socket for ``workdir`` (see :func:`runtime_dir`)."""
    return str(runtime_dir(workdir) / SOCKET_NAME)


def make_runtime_dir(path: Path) -> Path:
    """Create ``path`` and its ``trax-<uid>`` parent with mode 0700, and check that both are this
    user's private directories (not links, not group/other accessible): a shared /tmp must not let
    another user plant a directory or socket that our jobs would talk to.

    Raises:
        TraxError: A directory exists but is not private to this user, or the socket path would be
            too long for AF_UNIX.
    """
    if len(str(path / SOCKET_NAME)) > MAX_SOCKET_PATH:
        raise TraxError("model server", f"socket path {path / SOCKET_NAME} is longer than {MAX_SOCKET_PATH} bytes; "
                                        f"set ${RUNTIME_ENV} to a shorter directory")
    for directory, parents in ((path.parent, True), (path, False)):
        try:
            directory.mkdir(mode=0o700, parents=parents)
            directory.chmod(0o700)  # exactly 0700 whatever the umask (one of 0o277 would leave 0500)
        except FileExistsError:
            pass
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise TraxError("model server", f"runtime directory {directory} must be a directory owned by this user "
                                            f"with mode 0700 (found {stat.filemode(info.st_mode)}, uid {info.st_uid})")
    return path


class ErrorCode:
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    UNKNOWN_METHOD = "unknown_method"
    FORBIDDEN_PATH = "forbidden_path"
    INPUT_ERROR = "input_error"
    INTERNAL = "internal"
    CANCELLED = "cancelled"  # never sent (nobody listens): the server log's word for it


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"


def request(method: str, params: dict[str, Any] | None = None, heartbeat_s: float | None = None,
            version: int | None = None) -> dict[str, Any]:
    """A request line's object.

    Args:
        method: What to run.
        params: Its parameters.
        heartbeat_s: How often the client wants a sign of life (clamped by the server).
        version: Protocol version to speak (only to stop an older server in its own terms).
    """
    message = {"protocol": PROTOCOL_VERSION if version is None else version, "method": method, "params": params or {}}
    if heartbeat_s is not None:
        message["heartbeat_s"] = heartbeat_s
    return message


def ok(result: Any, timing: dict[str, Any] | None = None) -> dict[str, Any]:
    message = {"protocol": PROTOCOL_VERSION, "ok": True, "result": result}
    if timing is not None:
        message["timing"] = timing
    return message


def error(code: str, message: str, **details: Any) -> dict[str, Any]:
    """An error reply; ``details`` (``request``, ``traceback``) go into the error object."""
    return {"protocol": PROTOCOL_VERSION, "ok": False, "error": {"code": code, "message": message, **details}}


def heartbeat(request_id: int, state: str, queued_s: float, work_s: float) -> dict[str, Any]:
    """An interim sign of life: the request is ``queued`` (waiting for a worker) or ``working``."""
    return {"protocol": PROTOCOL_VERSION, "heartbeat": {"request": request_id, "state": state,
                                                        "queued_s": round(queued_s, 1), "work_s": round(work_s, 1)}}


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
        workers: Requests decoded at the same time (warming a model counts as one); more queue
            up. A decode uses the thread count its rule's settings name (``cpu_threads``), the
            same as with the server off, so provenance records the count really used.
        max_memory_gb: Budget for resident models before least-recently-used ones are unloaded.
        idle_timeout_s: The server exits after this long with no request in flight.
        request_timeout_s: The longest silence a client waits through: it gives up when no
            message (heartbeat, progress, reply) came for this long. Queue waits and long decodes
            never count, as the server keeps talking.
        start_timeout_s: A client gives up waiting for a new server to answer after this long.
    """

    enabled: bool = True
    workers: int = 2
    max_memory_gb: float = 6.0
    idle_timeout_s: float = 120.0
    request_timeout_s: float = 60.0
    start_timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Settings from ``$TRAX_SERVER_CONFIG`` (JSON), defaults when unset."""
        raw = os.environ.get(SETTINGS_ENV)
        return cls(**json.loads(raw)) if raw else cls()

    def to_env(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)
