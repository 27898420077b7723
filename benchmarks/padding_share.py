"""How much of the item encoder's work goes to padding: ids encoded vs real ids, per batch.

Builds a model of an expid on its dataset, runs its input stage over the first batches of a
split (the loader as training makes it: ``batch_size``, ``max_len``, trimmed where the model
allows) and counts, through a hook on the item encoder, every id it is asked to encode and how
many of them are padding (id 0). Prints one line::

    python benchmarks/padding_share.py --expid Transformer_DCN_MicroLens50k --batches 50
    Transformer_DCN_MicroLens50k train: 51,200 rows, 1,234,567 ids encoded, 345,678 real
    (targets + real history items): 72.0% padding
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

CONFIG_DIR = os.path.join(REPO, "config")


def padding_share(expid: str, batches: int, split: str = "train_data") -> dict:
    """``{"rows", "encoded", "real", "padding_share"}`` over the first ``batches`` batches."""
    from fuxictr_mmctr.pipeline import config_check
    from fuxictr_mmctr.pipeline.experiment import build_model, make_loader, prepare

    params = config_check.load_params(CONFIG_DIR, expid, -1)
    for key in ("train_data", "valid_data", "test_data", "item_info", "data_root"):
        if isinstance(params.get(key), str) and not os.path.isabs(params[key]):
            params[key] = os.path.normpath(os.path.join(REPO, params[key]))
    params.update(verbose=0, model_root=tempfile.mkdtemp(prefix="padding_share_"))
    feature_map, catalogue = prepare(params)
    model = build_model(params, feature_map, catalogue)
    loader = make_loader(params, catalogue, params[split], train=True, device="cpu",
                         trim_history=model.trims_history)
    counts = {"rows": 0, "encoded": 0, "real": 0}

    def count(module, args):
        ids = args[0]
        counts["encoded"] += ids.numel()
        counts["real"] += int((ids != 0).sum())

    hook = model.inputs.item_encoder.register_forward_pre_hook(count)
    model.train()
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if index == batches:
                break
            counts["rows"] += len(batch["item_id"])
            model.inputs(batch)
    hook.remove()
    counts["padding_share"] = 1.0 - counts["real"] / max(counts["encoded"], 1)
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expid", default="Transformer_DCN_MicroLens50k")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--split", default="train_data",
                        choices=("train_data", "valid_data", "test_data"))
    args = parser.parse_args(argv)
    counts = padding_share(args.expid, args.batches, args.split)
    print(f"{args.expid} {args.split}: {counts['rows']:,} rows, {counts['encoded']:,} ids "
          f"encoded, {counts['real']:,} real (targets + real history items): "
          f"{counts['padding_share']:.1%} padding")


if __name__ == "__main__":
    main()
