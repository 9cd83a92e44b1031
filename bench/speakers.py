"""Speaker profiles on real voices: identification, its error rates, and linking across recordings.

Usage::

    .venv/bin/python bench/speakers.py                 # default settings (config speakers.*)
    .venv/bin/python bench/speakers.py --recordings 20 --seed 99   # other conversations of the same voices

Builds conversations of three people from ``trax.quality.benchdata.voice_pool`` (some enrolled,
some not), diarizes each with the workflow's defaults and identifies every diarized speaker
against the profile store built by the workflow's own enrollment code. Tables: identification by
threshold and margin, where enrolled speech goes, embedding EER, and linking across recordings.

Voices, references, tables and how the defaults were chosen: bench/README.md, "speakers.py".
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np
from common import PAUSE_DBFS, PAUSE_S, RATE, Audio, level, speech_turns

from trax.diarization.embedded import (
    SPEAKER_EMBEDDINGS,
    EmbeddedOptions,
    diarize_embedded,
)
from trax.diarization.pipeline import DiarizeOptions, fix_threads, load_models
from trax.diarization.speakers import (
    SpeakerOptions,
    Voice,
    build_store,
    embed_clip,
    identify,
    link,
)
from trax.io.annotation import Turn
from trax.quality.benchdata import voice_pool

SETTINGS = {"backend": "embedded", "threads": 1, "embedded": {}}
TURN_MAX_S = 8.0
GAP_S = 0.4
#: Pause thresholds the bench also scores, to show how much the result depends on that choice.
SENSITIVITY_DBFS = (-30.0, PAUSE_DBFS, -40.0)


def leopard_check(audio: Audio, pool) -> str:
    """How the pause rule's speech span of picovoice's test.wav compares with the word times that
    came with it (Picovoice Leopard's, not the diarizer's): the one test clip with word times."""
    import json

    clip = next((c for c in pool["reader1272"]["test"] if c.path.name == "test.wav"), None)
    data = clip and clip.path.with_name("test_data.json")
    if data is None or not data.is_file():
        return "no word times"
    words = json.loads(data.read_text(encoding="utf-8"))["tests"]["language_tests"][0]["words"]
    speech = speech_turns(level(audio.clip(clip)), 0.0, "reader1272")
    gaps = [(a["end_sec"], b["start_sec"]) for a, b in zip(words, words[1:]) if b["start_sec"] - a["end_sec"] >= PAUSE_S]
    return (f"speech {speech[0][0]:.2f}-{speech[-1][1]:.2f} s in {len(speech)} region(s); words "
            f"{words[0]['start_sec']:.2f}-{words[-1]['end_sec']:.2f} s with {len(gaps)} gap(s) >= {PAUSE_S:g} s")


def make_recordings(pool, audio: Audio, count: int, seed: int, pause_dbfs=(PAUSE_DBFS,)):
    """Conversations of three people: (samples, reference turns [(start, end, person)] spanning
    whole clips, {pause threshold: the same turns without their pauses}).
    """
    rng = random.Random(seed)
    enrolled = sorted(p for p, v in pool.items() if v["enroll"])
    unenrolled = sorted(p for p, v in pool.items() if not v["enroll"])
    cursor = {p: 0 for p in pool}
    recordings = []
    for index in range(count):
        people = rng.sample(enrolled, 2) + rng.sample(unenrolled, 1) if index % 2 == 0 else \
            rng.sample(enrolled, 1) + rng.sample(unenrolled, 2)
        pieces, reference, clock = [], [], 0.0
        speech = {noise: [] for noise in pause_dbfs}
        for turn in range(9):
            person = people[turn % 3] if turn < 3 else rng.choice(people)
            clips = pool[person]["test"]
            samples = level(audio.clip(clips[cursor[person] % len(clips)])[: int(TURN_MAX_S * RATE)])
            cursor[person] += 1
            pieces += [samples, np.zeros(int(GAP_S * RATE), dtype=np.float32)]
            reference.append((clock, clock + len(samples) / RATE, person))
            for noise in pause_dbfs:
                speech[noise] += speech_turns(samples, clock, person, noise)
            clock += len(samples) / RATE + GAP_S
        recordings.append((np.concatenate(pieces).astype(np.float32), reference, speech))
    return recordings


def frame_people(reference, frames: int) -> np.ndarray:
    people = np.full(frames, "", dtype=object)
    for start, end, person in reference:
        people[int(start * 100): int(end * 100)] = person
    return people


def frame_labels(turns, frames: int) -> np.ndarray:
    labels = np.full(frames, "", dtype=object)
    for turn in sorted(turns, key=lambda t: -(t.end - t.start)):
        labels[int(turn.start * 100): int(turn.end * 100)] = turn.speaker
    return labels


def eer(target: list[float], nontarget: list[float]) -> float:
    """Equal error rate: where the false-rejection and false-acceptance rates cross."""
    best = 1.0
    for threshold in sorted(set(target) | set(nontarget)):
        fr = np.mean(np.array(target) < threshold)
        fa = np.mean(np.array(nontarget) >= threshold)
        best = min(best, max(fr, fa))
    return float(best)


def naming(runs, options: SpeakerOptions, store, enrolled, reference: str = "speech") -> dict[str, float]:
    """Shares of speech time for one setting, scored against ``reference``: ``"clip"`` (every
    clip's whole span is its person's speech) or ``"speech"`` (the clip without its pauses), or a
    pause threshold (a key of the runs' speech references)."""
    ok = wrong = ambiguous = enrolled_frames = unenrolled_named = unenrolled_frames = missed = 0
    for run in runs:
        samples, turns, vectors = run["samples"], run["turns"], run["vectors"]
        frames = len(samples) * 100 // RATE
        truth = run["reference"] if reference == "clip" else \
            run["speech"][PAUSE_DBFS if reference == "speech" else reference]
        people = frame_people(truth, frames)
        labels = frame_labels(turns, frames)
        found = {label: identify(vector, store, options) for label, vector in vectors.items()}
        names = np.array([found[label].name if label in found else None for label in labels], dtype=object)
        decisions = np.array([found[label].decision if label in found else "" for label in labels], dtype=object)
        is_enrolled = np.array([p in enrolled for p in people])
        spoken = people != ""
        enrolled_frames += int((is_enrolled & spoken).sum())
        ok += int((is_enrolled & (names == people)).sum())
        wrong += int((is_enrolled & (names != None) & (names != people)).sum())  # noqa: E711
        ambiguous += int((is_enrolled & (decisions == "ambiguous")).sum())
        missed += int((is_enrolled & (labels == "")).sum())
        unenrolled = spoken & ~is_enrolled
        unenrolled_frames += int(unenrolled.sum())
        unenrolled_named += int((unenrolled & (names != None)).sum())  # noqa: E711
    return {"ok": ok / enrolled_frames, "detected": ok / max(enrolled_frames - missed, 1),
            "wrong": wrong / enrolled_frames, "ambiguous": ambiguous / enrolled_frames,
            "missed": missed / enrolled_frames, "unenrolled": unenrolled_named / max(unenrolled_frames, 1)}


def majority_people(people: np.ndarray, labels: np.ndarray) -> dict[str, str]:
    """Each diarized speaker's majority person: who holds most of its reference speech frames
    (ties: the first name in sorted order); a speaker over no reference speech has none."""
    result = {}
    for label in sorted(set(labels.tolist()) - {""}):
        owners, counts = np.unique(people[(labels == label) & (people != "")], return_counts=True)
        if len(owners):
            result[label] = str(owners[int(np.argmax(counts))])
    return result


def losses(runs, options: SpeakerOptions, store, enrolled) -> dict[str, float]:
    """Where enrolled people's speech time goes (speech reference), as shares that add up to 1.

    ``no speaker``: the diarizer gave it no speaker. ``other's speaker``: its speaker is mostly
    someone else's speech (a merge or a boundary error of diarization). The rest lies in the
    person's own speaker (the one holding mostly their speech), which is ``named right``,
    ``unnamed`` (unknown or ambiguous) or ``named wrong``. ``ceiling`` = the share in the
    person's own speaker: what any rule that names whole diarized speakers can reach on these
    diarizations; ``ceiling unenrolled`` = unenrolled speech it would name (every speaker named
    by its majority person when enrolled).
    """
    keys = ("no speaker", "other's speaker", "named right", "unnamed", "named wrong")
    frames_in = dict.fromkeys(keys, 0)
    unenrolled_named = unenrolled_frames = 0
    for run in runs:
        frames = len(run["samples"]) * 100 // RATE
        people = frame_people(run["speech"][PAUSE_DBFS], frames)
        labels = frame_labels(run["turns"], frames)
        owner = majority_people(people, labels)
        names = {label: identify(vector, store, options).name for label, vector in run["vectors"].items()}
        own = np.array([owner.get(label, "") for label in labels], dtype=object)
        named = np.array([names.get(label) for label in labels], dtype=object)
        is_enrolled = np.isin(people, sorted(enrolled))
        in_own = is_enrolled & (labels != "") & (own == people)
        frames_in["no speaker"] += int((is_enrolled & (labels == "")).sum())
        frames_in["other's speaker"] += int((is_enrolled & (labels != "") & (own != people)).sum())
        frames_in["named right"] += int((in_own & (named == people)).sum())
        frames_in["unnamed"] += int((in_own & (named == None)).sum())  # noqa: E711
        frames_in["named wrong"] += int((in_own & (named != None) & (named != people)).sum())  # noqa: E711
        unenrolled = (people != "") & ~is_enrolled
        unenrolled_frames += int(unenrolled.sum())
        unenrolled_named += int((unenrolled & np.isin(own, sorted(enrolled))).sum())
    total = max(sum(frames_in.values()), 1)
    shares = {key: count / total for key, count in frames_in.items()}
    shares["ceiling"] = shares["named right"] + shares["unnamed"] + shares["named wrong"]
    shares["ceiling unenrolled"] = unenrolled_named / max(unenrolled_frames, 1)
    return shares


def identification_table(segmentation, runs, settings, store, enrolled, defaults) -> None:
    for threshold, margin in settings:
        options = SpeakerOptions(threshold=threshold, ambiguous_margin=margin)
        speech = naming(runs, options, store, enrolled, "speech")
        clip = naming(runs, options, store, enrolled, "clip")
        marker = " (default)" if (threshold, margin) == (defaults.threshold, defaults.ambiguous_margin) else ""
        print(f"| {segmentation} | {threshold:.3f} | {margin:.2f}{marker} | {speech['ok']:.1%} | {clip['ok']:.1%} | "
              f"{speech['detected']:.1%} | {speech['wrong']:.1%} | {speech['ambiguous']:.1%} | "
              f"{speech['missed']:.1%} | {clip['missed']:.1%} | {speech['unenrolled']:.1%} | {clip['unenrolled']:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recordings", type=int, default=10)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--dump", help="pickle the embeddings here (for experiments)")
    parser.add_argument("--verbose", action="store_true", help="one line per diarized speaker")
    parser.add_argument("--thresholds", default="0.70,0.75,0.78,0.80,0.82,0.84,0.85,0.86,0.88,0.90")
    parser.add_argument("--margins", default="0,0.02,0.04,0.06,0.08,0.10",
                        help="ambiguous margins, each at the default threshold")
    args = parser.parse_args()
    fix_threads(DiarizeOptions.from_config(SETTINGS))
    defaults = SpeakerOptions()
    pool = voice_pool()
    models = load_models(DiarizeOptions.from_config(SETTINGS))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        audio = Audio(workdir)
        table = workdir / "enroll.tsv"
        rows = ["name\taudio\tstart\tend"] + [
            f"{c.person}\t{c.path}\t{'' if c.start is None else c.start}\t{'' if c.end is None else c.end}"
            for person in sorted(pool) for c in pool[person]["enroll"]]
        table.write_text("\n".join(rows) + "\n", encoding="utf-8")
        store = build_store(table, SETTINGS, models, defaults)
        enrolled = {p.name for p in store.profiles}
        print(f"enrolled: {', '.join(sorted(enrolled))} ({sum(p.speech_s for p in store.profiles):.0f} s of speech); "
              f"unenrolled: {', '.join(sorted(set(pool) - enrolled))}")

        # Segment-level EER: every test clip alone against every profile.
        centroid_t, centroid_n, clip_t, clip_n = [], [], [], []
        clip_vectors = []
        for person in sorted(pool):
            for clip in pool[person]["test"]:
                samples = audio.clip(clip)
                if len(samples) < 1.5 * RATE:
                    continue
                vector, _ = embed_clip(models, samples, SETTINGS)
                if vector is None:
                    continue
                vector = vector / np.linalg.norm(vector)
                clip_vectors.append((person, vector))
                for profile in store.profiles:
                    score = float(vector @ np.asarray(profile.embedding))
                    best_clip = max(float(vector @ np.asarray(c["embedding"])) for c in profile.clips)
                    (centroid_t if profile.name == person else centroid_n).append(score)
                    (clip_t if profile.name == person else clip_n).append(best_clip)

        recordings = make_recordings(pool, audio, args.recordings, args.seed, SENSITIVITY_DBFS)
        results, oracle = [], []
        for index, (samples, reference, speech) in enumerate(recordings):
            turns, details = diarize_embedded(models, samples, EmbeddedOptions())
            run = {"name": f"rec{index:02d}", "samples": samples, "reference": reference, "speech": speech}
            results.append({**run, "turns": turns, "vectors": details[SPEAKER_EMBEDDINGS]})
            # Oracle segmentation: each person's own speech in this recording, embedded alone.
            own = {}
            for person in sorted({p for *_, p in reference}):
                voice = np.concatenate([samples[int(a * RATE): int(b * RATE)] for a, b, p in reference if p == person])
                own[person] = embed_clip(models, voice, SETTINGS)[0]
            oracle.append({**run, "turns": [Turn(a, b, p) for a, b, p in reference], "vectors": own})
        check = leopard_check(audio, pool)

    total = sum(len(r["samples"]) for r in results) / RATE
    clip_s = {p: 0.0 for p in ("enrolled", "unenrolled")}
    speech_s = dict(clip_s)
    for run in results:
        for key, turns in (("clip", run["reference"]), ("speech", run["speech"][PAUSE_DBFS])):
            for a, b, p in turns:
                (clip_s if key == "clip" else speech_s)["enrolled" if p in enrolled else "unenrolled"] += b - a
    print(f"{len(results)} test recordings, {total:.0f} s; diarized speakers: "
          f"{sum(len(r['vectors']) for r in results)} (reference: "
          f"{sum(len({p for *_, p in r['reference']}) for r in results)})")
    print(f"reference speech (clips without pauses of >= {PAUSE_S:g} s below {PAUSE_DBFS:g} dBFS): enrolled "
          f"{speech_s['enrolled']:.0f} of {clip_s['enrolled']:.0f} s of clip time, unenrolled "
          f"{speech_s['unenrolled']:.0f} of {clip_s['unenrolled']:.0f} s")
    print(f"check against word times (Picovoice Leopard's, picovoice-leopard/test.wav): {check}\n")

    thresholds = sorted({float(t) for t in args.thresholds.split(",")} | {defaults.threshold})
    margins = sorted({float(m) for m in args.margins.split(",")} | {defaults.ambiguous_margin})
    settings = [(t, defaults.ambiguous_margin) for t in thresholds] + \
        [(defaults.threshold, m) for m in margins if m != defaults.ambiguous_margin]
    print("identification by threshold (at the default margin) and by margin (at the default threshold)\n")
    print("| segmentation | threshold | margin | named ok: speech | named ok: clip span | named ok: detected speech | "
          "named wrong | ambiguous | no speaker: speech | no speaker: clip span | unenrolled named: speech | "
          "unenrolled named: clip span |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    speaker_trials_t, speaker_trials_n = [], []
    for segmentation, runs in (("diarized", results), ("oracle", oracle)):
        identification_table(segmentation, runs, settings, store, enrolled, defaults)
    print("\nspeech reference by pause threshold (diarized, default settings)\n")
    print("| pauses below | enrolled speech s | named ok | no speaker | unenrolled named |")
    print("|---|---|---|---|---|")
    for noise in SENSITIVITY_DBFS:
        shares = naming(results, defaults, store, enrolled, noise)
        seconds = sum(b - a for r in results for a, b, p in r["speech"][noise] if p in enrolled)
        marker = " (default)" if noise == PAUSE_DBFS else ""
        print(f"| {noise:g} dBFS{marker} | {seconds:.0f} | {shares['ok']:.1%} | {shares['missed']:.1%} | "
              f"{shares['unenrolled']:.1%} |")
    print("\nwhere enrolled speech goes (diarized, default settings, speech reference)\n")
    print("| no speaker | other's speaker | own speaker: named right | unnamed | named wrong | "
          "ceiling: named right | ceiling: unenrolled named |")
    print("|---|---|---|---|---|---|---|")
    shares = losses(results, defaults, store, enrolled)
    print("| " + " | ".join(f"{shares[key]:.1%}" for key in (
        "no speaker", "other's speaker", "named right", "unnamed", "named wrong", "ceiling",
        "ceiling unenrolled")) + " |")
    voices = []
    majority = {}
    for run in results:
        name, samples, reference, turns, vectors = (run[k] for k in ("name", "samples", "reference", "turns", "vectors"))
        frames = len(samples) * 100 // RATE
        people = frame_people(reference, frames)
        labels = frame_labels(turns, frames)
        for label, vector in vectors.items():
            owners = people[(labels == label) & (people != "")]
            person = max(set(owners), key=list(owners).count) if len(owners) else ""
            majority[(name, label)] = person
            if args.verbose:
                best = identify(vector, store, defaults)
                purity = list(owners).count(person) / max(len(owners), 1)
                print(f"  {name} {label}: {person} ({purity:.0%} of {len(owners) / 100:.1f} s) -> "
                      f"{best.profile} {best.score:.3f} {best.decision}")
            speech = float((labels == label).sum()) / 100
            voices.append(Voice(name, label, label, list(vector / np.linalg.norm(vector)), speech, (0.0, 0.0)))
            for profile in store.profiles:
                score = float(np.asarray(vector) / np.linalg.norm(vector) @ np.asarray(profile.embedding))
                (speaker_trials_t if profile.name == person else speaker_trials_n).append(score)

    print("\nembedding EER (profile vs clip / diarized speaker)\n")
    print("| trials | scoring | target | non-target | EER |")
    print("|---|---|---|---|---|")
    print(f"| test clips ≥ 1.5 s | profile centroid | {len(centroid_t)} | {len(centroid_n)} | {eer(centroid_t, centroid_n):.1%} |")
    print(f"| test clips ≥ 1.5 s | best enrollment clip | {len(clip_t)} | {len(clip_n)} | {eer(clip_t, clip_n):.1%} |")
    print(f"| diarized speakers | profile centroid | {len(speaker_trials_t)} | {len(speaker_trials_n)} | "
          f"{eer(speaker_trials_t, speaker_trials_n):.1%} |")
    if args.dump:
        import pickle

        with open(args.dump, "wb") as handle:
            pickle.dump({"store": store, "results": results, "oracle": oracle, "clips": clip_vectors}, handle)
    print(f"\ntarget scores: min {min(speaker_trials_t):.3f} median {np.median(speaker_trials_t):.3f}; "
          f"non-target: median {np.median(speaker_trials_n):.3f} max {max(speaker_trials_n):.3f}")

    print("\nlinking across recordings (pairs of diarized speakers from different recordings)\n")
    print("| link threshold | pairs | same person | pair acc | precision | recall |")
    print("|---|---|---|---|---|---|")
    for link_threshold in sorted({0.7, 0.75, 0.8, 0.85, 0.88, defaults.link_threshold, 0.9}):
        options = SpeakerOptions(threshold=defaults.threshold, ambiguous_margin=defaults.ambiguous_margin,
                                 link_threshold=link_threshold)
        linked = link([Voice(v.recording, v.label, v.speaker, v.embedding, v.speech_s, v.longest_turn) for v in voices],
                      store, options)
        same = right = predicted = true_positive = pairs = 0
        for i, a in enumerate(linked):
            for b in linked[i + 1:]:
                if a.recording == b.recording:
                    continue  # pairs across recordings only
                truth = majority[(a.recording, a.label)] == majority[(b.recording, b.label)]
                guess = a.global_id == b.global_id
                pairs += 1
                same += truth
                right += truth == guess
                predicted += guess
                true_positive += truth and guess
        marker = " (default)" if link_threshold == defaults.link_threshold else ""
        print(f"| {link_threshold:.2f}{marker} | {pairs} | {same} | {right / pairs:.1%} | "
              f"{true_positive / max(predicted, 1):.1%} | {true_positive / max(same, 1):.1%} |")


if __name__ == "__main__":
    main()
