"""Speaker diarization: RTTM contract, the embedded backend, the pyannote backend (random local
models, offline), and the diarize rule in real Snakemake runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import BENCH, EMPTY, REPO, ffmpeg, jobs_planned
from trax.io.annotation import Diarization, Turn, format_rttm, overlap_time, read_rttm, speech_time
from trax.diarization.pipeline import diarize_file, rule_settings
from trax.io.jsonio import read_json
from trax.io.media import NormalizeOptions, normalize
from trax.io.schemas import validate

SAMPLE = BENCH / "pyannote-audio" / "sample" / "sample.wav"
DEV00 = BENCH / "pyannote-audio" / "debug" / "dev00.wav"
#: AMI excerpts with the most overlapped speech of the dev set (13 s and 11 s in 30 s).
OVERLAPPED = {"trn09": BENCH / "pyannote-audio" / "debug" / "trn09.wav",
              "trn08": BENCH / "pyannote-audio" / "debug" / "trn08.wav"}
RTTM_LINE = re.compile(r"^SPEAKER (\S+) 1 (\d+\.\d{3}) (\d+\.\d{3}) <NA> <NA> (\S+) <NA> <NA>$")
DEFAULTS = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))["diarize"]


def check_rttm(path: Path, uri: str) -> list[Turn]:
    """Assert the RTTM contract (format, uri, sorted lines) and return the turns."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = []
    for line in lines:
        match = RTTM_LINE.match(line)
        assert match, f"not a contract RTTM line: {line!r}"
        assert match.group(1) == uri
        assert float(match.group(3)) > 0
        starts.append(float(match.group(2)))
    assert starts == sorted(starts)
    return read_rttm(path).get(uri, [])


def test_rttm_round_trip_and_statistics(tmp_path) -> None:
    turns = [Turn(1.0, 2.5, "B"), Turn(0.0, 1.2, "A"), Turn(2.0, 3.0, "A")]
    path = tmp_path / "x.rttm"
    path.write_text(format_rttm("rec_1", turns), encoding="utf-8")
    assert path.read_text().splitlines()[0] == "SPEAKER rec_1 1 0.000 1.200 <NA> <NA> A <NA> <NA>"
    assert check_rttm(path, "rec_1") == sorted(turns)
    assert speech_time(turns) == pytest.approx(3.0)
    assert overlap_time(turns) == pytest.approx(0.2 + 0.5)
    assert format_rttm("empty", []) == ""


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, Path]:
    """Normalized copies (as the workflow makes them) of the sample, dev00 and empty.wav."""
    root = tmp_path_factory.mktemp("wavs")
    result = {}
    for name, source in {"sample": SAMPLE, "dev00": DEV00, "empty": EMPTY}.items():
        result[name] = root / f"{name}.wav"
        normalize(str(source), result[name], root / f"{name}.json", name, NormalizeOptions())
    return result


def _diarize(wav: Path, out: Path, settings: dict) -> dict:
    return diarize_file(str(wav), str(out / "d.rttm"), str(out / "d.json"), wav.stem, settings)


def test_embedded_finds_the_speakers_and_is_deterministic(wavs, tmp_path) -> None:
    first, second, fixed = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    data = _diarize(wavs["sample"], first, rule_settings(DEFAULTS, {}))
    validate(data, "diarization")
    turns = check_rttm(first / "d.rttm", "sample")
    reference = read_rttm(SAMPLE.with_suffix(".rttm"))["sample"]
    # The reference has two speakers and ~22 s of speech in 30 s; the VAD must find most of it.
    assert data["num_speakers"] >= 2 and data["speakers"][0]["label"] == "SPEAKER_00"
    assert abs(speech_time(turns) - speech_time(reference)) < 4.0
    # Calibrated confidence (trax.quality.estimates) for the recording and each of its speakers.
    confidence = data["confidence"]
    assert 0 < confidence["score"] < 1 and confidence["estimated_der"] == pytest.approx(1 - confidence["score"], abs=2e-4)
    assert sorted(confidence["speakers"]) == sorted(s["label"] for s in data["speakers"])
    assert confidence["signals"]["recording"]["windows"] > 20 and confidence["reason"] is None
    _diarize(wavs["sample"], second, rule_settings(DEFAULTS, {}))
    assert (first / "d.rttm").read_bytes() == (second / "d.rttm").read_bytes()
    assert (first / "d.json").read_bytes() == (second / "d.json").read_bytes()
    # A per-file speaker count (sample sheet) overrides the automatic one.
    data = _diarize(wavs["dev00"], fixed, rule_settings(DEFAULTS, {"num_speakers": 3}))
    assert data["num_speakers"] == 3 and data["settings"]["num_speakers"] == 3
    assert Diarization.from_dict(data).rttm() == (fixed / "d.rttm").read_text()


