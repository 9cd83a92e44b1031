"""Every language Whisper speaks: identification, routing, and language-aware downstream stages.

Real speech: espeak-ng's Spanish, German and French (generated here) and real Chinese from
../shared/benchdata-ml (read in place). One shared workflow run (a sample sheet of several files)
serves the end-to-end assertions.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from trax.errors import TraxError
from trax.io.languages import WHISPER_LANGUAGES, check_language, display_width, join_words
from trax.quality.benchdata import GENERATED_SPEECH, benchdata_ml_dir, espeak_wav
from trax.quality.evaluation import corpus_wer, normalize_text
from trax.transcript.exports import ExportOptions, utterance_cues
from trax.transcript.rules import Glossary, RulesOptions, rules_edit

from conftest import JFK, JFK_TEXT

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (.ci/run installs it)")
ZH_CLIP = benchdata_ml_dir() / "zh" / "zh_fleurs_000328.wav"
ZH_REFERENCE = "博贝克出生于克罗地亚首都萨格勒布，在为贝尔格莱德游击队足球俱乐部效力时成名。"


# --- pure helpers ------------------------------------------------------------------------------

def test_language_codes_match_faster_whisper():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(WHISPER_LANGUAGES) == set(_LANGUAGE_CODES)


def test_unknown_language_is_one_line_naming_the_value():
    assert check_language("de", "x") == "de" and check_language(None, "x") is None
    with pytest.raises(TraxError) as caught:
        check_language("klingon", "config transcribe_fast.language")
    message = str(caught.value)
    assert "\n" not in message and "'klingon'" in message and "transcribe_fast.language" in message


def test_display_width_and_joining_by_script():
    assert display_width("abc") == 3 and display_width("今天") == 4 and display_width("ｶ") == 1
    assert join_words(["今天", "天气"], "zh") == "今天天气" and join_words(["hola", "amigo"], "es") == "hola amigo"


def test_rules_follow_the_language():
    options = RulesOptions()
    # English fillers and the pronoun fix never touch German or Italian words ("er" = he, "i" = the).
    assert rules_edit("er hat um zehn uhr äh angerufen", options.for_language("de"), Glossary()) \
        == "Er hat um zehn uhr angerufen"
    assert rules_edit("i ragazzi", options.for_language("it"), Glossary()) == "I ragazzi"
    assert rules_edit("oggi i ragazzi", options.for_language("it"), Glossary()) == "Oggi i ragazzi"
    # French: its own fillers go; grammatical repeats ("nous nous") stay.
    assert rules_edit("euh nous nous levons", options.for_language("fr"), Glossary()) == "Nous nous levons"
    # A language without a list loses no word at all.
    assert rules_edit("um eh test test", options.for_language("pt"), Glossary()) == "Um eh test test"
    assert rules_edit("um i think think so", options, Glossary()) == "I think so"


def test_exported_chinese_keeps_words_whole_and_lines_by_display_width():
    words = ["博贝克", "出生于", "克罗地亚", "首都", "萨格勒布", "，", "在", "为", "贝尔格莱德", "游击队", "足球", "俱乐部"]
    utterance = {"speaker": "SPEAKER_1", "words": [{"word": w, "start": i * 0.3, "end": i * 0.3 + 0.3}
                                                   for i, w in enumerate(words)]}
    cues = utterance_cues(utterance, ExportOptions(max_line_chars=16, max_lines=2, max_cue_s=30), language="zh")
    lines = [line for cue in cues for line in cue.lines]
    assert "".join(lines) == "".join(words)  # never joined with spaces
    assert all(display_width(line) <= 16 for line in lines)
    # Every line boundary is a word boundary.
    boundaries = {sum(len(w) for w in words[:i]) for i in range(len(words) + 1)}
    position = 0
    for line in lines:
        position += len(line)
        assert position in boundaries
    # A word wider than a line is never split in a no-space language (a Latin one is hard-split).
    long = {"speaker": "S", "words": [{"word": "贝尔格莱德游击队", "start": 0.0, "end": 1.0}]}
    assert [c.lines for c in utterance_cues(long, ExportOptions(max_line_chars=8), language="zh")] == [["贝尔格莱德游击队"]]


def test_evaluation_normalizer_and_cer():
    assert normalize_text("La partie extérieure, « que » nous voyons.", "fr") == "la partie extérieure que nous voyons"
    assert normalize_text("博贝克出生于。", "zh") == "博 贝 克 出 生 于"
    result = corpus_wer(["博贝克出生于"], ["博贝克出生在"], "zh")
    assert result.reference_words == 6 and result.substitutions == 1


def test_quality_estimate_is_null_with_reason_for_an_uncalibrated_language():
    from trax.quality.estimates import QualityOptions, annotate_merged
    from trax.transcript.merge import MergeOptions, merge

    words = [{"start": i * 0.5, "end": i * 0.5 + 0.4, "word": w, "probability": 0.9}
             for i, w in enumerate(["bonjour", "à", "tous"])]
    transcript = {"sample_id": "fr", "language": "fr", "duration": 2.0,
                  "language_detection": {"uncertain": True, "reason": "identified as 'fr' with probability 0.45"},
                  "segments": [{"id": 0, "start": 0.0, "end": 1.5, "text": "bonjour à tous", "avg_logprob": -0.3,
                                "no_speech_prob": 0.01, "compression_ratio": 1.0, "words": words}]}
    body = merge(transcript, [], MergeOptions())
    annotate_merged(body, transcript, None, QualityOptions())
    quality = body["quality"]
    assert quality["estimated_wer"] is None and "'fr'" in quality["wer_reason"]
    assert quality["needs_review"] and any("language uncertain" in r for r in quality["reasons"])
    assert body["utterances"][0]["estimated_wer"] is None and body["utterances"][0]["text"] == "bonjour à tous"


# --- real decoding -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """espeak-ng speech per language code (es, de, fr), 16 kHz mono."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    root = tmp_path_factory.mktemp("espeak")
    return {language: str(espeak_wav(voice, text, root / f"{language}.wav"))
            for voice, (language, text) in GENERATED_SPEECH.items()}


