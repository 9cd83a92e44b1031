"""Helpers the bench scripts share. Scripts import this module, never one another.

Importing it puts this checkout's ``src`` first on ``sys.path``, so the scripts' ``import trax``
gets this checkout's package, not an installed copy. Not a bench itself: nothing to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trax.io.media import find_ffmpeg  # noqa: E402
from trax.io.samples import sample_id_from_name  # noqa: E402
from trax.quality.benchdata import benchdata_dir  # noqa: E402

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
