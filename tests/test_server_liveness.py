"""The model server under load: heartbeats instead of a stopwatch, cancellation when nobody waits,
errors that say what broke, an older server replaced, and the model cache's unload race."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import BENCH, REPO, ffmpeg, in_dir
from trax.errors import TraxError
from trax.io.jsonio import read_json
from trax.runtime.client import (InternalServerError, ServerError, ensure_server, request, socket_path)
from trax.runtime.jobs import JobFailed, run_isolated, run_job
from trax.runtime.manager import ModelKey, ModelManager
from trax.runtime.protocol import PROTOCOL_VERSION, ServerSettings, make_runtime_dir, runtime_dir

CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
LJ = sorted((BENCH / "coqui-tts-ljspeech" / "wavs").glob("LJ001-00*.wav"))
#: The fast pass, sequential (progress after every segment, so cancels land within seconds), 1 thread.
FAST = {**CONFIG["transcribe_fast"], "batch_size": 0, "cpu_threads": 1}


def _join_speech(destination: Path, clips: list[Path]) -> Path:
    """A normalized (16 kHz mono PCM) WAV of ``clips`` one after another."""
    inputs = [arg for clip in clips for arg in ("-i", str(clip))]
    streams = "".join(f"[{n}:a]" for n in range(len(clips)))
    ffmpeg(*inputs, "-filter_complex", f"{streams}concat=n={len(clips)}:v=0:a=1", "-ac", "1", "-ar", "16000",
           "-c:a", "pcm_s16le", str(destination))
    return destination


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory):
    """A directory with a running one-worker server and two normalized WAVs: ``long.wav`` (~75 s
    of speech) and ``short.wav`` (one clip)."""
    workdir = tmp_path_factory.mktemp("one_worker")
    _join_speech(workdir / "long.wav", LJ[:10])
    _join_speech(workdir / "short.wav", LJ[:1])
    with in_dir(workdir):
        ensure_server(ServerSettings(workers=1, idle_timeout_s=120))
        yield workdir
        request("shutdown")


def _transcribe(wav: str, timeout: float) -> dict:
    return request("transcribe", {"wav_path": wav, "sample_id": Path(wav).stem, "settings": FAST}, timeout=timeout)


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_queued_request_outlives_the_silence_limit_while_heartbeats_flow(one_worker: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="trax.runtime.client")
    with in_dir(one_worker):
        _transcribe("short.wav", timeout=30)  # the model loaded: the long decode below starts at once
        results: dict[str, object] = {}

        def run(name: str) -> None:
            try:
                results[name] = _transcribe(f"{name}.wav", timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - the test reports it
                results[name] = exc

        started = request("stats")["requests"]["transcribe"]
        first = threading.Thread(target=run, args=("long",))
        first.start()
        assert _wait_for(lambda: request("stats")["requests"]["transcribe"] > started, 10)
        second = threading.Thread(target=run, args=("short",))
        second.start()
        first.join()
        second.join()
    assert isinstance(results["long"], dict) and isinstance(results["short"], dict), results
    assert "Printing" in results["short"]["segments"][0]["text"]
    # The short request waited for the one worker longer than its 1-s silence limit.
    waits = [float(line.split("queued ")[1].split(" s")[0]) for line in caplog.messages
             if "'transcribe': queued" in line]
    assert len(waits) == 3 and max(waits) > 1.0, caplog.messages


class _Listener:
    """A real socket server on this directory's socket that accepts, reads the request and then
    answers ``reply`` (None: never answers, holding the connection open)."""

    def __init__(self, reply: bytes | None) -> None:
        make_runtime_dir(runtime_dir())
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(socket_path())
        self.sock.listen(4)
        self.reply = reply
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            conn.makefile("rb").readline()
            if self.reply is not None:
                conn.sendall(self.reply)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()
        os.unlink(socket_path())


def test_a_silent_server_is_detected_within_the_limit(tmp_path: Path) -> None:
    with in_dir(tmp_path):
        listener = _Listener(reply=None)
        try:
            start = time.monotonic()
            with pytest.raises(TraxError, match=r"silent for 1 s while handling 'transcribe'.*model_server.log"):
                request("transcribe", {}, timeout=1.0)
            assert time.monotonic() - start < 3
            assert listener.connections  # it was accepted, read, and left unanswered
        finally:
            listener.close()


def test_a_malformed_reply_is_a_clear_error(tmp_path: Path) -> None:
    with in_dir(tmp_path):
        for reply in (b"HTTP/1.1 400 Bad Request\r\n\r\n", b'["not", "an", "object"]\n',
                      json.dumps({"protocol": PROTOCOL_VERSION, "ok": False}).encode() + b"\n"):
            listener = _Listener(reply=reply)
            try:
                with pytest.raises(TraxError, match="malformed reply to 'ping'") as excinfo:
                    request("ping", timeout=5.0)
                assert "\n" not in str(excinfo.value)
            finally:
                listener.close()


def _server_log(workdir: Path) -> str:
    return (workdir / "logs" / "model_server.log").read_text(encoding="utf-8")


def _open_request(method: str, params: dict) -> tuple[socket.socket, object]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(socket_path())
    conn.sendall(json.dumps({"protocol": PROTOCOL_VERSION, "method": method, "params": params,
                             "heartbeat_s": 0.2}).encode() + b"\n")
    return conn, conn.makefile("rb")


def test_a_client_that_goes_away_cancels_its_work(one_worker: Path) -> None:
    """A running decode stops at its next progress report; a queued one never starts."""
    with in_dir(one_worker):
        before = request("stats")["outcomes"].get("cancelled", 0)
        params = {"wav_path": "long.wav", "sample_id": "long", "settings": FAST}
        running, running_stream = _open_request("transcribe", params)
        first = json.loads(running_stream.readline())
        assert first["heartbeat"]["state"] in ("queued", "working")  # acknowledged at once
        while "progress" not in (message := json.loads(running_stream.readline())):
            assert "heartbeat" in message
        queued, queued_stream = _open_request("transcribe", {**params, "sample_id": "queued"})
        assert json.loads(queued_stream.readline())["heartbeat"]["state"] == "queued"
        for closing in (queued_stream, queued, running_stream, running):  # hang up, mid-decode of ~75 s
            closing.close()
        assert _wait_for(lambda: request("stats")["outcomes"].get("cancelled", 0) == before + 2, 30)
        stats = request("stats")
        assert stats["queued"] == 0 and stats["outcomes"].get("internal", 0) == 0
        log = _server_log(one_worker)
        assert "transcribe long cancelled: the client went away (working" in log
        assert "transcribe queued cancelled: the client went away (queued" in log
        assert "transcribe long stopped after its cancel" in log
        # The worker slot is free again: a new request runs.
        assert "Printing" in _transcribe("short.wav", timeout=30)["segments"][0]["text"]


def test_a_request_cancelled_as_its_slot_comes_free_gives_the_slot_back(tmp_path: Path) -> None:
    """The race behind a CI run that hung: a queued client hangs up just as the worker slot comes
    free; the request takes the slot, sees the cancel, and must hand the slot back (else every
    later request waits for it forever, heartbeating)."""
    from trax.runtime.server import Call, Cancelled, ModelServer

    server = ModelServer(str(tmp_path / "server.sock"), tmp_path, ServerSettings(workers=1))
    try:
        call = Call(1)
        call.cancelled.set()
        server._local.call = call
        with pytest.raises(Cancelled), server.work_slot():
            pytest.fail("a cancelled request must not start")
        assert server.work_slots.acquire(blocking=False), "the worker slot leaked"
        assert server.queued == 0
    finally:
        server.server_close()


def test_an_internal_error_is_one_line_with_code_and_log_pointer(one_worker: Path, capfd) -> None:
    """A fast transcript without its keys makes refine fail inside the server (a KeyError, as in
    the issue): the console gets one line naming the code and the server log, both logs the
    traceback."""
    (one_worker / "broken.json").write_text("{}", encoding="utf-8")
    params = {"wav_path": "short.wav", "fast_path": "broken.json", "output_path": "refined.json",
              "settings": CONFIG["refine"], "domains": {}, "sample_domain": None}
    with in_dir(one_worker):
        with pytest.raises(InternalServerError) as excinfo:
            request("refine", params, timeout=30)
        assert excinfo.value.code == "internal"
        with pytest.raises(JobFailed):
            run_job("logs/refine/broken.log", "trax.runtime.client:call_server", method="refine", params=params,
                    settings=ServerSettings(workers=1))
    message = str(excinfo.value)
    assert "\n" not in message and "KeyError" in message and "code internal" in message
    assert "logs/model_server.log" in message and "not your input" in message
    console = [line for line in capfd.readouterr().err.splitlines() if line.startswith("trax: error:")]
    assert len(console) == 1 and "trax: error: model server: internal error (code internal" in console[0]
    assert "logs/model_server.log" in console[0]
    job_log = (one_worker / "logs" / "refine" / "broken.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in job_log and "KeyError" in job_log
    assert "failed with an internal error" in _server_log(one_worker)
    assert "Traceback (most recent call last)" in _server_log(one_worker)


def test_an_older_protocol_server_is_stopped_and_replaced(tmp_path: Path) -> None:
    """A real server of this code, speaking protocol 1 (what trax before the change spoke)."""
    old_server = ("import sys, trax.runtime.protocol as p; p.PROTOCOL_VERSION = 1; "
                  "from trax.runtime.server import main; main(sys.argv[1:])")
    (tmp_path / "logs").mkdir()
    with open(tmp_path / "logs" / "model_server.log", "a") as log, in_dir(tmp_path):
        old = subprocess.Popen([sys.executable, "-c", old_server, "--workdir", str(tmp_path)], stdout=log,
                               stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        try:
            assert _wait_for(lambda: os.path.exists(socket_path()), 30)
            with pytest.raises(ServerError) as excinfo:
                request("ping")
            assert excinfo.value.code == "unsupported_protocol" and excinfo.value.protocol == 1
            ensure_server(ServerSettings(idle_timeout_s=30))
            assert old.wait(timeout=10) == 0
            assert request("ping")["protocol"] == PROTOCOL_VERSION
            request("shutdown")
        finally:
            if old.poll() is None:
                old.kill()


class _SlowClock:
    """The manager's use counter, slowed down: a cache hit reads it between finding the model and
    handing it out, so this widens the window in which an unload could slip in (the issue's
    reproduction; before the fix 531 of 1600 gets returned None this way)."""

    def __init__(self) -> None:
        self.count = itertools.count(1)

    def __next__(self) -> int:
        time.sleep(0.0005)
        return next(self.count)


def test_concurrent_get_and_unload_never_hand_out_nothing() -> None:
    """Two models over a budget that fits one: every load unloads the other, while 8 threads get
    both in a tight loop and one more unloads explicitly."""
    manager = ModelManager(max_memory_mb=150)
    manager._clock = _SlowClock()
    keys = [ModelKey("whisper", name, "int8", "cpu") for name in ("a", "b")]
    failures: list[str] = []
    stop = threading.Event()

    def worker(number: int) -> None:
        for step in range(200):
            key = keys[(number + step) % 2]
            model = manager.get(key, lambda key=key: {"name": key.model}, size_mb=100)
            if model is None or model["name"] != key.model:
                failures.append(f"{key.model}: {model!r}")

    def unloader() -> None:
        while not stop.is_set():
            manager.unload(keys[0])
            time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    extra = threading.Thread(target=unloader)
    extra.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    extra.join()
    stats = {s["key"]["model"]: s for s in manager.stats()}
    assert failures == []
    assert stats["a"]["loads"] > 1 and stats["b"]["loads"] > 1  # the unloads really happened
    assert sum(s["loads"] + s["hits"] for s in stats.values()) == 8 * 200


def test_models_are_sized_by_their_weights(tmp_path: Path) -> None:
    weights = tmp_path / "model"
    weights.mkdir()
    (weights / "model.bin").write_bytes(b"\0" * (3 * 2**20))
    from trax.runtime.server import weights_mb

    assert weights_mb(weights) == pytest.approx(3.0)
    assert weights_mb(tmp_path / "absent") is None
    manager = ModelManager(max_memory_mb=10)
    manager.get(ModelKey("whisper", str(weights), "int8", "cpu"), lambda: bytearray(50 * 2**20),
                size_mb=weights_mb(weights))
    (entry,) = manager.stats()
    assert entry["resident_mb"] == pytest.approx(3.0) and entry["weights_mb"] == pytest.approx(3.0)
    assert entry["load_delta_mb"] > 10  # measured too, for the stats


def test_the_server_decodes_with_the_rules_thread_count(one_worker: Path) -> None:
    with in_dir(one_worker):
        _transcribe("short.wav", timeout=30)
        whisper = [m for m in request("stats")["models"] if m["key"]["kind"] == "whisper"]
    assert {m["key"]["threads"] for m in whisper} == {FAST["cpu_threads"]}


def test_a_200kb_glossary_runs_in_an_isolated_job(sample_fast_transcript: Path, tmp_path: Path) -> None:
    glossary = {f"term{n:05d}": [f"variant{n:05d}a", f"variant{n:05d}b"] for n in range(5000)}
    domains = {"big": {"name": "big", "description": "a large glossary", "keywords": ["printing"], "hotwords": [],
                       "initial_prompt": None, "glossary": glossary, "adapter": None}}
    assert len(json.dumps(domains)) > 200_000
    wav = BENCH / "pyannote-audio" / "sample" / "sample.wav"
    with in_dir(tmp_path):
        run_isolated("logs/refine/sample.log", "trax.asr.refine:refine_file", wav_path=str(wav),
                     fast_path=str(sample_fast_transcript), output_path="refined.json", settings=CONFIG["refine"],
                     domains=domains, sample_domain="big")
        refined = read_json(tmp_path / "refined.json")
    assert refined["domain"]["name"] == "big"
    assert refined["text"] == read_json(sample_fast_transcript)["text"]


def test_ctrl_c_hangs_up_the_requests_this_process_waits_on(one_worker: Path) -> None:
    """Stopped Snakemake waits for its thread jobs; SIGINT makes each waiting request hang up, so
    the server cancels the decode instead of finishing it for nobody."""
    from trax.runtime import client

    interrupts: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupts.append(signum))  # stands in for Snakemake's
    outcome: list[BaseException | dict] = []
    try:
        client.hang_up_on_interrupt()
        with in_dir(one_worker):
            before = request("stats")["outcomes"].get("cancelled", 0)
            arrivals = _arrivals(one_worker)
            waiting = threading.Thread(target=lambda: outcome.append(_capture(lambda: _transcribe("long.wav", 30))))
            waiting.start()
            assert _wait_for(lambda: _arrivals(one_worker) > arrivals, 30)
            os.kill(os.getpid(), signal.SIGINT)
            waiting.join(timeout=10)
            assert not waiting.is_alive()
            client._HANG_UP.clear()  # (every later request of a stopping process hangs up too)
            assert _wait_for(lambda: request("stats")["outcomes"].get("cancelled", 0) == before + 1, 30)
    finally:
        signal.signal(signal.SIGINT, previous)
        client._HANG_UP.clear()
    assert interrupts == [signal.SIGINT]  # the previous handler still ran
    assert isinstance(outcome[0], TraxError) and "abandoned: the workflow is being stopped" in str(outcome[0])


def _capture(call):
    try:
        return call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc


def _arrivals(workdir: Path) -> int:
    """How many times the server has logged the long transcription's arrival."""
    return _server_log(workdir).count("transcribe long waiting for a worker")
