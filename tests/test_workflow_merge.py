"""End to end on sample.wav: every file of merge, export and enhance, schema-valid, reruns stable.

Needs the refine (issue 5) and diarize (issue 7) rules: skipped, saying so, while the workflow
lacks them.
"""

import re

import pytest
import srt
import webvtt

from conftest import REPO, SAMPLE_DIR, reruns
from trax.io.jsonio import read_json
from trax.io.schemas import schema_dir, validate

RULES = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
pytestmark = pytest.mark.skipif(
    not (re.search(r"^rule refine:", RULES, re.M) and re.search(r"^rule diarize:", RULES, re.M)),
    reason="needs the refine and diarize rules (issues 5 and 7) to produce merge's inputs",
)
JSON_SCHEMAS = {
    "transcript.fast.json": "transcript",
    "transcript.refined.json": "transcript.refined",
    "diarization.json": "diarization",
    "merged.json": "merged",
    "enhanced.json": "enhanced",
}
TEXT_FILES = ["diarization.rttm", "transcript.srt", "transcript.vtt", "transcript.txt", "transcript.md", "enhanced.md"]


def test_sample_end_to_end(make_workflow, tmp_path) -> None:
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(f"id\tpath\tnum_speakers\tspeaker_names\nsample\t{SAMPLE_DIR / 'sample.wav'}\t2\t"
                     "SPEAKER_1=Diane;SPEAKER_2=Sheila\n", encoding="utf-8")
    workflow = make_workflow(str(sheet))
    workflow.run()
    for name, schema in JSON_SCHEMAS.items():
        path = workflow.result("sample", name)
        assert path.is_file(), name
        if (schema_dir() / f"{schema}.schema.yaml").is_file():
            validate(read_json(path), schema)
    for name in TEXT_FILES:
        assert workflow.result("sample", name).read_text(encoding="utf-8").strip(), name

    merged = read_json(workflow.result("sample", "merged.json"))
    assert {s["name"] for s in merged["speakers"] if s["id"] != "unknown"} <= {"Diane", "Sheila"}
    words = [w for u in merged["utterances"] for w in u["words"]]
    assert len(words) > 50 and all(w["assignment"] in ("overlap", "nearest", "unassigned") for w in words)
    subtitles = list(srt.parse(workflow.result("sample", "transcript.srt").read_text()))
    assert all(a.end <= b.start for a, b in zip(subtitles, subtitles[1:]))
    captions = webvtt.read(str(workflow.result("sample", "transcript.vtt"))).captions
    assert captions and all(c.voice for c in captions)
    enhanced = read_json(workflow.result("sample", "enhanced.json"))
    assert enhanced["provider"] == "rules" and len(enhanced["utterances"]) == len(merged["utterances"])

    # Nothing changed: nothing runs, bytes stay. An export setting reruns export only.
    before = {n: workflow.result("sample", n).read_bytes() for n in [*JSON_SCHEMAS, *TEXT_FILES]}
    assert "Nothing to be done" in workflow.run("-n").output
    workflow.write_config({"inputs": str(sheet), "export": {"max_line_chars": 30}})
    assert reruns(workflow.run("-n")) == {"export"}
    workflow.write_config({"inputs": str(sheet), "merge": {"max_pause_s": 0.5}})
    assert reruns(workflow.run("-n")) == {"merge", "export", "enhance"}
    workflow.write_config({"inputs": str(sheet)})
    workflow.run("--forceall")
    assert {n: workflow.result("sample", n).read_bytes() for n in before} == before
