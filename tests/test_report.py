"""Metrics, evaluation against references, the summary tables and Snakemake's HTML report."""

import csv
import re
import shutil
import subprocess
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import jiwer
import pytest

from conftest import BENCH, EMPTY, JFK, REPO
from trax.quality.benchdata import reference_text
from trax.quality.evaluation import normalize_text
from trax.report.figures import make_figures
from trax.io.jsonio import read_json
from trax.transcript.merge import merge_files
from trax.io.annotation import rttm_turns
from trax.quality.estimates import NO_WORDS_REASON, load_model, uncovered_word_share
from trax.io.schemas import validate

LJ = BENCH / "coqui-tts-ljspeech"
DEBUG = BENCH / "pyannote-audio" / "debug"
SCREENSHOT_DIR = REPO / "bench" / "out"


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


#: SNR of the noisy jfk copy: white noise 5 dB louder than the speech (tiny.en then makes about
#: one error in three words).
NOISY_SNR_DB = -5.0


def _noisy_jfk(path: Path) -> Path:
    """jfk.flac as 16 kHz mono with seeded white noise at :data:`NOISY_SNR_DB`."""
    import wave

    import numpy as np

    from conftest import ffmpeg
    from trax.io.media import load_wav

    clean = path.with_name("jfk_clean.wav")
    ffmpeg("-i", str(JFK), "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(clean))
    speech = load_wav(clean).astype(np.float64)
    noise = np.random.default_rng(15).standard_normal(len(speech)) * np.sqrt(np.mean(speech**2) / 10 ** (NOISY_SNR_DB / 10))
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(np.round(np.clip(speech + noise, -1, 1) * 32767).astype("<i2").tobytes())
    clean.unlink()
    return path


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """One workflow run on real clips with reference transcripts (and one without)."""
    from conftest import Workflow

    root = tmp_path_factory.mktemp("report")
    lj_audio = sorted(LJ.rglob("LJ001-0003.wav"))[0]
    noisy = _noisy_jfk(root / "jfk_noisy.wav")
    references = {"jfk": (JFK, root / "jfk.txt"), "lj3": (lj_audio, root / "lj3.txt"),
                  "jfk_noisy": (noisy, root / "jfk_noisy.txt")}
    for (audio, reference) in references.values():
        reference.write_text(reference_text(JFK if audio == noisy else audio), encoding="utf-8")
    sheet = root / "samples.tsv"
    sheet.write_text(
        "id\tpath\treference_text\treference_rttm\treference_uem\n"
        + "".join(f"{sid}\t{audio}\t{ref.name}\t\t\n" for sid, (audio, ref) in references.items())
        + f"silence\t{EMPTY}\t\t\t\n"
        # A meeting excerpt scored for diarization only; its RTTM/UEM files hold two recordings.
        + f"dev00\t{DEBUG / 'dev00.wav'}\t\t{DEBUG / 'debug.development.rttm'}\t{DEBUG / 'debug.development.uem'}\n",
        encoding="utf-8",
    )
    workdir = root / "wf"
    workdir.mkdir()
    workflow = Workflow(workdir, {"inputs": str(sheet)})
    workflow.run()
    yield workflow, references
    workflow.stop_server()


def test_evaluation_matches_an_independent_jiwer_computation(reported) -> None:
    workflow, references = reported
    for sample_id, (_, reference) in references.items():
        evaluation = read_json(workflow.result(sample_id, "evaluation.json"))
        validate(evaluation, "evaluation")
        hypothesis = read_json(workflow.result(sample_id, "transcript.refined.json"))["text"]
        expected = jiwer.process_words(normalize_text(reference.read_text()), normalize_text(hypothesis))
        final = evaluation["wer"]["final"]
        assert final["wer"] == pytest.approx(expected.wer, abs=1e-4)
        assert (final["substitutions"], final["deletions"], final["insertions"]) == (
            expected.substitutions, expected.deletions, expected.insertions)
        assert evaluation["der"] is None
    # No references, no evaluation.
    assert not workflow.result("silence", "evaluation.json").exists()

    rows = _read_tsv(workflow.workdir / "results" / "evaluation.tsv")
    assert [row["sample_id"] for row in rows[:-1]] == sorted([*references, "dev00"])
    errors = words = 0
    for sample_id in references:
        final = read_json(workflow.result(sample_id, "evaluation.json"))["wer"]["final"]
        errors += final["substitutions"] + final["deletions"] + final["insertions"]
        words += final["reference_words"]
    assert float(rows[-1]["wer"]) == pytest.approx(errors / words, abs=1e-4)


def test_der_matches_pyannote_metrics_called_directly(reported) -> None:
    from pyannote.database.util import load_rttm, load_uem
    from pyannote.metrics.diarization import DiarizationErrorRate

    workflow, _ = reported
    evaluation = read_json(workflow.result("dev00", "evaluation.json"))
    validate(evaluation, "evaluation")
    assert evaluation["wer"] is None
    reference = load_rttm(DEBUG / "debug.development.rttm")["dev00"]
    hypothesis = next(iter(load_rttm(workflow.result("dev00", "diarization.rttm")).values()))
    uem = load_uem(DEBUG / "debug.development.uem")["dev00"]
    expected = DiarizationErrorRate(collar=0.0, skip_overlap=False)(reference, hypothesis, uem=uem, detailed=True)
    der = evaluation["der"]
    assert der["total"] == pytest.approx(expected["total"], abs=1e-3)
    for key in ("false alarm", "missed detection", "confusion"):
        assert der[key.replace(" ", "_")] == pytest.approx(expected[key], abs=1e-3)
    assert der["der"] == pytest.approx(expected["diarization error rate"], abs=1e-4)
    row = _read_tsv(workflow.workdir / "results" / "evaluation.tsv")[-1]
    assert float(row["der"]) == pytest.approx(der["der"], abs=1e-4)  # the only file with an RTTM


def test_metrics_summary_and_targets(reported) -> None:
    workflow, _ = reported
    results = workflow.workdir / "results"
    for sample_id in ("jfk", "lj3", "silence", "dev00", "jfk_noisy"):
        metrics = read_json(workflow.result(sample_id, "metrics.json"))
        validate(metrics, "metrics")
        assert set(metrics["stages"]) >= {"normalize", "transcribe_fast"}
        audio = read_json(workflow.result(sample_id, "audio.json"))
        assert metrics["duration_s"] == pytest.approx(audio["audio"]["duration"], abs=1e-3)
        assert metrics["wall_s"] == pytest.approx(sum(s["wall_s"] for s in metrics["stages"].values()), abs=0.01)
        # The server did the decoding here: its stats say the fast model was loaded once.
        models = metrics["model_server"]["models"]
        assert metrics["model_loads"] == len(models) >= 2 and all(model["loads"] == 1 for model in models)
        diarization = read_json(workflow.result(sample_id, "diarization.json"))
        assert metrics["num_speakers"] == diarization["num_speakers"]
        transcript = read_json(workflow.result(sample_id, "transcript.refined.json"))
        assert metrics["words"] == sum(len(s["words"]) for s in transcript["segments"])
    assert read_json(workflow.result("silence", "metrics.json"))["mean_confidence"] is None

    summary = _read_tsv(results / "summary.tsv")
    assert sorted(row["sample_id"] for row in summary) == ["dev00", "jfk", "jfk_noisy", "lj3", "silence"]
    aggregate = {row["metric"]: row for row in _read_tsv(results / "aggregate.tsv")}
    walls = sorted(float(row["wall_s"]) for row in summary)
    assert float(aggregate["wall_s"]["median"]) == pytest.approx(walls[2], abs=1e-3)
    assert int(aggregate["wall_s"]["count"]) == 5
    targets = {row["metric"]: row for row in _read_tsv(results / "targets.tsv")}
    # No recording here is near 5 minutes, so the speed target does not apply; memory does.
    assert targets["wall_s_per_5min"]["result"] == "n/a"
    assert targets["peak_rss_mb"]["result"] == "pass"


def test_figures_are_deterministic(reported, tmp_path) -> None:
    workflow, _ = reported
    made = []
    for attempt in ("a", "b"):
        paths = [tmp_path / f"{attempt}-{name}" for name in ("timeline.svg", "confidence.svg", "preview.html")]
        make_figures("dev00", str(workflow.result("dev00", "merged.json")),
                     str(workflow.result("dev00", "audio.json")), str(workflow.result("dev00", "diarization.rttm")),
                     *map(str, paths), max_segments=40)
        made.append([path.read_bytes() for path in paths])
    assert made[0] == made[1]
    assert made[0] == [workflow.result("dev00", f"report/{name}").read_bytes()
                       for name in ("timeline.svg", "confidence.svg", "preview.html")]
    # The timeline has one labelled row per diarized speaker; the histogram counts every word.
    svg = {"svg": "http://www.w3.org/2000/svg"}
    timeline, confidence = (ElementTree.fromstring(data) for data in made[0][:2])
    speakers = {line.split()[7] for line in workflow.result("dev00", "diarization.rttm").read_text().splitlines()}
    assert len(timeline.findall("svg:text[@text-anchor='end']", svg)) == len(speakers) >= 2
    assert len({bar.get("fill") for bar in timeline.findall("svg:rect[@fill]", svg)} - {"#fff", "none"}) == len(speakers)
    words = sum(len(u["words"]) for u in read_json(workflow.result("dev00", "merged.json"))["utterances"])
    assert any(text.text.endswith(f": {words} words") for text in confidence.findall("svg:text", svg))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tables += tag == "table"
        if tag == "a":
            self.links.append(dict(attrs)["href"])

    def handle_data(self, data) -> None:
        self.text.append(data)


def test_report_has_sections_plots_and_tables_and_renders(reported) -> None:
    workflow, _ = reported
    archive = workflow.workdir / "results" / "report.zip"
    workflow.run("--report", str(archive))
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
        page = bundle.read("report/report.html").decode("utf-8")
        summary_name = next(name for name in names if name.endswith("/summary.html"))
        summary = _Text()
        summary.feed(bundle.read(summary_name).decode("utf-8"))
        svgs = {name: bundle.read(name) for name in names if name.endswith(".svg")}
    # Per-file sections: each recording is a subcategory holding its three figures.
    for sample_id in ("jfk", "lj3", "silence", "dev00", "jfk_noisy"):
        assert f'"{sample_id}"' in page
    assert sum(name.endswith("/timeline.svg") for name in names) == 5
    assert sum(name.endswith("/confidence.svg") for name in names) == 5
    assert sum(name.endswith("/preview.html") for name in names) == 5
    assert sum(name.endswith("/review.html") for name in names) == 5  # each recording's review page
    assert all(ElementTree.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg" for data in svgs.values())
    # Captions and the rule graph are embedded.
    assert "Speaker timeline of recording" in page and "transcribe_fast" in page
    # Summary page: a readable table of the recordings with links to their review page and
    # transcript, the flagged utterances linked to their place on the page, then the raw tables
    # (files to review, metrics, aggregate, targets and evaluation).
    assert summary.tables == 7
    text = " ".join(summary.text)
    for heading in ("Recordings", "To review", "Review first", "Per-file metrics", "Aggregate over files",
                    "Performance targets", "Evaluation against references"):
        assert heading in text
    for sample_id in ("jfk", "lj3", "silence", "dev00", "jfk_noisy"):
        assert f"../{sample_id}/review.html" in summary.links and f"../{sample_id}/transcript.txt" in summary.links
    noisy = read_json(workflow.result("jfk_noisy", "merged.json"))
    flagged = [f"../jfk_noisy/review.html#u{u['id']}" for u in noisy["utterances"] if u["needs_review"]]
    assert flagged and all(link in summary.links for link in flagged)
    for link in summary.links:  # every link leads to a file of the run (summary.html sits in results/report/)
        assert (workflow.workdir / "results" / "report" / link.split("#")[0]).resolve().is_file(), link
    assert re.search(r"peak memory under 8 GB.*?pass", text, flags=re.DOTALL) and "None" not in text

    # The self-contained HTML variant renders in a real browser.
    html_report = workflow.workdir / "results" / "report.html"
    workflow.run("--report", str(html_report))
    assert html_report.stat().st_size > 100_000
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian chromium not installed (.ci/run installs it): rendering not checked")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / "report.png"
    screenshot.unlink(missing_ok=True)
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000",
         "--window-size=1400,900", f"--screenshot={screenshot}", html_report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert screenshot.stat().st_size > 20_000  # a blank page is a few kB


def test_quality_estimates_flag_the_noisy_copy_not_the_clean_one(reported) -> None:
    workflow, _ = reported
    merged = {sid: read_json(workflow.result(sid, "merged.json")) for sid in ("jfk", "jfk_noisy", "lj3", "dev00", "silence")}
    model = load_model().provenance()
    for sample_id, body in merged.items():
        validate(body, "merged")
        diarization = read_json(workflow.result(sample_id, "diarization.json"))
        validate(diarization, "diarization")
        assert body["provenance"]["quality_model"] == model == diarization["confidence"]["model"]
        # Utterance confidence is 1 - estimated WER; the recording estimate pools its words.
        utterances = body["utterances"]
        assert all(u["confidence"] == pytest.approx(max(0.0, 1 - u["estimated_wer"]), abs=2e-4) for u in utterances)
        assert all((u["review_reason"] is not None) == u["needs_review"] for u in utterances)
        assert body["quality"]["utterances_flagged"] == sum(u["needs_review"] for u in utterances)
        if utterances:
            words = [len(u["words"]) for u in utterances]
            pooled = sum(u["estimated_wer"] * n for u, n in zip(utterances, words)) / sum(words)
            assert body["quality"]["estimated_wer"] == pytest.approx(pooled, abs=1e-3)
            low, high = body["quality"]["interval"]
            assert low <= body["quality"]["estimated_wer"] <= high
        # Diarization confidence: diarization.json's from the diarizer's signals alone; merged.json's
        # cross-checked with the transcript (its words outside every diarized turn), per recording
        # and per speaker (from the speaker's own words), null with the reason without words.
        quality = body["quality"]
        coverage = uncovered_word_share([w for u in utterances for w in u["words"]],
                                        rttm_turns(workflow.result(sample_id, "diarization.rttm")))
        assert quality["uncovered_word_share"] == coverage.share()
        # At most 1: the last turn may end a rounding step after the audio does.
        assert quality["speech_share"] == pytest.approx(min(diarization["speech_s"] / diarization["duration"], 1.0),
                                                        abs=2e-4)
        if utterances:
            assert quality["diarization_reason"] is None
            assert quality["diarization_confidence"] == pytest.approx(1 - quality["estimated_der"], abs=2e-4)
        else:
            assert quality["diarization_confidence"] is None and quality["diarization_reason"] == NO_WORDS_REASON
        for speaker in body["speakers"]:
            assert speaker["uncovered_word_share"] == coverage.share(speaker["id"])
            if speaker["label"] and speaker["words"]:
                assert 0 <= speaker["diarization_confidence"] <= 1
    assert merged["silence"]["quality"]["estimated_wer"] is None and not merged["silence"]["quality"]["needs_review"]

    clean, noisy = merged["jfk"]["quality"], merged["jfk_noisy"]["quality"]
    assert not clean["needs_review"] and clean["reasons"] == [] and clean["utterances_flagged"] == 0
    assert noisy["estimated_wer"] > clean["estimated_wer"] + 0.1
    assert noisy["needs_review"] and any(reason.startswith("estimated WER") for reason in noisy["reasons"])
    assert noisy["utterances_flagged"] >= 1
    # The estimate follows the measurement: the noisy copy really is worse.
    measured = {sid: read_json(workflow.result(sid, "evaluation.json")) for sid in ("jfk", "jfk_noisy")}
    assert measured["jfk_noisy"]["wer"]["final"]["wer"] > measured["jfk"]["wer"]["final"]["wer"]
    for sample_id, evaluation in measured.items():
        estimate = evaluation["estimate"]
        assert estimate["wer"] == merged[sample_id]["quality"]["estimated_wer"]
        assert estimate["measured_wer"] == evaluation["wer"]["final"]["wer"]
    dev00 = read_json(workflow.result("dev00", "evaluation.json"))["estimate"]
    assert dev00["measured_der"] == read_json(workflow.result("dev00", "evaluation.json"))["der"]["der"]
    assert dev00["der"] == merged["dev00"]["quality"]["estimated_der"] is not None

    # Summary: estimate, diarization confidence and flag per file; the review list worst first.
    results = workflow.workdir / "results"
    summary = {row["sample_id"]: row for row in _read_tsv(results / "summary.tsv")}
    assert summary["jfk"]["needs_review"] == "False" and summary["jfk_noisy"]["needs_review"] == "True"
    assert float(summary["jfk_noisy"]["estimated_wer"]) == noisy["estimated_wer"]
    assert float(summary["jfk"]["diarization_confidence"]) == clean["diarization_confidence"]
    review = _read_tsv(results / "review.tsv")
    flagged = [sid for sid, body in merged.items() if body["quality"]["needs_review"]]
    assert list(dict.fromkeys(row["sample_id"] for row in review)) == sorted(
        flagged, key=lambda sid: -merged[sid]["quality"]["estimated_wer"])
    noisy_rows = [row for row in review if row["sample_id"] == "jfk_noisy"]
    texts = [u["text"] for u in merged["jfk_noisy"]["utterances"] if u["needs_review"]]
    assert [row["text"] for row in noisy_rows] == texts and all(row["time"] for row in noisy_rows)


def test_merge_reproduces_the_workflow_bytes(reported, tmp_path) -> None:
    """Rerunning merge on the workflow's inputs gives merged.json byte for byte, quality included."""
    workflow, _ = reported
    for sample_id in ("jfk_noisy", "dev00"):
        produced = workflow.result(sample_id, "merged.json")
        config = read_json(produced)["provenance"]["config"]
        settings = {key: config[key] for key in ("nearest_tolerance_s", "max_pause_s", "min_overlap_s")}
        again = tmp_path / f"{sample_id}.json"
        merge_files(str(workflow.result(sample_id, "transcript.refined.json")),
                    str(workflow.result(sample_id, "diarization.rttm")), str(again), settings, None,
                    diarization_path=str(workflow.result(sample_id, "diarization.json")), quality=config["quality"])
        assert again.read_bytes() == produced.read_bytes()
