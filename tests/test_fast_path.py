"""The batched, VAD-first fast pass: no words from non-speech, reproducible bytes, stage switches."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import BENCH, JFK, JFK_TEXT, ffmpeg, jobs_planned, result_tree
from trax.quality.evaluation import normalize_text
from trax.io.jsonio import read_json
from trax.asr.transcribe import TranscribeOptions, load_wav, load_whisper, resolve_whisper, transcribe_audio

#: Generated non-speech, as ffmpeg lavfi sources: (file name, source, seconds).
from trax.process import pin_blas_threads
NON_SPEECH = {
    "tone": "sine=frequency=440:sample_rate=16000",
    "pink_noise": "anoisesrc=c=pink:r=16000:a=0.3:seed=7",
    # Three voices gliding upwards: a chord sweep, the closest thing to music a filter graph makes.
    "chord_sweep": "aevalsrc='0.2*sin(2*PI*(220+40*t)*t)+0.2*sin(2*PI*(277+50*t)*t)+0.2*sin(2*PI*(330+60*t)*t)':s=16000",
    "silence": "anullsrc=r=16000:cl=mono",
}


@pytest.fixture(scope="module")
def non_speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("non_speech")
    files = {}
    for name, source in NON_SPEECH.items():
        files[name] = root / f"{name}.wav"
        ffmpeg("-f", "lavfi", "-i", source, "-t", "15", "-ac", "1", str(files[name]))
    return files


@pytest.fixture(scope="module")
def tiny_en() -> object:
    """tiny.en as the workflow loads it (int8, 2 threads), loaded once for this module."""
    pin_blas_threads()
    options = TranscribeOptions()
    return load_whisper(resolve_whisper(options.model), options)


def test_non_speech_gives_no_words_and_outputs_are_byte_identical(make_workflow, non_speech, tmp_path) -> None:
    inputs = [str(JFK), *map(str, non_speech.values())]
    served = make_workflow(inputs, name="served")
    served.run(cores=2)

    for name in non_speech:
        fast = read_json(served.result(name, "transcript.fast.json"))
        merged = read_json(served.result(name, "merged.json"))
        assert fast["segments"] == [] and fast["text"] == "", (name, fast["text"], fast.get("dropped_segments"))
        assert merged["utterances"] == [], name
        assert served.result(name, "transcript.srt").read_text() == ""
    jfk = read_json(served.result("jfk", "transcript.fast.json"))
    assert normalize_text(jfk["text"]) == normalize_text(JFK_TEXT)
    assert jfk["provenance"]["config"]["batch_size"] > 0  # the batched decoder is the default

    # Both models were warmed at start and loaded once; nothing loaded inside a job's wait.
    stats = served.server("stats")
    assert {model["key"]["kind"]: model["loads"] for model in stats["models"]} == {"whisper": 1, "diarize": 1}

    # One core, no server (models loaded in a separate process per job): the same bytes.
    alone = make_workflow(inputs, name="alone", server={"enabled": False})
    alone.run(cores=1)
    first, second = result_tree(served.workdir / "results"), result_tree(alone.workdir / "results")
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []

    # A rerun has nothing to do.
    assert "Nothing to be done" in served.run("--dry-run").output


def test_sequential_decoder_drops_repetition_loops_and_says_why(non_speech, tiny_en) -> None:
    """Without VAD, Whisper fills a pure tone with a looping sentence; the filter drops it."""
    options = TranscribeOptions(batch_size=0)
    tone = load_wav(non_speech["tone"])  # generated at 16 kHz mono s16, as normalize writes
    segments, dropped, _, _ = transcribe_audio(tiny_en, tone, options)
    assert segments == []
    assert dropped, "the tone decoded to nothing at all: the filter was not exercised"
    assert {d.reason for d in dropped} <= {"repetition", "no_speech"}
    loop = next(d for d in dropped if d.reason == "repetition")
    assert loop.compression_ratio > options.max_compression_ratio
    assert "compression ratio" in loop.detail


def test_one_window_of_speech_takes_the_sequential_decoder(non_speech, tiny_en) -> None:
    """``sequential_max_s``: speech that fits one window is decoded sequentially, longer audio in
    batches, and audio without speech never reaches a decoder."""
    options = TranscribeOptions(beam_size=3)
    jfk = load_wav(BENCH / "faster-whisper" / "jfk.16k.wav")  # 11 s

    def decode(audio: np.ndarray, chosen: TranscribeOptions):
        return transcribe_audio(tiny_en, audio, chosen)[:2]

    # The two decoders give different segments for both inputs, so each equality pins the route.
    assert decode(jfk, options) == decode(jfk, replace(options, batch_size=0))
    three = np.concatenate([jfk, jfk, jfk])  # 33 s: over one window
    assert decode(three, options) == decode(three, replace(options, sequential_max_s=0))
    # The tone has no speech for the VAD: nothing decoded, so nothing dropped either (the
    # sequential decoder would have decoded it into a repetition loop and dropped that).
    assert decode(load_wav(non_speech["tone"]), options) == ([], [])


def test_transcripts_only_without_diarization(make_workflow) -> None:
    workflow = make_workflow(str(JFK), diarize={"enabled": False})
    planned = jobs_planned(workflow.run("--dry-run"))
    assert "diarize" not in planned and planned["merge"] == 1
    workflow.run(cores=2)
    merged = read_json(workflow.result("jfk", "merged.json"))
    assert [speaker["id"] for speaker in merged["speakers"]] == ["SPEAKER_1"]
    assert merged["provenance"]["diarization"] == "disabled"
    assert not workflow.result("jfk", "diarization.rttm").exists()
    assert normalize_text(" ".join(u["text"] for u in merged["utterances"])) == normalize_text(JFK_TEXT)
    assert "SPEAKER_1" in workflow.result("jfk", "transcript.txt").read_text()


COLUMBIA = BENCH / "const-me-whisper" / "columbia.16k.wav"  # 199 s of one speaker


def test_vad_in_blocks_gives_faster_whispers_own_speech_probabilities() -> None:
    """Silero VAD runs VAD_BLOCK_WINDOWS windows at a time once faster-whisper is imported the
    trax way, and its speech probabilities are the bits of faster-whisper's one big batch."""
    from trax.process import VAD_BLOCK_WINDOWS, import_faster_whisper

    import_faster_whisper()
    from faster_whisper.vad import SileroVADModel, get_vad_model

    assert getattr(SileroVADModel.__call__, "_trax_blocked", False)
    audio = load_wav(COLUMBIA)
    audio = audio[: len(audio) // 512 * 512]
    assert len(audio) > 5 * VAD_BLOCK_WINDOWS * 512  # several blocks, a short last one
    model = get_vad_model()
    calls = []
    session = model.session

    class Counting:
        def run(self, *args, **kwargs):
            calls.append(len(args[1]["input"]))
            return session.run(*args, **kwargs)

    model.session = Counting()
    try:
        blocked = model(audio.copy())
    finally:
        model.session = session
    assert max(calls) == VAD_BLOCK_WINDOWS and len(calls) == -(-len(audio) // (512 * VAD_BLOCK_WINDOWS))
    whole = SileroVADModel.__call__.unbounded(model, audio.copy())
    assert blocked.dtype == whole.dtype and np.array_equal(blocked, whole)
    assert 0.2 < float((whole > 0.5).mean()) < 0.98  # real speech with pauses, not a degenerate signal


def test_batched_decode_encodes_chunk_by_chunk_with_the_batched_bytes(tiny_en) -> None:
    """The batched fast pass encodes each chunk of a batch on its own (half the encoder's peak
    memory at batch 2) and gets the batched encoder's output bytes."""
    from trax.asr.transcribe import _SilencePaddedChunks

    audio = load_wav(COLUMBIA)
    view = _SilencePaddedChunks(tiny_en)
    features = np.stack([view.feature_extractor(audio[i * 480000 : (i + 1) * 480000])[..., :-1] for i in range(2)])
    rows = []
    whole = tiny_en.encode
    tiny_en.encode = lambda batch: rows.append(len(batch)) or whole(batch)
    try:
        one_by_one = np.asarray(view.encode(features))
    finally:
        del tiny_en.encode
    assert rows == [1, 1]
    batched = np.asarray(tiny_en.encode(features))
    assert one_by_one.shape == batched.shape == (2, 1500, 384)
    assert np.array_equal(one_by_one, batched)

    encoded = []
    original = _SilencePaddedChunks.encode

    def spy(self, features):
        encoded.append(len(features))
        return original(self, features)

    _SilencePaddedChunks.encode = spy
    try:
        segments, _, _, _ = transcribe_audio(tiny_en, audio[: 90 * 16000], TranscribeOptions(batch_size=2))
    finally:
        _SilencePaddedChunks.encode = original
    assert encoded and max(encoded) == 2  # the pipeline's batches come through the view
    assert sum(len(s.words) for s in segments) > 150


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["embedded:tiny.en", "embedded:base"])
def test_int8_copy_gives_ctranslate2s_own_int8_weights(spec, tmp_path) -> None:
    """The cached int8 copy must decode exactly as CTranslate2's load-time quantization does, or
    outputs would depend on whether the cache exists."""
    import ctranslate2
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    from trax.asr.quantized import STAMP, int8_copy

    source = resolve_whisper(spec)
    copy = int8_copy(source.path, source.weights_sha256, cache=tmp_path)
    assert copy is not None and copy != source.path
    audio = decode_audio(str(JFK))
    outputs = []
    for folder in (source.path, copy):
        model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=2)
        features = np.ascontiguousarray(model.feature_extractor(audio)[None, :, :3000], dtype=np.float32)
        encoded = np.asarray(model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
        segments, _ = model.transcribe(audio, beam_size=3, word_timestamps=True, language="en")
        outputs.append((encoded, [(w.word, w.start, w.end, w.probability) for s in segments for w in s.words]))
    assert np.array_equal(outputs[0][0], outputs[1][0])
    assert outputs[0][1] == outputs[1][1] and len(outputs[0][1]) > 15

    # Made once: a second call reuses it; a copy missing its stamp (cut short) is made again.
    made = (copy / "model.bin").stat().st_mtime_ns
    assert int8_copy(source.path, source.weights_sha256, cache=tmp_path) == copy
    assert (copy / "model.bin").stat().st_mtime_ns == made
    (copy / STAMP).unlink()
    assert int8_copy(source.path, source.weights_sha256, cache=tmp_path) == copy and (copy / STAMP).is_file()
    # Weights already int8 cannot be copied: they load as they are.
    assert int8_copy(copy, "0" * 64, cache=tmp_path) is None
    assert not (tmp_path / "models" / "int8" / ("0" * 32)).exists()


def test_an_unwritable_cache_loads_the_weights_as_they_are(tmp_path, monkeypatch, caplog) -> None:
    from trax.asr.transcribe import weights_to_load

    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("TRAX_CACHE_DIR", str(blocker / "cache"))
    source = resolve_whisper("embedded:tiny.en")
    assert weights_to_load(source, "cpu", "int8") == source.name
    assert "no int8 copy" in caplog.text
    assert weights_to_load(source, "cpu", "float32") == source.name  # only int8 loads convert


def test_second_decode_releases_free_memory_around_each_call_with_the_same_words(tiny_en, tmp_path, monkeypatch) -> None:
    """Refine's second decode hands the heap's free pages back before each batch's encode, generate
    and align (what one call freed stayed resident under the next call's peak, and the level crept
    up over long recordings, issue 32); the words are the bytes of a decode that releases nothing.
    The fast pass's batched decoder does not release between its calls."""
    import shutil

    from trax.asr import transcribe
    from trax.asr.second_opinion import decode_chunks

    wav = tmp_path / "columbia.wav"
    shutil.copy(COLUMBIA, wav)
    options = TranscribeOptions(batch_size=4, beam_size=2, language="en")
    releases = []
    monkeypatch.setattr(transcribe, "release_free_memory", lambda: releases.append(1))
    released, chunks = decode_chunks(tiny_en, str(wav), options, None)
    batches = -(-sum(c.decoded for c in chunks) // options.batch_size)
    assert batches >= 2 and len(releases) == 3 * batches  # before encode, before generate, before align

    kept = []
    original = transcribe._SilencePaddedChunks.__init__

    def keeping(self, model, release_between_calls=False):
        kept.append(release_between_calls)
        original(self, model, release_between_calls=False)

    monkeypatch.setattr(transcribe._SilencePaddedChunks, "__init__", keeping)
    unreleased, _ = decode_chunks(tiny_en, str(wav), options, None)
    assert kept == [True] and len(releases) == 3 * batches  # the view was asked to, and this time did not
    assert released == unreleased and len(released) > 300

    releases.clear()
    transcribe_audio(tiny_en, load_wav(COLUMBIA)[: 90 * 16000], TranscribeOptions(batch_size=2))
    assert releases == []
