"""The MicroLens release -> challenge-schema dataset (``fuxictr-mmctr microlens``).

A hand-made 5-user release is framed and every target, history, label and level is derived
again here, independently of the builder."""
from __future__ import annotations

import csv
import filecmp
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from fuxictr_mmctr.data.microlens import FramingOptions, build_microlens
from fuxictr_mmctr.data.microlens_content import count_level, split_title
from fuxictr_mmctr.data.validate import validate_dataset

#: user -> videos in time order (release ids, not contiguous).
SEQUENCES = {
    7: [110, 120, 130, 140, 150, 160],
    3: [120, 200, 110],
    12: [300, 110, 120, 200, 130],
    5: [200, 300, 400, 110, 120, 500, 130],
    9: [130, 140, 110, 600],
}
#: Videos 500 and 600 occur only as test targets; 160 only as a test target too.
TITLES = {
    110: "funny cat video # funny # cats",
    120: "funny dog video # funny # dogs",
    130: "cooking spicy duck # food # spicy",
    140: "cooking summer food # food",
    150: "anime fight scene # anime # naruto",
    160: "anime opening song # anime",
    200: "funny cat and dog # funny # cats # dogs",
    300: "spicy food challenge # food # spicy # challenge",
    400: "naruto fight anime # anime # naruto",
    500: "summer dog video # dogs",
    600: "cat song # cats # rare tag",
    999: "a video nobody watched # funny",
}
OPTIONS = FramingOptions(seq_len=3, neg_per_pos=2, seed=7, dim=4)


