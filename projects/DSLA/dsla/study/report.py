"""
The study's report: mean and standard deviation over seeds of each variant's figures, per dataset,
as a Markdown table (``study.md``), all per-run figures (``study.json``) and plots
(``study_ap.png``, ``study_consistency.png``).
"""

import glob
import json
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .runs import RESULT_FILE_NAME, load_result  # noqa: E402
from .variants import format_override_value  # noqa: E402

__all__ = [
    "COLUMNS",
    "aggregate",
    "collect_results",
    "format_mean_std",
    "mean_std",
    "plot_study",
    "render_markdown",
    "write_report",
]

# (column title, key in a result's "metrics" or "minutes", decimals)
COLUMNS: Tuple[Tuple[str, str, int], ...] = (
    ("AP", "bbox/AP", 1),
    ("AP50", "bbox/AP50", 1),
    ("AP75", "bbox/AP75", 1),
    ("APs", "bbox/APs", 1),
    ("APm", "bbox/APm", 1),
    ("APl", "bbox/APl", 1),
    ("spearman", "score_iou/spearman", 3),
    ("top-score not best-localized", "score_iou/gt_top_score_not_best_iou", 3),
    ("spearman before NMS", "score_iou_before_nms/spearman", 3),
    (
        "top-score not best-localized before NMS",
        "score_iou_before_nms/gt_top_score_not_best_iou",
        3,
    ),
    ("pair concordance before NMS", "score_iou_before_nms/gt_pair_concordance", 3),
    ("train min", "minutes", 1),
)
# Summarized in study.json as well, though not in the table.
EXTRA_KEYS = (
    "score_iou/mean_iou_top10",
    "score_iou/mean_iou_top100",
    "score_iou/pearson",
    "score_iou/gt_pair_concordance",
    "score_iou/num_matched_gt",
    "score_iou_before_nms/pearson",
    "score_iou_before_nms/num_matched_gt",
    "score_iou_before_nms/num_matched_detections",
)


def collect_results(output_dir: str, iters: Optional[int] = None) -> List[Dict[str, Any]]:
    """Every ``<dataset>/<variant>/seed<k>/result.json`` under ``output_dir`` (of ``iters``
    iterations, if given)."""
    results = []
    for path in sorted(glob.glob(os.path.join(output_dir, "*", "*", "seed*", RESULT_FILE_NAME))):
        result = load_result(path)
        if result is not None and (iters is None or result.get("iterations") == iters):
            results.append(result)
    return results


def _value(result: Dict[str, Any], key: str) -> float:
    value = result.get(key) if key == "minutes" else result.get("metrics", {}).get(key)
    return math.nan if value is None else float(value)


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
    """
    Mean and sample standard deviation (n - 1) of the finite ``values``, and how many there were;
    nan where undefined (no finite value; a single one has no standard deviation).
    """
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(finite) == 0:
        return math.nan, math.nan, 0
    return (
        float(finite.mean()),
        float(finite.std(ddof=1)) if len(finite) > 1 else math.nan,
        len(finite),
    )


def aggregate(
    results: Sequence[Dict[str, Any]], variant_order: Sequence[str] = ()
) -> Dict[str, Dict[str, Any]]:
    """
    Per dataset and variant: the seeds, and for each figure of :data:`COLUMNS` and ``EXTRA_KEYS``
    its ``{"mean", "std", "n"}`` over those seeds. Variants come in ``variant_order``, then the
    others by name.

    Returns:
        ``{dataset: {variant: {"seeds": [...], "config_file": ..., "variant_overrides": ..., key:
        {...}}}}``
    """
    order = {name: i for i, name in enumerate(variant_order)}
    groups: Dict[str, Dict[str, List[Dict[str, Any]]]] = OrderedDict()
    for result in sorted(
        results, key=lambda r: (r["dataset"], order.get(r["variant"], len(order)), r["variant"])
    ):
        groups.setdefault(result["dataset"], OrderedDict()).setdefault(
            result["variant"], []
        ).append(result)
    summary = OrderedDict()
    for dataset, variants in groups.items():
        summary[dataset] = OrderedDict()
        for variant, runs in variants.items():
            runs = sorted(runs, key=lambda r: r["seed"])
            entry = {
                "seeds": [r["seed"] for r in runs],
                "config_file": runs[-1].get("config_file"),
                "variant_overrides": runs[-1].get("variant_overrides", []),
            }
            for key in [k for _, k, _ in COLUMNS] + list(EXTRA_KEYS):
                mean, std, n = mean_std([_value(r, key) for r in runs])
                entry[key] = {"mean": mean, "std": std, "n": n}
            summary[dataset][variant] = entry
    return summary


def format_mean_std(stat: Dict[str, float], decimals: int) -> str:
    """``mean ± std``; the mean alone for one seed; ``n/a`` when undefined."""
    if not math.isfinite(stat["mean"]):
        return "n/a"
    if not math.isfinite(stat["std"]):
        return f"{stat['mean']:.{decimals}f}"
    return f"{stat['mean']:.{decimals}f} ± {stat['std']:.{decimals}f}"


