"""Word-level combination of two decodes (trax.asr.combine) and its use by refine on hand-made words."""

from trax.asr.combine import Calibration, decide, disagreements, token
from trax.asr.refine import (
    RefineOptions,
    Replacement,
    _assemble,
    _flat_words,
    _unchosen,
    _write_back,
)


def _w(text: str, start: float, probability: float = 0.9, length: float = 0.4) -> dict:
    return {"word": text, "start": start, "end": round(start + length, 3), "probability": probability}


IDENTITY = Calibration()


def test_alignment_finds_substitutions_insertions_and_deletions_only() -> None:
    first = [token(w) for w in ["The", "quick,", "brown", "fox", "jumps"]]
    second = [token(w) for w in ["the", "quick", "crown", "fox", "really", "jumps", "high"]]
    regions = [(r.first, r.first_stop, r.second, r.second_stop) for r in disagreements(first, second)]
    # 'brown'/'crown' substituted, 'really' and 'high' only in the second; agreeing words (case and
    # punctuation aside) are not regions at all.
    assert regions == [(2, 3, 2, 3), (4, 4, 4, 5), (5, 5, 6, 7)]
    assert disagreements(first, first) == []
    assert [(r.first, r.first_stop, r.second, r.second_stop) for r in disagreements(first, first[:3])] == [(3, 5, 3, 3)]


def test_disagreement_goes_to_the_more_confident_calibrated_side() -> None:
    fast, second = [_w("Adam", 1.0, 0.55)], [_w("atom", 1.0, 0.8)]
    verdict = decide(fast, second, IDENTITY, IDENTITY)
    assert verdict.second_wins and (verdict.first_confidence, verdict.second_confidence) == (0.55, 0.8)
    assert "second more confident" in verdict.reason
    # The margin and a calibration that distrusts the second model both keep the fast word.
    assert not decide(fast, second, IDENTITY, IDENTITY, margin=0.3).second_wins
    harsh = Calibration(slope=1.0, intercept=-2.0, source="test")
    assert harsh(0.8) < 0.55 and not decide(fast, second, IDENTITY, harsh).second_wins
    # Calibration is monotone and bounded.
    values = [Calibration(1.7, -0.4)(p / 10) for p in range(11)]
    assert values == sorted(values) and 0 < values[0] and values[-1] < 1


def test_words_only_one_side_heard_are_kept_when_more_likely_right_than_not() -> None:
    confident, unsure = [_w("really", 2.0, 0.9)], [_w("uh", 2.0, 0.3)]
    # Insertion by the second decode: its words against 'no word' (1 - their confidence).
    assert decide([], confident, IDENTITY, IDENTITY).second_wins
    assert not decide([], unsure, IDENTITY, IDENTITY).second_wins
    # Deletion by the second decode: the fast word goes only when it is more likely wrong.
    assert decide(unsure, [], IDENTITY, IDENTITY).second_wins
    assert not decide(confident, [], IDENTITY, IDENTITY).second_wins


def test_words_split_differently_are_no_disagreement() -> None:
    verdict = decide([_w("woodcutters", 1.0, 0.5)], [_w("wood", 1.0, 0.9), _w("cutters", 1.3, 0.9)], IDENTITY, IDENTITY)
    assert not verdict.second_wins and "split into words differently" in verdict.reason


def test_a_third_decode_votes_before_confidence() -> None:
    fast, second = [_w("Adam", 1.0, 0.55)], [_w("atom", 1.0, 0.8)]
    verdict = decide(fast, second, IDENTITY, IDENTITY, third=["adam"])
    assert not verdict.second_wins and "third decode agrees with the fast" in verdict.reason
    assert decide(fast, second, IDENTITY, IDENTITY, margin=0.5, third=["atom"]).second_wins
    assert decide(fast, second, IDENTITY, IDENTITY, third=["at", "home"]).second_wins  # no majority: confidence


