"""The model server's wire protocol (version 1).

One request per connection over a Unix domain socket: the client sends one JSON object on one line,
the server answers with one JSON object on one line and closes.

Request::  {"protocol": 1, "method": "transcribe", "params": {...}}
Reply::    {"protocol": 1, "ok": true, "result": ...}
           {"protocol": 1, "ok": false, "error": {"code": "...", "message": "..."}}
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

PROTOCOL_VERSION = 1
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
