"""Helpers the bench scripts share. Scripts import this module, never one another.

Importing it puts this checkout's ``src`` first on ``sys.path``, so the scripts' ``import trax``
gets this checkout's package, not an installed copy. Not a bench itself: nothing to run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trax.diarization.embedded import EmbeddedOptions  # noqa: E402
from trax.io.media import NormalizeOptions, find_ffmpeg, load_wav, normalize  # noqa: E402
from trax.io.samples import sample_id_from_name  # noqa: E402
from trax.io.annotation import Turn, rttm_turns  # noqa: E402
from trax.quality.benchdata import DerItem, VoiceClip, benchdata_dir, der_items  # noqa: E402

#: Where the benches keep what they build (recordings, normalized copies, caches, logs).
OUT = REPO / "bench" / "out"

#: bench/end_to_end.py's recording: its length in seconds, and its parts in order (the last one
#: is cut so the total is exactly TARGET_S). fast_pass.py and vad_share.py decode it too.
TARGET_S = 300.0
PARTS = [
    "const-me-whisper/columbia.16k.wav",
    "pyannote-audio/sample/sample.wav",
    "pyannote-audio/debug/dev00.wav",
    "pyannote-audio/debug/dev01.wav",
    "pyannote-audio/debug/trn01.wav",
    "pyannote-audio/debug/trn04.wav",
]


def workflow_config() -> dict:
    """config/config.yaml of this checkout (the workflow's defaults)."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def with_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with ``section.key=value`` settings applied (values parsed as YAML)."""
    for override in overrides:
        dotted, value = override.split("=", 1)
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[key] = yaml.safe_load(value)
    return config


def snakemake_command(workdir: Path, config: Path, cores: int = 2, checkout: Path = REPO) -> list[str]:
    """The Snakemake command (this environment's snakemake) for ``checkout``'s workflow in ``workdir``."""
    return [str(Path(sys.executable).with_name("snakemake")), "-s", str(checkout / "Snakefile"), "-d", str(workdir),
            "--configfile", str(config), "--cores", str(cores)]


def snakemake(workdir: Path, config: Path, cores: int = 2, *extra: str, checkout: Path = REPO,
              env: dict[str, str] | None = None) -> float:
    """Run the workflow in ``workdir`` (quiet, output captured); return its wall time in seconds."""
    command = [*snakemake_command(workdir, config, cores, checkout), "--quiet", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def snakemake_cpu(workdir: Path, config: Path, cores: int = 2, *extra: str) -> tuple[float, float]:
    """Run the workflow as :func:`snakemake` does; return (wall s, CPU s). CPU is user + system
    time of Snakemake and its job processes, plus the model server's (started by the run, still
    up: read before the caller stops it). Divided by the cores, it bounds the wall time from below."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = snakemake(workdir, config, cores, *extra)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    try:
        server = psutil.Process(server_call(workdir, "ping")["pid"]).cpu_times()
        cpu += server.user + server.system
    except (subprocess.CalledProcessError, psutil.Error):
        pass  # no server (disabled in the config)
    return wall, cpu


def server_call(workdir: Path, method: str, checkout: Path = REPO) -> dict:
    """One request to the model server of ``workdir`` (``checkout``'s client); its reply."""
    code = f"import json; from trax.runtime.client import request; print(json.dumps(request({method!r})))"
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(checkout / "src")})
    return yaml.safe_load(out.stdout)


def stop_server(workdir: Path, check: bool = True) -> None:
    """Shut down the model server of ``workdir``, if one is running."""
    code = "import contextlib; from trax.runtime.client import request, ServerUnavailable\n" \
           "with contextlib.suppress(ServerUnavailable): request('shutdown')"
    subprocess.run([sys.executable, "-c", code], cwd=workdir, check=check)


def write_sheet(items: list, prefix: str) -> Path:
    """A samples sheet (``id``, ``path``) of benchdata items, in a new temporary folder."""
    sheet = Path(tempfile.mkdtemp(prefix=prefix)) / "batch.tsv"
    sheet.write_text("id\tpath\n" + "".join(f"{sample_id_from_name(i.path)}\t{i.path}\n" for i in items))
    return sheet


def ffmpeg_wav(source: Path, target: Path) -> None:
    """16 kHz mono s16 copy of ``source``'s first audio stream (what the workflow's normalize writes)."""
    subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-y", "-i", str(source), "-map", "0:a:0", "-ac", "1",
                    "-ar", "16000", "-c:a", "pcm_s16le", "-bitexact", str(target)], check=True)


