"""Hostile release files for ``fuxictr-mmctr microlens``: each is exit 2, one ``error:`` line
naming the file and line, no traceback, and nothing written (no output folder, no temporary
folder, an existing folder untouched)."""
from __future__ import annotations

import os

import pytest

from tests.data.test_microlens import SEQUENCES, TITLES, write_release
from tests.test_hostile_files import assert_one_error_line, run_cli


def microlens(tmp_path, pairs, titles, out=None):
    out = out or str(tmp_path / "out")
    return run_cli("microlens", "--pairs", pairs, "--titles", titles, "--out", out,
                   "--seq-len", "3", "--dim", "4", cwd=str(tmp_path)), out


def assert_nothing_written(tmp_path, out):
    assert not os.path.exists(out)
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]


def replace_line(path, number, text):
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    lines[number - 1] = text
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def test_a_missing_file_is_named(tmp_path):
    pairs, titles = write_release(str(tmp_path))
    result, out = microlens(tmp_path, pairs + ".missing", titles)
    assert_one_error_line(result, "pairs.tsv.missing", "not found")
    assert_nothing_written(tmp_path, out)
    result, out = microlens(tmp_path, pairs, str(tmp_path / "nope.csv"))
    assert_one_error_line(result, "nope.csv", "not found")
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("line, needle", [
    ("12 300 110 120", "expected 'user<TAB>video"),
    ("12\t300 x110 120", "video id 'x110'"),
    ("12\t", "user 12 has no videos"),
    ("12\t300 110", "2 video(s)"),
    ("7\t300 110 120", "user 7 appears again"),
    ("12\t300 110 300 120", "video 300 twice"),
])
def test_a_malformed_sequence_line_is_named_by_its_line(tmp_path, line, needle):
    pairs, titles = write_release(str(tmp_path))
    replace_line(pairs, 3, line)
    result, out = microlens(tmp_path, pairs, titles)
    assert_one_error_line(result, "pairs.tsv line 3", needle)
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("line, needle", [
    ("7,110", "expected 3 fields"),
    ("7,110,soon", "timestamp 'soon'"),
])
def test_a_malformed_pair_line_is_named_by_its_line(tmp_path, line, needle):
    pairs, titles = write_release(str(tmp_path), form="csv")
    replace_line(pairs, 4, line)
    result, out = microlens(tmp_path, pairs, titles)
    assert_one_error_line(result, "pairs.csv line 4", needle)
    assert_nothing_written(tmp_path, out)


def test_a_video_without_a_title_is_named_with_its_pairs_line(tmp_path):
    titles = {video: title for video, title in TITLES.items() if video != 400}
    pairs, titles_path = write_release(str(tmp_path), titles=titles)
    line = list(SEQUENCES).index(5) + 1  # the only user who watched video 400
    result, out = microlens(tmp_path, pairs, titles_path)
    assert_one_error_line(result, "titles.csv", "no title for video 400",
                          f"pairs.tsv line {line}")
    assert_nothing_written(tmp_path, out)


def test_a_titles_file_without_its_header_is_refused(tmp_path):
    pairs, titles = write_release(str(tmp_path))
    replace_line(titles, 1, "110,funny cat video")
    result, out = microlens(tmp_path, pairs, titles)
    assert_one_error_line(result, "titles.csv line 1", "item,title")
    assert_nothing_written(tmp_path, out)


def test_out_over_another_dataset_is_refused_and_left_whole(tmp_path, tiny_dataset):
    import shutil

    pairs, titles = write_release(str(tmp_path))
    other = str(tmp_path / "synthetic")
    shutil.copytree(tiny_dataset, other)
    before = sorted(os.listdir(other))
    result, _ = microlens(tmp_path, pairs, titles, out=other)
    assert_one_error_line(result, other, "not a dataset made by")
    assert sorted(os.listdir(other)) == before


def test_a_folder_it_wrote_is_made_again(tmp_path):
    pairs, titles = write_release(str(tmp_path))
    first, out = microlens(tmp_path, pairs, titles)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "training-free valid AUC" in first.stdout
    again, _ = microlens(tmp_path, pairs, titles)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]
