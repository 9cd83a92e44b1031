"""The review page (trax.transcript.review) in a real headless Chromium, and corrections fed back
through the workflow (trax.transcript.corrections, rule correct)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE_QUALITY, REPO, Workflow, jobs_planned
from trax.errors import TraxError
from trax.io.jsonio import read_json, write_json_atomic
from trax.io.media import find_ffmpeg
from trax.io.schemas import validate
from trax.transcript.corrections import correct_files
from trax.transcript.review import encode_audio, write_review_page

SAMPLE = "welcome_meeting"


# --- without a browser ---------------------------------------------------------------------------

def test_review_audio_is_opus_and_byte_identical(example_workflow, tmp_path) -> None:
    wav = example_workflow.result(SAMPLE, "audio.wav")
    again = tmp_path / "again.webm"
    encode_audio(str(wav), str(again), {"audio_bitrate_kbps": 24, "audio_compression_level": 5})
    shipped = example_workflow.result(SAMPLE, "review.webm")
    assert again.read_bytes() == shipped.read_bytes()
    probe = json.loads(subprocess.run([find_ffmpeg().ffprobe, "-v", "error", "-show_streams", "-show_format", "-of",
                                       "json", str(shipped)], capture_output=True, check=True).stdout)
    assert probe["streams"][0]["codec_name"] == "opus"
    duration = read_json(example_workflow.result(SAMPLE, "audio.json"))["audio"]["duration"]
    assert abs(float(probe["format"]["duration"]) - duration) < 0.1
    assert shipped.stat().st_size < wav.stat().st_size / 5


def test_page_embeds_the_transcript_safely_and_loads_nothing_remote(example_workflow) -> None:
    page = example_workflow.result(SAMPLE, "review.html").read_text(encoding="utf-8")
    merged = read_json(example_workflow.result(SAMPLE, "merged.json"))
    assert 'src="review.webm"' in page
    assert re.search(r"(src|href)=[\"']?(https?:)?//", page) is None and "@import" not in page
    block = re.search(r'<script type="application/json" id="trax-data">(.*?)</script>', page, flags=re.DOTALL)
    data = json.loads(block.group(1))
    assert data["input_sha256"] == merged["provenance"]["input_sha256"]
    assert [u["id"] for u in data["utterances"]] == [u["id"] for u in merged["utterances"]]
    assert [w[2] for u in data["utterances"] for w in u["words"]] == [w["word"] for u in merged["utterances"]
                                                                     for w in u["words"]]
    flagged = {u["id"]: u["review_reason"] for u in merged["utterances"] if u["needs_review"]}
    assert {u["id"]: u["reason"] for u in data["utterances"] if u["reason"]} == flagged
    assert ".innerHTML" not in page  # transcript text only ever reaches the DOM as text


def test_review_and_correct_rules_are_wired(example_workflow) -> None:
    plan = example_workflow.run("-n", "--forcerun", "review_audio")
    assert jobs_planned(plan)["review_audio"] == 2 and jobs_planned(plan)["review"] == 2
    run = example_workflow.run("-n", f"results/{SAMPLE}/merged.corrected.json", check=False)
    assert run.returncode != 0 and f"results/{SAMPLE}/corrections.json: not found" in run.output


def _corrections(merged_path: Path) -> dict:
    """A corrections.json for the example as the page writes it: one word, one move, one rename."""
    from trax.io.provenance import sha256_file

    merged = read_json(merged_path)
    first, last = merged["utterances"][0], merged["utterances"][-1]
    word = first["words"][1]
    other = next(s["id"] for s in merged["speakers"] if s["id"] != last["speaker"])
    return {"format": "trax-corrections/1", "sample_id": merged["sample_id"],
            "input_sha256": merged["provenance"]["input_sha256"], "merged_sha256": sha256_file(merged_path),
            "speakers": [{"id": last["speaker"], "name": "Carol \"C\" <c@example.org>"}],
            "utterances": [
                {"id": first["id"], "start": first["start"], "end": first["end"], "speaker_was": first["speaker"],
                 "words": [{"index": 1, "start": word["start"], "end": word["end"], "was": word["word"], "word": "TO"}]},
                {"id": last["id"], "start": last["start"], "end": last["end"], "speaker_was": last["speaker"],
                 "speaker": other, "reviewed": True},
            ]}


def test_corrections_apply_exactly_and_recount_speakers(example_workflow, tmp_path) -> None:
    merged_path = example_workflow.result(SAMPLE, "merged.json")
    merged = read_json(merged_path)
    corrections = _corrections(merged_path)
    write_json_atomic(tmp_path / "corrections.json", corrections, schema="corrections")
    outputs = {fmt: str(tmp_path / f"transcript.corrected.{fmt}") for fmt in ("srt", "vtt", "txt", "md")}
    correct_files(str(merged_path), str(tmp_path / "corrections.json"), str(tmp_path / "merged.corrected.json"),
                  outputs, {})
    corrected = read_json(tmp_path / "merged.corrected.json")
    validate(corrected, "merged")
    before = [(u["id"], i, w["word"]) for u in merged["utterances"] for i, w in enumerate(u["words"])]
    after = [(u["id"], i, w["word"]) for u in corrected["utterances"] for i, w in enumerate(u["words"])]
    assert [b for b, a in zip(before, after) if a != b] == [(0, 1, merged["utterances"][0]["words"][1]["word"])]
    assert corrected["utterances"][0]["words"][1] == {**merged["utterances"][0]["words"][1], "word": "TO",
                                                          "corrected": True,
                                                          "original": merged["utterances"][0]["words"][1]["word"]}
    moved = corrected["utterances"][-1]
    assert moved["speaker_was"] == merged["utterances"][-1]["speaker"] and moved["reviewed"]
    assert {w["speaker"] for w in moved["words"]} == {moved["speaker"]} != {moved["speaker_was"]}
    words = {s["id"]: s["words"] for s in corrected["speakers"]}
    assert sum(words.values()) == merged["stats"]["words"]
    assert words[moved["speaker"]] == sum(len(u["words"]) for u in corrected["utterances"] if u["speaker"] == moved["speaker"])
    assert corrected["corrections"]["words_changed"] == 1 and corrected["corrections"]["utterances_moved"] == 1
    vtt = Path(outputs["vtt"]).read_text(encoding="utf-8")
    assert "<v Carol \"C\" &lt;c@example.org&gt;>" in vtt  # the renamed speaker's other utterances
    assert merged_path.read_bytes() == example_workflow.result(SAMPLE, "merged.json").read_bytes()


def test_sample_sheet_can_name_the_corrections_file(example_workflow, tmp_path) -> None:
    workdir = tmp_path / "wf"
    shutil.copytree(example_workflow.workdir, workdir, symlinks=True)
    corrections = tmp_path / "elsewhere" / "meeting corrections.json"
    corrections.parent.mkdir()
    write_json_atomic(corrections, _corrections(workdir / "results" / SAMPLE / "merged.json"), schema="corrections")
    sheet = tmp_path / "samples.tsv"
    sources = {p.stem.replace(" ", "_"): p for p in sorted((REPO / "resources" / "example").iterdir())
               if p.suffix in (".flac", ".ogg")}
    sheet.write_text("id\tpath\tcorrections\n" + "".join(
        f"{sid}\t{path}\t{'elsewhere/meeting corrections.json' if sid == SAMPLE else ''}\n"
        for sid, path in sources.items()), encoding="utf-8")
    config = yaml.safe_load(example_workflow.config_path.read_text(encoding="utf-8"))
    workflow = Workflow(workdir, {**config, "inputs": str(sheet)})
    plan = workflow.run("-n")
    assert {rule: count for rule, count in jobs_planned(plan).items() if rule != "all"} == {"correct": 1, "review": 1}
    workflow.run()
    assert read_json(workflow.result(SAMPLE, "merged.corrected.json"))["corrections"]["words_changed"] == 1
    assert not workflow.result("status_update", "merged.corrected.json").exists()


@pytest.mark.parametrize("breakage, message", [
    (lambda c: c.update(input_sha256="0" * 64), "made for another recording"),
    (lambda c: c["utterances"][0].update(id=999), "unknown utterance 999"),
    (lambda c: c["speakers"][0].update(id="SPEAKER_9"), "unknown speaker 'SPEAKER_9'"),
    (lambda c: c["utterances"][1].update(speaker="SPEAKER_9"), "unknown speaker 'SPEAKER_9'"),
    (lambda c: c["utterances"][0].update(start=c["utterances"][0]["start"] + 0.5), "do not match merged.json"),
    (lambda c: c["utterances"][0].update(end=1e6), "bad times"),
    (lambda c: c["utterances"][0]["words"][0].update(was="nonsense"), "was 'nonsense' but merged.json has"),
    (lambda c: c["utterances"][0]["words"][0].update(index=500), "word 500 does not exist"),
    (lambda c: c.update(format="other"), "not a corrections file"),
])
def test_corrections_that_do_not_fit_fail_in_one_line_and_write_nothing(example_workflow, tmp_path, breakage,
                                                                         message) -> None:
    merged_path = example_workflow.result(SAMPLE, "merged.json")
    corrections = copy.deepcopy(_corrections(merged_path))
    breakage(corrections)
    path = tmp_path / "corrections.json"
    path.write_text(json.dumps(corrections), encoding="utf-8")
    outputs = {"srt": str(tmp_path / "c.srt")}
    with pytest.raises(TraxError) as caught:
        correct_files(str(merged_path), str(path), str(tmp_path / "merged.corrected.json"), outputs, {})
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrections.json"]


# --- in a real browser ---------------------------------------------------------------------------

def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    """Headless Debian Chromium through Selenium; skipped when either is missing (.ci/run installs them)."""
    found = _chromium()
    if found is None:
        pytest.skip("Debian chromium + chromium-driver not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    options.binary_location = found[0]
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(found[1]))
    yield driver
    driver.quit()


def _open(driver, page: Path) -> None:
    driver.get(page.as_uri())
    _wait(driver, "return document.documentElement.dataset.ready === '1'")


def _wait(driver, script: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _edit(driver, text: str) -> None:
    """Replace the text of the inline editor that is open and press Enter."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, "input.edit")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text, Keys.ENTER)


