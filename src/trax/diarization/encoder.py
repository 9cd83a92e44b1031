"""resemblyzer's voice encoder without torch or librosa: ONNX Runtime + numpy features.

resemblyzer's ``VoiceEncoder`` is a 3-layer LSTM (40 → 256) whose last hidden state goes through a
256 → 256 linear layer, a ReLU and L2 normalisation; its input is a 40-band mel *power*
spectrogram (librosa's ``melspectrogram``: 25 ms Hann window, 10 ms hop, 16 kHz, slaney mel scale
and area normalisation, centred frames with zero padding). The features are reproduced in numpy
and the network runs in ONNX Runtime (installed for Silero VAD; ~1.5x faster than the same LSTM in
numpy, as fast as torch on one thread), so the embedded diarizer, enrollment and speaker linking
never load torch or librosa (seconds of every cold start).

The weights are exported once from resemblyzer's ``pretrained.pt`` (a torch pickle, so the export
needs torch) by ``python -m trax.diarization.setup`` to an ONNX file in the cache folder
(:func:`trax.io.cache.cache_dir`), named by the sha256 of the ``pretrained.pt`` it came from and
checked against the sha256 recorded beside it. A missing export is made on first use in a child
process, so torch never enters the process that diarizes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trax.errors import TraxError
from trax.io.cache import CACHE_ENV, cache_dir

if TYPE_CHECKING:
    import numpy as np

SAMPLE_RATE = 16000
#: librosa's n_fft for resemblyzer: a 25 ms window.
N_FFT = 400
#: 10 ms hop.
HOP = 160
N_MELS = 40
#: Names of the exported arrays: torch's LSTM parameters per layer, then the projection.
LAYERS = 3
_ARRAYS = tuple(f"lstm.{kind}_l{layer}" for layer in range(LAYERS)
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")) + ("linear.weight", "linear.bias")


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above."""
    import numpy as np

    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = hz / f_sp
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    import numpy as np

    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_mel = 1000.0 / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, 1000.0 * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@functools.cache
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa's ``filters.mel(sr, n_fft, n_mels)`` (fmin 0, fmax sr/2, slaney scale and norm):
    triangles between ``n_mels + 2`` points equally spaced in mel, each scaled to unit area."""
    import numpy as np

    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2.0), n_mels + 2))
    spacing = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / spacing[:-1, None]
    upper = ramps[2:] / spacing[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : n_mels + 2] - mel_points[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """resemblyzer's ``audio.wav_to_mel_spectrogram`` (frames x 40, float32): the mel power
    spectrogram of frames centred every 10 ms (the signal zero-padded by half a window at both
    ends, as librosa >= 0.10 does), periodic Hann window. Computed in float32, as librosa does
    for float32 audio, in blocks of frames so the framed copy stays small."""
    import numpy as np
    from scipy import fft

    wav = np.asarray(wav, dtype=np.float32)
    padded = np.pad(wav, N_FFT // 2)
    count = 1 + (len(padded) - N_FFT) // HOP
    if count <= 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(padded, shape=(count, N_FFT),
                                             strides=(padded.strides[0] * HOP, padded.strides[0]), writeable=False)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    basis = mel_filterbank().T.astype(np.float32)
    out = np.empty((count, N_MELS), dtype=np.float32)
    for lo in range(0, count, MEL_BLOCK_FRAMES):
        spectrum = fft.rfft(frames[lo : lo + MEL_BLOCK_FRAMES] * window, axis=1, workers=1)
        out[lo : lo + MEL_BLOCK_FRAMES] = (spectrum.real**2 + spectrum.imag**2) @ basis
    return out


#: Frames transformed at a time by :func:`mel_spectrogram` (1 minute: ~10 MB of spectrum).
MEL_BLOCK_FRAMES = 6000


# --- a minimal ONNX writer (protobuf wire format), so the export needs no ``onnx`` package ------

def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 fields: two's complement, as protobuf encodes negatives
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: a varint for an int, length-delimited bytes for bytes/str/messages."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims (1), data_type (2: FLOAT=1, INT64=7), name (8), raw_data (9, little-endian)."""
    import numpy as np

    kind = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[array.dtype]
    dims = b"".join(_field(1, int(d)) for d in array.shape)
    return dims + _field(2, kind) + _field(8, name) + _field(9, np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


def _node(op: str, inputs: list[str], outputs: list[str], **attributes: int | list[int]) -> bytes:
    """NodeProto: input (1), output (2), op_type (4), attribute (5: name 1, i 3, ints 8, type 20)."""
    body = b"".join(_field(1, name) for name in inputs) + b"".join(_field(2, name) for name in outputs)
    body += _field(4, op)
    for name, value in sorted(attributes.items()):
        if isinstance(value, list):
            attribute = _field(1, name) + b"".join(_field(8, v) for v in value) + _field(20, 7)  # INTS
        else:
            attribute = _field(1, name) + _field(3, value) + _field(20, 2)  # INT
        body += _field(5, attribute)
    return body


def _value_info(name: str, dims: list[int | str]) -> bytes:
    """ValueInfoProto of a float tensor: name (1), type (2) → tensor_type (1) → elem_type 1, shape (2)."""
    shape = b"".join(_field(1, _field(1, d) if isinstance(d, int) else _field(2, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, shape)))


def _gates_onnx(matrix: np.ndarray) -> np.ndarray:
    """torch orders an LSTM's gates input, forget, cell, output; ONNX input, output, forget, cell."""
    import numpy as np

    i, f, g, o = np.split(matrix, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def encoder_onnx(weights: dict[str, np.ndarray]) -> bytes:
    """The encoder as an ONNX model (opset 14): input ``mels`` (batch x frames x 40), output
    ``embeddings`` (batch x 256) after the linear layer and ReLU, *not* yet L2-normalised.

    ONNX Runtime's LSTM takes time-major input, hence the Transpose; its outputs are squeezed
    of the direction axis between layers."""
    import numpy as np

    nodes = [_node("Transpose", ["mels"], ["x0"], perm=[1, 0, 2])]
    initializers = [_tensor("axis0", np.array([0], dtype=np.int64)), _tensor("axis1", np.array([1], dtype=np.int64))]
    for layer in range(LAYERS):
        w = _gates_onnx(weights[f"lstm.weight_ih_l{layer}"])[None]
        r = _gates_onnx(weights[f"lstm.weight_hh_l{layer}"])[None]
        b = np.concatenate([_gates_onnx(weights[f"lstm.bias_ih_l{layer}"]),
                            _gates_onnx(weights[f"lstm.bias_hh_l{layer}"])])[None]
        for name, array in (("w", w), ("r", r), ("b", b)):
            initializers.append(_tensor(f"{name}{layer}", array.astype(np.float32)))
        nodes.append(_node("LSTM", [f"x{layer}", f"w{layer}", f"r{layer}", f"b{layer}"], [f"y{layer}", f"h{layer}"],
                           hidden_size=int(r.shape[-1])))
        nodes.append(_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
    nodes.append(_node("Squeeze", [f"h{LAYERS - 1}", "axis0"], ["last"]))
    initializers += [_tensor("linear_w", np.ascontiguousarray(weights["linear.weight"].T, dtype=np.float32)),
                     _tensor("linear_b", weights["linear.bias"].astype(np.float32))]
    nodes += [_node("Gemm", ["last", "linear_w", "linear_b"], ["projected"]),
              _node("Relu", ["projected"], ["embeddings"])]
    graph = (b"".join(_field(1, node) for node in nodes) + _field(2, "resemblyzer_voice_encoder")
             + b"".join(_field(5, tensor) for tensor in initializers)
             + _field(11, _value_info("mels", ["batch", "frames", N_MELS]))
             + _field(12, _value_info("embeddings", ["batch", int(weights["linear.bias"].shape[0])])))
    # ModelProto: ir_version (1) 8, producer_name (2), graph (7), opset_import (8: domain 1, version 2).
    return _field(1, 8) + _field(2, "trax") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 14))


@dataclass(frozen=True)
class VoiceEncoder:
    """resemblyzer's encoder in ONNX Runtime (one thread: same bits in every process).

    Attributes:
        session: The ``onnxruntime.InferenceSession`` of :func:`encoder_onnx`'s model.
    """

    session: Any

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """Embed a batch of mel windows (batch x frames x 40) → (batch x 256), L2-normalised."""
        import numpy as np

        raw = self.session.run(None, {"mels": np.ascontiguousarray(mels, dtype=np.float32)})[0]
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)


