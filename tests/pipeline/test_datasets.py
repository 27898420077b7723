"""ensure_dataset: generate synthetic presets on first use, remake them when they are stale."""
import json
import os

import pyarrow.parquet as pq

from fuxictr_mmctr.data.synthetic import PRESETS
from fuxictr_mmctr.pipeline.datasets import ensure_dataset


def tiny_params(folder, seed=2025):
    paths = {key: os.path.join(folder, f"{name}.parquet") for key, name in
             [("train_data", "train"), ("valid_data", "valid"), ("test_data", "test"),
              ("item_info", "item_info")]}
    return {"dataset_id": "tiny", "synthetic_preset": "tiny", "synthetic_seed": seed, **paths}


def read_oracle(folder):
    with open(os.path.join(folder, "oracle.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_generates_once_then_reuses(tmp_path):
    folder = str(tmp_path / "tiny")
    params = tiny_params(folder)
    ensure_dataset(params)
    first_mtime = os.path.getmtime(params["train_data"])
    assert pq.ParquetFile(params["train_data"]).metadata.num_rows == PRESETS["tiny"].num_train
    ensure_dataset(params)
    assert os.path.getmtime(params["train_data"]) == first_mtime


def test_data_of_another_seed_is_made_again(tmp_path):
    folder = str(tmp_path / "tiny")
    ensure_dataset(tiny_params(folder, seed=1))
    assert read_oracle(folder)["seed"] == 1
    ensure_dataset(tiny_params(folder, seed=2))
    assert read_oracle(folder)["seed"] == 2


def test_data_with_another_row_count_is_made_again(tmp_path):
    folder = str(tmp_path / "tiny")
    params = tiny_params(folder)
    ensure_dataset(params)
    table = pq.read_table(params["train_data"])
    pq.write_table(table.slice(0, 100), params["train_data"])  # as an older, smaller preset
    ensure_dataset(params)
    assert pq.ParquetFile(params["train_data"]).metadata.num_rows == PRESETS["tiny"].num_train


def test_data_of_an_older_generator_is_made_again(tmp_path):
    """Data written before the generator last changed (its click model, its files) is stale even
    when preset, seed and row counts match."""
    from fuxictr_mmctr.data.synthetic import GENERATOR_VERSION, RAW_ITEM_FILE

    folder = str(tmp_path / "tiny")
    params = tiny_params(folder)
    ensure_dataset(params)
    report = read_oracle(folder)
    assert report["generator_version"] == GENERATOR_VERSION
    del report["generator_version"]  # as written by the release before versioning
    with open(os.path.join(folder, "oracle.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    os.remove(os.path.join(folder, RAW_ITEM_FILE))
    ensure_dataset(params)
    assert read_oracle(folder)["generator_version"] == GENERATOR_VERSION
    assert os.path.exists(os.path.join(folder, RAW_ITEM_FILE))


def test_synth_does_not_call_older_generator_data_up_to_date(tmp_path):
    from fuxictr_mmctr.data.synthetic import check_out_dir, generate

    folder = str(tmp_path / "tiny")
    generate("tiny", seed=3, out_dir=folder, verbose=False)
    assert check_out_dir(folder, PRESETS["tiny"], 3, say=lambda _: None) is not None
    report = read_oracle(folder)
    report["generator_version"] = 0
    with open(os.path.join(folder, "oracle.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    said = []
    assert check_out_dir(folder, PRESETS["tiny"], 3, say=said.append) is None
    assert "older version of the generator" in said[0]