def test_a_language_the_model_cannot_decode_is_one_line_naming_file_language_and_model(generated, tmp_path):
    from trax.asr.transcribe import transcribe_file

    settings = {"language": "de", "multilingual_model": None, "batch_size": 4, "beam_size": 1}
    with pytest.raises(TraxError) as caught:
        transcribe_file(generated["de"], str(tmp_path / "t.json"), "de", settings)
    message = str(caught.value)
    assert "\n" not in message and generated["de"] in message and "'de'" in message and "embedded:tiny.en" in message
    assert not (tmp_path / "t.json").exists()


#: Content words each generated clip must come out with (lower-cased, in its own language).
CONTENT = {"es": ["días", "madrid", "familia"], "de": ["morgen", "berlin", "park"], "fr": ["bonjour", "paris"]}
ZH_CONTENT = ["首都", "萨格勒布", "贝尔格莱德", "足球"]


@pytest.fixture(scope="module")
def mixed_run(generated, tmp_path_factory: pytest.TempPathFactory):
    """One workflow run over a mixed-language sample sheet: es, de, fr (detected), Chinese (real,
    detected), English (JFK: must stay exactly as before), the Spanish clip again with the sheet
    forcing ``language: en``, and the German one with the sheet giving ``de``."""
    from conftest import Workflow

    workdir = tmp_path_factory.mktemp("mixed")
    sheet = workdir / "samples.tsv"
    rows = [("es", generated["es"], ""), ("de", generated["de"], ""), ("fr", generated["fr"], ""),
            ("zh", str(ZH_CLIP), ""), ("jfk", str(JFK), ""), ("es_forced_en", generated["es"], "en"),
            ("de_given", generated["de"], "de")]
    sheet.write_text("id\tpath\tlanguage\n" + "".join(f"{i}\t{p}\t{lang}\n" for i, p, lang in rows), encoding="utf-8")
    (workdir / "wf").mkdir()
    workflow = Workflow(workdir / "wf", {"inputs": str(sheet), "diarize": {"enabled": False}})
    run = workflow.run("--keep-going")
    workflow.stats = workflow.server("stats")  # right away: the server exits when idle
    yield workflow, run
    workflow.stop_server()


