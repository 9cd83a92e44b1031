"""Real Snakemake runs of the foundation slice: normalize -> transcribe_fast."""

import shutil
from pathlib import Path

from conftest import EMPTY, JFK, JFK_TEXT, REPO, Workflow, jobs_planned, reruns
from trax.quality.evaluation import normalize_text
from trax.io.jsonio import read_json
from trax.io.schemas import validate


def _write_sheet(path: Path, rows: dict[str, Path]) -> Path:
    lines = ["id\tpath"] + [f"{sample_id}\t{source}" for sample_id, source in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_inputs_fail_alone_and_good_ones_finish(make_workflow, bad_inputs, good_extras, tmp_path) -> None:
    good = {"jfk": JFK, "silence": EMPTY, "half": good_extras["half_second"], "video": good_extras["video"]}
    sheet = _write_sheet(tmp_path / "samples.tsv", {**good, **bad_inputs})
    workflow = make_workflow(str(sheet), normalize={"max_size_mb": 1.5})
    run = workflow.run("--keep-going", check=False)
    assert run.returncode != 0

    for kind, source in bad_inputs.items():
        # Parallel jobs share the console, so another process's text may precede ours on the same line;
        # the job log holds the line on its own.
        error = f"trax: error: {source}: "
        assert run.output.count(error) == 1, f"{kind}: expected one error naming {source}\n{run.output[-3000:]}"
        log_lines = (workflow.workdir / "logs" / "normalize" / f"{kind}.log").read_text().splitlines()
        assert sum(line.startswith(error) for line in log_lines) == 1, f"{kind}: log lacks the error line"
        assert not any(workflow.result(kind, name).exists() for name in ("audio.wav", "audio.json", "transcript.fast.json"))
    leftovers = [p for p in (workflow.workdir / "results").rglob(".*") if p.is_file()]
    assert leftovers == [], f"temporary files left behind: {leftovers}"

    for sample_id in good:
        transcript = read_json(workflow.result(sample_id, "transcript.fast.json"))
        validate(transcript, "transcript")
    assert normalize_text(read_json(workflow.result("jfk", "transcript.fast.json"))["text"]) == normalize_text(JFK_TEXT)
    assert normalize_text(read_json(workflow.result("video", "transcript.fast.json"))["text"]) == normalize_text(JFK_TEXT)
    silence = read_json(workflow.result("silence", "transcript.fast.json"))
    assert silence["segments"] == [] and silence["text"] == ""


def test_reruns_targets_and_config_changes(make_workflow) -> None:
    workflow: Workflow = make_workflow(str(REPO / "resources" / "example"))
    workflow.run()
    transcript = workflow.result("welcome_meeting", "transcript.fast.json")
    assert "weekly planning meeting" in read_json(transcript)["text"]

    assert "Nothing to be done" in workflow.run("-n").output

    # A transcription setting reruns transcription only, not normalize.
    config = {"inputs": str(REPO / "resources" / "example"), "transcribe_fast": {"beam_size": 2}}
    workflow.write_config(config)
    plan = workflow.run("-n")
    assert reruns(plan) == {"transcribe_fast", "refine", "merge", "export", "enhance"}
    assert jobs_planned(plan)["transcribe_fast"] == 2
    wav_mtime = workflow.result("welcome_meeting", "audio.wav").stat().st_mtime_ns
    workflow.run()
    assert workflow.result("welcome_meeting", "audio.wav").stat().st_mtime_ns == wav_mtime
    assert read_json(transcript)["provenance"]["config"]["beam_size"] == 2
    assert "Nothing to be done" in workflow.run("-n").output

    # One file, one target: only that recording's jobs run.
    shutil.rmtree(workflow.workdir / "results")
    target = "results/status_update/transcript.fast.json"
    workflow.run(target)
    assert workflow.result("status_update", "transcript.fast.json").exists()
    assert not workflow.result("welcome_meeting", "audio.wav").exists()


def test_unknown_config_key_and_wrong_type_fail_at_start(make_workflow) -> None:
    workflow = make_workflow(str(REPO / "resources" / "example"), transcribe_fast={"beam_sise": 5})
    run = workflow.run("-n", check=False)
    assert run.returncode != 0 and "beam_sise" in run.output

    workflow.write_config({"inputs": str(REPO / "resources" / "example"), "transcribe_fast": {"cpu_threads": "two"}})
    run = workflow.run("-n", check=False)
    assert run.returncode != 0 and "'two' is not of type 'integer'" in run.output and "cpu_threads" in run.output


def test_colliding_inputs_fail_at_start_naming_both(make_workflow, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(JFK, folder / "talk one.flac")
    shutil.copy(EMPTY, folder / "talk_one.wav")
    run = make_workflow(str(folder)).run("-n", check=False)
    assert run.returncode != 0 and "talk one.flac" in run.output and "talk_one.wav" in run.output


def test_unicode_and_spaces_in_names(make_workflow, tmp_path) -> None:
    folder = tmp_path / "ünïcode in"
    folder.mkdir()
    shutil.copy(JFK, folder / "trñ jfk speech.flac")
    workflow = make_workflow(str(folder))
    workflow.run()
    assert read_json(workflow.result("trn_jfk_speech", "audio.json"))["source"]["path"].endswith("trñ jfk speech.flac")
