"""``python -m trax.diarization.setup`` (run by ``make setup``): export the voice encoder's weights
for the torch-free embedded diarizer, and make pyannote.audio importable beside a CPU-only torch.

**Voice encoder.** resemblyzer's ``pretrained.pt`` is exported once to numpy into the cache folder
(:func:`trax.diarization.encoder.export_weights`); ``--export-encoder`` does only that (the
diarizer runs it in a child process when the export is missing).

**torchaudio.**

PyPI's torchaudio wheels carry compiled extensions linked against CUDA and a specific torch build;
beside the CPU torch they fail to load (``libc10_cuda.so: cannot open shared object file``) and
``import torchaudio`` fails with them. pyannote.audio only needs torchaudio's pure-Python parts
(``compliance.kaldi`` features, ``functional.resample``), and torchaudio skips its extension when
the library files are absent. So when, and only when, the extension does not load, this renames
those files to ``*.so.disabled``. With a matching CUDA torch/torchaudio it changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_PROBE = "import torchaudio, sys; sys.stdout.write(torchaudio.__file__)"


def _import_torchaudio() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True)


def export_encoder() -> int:
    """Export resemblyzer's weights to the cache folder (nothing to do when a checked export exists)."""
    from trax.diarization.encoder import export_path, export_weights

    target = export_weights(export_path())
    print(f"trax: voice encoder weights at {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status = export_encoder()
    if "--export-encoder" in argv:
        return status
    return fix_torchaudio()


def fix_torchaudio() -> int:
    """Disable torchaudio's compiled extension when, and only when, it does not load."""
    probe = _import_torchaudio()
    if probe.returncode == 0:
        print("trax: torchaudio imports; nothing to do")
        return 0
    if "Could not load this library" not in probe.stderr and "cannot open shared object" not in probe.stderr:
        sys.stderr.write(probe.stderr)
        return 1
    import importlib.util

    spec = importlib.util.find_spec("torchaudio")
    lib = Path(spec.origin).parent / "lib"
    for path in sorted(lib.glob("*.so")):
        path.rename(path.with_name(path.name + ".disabled"))
        print(f"trax: disabled torchaudio's compiled extension {path.name} (does not load beside this torch)")
    probe = _import_torchaudio()
    if probe.returncode != 0:
        sys.stderr.write(probe.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