def write_release(folder, sequences=SEQUENCES, titles=TITLES, form="tsv"):
    """The release files in ``folder``: ``(pairs path, titles path)``."""
    os.makedirs(folder, exist_ok=True)
    pairs = os.path.join(folder, f"pairs.{form}")
    with open(pairs, "w", encoding="utf-8", newline="") as handle:
        if form == "tsv":
            for user, videos in sequences.items():
                handle.write(f"{user}\t{' '.join(map(str, videos))}\n")
        else:
            lines = [(user, video, 1000 + 10 * step)
                     for user, videos in sequences.items() for step, video in enumerate(videos)]
            lines.reverse()  # file order is not time order: the builder sorts by timestamp
            writer = csv.writer(handle)
            writer.writerow(["userID", "videoID", "timestamp"])
            writer.writerows(lines)
    titles_path = os.path.join(folder, "titles.csv")
    with open(titles_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item", "title"])
        writer.writerows(sorted(titles.items()))
    return pairs, titles_path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    pairs, titles = write_release(str(root))
    out = str(root / "dataset")
    stats = build_microlens(pairs, titles, out, OPTIONS, say=lambda *args: None)
    return out, stats


def read(folder, name):
    return pq.read_table(os.path.join(folder, name)).to_pylist()


def video_of(folder) -> dict:
    return {row["item_id"]: row["video_id"] for row in read(folder, "item_map.parquet")}


def expected_positives(split):
    """``[(user, target video, history videos)]`` derived from SEQUENCES, users ascending."""
    rows = []
    for user in sorted(SEQUENCES):
        videos = SEQUENCES[user]
        n = len(videos)
        targets = {"train": range(1, n - 2), "valid": [n - 2], "test": [n - 1]}[split]
        for position in targets:
            rows.append((user, videos[position], videos[:position][-OPTIONS.seq_len:]))
    return rows


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_every_target_and_history_is_the_framing(built, split):
    out, _ = built
    videos = video_of(out)
    rows = read(out, f"{split}.parquet")
    group = OPTIONS.neg_per_pos + 1
    positives = expected_positives(split)
    assert len(rows) == len(positives) * group
    labels = [row["label"] for row in read(out, "truth.parquet") if row["split"] == split] \
        if split == "test" else [row["label"] for row in rows]
    for index, (user, target, history) in enumerate(positives):
        block = rows[index * group:(index + 1) * group]
        assert labels[index * group:(index + 1) * group] == [1] + [0] * (group - 1)
        padded = [0] * (OPTIONS.seq_len - len(history)) + history
        for row in block:
            assert row["user_id"] == user
            assert [videos.get(item, 0) for item in row["item_seq"]] == padded
        assert videos[block[0]["item_id"]] == target
        negatives = [videos[row["item_id"]] for row in block[1:]]
        assert len(set(negatives)) == len(negatives)
        assert not set(negatives) & set(SEQUENCES[user])
    assert "label" not in pq.read_schema(os.path.join(out, "test.parquet")).names


def test_item_ids_follow_the_video_ids_and_item_info_rows(built):
    out, stats = built
    catalogue = sorted({video for videos in SEQUENCES.values() for video in videos})
    item_map = read(out, "item_map.parquet")
    assert [row["video_id"] for row in item_map] == catalogue
    assert [row["item_id"] for row in item_map] == list(range(1, len(catalogue) + 1))
    assert [row["title"] for row in item_map] == [TITLES[video] for video in catalogue]
    info = read(out, "item_info.parquet")
    assert [row["item_id"] for row in info] == list(range(len(catalogue) + 1))
    assert info[0]["item_tags"] == [0] * 5 and not any(info[0]["item_emb_d128"])
    norms = [np.linalg.norm(row["item_emb_d128"]) for row in info[1:]]
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert stats["items"] == len(catalogue)
    assert validate_dataset(out) == []


def test_levels_count_the_train_period_only(built):
    """views_level: the item's count over s_1..s_{n-2}; likes_level: over each user's last 3
    of those. Videos that are only valid/test targets (500, 600, 160) are level 0."""
    out, _ = built
    train_count, recent_count = {}, {}
    for videos in SEQUENCES.values():
        period = videos[:-2]
        for video in period:
            train_count[video] = train_count.get(video, 0) + 1
        for video in period[-OPTIONS.recent:]:
            recent_count[video] = recent_count.get(video, 0) + 1
    videos = video_of(out)
    raw = read(out, "item_feature.parquet")
    for row in raw:
        video = videos[row["item_id"]]
        assert row["views_level"] == count_level([train_count.get(video, 0)])[0], video
        assert row["likes_level"] == count_level([recent_count.get(video, 0)])[0], video
    level_of = {videos[row["item_id"]]: row["views_level"] for row in raw}
    assert level_of[500] == level_of[600] == level_of[160] == 0
    for row in read(out, "valid.parquet"):  # row features are the target's levels
        assert row["views_level"] == level_of[videos[row["item_id"]]]


def test_hashtags_kept_when_two_videos_carry_them(built):
    out, stats = built
    videos = video_of(out)
    raw = {videos[row["item_id"]]: row for row in read(out, "item_feature.parquet")}
    catalogue_titles = [TITLES[video] for video in videos.values()]
    carried = {}
    for title in catalogue_titles:
        for tag in set(split_title(title)[1]):
            carried[tag] = carried.get(tag, 0) + 1
    kept = {tag for tag, count in carried.items() if count >= 2}
    assert stats["hashtags"]["vocabulary"] == len(kept)
    assert "rare tag" not in kept and "cats" in kept
    info = {videos[row["item_id"]]: row["item_tags"] for row in read(out, "item_info.parquet")
            if row["item_id"]}
    assert info[600][:4] == [0, 0, 0, 0] and info[600][4] > 0  # cats kept, rare tag not
    assert raw[600]["item_tags"] == str(info[600][4])
    assert sum(tag > 0 for tag in info[200]) == 3
    assert 999 not in videos.values()  # a titled video nobody watched is not an item


def test_two_builds_give_the_same_bytes(built, tmp_path):
    out, _ = built
    pairs, titles = write_release(str(tmp_path / "again"))
    second = str(tmp_path / "second")
    build_microlens(pairs, titles, second, OPTIONS, say=lambda *args: None)
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(second))
    # item_info_levels.parquet records its sources' mtimes (to know when it is stale): the
    # same table, other provenance.
    stamped = "item_info_levels.parquet"
    match, mismatch, errors = filecmp.cmpfiles(out, second, [n for n in names if n != stamped],
                                               shallow=False)
    assert mismatch == [] and errors == []
    assert pq.read_table(os.path.join(out, stamped)).replace_schema_metadata(None).equals(
        pq.read_table(os.path.join(second, stamped)).replace_schema_metadata(None))


