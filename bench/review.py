"""Review page (review.html) size and time to interactive for 10-minute, 1-hour and 4-hour transcripts.

    .venv/bin/python bench/review.py [--merged results/welcome_meeting/merged.json] [--audio]
Input: a real merged.json (default: the bundled example's from `make run`; without it the example
workflow runs once in a temporary folder), its utterances repeated back to back up to each length,
times scaled to --words-per-hour (9,500: ~38,000 words in 4 hours, the issue's figure); every 10th
utterance is flagged. The page (trax.transcript.review.write_review_page) is opened from file:// in
headless Debian Chromium (Selenium), a fresh load per repeat (5), without audio unless --audio.
Columns: words; page MB (without the audio); `ready ms` = script done (transcript in the DOM,
handlers on) and `interactive ms` = the first frame after it (style, layout, paint), both from
navigation start; `click ms` = a mid-page word's click handler; with --audio (the source's
audio.wav looped, encoded as rule review_audio does) `seek ms` = click until the audio seeked there,
and `audio MB`; medians of the repeats. Targets (issue 29): interactive <= 2 s, page <= 5 MB at 4 h.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from trax.io.jsonio import read_json, read_json_head, write_json_streamed  # noqa: E402
from trax.transcript.review import write_review_page  # noqa: E402

LENGTHS_MIN = (10, 60, 240)
FLAG_EVERY = 10


def example_merged(workdir: Path) -> Path:
    """The example's merged.json from a workflow run in ``workdir``."""
    config = workdir / "config.yaml"
    config.write_text(f"inputs: {REPO / 'resources' / 'example'}\n", encoding="utf-8")
    subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                    "--configfile", str(config), "--cores", "2", "results/welcome_meeting/merged.json"],
                   check=True, capture_output=True)
    return workdir / "results" / "welcome_meeting" / "merged.json"


def repeated(source: Path, minutes: float, words_per_hour: float, destination: Path) -> int:
    """Write a merged.json of ``minutes`` from ``source``'s utterances repeated, times scaled to
    ``words_per_hour``; returns its words."""
    base = read_json(source)
    scale = sum(len(u["words"]) for u in base["utterances"]) / float(base["duration"]) / (words_per_hour / 3600)
    length = float(base["duration"]) * scale
    target = minutes * 60.0
    counts = {"words": 0}

    def utterances():
        ident, offset = 0, 0.0
        while offset < target:
            for utterance in base["utterances"]:
                if utterance["start"] + offset >= target:
                    return
                shift = lambda t: round(t * scale + offset, 3)  # noqa: E731
                flagged = ident % FLAG_EVERY == FLAG_EVERY - 1
                words = [{**w, "start": shift(w["start"]), "end": shift(w["end"])} for w in utterance["words"]]
                counts["words"] += len(words)
                yield {**utterance, "id": ident, "start": shift(utterance["start"]), "end": shift(utterance["end"]),
                       "words": words, "needs_review": flagged or utterance["needs_review"],
                       "review_reason": (f"bench: flagged utterance {ident}" if flagged else utterance["review_reason"])}
                ident += 1
            offset += length

    head = read_json_head(source, {"utterances"})
    write_json_streamed(destination, "utterances", utterances(), head=lambda: {**head, "duration": target})
    return counts["words"]


def looped_audio(wav: Path, minutes: float, destination: Path) -> None:
    """The page's audio (review.webm, as rule review_audio writes it) of ``wav`` looped to ``minutes``."""
    from trax.io.media import find_ffmpeg
    from trax.transcript.review import encode_audio

    looped = destination.with_suffix(".flac")
    subprocess.run([find_ffmpeg().ffmpeg, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(wav), "-t",
                    str(minutes * 60), "-c:a", "flac", str(looped)], check=True)
    encode_audio(str(looped), str(destination))
    looped.unlink()


#: A click on a mid-page word, then the time until the audio has seeked there (or -1 after 20 s).
SEEK_SCRIPT = """
var done = arguments[0], audio = document.getElementById('audio'), words = document.querySelectorAll('.w');
var w = words[words.length >> 1], t0;
w.scrollIntoView({block: 'center'});
audio.addEventListener('seeked', function () { audio.pause(); done(performance.now() - t0); }, {once: true});
setTimeout(function () { done(-1); }, 20000);
t0 = performance.now();
w.click();
"""


def measure(driver, page: Path, repeats: int, audio: bool) -> tuple[float, float, float]:
    ready, painted, click = [], [], []
    for _ in range(repeats):
        driver.get("about:blank")
        driver.get(page.as_uri())
        deadline = time.monotonic() + 60
        while driver.execute_script("return window.traxPaintedMs === undefined") and time.monotonic() < deadline:
            time.sleep(0.02)
        ready.append(driver.execute_script("return window.traxReadyMs"))
        painted.append(driver.execute_script("return window.traxPaintedMs"))
        if audio:
            click.append(driver.execute_async_script(SEEK_SCRIPT))
        else:
            click.append(driver.execute_script(
                "var words = document.querySelectorAll('.w'), w = words[words.length >> 1];"
                "w.scrollIntoView({block: 'center'}); var t0 = performance.now();"
                "w.click(); return performance.now() - t0;"))
    return statistics.median(ready), statistics.median(painted), statistics.median(click)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merged", type=Path, default=REPO / "results" / "welcome_meeting" / "merged.json")
    parser.add_argument("--minutes", default=",".join(map(str, LENGTHS_MIN)))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--words-per-hour", type=float, default=9500.0)
    parser.add_argument("--audio", action="store_true",
                        help="also write the page's audio (the source's audio.wav looped, Opus) and time a click's seek")
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="trax-bench-review-") as folder:
        root = Path(folder)
        source = args.merged if args.merged.exists() else example_merged(root)
        options = webdriver.ChromeOptions()
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                         "--autoplay-policy=no-user-gesture-required"):
            options.add_argument(argument)
        options.binary_location = shutil.which("chromium") or "chromium"
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
        rows = []
        try:
            for minutes in (float(m) for m in args.minutes.split(",")):
                merged = root / f"merged-{minutes:g}.json"
                words = repeated(source, minutes, args.words_per_hour, merged)
                page = root / f"review-{minutes:g}.html"
                audio = root / f"review-{minutes:g}.webm"
                if args.audio:
                    looped_audio(source.with_name("audio.wav"), minutes, audio)
                write_review_page(str(merged), str(page), str(audio))
                ready, painted, click = measure(driver, page, args.repeats, args.audio)
                rows.append((f"{minutes:g} min", words, page.stat().st_size / 1e6, ready, painted, click,
                             audio.stat().st_size / 1e6 if args.audio else None))
        finally:
            driver.quit()
    print(f"review page, headless Chromium, median of {args.repeats} loads; load average {os.getloadavg()[0]:.2f}")
    click_name = "seek ms" if args.audio else "click ms"
    print(f"{'recording':>10} {'words':>7} {'page MB':>8} {'ready ms':>9} {'interactive ms':>15} {click_name:>9}"
          + (f" {'audio MB':>9}" if args.audio else ""))
    for name, words, size, ready, painted, click, audio_mb in rows:
        print(f"{name:>10} {words:>7} {size:>8.2f} {ready:>9.0f} {painted:>15.0f} {click:>9.1f}"
              + (f" {audio_mb:>9.1f}" if args.audio else ""))


if __name__ == "__main__":
    main()
