"""Reading the public MicroLens release files (westlake-repl/MicroLens, arXiv 2309.15379).

Two interaction formats are served by the MicroLens site, both read into one
:class:`Interactions`:

* the per-user sequence file (``MicroLens-50k_pairs.tsv``): one line per user,
  ``user<TAB>video video ...``, the videos in chronological order;
* the pair file of the 50k/100k/1M releases (``MicroLens-*_pairs.csv``): one line per
  interaction, ``userID,videoID,timestamp`` (a header line is allowed); a user's videos are
  ordered by timestamp, ties kept in file order.

The titles file is ``item,title`` (a header line, titles quoted as CSV). Every problem is one
:class:`~fuxictr_mmctr.errors.UserError` naming the file and the line.

Memory is linear in the input: interactions are kept as flat integer arrays (8 bytes per
interaction for the videos, plus offsets per user), never as Python objects per interaction.
"""
from __future__ import annotations

import csv
import os
from array import array
from dataclasses import dataclass

import numpy as np

from fuxictr_mmctr.errors import UserError

#: The framing needs a test target, a valid target and at least one history item.
MIN_VIDEOS_PER_USER = 3


@dataclass(frozen=True)
class Interactions:
    """Every user's videos in time order, as flat arrays.

    ``user_ids (U,) int64`` ascending; ``offsets (U + 1,) int64``; ``videos (M,) int64`` with
    user ``k``'s videos at ``videos[offsets[k]:offsets[k + 1]]``, oldest first. ``first_line
    (M,) int64`` is the 1-based line of the input file each interaction came from (for error
    messages that name a line).
    """

    user_ids: np.ndarray
    offsets: np.ndarray
    videos: np.ndarray
    first_line: np.ndarray

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Videos per user ``(U,) int64``."""
        return np.diff(self.offsets)


def read_interactions(path: str) -> Interactions:
    """Read a ``.tsv`` sequence file or a ``.csv`` pair file (chosen by the first data line:
    a tab makes it a sequence file)."""
    _require_file(path, "interaction file")
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    if not first.strip():
        raise UserError(f"{path}: the interaction file is empty")
    if "\t" in first:
        interactions = _read_sequences(path)
    else:
        interactions = _read_pairs(path)
    _check_lengths(interactions, path)
    return interactions


def _read_sequences(path: str) -> Interactions:
    """The per-user sequence file: ``user<TAB>video video ...`` per line."""
    users, lengths, lines = [], [], []
    videos = array("q")
    seen: dict[int, int] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            parts = text.split("\t")
            if len(parts) != 2:
                raise UserError(f"{path} line {number}: expected 'user<TAB>video video ...', "
                                f"got {_shorten(text)!r}")
            user = _integer(parts[0].strip(), path, number, "user id")
            tokens = parts[1].split()
            if not tokens:
                raise UserError(f"{path} line {number}: user {user} has no videos")
            if user in seen:
                raise UserError(f"{path} line {number}: user {user} appears again (first on "
                                f"line {seen[user]}); each user is one line")
            seen[user] = number
            users.append(user)
            lengths.append(len(tokens))
            videos.extend(_integer(token, path, number, "video id") for token in tokens)
            lines.append(number)
    if not users:
        raise UserError(f"{path}: no users in the interaction file")
    order = np.argsort(np.asarray(users, dtype=np.int64), kind="stable")
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.frombuffer(videos, dtype=np.int64)
    # Users in ascending id order, each user's videos as in the file.
    pieces = [np.arange(starts[k], starts[k + 1]) for k in order]
    take = np.concatenate(pieces)
    line_of_user = np.asarray(lines, dtype=np.int64)
    return Interactions(
        user_ids=np.asarray(users, dtype=np.int64)[order],
        offsets=np.concatenate([[0], np.cumsum(lengths[order])]).astype(np.int64),
        videos=flat[take],
        first_line=np.repeat(line_of_user[order], lengths[order]),
    )


def _read_pairs(path: str) -> Interactions:
    """The pair file: ``userID,videoID,timestamp`` per line, an optional header line."""
    user, video, line = array("q"), array("q"), array("q")
    stamp = array("d")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            number = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) != 3:
                raise UserError(f"{path} line {number}: expected 3 fields "
                                f"userID,videoID,timestamp, got {len(row)}: "
                                f"{_shorten(','.join(row))!r}")
            if number == 1 and not _is_number(row[0]):
                continue  # the header
            user.append(_integer(row[0].strip(), path, number, "user id"))
            video.append(_integer(row[1].strip(), path, number, "video id"))
            stamp.append(_number(row[2].strip(), path, number, "timestamp"))
            line.append(number)
    if not user:
        raise UserError(f"{path}: no interactions in the pair file")
    user, video = np.frombuffer(user, dtype=np.int64), np.frombuffer(video, dtype=np.int64)
    stamp, line = np.frombuffer(stamp, dtype=np.float64), np.frombuffer(line, dtype=np.int64)
    # lexsort is stable: equal (user, timestamp) keep their file order.
    order = np.lexsort((stamp, user))
    user, video, line = user[order], video[order], line[order]
    starts = np.flatnonzero(np.concatenate([[True], user[1:] != user[:-1]]))
    return Interactions(user_ids=user[starts],
                        offsets=np.concatenate([starts, [len(user)]]).astype(np.int64),
                        videos=video, first_line=line)


def _check_lengths(interactions: Interactions, path: str) -> None:
    """Every user has enough videos for the framing, and no video twice."""
    lengths = interactions.lengths
    short = np.flatnonzero(lengths < MIN_VIDEOS_PER_USER)
    if len(short):
        k = short[0]
        line = interactions.first_line[interactions.offsets[k]]
        raise UserError(f"{path} line {line}: user {interactions.user_ids[k]} has "
                        f"{lengths[k]} video(s); the framing needs at least "
                        f"{MIN_VIDEOS_PER_USER} (a test target, a valid target and a history)")
    owner = np.repeat(np.arange(interactions.num_users), lengths)
    key = owner * (int(interactions.videos.max()) + 1) + interactions.videos
    order = np.argsort(key, kind="stable")
    repeated = np.flatnonzero(key[order][1:] == key[order][:-1])
    if len(repeated):
        position = order[repeated[0] + 1]
        raise UserError(f"{path} line {interactions.first_line[position]}: user "
                        f"{interactions.user_ids[owner[position]]} has video "
                        f"{interactions.videos[position]} twice; the release lists each "
                        f"(user, video) pair once")


def read_titles(path: str) -> dict[int, str]:
    """``video id -> title`` from the ``item,title`` file."""
    _require_file(path, "titles file")
    titles: dict[int, str] = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: the titles file is empty")
        if [name.strip().lower() for name in header[:2]] != ["item", "title"] or len(header) != 2:
            raise UserError(f"{path} line 1: expected the header 'item,title', got "
                            f"{_shorten(','.join(header))!r}")
        for row in reader:
            number = reader.line_num
            if not row:
                continue
            if len(row) != 2:
                raise UserError(f"{path} line {number}: expected 2 fields item,title, got "
                                f"{len(row)}: {_shorten(','.join(row))!r}")
            video = _integer(row[0].strip(), path, number, "item id")
            if video in titles:
                raise UserError(f"{path} line {number}: item {video} has a second title")
            titles[video] = row[1]
    if not titles:
        raise UserError(f"{path}: no titles in the titles file")
    return titles


def check_titles_cover(interactions: Interactions, titles: dict[int, str], pairs_path: str,
                       titles_path: str) -> None:
    """Every video of the interactions has a title."""
    known = np.fromiter(titles.keys(), dtype=np.int64, count=len(titles))
    missing = ~np.isin(interactions.videos, known)
    if missing.any():
        position = int(np.flatnonzero(missing)[0])
        count = len(np.unique(interactions.videos[missing]))
        raise UserError(f"{titles_path}: no title for video {interactions.videos[position]} "
                        f"(in {pairs_path} line {interactions.first_line[position]}); "
                        f"{count} video(s) of the interaction file lack a title")


def _require_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"{path}: {what} not found")
    if not os.path.isfile(path):
        raise UserError(f"{path}: is a folder; give the {what}")


def _integer(text: str, path: str, line: int, what: str) -> int:
    if not text.isdigit():
        raise UserError(f"{path} line {line}: {what} {_shorten(text)!r} is not a non-negative "
                        f"integer")
    return int(text)


def _number(text: str, path: str, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path} line {line}: {what} {_shorten(text)!r} is not a number") from None
    if not np.isfinite(value):
        raise UserError(f"{path} line {line}: {what} {text!r} is not a finite number")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