def test_the_pair_csv_gives_the_same_dataset_as_the_sequence_file(built, tmp_path):
    out, _ = built
    pairs, titles = write_release(str(tmp_path / "csv"), form="csv")
    from_csv = str(tmp_path / "from_csv")
    build_microlens(pairs, titles, from_csv, OPTIONS, say=lambda *args: None)
    for name in ("train.parquet", "valid.parquet", "test.parquet", "item_info.parquet",
                 "truth.parquet", "item_feature.parquet"):
        assert filecmp.cmp(os.path.join(out, name), os.path.join(from_csv, name), shallow=False)


def test_valid_and_test_targets_do_not_reach_levels_or_vectors(built, tmp_path):
    """Other valid/test targets (the train period unchanged) leave every item's levels and
    title vector as they were."""
    out, _ = built
    changed = {user: videos[:-2] + [videos[-1], videos[-2]] for user, videos in SEQUENCES.items()}
    changed[9] = SEQUENCES[9][:-2] + [500, 160]
    changed[7] = SEQUENCES[7][:-2] + [600, 150]
    pairs, titles = write_release(str(tmp_path / "changed"), sequences=changed)
    other = str(tmp_path / "other")
    build_microlens(pairs, titles, other, OPTIONS, say=lambda *args: None)

    def per_video(folder):
        videos = video_of(folder)
        raw = {videos[row["item_id"]]: (row["likes_level"], row["views_level"])
               for row in read(folder, "item_feature.parquet")}
        vectors = {videos[row["item_id"]]: row["item_emb_d128"]
                   for row in read(folder, "item_info.parquet") if row["item_id"]}
        return raw, vectors

    levels_a, vectors_a = per_video(out)
    levels_b, vectors_b = per_video(other)
    assert set(levels_a) == set(levels_b)
    assert levels_a == levels_b
    for video in vectors_a:
        np.testing.assert_array_equal(vectors_a[video], vectors_b[video])


def test_popularity_negatives_follow_the_train_period_count(tmp_path):
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, 61)
    sequences = {user: (100 + rng.choice(60, 6, replace=False, p=weights / weights.sum()))
                 .tolist() for user in range(1, 120)}
    titles = {video: f"video {video % 5} title # tag{video % 3}" for video in range(100, 160)}
    pairs, titles_path = write_release(str(tmp_path), sequences=sequences, titles=titles)
    counts = {}
    for mode in ("uniform", "popularity"):
        out = str(tmp_path / mode)
        build_microlens(pairs, titles_path, out,
                        FramingOptions(seq_len=5, neg_per_pos=3, seed=1, dim=4, negatives=mode),
                        say=lambda *args: None)
        raw = {row["item_id"]: row["views_level"] for row in read(out, "item_feature.parquet")}
        rows = read(out, "train.parquet")
        counts[mode] = np.mean([raw[row["item_id"]] for row in rows if row["label"] == 0])
    assert counts["popularity"] > counts["uniform"]


def test_bad_options_are_one_line(tmp_path):
    from fuxictr_mmctr.errors import UserError

    pairs, titles = write_release(str(tmp_path))
    for options, needle in ((FramingOptions(seq_len=0), "--seq-len"),
                            (FramingOptions(negatives="recent"), "--negatives")):
        with pytest.raises(UserError, match=needle):
            build_microlens(pairs, titles, str(tmp_path / "out"), options, say=lambda *a: None)
    assert not os.path.exists(tmp_path / "out")
