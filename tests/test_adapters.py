"""Domain adapters: dataset guard rails, and a tiny adapter trained, merged and used by the workflow."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import BENCH, JFK, REPO, ffmpeg
from trax.asr.adapters import load_clip, read_dataset, split_dataset
from trax.errors import TraxError
from trax.quality.evaluation import corpus_wer
from trax.io.jsonio import read_json
from trax.io.schemas import validate

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
    # Kept tiny for CI: tiny.en, decoder-only LoRA (encoder output computed once), one clip, two steps.
    settings = {"model": "embedded:tiny.en", "train_encoder": False, "epochs": 2, "batch_size": 1,
                "learning_rate": 0.001, "datasets": {"lj": str(dataset)}}
    return {**settings, **overrides}


def test_workflow_trains_builds_and_refines_with_an_adapter(make_workflow, tmp_path) -> None:
    dataset = _tsv(tmp_path / "lj.tsv", "audio\ttext\tsplit", _lj(2) + "\ttrain", _lj(8) + "\tvalidation")
    domains = tmp_path / "domains"
    shutil.copytree(REPO / "config" / "domains", domains)
    adapter = "resources/adapters/lj/ct2"
    (domains / "lj.yaml").write_text(yaml.safe_dump({"description": "LJ Speech readings", "keywords": ["printing"],
                                                     "adapter": adapter}))
    sheet = _tsv(tmp_path / "samples.tsv", "id\tpath\tdomain", f"lj13\t{LJ / 'LJ001-0013.wav'}\tlj")
    config = {"adapters": _adapter_config(dataset),
              # Refine with tiny.en (what the adapter is trained on): the adapted model decodes every
              # speech chunk a second time (combine mode).
              "refine": {"enabled": True, "model": "embedded:tiny.en", "domains_dir": str(domains)}}
    workflow = make_workflow(str(sheet), **config)
    target = "results/lj13/transcript.refined.json"
    workflow.run(target)

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

    # The refine stage decoded this file (domain lj) with the adapted model, cached under its adapter.
    refined = read_json(workflow.result("lj13", "transcript.refined.json"))
    assert refined["domain"]["name"] == "lj" and refined["domain"]["adapter"] == adapter
    assert refined["provenance"]["models"]["refine"]["spec"] == adapter
    assert refined["refinement"]["mode"] == "combine" and refined["refinement"]["redecoded_s"] > 0, "nothing was re-decoded"
    # "than in the same operations with ugly ones": at most one word wrong after two tiny steps.
    assert corpus_wer([(LJ / "LJ001-0013.txt").read_text()], [refined["text"]]).wer <= 0.15
    keys = [model["key"] for model in workflow.server("stats")["models"]]
    assert any(key["adapter"] == adapter and key["model"] == adapter for key in keys), keys

    # Nothing changed: nothing reruns. Forced, training and merging give the same bytes (deterministic).
    assert "Nothing to be done" in workflow.run("-n", target).output
    outputs = [root / "metrics.json", root / "lora" / "adapter_model.safetensors", root / "ct2" / "model.bin"]
    first = [p.read_bytes() for p in outputs]
    workflow.run(target, "--forcerun", "train_adapter")
    assert [p.read_bytes() for p in outputs] == first

    # A hyperparameter change retrains, rebuilds and refines again; the fast pass stays.
    workflow.write_config({"inputs": str(sheet), **config, "adapters": _adapter_config(dataset, learning_rate=0.0005)})
    planned = workflow.run("-n", target).output
    for rule in ("train_adapter", "build_adapted_model", "refine"):
        assert re.search(rf"^{rule}\s+1$", planned, re.M), planned
    assert not re.search(r"^transcribe_fast\s", planned, re.M)


def test_bad_dataset_fails_the_job_with_one_line(make_workflow, tmp_path) -> None:
    dataset = _tsv(tmp_path / "bad.tsv", "audio\ttext", f"{tmp_path / 'gone.wav'}\thello", _lj(2))
    workflow = make_workflow(str(JFK), adapters={"model": "embedded:tiny.en", "datasets": {"bad": str(dataset)}},
                             server={"enabled": False})
    run = workflow.run("resources/adapters/bad/ct2", check=False)
    assert run.returncode != 0
    assert f"trax: error: {dataset}: row 2: audio file not found: {tmp_path / 'gone.wav'}" in run.output
    assert not (workflow.workdir / "resources" / "adapters" / "bad" / "lora").exists()
    assert not (workflow.workdir / "resources" / "adapters" / "bad" / "metrics.json").exists()
