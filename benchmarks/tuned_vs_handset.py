"""The best trial of an optuna search against the hand-set base expid, over several seeds.

    python benchmarks/tuned_vs_handset.py --config config/tuner/Transformer_DCN_demo_optuna.yaml \
        --seeds 2025 1 2 3 4 --out benchmarks/results/Transformer_DCN_demo_optuna/tuned_vs_handset.md

Both arms run the tuner's base expid with the tuner file's fixed values (``tuner_space`` keys with
one value, e.g. ``eval_steps``); the tuned arm adds the best trial's sampled values, the
hand-set arm keeps the base expid's. For each seed both report the valid AUC (the split the
search chose on, so the tuned arm's is optimistic at the search's own seed) and, on synthetic
data, the test AUC against ``truth.parquet`` (never seen by the search). Run it from the
repository root after the search; it reads the study from the tuner file's storage.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fuxictr_mmctr.errors import exit_on_user_error  # noqa: E402
from fuxictr_mmctr.fileio import write_text_atomic  # noqa: E402
from fuxictr_mmctr.pipeline import optuna_search  # noqa: E402
from fuxictr_mmctr.pipeline.experiment import run_experiment  # noqa: E402


def run_arm(plan, name: str, values: dict, seed: int) -> dict:
    overrides = {**values, "seed": seed, "model_id": f"{plan.study_name}_{name}_seed{seed}",
                 "save_resume_state": False}
    result = run_experiment(plan.config_dir, plan.expid, gpu=-1, overrides=overrides,
                            write_row=False)
    return {"valid": result["valid"]["AUC"], "test": result["test_auc_truth"],
            "seconds": result["train_seconds"]}


def mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.4f}"


def report(plan, best, handset: dict, tuned: dict, runs: dict, seeds: list[int]) -> str:
    lines = [f"# {plan.study_name}: best trial against the hand-set configuration", "",
             f"Best trial {best.number} of study {plan.study_name} "
             f"(valid {plan.objective.name} {best.value:.6f} in the search), base expid "
             f"`{plan.expid.rsplit('_', 2)[0]}` with "
             f"{'the tuner file fixed values ' + str(plan.fixed) if plan.fixed else 'no fixed values'}"
             f". Seeds {', '.join(map(str, seeds))}; machine: "
             f"{platform.machine()}, {os.cpu_count()} cores, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, CPU.", "",
             "| parameter | hand-set | tuned |", "|---|---|---|"]
    for key in tuned:
        value = tuned[key]
        shown = f"{value:.4g}" if isinstance(value, float) else value
        lines.append(f"| {key} | {handset[key]} | {shown} |")
    lines += ["", "| seed | hand-set valid AUC | tuned valid AUC | hand-set test AUC | "
              "tuned test AUC |", "|---|---|---|---|---|"]
    for seed in seeds:
        h, t = runs["handset", seed], runs["tuned", seed]
        test = [f"{x['test']:.4f}" if x["test"] is not None else "n/a" for x in (h, t)]
        lines.append(f"| {seed} | {h['valid']:.4f} | {t['valid']:.4f} | {test[0]} | {test[1]} |")
    lines.append("")
    for split in ("valid", "test"):
        pairs = [(runs["handset", s][split], runs["tuned", s][split]) for s in seeds]
        if any(value is None for pair in pairs for value in pair):
            continue
        diffs = [t - h for h, t in pairs]
        lines.append(f"- {split} AUC (mean ± std over seeds): hand-set "
                     f"{mean_std([h for h, _ in pairs])}, tuned {mean_std([t for _, t in pairs])}, "
                     f"tuned − hand-set {mean_std(diffs)} (paired by seed)")
    return "\n".join(lines) + "\n"


@exit_on_user_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", required=True, help="the optuna tuner yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2025, 1, 2])
    parser.add_argument("--out", required=True, help="markdown file to write")
    args = parser.parse_args()
    plan = optuna_search.plan_search(args.config)
    best = optuna_search.open_study(plan).best_trial
    tuned = plan.values_of(best.params)
    handset = {key: plan.base_params.get(key) for key in tuned}
    runs = {}
    for seed in args.seeds:
        for name, values in (("handset", handset), ("tuned", tuned)):
            runs[name, seed] = run_arm(plan, name, values, seed)
    text = report(plan, best, handset, tuned, runs, args.seeds)
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