def _click(driver, element) -> None:
    """Click ``element`` once scrolled to the middle of the window, clear of the sticky header (a
    person scrolls there first; Selenium only scrolls elements outside the window)."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def test_page_plays_highlights_navigates_and_renames(example_workflow, browser, tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    merged = read_json(example_workflow.result(SAMPLE, "merged.json"))
    _open(browser, example_workflow.result(SAMPLE, "review.html"))
    # The DOM contract: words with times, utterances with speakers, flagged ones with their reason.
    utterances = browser.find_elements(By.CSS_SELECTOR, ".utt")
    assert [u.get_attribute("data-speaker") for u in utterances] == [u["speaker"] for u in merged["utterances"]]
    words = browser.find_elements(By.CSS_SELECTOR, ".utt .w")
    assert [(float(w.get_attribute("data-start")), float(w.get_attribute("data-end")), w.text) for w in words] == \
           [(w["start"], w["end"], w["word"]) for u in merged["utterances"] for w in u["words"]]
    flagged = [u for u in merged["utterances"] if u["needs_review"]]
    assert 0 < len(flagged) < len(merged["utterances"]), f"quality thresholds {EXAMPLE_QUALITY} flag some, not all"
    shown = browser.find_elements(By.CSS_SELECTOR, ".utt[data-needs-review]")
    assert [u.get_attribute("data-needs-review") for u in shown] == [u["review_reason"] for u in flagged]
    assert all(u.find_element(By.CSS_SELECTOR, ".reason").is_displayed() and u.find_element(By.CSS_SELECTOR, ".reason").text
               == "⚑ " + f["review_reason"] for u, f in zip(shown, flagged))
    low = {(w["start"], w["word"]) for u in merged["utterances"] for w in u["words"] if w["probability"] < 0.5}
    assert low and {(float(w.get_attribute("data-start")), w.text)
                    for w in browser.find_elements(By.CSS_SELECTOR, ".w.low")} == low

    # Click a word: the audio jumps to its start and plays, and the spoken word is highlighted.
    target = words[len(words) // 2]
    start = float(target.get_attribute("data-start"))
    browser.execute_script("window.seekedAt = null; document.getElementById('audio').addEventListener('seeked',"
                           " function () { if (window.seekedAt === null) window.seekedAt = this.currentTime; });")
    _click(browser, target)
    assert abs(_wait(browser, "return window.seekedAt") - start) <= 0.05
    now = _wait(browser, "var a = document.getElementById('audio'), w = document.querySelector('.w.now');"
                         " return !a.paused && a.currentTime > %f && w && [a.currentTime, +w.dataset.start, +w.dataset.end];"
                % (start + 0.3))
    spoken = [(w["start"], w["end"]) for u in merged["utterances"] for w in u["words"] if w["start"] <= now[0]]
    assert (now[1], now[2]) == max(spoken)  # the last word begun by the time read
    ActionChains(browser).send_keys(" ").perform()
    assert browser.execute_script("return document.getElementById('audio').paused")

    # →/← walk the flagged utterances (from the clicked word's place on).
    index = next(i for i, u in enumerate(merged["utterances"]) if any(w["start"] == start for w in u["words"]))
    ahead = [u["id"] for u in merged["utterances"][index + 1:] if u["needs_review"]]
    if ahead:
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        assert browser.execute_script("return document.querySelector('.utt.current').dataset.id") == str(ahead[0])
        assert abs(browser.execute_script("return document.getElementById('audio').currentTime")
                   - next(u["start"] for u in merged["utterances"] if u["id"] == ahead[0])) <= 0.05
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    behind = [u["id"] for u in merged["utterances"][:index + 1] if u["needs_review"]]
    if behind and ahead:
        assert browser.execute_script("return document.querySelector('.utt.current').dataset.id") == str(behind[-1])

    # Rename a speaker: every label of it changes, in the legend and on each of its utterances.
    speaker = merged["utterances"][-1]["speaker"]
    browser.find_element(By.CSS_SELECTOR, f'button[data-act="rename"][data-speaker="{speaker}"]').click()
    _edit(browser, "Dana <i>")
    labels = browser.find_elements(By.CSS_SELECTOR, f'.spk[data-speaker="{speaker}"]')
    assert len(labels) == 1 + sum(u["speaker"] == speaker for u in merged["utterances"])
    assert {label.text for label in labels} == {"Dana <i>"}
    screenshot = tmp_path / "review.png"
    browser.save_screenshot(str(screenshot))
    print(f"review page screenshot: {screenshot}")
    assert screenshot.stat().st_size > 20_000


def test_markup_in_a_transcript_renders_as_text(example_workflow, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    merged = read_json(example_workflow.result(SAMPLE, "merged.json"))
    markup = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
    merged["utterances"][0]["words"][0]["word"] = markup
    merged["utterances"][0]["words"][1]["word"] = "\"quoted\"&amp;'"
    merged["speakers"][0]["name"] = "<b>Boss</b>"
    merged_path = tmp_path / "merged.json"
    write_json_atomic(merged_path, merged, schema="merged")
    shutil.copy(example_workflow.result(SAMPLE, "review.webm"), tmp_path / "review.webm")
    write_review_page(str(merged_path), str(tmp_path / "review.html"), str(tmp_path / "review.webm"))
    _open(browser, tmp_path / "review.html")
    first = browser.find_elements(By.CSS_SELECTOR, ".utt .w")
    assert [first[0].text, first[1].text] == [markup, "\"quoted\"&amp;'"]
    assert browser.execute_script("return window.pwned === undefined && document.querySelectorAll('main img, main b').length")\
        == 0
    assert browser.find_element(By.CSS_SELECTOR, f'.spk[data-speaker="{merged["speakers"][0]["id"]}"]').text == "<b>Boss</b>"


def _subtitle_words(text: str) -> list[str]:
    """The words of an SRT's cue texts in order (parsed by the ``srt`` package, as test_exports does)."""
    import srt

    return [word for cue in srt.parse(text) for word in cue.content.split()]


