"""CTranslate2 Whisper <-> transformers Whisper, offline.

No Hugging Face-format Whisper weights are installable here, but the embedded CTranslate2 models
are: :func:`read_ct2_model` parses a ``model.bin`` (a simple binary of named variables, see
``ctranslate2/specs/model_spec.py``) and :func:`load_hf_whisper` rebuilds a transformers
``WhisperForConditionalGeneration`` from it with no missing keys. :func:`convert_to_ct2` goes back
with CTranslate2's own ``TransformersConverter``, so a fine-tuned (LoRA-merged) model becomes a
directory faster-whisper loads.

Layout facts the rebuild relies on (checked by the tests on tiny.en and base):

* self-attention q/k/v are stacked rows of ``self_attention/linear_0`` (the k bias is zero: Whisper
  has no k bias); ``linear_1`` is the output projection;
* decoder cross-attention: ``attention/linear_0`` is q, k/v are stacked in ``attention/linear_1``,
  ``linear_2`` is the output projection;
* the output projection is an alias of the token embeddings (tied);
* int8 weights carry a per-row ``<name>_scale`` (``int8 = round(float * scale)``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import sys
import tempfile
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from trax.errors import TraxError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: CTranslate2 DataType enum order (include/ctranslate2/types.h); bfloat16 is read via float32.
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
#: Files of a CTranslate2 Whisper directory besides model.bin, copied as they are.
CT2_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json", "preprocessor_config.json")


@dataclass
class CT2Model:
    """A parsed ``model.bin``.

    Attributes:
        spec: Spec name (``WhisperSpec``).
        revision: Spec revision.
        variables: Name -> array (int8/int16 weights as stored; see :meth:`dequantized`).
        aliases: Alias name -> variable name (e.g. the tied output projection).
    """

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]

    def dequantized(self, name: str) -> np.ndarray:
        """Variable ``name`` as float32, dividing int8/int16 weights by their per-row scale."""
        value = self.get(name)
        if value.dtype in (np.int8, np.int16):
            scale = self.get(f"{name}_scale").astype(np.float32)
            shape = (-1,) + (1,) * (value.ndim - 1)
            return value.astype(np.float32) / scale.reshape(shape)
        return value.astype(np.float32)


def _read_string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<H", handle.read(2))
    return handle.read(length)[:-1].decode("utf-8")


def read_ct2_model(path: str | Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6).

    Raises:
        TraxError: When the file is not a CTranslate2 model this code understands.
    """
    path = Path(path)
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as handle:
        (version,) = struct.unpack("<I", handle.read(4))
        if version not in (5, 6):
            raise TraxError(path, f"unsupported CTranslate2 binary version {version} (expected 5 or 6)")
        spec = _read_string(handle)
        (revision,) = struct.unpack("<I", handle.read(4))
        (count,) = struct.unpack("<I", handle.read(4))
        for _ in range(count):
            name = _read_string(handle)
            (ndim,) = struct.unpack("<B", handle.read(1))
            shape = struct.unpack(f"<{ndim}I", handle.read(4 * ndim))
            (dtype_id,) = struct.unpack("<B", handle.read(1))
            (nbytes,) = struct.unpack("<I", handle.read(4))
            raw = handle.read(nbytes)
            dtype = _DTYPES[dtype_id]
            if dtype == "bfloat16":  # upper half of a float32
                array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            variables[name] = array.reshape(shape)
        aliases = {}
        (alias_count,) = struct.unpack("<I", handle.read(4))
        for _ in range(alias_count):
            alias = _read_string(handle)
            aliases[alias] = _read_string(handle)
    if spec != "WhisperSpec":
        raise TraxError(path, f"not a Whisper model (spec {spec!r})")
    return CT2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


def import_transformers() -> types.ModuleType:
    """Import transformers even when the installed torchaudio binary does not match torch.

    transformers imports torchaudio eagerly whenever the package is installed (pyannote.audio
    brings it), and a torchaudio built for another torch fails to load its C++ extension with an
    ``OSError``. Whisper modelling never uses torchaudio, so a broken one is replaced by an empty
    module for this process only; a working torchaudio is left alone.
    """
    if "transformers.models.whisper" not in sys.modules:
        try:
            import torchaudio  # noqa: F401
        except ImportError:
            pass
        except OSError as exc:
            log.warning("torchaudio does not load (%s); transformers will run without it", exc)
            sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    import transformers

    return transformers


def _bind_converter_imports() -> None:
    """Give ctranslate2's converter modules the torch and transformers they could not import when
    ctranslate2 was imported without them (:func:`trax.process.import_faster_whisper`)."""
    import ctranslate2.converters.transformers as transformers_converter
    import ctranslate2.specs.model_spec as model_spec
    import huggingface_hub
    import torch

    transformers = import_transformers()
    if not model_spec.torch_is_available:
        model_spec.torch, model_spec.torch_is_available = torch, True
    for name, module in (("huggingface_hub", huggingface_hub), ("torch", torch), ("transformers", transformers)):
        if not hasattr(transformers_converter, name):
            setattr(transformers_converter, name, module)


