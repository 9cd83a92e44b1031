"""Client side of the model server: start it on demand, send requests, survive its death.

Every call runs in the workflow's working directory (Snakemake jobs do); the server's socket is
node-local, in :func:`trax.runtime.protocol.runtime_dir` of that directory, so on a cluster the jobs of
one node share one server and never reach for another node's.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trax
from trax import progress
from trax.runtime import protocol
from trax.errors import TraxError
from trax.runtime.protocol import ServerSettings

log = logging.getLogger(__name__)

SERVER_LOG = Path("logs") / "model_server.log"
#: How often a waiting client looks at the clock and at :data:`_HANG_UP` between messages.
POLL_S = 0.25
#: Set when the process that runs the jobs is being stopped (Ctrl-C): every request it waits on
#: hangs up, so the server cancels the work (see :func:`hang_up_on_interrupt`).
_HANG_UP = threading.Event()


class ServerUnavailable(Exception):
    """Nothing is listening on the socket."""


class ServerDied(Exception):
    """The connection dropped before a reply arrived."""


class ServerError(TraxError):
    """The server answered with an error reply.

    Attributes:
        code: The reply's error code (:class:`trax.runtime.protocol.ErrorCode`).
        protocol: The protocol version the server speaks (every reply carries it).
    """

    def __init__(self, code: str, message: str, protocol_version: Any = None) -> None:
        Exception.__init__(self, message)
        self.code = code
        self.protocol = protocol_version
        self.subject, _, self.reason = message.partition(": ")


class InternalServerError(ServerError):
    """The server failed on a bug of its own (not the user's input): the console gets one line with
    the code and where the traceback is; the traceback itself goes to the job's log."""

    def __init__(self, method: str, error: dict[str, Any], protocol_version: Any = None) -> None:
        first_line = (str(error.get("message")).strip().splitlines() or [""])[0]
        message = (f"model server: internal error (code {error.get('code')}, request {error.get('request', '?')}) "
                   f"while handling '{method}': {first_line} - a bug in trax, not your input; "
                   f"traceback in {SERVER_LOG} and this job's log")
        ServerError.__init__(self, str(error.get("code")), message, protocol_version)
        self.subject, self.reason = "model server", message.partition(": ")[2]
        self.traceback = error.get("traceback")


def socket_path() -> str:
    """This directory's server socket on this node."""
    return protocol.socket_path()


def request(method: str, params: dict[str, Any] | None = None, timeout: float = 10.0,
            version: int | None = None) -> Any:
    """Send one request and return its result.

    Args:
        method: What to run.
        params: Its parameters.
        timeout: The longest silence to wait through (see ``ServerSettings.request_timeout_s``):
            the server heartbeats every quarter of it (at most every 5 s) while the request
            waits and runs, so only a server that stopped talking runs into it.
        version: Protocol version to speak (only to stop an older server).

    Raises:
        ServerUnavailable: No server listens here.
        ServerDied: The server closed the connection without replying.
        ServerError: The server replied with an error (:class:`InternalServerError` for its bugs).
        TraxError: Nothing heard for ``timeout`` seconds, or a reply that is not the protocol's.
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(socket_path())
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ServerUnavailable(str(exc)) from None
        try:
            conn.sendall(protocol.encode(protocol.request(method, params, heartbeat_s=timeout / 4, version=version)))
            reply = _read_reply(conn, method, timeout)
        except TimeoutError:
            raise TraxError("model server", f"silent for {timeout:g} s while handling '{method}' (no heartbeat, "
                                            f"progress or reply; server.request_timeout_s is the longest silence "
                                            f"allowed); see {SERVER_LOG}") from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ServerDied(str(exc)) from None
    finally:
        conn.close()
    if not reply.get("ok"):
        error = reply.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            raise _malformed(method, reply)
        if error.get("code") == protocol.ErrorCode.INTERNAL:
            failure = InternalServerError(method, error, reply.get("protocol"))
            if failure.traceback:
                log.error("model server traceback (request %s):\n%s", error.get("request"), failure.traceback.rstrip())
            raise failure
        raise ServerError(str(error.get("code")), error["message"], reply.get("protocol"))
    if "result" not in reply:
        raise _malformed(method, reply)
    timing = reply.get("timing")
    if isinstance(timing, dict) and timing.get("work_s"):
        log.info("model server request %s '%s': queued %.1f s, worked %.1f s", timing.get("request"), method,
                 timing.get("queued_s", 0.0), timing.get("work_s", 0.0))
    return reply["result"]


def _malformed(method: str, reply: Any) -> TraxError:
    text = reply if isinstance(reply, (str, bytes)) else json.dumps(reply)[:200]
    return TraxError("model server", f"malformed reply to '{method}' (not trax protocol {protocol.PROTOCOL_VERSION}): "
                                     f"{text[:200]!r}; is something else listening on {socket_path()}? "
                                     f"see {SERVER_LOG}")


def _read_reply(conn: socket.socket, method: str, silence_s: float) -> dict[str, Any]:
    """Read messages until the reply; progress messages go to this job's log, heartbeats only
    prove the server alive.

    Any bytes from the server restart the silence clock, so a request that keeps hearing from the
    server is never cut off, while a silent or hung server is (``TimeoutError``). Between messages
    it also checks whether this process is being stopped: then it hangs up (the caller closes the
    socket), which cancels the request in the server.

    Raises:
        TimeoutError: Nothing for ``silence_s`` seconds.
        ServerDied: The connection closed before the reply.
        TraxError: The process is being stopped, or a message is not the protocol's.
    """
    buffer = bytearray()
    last_heard = time.monotonic()
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            silent = time.monotonic() - last_heard
            if silent >= silence_s:
                raise TimeoutError
            if _HANG_UP.is_set():
                raise TraxError("model server", f"'{method}' abandoned: the workflow is being stopped")
            readable, _, _ = select.select([conn], [], [], min(POLL_S, silence_s - silent))
            if readable:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    raise ServerDied("connection closed before the reply ended")
                buffer += chunk
                last_heard = time.monotonic()
            continue
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _malformed(method, line) from None
        if not isinstance(message, dict):
            raise _malformed(method, line)
        if "heartbeat" in message:
            continue
        if "progress" not in message:
            return message
        update = message["progress"]
        try:
            progress.report(update["stage"], update["done"], update["total"])
        except (TypeError, KeyError):
            raise _malformed(method, line) from None


def hang_up_on_interrupt() -> None:
    """Make Ctrl-C (SIGINT) hang up every request this process waits on, then do what it did before.

    Stopped, Snakemake waits for its running thread jobs to return (its thread pool's
    ``shutdown``); each such job waits on a server request, so without this the server would
    finish every abandoned decode and Snakemake would wait for it. The previous handler still
    runs (Snakemake's KeyboardInterrupt). Only the main thread may set handlers: elsewhere, and
    when already installed, this does nothing. SIGTERM is left alone: to Snakemake it means a
    graceful stop that lets running jobs finish and keeps their outputs. A killed process (SIGKILL,
    a cluster job cancelled) closes its sockets, which cancels its requests as well.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if getattr(previous, "trax_hang_up", False):
        return

    def handler(signum: int, frame: Any) -> None:
        _HANG_UP.set()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    handler.trax_hang_up = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGINT, handler)


def _server_is_ours() -> bool:
    """True when a compatible server for this directory answers; stops an incompatible one (another
    trax version, another directory, or an older protocol)."""
    try:
        info = request("ping", timeout=5.0)
    except (ServerUnavailable, ServerDied):
        return False
    except ServerError as exc:
        if exc.code != protocol.ErrorCode.UNSUPPORTED_PROTOCOL or not isinstance(exc.protocol, int):
            raise
        log.warning("stopping the model server on %s: it speaks protocol %d, this trax %d", socket_path(),
                    exc.protocol, protocol.PROTOCOL_VERSION)
        _stop_server(exc.protocol)
        return False
    if (isinstance(info, dict) and info.get("trax_version") == trax.__version__
            and Path(info.get("workdir", "")) == Path.cwd().resolve()):
        return True
    log.warning("stopping incompatible model server %s", info)
    _stop_server(None)
    return False


def _stop_server(version: int | None) -> None:
    """Ask the server on this directory's socket to stop (in protocol ``version``) and wait until
    its socket is gone.

    Raises:
        TraxError: It is still there after 10 s.
    """
    with contextlib.suppress(ServerUnavailable, ServerDied, ServerError):
        request("shutdown", timeout=5.0, version=version)
    if not _wait_until(lambda: not os.path.exists(socket_path()), 10.0):
        raise TraxError("model server", f"an incompatible server on {socket_path()} did not stop; stop it "
                                        f"(its pid is in {SERVER_LOG}) and rerun")


def _wait_until(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def ensure_server(settings: ServerSettings, preload: list[dict[str, Any]] | None = None) -> None:
    """Make sure a server for this directory is up, starting one if needed.

    A lock file serializes starters, so concurrent jobs start exactly one server; a stale socket
    from a crashed server is removed by the new server before it binds.
    """
    if _server_is_ours():
        return
    runtime = protocol.make_runtime_dir(protocol.runtime_dir())
    with open(runtime / protocol.LOCK_NAME, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _server_is_ours():
            return
        process = _spawn(settings, preload)
        started = _wait_until(lambda: _has_exited(process) or _server_is_ours(), settings.start_timeout_s)
        if _has_exited(process):
            raise TraxError("model server", f"exited at start; see {SERVER_LOG}")
        if not started:
            process.kill()
            raise TraxError("model server", f"did not answer within {settings.start_timeout_s:g} s (server.start_timeout_s)")


#: Starts argv[2:] in a new session with output appended to argv[1], prints its pid and exits, so
#: the server is nobody's child: it outlives the job that started it, Snakemake never waits on it,
#: and Snakemake's ``benchmark:`` (which sums a job's process and its children) never counts the
#: server's memory as the job's.
_DETACH = ("import subprocess, sys\n"
           "with open(sys.argv[1], 'a') as log:\n"
           "    print(subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,"
           " start_new_session=True, close_fds=True).pid)")


def _spawn(settings: ServerSettings, preload: list[dict[str, Any]] | None):  # -> psutil.Process
    import psutil

    from trax.process import model_process_env

    SERVER_LOG.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "trax.runtime.server", "--workdir", str(Path.cwd()), "--settings", settings.to_env()]
    if preload:
        command += ["--preload", json.dumps(preload)]
    launcher = subprocess.run([sys.executable, "-S", "-c", _DETACH, str(SERVER_LOG), *command],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
                              env=model_process_env())
    return psutil.Process(int(launcher.stdout))


def _has_exited(process) -> bool:  # process: psutil.Process
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def call_server(method: str, params: dict[str, Any], settings: ServerSettings) -> Any:
    """Run ``method`` on the server, starting it if needed and restarting it once if it dies (or
    if an older server took the socket between the check and the request)."""
    for attempt in (1, 2):
        ensure_server(settings)
        try:
            return request(method, params, timeout=settings.request_timeout_s)
        except ServerUnavailable:
            log.warning("model server vanished before '%s' (attempt %d); starting a new one", method, attempt)
        except ServerDied:
            log.warning("model server died during '%s' (attempt %d); starting a new one", method, attempt)
        except ServerError as exc:
            if exc.code != protocol.ErrorCode.UNSUPPORTED_PROTOCOL:
                raise
            log.warning("an older model server answered '%s' (attempt %d); replacing it", method, attempt)
    raise TraxError("model server", f"died twice while handling '{method}'; see {SERVER_LOG}")


def server_remote(settings: ServerSettings) -> Callable[[str, dict[str, Any]], Any]:
    """What a stage function takes as ``remote``: runs a named request on the model server."""
    return functools.partial(call_server, settings=settings)


def server_stats(settings: ServerSettings) -> dict[str, Any] | None:
    """The model server's ``stats`` reply, or None when the workflow runs without one or none runs
    in this directory (metrics.json's ``server`` block)."""
    if not settings.enabled:
        return None
    with contextlib.suppress(ServerUnavailable, ServerDied, ServerError, TraxError, OSError):
        return request("stats", timeout=5.0)
    return None


def start_in_background(settings: ServerSettings, warm: list[dict[str, Any]]) -> threading.Thread:
    """Start the server from a thread, so the caller does not wait, and have it load models.

    The Snakefile calls this when a run has model jobs, so models load while normalize runs.

    Args:
        settings: Server settings.
        warm: ``warm`` request parameters, one per model the server loads at start:
            ``{"settings": <transcribe_* section>}`` or ``{"diarize": <diarize rule settings>}``.
    """
    preload = [protocol.request("warm", params) for params in warm]
    hang_up_on_interrupt()  # the onstart hook runs in Snakemake's main thread

    def start() -> None:
        try:
            ensure_server(settings, preload)
        except TraxError as exc:
            log.warning("could not pre-start the model server: %s", exc)

    thread = threading.Thread(target=start, name="trax-server-start", daemon=True)
    thread.start()
    return thread
