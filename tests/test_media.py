"""normalize on real files with the real ffmpeg: formats that must work, inputs that must fail."""

import wave
from pathlib import Path

import pytest

from conftest import BENCH, EMPTY, JFK
from trax.errors import TraxError
from trax.io.jsonio import read_json
from trax.io.media import NormalizeOptions, normalize
from trax.io.schemas import validate


def _normalize(source: Path, out: Path, **options) -> dict:
    return normalize(str(source), out / "audio.wav", out / "audio.json", "x", NormalizeOptions(**options))


def _assert_16k_mono_s16(path: Path) -> int:
    with wave.open(str(path), "rb") as handle:
        assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (16000, 1, 2)
        return handle.getnframes()


@pytest.mark.parametrize(
    ("source", "codec", "channels", "rate"),
    [
        (JFK, "flac", 2, 44100),  # stereo 44.1 kHz FLAC
        (BENCH / "pyannote-audio/debug/dev00.wav", "pcm_f32le", 1, 16000),  # 32-bit float WAV
        (BENCH / "onnxruntime-extensions-librispeech/1272-128104-0004-8k.wav", "pcm_s16le", 1, 8000),
        (BENCH / "const-me-whisper/columbia.wma", "wmav2", 2, 44100),
    ],
    ids=["stereo-flac", "float32-wav", "8khz-wav", "wma"],
)
def test_formats_normalize_to_16k_mono_pcm(tmp_path: Path, source: Path, codec: str, channels: int, rate: int) -> None:
    info = _normalize(source, tmp_path)
    frames = _assert_16k_mono_s16(tmp_path / "audio.wav")
    assert info == read_json(tmp_path / "audio.json")
    validate(info, "audio")
    assert (info["source"]["codec"], info["source"]["channels"], info["source"]["sample_rate"]) == (codec, channels, rate)
    assert info["audio"]["num_samples"] == frames
    assert abs(info["audio"]["duration"] - info["source"]["duration"]) < 0.05


def test_video_input_keeps_its_audio(tmp_path: Path, good_extras: dict[str, Path]) -> None:
    info = _normalize(good_extras["video"], tmp_path)
    assert info["source"]["has_video"] is True and info["source"]["codec"] == "aac"
    assert abs(info["audio"]["duration"] - 11.0) < 0.1


def test_half_second_clip_is_accepted(tmp_path: Path, good_extras: dict[str, Path]) -> None:
    info = _normalize(good_extras["half_second"], tmp_path)
    assert info["audio"]["num_samples"] == 8000


def test_same_source_gives_identical_bytes(tmp_path: Path) -> None:
    _normalize(JFK, tmp_path / "a")
    _normalize(JFK, tmp_path / "b")
    for name in ("audio.wav", "audio.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_silence_is_valid_audio(tmp_path: Path) -> None:
    assert _normalize(EMPTY, tmp_path)["audio"]["num_samples"] == 16000


@pytest.mark.parametrize(
    ("kind", "reason", "options"),
    [
        ("missing", "file not found", {}),
        ("text_as_mp3", "not a decodable audio/video file", {}),
        ("zero_bytes", "empty file (0 bytes)", {}),
        ("no_audio", "no audio stream", {}),
        ("oversized", "over the 1 MB limit (normalize.max_size_mb; raise it", {"max_size_mb": 1}),
        ("too_short", "shorter than 0.1 s (normalize.min_duration_s)", {}),
    ],
)
def test_bad_input_fails_with_one_line_and_leaves_nothing(
    tmp_path: Path, bad_inputs: dict[str, Path], kind: str, reason: str, options: dict
) -> None:
    source = bad_inputs[kind]
    out = tmp_path / "out"
    with pytest.raises(TraxError) as excinfo:
        _normalize(source, out, **options)
    message = str(excinfo.value)
    assert message.startswith(f"{source}: ") and reason in message
    assert "\n" not in message
    assert not out.exists() or list(out.iterdir()) == []