def test_voice_encoder_without_torch_gives_resemblyzers_embeddings(wavs) -> None:
    """numpy mel features + the ONNX export of resemblyzer's LSTM give resemblyzer's own features
    and embeddings (torch + librosa) on real speech windows of two recordings."""
    import librosa
    import numpy as np
    import torch
    from resemblyzer import VoiceEncoder as TorchVoiceEncoder
    from resemblyzer.audio import wav_to_mel_spectrogram

    from trax.diarization.embedded import EmbeddedOptions, speech_regions
    from trax.diarization.encoder import load_voice_encoder, mel_filterbank, mel_spectrogram
    from trax.io.media import load_wav

    assert np.abs(mel_filterbank() - librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)).max() < 1e-7
    ours, theirs = load_voice_encoder(), TorchVoiceEncoder("cpu", verbose=False)
    cosines = []
    for name in ("sample", "dev00"):
        audio = load_wav(wavs[name])
        mel, reference = mel_spectrogram(audio), wav_to_mel_spectrogram(audio)
        assert mel.shape == reference.shape and mel.dtype == np.float32
        assert np.abs(mel - reference).max() <= 1e-5 * max(1.0, float(reference.max()))
        # 1.6 s windows (resemblyzer's partials) every 0.8 s whose centre lies in VAD speech.
        speech = np.zeros(len(mel), dtype=bool)
        for start, end in speech_regions(audio, EmbeddedOptions()):
            speech[start // 160 : end // 160] = True
        starts = [s for s in range(0, len(mel) - 160, 80) if speech[s + 80]]
        batch = np.stack([reference[s : s + 160] for s in starts])
        with torch.inference_mode():
            expected = theirs(torch.from_numpy(batch)).numpy()
        cosines += (ours(np.stack([mel[s : s + 160] for s in starts])) * expected).sum(axis=1).tolist()
    assert len(cosines) > 40 and min(cosines) >= 0.999


def test_encoder_export_is_made_on_first_use_and_repaired_when_corrupt(tmp_path) -> None:
    """Without ``make setup``'s export, the first load exports the weights (in a child process, so
    torch never enters the diarizing process); a corrupt export is made again."""
    from trax.diarization.encoder import export_path, load_voice_encoder

    target = export_path(tmp_path)
    assert not target.exists()
    load_voice_encoder(tmp_path)
    sidecar = target.with_name(target.name + ".sha256")
    assert target.is_file() and len(sidecar.read_text().strip()) == 64
    good = target.read_bytes()
    target.write_bytes(good[: len(good) // 2])
    load_voice_encoder(tmp_path)
    assert target.read_bytes() == good  # the export is deterministic, byte for byte


def test_embedded_diarize_enroll_and_link_never_import_torch(wavs, tmp_path) -> None:
    """The embedded backend's diarize job, enrollment and speaker linking, in a fresh process,
    leave no torch and no librosa (nor resemblyzer, which imports torch) in ``sys.modules``."""
    import json
    import subprocess
    import sys

    (tmp_path / "enroll.tsv").write_text(f"name\taudio\tstart\tend\nAnn\t{wavs['sample']}\t0\t10\n")
    script = f"""
import json, sys
from trax.diarization.pipeline import diarize_file, rule_settings
from trax.diarization.speakers import enroll_file, link_files
settings = rule_settings({DEFAULTS!r}, {{}})
data = diarize_file({str(wavs['sample'])!r}, "d.rttm", "d.json", "sample", settings)
section = {{**{DEFAULTS!r}, "embedded": {{**{DEFAULTS!r}["embedded"], "overlap_detector": True}}}}
diarize_file({str(wavs['sample'])!r}, "o.rttm", "o.json", "sample", rule_settings(section, {{}}))
enroll_file("enroll.tsv", "profiles.json", settings, {{}})
link_files(["d.json"], "speakers.tsv", {{}}, "profiles.json")
print(json.dumps({{"speakers": data["num_speakers"],
                  "loaded": sorted(m for m in ("torch", "librosa", "resemblyzer") if m in sys.modules)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"speakers": result["speakers"], "loaded": []} and result["speakers"] >= 2
    assert (tmp_path / "speakers.tsv").read_text().count("Ann") >= 1


def voice_windows(rng, axis: int, windows: int, dims: int, noise: float):
    """Synthetic window embeddings of one voice: unit vectors scattered by ``noise`` around axis
    ``axis`` of a ``dims``-dimensional space (voices on different axes are far apart)."""
    import numpy as np

    rows = np.eye(dims)[axis] + noise * rng.standard_normal((windows, dims))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_a_short_distinct_voice_is_not_merged_into_its_neighbour() -> None:
    """``min_speaker_s`` merges small clusters, but not one that is a distinct voice
    (``distinct_speaker_s`` of windows and ``distinct_speaker_distance`` from the nearest)."""
    import numpy as np

    from trax.diarization.embedded import _merge_small

    rng = np.random.default_rng(0)

    def voice(axis: int, windows: int) -> np.ndarray:
        return voice_windows(rng, axis, windows, 8, 0.1)

    # 10 s of one voice, 2.5 s of another (distance ~1), 1 s of a third (below distinct_speaker_s).
    embeddings = np.vstack([voice(0, 20), voice(1, 5), voice(2, 2)])
    labels = np.repeat([0, 1, 2], [20, 5, 2])
    weights = np.full(len(labels), 0.5)
    kept = _merge_small(embeddings, labels, weights, 4.0, 1.5, 0.41)
    assert kept[:25].tolist() == [0] * 20 + [1] * 5 and set(kept[25:].tolist()) < {0, 1}  # the 1 s one merged
    merged = _merge_small(embeddings, labels, weights, 4.0, 1.5, None)  # before issue 14
    assert merged.tolist() == [0] * 27


def test_silhouette_count_rule_finds_close_voices_and_honours_the_bounds() -> None:
    """``count_rule: silhouette`` picks the best-separated cut whatever the voices' absolute
    distance: four voices closer together than ``cluster_threshold`` (the threshold merges them)
    are found as four; ``min_speakers``/``max_speakers`` bound the choice; ``num_speakers`` wins."""
    import numpy as np

    from trax.diarization.embedded import EmbeddedOptions, cluster

    rng = np.random.default_rng(3)
    centre = np.ones(16) / 4.0
    voices = [centre + 0.18 * np.eye(16)[k] for k in range(4)]  # pairwise cosine distance ~0.03

    def windows(voice: np.ndarray, n: int) -> np.ndarray:
        rows = voice + 0.02 * rng.standard_normal((n, 16))
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    embeddings = np.vstack([windows(v, 30) for v in voices])
    weights = np.full(len(embeddings), 0.5)
    threshold = EmbeddedOptions()
    silhouette = EmbeddedOptions(count_rule="silhouette")
    assert cluster(embeddings, weights, threshold, None, None, None)[0].max() == 0  # all merged
    labels, facts = cluster(embeddings, weights, silhouette, None, None, None)
    assert facts["reason"] == "silhouette" and facts["silhouette"] > 0.5
    assert [len(set(labels[k * 30 : (k + 1) * 30].tolist())) for k in range(4)] == [1, 1, 1, 1]
    assert len(set(labels.tolist())) == 4
    assert cluster(embeddings, weights, silhouette, None, None, 3)[0].max() + 1 == 3
    assert cluster(embeddings, weights, silhouette, None, 5, None)[0].max() + 1 == 5
    assert cluster(embeddings, weights, silhouette, 2, None, None)[0].max() + 1 == 2
    # One voice only: no cut is well separated, so one speaker.
    single = windows(voices[0], 60)
    assert cluster(single, np.full(60, 0.5), silhouette, None, None, None)[0].max() == 0


def test_spread_count_rule_counts_voices_and_honours_the_bounds() -> None:
    """``count_rule: spread`` (issue 31) picks the cut whose speakers are tight enough for their
    number: three well-separated voices are three, one voice is one, a higher ``count_penalty``
    never gives more speakers, and ``min/max/num_speakers`` bound or fix the count."""
    import numpy as np

    from trax.diarization.embedded import EmbeddedOptions, cluster

    rng = np.random.default_rng(11)

    def voice(axis: int, windows: int) -> np.ndarray:
        return voice_windows(rng, axis, windows, 16, 0.15)

    embeddings = np.vstack([voice(0, 40), voice(1, 30), voice(2, 30)])
    weights = np.full(len(embeddings), 0.5)
    spread = EmbeddedOptions(count_rule="spread", count_penalty=2.0)
    labels, facts = cluster(embeddings, weights, spread, None, None, None)
    assert facts["reason"] == "spread" and facts["num_speakers_auto"] == 3
    assert [len(set(labels[a:b].tolist())) for a, b in ((0, 40), (40, 70), (70, 100))] == [1, 1, 1]
    single = voice(3, 80)
    assert cluster(single, np.full(80, 0.5), spread, None, None, None)[0].max() == 0
    counts = [int(cluster(embeddings, weights, EmbeddedOptions(count_rule="spread", count_penalty=p),
                          None, None, None)[0].max()) + 1 for p in (0.5, 2.0, 40.0, 400.0)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 1
    assert cluster(embeddings, weights, spread, None, None, 2)[0].max() + 1 == 2
    assert cluster(embeddings, weights, spread, None, 4, None)[0].max() + 1 == 4
    assert cluster(single, np.full(80, 0.5), spread, None, 2, None)[0].max() + 1 == 2
    assert cluster(embeddings, weights, spread, 5, None, None)[0].max() + 1 == 5


def test_longer_clustering_windows_on_real_audio(wavs, tmp_path) -> None:
    """``cluster_window_s`` (issue 31): longer windows are embedded from the same speech and
    clustered, the short ones still label the frames; a requested count is still honoured, also
    through the diarize stage with the config keys (and the spread rule), whose output validates."""
    import numpy as np

    from trax.diarization.embedded import EmbeddedOptions, embed_speech, label_frames, load_embedded_models
    from trax.io.media import load_wav

    models, audio = load_embedded_models(), load_wav(wavs["dev00"])
    options = EmbeddedOptions(cluster_window_s=2.0, cluster_hop_s=0.5)
    speech = embed_speech(models, audio, options)
    plain = embed_speech(models, audio, EmbeddedOptions())
    assert plain.cluster_embeddings is None and np.array_equal(plain.embeddings, speech.embeddings)
    lengths = speech.cluster_ends - speech.cluster_starts
    assert lengths.max() == 200 and (speech.ends - speech.starts).max() == 100
    assert speech.cluster_embeddings.shape == (len(speech.cluster_starts), 256)
    assert speech.cluster_starts[-1] < speech.starts[-1] and speech.cluster_ends[-1] == speech.ends[-1]
    turns, details = label_frames(speech, options)
    assert details["cluster_windows"] == len(speech.cluster_starts) and 1 <= details["num_speakers_auto"] <= 3
    assert turns and all(turn.end <= len(audio) / 16000 + 0.01 for turn in turns)  # 10 ms frame grid
    for count in (1, 3):
        assert len({turn.speaker for turn in label_frames(speech, options, num_speakers=count)[0]}) == count
    assert len({turn.speaker for turn in label_frames(speech, options, min_speakers=3)[0]}) >= 3
    section = {**DEFAULTS, "embedded": {**DEFAULTS["embedded"], "cluster_window_s": 2.0, "count_rule": "spread"}}
    data = _diarize(wavs["dev00"], tmp_path, rule_settings(section, {"num_speakers": 3}))
    assert data["num_speakers"] == 3 and data["details"]["cluster_windows"] > 0
    validate(read_json(tmp_path / "d.json"), "diarization")


def test_resegmentation_drops_a_spurious_speaker_and_honours_the_count(wavs, tmp_path) -> None:
    """Resegmentation (``resegment_iterations``/``resegment_min_s``) on real audio: dev00 (two
    people in the reference) clusters into three; relabelling with centroids from the frames each
    speaker won drops the third and lowers the DER. A requested count is never cut below."""
    from trax.diarization.embedded import EmbeddedOptions, embed_speech, label_frames, load_embedded_models
    from trax.io.media import load_wav
    from trax.quality.evaluation import diarization_error

    speech = embed_speech(load_embedded_models(), load_wav(wavs["dev00"]), EmbeddedOptions())
    debug = DEV00.parent

    def der(turns: list[Turn]) -> float:
        hypothesis = tmp_path / "dev00.rttm"
        hypothesis.write_text(format_rttm("dev00", turns), encoding="utf-8")
        return diarization_error("dev00", str(debug / "debug.development.rttm"), str(hypothesis),
                                 str(debug / "debug.development.uem")).der

    def speakers(turns: list[Turn]) -> int:
        return len({turn.speaker for turn in turns})

    first_pass, facts = label_frames(speech, EmbeddedOptions(resegment_iterations=0))
    resegmented, details = label_frames(speech, EmbeddedOptions())
    assert speakers(first_pass) == facts["num_speakers_auto"] == 3
    assert speakers(resegmented) == details["num_speakers_auto"] == 2
    assert der(resegmented) < der(first_pass) - 0.05
    # Dropping stops at the requested count, and an exact count is never dropped from.
    greedy = EmbeddedOptions(resegment_min_s=60.0)
    assert speakers(label_frames(speech, greedy)[0]) == 1
    assert speakers(label_frames(speech, greedy, min_speakers=2)[0]) == 2
    assert speakers(label_frames(speech, greedy, num_speakers=3)[0]) == 3


def test_resegmentation_keeps_a_short_distinct_voice() -> None:
    """A voice with 3 s of speech (under ``resegment_min_s``) that is far from the others is a
    person, not stray windows: resegmentation keeps it, as the small-cluster rule does."""
    import numpy as np

    from trax.diarization.embedded import EmbeddedOptions, SpeechEmbeddings, label_frames

    rng = np.random.default_rng(7)
    seconds = [20, 3, 20]  # voices 0, 1 (short), 2 in turn; 10 ms frames, 1-s windows every 0.5 s
    voice = np.repeat([0, 1, 2], [100 * s for s in seconds])
    starts = np.arange(0, len(voice) - 100 + 1, 50)
    rows = np.eye(8)[voice[starts + 50]] + 0.1 * rng.standard_normal((len(starts), 8))
    speech = SpeechEmbeddings(frame_times=np.arange(len(voice)) * 160, starts=starts, ends=starts + 100,
                              embeddings=(rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32),
                              regions=1)
    turns, details = label_frames(speech, EmbeddedOptions())
    assert details["num_speakers_auto"] == 3 and len({turn.speaker for turn in turns}) == 3
    short = [turn for turn in turns if 20.5 < (turn.start + turn.end) / 2 < 22.5]
    assert len(short) == 1 and short[0].end - short[0].start > 2.0
    # Not distinct enough (the rule off): dropped, its frames go to the neighbours.
    dropped, _ = label_frames(speech, EmbeddedOptions(distinct_speaker_distance=None, min_speaker_s=2.0))
    assert len({turn.speaker for turn in dropped}) == 2


def test_second_pass_splits_two_voices_and_merges_close_clusters() -> None:
    """``split_distance``: a cluster holding two voices is cut in two (not one holding a single
    voice, nor halves under ``split_min_s``); ``merge_distance``: clusters of one voice are
    merged, down to ``min_speakers`` at most."""
    import numpy as np

    from trax.diarization.embedded import merge_close_clusters, split_clusters

    rng = np.random.default_rng(5)

    def voice(axis: int, windows: int) -> np.ndarray:
        return voice_windows(rng, axis, windows, 8, 0.15)

    embeddings = np.vstack([voice(0, 20), voice(1, 6), voice(2, 20)])
    weights = np.full(len(embeddings), 0.5)
    joined = np.repeat([0, 1], [26, 20])  # voices 0 and 1 in one cluster
    split = split_clusters(embeddings, joined, weights, 0.3, 2.0, 12)
    assert split.max() == 2 and len(set(split[:20].tolist())) == 1 and len(set(split[20:26].tolist())) == 1
    assert set(split[:20].tolist()).isdisjoint(split[20:].tolist())
    assert split_clusters(embeddings, joined, weights, 0.3, 4.0, 12).max() == 1  # 3 s half: too short
    single = np.repeat([0, 1], [20, 26])
    assert split_clusters(embeddings, single, weights, 0.3, 2.0, 12)[:20].tolist() == [0] * 20
    halves = np.repeat([0, 1, 2, 3], [10, 10, 6, 20])  # voice 0 in two clusters
    merged = merge_close_clusters(embeddings, halves, 0.3, 1)
    assert merged.tolist() == np.repeat([0, 1, 2], [20, 6, 20]).tolist()
    assert merge_close_clusters(embeddings, halves, 0.3, 4).tolist() == halves.tolist()


@pytest.mark.parametrize("states", [2, 8, 9, 30])
def test_blockwise_viterbi_with_packed_way_back_finds_the_whole_path(states: int) -> None:
    """The long-recording Viterbi (score blocks, one bit per frame and label for the way back)
    gives the plain Viterbi's path, also across byte boundaries of the packed bits."""
    import numpy as np

    from trax.diarization.embedded import viterbi, viterbi_blocks

    scores = np.random.default_rng(states).normal(size=(2000, states))
    blocks = (scores[lo : lo + 700] for lo in range(0, 2000, 700))
    path = viterbi_blocks(blocks, 2000, states, 1.5)
    assert path.tolist() == viterbi(scores, 1.5).tolist()
    assert len(set(path.tolist())) > 1  # the penalty lets the path switch: the way back is exercised


@pytest.mark.parametrize("overlap", [False, True])
def test_empty_audio_gives_an_empty_rttm(wavs, tmp_path, overlap: bool) -> None:
    section = {**DEFAULTS, "embedded": {**DEFAULTS["embedded"], "overlap_detector": overlap}}
    data = _diarize(wavs["empty"], tmp_path, rule_settings(section, {}))
    assert (tmp_path / "d.rttm").read_text() == ""
    assert data["turns"] == [] and data["num_speakers"] == 0
    assert data["confidence"]["score"] is None and data["confidence"]["reason"] == "no speech windows"
    validate(read_json(tmp_path / "d.json"), "diarization")


def test_overlap_frames_and_nearest_other_speaker() -> None:
    """Flagged frames come in runs of at least MIN_RUN; a flagged frame's second speaker is the
    nearest frame in time labelled someone else (ties: the earlier one); one speaker: none."""
    import numpy as np

    from trax.diarization.overlap import MIN_RUN, nearest_other_speaker, overlap_frames

    p = np.zeros(60)
    p[5 : 5 + MIN_RUN - 1] = 0.9
    p[30 : 30 + MIN_RUN] = 0.9
    flags = overlap_frames(p, 0.5)
    assert flags[30 : 30 + MIN_RUN].all() and flags.sum() == MIN_RUN
    assert not overlap_frames(p, 0.95).any()
    path = np.array([0, 0, 0, 1, 1, 2, 2, 2, -1, 0])
    assert nearest_other_speaker(path).tolist() == [1, 1, 1, 0, 2, 1, 1, 0, -1, 2]
    assert (nearest_other_speaker(np.zeros(5, dtype=int)) == -1).all()


def _frame_counts(turns, end: float):
    import numpy as np

    counts = np.zeros(int(end * 100) + 1, dtype=np.int32)
    for turn in turns:
        counts[int(round(turn.start * 100)) : int(round(turn.end * 100))] += 1
    return counts


def test_overlap_detector_on_real_overlapped_speech(tmp_path) -> None:
    """``overlap_detector`` (issue 31) on the two AMI excerpts with the most overlap: the acoustic
    stage scores overlapped frames higher than one-voice frames; the diarize stage with the
    detector on outputs overlapped speech, most of it where the reference overlaps, byte for byte
    the same on a rerun (and none with it off)."""
    import numpy as np

    from trax.diarization.embedded import EmbeddedOptions, embed_speech, load_embedded_models
    from trax.io.media import load_wav

    models = load_embedded_models()
    section = {**DEFAULTS, "embedded": {**DEFAULTS["embedded"], "overlap_detector": True}}
    hits = flagged = 0
    for name, source in OVERLAPPED.items():
        wav = tmp_path / f"{name}.wav"
        normalize(str(source), wav, tmp_path / f"{name}.json", name, NormalizeOptions())
        reference = read_rttm(source.parent / "debug.train.rttm")[name]
        audio = load_wav(wav)
        speech = embed_speech(models, audio, EmbeddedOptions(overlap_detector=True))
        assert speech.overlap.shape == speech.frame_times.shape
        counts = _frame_counts(reference, len(audio) / 16000 + 1)[(speech.frame_times + 80) // 160]
        assert speech.overlap[counts >= 2].mean() > 2 * speech.overlap[counts == 1].mean()
        off = _diarize(wav, tmp_path / f"{name}-off", rule_settings(DEFAULTS, {}))
        on = _diarize(wav, tmp_path / f"{name}-on", rule_settings(section, {}))
        # Off, turns meet end to end (rounding to the RTTM's milliseconds leaves 10 ms at most).
        assert off["overlap_s"] <= 0.02 and on["overlap_s"] >= on["details"]["overlap_detected_s"] > 0.3
        validate(on, "diarization")
        turns = [Turn(t["start"], t["end"], t["speaker"]) for t in on["turns"]]
        ours = _frame_counts(turns, len(audio) / 16000 + 1) >= 2
        theirs = _frame_counts(reference, len(audio) / 16000 + 1) >= 2
        hits += int((ours & theirs).sum())
        flagged += int(ours.sum())
        again = _diarize(wav, tmp_path / f"{name}-again", rule_settings(section, {}))
        assert (tmp_path / f"{name}-on" / "d.rttm").read_bytes() == (tmp_path / f"{name}-again" / "d.rttm").read_bytes()
        assert again == on
    assert flagged > 50 and hits > 0.6 * flagged


def test_bad_settings_are_one_clear_error() -> None:
    from trax.diarization.pipeline import DiarizeOptions
    from trax.errors import TraxError

    with pytest.raises(TraxError, match="count_rule"):
        DiarizeOptions.from_config({**rule_settings(DEFAULTS, {}), "embedded": {"count_rule": "eigengap"}})
    with pytest.raises(TraxError, match="cluster_window_s.*shorter than window_s"):
        DiarizeOptions.from_config({**rule_settings(DEFAULTS, {}), "embedded": {"cluster_window_s": 0.5}})
    with pytest.raises(TraxError, match="min_speakers"):
        DiarizeOptions.from_config({**rule_settings(DEFAULTS, {}), "min_speakers": 4, "max_speakers": 2})
    with pytest.raises(TraxError, match="needs a model"):
        DiarizeOptions.from_config({"backend": "pyannote", "pyannote": {}}).pyannote.source()


@pytest.fixture(scope="module")
def pyannote_pipeline(tmp_path_factory) -> Path:
    from pyannote_models import build_pipeline

    return build_pipeline(tmp_path_factory.mktemp("pyannote-pipeline"))


def test_pyannote_backend_runs_a_local_pipeline(pyannote_pipeline, tmp_path) -> None:
    clip = tmp_path / "clip.wav"
    ffmpeg("-t", "12", "-i", str(SAMPLE), str(tmp_path / "clip.src.wav"))
    normalize(str(tmp_path / "clip.src.wav"), clip, tmp_path / "clip.json", "clip", NormalizeOptions())
    section = {**DEFAULTS, "backend": "pyannote", "pyannote": {"model": str(pyannote_pipeline)}}
    settings = rule_settings(section, {"max_speakers": 2})
    assert "embedded" not in settings and settings["max_speakers"] == 2
    data = _diarize(clip, tmp_path, settings)
    validate(data, "diarization")
    check_rttm(tmp_path / "d.rttm", "clip")
    assert data["backend"] == "pyannote" and data["num_speakers"] <= 2
    # pyannote reports no signals the quality model was calibrated on: no figure, and why.
    assert data["confidence"]["score"] is None and "no confidence signals" in data["confidence"]["reason"]
    files = data["provenance"]["models"]["diarization"]["files_sha256"]
    assert {"config.yaml", "segmentation/pytorch_model.bin", "embedding/pytorch_model.bin", "plda/plda.npz"} <= set(files)


@pytest.mark.slow
def test_diarize_rule_formats_server_and_reruns(make_workflow, tmp_path) -> None:
    """Stereo, 8 kHz and 32-bit float inputs; a sample-sheet speaker count; server on/off give the
    same bytes; a diarization setting reruns diarize only."""
    sources = tmp_path / "sources"
    sources.mkdir()
    clip = ("-t", "15", "-i", str(SAMPLE))  # both speakers talk in the first 15 s
    ffmpeg(*clip, "-ac", "2", str(sources / "stereo.wav"))
    ffmpeg(*clip, "-ar", "8000", str(sources / "narrow.wav"))
    ffmpeg(*clip, "-c:a", "pcm_f32le", str(sources / "float.wav"))
    sheet = tmp_path / "samples.tsv"
    rows = [("stereo", "stereo.wav", ""), ("narrow", "narrow.wav", "2"), ("float", "float.wav", "")]
    sheet.write_text("id\tpath\tnum_speakers\n" + "".join(f"{i}\tsources/{p}\t{n}\n" for i, p, n in rows))
    targets = [f"results/{sample}/diarization.{ext}" for sample, _, _ in rows for ext in ("rttm", "json")]

    served = make_workflow(str(sheet), name="served")
    served.run(*targets)
    assert served.server("stats")["requests"]["diarize"] == 3
    in_process = make_workflow(str(sheet), name="in_process", server={"enabled": False})
    in_process.run(*targets)
    for sample, _, count in rows:
        rttm = served.result(sample, "diarization.rttm")
        assert rttm.read_bytes() == in_process.result(sample, "diarization.rttm").read_bytes()
        assert check_rttm(rttm, sample), f"{sample}: no speech found"
        data = read_json(served.result(sample, "diarization.json"))
        validate(data, "diarization")
        if count:
            assert data["num_speakers"] == int(count)

    # A diarization setting reruns diarize only (normalize and the transcripts are untouched).
    served.write_config({"inputs": str(sheet), "diarize": {"embedded": {"switch_penalty": 5.0}}})
    assert jobs_planned(served.run("-n", *targets)) == {"diarize": 3}
    served.run(*targets)
    assert read_json(served.result("float", "diarization.json"))["settings"]["embedded"]["switch_penalty"] == 5.0
    assert "Nothing to be done" in served.run("-n", *targets).output
