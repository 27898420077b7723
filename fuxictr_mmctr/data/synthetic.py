"""Synthetic MicroLens-shaped datasets with a known oracle (``fuxictr-mmctr synth``).

:func:`generate` writes, into one folder::

    train.parquet valid.parquet test.parquet item_info.parquet   the data contract (schema.py)
    item_feature.parquet   the raw item file of the WWW 2025 challenge (title, tags, levels,
                           768-d text and 1024-d image vectors); columns in RAW_ITEM_COLUMNS
    schema.json                                                   the preset's sizes
    truth.parquet   split ("valid"/"test"), row, click_prob, label for every valid/test row
    oracle.json     oracle AUC (true probabilities vs drawn labels) and partial oracles

The items and users come from :mod:`.synthetic_world`, the rows and the logistic click model
from :mod:`.synthetic_rows`; ``docs/synthetic_data.md`` documents the generative process.
Only ``truth.parquet`` holds the test labels: models must never read it.

Same preset and seed give the same bytes in every parquet file: each block of rows has its own
random stream derived from ``(seed, stream, block)``. Rows are generated and written in blocks
of ``Preset.block_rows``, so memory stays bounded on the full-size preset, and every file is
written under a temporary name and renamed when complete.

Output folder: the pipeline (``ensure_dataset``) regenerates a stale dataset in place on
purpose, so :func:`generate` replaces the dataset files by default. ``fuxictr-mmctr synth``
calls it with ``overwrite=False`` (unless ``--force``): then a folder holding anything but this
preset and seed is refused with one line (:func:`check_out_dir`), so files of two datasets
never mix, and a complete copy of the same preset and seed is reported up to date.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fuxictr_mmctr.data.schema import (
    ITEM_EMB,
    ITEM_ID,
    ITEM_INFO,
    ITEM_SEQ,
    ITEM_TAGS,
    LABEL,
    LIKES_LEVEL,
    MICROLENS_1M_X1,
    SCHEMA_FILE,
    SPLITS,
    USER_ID,
    VIEWS_LEVEL,
    Schema,
    list_column,
    pyarrow_schema,
    save_schema,
    split_file,
)
from fuxictr_mmctr.data.synthetic_rows import (
    PARTS,
    ClickModel,
    Rows,
    calibrate_intercept,
    item_likes_level,
    sample_rows,
    sigmoid,
)
from fuxictr_mmctr.data.synthetic_world import World, build_world
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.fileio import TEMPORARY_PREFIX, atomic_path, write_error, write_text_atomic

#: Bumped whenever the generator's output changes for a given preset and seed (click model,
#: files written); data written by another version is made again, never silently reused.
#: 2: the raw item_feature.parquet and the history-levels term of the click model.
GENERATOR_VERSION = 2
TRUTH_FILE = "truth.parquet"
ORACLE_FILE = "oracle.json"
#: Rows drawn (from their own stream) to set the click model's intercept.
CALIBRATION_ROWS = 200_000
#: Random stream ids; row blocks of split i use stream ``ROW_STREAM + i``; the raw item file
#: draws its maps and vocabulary from block 0 of ``RAW_ITEM_STREAM`` and item block b from b + 1.
WORLD_STREAM, CALIBRATION_STREAM, RAW_ITEM_STREAM, ROW_STREAM = 0, 1, 2, 10

#: The raw item file (shaped like the WWW 2025 MMCTR challenge's ``item_feature.parquet``): one
#: row per real item, ids 1..N in order, no padding row.
RAW_ITEM_FILE = "item_feature.parquet"
ITEM_TITLE = "item_title"
TEXT_EMB = "txt_emb_BERT"
IMAGE_EMB = "img_emb_CLIPRN50"
TEXT_EMB_DIM = 768
IMAGE_EMB_DIM = 1024
#: Columns of the raw item file, in file order (``item_tags`` there is a string of tag ids).
RAW_ITEM_COLUMNS = (ITEM_ID, ITEM_TITLE, ITEM_TAGS, LIKES_LEVEL, VIEWS_LEVEL, TEXT_EMB, IMAGE_EMB)
#: Per-dim noise std of the text / image vectors (the signal, a random linear map of the item's
#: unit latent vector, has variance about 1 per dim): text is the cleaner modality.
TEXT_NOISE, IMAGE_NOISE = 1.0, 1.5
#: Items per block of the raw item file (memory: about 7 kB of float32 per item).
RAW_BLOCK_ITEMS = 4096
#: Title words: each topic owns a vocabulary of pseudo-words; a title has TITLE_WORDS[0] to
#: TITLE_WORDS[1] words, each from the item's topic vocabulary with probability
#: TITLE_TOPIC_SHARE, otherwise from a vocabulary shared by all topics.
WORDS_PER_TOPIC, SHARED_WORDS = 24, 40
TITLE_WORDS = (3, 6)
TITLE_TOPIC_SHARE = 0.8
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


@dataclass(frozen=True)
class Preset:
    """Sizes and knobs of one synthetic dataset (see ``docs/synthetic_data.md``)."""

    name: str
    schema: Schema
    num_train: int
    num_valid: int
    num_test: int
    num_users: int
    num_topics: int
    latent_dim: int = 16
    zipf_exponent: float = 0.8
    cold_fraction: float = 0.03        # items never seen in train
    cold_target_rate: float = 0.03     # share of valid/test targets that are cold items
    history_median: float = 6.0
    history_sigma: float = 0.9
    empty_history_rate: float = 0.02
    block_rows: int = 1 << 17
    click_model: ClickModel = field(default_factory=ClickModel)

    def split_rows(self, split: str) -> int:
        return {"train": self.num_train, "valid": self.num_valid, "test": self.num_test}[split]


PRESETS = {
    "tiny": Preset(
        name="tiny",
        schema=Schema(max_seq_len=20, num_items=300, tag_vocab=200, user_vocab=501),
        num_train=4000, num_valid=1000, num_test=1000, num_users=500, num_topics=6, latent_dim=8,
        cold_fraction=0.05, cold_target_rate=0.05,
    ),
    "demo": Preset(
        name="demo",
        schema=Schema(max_seq_len=30, num_items=3000, tag_vocab=1000, user_vocab=50_001),
        num_train=1_600_000, num_valid=10_000, num_test=20_000, num_users=50_000, num_topics=16,
        zipf_exponent=0.6,
    ),
    "full": Preset(
        name="full",
        schema=MICROLENS_1M_X1,
        num_train=3_600_000, num_valid=10_000, num_test=379_142,
        num_users=MICROLENS_1M_X1.user_vocab - 1, num_topics=32, zipf_exponent=1.0,
    ),
}

#: Everything :func:`generate` writes; an old copy is removed first so that an interrupted
#: overwrite leaves missing files rather than a mix of two datasets.
OUTPUT_FILES = tuple(split_file(name) for name in SPLITS + (ITEM_INFO,)) + (
    RAW_ITEM_FILE, SCHEMA_FILE, TRUTH_FILE, ORACLE_FILE)
#: Entries other commands derive from a dataset folder's data (the array cache, FuxiCTR's
#: feature map, the enriched item table of the ``*_item_levels`` datasets, rebuilt when its
#: sources change): they belong to whatever dataset is there and never make a folder foreign.
DERIVED_ENTRIES = (".cache", "feature_map.json", "item_info_levels.parquet")


def generate(preset, seed: int = 2025, out_dir: str = ".", verbose: bool = True,
             overwrite: bool = True) -> dict:
    """Write a synthetic dataset of ``preset`` (a name in :data:`PRESETS` or a :class:`Preset`)
    into ``out_dir`` and return the oracle report (the content of ``oracle.json``).

    ``overwrite=True`` replaces the dataset files already in ``out_dir`` (the pipeline remakes
    a stale dataset this way); ``overwrite=False`` first checks the folder with
    :func:`check_out_dir`, and returns the saved report when the dataset is already there.
    """
    started = time.perf_counter()
    preset = _resolve_preset(preset)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"synthetic data: seed must be a non-negative integer, got {seed!r}")
    say = print if verbose else (lambda *args, **kwargs: None)
    _check_out_path(out_dir)
    if not overwrite:
        report = check_out_dir(out_dir, preset, seed, say)
        if report is not None:
            say(f"synth: {out_dir} already holds preset {preset.name}, seed {seed}: up to date "
                f"(--force makes it again)")
            return report
    _remove_old_outputs(out_dir)

    say(f"synth: preset {preset.name}, seed {seed}, into {out_dir}")
    world = build_world(preset, random_stream(seed, WORLD_STREAM))
    save_schema(preset.schema, out_dir)
    _write_item_info(world, preset.schema, os.path.join(out_dir, split_file(ITEM_INFO)))
    _write_raw_items(world, preset.schema, seed, os.path.join(out_dir, RAW_ITEM_FILE))

    calibration = sample_rows(world, preset, min(preset.num_train, CALIBRATION_ROWS),
                              random_stream(seed, CALIBRATION_STREAM))
    intercept = calibrate_intercept(preset.click_model, calibration.terms)

    truth, positive_rate = {}, {}
    for split in SPLITS:
        probs, labels, terms = _write_split(world, preset, split, seed, intercept,
                                            os.path.join(out_dir, split_file(split)), say)
        positive_rate[split] = float(labels.mean()) if len(labels) else 0.0
        if split != "train":
            truth[split] = (probs, labels, terms)
    _write_truth(truth, os.path.join(out_dir, TRUTH_FILE))

    report = _oracle_report(preset, seed, intercept, truth, positive_rate)
    report["generation_seconds"] = round(time.perf_counter() - started, 2)
    write_text_atomic(os.path.join(out_dir, ORACLE_FILE), json.dumps(report, indent=2) + "\n")
    say(_summary(report))
    return report


def _check_out_path(out_dir) -> None:
    """``out_dir`` must be a folder, or a path where one can be made."""
    if not out_dir:
        raise UserError("synthetic data: the output folder is an empty path")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"{out_dir}: is a file; the synthetic dataset needs a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise write_error(out_dir, error) from None


def _remove_old_outputs(out_dir) -> None:
    """Remove the files a previous dataset left under :data:`OUTPUT_FILES`, so an interrupted
    overwrite leaves missing files rather than a mix of two datasets.

    Everything is checked before anything is removed: a folder under one of those names is an
    error that leaves the old dataset whole.
    """
    paths = [os.path.join(out_dir, name) for name in OUTPUT_FILES]
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            raise UserError(f"{path}: is a folder where the synthetic dataset writes a file; "
                            f"move it away or choose another output folder")
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise write_error(path, error) from None


def check_out_dir(out_dir, preset: Preset, seed: int, say=print) -> dict | None:
    """Whether ``preset`` and ``seed`` may be generated into ``out_dir`` without ``--force``.

    Returns the saved oracle report when the folder already holds that dataset, complete;
    ``None`` when the folder may be written: it is empty (apart from
    :data:`DERIVED_ENTRIES` and temporaries), or holds an incomplete copy of this dataset (an
    interrupted run), which is made again. Anything else -- other files, another preset or seed,
    an unfinished dataset of unknown origin -- is a :class:`UserError` that says what is there.
    """
    entries = sorted(name for name in os.listdir(out_dir)
                     if name not in DERIVED_ENTRIES and not name.startswith(TEMPORARY_PREFIX))
    if not entries:
        return None
    refuse = "; choose an empty folder, or pass --force to replace the dataset files there"
    foreign = [name for name in entries if name not in OUTPUT_FILES]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise UserError(f"{out_dir}: folder is not empty and is not a synthetic dataset "
                        f"(it holds {shown}){refuse}")
    report = _saved_report(out_dir)
    if report is not None:
        if (report.get("preset"), report.get("seed")) != (preset.name, int(seed)):
            raise UserError(f"{out_dir}: holds the synthetic dataset preset "
                            f"{report.get('preset')}, seed {report.get('seed')}, not preset "
                            f"{preset.name}, seed {seed}{refuse}")
        if report.get("generator_version") != GENERATOR_VERSION:
            say(f"synth: {out_dir} holds preset {preset.name}, seed {seed} made by an older "
                f"version of the generator: making it again")
            return None
        if _is_complete(out_dir, preset):
            return report
        say(f"synth: {out_dir} holds an incomplete copy of preset {preset.name}, seed {seed}: "
            f"making it again")
        return None
    if _saved_schema(out_dir) == dataclasses.asdict(preset.schema):
        say(f"synth: {out_dir} holds an unfinished dataset of preset {preset.name} (no "
            f"{ORACLE_FILE}; an interrupted run): making it again")
        return None
    raise UserError(f"{out_dir}: holds {', '.join(entries[:4])} but no {ORACLE_FILE}, so it is "
                    f"not a finished synthetic dataset of preset {preset.name}{refuse}")


def _saved_report(out_dir) -> dict | None:
    """``oracle.json`` of ``out_dir`` when it is a readable report, else ``None``."""
    try:
        with open(os.path.join(out_dir, ORACLE_FILE), encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _saved_schema(out_dir) -> dict | None:
    try:
        with open(os.path.join(out_dir, SCHEMA_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _is_complete(out_dir, preset: Preset) -> bool:
    """Every output file is there, and train has the preset's row count (from its metadata)."""
    if not all(os.path.isfile(os.path.join(out_dir, name)) for name in OUTPUT_FILES):
        return False
    try:
        train_rows = pq.ParquetFile(os.path.join(out_dir, split_file("train"))).metadata.num_rows
    except (pa.ArrowException, OSError):
        return False
    return train_rows == preset.split_rows("train")