def normalized(paths: list[Path], folder: Path) -> dict[Path, Path]:
    """16 kHz mono s16 copies (what the workflow's normalize writes), made once with ffmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for index, path in enumerate(paths):
        wav = folder / f"{index:02d}_{path.stem}.wav"
        if not wav.exists():
            ffmpeg_wav(path, wav)
        result[path] = wav
    return result


def build_recording(destination: Path) -> Path:
    """Concatenate PARTS (16 kHz mono) and cut at TARGET_S seconds."""
    sources = [benchdata_dir() / part for part in PARTS]
    command = [find_ffmpeg().ffmpeg, "-v", "error", "-y"]
    for source in sources:
        command += ["-i", str(source)]
    resampled = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(sources)))
    joined = "".join(f"[a{i}]" for i in range(len(sources)))
    command += ["-filter_complex", f"{resampled}{joined}concat=n={len(sources)}:v=0:a=1[out]", "-map", "[out]",
                "-t", str(TARGET_S), "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", "-bitexact", str(destination)]
    destination.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(command, check=True)
    return destination


# --- voices cut into clips, and the pauses a speech reference leaves out (speakers.py, meetings) ---

RATE = 16000
#: Pauses the speech reference leaves out (see bench/README.md): at least PAUSE_S seconds in
#: which no sample of the levelled clip reaches PAUSE_DBFS (ffmpeg silencedetect).
PAUSE_DBFS = -35.0
PAUSE_S = 0.3

class Audio:
    """Decoded sources (normalized like the workflow does), cut into clips."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cache: dict[Path, np.ndarray] = {}

    def clip(self, clip: VoiceClip) -> np.ndarray:
        if clip.path not in self.cache:
            wav = self.workdir / f"{len(self.cache)}.wav"
            normalize(str(clip.path), str(wav), str(wav.with_suffix(".json")), "src", NormalizeOptions())
            self.cache[clip.path] = load_wav(wav)
        audio = self.cache[clip.path]
        first = int((clip.start or 0.0) * RATE)
        last = len(audio) if clip.end is None else int(clip.end * RATE)
        return audio[first:last]


def level(audio: np.ndarray, rms: float = 0.05) -> np.ndarray:
    return audio * (rms / max(float(np.sqrt(np.mean(audio ** 2))), 1e-6))


def pauses(samples: np.ndarray, noise_dbfs: float = PAUSE_DBFS, min_s: float = PAUSE_S) -> list[tuple[float, float]]:
    """Pauses inside one levelled clip, (start, end) seconds: ffmpeg ``silencedetect`` (every
    sample below ``noise_dbfs`` for at least ``min_s``). An energy rule, independent of the
    diarizer's Silero VAD."""
    run = subprocess.run([find_ffmpeg().ffmpeg, "-hide_banner", "-nostats", "-f", "f32le", "-ar", str(RATE),
                          "-ac", "1", "-i", "pipe:", "-af", f"silencedetect=noise={noise_dbfs}dB:d={min_s}",
                          "-f", "null", "-"], input=samples.astype("<f4").tobytes(), capture_output=True, check=True)
    log = run.stderr.decode("utf-8", "replace")
    starts = [max(0.0, float(v)) for v in re.findall(r"silence_start: (-?[\d.]+)", log)]
    ends = [float(v) for v in re.findall(r"silence_end: ([\d.]+)", log)]
    duration = len(samples) / RATE
    return [(start, min(ends[i] if i < len(ends) else duration, duration)) for i, start in enumerate(starts)]


def speech_turns(samples: np.ndarray, start: float, person: str, noise_dbfs: float = PAUSE_DBFS):
    """One clip's reference turn without its pauses: [(start, end, person)] in recording time."""
    turns, cursor = [], 0.0
    for a, b in pauses(samples, noise_dbfs) + [(len(samples) / RATE, len(samples) / RATE)]:
        if a > cursor:
            turns.append((start + cursor, start + a, person))
        cursor = max(cursor, b)
    return turns


