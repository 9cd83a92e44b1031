"""The model server: protocol errors, faults, isolation, and load-once caching."""

import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BENCH, in_dir
from trax.runtime.client import ServerError, ensure_server, request
from trax.errors import TraxError
from trax.io.jsonio import read_json
from trax.runtime.manager import ModelKey, ModelManager
from trax.runtime.protocol import PROTOCOL_VERSION, ServerSettings, make_runtime_dir, runtime_dir, socket_path
from trax.io.schemas import validate

LJ = sorted((BENCH / "coqui-tts-ljspeech" / "wavs").glob("LJ001-00*.wav"))


@pytest.fixture
def server_dir(tmp_path: Path):
    """A directory with a running model server (no model loaded)."""
    with in_dir(tmp_path):
        ensure_server(ServerSettings(idle_timeout_s=60))
        yield tmp_path
        request("shutdown")


def _raw(payload: bytes) -> dict:
    """The reply to one raw request line (heartbeats skipped)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(socket_path())
        conn.sendall(payload)
        stream = conn.makefile("rb")
        while "heartbeat" in (message := json.loads(stream.readline())):
            pass
        return message


def test_bad_requests_get_error_replies_and_server_keeps_serving(server_dir: Path) -> None:
    pid = request("ping")["pid"]
    pings = request("stats")["requests"]["ping"]
    assert _raw(b"{not json\n")["error"]["code"] == "bad_request"
    assert _raw(b'{"protocol": %d, "method": "explode"}\n' % PROTOCOL_VERSION)["error"]["code"] == "unknown_method"
    assert _raw(b'{"protocol": 99, "method": "ping"}\n')["error"]["code"] == "unsupported_protocol"
    assert _raw(b'["a list"]\n')["error"]["code"] == "bad_request"
    with pytest.raises(ServerError) as excinfo:
        request("transcribe", {"wav_path": "../../etc/passwd", "sample_id": "x", "settings": {}})
    assert excinfo.value.code == "forbidden_path"
    with pytest.raises(ServerError) as excinfo:
        request("transcribe", {"wav_path": "/etc/hostname", "sample_id": "x", "settings": {}})
    assert excinfo.value.code == "forbidden_path"
    assert request("ping")["pid"] == pid
    assert request("stats")["requests"]["ping"] == pings + 1


def test_socket_is_private_to_the_user(server_dir: Path) -> None:
    assert stat.S_IMODE(os.stat(socket_path()).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(runtime_dir()).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(runtime_dir().parent).st_mode) == 0o700
    assert not Path(".trax").exists()  # nothing in the (possibly shared) workflow directory


def test_runtime_dir_is_node_local_and_keyed_by_host_and_workdir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRAX_RUNTIME_DIR", str(tmp_path / "rt"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = runtime_dir(tmp_path / "a"), runtime_dir(tmp_path / "b")
    assert first != second and first.parent == second.parent == tmp_path / "rt" / f"trax-{os.getuid()}"
    assert first.name.startswith(socket.gethostname().split(".")[0] + "-")
    with in_dir(tmp_path / "a"):
        assert runtime_dir() == first  # the current directory by default
    # A directory someone else could write to is refused, not used.
    make_runtime_dir(first)
    os.chmod(first, 0o777)
    with pytest.raises(TraxError, match="mode 0700"):
        make_runtime_dir(first)
    monkeypatch.setenv("TRAX_RUNTIME_DIR", str(tmp_path / ("x" * 120)))
    with pytest.raises(TraxError, match="TRAX_RUNTIME_DIR"):
        make_runtime_dir(runtime_dir(tmp_path / "a"))


def test_stale_socket_from_a_crashed_server_does_not_block(tmp_path: Path) -> None:
    with in_dir(tmp_path):
        make_runtime_dir(runtime_dir())
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(socket_path())  # bound, never listening, left behind: like a SIGKILLed server
        stale.close()
        ensure_server(ServerSettings(idle_timeout_s=30))
        assert request("ping")["workdir"] == str(tmp_path.resolve())
        request("shutdown")


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with in_dir(tmp_path):
        make_runtime_dir(runtime_dir())
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(socket_path())
        listener.listen(1)  # accepts connections (kernel backlog), never replies
        start = time.monotonic()
        with pytest.raises(TraxError, match="silent for 1 s while handling 'ping'"):
            request("ping", timeout=1.0)
        assert time.monotonic() - start < 5
        listener.close()


def test_concurrent_first_requests_load_a_model_once() -> None:
    manager = ModelManager(max_memory_mb=10_000)
    key = ModelKey("whisper", "m", "int8", "cpu")
    calls = []

    def slow_loader():
        calls.append(1)
        time.sleep(0.3)
        return object()

    threads = [threading.Thread(target=manager.get, args=(key, slow_loader)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (entry,) = manager.stats()
    assert len(calls) == 1 and entry["loads"] == 1 and entry["hits"] == 7


def test_memory_budget_unloads_least_recently_used() -> None:
    manager = ModelManager(max_memory_mb=250)

    def loader():
        return bytearray(150 * 1024 * 1024)  # ~150 MB resident once touched (zero-filled pages count)

    keys = [ModelKey("whisper", name, "int8", "cpu") for name in ("a", "b", "c")]
    manager.get(keys[0], loader)
    manager.get(keys[1], loader)  # a + b > 250 MB: a (least recently used) goes
    stats = {s["key"]["model"]: s for s in manager.stats()}
    assert stats["a"]["resident"] is False and stats["b"]["resident"] is True
    manager.get(keys[0], loader)  # reloaded: counted
    stats = {s["key"]["model"]: s for s in manager.stats()}
    assert stats["a"]["loads"] == 2 and stats["b"]["resident"] is False


def _sheet(path: Path, sources: list[Path]) -> Path:
    path.write_text("id\tpath\n" + "".join(f"{s.stem}\t{s}\n" for s in sources))
    return path


def test_server_killed_mid_run_is_restarted_and_the_run_completes(make_workflow, tmp_path: Path) -> None:
    sources = LJ[:6]
    workflow = make_workflow(str(_sheet(tmp_path / "s.tsv", sources)), server={"workers": 1})
    command = workflow.command(cores=2)
    proc = subprocess.Popen(command, cwd=workflow.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            stats = workflow.server("stats")
        except Exception:
            time.sleep(0.1)
            continue
        if stats["requests"].get("transcribe", 0) >= 2:
            os.kill(stats["pid"], signal.SIGKILL)
            killed = stats["pid"]
        time.sleep(0.05)
    assert killed is not None, "the server never got transcribe requests"
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-4000:]
    assert workflow.server("ping")["pid"] != killed
    for source in sources:
        validate(read_json(workflow.result(source.stem, "transcript.fast.json")), "transcript")
    logs = " ".join(p.read_text() for p in (workflow.workdir / "logs" / "transcribe_fast").glob("*.log"))
    assert "model server died" in logs or "vanished" in logs
    assert [p for p in (workflow.workdir / "results").rglob(".*") if p.is_file()] == []


def test_two_runs_in_two_directories_use_their_own_servers(make_workflow, tmp_path: Path) -> None:
    first = make_workflow(str(_sheet(tmp_path / "a.tsv", LJ[:3])), name="a")
    second = make_workflow(str(_sheet(tmp_path / "b.tsv", LJ[3:5])), name="b")
    procs = [subprocess.Popen(w.command(cores=1), cwd=w.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for w in (first, second)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    pings = [w.server("ping") for w in (first, second)]
    assert pings[0]["pid"] != pings[1]["pid"]
    assert [p["workdir"] for p in pings] == [str(first.workdir.resolve()), str(second.workdir.resolve())]
    assert [w.server("stats")["requests"]["transcribe"] for w in (first, second)] == [3, 2]


def test_zero_job_and_dry_runs_do_not_start_the_server(make_workflow, tmp_path: Path) -> None:
    workflow = make_workflow(str(_sheet(tmp_path / "s.tsv", LJ[:1])))
    workflow.run("-n")
    sock = Path(socket_path(workflow.workdir))
    assert not sock.exists()
    workflow.run()
    workflow.stop_server()
    deadline = time.monotonic() + 10
    while sock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "Nothing to be done" in workflow.run().output
    assert not sock.exists()