def pretrained_path() -> Path:
    """resemblyzer's ``pretrained.pt``, found without importing resemblyzer (which imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or spec.origin is None:
        raise TraxError("resemblyzer", "package missing; run make setup")
    return Path(spec.origin).parent / "pretrained.pt"


def _sha256(path: Path) -> str:
    from trax.io.provenance import sha256_file

    return sha256_file(path)


@functools.cache
def _pretrained_sha256(path: str, stamp: str) -> str:
    """sha256 of ``pretrained.pt``, once per process and file version (``stamp``: size-mtime)."""
    return _sha256(Path(path))


def pretrained_sha256() -> str:
    """sha256 of resemblyzer's ``pretrained.pt`` (what provenance and the export are keyed by)."""
    path = pretrained_path()
    stat = path.stat()
    return _pretrained_sha256(str(path), f"{stat.st_size}-{stat.st_mtime_ns}")


def export_path(cache: Path | None = None) -> Path:
    """Where the export of the installed ``pretrained.pt`` lives (``.onnx``; its sha256 beside it)."""
    version = metadata.version("resemblyzer")
    return (cache or cache_dir()) / "models" / f"resemblyzer-{version}-{pretrained_sha256()[:16]}.onnx"


def export_weights(target: Path) -> Path:
    """Export ``pretrained.pt`` to ``target`` (:func:`encoder_onnx`) plus ``target.sha256``; needs torch.

    Written to temporary files renamed into place under a lock, so racing processes export once
    and readers never see half a file."""
    import numpy as np
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _export_ok(target):
            return target
        state = torch.load(pretrained_path(), map_location="cpu")["model_state"]
        arrays = {name: state[name].detach().numpy().astype(np.float32) for name in _ARRAYS}
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(encoder_onnx(arrays))
            os.chmod(temporary, 0o644)
            digest = _sha256(Path(temporary))
            os.replace(temporary, target)
            sidecar = target.with_name(target.name + ".sha256")
            sidecar.with_suffix(".tmp").write_text(digest + "\n")
            os.replace(sidecar.with_suffix(".tmp"), sidecar)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    return target