# --- simulated meetings (meetings.py, diarize.py): exact who-spoke-when from single-voice clips --

#: benchdata-ml clips of one speaker each whose speakers are all different people (Picovoice's
#: clips are left out: one unnamed voice may have read several languages).
ML_VOICES = ("de/de_fleurs_000675", "es/es_css10_19demarzo_0008", "fr/fr_fleurs_000378", "it/it_css10_karolystria_0550",
             "pt/pt_fleurs_cd000", "ja/ja_fleurs_000595", "zh/zh_aishell_BAC009S0724W0121", "zh/zh_fleurs_000328",
             "zh/zh_css10_call_to_arms_0023", "ru/ru_deepspeech_smoke", "sv/sv_nst_u0016003")


def meeting_voices() -> dict[str, list[VoiceClip]]:
    """Voices of people who are in none of the 13 scored dev recordings (so meetings built from them
    can choose settings that are then scored on dev): the non-AMI people of
    :func:`trax.quality.benchdata.voice_pool` (enrollment and test clips) and 11 benchdata-ml speakers."""
    from trax.quality.benchdata import voice_pool

    pool = voice_pool()
    voices = {person: clips["enroll"] + clips["test"] for person, clips in pool.items()
              if not any("pyannote-audio" in str(c.path) for c in clips["enroll"] + clips["test"])}
    ml = Path(os.environ.get("TRAX_BENCHDATA_ML") or benchdata_dir().parent / "benchdata-ml")
    for name in ML_VOICES:
        voices[name.split("/")[1]] = [VoiceClip(name, ml / f"{name}.16k.wav")]
    return voices


@dataclass
class Meeting:
    """One simulated conversation.

    Attributes:
        uri: Its id (``m<seed>_<index>``).
        audio: 16 kHz float32 samples.
        reference: Who speaks when: (start, end, person) without each clip's pauses; overlaps kept.
        kind: How it was drawn: speaker count, ``balanced``/``dominant+rare``, ``levelled``/``gains``.
    """

    uri: str
    audio: np.ndarray
    reference: list[tuple[float, float, str]]
    kind: str

    @property
    def speakers(self) -> int:
        return len({person for _, _, person in self.reference})


