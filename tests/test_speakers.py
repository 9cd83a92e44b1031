"""Speaker profiles on real voices: enrollment, identification in merged.json and every export,
linking across recordings in results/speakers.tsv, reruns, bad tables, model mismatch.

One workflow run is shared by the module: two recordings built from benchdata speech —
``linda_jfk`` (LJ Speech's reader, then JFK, alternating) and ``columbia_jfk`` (the columbia
speaker and JFK) — with Linda and Columbia enrolled from clips that occur in neither recording.
"""

from __future__ import annotations

import csv
import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BENCH, REPO, Workflow, jobs_planned, reruns
from trax.io.annotation import Turn
from trax.errors import TraxError
from trax.io.jsonio import read_json
from trax.io.schemas import validate
from trax.diarization.speakers import ProfileStore, SpeakerOptions, check_same_model, read_enrollment

LJ = BENCH / "coqui-tts-ljspeech" / "wavs"
JFK = BENCH / "faster-whisper" / "jfk.flac"
COLUMBIA = BENCH / "const-me-whisper" / "columbia.16k.wav"
RATE = 16000
#: (source, start, end, person) parts of each recording, 0.5 s of silence between parts.
RECORDINGS = {
    "linda_jfk": [(LJ / "LJ001-0004.wav", None, None, "Linda"), (JFK, 0.0, 5.5, "jfk"),
                  (LJ / "LJ001-0005.wav", None, None, "Linda"), (JFK, 5.5, 11.0, "jfk"),
                  (LJ / "LJ001-0006.wav", None, None, "Linda")],
    "columbia_jfk": [(COLUMBIA, 60.0, 70.0, "Columbia"), (JFK, 0.0, 5.5, "jfk"),
                     (COLUMBIA, 80.0, 90.0, "Columbia"), (JFK, 5.5, 11.0, "jfk")],
}
GAP_S = 0.5


def _load(path: Path, start: float | None, end: float | None, workdir: Path) -> np.ndarray:
    from trax.io.media import decode_to_wav, load_wav

    wav = workdir / f"part-{abs(hash((str(path), start, end)))}.wav"
    decode_to_wav(path, wav)
    audio = load_wav(wav)
    return audio[int((start or 0) * RATE): len(audio) if end is None else int(end * RATE)]


