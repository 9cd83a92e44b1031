"""The model server: a long-lived process that keeps models loaded for the workflow's jobs.

Started on demand by :func:`trax.runtime.client.ensure_server` (or by hand with
``python scripts/model_server.py``) in the workflow's working directory; it listens on
``server.sock`` (mode 0600) in that directory's node-local runtime directory
(:func:`trax.runtime.protocol.runtime_dir`, mode 0700) and exits after ``idle_timeout_s`` without requests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import socketserver
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trax
from trax import progress
from trax.runtime import protocol
from trax.errors import TraxError
from trax.runtime.manager import ModelKey, ModelManager
from trax.process import process_peak_rss_mb, process_rss_mb
from trax.runtime.protocol import ErrorCode, ServerSettings

log = logging.getLogger("trax.runtime.server")


def whisper_model_key(source: Any, options: Any, adapter: str | None = None) -> ModelKey:
    """Cache key of a loaded Whisper model (a :class:`~trax.asr.models.ModelSource` decoded with
    :class:`~trax.asr.transcribe.TranscribeOptions`); ``adapter`` names a domain's adapted model
    directory when ``source`` is one."""
    from trax.asr.transcribe import resolve_device

    device, compute_type = resolve_device(options)
    return ModelKey(kind="whisper", model=source.name, compute_type=compute_type, device=device,
                    adapter=adapter, revision=source.revision)


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
        self.stopping = False
        self.counts: Counter[str] = Counter()
        self._state = threading.Lock()
        self.methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self.ping,
            "stats": self.stats,
            "transcribe": self.transcribe,
            "refine": self.refine,
            "diarize": self.diarize,
            "warm": self.warm,
            "shutdown": self.request_shutdown,
        }
        old_umask = os.umask(0o177)  # socket file mode 0600: only this user may connect
        try:
            super().__init__(socket_path, _Handler)
        finally:
            os.umask(old_umask)

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

        try:
            options = TranscribeOptions.from_config({**settings, "cpu_threads": self.settings.cpu_threads})
        except TypeError as exc:
            raise RequestError(ErrorCode.BAD_REQUEST, f"bad settings: {exc}") from None
        source = resolve_whisper(options.model)
        key = whisper_model_key(source, options, adapter)
        return self.manager.get(key, lambda: load_whisper(source, options, num_workers=self.settings.workers)), source

    def warm(self, params: dict[str, Any]) -> dict[str, Any]:
        """Load a model before the first job needs it: ``settings`` (a transcribe_* section: its
        Whisper model, and Silero VAD when it decodes batched) or ``diarize`` (rule settings)."""
        if "diarize" in params:
            from trax.diarization.pipeline import DiarizeOptions, load_models

            try:
                options = DiarizeOptions.from_config(_require(params, "diarize", dict))
            except TypeError as exc:
                raise RequestError(ErrorCode.BAD_REQUEST, f"bad settings: {exc}") from None
            self.manager.get(diarization_model_key(options), lambda: load_models(options))
        else:
            settings = _require(params, "settings", dict)
            self.whisper(settings)
            if settings.get("batch_size", 0) > 0:
                from faster_whisper.vad import get_vad_model

                get_vad_model()  # cached by faster-whisper; loading it takes ~0.1 s
        return {"warm": True}

    def transcribe(self, params: dict[str, Any]) -> dict[str, Any]:
        from trax.asr.transcribe import transcribe_wav

        wav_path = self.checked_path(params, "wav_path")
        settings = _require(params, "settings", dict)
        sample_id = _require(params, "sample_id", str)
        with self.work_slots:
            model, source = self.whisper(settings)
            return transcribe_wav(wav_path, sample_id, settings, model=model, source=source)

    def refine(self, params: dict[str, Any]) -> dict[str, Any]:
        """Refine a fast transcript: second decode combined word by word, or span re-decode
        (:func:`trax.asr.refine.refine_transcript`)."""
        from trax.io.jsonio import read_json
        from trax.asr.refine import RefineOptions, refine_transcript

        wav_path = self.checked_path(params, "wav_path")
        fast = read_json(self.checked_path(params, "fast_path"))
        settings = _require(params, "settings", dict)
        domains = _require(params, "domains", dict)
        sample_domain = params.get("sample_domain")
        try:
            options = RefineOptions.from_config(settings)
        except TypeError as exc:
            raise RequestError(ErrorCode.BAD_REQUEST, f"bad settings: {exc}") from None
        with self.work_slots:
            return refine_transcript(fast, wav_path, settings, domains, sample_domain,
                                     lambda adapter: self.whisper(options.decode_settings(adapter), adapter))

    def diarize(self, params: dict[str, Any]) -> dict[str, Any]:
        """Diarize a normalized WAV; models cached by :func:`diarization_model_key`."""
        from trax.diarization.pipeline import DiarizeOptions, diarize_wav, load_models

        wav_path = self.checked_path(params, "wav_path")
        settings = _require(params, "settings", dict)
        sample_id = _require(params, "sample_id", str)
        try:
            options = DiarizeOptions.from_config(settings)
        except TypeError as exc:
            raise RequestError(ErrorCode.BAD_REQUEST, f"bad settings: {exc}") from None
        with self.work_slots:
            models = self.manager.get(diarization_model_key(options), lambda: load_models(options))
            return diarize_wav(wav_path, sample_id, settings, models=models)

    def checked_path(self, params: dict[str, Any], name: str) -> str:
        """A path parameter that must resolve inside the workflow directory."""
        value = _require(params, name, str)
        resolved = (self.workdir / value).resolve()
        if not resolved.is_relative_to(self.workdir):
            raise RequestError(ErrorCode.FORBIDDEN_PATH, f"{name} {value!r} is outside the workflow directory")
        return str(resolved)

    def dispatch(self, raw: bytes) -> dict[str, Any]:
        try:
            request = protocol_request(raw)
            method = self.methods.get(request["method"])
            if method is None:
                raise RequestError(ErrorCode.UNKNOWN_METHOD, f"unknown method {request['method']!r}")
            self.begin(request["method"])
            try:
                return protocol.ok(method(request.get("params") or {}))
            finally:
                self.end()
        except RequestError as exc:
            return protocol.error(exc.code, str(exc))
        except TraxError as exc:
            return protocol.error(ErrorCode.INPUT_ERROR, str(exc))
        except Exception as exc:  # keep serving whatever one request did
            log.exception("request failed")
            return protocol.error(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")


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
        if len(raw) > protocol.MAX_REQUEST_BYTES:
            reply = protocol.error(ErrorCode.BAD_REQUEST, "request too large")
        else:
            with progress.hooked(self.send_progress):
                reply = self.server.dispatch(raw)
        try:
            self.wfile.write(protocol.encode(reply))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.warning("client went away before the reply")
        if self.server.stopping:
            threading.Thread(target=self.server.shutdown, daemon=True).start()

    def send_progress(self, stage: str, done: float, total: float) -> None:
        """Stream a progress update to the waiting client, whose job log records it."""
        try:
            self.wfile.write(protocol.encode(protocol.progress(stage, done, total)))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gone; the reply write reports it


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
        server.dispatch(protocol.encode(request))


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
    # loads without torch (trax.asr.transcribe.import_faster_whisper) only while nothing imports it.
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
