"""The ``fuxictr-mmctr`` console script.

Subcommands::

    fuxictr-mmctr synth --preset {tiny,demo,full} --seed N --out DIR [--force]
    fuxictr-mmctr validate DIR
    fuxictr-mmctr items --item-feature RAW.parquet --item-info ITEM_INFO.parquet --out OUT.parquet
                        [--vectors text,image] [--dim 128] [--whiten] [--vectors-file FILE]
    fuxictr-mmctr score SUBMISSION.zip --truth DIR
    fuxictr-mmctr microlens --pairs FILE --titles FILE --out DIR [--seq-len 50] [--neg-per-pos 3]
                            [--seed 2025] [--dim 128] [--negatives uniform|popularity]
    fuxictr-mmctr attention --expid ID [--rows N] [--seed S] [--config DIR] [--gpu N] [--out DIR]
    fuxictr-mmctr export --expid ID [--config DIR] [--checkpoint best|PATH] --format pt2|onnx|aoti
                         [--precision fp32|bf16] --out DIR
    fuxictr-mmctr serve --artifact DIR [--host 127.0.0.1] [--port 8080] [--max-batch-rows N]
                        [--max-wait-ms T] [--threads N]

Each subcommand lives in the module that owns its job; this file only parses arguments.
Bad input exits with status 2 and one ``error: ...`` line, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from fuxictr_mmctr.errors import EXIT_USAGE, UserError, exit_on_user_error


def _cmd_synth(args) -> int:
    """Generate a dataset; without ``--force`` only into an empty folder or its own one."""
    from fuxictr_mmctr.data.synthetic import generate

    if not args.out.strip():
        raise UserError("--out is an empty path; give the output folder")
    # generate() names an unknown preset or a bad seed before anything is written.
    generate(args.preset, seed=args.seed, out_dir=args.out, verbose=True, overwrite=args.force)
    return 0


def _cmd_validate(args) -> int:
    from fuxictr_mmctr.data.validate import dataset_report

    # A path that is not a folder is a usage error, not a finding about a dataset.
    if not os.path.exists(args.dir):
        raise UserError(f"{args.dir}: dataset folder not found")
    if not os.path.isdir(args.dir):
        raise UserError(f"{args.dir}: is a file; validate takes the dataset folder")
    problems, notes = dataset_report(args.dir)
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) found in {args.dir}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.dir}: OK")
    return 0


def _cmd_items(args) -> int:
    """Build the enriched item table (per-item levels, optional PCA vectors)."""
    from fuxictr_mmctr.data.item_features import VectorOptions, build_item_table

    if args.vectors is None and (args.dim is not None or args.whiten or args.vectors_file):
        raise UserError("items: --dim, --whiten and --vectors-file are about the PCA vectors; "
                        "add --vectors text,image (or text, or image)")
    vectors = None
    if args.vectors is not None:
        modalities = tuple(name.strip() for name in args.vectors.split(",") if name.strip())
        vectors = VectorOptions(modalities, dim=128 if args.dim is None else args.dim,
                                whiten=args.whiten)
    build_item_table(args.item_feature, args.item_info, args.out, vectors=vectors,
                     vectors_file=args.vectors_file)
    return 0


def _cmd_score(args) -> int:
    from fuxictr_mmctr.data.scoring import score_submission

    auc = score_submission(args.submission, args.truth)
    print(f"AUC={auc:.6f}")
    return 0


def _cmd_microlens(args) -> int:
    """The public MicroLens release as a challenge-schema dataset (docs/real_data.md)."""
    from fuxictr_mmctr.data.microlens import FramingOptions, build_microlens
    from fuxictr_mmctr.pipeline.row_analysis import training_free_aucs

    options = FramingOptions(seq_len=args.seq_len, neg_per_pos=args.neg_per_pos, seed=args.seed,
                             dim=args.dim, negatives=args.negatives, recent=args.recent)
    stats = build_microlens(args.pairs, args.titles, args.out, options,
                            analyse=training_free_aucs)
    for split, aucs in stats["training_free_auc"].items():
        print(f"microlens: training-free {split} AUC: "
              + ", ".join(f"{name} {auc:.4f}" for name, auc in aucs.items()))
    return 0


def _cmd_attention(args) -> int:
    from fuxictr_mmctr.pipeline.attention import inspect_attention

    summary = inspect_attention(args.config, args.expid, rows=args.rows, gpu=args.gpu,
                                out_dir=args.out, seed=args.seed)
    for layer, shares in enumerate(summary["layers"]):
        line = (f"layer {layer}: attention on history items "
                f"{shares['attention_on_history']:.3f}")
        if "session_share" in shares:
            line += (f"; on the planted session items {shares['session_share']:.3f} "
                     f"(uniform attention: {shares['uniform_share']:.3f}, "
                     f"{shares['rows_with_planted_items']} rows)")
        print(line)
    print("wrote " + ", ".join(summary["outputs"]))
    return 0


def _cmd_export(args) -> int:
    """A trained run as a self-contained artifact folder (docs/serving.md)."""
    from fuxictr_mmctr.serving.export import export_artifact

    result = export_artifact(args.config, args.expid, args.out, fmt=args.format,
                             precision=args.precision, checkpoint=args.checkpoint)
    parity = result["parity"]
    auc = parity.get("auc")
    auc_text = (f"valid AUC {auc['exported']:.6f} (eager {auc['eager']:.6f}, {auc['rows']} rows)"
                if auc else parity.get("auc_skipped", "no AUC"))
    worst = max([parity["valid_rows"]["max_abs_logit_diff"]]
                + [probe["max_abs_logit_diff"] for probe in parity["probes"].values()])
    history = "padded to max_len in the graph" if result["padded_in_graph"] else "as given"
    print(f"wrote {result['out']} ({result['format']}, {result['precision']}, history "
          f"{history}): parity passed, max |logit difference| {worst:.3g}, {auc_text}")
    return 0


def _cmd_serve(args) -> int:
    from fuxictr_mmctr.serving.server import serve

    serve(args.artifact, host=args.host, port=args.port, max_batch_rows=args.max_batch_rows,
          max_wait_ms=args.max_wait_ms, threads=args.threads, max_body_bytes=args.max_body_bytes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fuxictr-mmctr", description="Multimodal CTR prediction on FuxiCTR."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="generate a synthetic MicroLens-shaped dataset")
    synth.add_argument("--preset", default="demo", help="tiny, demo or full (default: demo)")
    synth.add_argument("--seed", type=int, default=2025, help="random seed (default: 2025)")
    synth.add_argument("--out", required=True,
                       help="output folder: empty, or holding this preset and seed already")
    synth.add_argument("--force", action="store_true",
                       help="replace the dataset files in a folder that holds other data")
    synth.set_defaults(run=_cmd_synth)

    validate = commands.add_parser("validate", help="check a dataset folder against the contract")
    validate.add_argument("dir", help="folder with train/valid/test/item_info parquet files")
    validate.set_defaults(run=_cmd_validate)

    items = commands.add_parser(
        "items", help="item_info plus per-item levels (and PCA vectors) from the raw item file")
    items.add_argument("--item-feature", required=True,
                       help="the raw item file (item_feature.parquet: item_id, likes_level, "
                            "views_level[, txt_emb_BERT, img_emb_CLIPRN50])")
    items.add_argument("--item-info", required=True,
                       help="the dataset's item_info.parquet (rows, order and columns kept)")
    items.add_argument("--out", required=True, help="output parquet file (written atomically)")
    items.add_argument("--vectors", metavar="MODALITIES",
                       help="also add item_emb_pca<dim>: PCA of the raw vectors of text, image "
                            "or text,image (concatenated)")
    items.add_argument("--dim", type=int, help="width of the PCA vectors (default 128)")
    items.add_argument("--whiten", action="store_true",
                       help="scale each PCA component to unit variance")
    items.add_argument("--vectors-file",
                       help="parquet file with item_id and the raw vector columns, when they are "
                            "not in --item-feature")
    items.set_defaults(run=_cmd_items)

    score = commands.add_parser("score", help="AUC of a submission zip on synthetic test labels")
    score.add_argument("submission", help="zip holding prediction.csv with columns ID,Task2")
    score.add_argument("--truth", required=True, help="synthetic dataset folder (has the labels)")
    score.set_defaults(run=_cmd_score)

    microlens = commands.add_parser(
        "microlens", help="the public MicroLens release (pairs + titles) as a challenge-schema "
                          "dataset")
    microlens.add_argument("--pairs", required=True,
                           help="interactions: the per-user sequence .tsv (user<TAB>video ...) "
                                "or the userID,videoID,timestamp .csv of the 50k/100k/1M releases")
    microlens.add_argument("--titles", required=True, help="the release's item,title .csv")
    microlens.add_argument("--out", required=True,
                           help="output folder: new, empty, or one this command wrote before")
    microlens.add_argument("--seq-len", type=int, default=50,
                           help="history length kept per row (default 50)")
    microlens.add_argument("--neg-per-pos", type=int, default=3,
                           help="negative rows per real interaction (default 3)")
    microlens.add_argument("--seed", type=int, default=2025,
                           help="seed of the negatives and the title SVD (default 2025)")
    microlens.add_argument("--dim", type=int, default=128,
                           help="width of the title vector item_emb_d128 (default 128)")
    microlens.add_argument("--negatives", default="uniform",
                           help="uniform (default) or popularity (train-period count + 1)")
    microlens.add_argument("--recent", type=int, default=3,
                           help="last train-period videos per user counted for likes_level "
                                "(default 3)")
    microlens.set_defaults(run=_cmd_microlens)

    attention = commands.add_parser(
        "attention", help="attention weights of a trained model on validation rows")
    attention.add_argument("--expid", required=True, help="a trained expid")
    attention.add_argument("--rows", type=int, default=32,
                           help="validation rows with a history to inspect (default 32)")
    attention.add_argument("--config", default="./config/", help="config folder")
    attention.add_argument("--gpu", type=int, default=-1, help="GPU index, -1 for CPU")
    attention.add_argument("--seed", type=int,
                           help="read the checkpoint of this seed's compare_models.py run")
    attention.add_argument("--out", help="output folder (default "
                                         "benchmarks/results/<dataset>/attention)")
    attention.set_defaults(run=_cmd_attention)

    export = commands.add_parser(
        "export", help="a trained run as a self-contained artifact folder (pt2, ONNX, AOTI)")
    export.add_argument("--expid", required=True, help="a trained expid")
    export.add_argument("--config", default="./config/", help="config folder")
    export.add_argument("--checkpoint", default="best",
                        help="best (the run's best checkpoint, default) or a .model file")
    export.add_argument("--format", default="pt2",
                        help="pt2 (torch.export, default), onnx or aoti (AOTInductor)")
    export.add_argument("--precision", default="fp32", help="fp32 (default) or bf16")
    export.add_argument("--out", required=True,
                        help="artifact folder: new, empty, or an artifact folder to replace")
    export.set_defaults(run=_cmd_export)

    serve = commands.add_parser("serve", help="score JSON requests over HTTP with an artifact")
    serve.add_argument("--artifact", required=True, help="artifact folder (fuxictr-mmctr export)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--max-batch-rows", type=int, default=1024,
                       help="rows per model call when requests are batched together "
                            "(default 1024; 0: no micro-batching, one call per request)")
    serve.add_argument("--max-wait-ms", type=float, default=2.0,
                       help="how long a request may wait for others to share its model call "
                            "(default 2 ms)")
    serve.add_argument("--threads", type=int, default=None,
                       help="intra-op threads of the model (default: the library's)")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                       help="largest request body accepted (default 8 MiB)")
    serve.set_defaults(run=_cmd_serve)
    return parser


@exit_on_user_error
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    status = args.run(args)
    sys.exit(status)


if __name__ == "__main__":
    main()