def simulated_meetings(seed: int, count: int, audio: Audio, voices: dict[str, list[VoiceClip]] | None = None,
                       room: bool = False, overlap_share: float = 0.15,
                       overlap_s: tuple[float, float] = (0.2, 1.0)) -> list[Meeting]:
    """``count`` conversations of 2-6 people, deterministic by ``seed`` (see bench/README.md).

    Each turn is a stretch of 1.5-8 s of one person's clips (a rare speaker's: 1-3 s, at most two
    turns); the next speaker is drawn by weight (balanced: equal; dominant+rare: one person 4x,
    one 0.25x), never the one who just spoke. Between turns a pause of 0.1-1.2 s, or (15 %) an
    overlap of 0.2-1.0 s. Half the meetings are levelled (every clip at the same RMS), half give
    each person a gain of -14..0 dB. The reference leaves out each clip's pauses (:func:`speech_turns`).
    ``room``: the mix also goes through one room (:func:`_room`), the same for every voice of a meeting.
    ``overlap_share``: the share of turns that overlap the previous one, by ``overlap_s`` seconds
    (``bench/overlap.py`` trains on mixtures that overlap more often and longer).
    """
    import random

    voices = voices or meeting_voices()
    people = sorted(voices)
    rng = random.Random(seed)
    meetings = []
    for index in range(count):
        size = rng.randint(2, 6)
        chosen = rng.sample(people, size)
        skewed = size >= 3 and rng.random() < 0.5
        levelled = rng.random() < 0.5
        weights = {p: 1.0 for p in chosen}
        rare = None
        if skewed:
            weights[chosen[0]], rare = 4.0, chosen[-1]
            weights[rare] = 0.25
        gains = {p: 1.0 if levelled else 10 ** (rng.uniform(-14.0, 0.0) / 20) for p in chosen}
        order = [p for p in chosen if p != rare]
        rng.shuffle(order)
        turns = order + ([rare] if rare else [])
        target = rng.uniform(45.0, 90.0)
        placed: list[tuple[int, np.ndarray, str]] = []
        clock = 0
        rare_turns = 0
        while True:
            person = turns.pop(0) if turns else None
            if person is None:
                previous = placed[-1][2]
                options = [p for p in chosen if p != previous and not (p == rare and rare_turns >= 2)]
                person = rng.choices(options, [weights[p] for p in options])[0]
            rare_turns += person == rare
            clip = rng.choice(voices[person])
            samples = level(audio.clip(clip))
            length = int(RATE * (rng.uniform(1.0, 3.0) if person == rare else rng.uniform(1.5, 8.0)))
            start = rng.randint(0, max(0, len(samples) - length))
            piece = samples[start : start + length]
            if placed:
                if rng.random() < overlap_share:
                    gap = -min(int(RATE * rng.uniform(*overlap_s)), len(placed[-1][1]) // 2, len(piece) // 2)
                else:
                    gap = int(RATE * rng.uniform(0.1, 1.2))
                clock = placed[-1][0] + len(placed[-1][1]) + gap
            placed.append((clock, piece, person))
            if not turns and clock / RATE >= target:
                break
        total = max(at + len(piece) for at, piece, _ in placed)
        mix = np.zeros(total, dtype=np.float32)
        reference = []
        for at, piece, person in placed:
            mix[at : at + len(piece)] += gains[person] * piece
            reference += speech_turns(piece, at / RATE, person)
        if room:
            mix = _room(mix, random.Random(f"{seed}-{index}-room"))
        kind = f"{size} spk, {'dominant+rare' if skewed else 'balanced'}, {'levelled' if levelled else 'gains'}"
        meetings.append(Meeting(f"m{seed}_{index:02d}", np.clip(mix, -1.0, 1.0), sorted(reference), kind))
    return meetings


def _room(mix: np.ndarray, rng) -> np.ndarray:
    """One shared acoustic path: a synthetic room response (exponentially decaying noise, RT60
    0.3-0.6 s, direct sound kept), then steady noise 30-40 dB below the speech, so the voices of a
    meeting share a channel as they do around one microphone. Speech times do not move."""
    import numpy as np

    rt60 = rng.uniform(0.3, 0.6)
    length = int(rt60 * RATE)
    noise = np.random.default_rng(rng.randrange(2**32))
    tail = noise.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)
    response = np.concatenate([[1.0], 0.3 * tail / np.sqrt(np.sum(tail**2))])
    wet = np.convolve(mix, response)[: len(mix)]
    rms = float(np.sqrt(np.mean(wet**2))) or 1e-6
    floor = noise.standard_normal(len(wet)) * rms * 10 ** (-rng.uniform(30.0, 40.0) / 20)
    return (wet + floor).astype(np.float32)