@pytest.mark.slow
def test_a_word_corrected_on_the_page_reaches_merged_corrected_and_the_srt(example_workflow, browser, downloads,
                                                                          tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # A copy of the shared run (timestamps kept), so only this test sees the corrections.
    workdir = tmp_path / "wf"
    shutil.copytree(example_workflow.workdir, workdir, symlinks=True)
    workflow = Workflow(workdir, yaml.safe_load(example_workflow.config_path.read_text(encoding="utf-8")))
    originals = {name: workflow.result(SAMPLE, name).read_bytes()
                 for name in ("merged.json", "transcript.srt", "transcript.vtt", "transcript.txt", "transcript.md")}
    merged = read_json(workflow.result(SAMPLE, "merged.json"))
    utterance = merged["utterances"][2]
    index = len(utterance["words"]) // 2
    was = utterance["words"][index]["word"]

    _open(browser, workflow.result(SAMPLE, "review.html"))
    word = browser.find_elements(By.CSS_SELECTOR, f'.utt[data-id="{utterance["id"]}"] .w')[index]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", word)
    ActionChains(browser).double_click(word).perform()
    _edit(browser, "Corrected")
    for stale in downloads.glob("corrections*.json"):
        stale.unlink()
    browser.find_element(By.ID, "save").click()
    deadline = time.monotonic() + 10
    while not (downloads / "corrections.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    corrections = json.loads((downloads / "corrections.json").read_text(encoding="utf-8"))
    validate(corrections, "corrections")
    assert corrections["utterances"] == [{
        "id": utterance["id"], "start": utterance["start"], "end": utterance["end"], "speaker_was": utterance["speaker"],
        "words": [{"index": index, "start": utterance["words"][index]["start"], "end": utterance["words"][index]["end"],
                   "was": was, "word": "Corrected"}]}]

    # Put next to the page, it makes the workflow rerun only rule correct and the page.
    shutil.copy(downloads / "corrections.json", workflow.result(SAMPLE, "corrections.json"))
    planned = set(jobs_planned(workflow.run("-n"))) - {"all"}
    assert planned == {"correct", "review"}
    workflow.run()
    for name, data in originals.items():
        assert workflow.result(SAMPLE, name).read_bytes() == data, f"{name} changed"
    corrected = read_json(workflow.result(SAMPLE, "merged.corrected.json"))
    validate(corrected, "merged")
    changed = [(u["id"], i, w["word"]) for u, o in zip(corrected["utterances"], merged["utterances"])
               for i, (w, v) in enumerate(zip(u["words"], o["words"])) if w != v]
    assert changed == [(utterance["id"], index, "Corrected")]
    srt = workflow.result(SAMPLE, "transcript.corrected.srt").read_text(encoding="utf-8")
    original_srt = originals["transcript.srt"].decode("utf-8")
    assert srt != original_srt and srt.count("Corrected") == 1
    # The subtitles' words differ by that word alone (a longer word may move the cues' line and
    # cue breaks, so the cues themselves are not compared).
    words, original_words = _subtitle_words(srt), _subtitle_words(original_srt)
    assert len(words) == len(original_words)
    assert [(new, old) for new, old in zip(words, original_words) if new != old] == [("Corrected", was.strip())]

    # The page now shows the corrected version with the edit marked, and keeps it in what it saves.
    _open(browser, workflow.result(SAMPLE, "review.html"))
    edited = browser.find_elements(By.CSS_SELECTOR, ".w.edited")
    assert [(w.text, w.get_attribute("title")) for w in edited] == [("Corrected", f"was: {was}")]
    assert browser.execute_script("return window.traxCorrections().utterances") == corrections["utterances"]
    assert "Nothing to be done" in workflow.run("-n").output


def test_text_edit_move_and_reviewed_on_the_page_apply_as_shown(example_workflow, browser, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    merged_path = example_workflow.result(SAMPLE, "merged.json")
    merged = read_json(merged_path)
    first, second = merged["utterances"][0], merged["utterances"][1]
    target = next(s["id"] for s in merged["speakers"] if s["id"] != second["speaker"])
    # A link from summary.html's review list lands on its utterance.
    browser.get(example_workflow.result(SAMPLE, "review.html").as_uri() + f"#u{second['id']}")
    _wait(browser, "return document.documentElement.dataset.ready === '1'")
    assert browser.execute_script("return document.querySelector('.utt.current').id") == f"u{second['id']}"

    # Retype the first utterance with one word more, move the second, mark it reviewed.
    retyped = first["text"] + " indeed"
    _click(browser, browser.find_element(By.CSS_SELECTOR, f'#u{first["id"]} button[data-act="text"]'))
    area = browser.find_element(By.CSS_SELECTOR, "textarea.edit")
    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(retyped, Keys.ENTER)
    assert browser.find_element(By.CSS_SELECTOR, f"#u{first['id']} .text").text == retyped
    _click(browser, browser.find_element(By.CSS_SELECTOR, f'#u{second["id"]} .spk'))
    Select(browser.find_element(By.CSS_SELECTOR, "select.edit")).select_by_value(target)
    moved = browser.find_element(By.CSS_SELECTOR, f"#u{second['id']}")
    assert moved.get_attribute("data-speaker") == target
    _click(browser, moved.find_element(By.CSS_SELECTOR, 'button[data-act="reviewed"]'))
    assert "reviewed" in browser.find_element(By.CSS_SELECTOR, f"#u{second['id']}").get_attribute("class")

    corrections = browser.execute_script("return window.traxCorrections()")
    validate(corrections, "corrections")
    path = tmp_path / "corrections.json"
    path.write_text(json.dumps(corrections), encoding="utf-8")
    correct_files(str(merged_path), str(path), str(tmp_path / "merged.corrected.json"),
                  {"txt": str(tmp_path / "transcript.corrected.txt")}, {})
    corrected = {u["id"]: u for u in read_json(tmp_path / "merged.corrected.json")["utterances"]}
    assert corrected[first["id"]]["text"] == retyped and corrected[first["id"]]["corrected"] == ["text"]
    assert len(corrected[first["id"]]["words"]) == len(first["words"]) + 1
    assert (corrected[first["id"]]["start"], corrected[first["id"]]["end"]) == (first["start"], first["end"])
    assert corrected[second["id"]]["speaker"] == target and corrected[second["id"]]["reviewed"]
    assert corrected[second["id"]]["text"] == second["text"]
    # The page's own preview of the retyped words matches what the workflow writes.
    shown = browser.execute_script(
        f"return Array.from(document.querySelectorAll('#u{first['id']} .w')).map(function (w) {{"
        " return [+w.dataset.start, +w.dataset.end, w.textContent]; })")
    assert shown == [[pytest.approx(w["start"], abs=1e-3), pytest.approx(w["end"], abs=1e-3), w["word"]]
                     for w in corrected[first["id"]]["words"]]
