"""build_feature_map: the frozen_embedding type, vocab sizes, dimension checks, the config."""
from __future__ import annotations

import json
import os

import pytest
import yaml

from fuxictr_mmctr.data import schema as contract
from fuxictr_mmctr.data.feature_map import build_feature_map
from fuxictr_mmctr.errors import UserError
from tests.builders import TINY, dataset_params, write_dataset

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "config", "dataset_config.yaml")


def test_feature_map_json_records_frozen_embedding_and_vocabs(tmp_path):
    write_dataset(tmp_path / "ds")
    feature_map = build_feature_map(dataset_params(tmp_path / "ds", projection="linear",
                                                   embedding_dim=8))
    with open(tmp_path / "ds" / "feature_map.json", encoding="utf-8") as handle:
        saved = {k: v for item in json.load(handle)["features"] for k, v in item.items()}
    assert saved[contract.ITEM_EMB] == {"source": "item", "type": "frozen_embedding",
                                        "pretrain_dim": 16, "projection": "linear",
                                        "projection_bias": True, "finetune": False,
                                        "embedding_dim": 8, "emb_output_dim": 8}
    assert saved[contract.ITEM_ID]["vocab_size"] == TINY.item_vocab
    assert saved[contract.ITEM_TAGS]["vocab_size"] == TINY.tag_vocab
    assert saved[contract.ITEM_TAGS]["max_len"] == TINY.num_tags_per_item
    assert saved[contract.LIKES_LEVEL]["vocab_size"] == TINY.level_vocab
    assert saved[contract.ITEM_SEQ]["share_embedding"] == contract.ITEM_ID
    # The vector takes pretrain_dim columns of the flat index, the history max_len.
    assert len(feature_map.get_column_index(contract.ITEM_EMB)) == 16
    assert len(feature_map.get_column_index(contract.ITEM_SEQ)) == TINY.max_seq_len
    assert feature_map.item_features(use_multimodal=False) == [contract.ITEM_ID, contract.ITEM_TAGS]
    assert feature_map.side_features() == [contract.LIKES_LEVEL, contract.VIEWS_LEVEL]
    assert feature_map.default_emb_dim == 8


def test_existing_matching_feature_map_is_kept(tmp_path):
    write_dataset(tmp_path / "ds")
    build_feature_map(dataset_params(tmp_path / "ds"))
    json_file = tmp_path / "ds" / "feature_map.json"
    before = json_file.stat().st_mtime_ns
    build_feature_map(dataset_params(tmp_path / "ds"))
    assert json_file.stat().st_mtime_ns == before
    build_feature_map(dataset_params(tmp_path / "ds", projection="mlp", embedding_dim=4))
    assert json.loads(json_file.read_text())["features"][-1][contract.ITEM_EMB]["projection"] == "mlp"


@pytest.mark.parametrize("frozen, message", [
    ({"pretrain_dim": 128}, r"item_info.parquet, column item_emb_d128: config declares "
                            r"pretrain_dim=128 but the vectors have 16 values"),
    ({"projection": "none", "embedding_dim": 8}, r"projection none keeps the raw 16-d vector"),
    ({"projection": "pca"}, r"projection 'pca' is not one of"),
])
def test_dimension_mismatch_is_one_line_user_error(tmp_path, frozen, message):
    write_dataset(tmp_path / "ds")
    with pytest.raises(UserError, match=message) as error:
        build_feature_map(dataset_params(tmp_path / "ds", **frozen))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("specs, message", [
    ([{"name": contract.ITEM_EMB, "embedding_dim": 8}],
     "feature_specs, feature item_emb_d128: projection none keeps the raw 16-d vector but "
     "embedding_dim=8; set projection: linear or embedding_dim: 16"),
    ([{"name": contract.ITEM_EMB, "projection": "bogus"}],
     "feature_specs, feature item_emb_d128: projection 'bogus' is not one of none, linear, mlp"),
])
def test_an_expids_feature_specs_are_checked_like_the_dataset_config(tmp_path, specs, message):
    """FuxiCTR merges an expid's feature_specs into the map without a look: a projection that
    cannot be built, or a width the raw vector does not have, must not pass that way."""
    write_dataset(tmp_path / "ds")
    with pytest.raises(UserError) as error:
        build_feature_map({**dataset_params(tmp_path / "ds"), "feature_specs": specs})
    assert str(error.value) == message


def test_feature_specs_may_switch_a_vector_to_a_projection(tmp_path):
    write_dataset(tmp_path / "ds")
    specs = [{"name": contract.ITEM_EMB, "projection": "linear", "embedding_dim": 8}]
    spec = build_feature_map({**dataset_params(tmp_path / "ds"), "feature_specs": specs}
                             ).features[contract.ITEM_EMB]
    assert (spec["projection"], spec["embedding_dim"], spec["emb_output_dim"]) == ("linear", 8, 8)


def test_shipped_microlens_config_builds_on_data_of_its_schema(tmp_path):
    """The real-data config entry, pointed at a folder with MicroLens-sized vectors and tags."""
    with open(CONFIG, encoding="utf-8") as handle:
        config = yaml.load(handle, Loader=yaml.FullLoader)
    assert {"MicroLens_1M_x1", "MicroLens_synth_tiny", "MicroLens_synth_demo",
            "MicroLens_synth_full"} <= set(config)
    schema = contract.Schema(max_seq_len=100, num_items=40, tag_vocab=50, user_vocab=10)
    write_dataset(tmp_path / "MicroLens_1M_x1", schema=schema, num_rows=4)
    params = dict(config["MicroLens_1M_x1"], dataset_id="MicroLens_1M_x1",
                  data_root=str(tmp_path), embedding_dim=64)
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        params[key] = str(tmp_path / "MicroLens_1M_x1" / os.path.basename(params[key]))
    feature_map = build_feature_map(params)
    spec = feature_map.features[contract.ITEM_EMB]
    assert (spec["type"], spec["pretrain_dim"], spec["projection"]) == ("frozen_embedding", 128, "none")
    assert feature_map.features[contract.ITEM_ID]["vocab_size"] == 91718  # declared in the config
    assert feature_map.sum_emb_out_dim(["item"]) == 64 + 64 + 128
    synth = dict(config["MicroLens_synth_tiny"], dataset_id="synth", data_root=str(tmp_path))
    write_dataset(tmp_path / "synth")
    for key in ("train_data", "item_info"):
        synth[key] = str(tmp_path / "synth" / os.path.basename(synth[key]))
    synth_map = build_feature_map(synth)  # sizes from the folder's schema.json
    assert synth_map.features[contract.ITEM_EMB]["pretrain_dim"] == TINY.item_emb_dim
    assert synth_map.features[contract.ITEM_TAGS]["vocab_size"] == TINY.tag_vocab