def der_scores(rows: list[tuple[str, list, list, list[tuple[float, float]]]]) -> dict[str, float]:
    """Corpus DER of ``(uri, reference turns, hypothesis turns, uem)`` rows (turns: Turn or
    (start, end, speaker)): collar 0 and ±0.25 s, miss / false alarm / confusion at collar 0 (% of
    reference speech), exact speaker counts and the mean signed count error (hypothesis - reference)."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: list, uri: str) -> Annotation:
        result = Annotation(uri=uri)
        for index, turn in enumerate(turns):
            start, end, speaker = (turn.start, turn.end, turn.speaker) if hasattr(turn, "speaker") else turn
            result[Segment(start, end), index] = speaker
        return result

    metrics = {0.0: DiarizationErrorRate(collar=0.0, skip_overlap=False),
               0.5: DiarizationErrorRate(collar=0.5, skip_overlap=False)}
    errors = []
    for uri, reference, hypothesis, uem in rows:
        ref, hyp = annotation(reference, uri), annotation(hypothesis, uri)
        timeline = Timeline([Segment(s, e) for s, e in uem], uri=uri)
        for metric in metrics.values():
            metric(ref, hyp, uem=timeline)
        errors.append(len(hyp.labels()) - len(ref.labels()))
    components = metrics[0.0].accumulated_
    total = max(components["total"], 1e-9)
    return {"der0": 100 * abs(metrics[0.0]), "der25": 100 * abs(metrics[0.5]),
            "miss": 100 * components["missed detection"] / total, "fa": 100 * components["false alarm"] / total,
            "conf": 100 * components["confusion"] / total, "count_ok": sum(e == 0 for e in errors),
            "count_err": sum(errors) / max(len(errors), 1), "items": len(errors)}


def load_items(workdir: Path) -> list[tuple[DerItem, object]]:
    """Normalize every item like the workflow does and load the 16 kHz samples."""
    loaded = []
    for item in der_items():
        wav = workdir / f"{item.uri}.wav"
        normalize(str(item.path), str(wav), str(workdir / f"{item.uri}.json"), item.uri, NormalizeOptions())
        loaded.append((item, load_wav(wav)))
    return loaded


def annotation(turns: list[Turn], uri: str):
    """A pyannote Annotation of ``turns``."""
    from pyannote.core import Annotation, Segment

    result = Annotation(uri=uri)
    for index, turn in enumerate(turns):
        result[Segment(turn.start, turn.end), index] = turn.speaker
    return result


def per_file_components(items, hypotheses: dict[str, list[Turn]]) -> dict[str, dict]:
    """Per recording: DER components at collar 0 and 0.5, and whether the speaker count is exact."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    result = {}
    for item, _ in items:
        reference = annotation(rttm_turns(item.rttm, uri=item.uri), item.uri)
        hypothesis = annotation(hypotheses[item.uri], item.uri)
        uem = Timeline([Segment(s, e) for s, e in item.uem], uri=item.uri)
        result[item.uri] = {
            collar: DiarizationErrorRate(collar=collar, skip_overlap=False)(reference, hypothesis, uem=uem, detailed=True)
            for collar in (0.0, 0.5)}
        result[item.uri]["count_ok"] = len(reference.labels()) == len(hypothesis.labels())
        result[item.uri]["count_err"] = len(hypothesis.labels()) - len(reference.labels())
    return result


def pooled_der(files: list[dict], collar: float) -> float:
    """Corpus DER (%) of :func:`per_file_components` rows at ``collar``."""
    errors = sum(f[collar]["missed detection"] + f[collar]["false alarm"] + f[collar]["confusion"] for f in files)
    return 100 * errors / max(sum(f[collar]["total"] for f in files), 1e-9)


#: Settings that change the embeddings; the rest only change clustering and labelling.
EMBEDDING_FIELDS = ("vad_threshold", "vad_min_silence_ms", "vad_pad_ms", "window_s", "hop_s", "speech_dbfs",
                    "cluster_window_s", "cluster_hop_s")


class Diarizer:
    """Diarizes recordings with many settings, embedding each recording once per embedding setting."""

    def __init__(self, models, cache_dir: Path | None = None) -> None:
        """``cache_dir``: also keep each recording's embeddings there, keyed by the audio's bytes
        and the embedding settings, so a rerun of a bench embeds nothing again."""
        self.models = models
        self.cache: dict = {}
        self.cache_dir = cache_dir

    def embeddings(self, uri: str, audio, options: EmbeddedOptions):
        """The recording's :class:`trax.diarization.embedded.SpeechEmbeddings` (None: no speech)."""
        import hashlib
        import pickle

        from trax.diarization.embedded import embed_speech

        settings = tuple(getattr(options, name) for name in EMBEDDING_FIELDS)
        if options.overlap_detector:  # the detector's acoustic stage runs with the embeddings
            settings += ("overlap_detector", self.models.overlap.sha256)
        key = (uri, settings)
        if key in self.cache:
            return self.cache[key]
        path = None
        if self.cache_dir is not None:
            digest = hashlib.sha256(np.ascontiguousarray(audio).tobytes() + repr(settings).encode()).hexdigest()[:20]
            path = self.cache_dir / f"{uri}-{digest}.pkl"
            if path.exists():
                self.cache[key] = pickle.loads(path.read_bytes())
                return self.cache[key]
        self.cache[key] = embed_speech(self.models, audio, options)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(self.cache[key]))
        return self.cache[key]

    def __call__(self, uri: str, audio, options: EmbeddedOptions, **hints) -> list:
        speech = self.embeddings(uri, audio, options)
        from trax.diarization.embedded import label_frames

        return [] if speech is None else label_frames(speech, options, **hints, overlap_detector=self.models.overlap)[0]