def test_combined_words_keep_the_second_decodes_times_and_stay_monotonic() -> None:
    words = [_w("the", 0.0), _w("Adam", 0.5, 0.3), _w("paintings", 1.0), _w("are", 1.6), _w("nice", 2.0)]
    segments = [{"start": 0.0, "end": 1.4, "text": "the Adam paintings", "words": words[:3]},
                {"start": 1.6, "end": 2.4, "text": "are nice", "words": words[3:]}]
    records = [_unchosen(s) for s in segments]
    flat = _flat_words(segments)
    # 'Adam' -> 'atom' (second's own times, which overlap the previous word), 'really' inserted
    # before 'nice' and 'are' deleted; the deletion is refused.
    reps = [Replacement(1, 2, [_w("atom", 0.35, 0.8, 0.3)], 0.3, 0.8, True, "second"),
            Replacement(3, 3, [_w("really", 1.7, 0.9, 0.25)], 0.1, 0.9, True, "second"),
            Replacement(3, 4, [], 0.9, 0.1, False, "fast")]
    for record in records:
        record["chosen"] = True
    _write_back(segments, records, _assemble(segments, flat, reps), _assemble(segments, flat, [r for r in reps if r.accepted]),
                widen=True)
    assert [s["text"] for s in segments] == ["the atom paintings", "really are nice"]
    atom = segments[0]["words"][1]
    assert (atom["start"], atom["end"]) == (0.4, 0.65)  # clipped only where it overlapped 'the'
    assert segments[1]["words"][0] == _w("really", 1.7, 0.9, 0.25)
    times = [t for s in segments for w in s["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times)
    assert all(s["start"] <= s["words"][0]["start"] and s["words"][-1]["end"] <= s["end"] for s in segments)
    assert records[0]["text_before"] == "the Adam paintings"


def test_combine_is_the_default_mode() -> None:
    assert RefineOptions().mode == "combine" and RefineOptions().chunks == "all"


def test_combine_into_resolves_each_disagreement_per_chunk_and_records_both_candidates() -> None:
    from trax.asr.refine import combine_into
    from trax.asr.second_opinion import Chunk

    first = [_w("So", 0.0), _w("the", 0.5), _w("Adam", 1.0, 0.4), _w("bomb", 1.5), _w("uh", 2.0, 0.2)]
    later = [_w("nice", 10.0, 0.3), _w("day", 10.5)]
    segments = [{"start": 0.0, "end": 2.4, "text": "So the Adam bomb uh", "words": first},
                {"start": 10.0, "end": 10.9, "text": "nice day", "words": later}]
    # The second decode agrees on 'so the bomb', hears 'atom' for 'Adam', no 'uh', and adds a
    # confident 'exploded' after 'bomb'. The second chunk (10-11 s) was not decoded again: its
    # doubtful 'nice' must stay although the second decode has nothing there.
    second = [_w("so", 0.0), _w("the", 0.5), _w("atom", 1.0, 0.9), _w("bomb", 1.5), _w("exploded", 1.9, 0.8, 0.3)]
    chunks = [Chunk(0.0, 2.5, 2, True), Chunk(9.8, 11.0, 1, False)]
    records = [_unchosen(s) for s in segments]
    record = combine_into(segments, records, second, chunks, "embedded:tiny.en", "embedded:base",
                          RefineOptions(enabled=True), set())
    assert [s["text"] for s in segments] == ["So the atom bomb exploded", "nice day"]
    summary = [(c["fast"]["text"], c["second"]["text"], c["chosen"]) for c in record["changes"]]
    assert summary == [("Adam", "atom", "second"), ("uh", "exploded", "second")]
    adam = record["changes"][0]
    assert (adam["fast"]["confidence"], adam["second"]["confidence"]) == (0.4, 0.9) and "more confident" in adam["reason"]
    assert record["calibration"]["fast"]["source"].startswith("identity")
    assert records[0]["refined"] and records[0]["text_before"] == "So the Adam bomb uh" and not records[1]["chosen"]
    assert segments[0]["words"][-1] == {**_w("exploded", 1.9, 0.8, 0.3), "change": 1} and segments[0]["end"] == 2.4
    # Each disputed word that stays carries its change's index (the quality model's agreement
    # feature); words both decoders heard alike carry none.
    assert [(w["word"], w.get("change")) for s in segments for w in s["words"]] == [
        ("So", None), ("the", None), ("atom", 0), ("bomb", None), ("exploded", 1), ("nice", None), ("day", None)]
    # The agreement-fitted calibration is used only when asked for.
    asked = combine_into([dict(s) for s in segments], [_unchosen(s) for s in segments], second, chunks,
                         "embedded:tiny.en", "embedded:base", RefineOptions(enabled=True, calibration="agreement"), set())
    assert asked["calibration"]["second"]["source"].startswith("Platt")


def test_disputed_words_are_marked_whichever_side_wins_and_dropped_ones_mark_a_neighbour() -> None:
    from trax.asr.refine import combine_into
    from trax.asr.second_opinion import Chunk

    fast = [_w("we", 0.0), _w("uh", 0.5, 0.2), _w("went", 1.0), _w("home", 1.5, 0.9), _w("to", 2.0),
            _w("now", 2.5, 0.3)]
    # 'uh' only in the fast decode (unsure: dropped, the next word carries the mark), 'home' vs
    # 'Rome' (the fast word more confident: kept, and marked), 'now' only in the fast decode at
    # the chunk's end (dropped: the word before it carries the mark).
    second = [_w("we", 0.0), _w("went", 1.0), _w("Rome", 1.5, 0.6), _w("to", 2.0)]
    segments = [{"start": 0.0, "end": 2.9, "text": "we uh went home to now", "words": fast}]
    record = combine_into(segments, [_unchosen(s) for s in segments], second, [Chunk(0.0, 3.0, 2, True)],
                          "embedded:tiny.en", "embedded:base", RefineOptions(enabled=True), set())
    assert [(c["fast"]["text"], c["second"]["text"], c["chosen"]) for c in record["changes"]] == [
        ("uh", "", "second"), ("home", "Rome", "fast"), ("now", "", "second")]
    assert [(w["word"], w.get("change")) for w in segments[0]["words"]] == [
        ("we", None), ("went", 0), ("home", 1), ("to", 2)]


class _RecordingModel:
    """Stands in for a WhisperModel to observe what the second decode hands it (no words back)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[float]]] = []

    def transcribe(self, audio, clip_timestamps, **_):
        self.calls.append((len(audio), list(clip_timestamps)))
        return iter(()), None


def test_second_decode_reads_the_recording_in_pieces_and_decodes_whole_speech_chunks(tmp_path) -> None:
    """Memory stays flat in the recording's length: the decoder never gets more than one 5-minute
    piece, and each clip is a whole speech chunk (Silero VAD, at most 30 s)."""
    import wave

    import numpy as np
    from conftest import JFK

    from trax.asr.second_opinion import CHUNK_S, decode_chunks
    from trax.asr.transcribe import TranscribeOptions
    from trax.io.media import PIECE_S, SAMPLE_RATE, decode_clip

    speech = decode_clip(JFK, None, None, "test", "jfk")
    pause = np.zeros(20 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([speech, pause] * 22)  # ~11.4 minutes: 3 pieces
    wav = tmp_path / "long.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(SAMPLE_RATE)
        handle.writeframes((audio * 32767).astype("<i2").tobytes())
    model = _RecordingModel()
    words, chunks = decode_chunks(model, str(wav), TranscribeOptions(language="en", batch_size=0), None)
    assert words == [] and len(model.calls) == 3
    assert max(length for length, _ in model.calls) <= PIECE_S * SAMPLE_RATE
    assert len(chunks) == 22 and all(c.decoded and 8 < c.end - c.start <= CHUNK_S for c in chunks)
    assert sum(len(clips) // 2 for _, clips in model.calls) == 22
    # Only chunks holding a doubtful word are decoded when asked.
    model = _RecordingModel()
    _, chunks = decode_chunks(model, str(wav), TranscribeOptions(language="en", batch_size=0), None,
                              choose=lambda start, end: int(start < 60))
    assert [c.decoded for c in chunks] == [True] * 2 + [False] * 20 and len(model.calls) == 1


def _random_recording(rng) -> tuple[list[dict], list[tuple[list, list]]]:
    """Fast segments and the second decode's pieces (chunks, words) of a made-up recording: words
    agreeing, substituted, dropped and inserted, times jittered, gaps, silent pieces, chunks not
    decoded."""
    from trax.asr.second_opinion import Chunk

    vocabulary = ["the", "a", "cat", "sat", "on", "mat", "uh", "Adam", "atom", "bomb", "so", "we", "went"]
    t, segments, fast = 0.0, [], []
    for _ in range(rng.randint(0, 30)):
        t += rng.choice([0.0, 0.1, 0.5, 2.0, 8.0, 20.0])
        start, words = t, []
        for _ in range(rng.choice([0, 1, 2, 5, 9])):
            length = rng.choice([0.1, 0.3, 0.5])
            words.append(_w(rng.choice(vocabulary), round(t, 2), round(rng.random(), 3), length))
            t += length + rng.choice([0.0, 0.05, 0.3])
        t = max(t, start + 0.1)
        segments.append({"start": round(start, 2), "end": round(t, 2), "words": words,
                         "text": " ".join(w["word"] for w in words)})
        fast += words
    second = []
    for word in fast:
        draw, shift = rng.random(), rng.choice([0.0, 0.0, 0.05, -0.05, 0.2])
        if draw < 0.1:
            continue
        second.append({**word, "start": round(max(0.0, word["start"] + shift), 2),
                       "end": round(max(0.0, word["end"] + shift), 2), "probability": round(rng.random(), 3),
                       "word": word["word"] if draw < 0.7 else rng.choice(vocabulary)})
        if rng.random() < 0.08:
            second.append(_w(rng.choice(vocabulary), second[-1]["end"], round(rng.random(), 3), 0.2))
    chunks, c = [], 0.0
    while c < t + 1:
        length = rng.choice([0.5, 3.0, 10.0, 30.0])
        if rng.random() < 0.8:
            chunks.append(Chunk(round(c, 2), round(c + length, 2), 1, rng.random() < 0.85))
        c += length + rng.choice([0.0, 0.2, 1.0, 5.0])
    # Pieces: consecutive runs of chunks, each with the second-decode words of its time.
    cuts = sorted(rng.sample(range(1, len(chunks)), min(len(chunks) - 1, rng.randint(0, 5)))) if chunks else []
    groups = [chunks[a:b] for a, b in zip([0, *cuts], [*cuts, len(chunks)])] if chunks else [[]]
    pieces = [(group, []) for group in groups]
    for word in second:
        middle = (word["start"] + word["end"]) / 2
        index = max([i for i, g in enumerate(groups) if g and g[0].start <= middle], default=0)
        pieces[index][1].append(word)
    for index in sorted(rng.sample(range(len(pieces) + 1), rng.randint(0, 2)), reverse=True):
        pieces.insert(index, ([], []))  # a piece without speech
    return segments, pieces


def test_combining_piece_by_piece_gives_what_the_whole_recording_at_once_gives() -> None:
    """Refine combines one piece of the second decode at a time (memory flat in the recording's
    length): wherever the pieces are cut, every segment, record, change mark and the file-level
    record equal those of the whole recording combined at once (checked against the earlier
    whole-list code when this was written, and on a real recording, byte for byte)."""
    import copy
    import random

    from trax.asr.refine import Combiner, combine_into

    rng = random.Random(32)
    options = [RefineOptions(enabled=True), RefineOptions(enabled=True, margin=0.1, calibration="agreement")]
    changed = 0
    for case in range(300):
        segments, pieces = _random_recording(rng)
        option, vocabulary = options[case % 2], {"atom"} if case % 3 == 0 else set()
        whole = copy.deepcopy(segments)
        records = [_unchosen(s) for s in whole]
        chunks = [c for group, _ in pieces for c in group]
        second = copy.deepcopy([w for _, words in pieces for w in words])
        record = combine_into(whole, records, second, chunks, "embedded:tiny.en", "embedded:base", option, vocabulary)
        combiner = Combiner("embedded:tiny.en", "embedded:base", option, vocabulary)
        streamed = list(combiner.run(((s, _unchosen(s)) for s in copy.deepcopy(segments)), copy.deepcopy(pieces)))
        assert streamed == list(zip(whole, records, strict=True)) and combiner.record() == record, case
        changed += sum(r["refined"] for r in records)
    assert changed > 300  # the cases do change words


def test_combining_holds_a_window_of_the_recording_not_all_of_it() -> None:
    """Segments are written while later ones are still unread, and the second decode's pieces are
    asked for only as the combination reaches them: the lag is the same for 10 minutes as for
    2 hours."""
    import random

    from trax.asr.refine import Combiner
    from trax.asr.second_opinion import Chunk

    def worst_lag(minutes: int) -> tuple[int, int]:
        rng, state = random.Random(7), {"read": 0, "pieces": 0}

        def segments():
            for number in range(minutes * 12):  # one segment of 12 words every 5 s
                words = [_w(rng.choice(["a", "b", "c"]), number * 5 + k * 0.35, rng.random(), 0.3) for k in range(12)]
                state["read"] += 1
                yield {"start": words[0]["start"], "end": words[-1]["end"], "text": "", "words": words}, {}

        def pieces():
            for start in range(0, minutes * 60, 300):
                chunks = [Chunk(start + k * 25.0, start + k * 25.0 + 24.5, 0, True) for k in range(12)]
                words = [_w(rng.choice(["a", "b", "c"]), c.start + k * 0.35, rng.random(), 0.3)
                         for c in chunks for k in range(60)]
                state["pieces"] += 1
                yield chunks, words

        combiner, written, worst = Combiner("embedded:tiny.en", "embedded:base", RefineOptions(), set()), 0, 0
        for segment, _ in combiner.run(((s, {**r, **_unchosen(s)}) for s, r in segments()), pieces()):
            written += 1
            worst = max(worst, state["read"] - written)
            assert state["pieces"] * 300 <= segment["start"] + 2 * 300  # at most one piece ahead
        return worst, written

    short, long = worst_lag(10), worst_lag(120)
    assert long[1] == 12 * short[1] and long[0] == short[0] < 12
