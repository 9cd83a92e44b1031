"""The workflow on a real one-node Slurm cluster (scripts/local_slurm.sh), against a local run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import JFK, REPO, SAMPLE_DIR, Workflow, result_tree
from trax.runtime.protocol import runtime_dir

pytestmark = pytest.mark.slurm

SCRIPT = REPO / "scripts" / "local_slurm.sh"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")


@pytest.fixture(scope="module")
def cluster():
    """A running local cluster; stopped afterwards unless it was already running before."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        pytest.skip(f"needs root: slurmd and /run/slurm/conf (scripts/local_slurm.sh); missing tools: {missing or 'none'}")
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install slurm-wlm munge (.ci/run does)")
    was_running = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    if not was_running:
        subprocess.run([str(SCRIPT), "stop"], check=True, capture_output=True)


def _slurm_jobs(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """scontrol's record (JobState, Comment with rule and wildcards, ...) of each job id."""
    records = {}
    for job_id in job_ids:
        text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                              check=True).stdout
        records[job_id] = dict(re.findall(r"(\w+)=(\S*)", text))
    return records


def test_slurm_run_matches_local_run_and_a_bad_file_fails_alone(cluster, make_workflow, tmp_path: Path,
                                                                  bad_inputs: dict[str, Path]) -> None:
    broken = bad_inputs["text_as_mp3"]
    sheet = tmp_path / "inputs.tsv"
    sheet.write_text(f"id\tpath\njfk\t{JFK}\nsample\t{SAMPLE_DIR / 'sample.wav'}\nbroken\t{broken}\n")
    good = ["jfk", "sample"]

    local = make_workflow(str(sheet), name="local")
    local_run = local.run("--keep-going", cores=2, check=False)
    # The server outlives the run by its idle timeout, long enough to read its stats afterwards.
    slurm: Workflow = make_workflow(str(sheet), name="slurm", server={"idle_timeout_s": 600})
    slurm_run = slurm.run("--workflow-profile", str(REPO / "profiles" / "slurm"), "--keep-going", check=False)
    assert local_run.returncode != 0 and slurm_run.returncode != 0, slurm_run.output[-4000:]

    # Every job ran as a Slurm job: Snakemake logged its id, scontrol has its record.
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", slurm_run.output)
    records = _slurm_jobs(job_ids)
    states = {job_id: record["JobState"] for job_id, record in records.items()}
    failed = [records[job_id]["Comment"] for job_id, state in states.items() if state != "COMPLETED"]
    # The broken file's normalize failed, alone: nothing else failed, its downstream jobs never ran.
    assert len(failed) == 1 and "normalize" in failed[0] and "broken" in failed[0], (failed, slurm_run.output[-4000:])
    assert all(record["WorkDir"] == str(slurm.workdir) for record in records.values())
    per_file_rules = ["normalize", "transcribe_fast", "refine", "diarize", "merge", "export", "enhance", "metrics", "figures",
                      "review_audio", "review"]
    assert len(job_ids) == len(good) * len(per_file_rules) + 1, slurm_run.output[-4000:]

    # The same one-line error in the bad file's log as in a local run.
    error = f"trax: error: {broken}: not a decodable audio/video file"
    for workflow in (local, slurm):
        lines = (workflow.workdir / "logs" / "normalize" / "broken.log").read_text().splitlines()
        assert sum(line.startswith(error) for line in lines) == 1, lines
        assert not (workflow.workdir / "results" / "broken").exists()

    # Every output of the good files is byte-identical to the local run's.
    for sample_id in good:
        local_tree = result_tree(local.workdir / "results" / sample_id)
        slurm_tree = result_tree(slurm.workdir / "results" / sample_id)
        assert len(local_tree) >= 15 and slurm_tree.keys() == local_tree.keys()
        assert [name for name in local_tree if local_tree[name] != slurm_tree[name]] == []

    # One server on this node served the Slurm jobs, each model loaded once; it lives in the node's
    # runtime directory, not in the shared workflow directory.
    stats = slurm.server("stats")
    assert stats["settings"]["idle_timeout_s"] == 600  # $TRAX_SERVER_CONFIG reached the jobs
    assert stats["requests"]["transcribe"] == len(good) and stats["requests"]["diarize"] == len(good)
    assert [model["loads"] for model in stats["models"]] == [1, 1], stats["models"]
    assert (runtime_dir(slurm.workdir) / "server.sock").is_socket()
    assert not (slurm.workdir / ".trax" / "server.sock").exists()
    server_log = (slurm.workdir / "logs" / "model_server.log").read_text()
    assert len(re.findall(r"serving .* on ", server_log)) == 1 and "load #2" not in server_log, server_log


def test_audio_rules_get_time_for_long_recordings(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from trax.runtime.cluster import WAV_BYTES_PER_S, audio_runtime

    wav = tmp_path / "audio.wav"
    with open(wav, "wb") as handle:
        handle.truncate(WAV_BYTES_PER_S * 3600 * 3)  # three hours, sparse
    runtime = audio_runtime(10, 60)
    assert runtime(None, SimpleNamespace(wav=str(wav))) == 190
    assert runtime(None, SimpleNamespace(wav=str(tmp_path / "not yet.wav"))) == 10
