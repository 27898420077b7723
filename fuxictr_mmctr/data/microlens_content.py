"""Item content of the MicroLens release: title vectors, creator hashtags, popularity levels.

The release's titles end with creator hashtags (``"pumpkin armor, listen to me # national
armor # outfit"``). From them:

* :func:`title_vectors` -- the whole title as a frozen vector: TF-IDF of word 1-2 grams
  (terms in at least 2 titles, sublinear term frequency) reduced by TruncatedSVD to ``dim``
  components and L2-normalised. Fitted on every title of the titles file, so the vectors
  depend on item content alone, never on who watched what. Deterministic for a seed.
* :func:`hashtag_table` -- the hashtags (lower-cased, stripped) as ``item_tags``: a hashtag is
  kept when at least ``min_videos`` videos of the catalogue carry it; an item keeps its first
  ``max_tags`` kept hashtags in title order, left-padded with 0.
* :func:`count_level` -- a count as a level 0..10 on a log2 scale.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

#: ``count_level``: 0 for 0, then 1 + floor(log2(count)), capped here.
MAX_LEVEL = 10


def split_title(title: str) -> tuple[str, list[str]]:
    """``"text # tag a # Tag B"`` -> ``("text", ["tag a", "tag b"])``."""
    parts = title.split("#")
    tags = [part.strip().lower() for part in parts[1:]]
    return parts[0].strip(), [tag for tag in tags if tag]


def hashtag_table(titles: list[str], max_tags: int = 5, min_videos: int = 2):
    """Item hashtags as ids.

    ``titles``: one title per catalogue item, item ``i`` at index ``i - 1``. Returns
    ``(item_tags (N + 1, max_tags) int64, vocabulary list[str])``: row 0 (padding) is zeros;
    tag id ``t`` (1-based) is ``vocabulary[t - 1]``; ids are ordered by the number of videos
    carrying the tag (most first), ties by the tag text.
    """
    per_item = [list(dict.fromkeys(split_title(title)[1])) for title in titles]
    videos_per_tag = Counter(tag for tags in per_item for tag in tags)
    vocabulary = sorted((tag for tag, count in videos_per_tag.items() if count >= min_videos),
                        key=lambda tag: (-videos_per_tag[tag], tag))
    tag_id = {tag: index + 1 for index, tag in enumerate(vocabulary)}
    table = np.zeros((len(titles) + 1, max_tags), dtype=np.int64)
    for item, tags in enumerate(per_item, start=1):
        kept = [tag_id[tag] for tag in tags if tag in tag_id][:max_tags]
        if kept:
            table[item, max_tags - len(kept):] = kept
    return table, vocabulary


def title_vectors(all_titles: list[str], dim: int, seed: int):
    """TF-IDF + TruncatedSVD vectors of ``all_titles``: ``((T, dim) float32, explained)``.

    ``explained`` is the share of the TF-IDF matrix's variance the ``dim`` components keep.
    Rows are L2-normalised (a title with no kept term is the zero vector).
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, dtype=np.float64)
    matrix = tfidf.fit_transform(all_titles)
    components = min(dim, matrix.shape[1] - 1, matrix.shape[0] - 1)
    if components < 1:
        raise ValueError("too few titles or terms for a title vector")
    svd = TruncatedSVD(n_components=components, algorithm="randomized", n_iter=7,
                       random_state=seed)
    reduced = svd.fit_transform(matrix)
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    reduced = np.divide(reduced, norms, out=np.zeros_like(reduced), where=norms > 0)
    vectors = np.zeros((len(all_titles), dim), dtype=np.float32)
    vectors[:, :components] = reduced
    return vectors, float(svd.explained_variance_ratio_.sum())


def count_level(counts: np.ndarray) -> np.ndarray:
    """``counts (n,) int`` -> levels ``(n,) int64``: 0 for 0, else ``1 + floor(log2(count))``
    capped at :data:`MAX_LEVEL` (1: 1, 2: 2-3, 3: 4-7, ..., 10: 512 and more)."""
    counts = np.asarray(counts, dtype=np.int64)
    levels = np.zeros(len(counts), dtype=np.int64)
    seen = counts > 0
    levels[seen] = np.minimum(MAX_LEVEL, 1 + np.floor(np.log2(counts[seen])).astype(np.int64))
    return levels