def _fast(workflow, sample_id: str) -> dict:
    return json.loads(workflow.result(sample_id, "transcript.fast.json").read_text(encoding="utf-8"))


@pytest.mark.slow
@needs_espeak
@pytest.mark.parametrize("language", ["es", "de", "fr"])
def test_generated_speech_is_detected_and_transcribed_in_its_language(mixed_run, language):
    workflow, _ = mixed_run
    fast = _fast(workflow, language)
    detection = fast["language_detection"]
    assert fast["language"] == language and detection["method"] == "identified"
    assert detection["candidates"][0]["language"] == language and detection["windows"] >= 1
    # tiny.en's own decode said "not English": low log-probability, or nothing but dropped loops.
    assert detection["fast_pass_logprob"] is None or detection["fast_pass_logprob"] < -0.7
    assert detection["model"] == "embedded:base" and fast["provenance"]["models"]["asr"]["spec"] == "embedded:base"
    text = fast["text"].lower()
    assert all(word in text for word in CONTENT[language]), text
    merged = json.loads(workflow.result(language, "merged.json").read_text(encoding="utf-8"))
    assert merged["language"] == language and merged["quality"]["estimated_wer"] is None
    # Whisper base is unsure of espeak-ng's French (0.42): decoded in French, flagged for review.
    uncertain = [r for r in merged["quality"]["reasons"] if r.startswith("language uncertain")]
    assert bool(uncertain) == detection["uncertain"] == (detection["probability"] < 0.5)


@pytest.mark.slow
@needs_espeak
def test_real_chinese_is_detected_transcribed_and_exported_without_spaces(mixed_run):
    workflow, _ = mixed_run
    fast = _fast(workflow, "zh")
    assert fast["language"] == "zh" and fast["language_detection"]["probability"] >= 0.5
    # Half of the names and nouns at least, written right: base's int8 kernels differ by CPU
    # (AVX-512 or AVX2), and on some a homophone takes a name's characters; the CER bounds the rest.
    assert sum(word in fast["text"] for word in ZH_CONTENT) >= len(ZH_CONTENT) // 2, fast["text"]
    merged = json.loads(workflow.result("zh", "merged.json").read_text(encoding="utf-8"))
    assert merged["language"] == "zh" and merged["quality"]["estimated_wer"] is None
    assert all(" " not in u["text"] for u in merged["utterances"])
    srt = workflow.result("zh", "transcript.srt").read_text(encoding="utf-8")
    body = "".join(line for line in srt.splitlines() if line and not line[0].isdigit() and "-->" not in line)
    words = [w["word"] for u in merged["utterances"] for w in u["words"]]
    assert body.replace("SPEAKER_1: ", "") == "".join(words)  # every word whole, no spaces added
    assert all(display_width(line) <= 42 for line in srt.splitlines())
    assert corpus_wer([ZH_REFERENCE], [fast["text"]], "zh").wer < 0.5


@pytest.mark.slow
@needs_espeak
def test_english_keeps_the_fast_pass_and_forced_language_is_obeyed(mixed_run):
    workflow, _ = mixed_run
    jfk = _fast(workflow, "jfk")
    assert jfk["language"] == "en" and jfk["language_probability"] is None
    assert jfk["language_detection"]["method"] == "fast_pass" and jfk["language_detection"]["fast_pass_logprob"] > -0.7
    assert list(jfk["provenance"]["models"]) == ["asr"] and jfk["provenance"]["models"]["asr"]["spec"] == "embedded:tiny.en"
    assert normalize_text(jfk["text"]) == normalize_text(JFK_TEXT)
    # The sheet says English: no detection, tiny.en decodes it (as the config says, right or wrong).
    forced = _fast(workflow, "es_forced_en")
    assert forced["language"] == "en" and forced["language_detection"]["method"] == "configured"
    assert forced["provenance"]["models"]["asr"]["spec"] == "embedded:tiny.en"
    assert _fast(workflow, "es")["text"] != forced["text"]
    # The sheet says German: no detection, straight to the multilingual model with the token.
    given = _fast(workflow, "de_given")
    assert given["language"] == "de" and given["language_detection"]["method"] == "configured"
    assert given["provenance"]["models"]["asr"]["spec"] == "embedded:base" and "language_id" not in given["provenance"]["models"]
    assert all(word in given["text"].lower() for word in CONTENT["de"])


