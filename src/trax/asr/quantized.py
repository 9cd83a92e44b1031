"""Int8 copies of CTranslate2 Whisper weights, made once, so loads skip CTranslate2's quantization.

The embedded models ship float16 weights. Loaded for int8 decoding on CPU, CTranslate2 converts
every linear weight to int8 on each load, single-threaded: about 0.8 s of tiny.en's 1.0-s load and
1.2 s of base's 1.4 s, paid on the critical path of every cold run (``bench/cold_load.py``). This
module writes the same int8 weights once into the cache folder, and later loads read them as they
are.

The copy must give the very weights CTranslate2 would have made, or outputs would depend on
whether a cache exists. It mirrors CTranslate2 4.6's own rule (``WhisperModel::is_quantizable``:
every variable whose name ends in ``weight`` except the convolutions; one scale per output row,
``127 / max |w|``; round half to even) and converts the other float16 variables to float32, as
``int8_float32`` does at load. ``tests/test_fast_path.py`` checks the encoder's output and a decode
are bit-identical with and without the copy for both embedded models, so a CTranslate2 upgrade that
changes the rule fails there rather than changing transcripts.

The file format is CTranslate2's ``model.bin`` (binary version 6, as written by
``ctranslate2.specs.ModelSpec._serialize``): a header, then per variable its name, shape, type
and bytes, then aliases. Variables are converted one at a time, so memory stays at one variable.
"""

from __future__ import annotations

import logging
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from trax.io.cache import build_once, cache_dir

#: CTranslate2's type ids, in the order of its ``DataType`` enum.
TYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: The only binary version this reader knows; any other model loads as it is.
BINARY_VERSION = 6
#: Compute types whose CPU load quantizes weights to int8 with float32 for the rest.
INT8_COMPUTE_TYPES = ("int8", "int8_float32")
#: Marks a finished copy and names its source weights.
STAMP = "trax-int8.txt"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variable:
    """One variable's header in ``model.bin`` and where its bytes start."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    offset: int
    size: int


def _read_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<H", handle.read(2))
    return handle.read(length)[:-1].decode("utf-8")


def _write_string(handle: BinaryIO, text: str) -> None:
    data = text.encode("utf-8")
    handle.write(struct.pack("<H", len(data) + 1) + data + b"\0")


def read_header(handle: BinaryIO) -> tuple[int, str, int, list[Variable], list[tuple[str, str]]]:
    """(binary version, spec name, spec revision, variables, aliases) of an open ``model.bin``.

    Only headers are read; each variable's bytes are skipped (``Variable.offset``)."""
    (version,) = struct.unpack("<I", handle.read(4))
    spec = _read_string(handle)
    (revision, count) = struct.unpack("<II", handle.read(8))
    variables = []
    for _ in range(count):
        name = _read_string(handle)
        (rank,) = struct.unpack("<B", handle.read(1))
        shape = struct.unpack(f"<{rank}I", handle.read(4 * rank))
        type_id, size = struct.unpack("<BI", handle.read(5))
        variables.append(Variable(name, shape, TYPE_NAMES[type_id], handle.tell(), size))
        handle.seek(size, 1)
    (aliases,) = struct.unpack("<I", handle.read(4))
    return version, spec, revision, variables, [(_read_string(handle), _read_string(handle)) for _ in range(aliases)]


def is_quantizable(variable: Variable) -> bool:
    """CTranslate2 4.6's rule for Whisper: weights are quantized, convolutions are not."""
    return variable.name.endswith("weight") and "conv" not in variable.name and len(variable.shape) >= 2


def convertible(spec: str, variables: list[Variable]) -> bool:
    """Whether this module can make the copy: a Whisper model whose weights are still float."""
    return spec == "WhisperSpec" and all(
        v.type_name in ("float16", "float32") for v in variables if is_quantizable(v))


def quantize_rows(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per output row) as CTranslate2 computes them.

    A row of zeros gets the scale 1 (``127 / 127``), so it stays zeros instead of dividing by 0."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
    peak = np.abs(rows).max(axis=1)
    peak[peak == 0] = 127.0
    scale = (127.0 / peak).astype(np.float32)
    return np.rint(rows * scale[:, None]).astype(np.int8).reshape(weight.shape), scale


