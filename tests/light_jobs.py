"""The light jobs of one recording (refine off, merge, export, enhance, figures, metrics), run in
one process as the Snakemake process runs them, on a real transcript made many times longer.

``python tests/light_jobs.py <warm-up folder> <folder>`` runs them on the warm-up folder's inputs
(imports, caches), then on the other folder's, and prints the process's high-water RSS before and
after the second run. ``test_long.py`` builds the folders (:func:`longer`) in its own process, so
building them does not raise the high-water mark it measures. With ``--combine`` it runs refine's
combine mode instead (what the model server runs), on a second decode made from the fast words
(:func:`made_up_pieces`: no model, so only the combining and the file's reading and writing count).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trax.asr.domains import load_domains
from trax.transcript.enhance import enhance_files
from trax.transcript.exports import export_files
from trax.report.figures import make_figures
from trax.io.jsonio import write_json_atomic
from trax.process import release_free_memory
from trax.transcript.merge import merge_files
from trax.report.metrics import file_metrics
from trax.asr.refine import refine_file

REPO = Path(__file__).resolve().parents[1]


def longer(transcript: dict, rttm: str, copies: int, workdir: Path) -> tuple[Path, Path]:
    """The transcript and RTTM repeated ``copies`` times, each copy shifted by the original's length."""
    workdir.mkdir(parents=True)
    span = float(transcript["duration"])
    segments, lines = [], []
    for copy in range(copies):
        shift = copy * span
        for segment in transcript["segments"]:
            words = [{**w, "start": round(w["start"] + shift, 3), "end": round(w["end"] + shift, 3)}
                     for w in segment["words"]]
            segments.append({**segment, "id": len(segments), "start": round(segment["start"] + shift, 3),
                             "end": round(segment["end"] + shift, 3), "words": words})
        for line in Path(rttm).read_text(encoding="utf-8").splitlines():
            fields = line.split()
            fields[3] = f"{float(fields[3]) + shift:.3f}"
            lines.append(" ".join(fields))
    long_transcript = {**transcript, "duration": round(span * copies, 3), "segments": segments,
                       "text": " ".join(s["text"] for s in segments)}
    fast = workdir / "transcript.fast.json"
    write_json_atomic(fast, long_transcript, schema="transcript")
    rttm_path = workdir / "diarization.rttm"
    rttm_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "audio.json").write_text(json.dumps({"audio": {"duration": span * copies}}), encoding="utf-8")
    (workdir / "job.tsv").write_text("s\tcpu_time\tmax_rss\n1.0\t1.0\t100\n", encoding="utf-8")
    return fast, rttm_path


def light_jobs(workdir: Path) -> None:
    """The jobs that run in the Snakemake process after transcription and diarization."""
    fast, rttm = workdir / "transcript.fast.json", workdir / "diarization.rttm"
    refined, merged = workdir / "transcript.refined.json", workdir / "merged.json"
    refine_file(str(workdir / "audio.json"), str(fast), str(refined), {"enabled": False},
                load_domains(REPO / "config" / "domains"))
    merge_files(str(refined), str(rttm), str(merged), {})
    export_files(str(merged), {fmt: str(workdir / f"transcript.{fmt}") for fmt in ("srt", "vtt", "txt", "md")}, {})
    enhance_files(str(merged), str(workdir / "enhanced.json"), str(workdir / "enhanced.md"), {})
    make_figures("long", str(merged), str(workdir / "audio.json"), str(rttm), str(workdir / "timeline.svg"),
                 str(workdir / "confidence.svg"), str(workdir / "preview.html"), 20)
    file_metrics("long", str(workdir / "audio.json"), str(refined), {"job": str(workdir / "job.tsv")},
                 refined_json=str(refined), merged_json=str(merged))
    release_free_memory()


def made_up_pieces(fast_path: Path) -> Iterator[tuple[list[Any], list[dict[str, Any]]]]:
    """A second decode of the fast transcript, 5 minutes a piece, read as it goes: one chunk per
    30 s, every word heard again, every seventh one otherwise and more confidently."""
    from trax.asr.second_opinion import Chunk
    from trax.io.jsonio import iter_json_list

    piece_end, next_chunk, chunks, words, heard = 300.0, 0.0, [], [], 0
    for segment in iter_json_list(fast_path, "segments"):
        for word in segment["words"]:
            while word["start"] >= next_chunk:
                if next_chunk >= piece_end:
                    yield chunks, words
                    piece_end, chunks, words = piece_end + 300.0, [], []
                chunks.append(Chunk(next_chunk, next_chunk + 29.5, 0, True))
                next_chunk += 30.0
            heard += 1
            words.append({**word, "word": "other" if heard % 7 == 3 else word["word"], "probability": 0.95})
    if chunks:
        yield chunks, words


def combine(workdir: Path) -> None:
    """Refine in combine mode, the second decode made up (:func:`made_up_pieces`)."""
    from trax.asr import refine

    class Source:
        spec = "embedded:base"

        def describe(self) -> dict[str, Any]:
            return {"spec": self.spec, "id": "made up", "weights_sha256": None}

    fast = workdir / "transcript.fast.json"
    refine.decode_pieces = lambda *args, **kwargs: made_up_pieces(fast)
    refine.write_refined(str(workdir / "audio.json"), str(fast), str(workdir / "transcript.refined.json"),
                         {"enabled": True}, load_domains(REPO / "config" / "domains"), None,
                         lambda adapter: (None, Source()))
    release_free_memory()


def high_water_mb() -> float:
    """This process's peak RSS since its ``exec`` (``VmHWM``; ``ru_maxrss`` would include the
    size of the process that forked it, here pytest with models loaded)."""
    status = Path("/proc/self/status").read_text(encoding="utf-8")
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def main() -> None:
    jobs = combine if sys.argv[1] == "--combine" else light_jobs
    warm, measured = (Path(arg) for arg in sys.argv[-2:])
    jobs(warm)
    baseline = high_water_mb()
    jobs(measured)
    print(json.dumps({"baseline_mb": baseline, "peak_mb": high_water_mb()}))


if __name__ == "__main__":
    main()
