"""Sample discovery: stable, safe, unique ids from folders, globs and sample sheets."""

from pathlib import Path

import pytest

from trax.errors import TraxError
from trax.io.samples import discover, sample_id_from_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("trñ00.wav", "trn00"),
        ("my talk (final).mp3", "my_talk_final"),
        ("Réunion d'équipe.m4a", "Reunion_d_equipe"),
        ("LJ001-0001.wav", "LJ001-0001"),
        ("..hidden-ish..flac", "hidden-ish"),
    ],
)
def test_ids_are_filesystem_safe_and_readable(name: str, expected: str) -> None:
    assert sample_id_from_name(name) == expected


def test_name_without_latin_letters_gets_stable_hashed_id() -> None:
    first = sample_id_from_name("会议.wav")
    assert first.startswith("rec-") and first == sample_id_from_name("/elsewhere/会议.flac")
    assert first != sample_id_from_name("讲座.wav")


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


def test_folder_scan_is_recursive_sorted_and_skips_non_media(tmp_path: Path) -> None:
    _touch(tmp_path, "b.wav", "a.flac", "sub/c d.mp4", "a.txt", ".hidden.wav", "notes.md")
    samples = discover(str(tmp_path))
    assert [s.id for s in samples] == ["a", "b", "c_d"]
    assert samples[2].path == str(tmp_path / "sub" / "c d.mp4")


def test_glob_input(tmp_path: Path) -> None:
    _touch(tmp_path, "x1.wav", "x2.wav", "y.wav")
    assert [s.id for s in discover(str(tmp_path / "x*.wav"))] == ["x1", "x2"]


def test_colliding_ids_name_both_files(tmp_path: Path) -> None:
    _touch(tmp_path, "a b.wav", "a_b.mp3")
    with pytest.raises(TraxError) as excinfo:
        discover(str(tmp_path))
    message = str(excinfo.value)
    assert "a b.wav" in message and "a_b.mp3" in message and "collides" in message


def test_ids_differing_only_in_case_collide(tmp_path: Path) -> None:
    _touch(tmp_path, "Talk.wav")
    (tmp_path / "other").mkdir()
    _touch(tmp_path / "other", "talk.wav")
    with pytest.raises(TraxError, match="collides"):
        discover(str(tmp_path))


def test_sample_sheet_resolves_relative_paths_and_keeps_options(tmp_path: Path) -> None:
    _touch(tmp_path, "audio/one.wav")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("id\tpath\tlanguage\tnum_speakers\nfirst\taudio/one.wav\ten\t2\n\tmissing.wav\t\t\n")
    samples = discover(str(sheet))
    assert [s.id for s in samples] == ["first", "missing"]
    assert samples[0].path == str(tmp_path / "audio" / "one.wav")
    assert samples[0].options == {"language": "en", "num_speakers": 2}
    assert samples[1].options == {}


def test_sheet_with_bad_id_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("id\tpath\nbad/id\tx.wav\n")
    with pytest.raises(TraxError, match="bad/id"):
        discover(str(sheet))


@pytest.mark.parametrize("inputs", ["does/not/exist", "nothing*.wav"])
def test_inputs_naming_nothing_fail(tmp_path: Path, inputs: str) -> None:
    with pytest.raises(TraxError):
        discover(inputs, base_dir=tmp_path)
