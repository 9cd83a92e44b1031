"""The model server: a long-lived process that keeps models loaded for the workflow's jobs.

Started on demand by :func:`trax.runtime.client.ensure_server` (or by hand with
``python scripts/model_server.py``) in the workflow's working directory; it listens on
``server.sock`` (mode 0600) in that directory's node-local runtime directory
(:func:`trax.runtime.protocol.runtime_dir`, mode 0700) and exits after ``idle_timeout_s`` without requests.

Path policy: a request's file paths must resolve (symlinks followed) inside the workflow directory
or inside the real location of one of its :data:`OUTPUT_DIRS`, so ``results -> /scratch/...`` is
served while ``/etc/shadow``, ``~/.ssh/id_rsa`` or a link planted under ``results/`` pointing
elsewhere are refused and logged.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import select
import signal
import socket
import socketserver
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trax
from trax import progress
from trax.runtime import protocol
from trax.errors import TraxError
from trax.runtime.manager import ModelKey, ModelManager
from trax.process import process_peak_rss_mb, process_rss_mb, release_free_memory
from trax.runtime.protocol import ErrorCode, ServerSettings

log = logging.getLogger("trax.runtime.server")

#: The workflow directory's top-level folders that may be symlinks to other disks (``results ->
#: /scratch/...``): the server also serves files under where they really live. Model requests name
#: only files under ``results/`` (normalized audio, transcripts); the others are listed because a
#: site may move them the same way and a future method may read them.
OUTPUT_DIRS = ("results", "logs", "benchmarks", "resources")


def allowed_roots(workdir: Path) -> list[Path]:
    """Where request paths may point: ``workdir`` and the real location of each of its
    :data:`OUTPUT_DIRS` (resolved on every call: a link may be made after the server starts)."""
    roots = [workdir]
    for name in OUTPUT_DIRS:
        real = (workdir / name).resolve()
        if real not in roots:
            roots.append(real)
    return roots


def may_serve(path: str | os.PathLike[str], workdir: Path) -> bool:
    """Whether a server in ``workdir`` (absolute, resolved) reads ``path`` (relative to it, or
    absolute), symlinks followed."""
    resolved = (workdir / path).resolve()
    return any(resolved.is_relative_to(root) for root in allowed_roots(workdir))


def whisper_model_key(source: Any, options: Any, adapter: str | None = None) -> ModelKey:
    """Cache key of a loaded Whisper model (a :class:`~trax.asr.models.ModelSource` decoded with
    :class:`~trax.asr.transcribe.TranscribeOptions`); ``adapter`` names a domain's adapted model
    directory when ``source`` is one. CTranslate2 fixes a model's thread count when it loads, so
    the rule's ``cpu_threads`` is part of the key (the defaults share one model)."""
    from trax.asr.transcribe import resolve_device

    device, compute_type = resolve_device(options)
    return ModelKey(kind="whisper", model=source.name, compute_type=compute_type, device=device,
                    adapter=adapter, revision=source.revision, threads=options.cpu_threads)


def weights_mb(path: str | os.PathLike[str]) -> float | None:
    """Size on disk of a model's weights (a file, or every file under a directory), in MB; None
    when ``path`` is not local (a hub name not yet resolved)."""
    root = Path(path)
    if root.is_file():
        return root.stat().st_size / 2**20
    if not root.is_dir():
        return None
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def diarization_model_key(options: Any) -> ModelKey:
    """Cache key of the diarizer's models for :class:`~trax.diarization.pipeline.DiarizeOptions`."""
    if options.backend == "pyannote":
        source = options.pyannote.source()
        return ModelKey(kind="diarize", model=f"pyannote:{source.name}", compute_type="float32",
                        device=options.pyannote.device, revision=source.revision)
    return ModelKey(kind="diarize", model="embedded", compute_type="float32", device="cpu")


