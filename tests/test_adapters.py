"""Domain adapters: dataset guard rails, and a tiny adapter trained, merged and used by the workflow."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import BENCH, JFK, REPO, ffmpeg
from trax.adapters import load_clip, read_dataset, split_dataset
from trax.errors import TraxError
from trax.evaluation import normalize_text
from trax.jsonio import read_json
from trax.schemas import validate

LJ = BENCH / "coqui-tts-ljspeech" / "wavs"


def _tsv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _lj(n: int) -> str:
    return f"{LJ / f'LJ001-{n:04d}.wav'}\t{(LJ / f'LJ001-{n:04d}.txt').read_text().strip()}"


@pytest.mark.parametrize(
    ("header", "rows", "reason"),
    [
        ("audio\ttext", [], "dataset has no rows"),
        ("audio\ttranscript", ["a.wav\thello"], "missing column 'text'"),
        ("path\tsentence", ["a.wav\thello"], "missing column 'audio' and 'text'"),
        ("audio\ttext", ["nowhere.wav\thello"], "row 2: audio file not found: nowhere.wav"),
        ("audio\ttext", [f"{JFK}\t  "], "row 2: empty text"),
        ("audio\ttext\tstart\tend", [f"{JFK}\thello\t5\t2"], "row 2: end 2 s is not after start 5 s"),
        ("audio\ttext\tstart", [f"{JFK}\thello\tsoon"], "row 2: start 'soon' is not a number of seconds"),
        ("audio\ttext\tsplit", [f"{JFK}\thello\ttest"], "row 2: split 'test' must be one of train, validation"),
    ],
)
def test_bad_datasets_are_refused_with_one_line(tmp_path, header, rows, reason) -> None:
    dataset = _tsv(tmp_path / "data.tsv", header, *rows)
    with pytest.raises(TraxError) as error:
        read_dataset(dataset)
    assert str(error.value) == f"{dataset}: {reason}" or str(error.value).startswith(f"{dataset}: {reason}")
    assert "\n" not in str(error.value)


def test_clip_limits_and_split(tmp_path) -> None:
    long_audio = tmp_path / "long.wav"
    ffmpeg("-stream_loop", "2", "-i", str(JFK), "-ac", "1", str(long_audio))  # 33 s
    dataset = _tsv(tmp_path / "data.tsv", "audio\ttext\tstart\tend",
                   f"{long_audio}\tthree times", f"{long_audio}\tcut\t0.3\t2.5", f"{long_audio}\tlate\t40\t")
    clips = read_dataset(dataset)
    with pytest.raises(TraxError, match=r"row 2: clip long.wav is 33.0 s, longer than one 30 s Whisper window"):
        load_clip(dataset, clips[0])
    assert len(load_clip(dataset, clips[1])) == round(2.2 * 16000)
    with pytest.raises(TraxError, match=r"row 4: start 40 s is beyond the audio's end \(33.0\d s\)"):
        load_clip(dataset, clips[2])

    train, validation = split_dataset(dataset, clips, 0.25)
    assert [c.row for c in train] == [2, 3] and [c.row for c in validation] == [4]
    with pytest.raises(TraxError, match="needs at least 2 rows"):
        split_dataset(dataset, clips[:1], 0.25)
    assert split_dataset(dataset, clips[:1], 0.0) == (clips[:1], [])


def _adapter_config(dataset: Path, **overrides) -> dict:
    # Kept tiny for CI: decoder-only LoRA (encoder output computed once), one clip, two steps.
    settings = {"train_encoder": False, "epochs": 2, "batch_size": 1, "learning_rate": 0.001,
                "datasets": {"lj": str(dataset)}}
    return {**settings, **overrides}


def test_workflow_trains_builds_and_decodes_with_an_adapter(make_workflow, tmp_path) -> None:
    dataset = _tsv(tmp_path / "lj.tsv", "audio\ttext\tsplit", _lj(2) + "\ttrain", _lj(8) + "\tvalidation")
    config = {"adapters": _adapter_config(dataset), "server": {"enabled": False}}
    workflow = make_workflow(str(REPO / "resources" / "example" / "status_update.ogg"), **config)
    run = workflow.run("resources/adapters/lj/ct2")
    root = workflow.workdir / "resources" / "adapters" / "lj"
    assert sorted(p.name for p in (root / "lora").iterdir() if not p.name.startswith(".")) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "trax-adapter.json"]
    metrics = read_json(root / "metrics.json")
    validate(metrics, "adapter_metrics")
    assert metrics["training"]["steps"] == 2 and len(metrics["training"]["loss"]) == 2
    assert metrics["dataset"] == {"path": str(dataset), "rows": 2, "train_rows": [2], "validation_rows": [3]}
    assert metrics["validation"]["after"]["reference_words"] == 4  # "has never been surpassed."
    log = (workflow.workdir / "logs" / "train_adapter" / "lj.log").read_text()
    assert re.search(r"step 2/2 \(epoch 2\) loss \d+\.\d{4}", log)
    assert (root / "ct2" / "model.bin").is_file() and (root / "ct2" / "tokenizer.json").is_file()

    # Nothing changed: nothing reruns. Forced, training and merging give the same bytes (deterministic).
    assert "Nothing to be done" in workflow.run("-n", "resources/adapters/lj/ct2").output
    outputs = [root / "metrics.json", root / "lora" / "adapter_model.safetensors", root / "ct2" / "model.bin"]
    first = [p.read_bytes() for p in outputs]
    workflow.run("resources/adapters/lj/ct2", "--forcerun", "train_adapter")
    assert [p.read_bytes() for p in outputs] == first

    # The adapted model decodes another clip (here as a local model directory for the fast pass).
    workflow.write_config({"inputs": str(JFK), **config, "transcribe_fast": {"model": str(root / "ct2")}})
    workflow.run()
    transcript = read_json(workflow.result("jfk", "transcript.fast.json"))
    assert normalize_text(transcript["text"]) == normalize_text((JFK.parent / "jfk.txt").read_text())
    assert transcript["provenance"]["models"]["asr"]["id"] == "local:ct2"

    # A hyperparameter change retrains and rebuilds; touching an audio file of the dataset too.
    workflow.write_config({"inputs": str(JFK), **config,
                           "adapters": _adapter_config(dataset, learning_rate=0.0005)})
    planned = workflow.run("-n", "resources/adapters/lj/ct2").output
    assert re.search(r"^train_adapter\s+1$", planned, re.M) and re.search(r"^build_adapted_model\s+1$", planned, re.M)


def test_bad_dataset_fails_the_job_with_one_line(make_workflow, tmp_path) -> None:
    dataset = _tsv(tmp_path / "bad.tsv", "audio\ttext", f"{tmp_path / 'gone.wav'}\thello", _lj(2))
    workflow = make_workflow(str(JFK), adapters={"datasets": {"bad": str(dataset)}}, server={"enabled": False})
    run = workflow.run("resources/adapters/bad/ct2", check=False)
    assert run.returncode != 0
    assert f"trax: error: {dataset}: row 2: audio file not found: {tmp_path / 'gone.wav'}" in run.output
    assert not (workflow.workdir / "resources" / "adapters" / "bad" / "lora").exists()
    assert not (workflow.workdir / "resources" / "adapters" / "bad" / "metrics.json").exists()