def _vocabulary(model_dir: Path) -> list[str]:
    txt = model_dir / "vocabulary.txt"
    if txt.is_file():
        # One token per "\n"-terminated line (tokens may contain other line-break characters).
        tokens = txt.read_text(encoding="utf-8").split("\n")
        return tokens[:-1] if tokens and tokens[-1] == "" else tokens
    json_path = model_dir / "vocabulary.json"
    if json_path.is_file():
        return json.loads(json_path.read_text(encoding="utf-8"))
    raise TraxError(model_dir, "no vocabulary.txt or vocabulary.json beside model.bin")


def _count_layers(model: CT2Model, prefix: str) -> int:
    return len({name.split("/")[1] for name in model.variables if re.match(rf"{prefix}/layer_\d+/", name)})


def hf_config(model: CT2Model, model_dir: Path) -> Any:
    """A ``WhisperConfig`` from tensor shapes plus the model directory's config.json and vocabulary."""
    transformers = import_transformers()
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    vocab = _vocabulary(model_dir)
    token_id = {token: index for index, token in enumerate(vocab)}
    embeddings = model.get("decoder/embeddings/weight")
    conv1 = model.get("encoder/conv1/weight")
    eot = token_id["<|endoftext|>"]
    sot = token_id["<|startoftranscript|>"]
    return transformers.WhisperConfig(
        vocab_size=embeddings.shape[0],
        num_mel_bins=conv1.shape[1],
        d_model=embeddings.shape[1],
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=int(model.get("encoder/num_heads")),
        decoder_attention_heads=int(model.get("decoder/num_heads")),
        encoder_ffn_dim=model.get("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=model.get("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=model.get("encoder/position_encodings/encodings").shape[0],
        max_target_positions=model.get("decoder/position_encodings/encodings").shape[0],
        eos_token_id=eot,
        bos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        tie_word_embeddings=True,
        activation_function="gelu",
        scale_embedding=False,
    )


def _hf_state_dict(model: CT2Model, config: Any) -> dict[str, np.ndarray]:
    """transformers parameter name -> float32 array."""
    d = config.d_model
    state: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, rows: slice | None = None, bias: bool = True) -> None:
        weight = model.dequantized(f"{ct2}/weight")
        state[f"{hf}.weight"] = weight if rows is None else weight[rows]
        if bias:
            values = model.dequantized(f"{ct2}/bias")
            state[f"{hf}.bias"] = values if rows is None else values[rows]

    def norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = model.dequantized(f"{ct2}/gamma")
        state[f"{hf}.bias"] = model.dequantized(f"{ct2}/beta")

    def attention(hf: str, ct2: str, qkv: Sequence[str], out: str) -> None:
        # qkv: CT2 linear names holding q and the stacked k/v (one name when all three are stacked).
        if len(qkv) == 1:
            parts = {"q": (qkv[0], slice(0, d)), "k": (qkv[0], slice(d, 2 * d)), "v": (qkv[0], slice(2 * d, 3 * d))}
        else:
            parts = {"q": (qkv[0], None), "k": (qkv[1], slice(0, d)), "v": (qkv[1], slice(d, 2 * d))}
        for name, (linear_name, rows) in parts.items():
            linear(f"{hf}.{name}_proj", f"{ct2}/{linear_name}", rows, bias=name != "k")
        linear(f"{hf}.out_proj", f"{ct2}/{out}")

    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        state[f"{prefix}.embed_positions.weight"] = model.dequantized(f"{side}/position_encodings/encodings")
        norm(f"{prefix}.layer_norm", f"{side}/layer_norm")
        layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(layers):
            hf, ct2 = f"{prefix}.layers.{i}", f"{side}/layer_{i}"
            attention(f"{hf}.self_attn", f"{ct2}/self_attention", ["linear_0"], "linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            if side == "decoder":
                attention(f"{hf}.encoder_attn", f"{ct2}/attention", ["linear_0", "linear_1"], "linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = model.dequantized("decoder/embeddings/weight")
    return state


def load_hf_whisper(model_dir: str | Path) -> Any:
    """Rebuild a float32 ``WhisperForConditionalGeneration`` (eval mode) from a CTranslate2 directory.

    Raises:
        TraxError: When the directory lacks a file or a variable, or a parameter would stay
            uninitialised.
    """
    import torch

    model_dir = Path(model_dir)
    transformers = import_transformers()
    for name in ("model.bin", "config.json"):
        if not (model_dir / name).is_file():
            raise TraxError(model_dir, f"not a CTranslate2 Whisper model directory (no {name})")
    ct2 = read_ct2_model(model_dir / "model.bin")
    try:
        config = hf_config(ct2, model_dir)
        state = _hf_state_dict(ct2, config)
    except KeyError as exc:
        raise TraxError(model_dir / "model.bin", f"missing variable or token {exc}") from None
    with torch.device("meta"):
        hf = transformers.WhisperForConditionalGeneration(config)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
    # The k projections have no bias; proj_out is tied to the embeddings.
    missing, unexpected = hf.load_state_dict(tensors, strict=False, assign=True)
    missing = [name for name in missing if name != "proj_out.weight"]
    if missing or unexpected:
        raise TraxError(model_dir, f"rebuild mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf.tie_weights()
    hf.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    return hf.eval()


class _Vocabulary:
    """The slice of a tokenizer the CTranslate2 Whisper loader reads (vocabulary in id order)."""

    def __init__(self, tokens: list[str]) -> None:
        self._vocab = {token: index for index, token in enumerate(tokens)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)


def convert_to_ct2(model: Any, source_dir: str | Path, output_dir: str | Path, quantization: str = "int8") -> Path:
    """Write ``model`` (a transformers Whisper, e.g. LoRA-merged) as a CTranslate2 directory.

    Uses ``ctranslate2.converters.TransformersConverter`` with the in-memory model, the source
    directory's vocabulary, and its alignment heads, language ids and suppressed tokens (so the
    converted config.json equals the source's); tokenizer.json is copied. The directory is built
    beside ``output_dir`` and moved into place only when complete.

    Args:
        model: The transformers model to convert.
        source_dir: The CTranslate2 directory the model was rebuilt from.
        output_dir: Destination directory (replaced if present).
        quantization: CTranslate2 weight type (``int8``, ``float16``, ``float32`` …).
    """
    import ctranslate2

    _bind_converter_imports()
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    source_config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    tokens = _vocabulary(source_dir)

    class _InMemoryConverter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return model

        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return _Vocabulary(tokens)

    transformers = import_transformers()
    model.generation_config = transformers.GenerationConfig(
        suppress_tokens=source_config.get("suppress_ids"),
        begin_suppress_tokens=source_config.get("suppress_ids_begin"),
        alignment_heads=source_config.get("alignment_heads"),
        lang_to_id={str(i): i for i in source_config.get("lang_ids", [])},
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        with tempfile.TemporaryDirectory() as config_dir:
            model.config.save_pretrained(config_dir)  # the converter reads AutoConfig from a path
            converter = _InMemoryConverter(config_dir)
            converter.convert(str(staging / "out"), quantization=quantization, force=True)
        built = staging / "out"
        for name in ("tokenizer.json", "preprocessor_config.json"):
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, built / name)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        built.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


# --- feature extraction and greedy decoding shared by training, validation and tests ----------

def log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """One 30 s window of log-mel features exactly as faster-whisper computes them for decoding.

    faster-whisper's FeatureExtractor (not transformers', which differs by up to 0.5 in log-mel on
    jfk) on the audio plus 160 samples, then zero-padded/trimmed to 3000 frames.
    """
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    return pad_or_trim(FeatureExtractor(feature_size=n_mels)(audio)).astype(np.float32)


def greedy_decode(model: Any, features: np.ndarray, prompt: Sequence[int], max_new_tokens: int = 224) -> list[int]:
    """Greedy decoding as CTranslate2 does it with ``beam_size=1``: the model's suppressed tokens
    are never chosen, the begin-suppressed ones not at the first step; stops at end-of-text.

    Args:
        model: A transformers Whisper (possibly peft-wrapped).
        features: (n_mels, 3000) log-mel features.
        prompt: Start tokens (start-of-transcript, language/task for multilingual models,
            no-timestamps).

    Returns:
        The generated token ids, without the prompt and the end-of-text token.
    """
    import torch

    config = model.config
    eot = config.eos_token_id
    suppress = torch.tensor(list(config.suppress_tokens or []), dtype=torch.long)
    begin = torch.tensor(list(config.begin_suppress_tokens or []), dtype=torch.long)
    tokens = list(prompt)
    with torch.no_grad():
        encoded = model.get_encoder()(torch.from_numpy(features)[None]).last_hidden_state
        cache = None
        step_input = torch.tensor([tokens])
        for step in range(max_new_tokens):
            out = model(encoder_outputs=(encoded,), decoder_input_ids=step_input, cache=cache, use_cache=True)
            cache = out.cache
            logits = out.logits[0, -1].clone()
            logits[suppress] = -float("inf")
            if step == 0:
                logits[begin] = -float("inf")
            token = int(torch.argmax(logits))
            if token == eot:
                break
            tokens.append(token)
            step_input = torch.tensor([[token]])
    return tokens[len(prompt):]


def encoder_output(model: Any, features: np.ndarray) -> torch.Tensor:
    """Encoder hidden states (1, 1500, d_model) for one window of features."""
    import torch

    with torch.no_grad():
        return model.get_encoder()(torch.from_numpy(features)[None]).last_hidden_state