@pytest.mark.slow
@needs_espeak
def test_language_reaches_metrics_and_summary(mixed_run):
    workflow, _ = mixed_run
    metrics = json.loads(workflow.result("de", "metrics.json").read_text(encoding="utf-8"))
    assert metrics["language"] == "de" and metrics["language_method"] == "identified"
    assert metrics["language_candidates"][0]["language"] == "de" and metrics["estimated_wer"] is None
    with open(workflow.workdir / "results" / "summary.tsv", encoding="utf-8", newline="") as handle:
        rows = {row["sample_id"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert rows["fr"]["language"] == "fr" and rows["jfk"]["language"] == "en" and rows["jfk"]["language_method"] == "fast_pass"
    assert float(rows["es"]["language_probability"]) >= 0.5
    refined = json.loads(workflow.result("es", "transcript.refined.json").read_text(encoding="utf-8"))
    assert refined["language_detection"]["language"] == "es"
    # The model server holds both Whisper models (tiny.en and base), each loaded once, within 1.5 GB.
    stats = workflow.stats
    whisper = [m for m in stats["models"] if m["key"]["kind"] == "whisper"]
    assert len(whisper) == 2 and all(m["loads"] == 1 for m in whisper)
    assert stats["peak_rss_mb"] <= 1536


def test_bad_language_values_in_config_and_sheet_are_one_line_errors(make_workflow, tmp_path):
    workflow = make_workflow(str(JFK), transcribe_fast={"language": "english"})
    run = workflow.run("-n", check=False)
    assert run.returncode != 0 and "unknown language 'english'" in run.output
    line = next(line for line in run.output.splitlines() if "unknown language" in line)
    assert "transcribe_fast.language" in line
    sheet = tmp_path / "s.tsv"
    sheet.write_text(f"id\tpath\tlanguage\njfk\t{JFK}\txx\n", encoding="utf-8")
    workflow = make_workflow(str(sheet), name="sheet")
    run = workflow.run("-n", check=False)
    assert run.returncode != 0
    line = next(line for line in run.output.splitlines() if "unknown language" in line)
    assert "'xx'" in line and "jfk" in line


def test_identification_windows_are_spread_through_a_long_recording(tmp_path):
    """A 400 s recording of silence with JFK at 50 s, 195 s and 320 s: three probe spans (90 s at
    evenly spaced positions) find each once; the silence around them is never read as speech."""
    from conftest import ffmpeg
    from trax.asr.language import speech_windows
    from trax.asr.transcribe import TranscribeOptions

    wav = tmp_path / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-i", str(JFK), "-i", str(JFK), "-i", str(JFK),
           "-filter_complex", "[1:a]adelay=50000[a];[2:a]adelay=195000[b];[3:a]adelay=320000[c];"
           "[0:a][a][b][c]amix=inputs=4:duration=first:normalize=0", "-t", "400", "-ac", "1", "-ar", "16000", str(wav))
    windows = speech_windows(str(wav), TranscribeOptions().vad_parameters(), 3)
    assert len(windows) == 3
    assert all(9.0 <= len(w) / 16000 <= 12.5 for w in windows), [len(w) / 16000 for w in windows]


@pytest.mark.slow
@needs_espeak
def test_routed_transcripts_are_the_same_bytes_without_the_model_server(mixed_run, tmp_path):
    """The server identified and decoded with its cached base model; in-process (server off) the
    job loads its own: the same bytes."""
    from trax.asr.transcribe import transcribe_file

    workflow, _ = mixed_run
    for sample_id in ("de", "zh"):
        served = workflow.result(sample_id, "transcript.fast.json")
        settings = json.loads(served.read_text(encoding="utf-8"))["provenance"]["config"]
        alone = tmp_path / f"{sample_id}.json"
        transcribe_file(str(workflow.result(sample_id, "audio.wav")), str(alone), sample_id, settings)
        assert alone.read_bytes() == served.read_bytes(), sample_id
