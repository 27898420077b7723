"""The comparison charts: valid AUC per expid at a glance, and per slice of the valid rows.

:func:`draw_comparison`: one horizontal bar per expid, best on top, with the std over seeds
as an error bar; on synthetic data the oracle AUC and the no-history partial oracle are
vertical lines, so each bar reads as "how much of the reachable gain this model took". Bars
are coloured by model class (an ablation shares its model's colour), with the classes in the
legend. Failed expids are listed without a bar; training-free rows are left out (the caller
passes trained rows only).

:func:`draw_slices`: one panel per slice kind (history length, target popularity), one line per
row over the buckets.
"""
from __future__ import annotations

from fuxictr_mmctr.fileio import atomic_path

#: The partial oracle drawn beside the oracle (what a model that ignores the history can reach).
PARTIAL_ORACLE_LINE = "history"


def draw_comparison(rows: list[dict], path: str, dataset_id: str, oracle: dict | None,
                    machine: str) -> None:
    """Write the chart of ``rows`` (sorted best first, as in the table) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["expid"] for row in rows]
    means = [row.get("valid_auc_mean") for row in rows]
    stds = [row.get("valid_auc_std") or 0.0 for row in rows]
    finished = [m for m in means if m is not None]
    reference = _reference_lines(oracle)
    low, high = _x_range(finished + [value for _, value, _ in reference])

    colours = model_colours(rows)
    height = 1.2 + 0.38 * max(len(rows), 1)
    figure, axes = plt.subplots(figsize=(11, height))
    positions = list(range(len(rows)))[::-1]  # best on top
    labelled = set()
    for position, mean, std, row in zip(positions, means, stds, rows):
        if mean is None:
            label = "not run" if row.get("status") == "not run" else "failed"
            axes.text(low, position, f"  {label}", va="center", color="firebrick", fontsize=8)
            continue
        model = row.get("model")
        axes.barh(position, mean - low, left=low, xerr=std, height=0.6,
                  color=colours.get(model, "steelblue"), ecolor="black", capsize=3,
                  label=model if model and model not in labelled else None)
        labelled.add(model)
        axes.text(mean + std, position, f" {mean:.4f}", va="center", fontsize=8)
    for name, value, style in reference:
        axes.axvline(value, color="darkred", linestyle=style, linewidth=1.2,
                     label=f"{name} {value:.4f}")
    axes.set_yticks(positions)
    axes.set_yticklabels(labels, fontsize=8)
    axes.set_xlim(low, high)
    axes.set_xlabel("valid AUC (mean ± std over seeds)")
    axes.set_title(f"{dataset_id}: {machine}", fontsize=8)
    if reference or any(labelled):
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the bars
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=110)
    plt.close(figure)


def model_colours(rows: list[dict]) -> dict:
    """A colour per model class, in the order the classes first appear (best first)."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    models = [row["model"] for row in rows if row.get("model")]
    return {model: palette[index % len(palette)]
            for index, model in enumerate(dict.fromkeys(models))}


def _reference_lines(oracle: dict | None) -> list[tuple[str, float, str]]:
    """``(label, AUC, line style)`` of the oracle and the no-history partial oracle."""
    if not oracle:
        return []
    lines = [("oracle", oracle["oracle"], "-")]
    partial = oracle.get("partial", {}).get(PARTIAL_ORACLE_LINE)
    if partial is not None:
        lines.append((f"oracle without {PARTIAL_ORACLE_LINE}", partial, "--"))
    return lines


def _x_range(values: list[float]) -> tuple[float, float]:
    """An AUC axis that shows the differences: a margin around the values, within [0, 1]."""
    if not values:
        return 0.5, 1.0
    low, high = min(values), max(values)
    margin = max((high - low) * 0.15, 0.005)
    return max(low - margin, 0.0), min(high + 3 * margin, 1.0)


#: Colours of the slices chart's lines: tab20's ten strong shades, then its ten light ones (20
#: distinct, then the markers tell lines apart).
SLICE_PALETTE = "tab20"
SLICE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
#: Titles of the slices chart's panels, one per slice kind.
SLICE_TITLES = {"history_length": "history length (real items)",
                "popularity": "target popularity in train"}


def draw_slices(rows: list[dict], counts: dict, path: str, dataset_id: str) -> None:
    """Write the slices chart to ``path`` (PNG): one panel per slice kind of ``counts``
    (``{kind: {bucket: valid rows}}``), the buckets on the x axis (with their row counts), and
    one line of valid AUC per finished row of ``rows`` (sorted best first, as in the table;
    training-free rows dashed). A bucket without an AUC breaks the row's line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    shown = [row for row in rows if row.get("valid_auc_mean") is not None]
    kinds = [kind for kind in SLICE_TITLES if counts.get(kind)]
    widths = [max(len(counts[kind]), 2) for kind in kinds] or [1]
    figure, axes = plt.subplots(1, len(widths), figsize=(12, 5.5), squeeze=False, sharey=True,
                                gridspec_kw={"width_ratios": widths})
    colours = colormaps[SLICE_PALETTE].colors
    palette = list(colours[0::2]) + list(colours[1::2])
    for axis, kind in zip(axes[0], kinds):
        buckets = list(counts[kind])
        positions = range(len(buckets))
        for index, row in enumerate(shown):
            values = [((row.get("slices") or {}).get(kind) or {}).get(bucket) for bucket in buckets]
            axis.plot(positions, [float("nan") if v is None else v for v in values],
                      color=palette[index % len(palette)],
                      marker=SLICE_MARKERS[index // len(palette) % len(SLICE_MARKERS)],
                      linestyle="--" if row.get("training_free") else "-", linewidth=1.2,
                      markersize=4, label=row["expid"])
        axis.set_xticks(list(positions))
        axis.set_xticklabels([f"{bucket}\nn={counts[kind][bucket]:,}" for bucket in buckets],
                             fontsize=8)
        axis.set_title(SLICE_TITLES[kind], fontsize=9)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("valid AUC (mean over seeds)")
    if not kinds:
        axes[0][0].text(0.5, 0.5, "no slices recorded", ha="center", va="center")
    figure.suptitle(f"{dataset_id}: valid AUC per slice (dashed: training-free)", fontsize=9)
    if shown and kinds:
        handles, labels = axes[0][0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5),
                      fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as tmp_path:
        figure.savefig(tmp_path, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
