"""Speaker attribution (trax.transcript.merge) on real audio and on hand-made edge cases."""

from pathlib import Path

import pytest

from conftest import SAMPLE_DIR
from trax.errors import TraxError
from trax.io.annotation import Turn, read_rttm, rttm_turns
from trax.io.jsonio import read_json
from trax.transcript.merge import MergeOptions, merge, merge_files, parse_speaker_names
from trax.quality.estimates import QualityOptions, annotate_merged, load_model, uncovered_word_share
from trax.io.schemas import validate


def _transcript(*words: tuple[str, float, float]) -> dict:
    return {
        "sample_id": "t", "language": "en", "duration": 30.0,
        "segments": [{"start": 0.0, "end": 30.0, "avg_logprob": -0.2, "no_speech_prob": 0.01, "compression_ratio": 1.2,
                      "words": [{"word": w, "start": s, "end": e, "probability": 0.9} for w, s, e in words]}],
    }


def _all_words(merged: dict) -> list[dict]:
    return [w for u in merged["utterances"] for w in u["words"]]


def test_real_sample_with_reference_rttm(sample_fast_transcript: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged.json"
    merge_files(str(sample_fast_transcript), str(SAMPLE_DIR / "sample.rttm"), str(out), {},
                "SPEAKER_1=Diane;SPEAKER_2=Sheila")
    merged = read_json(out)
    validate(merged, "merged")
    # speaker90 speaks first (6.69 s) -> SPEAKER_1, and the sheet names it.
    assert [(s["id"], s["label"], s["name"]) for s in merged["speakers"]] == [
        ("SPEAKER_1", "speaker90", "Diane"), ("SPEAKER_2", "speaker91", "Sheila")]
    words = _all_words(merged)
    assert len(words) == merged["stats"]["words"] > 50
    assert all({"speaker", "assignment", "overlapped"} <= set(w) for w in words)
    by_text = {w["word"].strip(".,?!"): w["speaker"] for w in words}
    assert by_text["Diane"] == "SPEAKER_1" and by_text["Texas"] == "SPEAKER_2" and by_text["Yankee"] == "SPEAKER_2"
    # Reference overlap 18.15-18.59 s (both speak): the words there are flagged.
    assert any(w["overlapped"] and 18.0 <= w["start"] < 18.6 for w in words)
    # Utterances alternate speakers here (no pause > 1 s inside a turn).
    assert all(a["speaker"] != b["speaker"] for a, b in zip(merged["utterances"], merged["utterances"][1:]))
    totals = {s["id"]: s for s in merged["speakers"]}
    assert sum(s["words"] for s in totals.values()) == len(words)
    assert 0 < totals["SPEAKER_1"]["mean_confidence"] <= 1
    # The transcript cross-checks the diarization: the recording's figures and each speaker's
    # from its own words (the reference RTTM misses little of the transcript's speech).
    quality = merged["quality"]
    coverage = uncovered_word_share(words, rttm_turns(SAMPLE_DIR / "sample.rttm"))
    assert quality["uncovered_word_share"] == coverage.share() is not None and quality["diarization_reason"] is None
    assert 0.5 < quality["speech_share"] <= 1
    assert quality["diarization_confidence"] == pytest.approx(1 - quality["estimated_der"], abs=2e-4)
    for speaker in merged["speakers"]:
        assert speaker["uncovered_word_share"] == coverage.share(speaker["id"]) is not None
        assert 0 <= speaker["diarization_confidence"] <= 1
    # Rerun: byte-identical.
    first = out.read_bytes()
    merge_files(str(sample_fast_transcript), str(SAMPLE_DIR / "sample.rttm"), str(out), {},
                "SPEAKER_1=Diane;SPEAKER_2=Sheila")
    assert out.read_bytes() == first


def test_nearest_unassigned_overlap_and_breaks() -> None:
    turns = [Turn(1.0, 3.0, "B"), Turn(2.5, 4.0, "A"), Turn(6.0, 7.0, "B")]
    transcript = _transcript(
        ("hi", 1.8, 2.2),      # B only
        ("there", 2.6, 2.9),   # B and A overlap -> overlapped; tie 0.3/0.3 -> B (turn starts first)
        ("you", 3.2, 3.6),     # A only
        ("ok", 4.2, 4.4),      # no turn, 0.2 s after A -> nearest A
        ("far", 5.0, 5.2),     # 0.8 s from anything -> unknown
        ("back", 6.1, 6.5),    # B again
        ("zero", 6.8, 6.8),    # zero-length inside B
    )
    merged = merge(transcript, turns, MergeOptions(nearest_tolerance_s=0.5, max_pause_s=1.0))
    annotate_merged(merged, transcript, turns, QualityOptions())
    model = load_model().provenance()
    validate({**merged, "provenance": {"trax_version": "x", "config": {}, "input_sha256": "0" * 64,
                                       "diarization_sha256": "0" * 64, "models": {}, "quality_model": model}}, "merged")
    # Only "far" lies outside every turn widened by 0.3 s ("ok" ends 0.4 s after A's turn but
    # starts within 0.3 s of it); it is the unknown speaker's one word.
    assert merged["quality"]["uncovered_word_share"] == round(1 / 7, 4)
    assert [(s["id"], s["uncovered_word_share"], s["diarization_confidence"] is None) for s in merged["speakers"]] == [
        ("SPEAKER_1", 0.0, False), ("SPEAKER_2", 0.0, False), ("unknown", 1.0, True)]
    words = {w["word"]: w for w in _all_words(merged)}
    assert (words["hi"]["speaker"], words["hi"]["assignment"], words["hi"]["overlapped"]) == ("SPEAKER_1", "overlap", False)
    assert (words["there"]["speaker"], words["there"]["overlapped"]) == ("SPEAKER_1", True)
    assert words["you"]["speaker"] == "SPEAKER_2"
    assert (words["ok"]["speaker"], words["ok"]["assignment"]) == ("SPEAKER_2", "nearest")
    assert (words["far"]["speaker"], words["far"]["assignment"]) == ("unknown", "unassigned")
    assert (words["zero"]["speaker"], words["zero"]["assignment"]) == ("SPEAKER_1", "overlap")
    assert [u["text"] for u in merged["utterances"]] == ["hi there", "you ok", "far", "back zero"]
    assert merged["stats"]["assignment"] == {"overlap": 5, "nearest": 1, "unassigned": 1}
    assert [s["id"] for s in merged["speakers"]] == ["SPEAKER_1", "SPEAKER_2", "unknown"]
    assert merged["speakers"][2]["words"] == 1 and merged["speakers"][2]["label"] is None

    # A long pause splits one speaker's words into two utterances.
    merged = merge(_transcript(("a", 0.0, 0.2), ("b", 0.3, 0.5), ("c", 2.0, 2.2)), [Turn(0.0, 3.0, "X")],
                   MergeOptions(max_pause_s=1.0))
    assert [u["text"] for u in merged["utterances"]] == ["a b", "c"]


def test_empty_inputs() -> None:
    # Silence: no words, no utterances; no speech turns: every word unknown.
    assert merge(_transcript(), [Turn(0.0, 1.0, "A")], MergeOptions())["utterances"] == []
    merged = merge(_transcript(("word", 1.0, 1.5)), [], MergeOptions())
    assert [(s["id"], s["words"]) for s in merged["speakers"]] == [("unknown", 1)]
    assert _all_words(merged)[0]["assignment"] == "unassigned"


def test_rttm_and_names_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER x 1 0.5 1.0 <NA> <NA> A <NA> <NA>\nSPEAKER x 1 oops 1.0 <NA> <NA> B <NA> <NA>\n")
    with pytest.raises(TraxError, match=r"bad.rttm: line 2: malformed RTTM"):
        read_rttm(bad)
    assert parse_speaker_names(" SPEAKER_1 = Alice Smith ;SPEAKER_2=Bob;") == {"SPEAKER_1": "Alice Smith", "SPEAKER_2": "Bob"}
    assert parse_speaker_names(None) == {}
    with pytest.raises(TraxError, match="not SPEAKER_<n>=<name>"):
        parse_speaker_names("Alice;Bob")
    with pytest.raises(TraxError, match="named twice"):
        parse_speaker_names("SPEAKER_1=A;SPEAKER_1=B")