def _write_variable(handle: BinaryIO, name: str, array: np.ndarray) -> None:
    _write_string(handle, name)
    handle.write(struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape))
    data = np.ascontiguousarray(array).tobytes()
    handle.write(struct.pack("<BI", TYPE_NAMES.index(array.dtype.name), len(data)) + data)


def write_int8_model(source: Path, target: Path) -> bool:
    """Write ``source``'s model.bin with int8 weights to ``target``; False when it cannot be done
    (another binary version, not Whisper, weights already quantized), leaving ``target`` untouched."""
    with open(source, "rb") as reader:
        version, spec, revision, variables, aliases = read_header(reader)
        if version != BINARY_VERSION or not convertible(spec, variables):
            return False
        count = len(variables) + sum(map(is_quantizable, variables))
        with open(target, "wb") as writer:
            writer.write(struct.pack("<I", version))
            _write_string(writer, spec)
            writer.write(struct.pack("<II", revision, count))
            for variable in variables:
                reader.seek(variable.offset)
                raw = np.frombuffer(reader.read(variable.size), dtype=variable.type_name).reshape(variable.shape)
                if is_quantizable(variable):
                    weight, scale = quantize_rows(raw)
                    _write_variable(writer, variable.name, weight)
                    _write_variable(writer, f"{variable.name}_scale", scale)
                elif raw.dtype == np.float16:
                    _write_variable(writer, variable.name, raw.astype(np.float32))
                else:
                    _write_variable(writer, variable.name, raw)
            writer.write(struct.pack("<I", len(aliases)))
            for alias, name in aliases:
                _write_string(writer, alias)
                _write_string(writer, name)
    return True


def int8_copy(model_dir: Path, weights_sha256: str, cache: Path | None = None) -> Path | None:
    """The int8 copy of the CTranslate2 Whisper model in ``model_dir``, made on first use.

    Keyed by the source weights' sha256, so rebuilt weights get a new copy and provenance (which
    names the source) stays true. Built in a staging folder and renamed into place under a lock
    (:func:`trax.io.cache.build_once`).

    Returns:
        The copy's folder (load it instead of ``model_dir``), or ``None`` when the model cannot be
        copied: load ``model_dir`` as it is.
    """
    target = (cache or cache_dir()) / "models" / "int8" / weights_sha256[:32]
    stamp = f"{weights_sha256}\n"

    def ready(folder: Path) -> bool:
        return (folder / STAMP).is_file() and (folder / STAMP).read_text() == stamp

    def build(folder: Path) -> bool:
        started = time.perf_counter()
        if not write_int8_model(model_dir / "model.bin", folder / "model.bin"):
            return False
        for side in model_dir.iterdir():
            if side.is_file() and side.name != "model.bin":
                shutil.copyfile(side, folder / side.name)
        (folder / STAMP).write_text(stamp)
        log.info("made an int8 copy of %s in %.1f s (%.0f MB at %s): later loads skip CTranslate2's conversion",
                 model_dir, time.perf_counter() - started, (folder / "model.bin").stat().st_size / 2**20, target)
        return True

    return build_once(target, ready, build)


def main(argv: list[str] | None = None) -> int:
    """``python -m trax.asr.quantized [SPEC ...]`` (run by ``make setup``): make the int8 copies of
    the given model specs (default: the embedded models), so no run pays for them."""
    import sys

    from trax.asr.models import EMBEDDED_MODELS, EMBEDDED_PREFIX, resolve_whisper

    specs = (sys.argv[1:] if argv is None else argv) or [EMBEDDED_PREFIX + name for name in EMBEDDED_MODELS]
    for spec in specs:
        source = resolve_whisper(spec)
        copy = int8_copy(source.path, source.weights_sha256) if source.path else None
        print(f"trax: {spec}: int8 copy at {copy}" if copy else f"trax: {spec}: loads as it is (no int8 copy)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