def build_recording(parts, destination: Path, workdir: Path) -> list[tuple[float, float, str]]:
    """Write the parts back to back as 16 kHz PCM; return who speaks when."""
    pieces, spans, clock = [], [], 0.0
    for path, start, end, person in parts:
        audio = _load(path, start, end, workdir)
        pieces += [audio, np.zeros(int(GAP_S * RATE), dtype=np.float32)]
        spans.append((clock, clock + len(audio) / RATE, person))
        clock += len(audio) / RATE + GAP_S
    samples = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2")
    with wave.open(str(destination), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes(samples.tobytes())
    return spans


def write_table(path: Path, rows: list[tuple[str, Path | str, str, str]]) -> Path:
    """An enrollment TSV whose audio paths are relative to it (as users write them)."""
    lines = ["name\taudio\tstart\tend"]
    for name, audio, start, end in rows:
        given = os.path.relpath(audio, path.parent) if isinstance(audio, Path) else audio
        lines.append(f"{name}\t{given}\t{start}\t{end}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ENROLLMENT = [("Linda", LJ / "LJ001-0001.wav", "", ""), ("Linda", LJ / "LJ001-0002.wav", "", ""),
              ("Linda", LJ / "LJ001-0003.wav", "", ""), ("Columbia", COLUMBIA, "0", "20")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shared workflow run (default settings, server on) and who speaks when in each recording."""
    root = tmp_path_factory.mktemp("speakers")
    inputs = root / "inputs"
    inputs.mkdir()
    spans = {name: build_recording(parts, inputs / f"{name}.wav", root) for name, parts in RECORDINGS.items()}
    (root / "people").mkdir()
    table = write_table(root / "people" / "enroll.tsv", ENROLLMENT)
    workdir = root / "wf"
    workdir.mkdir()
    workflow = Workflow(workdir, {"inputs": str(inputs), "speakers": {"profiles": str(table)}})
    workflow.run()
    yield workflow, spans, table
    workflow.stop_server()


def _time_by_person(workflow: Workflow, recording: str, spans) -> dict[str, dict[str, float]]:
    """Person -> {merged.json speaker id: seconds of that person's span the diarization gives it}."""
    from trax.io.annotation import rttm_turns

    turns = rttm_turns(workflow.result(recording, "diarization.rttm"))
    result: dict[str, dict[str, float]] = {}
    for start, end, person in spans:
        for turn in turns:
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > 0:  # diarization SPEAKER_00 is merge's SPEAKER_1 (both by first speech)
                speaker = f"SPEAKER_{int(turn.speaker.split('_')[1]) + 1}"
                result.setdefault(person, {}).setdefault(speaker, 0.0)
                result[person][speaker] += overlap
    return result


def test_enrolled_voices_are_named_everywhere_and_jfk_stays_unnamed(run) -> None:
    workflow, spans, _ = run
    store = read_json(workflow.workdir / "results" / "speakers" / "profiles.json")
    validate(store, "profiles")
    assert [p["name"] for p in store["profiles"]] == ["Columbia", "Linda"]
    assert all(len(c["sha256"]) == 64 for p in store["profiles"] for c in p["clips"])
    assert store["embedding_model"]["id"].startswith("resemblyzer")
    for recording, enrolled in (("linda_jfk", "Linda"), ("columbia_jfk", "Columbia")):
        merged = read_json(workflow.result(recording, "merged.json"))
        validate(merged, "merged")
        names = {s["id"]: s["name"] for s in merged["speakers"]}
        time = _time_by_person(workflow, recording, spans[recording])
        named = sum(t for speaker, t in time[enrolled].items() if names[speaker] == enrolled)
        assert named / sum(time[enrolled].values()) >= 0.9, (recording, time, names)
        unnamed = sum(t for speaker, t in time["jfk"].items() if names[speaker] is None)
        assert unnamed / sum(time["jfk"].values()) >= 0.9, (recording, time, names)
        entry = next(s for s in merged["speakers"] if s["name"] == enrolled)
        assert entry["identification"]["decision"] == "named"
        assert entry["identification"]["score"] >= SpeakerOptions().threshold
        assert entry["global_id"] == f"profile:{enrolled}"
        jfk = [s for s in merged["speakers"] if s["name"] is None and s["identification"]]
        assert jfk and all(s["identification"]["decision"] == "unknown" and s["global_id"] is None for s in jfk)
        for name in ("transcript.srt", "transcript.vtt", "transcript.txt", "transcript.md", "enhanced.md"):
            assert enrolled in workflow.result(recording, name).read_text(encoding="utf-8"), name
        assert f"<v {enrolled}>" in workflow.result(recording, "transcript.vtt").read_text(encoding="utf-8")
        assert enrolled in workflow.result(recording, "report/preview.html").read_text(encoding="utf-8")


def test_shared_voice_gets_one_global_id(run) -> None:
    workflow, spans, _ = run
    with open(workflow.workdir / "results" / "speakers.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert {r["recording"] for r in rows} == set(RECORDINGS)
    by_person: dict[str, set[str]] = {}
    for recording in RECORDINGS:
        for person, seconds in _time_by_person(workflow, recording, spans[recording]).items():
            main = max(seconds, key=seconds.get)  # the speaker holding most of this person's time
            row = next(r for r in rows if r["recording"] == recording and r["speaker"] == main)
            by_person.setdefault(person, set()).add(row["global_id"])
    assert by_person["jfk"] and len(by_person["jfk"]) == 1, by_person  # JFK in both recordings: one id
    assert by_person["Linda"] == {"profile:Linda"} and by_person["Columbia"] == {"profile:Columbia"}
    assert not by_person["jfk"] & {"profile:Linda", "profile:Columbia"}


def test_profile_changes_rerun_only_what_depends_on_them(run) -> None:
    workflow, _, table = run
    config = yaml.safe_load(workflow.config_path.read_text())
    assert "Nothing to be done" in workflow.run("-n").output
    # A new clip for a person: the store and everything downstream of identification, nothing else.
    write_table(table, ENROLLMENT + [("Columbia", COLUMBIA, "20", "30")])
    assert reruns(workflow.run("-n")) == {"enroll_speakers", "merge", "export", "enhance", "link_speakers"}
    write_table(table, ENROLLMENT)
    workflow.run()  # back to the original table (rebuilds the store)
    # The naming threshold reruns merge onwards and linking, never enrollment; the link threshold
    # only linking.
    workflow.write_config({**config, "speakers": {**config["speakers"], "threshold": 0.9}})
    assert reruns(workflow.run("-n")) == {"merge", "export", "enhance", "link_speakers"}
    workflow.write_config({**config, "speakers": {**config["speakers"], "link_threshold": 0.7}})
    assert reruns(workflow.run("-n")) == {"link_speakers"}
    # A new recording: its own jobs and the linking table, no other recording's merge.
    extra = workflow.workdir.parent / "inputs" / "extra.wav"
    shutil.copy(workflow.workdir.parent / "inputs" / "linda_jfk.wav", extra)
    try:
        planned = jobs_planned(workflow.run("-n"))
    finally:
        extra.unlink()
    assert planned["merge"] == 1 and planned["diarize"] == 1 and planned["link_speakers"] == 1
    assert "enroll_speakers" not in planned
    # A clustering setting reruns diarization, not enrollment.
    workflow.write_config({**config, "diarize": {"embedded": {"switch_penalty": 5.0}}})
    planned = reruns(workflow.run("-n"))
    assert "diarize" in planned and "enroll_speakers" not in planned
    workflow.write_config(config)


def test_reruns_are_byte_identical(run) -> None:
    workflow, _, _ = run
    outputs = [workflow.workdir / "results" / "speakers" / "profiles.json", workflow.workdir / "results" / "speakers.tsv"]
    outputs += [workflow.result(r, n) for r in RECORDINGS for n in ("diarization.json", "merged.json", "transcript.vtt")]
    before = {p: p.read_bytes() for p in outputs}
    workflow.run("--forcerun", "enroll_speakers", "diarize")
    assert {p: p.read_bytes() for p in outputs} == before


def test_bad_enrollment_rows_fail_with_one_line(run, tmp_path) -> None:
    table = tmp_path / "bad.tsv"
    cases = [
        ([("Linda", LJ / "LJ001-0001.wav", "", ""), ("", LJ / "LJ001-0002.wav", "", "")], r"row 3: name: .*"),
        ([("Linda", LJ / "LJ001-0001.wav", "soon", "")], r"row 2: start: 'soon' does not match"),
        ([("Linda", LJ / "LJ001-0001.wav", "4", "2")], r"row 2: end 2 s is not after start 4 s"),
        ([("Linda", "missing.wav", "", "")], r"row 2: audio file not found: missing.wav"),
    ]
    for rows, message in cases:
        write_table(table, rows)
        with pytest.raises(TraxError, match=message) as caught:
            read_enrollment(table)
        assert "\n" not in str(caught.value) and str(caught.value).startswith(str(table))
    table.write_text("person\taudio\nLinda\tx.wav\n", encoding="utf-8")
    with pytest.raises(TraxError, match="missing column 'name'"):
        read_enrollment(table)
    # In a run: the enrollment job fails with that one line, naming the table and the row.
    workflow, _, _ = run
    write_table(table, [("Linda", LJ / "LJ001-0001.wav", "4", "2")])
    (tmp_path / "wf").mkdir()
    other = Workflow(tmp_path / "wf", {"inputs": str(workflow.workdir.parent / "inputs"),
                                       "speakers": {"profiles": str(table)}})
    failed = other.run("results/speakers/profiles.json", check=False)
    assert failed.returncode != 0
    lines = [line for line in failed.output.splitlines() if line.startswith("trax: error:")]
    assert lines and lines[0] == f"trax: error: {table}: row 2: end 2 s is not after start 4 s"
    assert not (other.workdir / "results" / "speakers" / "profiles.json").exists()


def test_the_model_server_enrolls_clips_inside_the_workflow_directory_as_a_job_process_does(tmp_path) -> None:
    """``enroll_speakers`` goes through the server when the table and its clips lie inside the
    workflow directory (the example's do): the same store, byte for byte, as the job's own process
    builds; a clip outside it is refused, naming the row."""
    from conftest import in_dir
    from trax.diarization.pipeline import rule_settings
    from trax.diarization.speakers import enroll_file
    from trax.runtime.client import ServerError, ensure_server, request, server_remote
    from trax.runtime.protocol import ServerSettings

    (tmp_path / "people").mkdir()
    for clip in ("LJ001-0001.wav", "LJ001-0002.wav"):
        shutil.copy(LJ / clip, tmp_path / "people" / clip)
    table = write_table(tmp_path / "people" / "enroll.tsv", [("Linda", tmp_path / "people" / "LJ001-0001.wav", "", ""),
                                                              ("Linda", tmp_path / "people" / "LJ001-0002.wav", "", "")])
    settings = rule_settings(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["diarize"], {})
    server = ServerSettings(idle_timeout_s=60)
    with in_dir(tmp_path):
        ensure_server(server)
        try:
            enroll_file("people/enroll.tsv", "served.json", settings, {}, remote=server_remote(server))
            enroll_file("people/enroll.tsv", "own.json", settings, {})
            assert (tmp_path / "served.json").read_bytes() == (tmp_path / "own.json").read_bytes()
            assert request("stats")["requests"]["enroll"] == 1
            write_table(table, [("Linda", tmp_path / "people" / "LJ001-0001.wav", "", ""), ("Linda", LJ / "LJ001-0003.wav", "", "")])
            with pytest.raises(ServerError, match="row 3 audio .* outside the workflow directory") as refused:
                enroll_file("people/enroll.tsv", "refused.json", settings, {}, remote=server_remote(server))
            assert refused.value.code == "forbidden_path" and not (tmp_path / "refused.json").exists()
        finally:
            request("shutdown")
    validate(read_json(tmp_path / "own.json"), "profiles")


def test_a_store_is_never_compared_with_another_models_embeddings(run) -> None:
    workflow, _, _ = run
    store_path = workflow.workdir / "results" / "speakers" / "profiles.json"
    store = ProfileStore.read(store_path)
    diarization = read_json(workflow.result("linda_jfk", "diarization.json"))
    check_same_model(store, diarization["embedding_model"], store_path, "linda_jfk")  # same model: fine
    other = {"id": "pyannote local:pipeline embedding", "weights_sha256": "0" * 64}
    with pytest.raises(TraxError, match="profiles were made with resemblyzer.* diarized with pyannote"):
        check_same_model(store, other, store_path, "linda_jfk")


def test_pyannote_backend_enrolls_with_its_own_embedding_model(run, tmp_path) -> None:
    """The pyannote backend (random local weights, offline) enrolls with its pipeline's embedding
    model, keeps per-speaker embeddings in diarization.json, and its store refuses resemblyzer's."""
    from pyannote_models import build_pipeline

    from trax.diarization.pipeline import DiarizeOptions, diarize_file, load_models, rule_settings
    from trax.diarization.speakers import build_store

    workflow, _, _ = run
    table = write_table(tmp_path / "short.tsv", [("Linda", LJ / "LJ001-0002.wav", "", ""),
                                                  ("Columbia", COLUMBIA, "0", "3")])
    clip = tmp_path / "clip.wav"
    with wave.open(str(workflow.result("linda_jfk", "audio.wav"))) as source, wave.open(str(clip), "wb") as out:
        out.setparams(source.getparams())
        out.writeframes(source.readframes(8 * RATE))  # Linda, then JFK
    pipeline = build_pipeline(tmp_path / "pipeline")
    defaults = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))["diarize"]
    settings = rule_settings({**defaults, "backend": "pyannote", "pyannote": {"model": str(pipeline)}}, {})
    store = build_store(table, settings, load_models(DiarizeOptions.from_config(settings)), SpeakerOptions())
    assert store.backend == "pyannote" and store.embedding_model["id"] == "pyannote local:pipeline embedding"
    assert {p.name for p in store.profiles} == {"Columbia", "Linda"}
    data = diarize_file(str(clip), str(tmp_path / "d.rttm"), str(tmp_path / "d.json"), "clip", settings)
    assert data["embedding_model"] == store.embedding_model
    # Random weights may give a speaker no usable centroid (NaN): it is left out, never written.
    assert all(len(s["embedding"]) == 256 for s in data["speakers"] if "embedding" in s)
    assert all(len(p.embedding) == 256 for p in store.profiles)
    resemblyzer = read_json(workflow.result("linda_jfk", "diarization.json"))["embedding_model"]
    with pytest.raises(TraxError, match="profiles were made with pyannote"):
        check_same_model(store, resemblyzer, "store", "linda_jfk")


def test_a_name_needs_a_lead_over_the_runner_up_profile() -> None:
    """``ambiguous_margin`` counts the runner-up even below the threshold: voices recorded in one
    room score high against every profile made there (bench/speakers.py: an unenrolled AMI voice
    at 0.85 against one AMI profile and 0.80 against another)."""
    from trax.diarization.speakers import AMBIGUOUS, NAMED, UNKNOWN, Profile, identify

    store = ProfileStore("embedded", {"id": "m", "weights_sha256": "0"},
                         [Profile("A", [1.0, 0.0, 0.0], 1.0, []), Profile("B", [0.8, 0.6, 0.0], 1.0, [])])
    options = SpeakerOptions(threshold=0.845, ambiguous_margin=0.07)

    assert identify([1.0, 0.0, 0.0], store, options).decision == NAMED  # A 1.0, B 0.8
    close = identify([0.86, 0.22, np.sqrt(1 - 0.86**2 - 0.22**2)], store, options)  # A 0.86, B 0.82
    assert (close.decision, close.profile, close.name) == (AMBIGUOUS, "A", None)
    assert identify([0.8, 0.0, 0.6], store, options).decision == UNKNOWN  # A 0.8


def test_one_turn_type_and_one_rttm_reader() -> None:
    import trax.report.figures
    import trax.transcript.merge
    from trax.io import annotation

    assert trax.transcript.merge.Turn is annotation.Turn is trax.report.figures.Turn
    assert not hasattr(trax.transcript.merge, "read_rttm")
    assert Turn(0.0, 1.0, "A").speaker == "A"


def test_bundled_example_names_alice_and_bob_and_not_carol(example_workflow) -> None:
    """`make run`'s example: a three-voice dialogue, Alice and Bob enrolled (config/example.yaml;
    the run is shared with tests/test_review.py)."""
    workflow = example_workflow
    with open(workflow.workdir / "results" / "speakers.tsv", encoding="utf-8", newline="") as handle:
        rows = {(r["recording"], r["speaker"]): r for r in csv.DictReader(handle, delimiter="\t")}
    dialogue = [rows[key] for key in sorted(rows) if key[0] == "welcome_meeting"]
    assert [r["name"] for r in dialogue] == ["Alice", "Bob", ""]
    assert dialogue[2]["decision"] == "unknown" and dialogue[2]["global_id"].startswith("voice:")
    assert rows[("status_update", "SPEAKER_1")]["global_id"] == "profile:Bob"
    text = workflow.result("welcome_meeting", "transcript.txt").read_text(encoding="utf-8")
    assert "Alice (SPEAKER_1)" in text and "Bob (SPEAKER_2)" in text and "] SPEAKER_3\n" in text