def _resolve_preset(preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise UserError(f"synthetic data: unknown preset {preset!r}; "
                        f"choose one of {sorted(PRESETS)}")
    return PRESETS[preset]


def random_stream(seed: int, stream: int, block: int = 0) -> np.random.Generator:
    """An independent random stream per (seed, stream, block): blocks do not shift each other."""
    return np.random.default_rng([int(seed), stream, block])


def split_blocks(world: World, preset: Preset, split: str, seed: int, total: int | None = None):
    """Draw a split block by block, in file order: yields ``(start, rows, rng)``.

    Each block has its own stream (seed, split, block number), so a block can be drawn again
    without the ones before it; ``rng`` goes on to draw that block's labels. ``total`` defaults
    to the preset's row count; an empty split yields one empty block (its file still gets
    written).
    """
    total = preset.split_rows(split) if total is None else total
    cold_rate = 0.0 if split == "train" else preset.cold_target_rate
    for block, start in enumerate(range(0, max(total, 1), preset.block_rows)):
        count = min(preset.block_rows, total - start)
        rng = random_stream(seed, ROW_STREAM + SPLITS.index(split), block)
        yield start, sample_rows(world, preset, count, rng, cold_rate), rng


def _write_split(world: World, preset: Preset, split: str, seed: int, intercept: float,
                 path: str, say):
    """Generate and write one split block by block.

    Returns ``click_prob (R,) float64``, ``label (R,) int64`` and ``terms (R, T)`` (the terms
    only for valid/test, which need them for the partial oracles; empty for train).
    """
    total = preset.split_rows(split)
    arrow_schema = pyarrow_schema(preset.schema, split)
    probs, labels, terms = [], [], []
    with atomic_path(path) as tmp_path, pq.ParquetWriter(tmp_path, arrow_schema) as writer:
        for start, rows, rng in split_blocks(world, preset, split, seed):
            prob = sigmoid(preset.click_model.logit(rows.terms, intercept))
            label = (rng.random(len(prob)) < prob).astype(np.int64)
            writer.write_table(_split_table(rows, label if split != "test" else None, arrow_schema))
            probs.append(prob)
            labels.append(label)
            if split != "train":
                terms.append(rows.terms)
            if total > preset.block_rows:
                say(f"synth: {split} {start + len(prob):,}/{total:,} rows")
    terms = np.concatenate(terms) if terms else np.empty((0, 0))
    return np.concatenate(probs), np.concatenate(labels), terms


def _split_table(rows: Rows, label, arrow_schema: pa.Schema) -> pa.Table:
    columns = {
        USER_ID: pa.array(rows.user_id, pa.int64()),
        ITEM_SEQ: list_column(rows.item_seq, pa.int64()),
        LIKES_LEVEL: pa.array(rows.likes_level.astype(np.int64)),
        VIEWS_LEVEL: pa.array(rows.views_level.astype(np.int64)),
        ITEM_ID: pa.array(rows.item_id.astype(np.int64)),
    }
    if label is not None:
        columns[LABEL] = pa.array(label)
    return pa.table([columns[name] for name in arrow_schema.names], schema=arrow_schema)


def _write_item_info(world: World, schema: Schema, path: str) -> None:
    arrow_schema = pyarrow_schema(schema, ITEM_INFO)
    columns = {
        ITEM_ID: pa.array(np.arange(schema.item_vocab, dtype=np.int64)),
        ITEM_TAGS: list_column(world.item_tags, pa.int64()),
        ITEM_EMB: list_column(world.item_vectors, pa.float32()),
    }
    table = pa.table([columns[name] for name in arrow_schema.names], schema=arrow_schema)
    with atomic_path(path) as tmp_path:
        pq.write_table(table, tmp_path)


def raw_item_schema() -> pa.Schema:
    """The arrow schema of the raw item file, columns in :data:`RAW_ITEM_COLUMNS` order."""
    types = {ITEM_ID: pa.int64(), ITEM_TITLE: pa.string(), ITEM_TAGS: pa.string(),
             LIKES_LEVEL: pa.int64(), VIEWS_LEVEL: pa.int64(),
             TEXT_EMB: pa.list_(pa.float32()), IMAGE_EMB: pa.list_(pa.float32())}
    return pa.schema([pa.field(name, types[name]) for name in RAW_ITEM_COLUMNS])


def _write_raw_items(world: World, schema: Schema, seed: int, path: str) -> None:
    """Write the raw item file block by block (bounded memory on the full preset)."""
    setup = random_stream(seed, RAW_ITEM_STREAM)
    latent_dim = world.item_latent.shape[1]
    text_map = setup.standard_normal((latent_dim, TEXT_EMB_DIM))
    image_map = setup.standard_normal((latent_dim, IMAGE_EMB_DIM))
    vocabulary = _title_vocabulary(world.num_topics, setup)
    likes_level = item_likes_level(world)
    views_level = np.rint(world.item_levels[:, 1]).astype(np.int64)
    arrow_schema = raw_item_schema()
    with atomic_path(path) as tmp_path, pq.ParquetWriter(tmp_path, arrow_schema) as writer:
        for block, start in enumerate(range(1, schema.num_items + 1, RAW_BLOCK_ITEMS)):
            items = np.arange(start, min(start + RAW_BLOCK_ITEMS, schema.num_items + 1))
            rng = random_stream(seed, RAW_ITEM_STREAM, block + 1)
            columns = {
                ITEM_ID: pa.array(items.astype(np.int64)),
                ITEM_TITLE: _titles(world.item_topic[items], vocabulary, rng),
                ITEM_TAGS: _tag_strings(world.item_tags[items]),
                LIKES_LEVEL: pa.array(likes_level[items]),
                VIEWS_LEVEL: pa.array(views_level[items]),
                TEXT_EMB: list_column(_modality_vectors(world.item_latent[items], text_map,
                                                        TEXT_NOISE, rng), pa.float32()),
                IMAGE_EMB: list_column(_modality_vectors(world.item_latent[items], image_map,
                                                         IMAGE_NOISE, rng), pa.float32()),
            }
            writer.write_table(pa.table([columns[name] for name in RAW_ITEM_COLUMNS],
                                        schema=arrow_schema))


def _modality_vectors(latent: np.ndarray, linear_map: np.ndarray, noise: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``latent (n, D) @ linear_map (D, W)`` plus ``N(0, noise²)`` per dim: ``(n, W) float32``."""
    signal = (latent @ linear_map).astype(np.float32)
    signal += np.float32(noise) * rng.standard_normal(signal.shape, dtype=np.float32)
    return signal


def _title_vocabulary(num_topics: int, rng: np.random.Generator) -> pa.Array:
    """Distinct pseudo-words: ``WORDS_PER_TOPIC`` per topic (topic k's at
    ``k * WORDS_PER_TOPIC ...``), then ``SHARED_WORDS`` shared ones; a string array."""
    needed = num_topics * WORDS_PER_TOPIC + SHARED_WORDS
    syllables = np.array(SYLLABLES, dtype=object)
    words: dict[str, None] = {}
    while len(words) < needed:
        picks = syllables[rng.integers(0, len(SYLLABLES), (needed, 3))]
        for word in picks[:, 0] + picks[:, 1] + picks[:, 2]:
            words.setdefault(word)
    return pa.array(list(words)[:needed], pa.string())


def _titles(topics: np.ndarray, vocabulary: pa.Array, rng: np.random.Generator) -> pa.Array:
    """One title per item of ``topics (n,)``: space-separated words, mostly from the topic's
    vocabulary (see :data:`TITLE_TOPIC_SHARE`); a string array ``(n,)``."""
    count, width = len(topics), TITLE_WORDS[1]
    own = topics[:, None] * WORDS_PER_TOPIC + rng.integers(0, WORDS_PER_TOPIC, (count, width))
    shared = len(vocabulary) - SHARED_WORDS + rng.integers(0, SHARED_WORDS, (count, width))
    word = np.where(rng.random((count, width)) < TITLE_TOPIC_SHARE, own, shared)
    length = rng.integers(TITLE_WORDS[0], TITLE_WORDS[1] + 1, count)
    used = np.arange(width)[None, :] < length[:, None]
    return _joined_strings(vocabulary.take(pa.array(word[used])), length)


def _tag_strings(tags: np.ndarray) -> pa.Array:
    """Left-padded tag ids ``(n, T)`` as strings of the real ids, space-separated: ``(n,)``."""
    real = tags > 0
    tokens = pc.cast(pa.array(tags[real].astype(np.int64)), pa.string())
    return _joined_strings(tokens, real.sum(axis=1))


def _joined_strings(tokens: pa.Array, counts: np.ndarray) -> pa.Array:
    """Consecutive runs of ``tokens`` (``counts (n,)`` long) joined with spaces: ``(n,)``."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pc.binary_join(pa.ListArray.from_arrays(offsets, tokens), " ")


def _write_truth(truth: dict, path: str) -> None:
    """``truth.parquet``: split, row (position in the split), click_prob, label."""
    splits, rows, probs, labels = [], [], [], []
    for split, (prob, label, _) in truth.items():
        splits.append(np.full(len(prob), split, dtype=object))
        rows.append(np.arange(len(prob), dtype=np.int64))
        probs.append(prob)
        labels.append(label)
    table = pa.table({
        "split": pa.array(np.concatenate(splits), pa.string()),
        "row": pa.array(np.concatenate(rows)),
        "click_prob": pa.array(np.concatenate(probs)),
        "label": pa.array(np.concatenate(labels)),
    })
    with atomic_path(path) as tmp_path:
        pq.write_table(table, tmp_path)


def _auc(labels: np.ndarray, scores: np.ndarray):
    """ROC AUC, or None when only one class is present."""
    from sklearn.metrics import roc_auc_score

    if labels.min(initial=0) == labels.max(initial=0):
        return None
    return round(float(roc_auc_score(labels, scores)), 6)


def _oracle_report(preset: Preset, seed: int, intercept: float, truth: dict,
                   positive_rate: dict) -> dict:
    """Oracle AUC per split, and the AUC with each part of the click model switched off."""
    model = preset.click_model
    oracle = {split: _auc(label, prob) for split, (prob, label, _) in truth.items()}
    partial = {
        f"no_{part}": {split: _auc(label, model.logit(terms, intercept, without=part))
                       for split, (_, label, terms) in truth.items()}
        for part in PARTS
    }
    return {
        "preset": preset.name,
        "seed": int(seed),
        "generator_version": GENERATOR_VERSION,
        "oracle_auc": oracle,
        "partial_oracle_auc": partial,
        "positive_rate": {split: round(rate, 6) for split, rate in positive_rate.items()},
        "intercept": round(intercept, 6),
    }


def _summary(report: dict) -> str:
    oracle = report["oracle_auc"]
    lines = [f"synth: oracle AUC valid {oracle['valid']}, test {oracle['test']}"]
    for part, aucs in report["partial_oracle_auc"].items():
        lines.append(f"synth:   {part}: valid {aucs['valid']}, test {aucs['test']}")
    lines.append(f"synth: positive rate {report['positive_rate']}, "
                 f"{report['generation_seconds']} s")
    return "\n".join(lines)