class RequestError(Exception):
    """A request the server refuses; becomes an error reply with ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parsed(options_class: Any, settings: dict[str, Any]) -> Any:
    """``options_class.from_config(settings)``; a setting the class does not know is a bad request."""
    try:
        return options_class.from_config(settings)
    except TypeError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, f"bad settings: {exc}") from None


class Cancelled(BaseException):
    """The client of a request hung up: its work stops (raised from the progress hook).

    A BaseException, like KeyboardInterrupt, so that a stage's ``except Exception`` (which turns
    library errors into one-line TraxErrors) lets it through to the server."""


class Call:
    """One request on one connection: its heartbeats, progress messages and cancellation.

    Writes to the client come from the request's thread (progress) and from the heartbeat thread,
    so they go through one lock. The heartbeat thread also watches the connection: a client that
    hangs up (job killed, Ctrl-C) makes the socket readable at end of file, which marks the call
    cancelled at once; the work notices at its next progress report or while queued.

    Attributes:
        id: The server's number for this request (in its log and in every message).
        method: The request's method (set once parsed).
        label: What log lines name (the sample, the WAV).
        state: ``queued`` until a worker slot is held, then ``working``.
    """

    def __init__(self, request_id: int, connection: socket.socket | None = None, wfile: Any = None,
                 heartbeat_s: float = protocol.MAX_HEARTBEAT_S) -> None:
        self.id = request_id
        self.connection = connection
        self.wfile = wfile
        self.heartbeat_s = min(max(heartbeat_s, protocol.MIN_HEARTBEAT_S), protocol.MAX_HEARTBEAT_S)
        self.method = "?"
        self.label = ""
        self.state = "queued"
        self.received = time.monotonic()
        self.work_started: float | None = None
        self.cancelled = threading.Event()
        self._write = threading.Lock()
        self._done = threading.Event()

    # --- timing ------------------------------------------------------------------------------
    def queued_s(self) -> float:
        return (self.work_started or time.monotonic()) - self.received

    def work_s(self) -> float:
        return 0.0 if self.work_started is None else time.monotonic() - self.work_started

    def timing(self) -> dict[str, Any]:
        return {"request": self.id, "queued_s": round(self.queued_s(), 3), "work_s": round(self.work_s(), 3)}

    def describe(self) -> str:
        return f"request {self.id} {self.method}{' ' + self.label if self.label else ''}"

    # --- messages ----------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> bool:
        """Write one message; False (and the call cancelled) when the client is gone."""
        if self.wfile is None:
            return True
        try:
            with self._write:
                self.wfile.write(protocol.encode(message))
                self.wfile.flush()
            return True
        except OSError:  # broken pipe, reset, or a client too slow to read within the socket timeout
            self.cancel()
            return False

    def progress(self, stage: str, done: float, total: float) -> None:
        """The request thread's progress hook: stop here if the client left, else stream it."""
        self.check()
        self.send(protocol.progress(stage, done, total))

    def cancel(self) -> None:
        """The client went away: mark the call cancelled and log it (once). The work itself stops
        at its next progress report, or before it starts when still queued."""
        with self._write:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
        log.info("%s cancelled: the client went away (%s %.1f s); stopping it", self.describe(), self.state,
                 self.work_s() if self.work_started is not None else self.queued_s())

    def check(self) -> None:
        """Raise :class:`Cancelled` when the client has hung up."""
        if self.cancelled.is_set():
            raise Cancelled(self.describe())

    # --- heartbeats --------------------------------------------------------------------------
    @contextlib.contextmanager
    def heartbeats(self) -> Iterator[None]:
        """Acknowledge the request now and keep the client informed until the block ends."""
        if self.wfile is None:
            yield
            return
        self.send(protocol.heartbeat(self.id, self.state, self.queued_s(), self.work_s()))
        self._wake = os.pipe()  # written at the end, so the heartbeat thread stops at once
        thread = threading.Thread(target=self._beat, name=f"trax-heartbeat-{self.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._done.set()
            os.write(self._wake[1], b"x")
            thread.join()
            for fd in self._wake:
                os.close(fd)

    def _beat(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_s
        while not self._done.is_set():
            if self._client_left(max(0.0, next_beat - time.monotonic())):
                self.cancel()
                return
            if self._done.is_set():
                return
            if time.monotonic() >= next_beat:
                if not self.send(protocol.heartbeat(self.id, self.state, self.queued_s(), self.work_s())):
                    return
                next_beat = time.monotonic() + self.heartbeat_s

    def _client_left(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` or until the call ends; True when the client closed its end. A
        client sends one line and then only reads, so readable means end of file (anything else
        it sends is discarded)."""
        try:
            readable, _, _ = select.select([self.connection, self._wake[0]], [], [], wait_s)
            if self.connection not in readable:
                return False
            return self.connection.recv(4096, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):  # reset, or the socket closed under us
            return True


class ModelServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Threaded Unix-socket server; model work is bounded by ``settings.workers``."""

    daemon_threads = True
    allow_reuse_address = False

    def __init__(self, socket_path: str, workdir: Path, settings: ServerSettings) -> None:
        self.workdir = workdir.resolve()
        self.settings = settings
        self.manager = ModelManager(max_memory_mb=settings.max_memory_gb * 1024)
        self.work_slots = threading.BoundedSemaphore(settings.workers)
        self.started = time.monotonic()
        self.last_activity = time.monotonic()
        self.in_flight = 0
        self.queued = 0
        self.stopping = False
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.request_ids = itertools.count(1)
        self._state = threading.Lock()
        self._local = threading.local()
        self.methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self.ping,
            "stats": self.stats,
            "transcribe": self.transcribe,
            "refine": self.refine,
            "diarize": self.diarize,
            "enroll": self.enroll,
            "warm": self.warm,
            "shutdown": self.request_shutdown,
        }
        super().__init__(socket_path, _Handler)

    def server_bind(self) -> None:
        # Mode 0600: only this user may connect. chmod after bind instead of a umask around it (the
        # umask is process-wide); the runtime directory (0700) keeps others out in between.
        super().server_bind()
        os.chmod(self.server_address, 0o600)

    # --- bookkeeping -------------------------------------------------------------------------
    def begin(self, method: str) -> None:
        with self._state:
            self.in_flight += 1
            self.counts[method] += 1
            self.last_activity = time.monotonic()

    def end(self) -> None:
        with self._state:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    def idle_for(self) -> float:
        with self._state:
            return 0.0 if self.in_flight else time.monotonic() - self.last_activity

    @property
    def call(self) -> Call:
        """The request this thread is handling."""
        return self._local.call

    @contextlib.contextmanager
    def work_slot(self) -> Iterator[None]:
        """Hold one of ``settings.workers`` slots for this request's model work.

        While queued the request keeps heartbeating (its :class:`Call`) and checks every 0.2 s
        whether its client left: an abandoned request never starts.
        """
        call = self.call
        with self._state:
            self.queued += 1
            others = self.in_flight - 1  # queued or working (pings and stats included)
        log.info("%s waiting for a worker (%d other requests in the server)", call.describe(), max(others, 0))
        acquired = False
        try:
            while not (acquired := self.work_slots.acquire(timeout=0.2)):
                call.check()
            call.check()
        except BaseException:
            # A client that left just as the slot came free: give the slot back, or every later
            # request waits for it forever (heartbeats keep their clients waiting).
            if acquired:
                self.work_slots.release()
            with self._state:
                self.queued -= 1
            raise
        with self._state:
            self.queued -= 1
        call.work_started = time.monotonic()
        call.state = "working"
        try:
            yield
        finally:
            self.work_slots.release()
            # What the request freed goes back to the OS (as between the pieces of a recording),
            # so the next request's peak does not land on top of it.
            release_free_memory()

    # --- methods -----------------------------------------------------------------------------
    def ping(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "trax_version": trax.__version__,
                "workdir": str(self.workdir), "protocol": protocol.PROTOCOL_VERSION}

    def stats(self, params: dict[str, Any]) -> dict[str, Any]:
        rss = process_rss_mb()
        with self._state:
            counts = dict(self.counts)
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "settings": asdict(self.settings),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": counts,
            "outcomes": dict(self.outcomes),
            "queued": self.queued,
            "rss_mb": round(rss, 1),
            "peak_rss_mb": round(process_peak_rss_mb(), 1),
            "models": self.manager.stats(),
        }

    def request_shutdown(self, params: dict[str, Any]) -> dict[str, Any]:
        self.stopping = True  # the handler stops the server after this reply is sent
        return {"stopping": True}

    def whisper(self, settings: dict[str, Any], adapter: str | None = None) -> tuple[Any, Any]:
        """The (model, source) for a transcribe_* settings dict, loaded once per key (the adapter
        is part of the key, so a domain's adapted model is cached beside the plain one)."""
        from trax.asr.models import resolve_whisper
        from trax.asr.transcribe import TranscribeOptions, load_whisper

        options = _parsed(TranscribeOptions, settings)
        source = resolve_whisper(options.model)
        key = whisper_model_key(source, options, adapter)
        return self.manager.get(key, lambda: load_whisper(source, options, num_workers=self.settings.workers),
                                size_mb=weights_mb(source.name)), source

    def warm(self, params: dict[str, Any]) -> dict[str, Any]:
        """Load a model before the first job needs it: ``settings`` (a transcribe_* section: its
        Whisper model, and Silero VAD when it decodes batched) or ``diarize`` (rule settings).
        Loading takes a worker slot like a decode: it competes for the same cores and memory."""
        if "diarize" in params:
            from trax.diarization.pipeline import DiarizeOptions

            options = _parsed(DiarizeOptions, _require(params, "diarize", dict))
            with self.work_slot():
                self.diarization_models(options)
        else:
            settings = _require(params, "settings", dict)
            with self.work_slot():
                self.whisper(settings)
                if settings.get("batch_size", 0) > 0:
                    from faster_whisper.vad import get_vad_model

                    get_vad_model()  # cached by faster-whisper; loading it takes ~0.1 s
        return {"warm": True}

    def diarization_models(self, options: Any) -> Any:
        """The diarizer's models for :class:`~trax.diarization.pipeline.DiarizeOptions`, loaded once."""
        from trax.diarization.pipeline import load_models

        return self.manager.get(diarization_model_key(options), lambda: load_models(options))

    def transcribe(self, params: dict[str, Any]) -> dict[str, Any]:
        from trax.asr.transcribe import transcribe_wav

        wav_path = self.checked_path(params, "wav_path")
        settings = _require(params, "settings", dict)
        sample_id = _require(params, "sample_id", str)
        with self.work_slot():
            model, source = self.whisper(settings)
            # The multilingual model (language identification, other languages) is cached beside it.
            return transcribe_wav(wav_path, sample_id, settings, model=model, source=source, load_model=self.whisper)

    def refine(self, params: dict[str, Any]) -> dict[str, Any]:
        """Refine a fast transcript into ``output_path``: second decode combined word by word, or
        span re-decode (:func:`trax.asr.refine.write_refined`). The server writes the file itself
        and replies with a short summary: the refined transcript grows with the recording, and
        sending it back would hold it twice here and once more in the Snakemake process."""
        from trax.asr.refine import RefineOptions, write_refined

        wav_path = self.checked_path(params, "wav_path")
        fast_path = self.checked_path(params, "fast_path")
        output_path = self.checked_path(params, "output_path")
        settings = _require(params, "settings", dict)
        domains = _require(params, "domains", dict)
        sample_domain = params.get("sample_domain")
        options = _parsed(RefineOptions, settings)
        with self.work_slot():
            return write_refined(wav_path, fast_path, output_path, settings, domains, sample_domain,
                                 lambda adapter: self.whisper(options.decode_settings(adapter), adapter))

    def diarize(self, params: dict[str, Any]) -> dict[str, Any]:
        """Diarize a normalized WAV; models cached by :func:`diarization_model_key`."""
        from trax.diarization.pipeline import DiarizeOptions, diarize_wav

        wav_path = self.checked_path(params, "wav_path")
        settings = _require(params, "settings", dict)
        sample_id = _require(params, "sample_id", str)
        options = _parsed(DiarizeOptions, settings)
        with self.work_slot():
            return diarize_wav(wav_path, sample_id, settings, models=self.diarization_models(options))

    def enroll(self, params: dict[str, Any]) -> dict[str, Any]:
        """Build a profile store with the diarizer's cached models
        (:func:`trax.diarization.speakers.enrollment_store`); the table and every clip it names
        must be paths the server may read."""
        from trax.diarization.pipeline import DiarizeOptions
        from trax.diarization.speakers import enrollment_store, read_enrollment

        table_path = self.checked_path(params, "table_path")
        for row in read_enrollment(table_path):
            self.checked(str(row.audio), f"row {row.row} audio")
        settings = _require(params, "settings", dict)
        speakers = _require(params, "speakers", dict)
        options = _parsed(DiarizeOptions, settings)
        with self.work_slot():
            return enrollment_store(table_path, settings, speakers, self.diarization_models(options))

    def checked_path(self, params: dict[str, Any], name: str) -> str:
        """A path parameter (relative to the workflow directory, or absolute) that must resolve,
        symlinks followed, under one of :func:`allowed_roots`; anything else is refused and logged."""
        return self.checked(_require(params, name, str), name)

    def checked(self, value: str, name: str) -> str:
        """``value`` resolved, when :func:`may_serve` allows it; else refused and logged."""
        resolved = (self.workdir / value).resolve()
        if not may_serve(resolved, self.workdir):
            where = f"outside the workflow directory and its {'/'.join(OUTPUT_DIRS)}"
            log.warning("refused %s %r: resolves to %s, %s", name, value, resolved, where)
            raise RequestError(ErrorCode.FORBIDDEN_PATH, f"{name} {value!r} is {where}")
        return str(resolved)

    def dispatch(self, request: dict[str, Any], call: Call) -> dict[str, Any] | None:
        """Run one parsed request; its reply, or None when it was cancelled (nobody to tell)."""
        self._local.call = call
        call.method = request["method"]  # (the handler set it already; a preload has no handler)
        method = self.methods.get(call.method)
        try:
            if method is None:
                raise RequestError(ErrorCode.UNKNOWN_METHOD, f"unknown method {call.method!r}")
            self.begin(call.method)
            try:
                result = method(request.get("params") or {})
            finally:
                self.end()
        except RequestError as exc:
            return protocol.error(exc.code, str(exc), request=call.id)
        except TraxError as exc:
            return protocol.error(ErrorCode.INPUT_ERROR, str(exc), request=call.id)
        except Cancelled:
            self.count_outcome(ErrorCode.CANCELLED)
            log.info("%s stopped after its cancel (queued %.1f s, worked %.1f s)", call.describe(),
                     call.queued_s(), call.work_s())
            return None
        except Exception as exc:  # keep serving whatever one request did
            trace = traceback.format_exc()
            log.error("%s failed with an internal error (a bug):\n%s", call.describe(), trace.rstrip())
            self.count_outcome(ErrorCode.INTERNAL)
            return protocol.error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", request=call.id, traceback=trace)
        if call.work_started is not None:  # model work: its queue wait and work time, for bench/load.py
            log.info("%s done (queued %.1f s, worked %.1f s)", call.describe(), call.queued_s(), call.work_s())
        self.count_outcome("ok")
        return protocol.ok(result, timing=call.timing())

    def count_outcome(self, outcome: str) -> None:
        with self._state:
            self.outcomes[outcome] += 1


def _require(params: dict[str, Any], name: str, kind: type) -> Any:
    value = params.get(name)
    if not isinstance(value, kind):
        raise RequestError(ErrorCode.BAD_REQUEST, f"parameter {name!r} must be a {kind.__name__}")
    return value


def protocol_request(raw: bytes) -> dict[str, Any]:
    """Parse and check one request line."""
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, f"malformed JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("method"), str):
        raise RequestError(ErrorCode.BAD_REQUEST, "request must be an object with a string 'method'")
    if request.get("protocol") != protocol.PROTOCOL_VERSION:
        raise RequestError(ErrorCode.UNSUPPORTED_PROTOCOL,
                           f"protocol {request.get('protocol')!r} not supported (server speaks {protocol.PROTOCOL_VERSION})")
    if not isinstance(request.get("params", {}), dict):
        raise RequestError(ErrorCode.BAD_REQUEST, "'params' must be an object")
    return request


class _Handler(socketserver.StreamRequestHandler):
    server: ModelServer
    timeout = 30  # a client that connects and sends nothing does not hold a thread forever

    def handle(self) -> None:
        try:
            raw = self.rfile.readline(protocol.MAX_REQUEST_BYTES + 1)
        except TimeoutError:
            return
        call = Call(next(self.server.request_ids), self.connection, self.wfile)
        if len(raw) > protocol.MAX_REQUEST_BYTES:
            reply: dict[str, Any] | None = protocol.error(ErrorCode.BAD_REQUEST, "request too large")
        else:
            try:
                request = protocol_request(raw)
            except RequestError as exc:
                reply = protocol.error(exc.code, str(exc))
            else:
                if isinstance(request.get("heartbeat_s"), (int, float)):
                    call = Call(call.id, self.connection, self.wfile, heartbeat_s=float(request["heartbeat_s"]))
                call.method = request["method"]
                params = request.get("params") or {}
                label = params.get("sample_id") or params.get("wav_path")
                call.label = label if isinstance(label, str) else ""
                with call.heartbeats(), progress.hooked(call.progress):
                    reply = self.server.dispatch(request, call)
        if reply is not None and not call.send(reply):
            log.warning("%s: the client went away before the reply", call.describe())
        if self.server.stopping:
            threading.Thread(target=self.server.shutdown, daemon=True).start()


def _watch_idle(server: ModelServer) -> None:
    while True:
        time.sleep(min(1.0, server.settings.idle_timeout_s / 4))
        if server.idle_for() >= server.settings.idle_timeout_s:
            log.info("idle for %.0f s: exiting", server.settings.idle_timeout_s)
            server.shutdown()
            return


def remove_stale_socket(socket_path: str) -> None:
    """Delete a socket file nobody listens on (left by a crashed server)."""
    if not os.path.exists(socket_path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(socket_path)
    except (ConnectionRefusedError, FileNotFoundError, OSError):
        os.unlink(socket_path)
    else:
        raise SystemExit(f"another model server is already listening on {socket_path}")
    finally:
        probe.close()


def _preload(server: ModelServer, requests: list[dict[str, Any]]) -> None:
    for request in requests:
        try:
            request = protocol_request(protocol.encode(request))
        except RequestError as exc:
            log.warning("preload request refused: %s", exc)
            continue
        reply = server.dispatch(request, Call(next(server.request_ids)))
        if reply is not None and not reply["ok"]:
            log.warning("preload %s failed: %s", request.get("params"), reply["error"]["message"])


def serve(workdir: Path, settings: ServerSettings, preload: list[dict[str, Any]] | None = None) -> None:
    """Run the server in ``workdir`` until idle or shut down."""
    os.chdir(workdir)
    runtime = protocol.make_runtime_dir(protocol.runtime_dir())
    socket_path = str(runtime / protocol.SOCKET_NAME)
    remove_stale_socket(socket_path)
    server = ModelServer(socket_path, Path.cwd(), settings)
    socket_inode = os.stat(socket_path).st_ino
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    threading.Thread(target=_watch_idle, args=(server,), daemon=True).start()
    # Preloads run one after another, in the order given (the fast model first): the fast model
    # loads without torch (trax.process.import_faster_whisper) only while nothing imports it.
    threading.Thread(target=_preload, args=(server, preload or []), daemon=True).start()
    log.info("pid %d on %s serving %s on %s (trax %s)", os.getpid(), socket.gethostname(), workdir, socket_path,
             trax.__version__)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        # Remove our socket only: a successor may already have bound a new one at this path.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(socket_path).st_ino == socket_inode:
                os.unlink(socket_path)
        log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m trax.runtime.server --workdir DIR [--settings JSON]``."""
    parser = argparse.ArgumentParser(description="Trax model server")
    parser.add_argument("--workdir", type=Path, default=Path.cwd())
    parser.add_argument("--settings", default=None, help="server settings as JSON (default: $TRAX_SERVER_CONFIG)")
    parser.add_argument("--preload", default=None, help="JSON list of requests to run at start (warms models)")
    args = parser.parse_args(argv)
    from trax.process import pin_blas_by_environment

    pin_blas_by_environment()  # before any request thread can load numpy (see pin_blas_threads)
    settings = ServerSettings(**json.loads(args.settings)) if args.settings else ServerSettings.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    serve(args.workdir, settings, json.loads(args.preload) if args.preload else None)


if __name__ == "__main__":
    main()