def _export_ok(target: Path) -> bool:
    sidecar = target.with_name(target.name + ".sha256")
    if not target.is_file() or not sidecar.is_file():
        return False
    return _sha256(target) == sidecar.read_text().strip()


def load_voice_encoder(cache: Path | None = None) -> VoiceEncoder:
    """The encoder from the exported weights, exporting them first (in a child process with
    torch, never in this one) when they are missing or do not match their checksum.

    Raises:
        TraxError: When the export fails.
    """
    import onnxruntime

    target = export_path(cache)
    if not _export_ok(target):
        env = dict(os.environ)
        if cache is not None:
            env[CACHE_ENV] = str(cache)
        done = subprocess.run([sys.executable, "-m", "trax.diarization.setup", "--export-encoder"],
                              capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not _export_ok(target):
            reason = (done.stderr.strip().splitlines() or ["no export written"])[-1]
            raise TraxError(str(target), f"could not export resemblyzer's weights: {reason}")
    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = 1
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3
    # No memory arena: ONNX Runtime's arena grows over the many runs of a long recording and never
    # shrinks: a 30-minute recording's diarize job peaked at 417 MB against 297 MB for 5 minutes;
    # without it 284 vs 281 MB (MALLOC_MMAP_THRESHOLD_ as in model jobs). It costs ~12 % of the
    # diarize job's time (30 minutes: 13.8 -> 15.5 s); padding batches to one shape kept the growth.
    session_options.enable_cpu_mem_arena = False
    session = onnxruntime.InferenceSession(str(target), session_options, providers=["CPUExecutionProvider"])
    return VoiceEncoder(session)