def render_markdown(
    summary: Dict[str, Dict[str, Any]],
    *,
    iters: Optional[int] = None,
    machines: Sequence[Dict[str, Any]] = (),
    run_minutes: float = 0.0,
    wall_minutes: Optional[float] = None,
    command: Optional[str] = None,
) -> str:
    """The Markdown of ``study.md``: one table per dataset of ``summary`` (see :func:`aggregate`),
    then the variants' definitions, the machine and the time taken."""
    lines = ["# DSLA vs FCOS study", ""]
    if iters is not None:
        lines.append(
            f"Every run trains {iters} iterations with its config's batch and schedule, then is "
            "evaluated "
            "once on the dataset's validation split."
        )
    lines.append(
        "Figures are mean ± standard deviation over seeds (n - 1); score-IoU figures from "
        "ScoreIoUEvaluator, "
        "over detections with IoU >= 0.5, of the detections (after NMS) and, 'before NMS', of the "
        "same "
        "model's candidates with NMS disabled (up to 1000 per image): the ranking NMS acts on."
    )
    lines.append("")
    header = ["variant", "seeds", *(title for title, _, _ in COLUMNS)]
    for dataset, variants in summary.items():
        lines += [f"## {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for variant, entry in variants.items():
            cells = [f"`{variant}`", str(len(entry["seeds"]))]
            cells += [format_mean_std(entry[key], decimals) for _, key, decimals in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    definitions = OrderedDict()
    for variants in summary.values():
        for variant, entry in variants.items():
            overrides = " ".join(
                f"{k} {format_override_value(v)}" for k, v in entry["variant_overrides"]
            )
            definitions.setdefault(
                variant, f"`{entry['config_file']}`" + (f" with `{overrides}`" if overrides else "")
            )
    lines += (
        ["## Variants", ""] + [f"- `{name}`: {text}" for name, text in definitions.items()] + [""]
    )

    lines += ["## Machine and time", ""]
    for machine in machines:
        lines.append(
            f"- {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}, "
            f"device {machine['device']}"
        )
    lines.append(f"- training and evaluation, all runs above: {run_minutes:.1f} minutes")
    if wall_minutes is not None:
        lines.append(
            f"- wall time of the invocation that wrote this report: {wall_minutes:.1f} minutes"
        )
    if command:
        lines.append(f"- command: `{command}`")
    return "\n".join(lines) + "\n"


def _grouped_bars(ax, summary, key, title):
    datasets = list(summary)
    variants = list(OrderedDict.fromkeys(v for d in datasets for v in summary[d]))
    width = 0.8 / max(len(datasets), 1)
    x = np.arange(len(variants))
    for i, dataset in enumerate(datasets):
        stats = [
            summary[dataset].get(v, {}).get(key, {"mean": math.nan, "std": math.nan})
            for v in variants
        ]
        means = [s["mean"] for s in stats]
        errors = [s["std"] if math.isfinite(s["std"]) else 0.0 for s in stats]
        ax.bar(
            x + (i - (len(datasets) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            capsize=3,
            label=dataset,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(variants, rotation=30, ha="right")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if datasets:
        ax.legend(title="dataset")


def plot_study(summary: Dict[str, Dict[str, Any]], output_dir: str) -> List[str]:
    """``study_ap.png`` (box AP, AP50, AP75) and ``study_consistency.png`` (Spearman's rho and the
    fraction of ground truths whose top-scored detection is not the best-localized, of the
    detections and before NMS), one bar per variant and dataset, error bars one std."""
    paths = []
    fig, axes = plt.subplots(3, 1, figsize=(10, 13))
    for ax, (key, title) in zip(axes, (("AP", "box AP"), ("AP50", "AP50"), ("AP75", "AP75"))):
        _grouped_bars(ax, summary, f"bbox/{key}", f"{title} (mean ± std over seeds)")
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "study_ap.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    for row, (prefix, stage) in enumerate(
        (("score_iou/", "detections"), ("score_iou_before_nms/", "before NMS"))
    ):
        _grouped_bars(
            axes[row, 0],
            summary,
            prefix + "spearman",
            f"score-IoU Spearman's rho, {stage} (higher is better)",
        )
        _grouped_bars(
            axes[row, 1],
            summary,
            prefix + "gt_top_score_not_best_iou",
            f"top-scored not the best-localized, {stage} (lower is better)",
        )
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "study_consistency.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def write_report(
    output_dir: str,
    *,
    iters: Optional[int] = None,
    variant_order: Sequence[str] = (),
    wall_minutes: Optional[float] = None,
    command: Optional[str] = None,
) -> Dict[str, Any]:
    """
    Write ``study.md``, ``study.json`` and the plots from the results under ``output_dir`` (see
    :func:`collect_results`). Returns what ``study.json`` holds: ``summary``, ``runs``, ``machines``
    and times.
    """
    results = collect_results(output_dir, iters)
    summary = aggregate(results, variant_order)
    machines = {
        json.dumps(r["machine"], sort_keys=True): r["machine"] for r in results if "machine" in r
    }
    machines = list(machines.values())
    run_minutes = float(sum(r.get("minutes", 0.0) for r in results))
    report = {
        "iterations": iters,
        "summary": summary,
        "runs": results,
        "machines": machines,
        "run_minutes": run_minutes,
        "wall_minutes": wall_minutes,
        "command": command,
    }
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "study.json"), "w") as f:
        json.dump(report, f, indent=2)
    markdown = render_markdown(
        summary,
        iters=iters,
        machines=machines,
        run_minutes=run_minutes,
        wall_minutes=wall_minutes,
        command=command,
    )
    with open(os.path.join(output_dir, "study.md"), "w") as f:
        f.write(markdown)
    plot_study(summary, output_dir)
    return report
