"""Rebuilding transformers Whisper from CTranslate2 weights, and converting back."""

import json

import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

from conftest import JFK, JFK_TEXT
from trax.asr.adapters import decoder_prompt, whisper_tokenizer
from trax.asr.ct2_hf import convert_to_ct2, encoder_output, greedy_decode, load_hf_whisper, log_mel, read_ct2_model
from trax.errors import TraxError
from trax.quality.evaluation import normalize_text
from trax.asr.models import resolve_whisper


@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.set_num_threads(2)
    source = resolve_whisper("embedded:tiny.en")
    model = load_hf_whisper(source.path)
    features = log_mel(decode_audio(str(JFK)), model.config.num_mel_bins)
    return source, model, features


def _ct2_encoder(model_dir, features: np.ndarray) -> np.ndarray:
    import ctranslate2

    # float32 compute: CTranslate2 dequantizes stored int8/float16 weights, as the rebuild does.
    fw = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    return np.array(fw.model.encode(ctranslate2.StorageView.from_array(features[None]), to_cpu=True))


def _ct2_greedy(model_dir, features: np.ndarray, prompt: list[int]) -> list[int]:
    import ctranslate2

    fw = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    result = fw.model.generate(ctranslate2.StorageView.from_array(features[None]), [prompt], beam_size=1)
    return result[0].sequences_ids[0]


def test_rebuilt_model_matches_ctranslate2(tiny) -> None:
    source, model, features = tiny
    assert model.config.encoder_layers == 4 and model.config.d_model == 384 and model.config.vocab_size == 51864
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()  # tied
    for layer in model.model.encoder.layers:
        assert layer.self_attn.k_proj.bias is None

    reference = _ct2_encoder(source.path, features)
    assert np.abs(encoder_output(model, features).numpy() - reference).max() < 1e-3

    tokenizer = whisper_tokenizer(source, multilingual=False, language="en")
    prompt = decoder_prompt(tokenizer)
    tokens = greedy_decode(model, features, prompt)
    assert tokens == _ct2_greedy(source.path, features, prompt)
    assert normalize_text(tokenizer.decode(tokens)) == normalize_text(JFK_TEXT)


def test_convert_back_to_int8_loads_in_faster_whisper(tiny, tmp_path) -> None:
    source, model, features = tiny
    out = convert_to_ct2(model, source.path, tmp_path / "ct2", quantization="int8")
    assert json.loads((out / "config.json").read_text()) == json.loads((source.path / "config.json").read_text())
    assert read_ct2_model(out / "model.bin").get("encoder/layer_0/self_attention/linear_0/weight").dtype == np.int8
    segments, _ = WhisperModel(str(out), device="cpu", compute_type="int8", cpu_threads=2).transcribe(
        str(JFK), beam_size=5, language="en")
    assert normalize_text(" ".join(s.text for s in segments)) == normalize_text(JFK_TEXT)

    # int8 weights are dequantized with their per-row scales: the rebuild of the converted model
    # agrees with CTranslate2 running the same int8 weights in float32.
    rebuilt = load_hf_whisper(out)
    assert np.abs(encoder_output(rebuilt, features).numpy() - _ct2_encoder(out, features)).max() < 1e-2
    assert not list(tmp_path.glob(".*")), "staging folder left behind"


def test_not_a_model_directory(tmp_path) -> None:
    with pytest.raises(TraxError, match="no model.bin"):
        load_hf_whisper(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"\x07\x00\x00\x00")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TraxError, match="unsupported CTranslate2 binary version 7"):
        load_hf_whisper(tmp_path)


def test_fast_model_loads_without_torch_and_converting_still_works(tmp_path) -> None:
    """load_whisper keeps ctranslate2's converter-only imports (torch, transformers) out of a fresh
    process; a conversion later in the same process binds them and converts."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from trax.asr.models import resolve_whisper\n"
        "from trax.asr.transcribe import TranscribeOptions, load_whisper\n"
        "options = TranscribeOptions()\n"
        "load_whisper(resolve_whisper(options.model), options)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
        "from trax.asr.ct2_hf import convert_to_ct2, load_hf_whisper\n"
        "source = resolve_whisper('embedded:tiny.en')\n"
        "out = convert_to_ct2(load_hf_whisper(source.path), source.path, sys.argv[1], quantization='int8')\n"
        "print((out / 'model.bin').is_file())\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ct2")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["[]", "True"]
