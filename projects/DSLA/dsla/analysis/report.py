"""
The diagnosis of one config over its checkpoints (see :mod:`dsla.analysis.diagnose`): load the data
as training sees it, measure each checkpoint, and write ``diagnosis.json``, ``diagnosis.md`` and,
for several checkpoints, ``over_training.png``.
"""

import json
import logging
import math
import os
import re
from typing import Dict, List, Sequence

from matplotlib.figure import Figure

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import build_augmentation
from detectron2.modeling import build_model

from ..checkpoint import AtomicCheckpointer
from ..config import get_dsla_cfg
from ..data import DSLADatasetMapper
from .diagnose import COCO_AREA_BUCKETS, diagnose_model

__all__ = [
    "DEFAULT_SIDE_EDGES",
    "load_diagnosis_inputs",
    "run_diagnosis",
    "format_diagnosis",
    "write_diagnosis",
]

logger = logging.getLogger(__name__)

# Max-side buckets at the network input; with the quick-start level ranges (COCO's / 4) a centered
# point of a box of max side S has max distance S / 2, so these edges are the level boundaries 16,
# 32, 64 and 128.
DEFAULT_SIDE_EDGES = (32.0, 64.0, 128.0, 256.0)


def load_diagnosis_inputs(cfg, dataset_name: str, num_images: int) -> List[dict]:
    """
    The first ``num_images`` images of a registered dataset, mapped as for training
    (``DSLADatasetMapper`` with ``is_train=True``: the ground-truth ``instances`` are kept, crowd
    boxes dropped) but with the deterministic test-time resize instead of the random training
    augmentations, so that labels and detections refer to the same input. For the single-scale
    quick-start configs this is exactly the training input without the flip.
    """
    mapper = DSLADatasetMapper(
        cfg, is_train=True, augmentations=build_augmentation(cfg, is_train=False)
    )
    return [mapper(d) for d in DatasetCatalog.get(dataset_name)[:num_images]]


def _checkpoint_iteration(path: str, checkpoint: Dict):
    if "iteration" in checkpoint:
        return int(checkpoint["iteration"])
    match = re.search(r"(\d+)\.pth$", path)
    return int(match.group(1)) if match else None


def run_diagnosis(
    config_file: str,
    weights: Sequence[str],
    dataset_name: str,
    num_images: int = 64,
    opts: Sequence[str] = (),
    side_edges: Sequence[float] = DEFAULT_SIDE_EDGES,
    batch_size: int = 4,
) -> Dict:
    """
    Diagnose the model of ``config_file`` at each checkpoint of ``weights`` (none:
    ``MODEL.WEIGHTS``, which may be empty for a randomly initialized model) on ``num_images`` images
    of ``dataset_name``.

    Returns:
        dict with the run's settings and ``checkpoints``: one summary (:func:`summarize`) per
        checkpoint, with its ``weights`` and training ``iteration`` (None when unknown).
    """
    cfg = get_dsla_cfg(config_file, opts, freeze=True)
    inputs = load_diagnosis_inputs(cfg, dataset_name, num_images)
    model = build_model(cfg)
    model.eval()
    rows = []
    for path in list(weights) or [cfg.MODEL.WEIGHTS]:
        checkpointer = AtomicCheckpointer(model, allow_pickle=cfg.MODEL.WEIGHTS_ALLOW_PICKLE)
        checkpoint = checkpointer.load(path) if path else {}
        iteration = _checkpoint_iteration(path, checkpoint) if path else None
        logger.info(
            f"Diagnosing {path or 'the initialized model'} on {len(inputs)} images of "
            f"{dataset_name}"
        )
        rows.append(
            {
                "weights": path,
                "iteration": iteration,
                **diagnose_model(model, inputs, side_edges, batch_size),
            }
        )
    return {
        "config_file": config_file,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "dataset": dataset_name,
        "num_images": len(inputs),
        "side_edges": list(side_edges),
        "opts": list(opts),
        "checkpoints": rows,
    }


def _fmt(value, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.0f}%" if percent else f"{value:.2f}"


def _checkpoint_name(row: Dict) -> str:
    if row["iteration"] is not None:
        return str(row["iteration"])
    return os.path.basename(row["weights"]) if row["weights"] else "init"


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def format_diagnosis(report: Dict) -> str:
    """A Markdown text of ``report`` (from :func:`run_diagnosis`): a table per bucket and per level,
    a row per checkpoint."""
    rows = report["checkpoints"]
    levels = list(rows[0]["levels"])
    per_level = "/".join(levels)
    area_bounds = {name: (lo, hi) for name, lo, hi in COCO_AREA_BUCKETS}
    lines = [
        f"# Diagnosis of {report['meta_architecture']} ({report['config_file']})",
        "",
        f"{report['num_images']} images of `{report['dataset']}`, {rows[0]['num_gts']} ground "
        "truths. Per ground "
        "truth, averaged over the bucket: positives (`pos`), label mass `Σy_s`, `Σy_d` and the "
        "largest label over its "
        "positives (0 without positives); IoU of its positives' decoded boxes with it and their "
        "score for its class "
        "(over ground truths with positives); `r`: Pearson correlation of score and IoU over the "
        "bucket's positive "
        "points; recall: a box of its class with IoU >= 0.5 among the pre-NMS candidates / the "
        "final detections. "
        "FCOS: its own matching, classification target 1 (y_s = y_d = 1), score sqrt(cls * "
        "centerness).",
    ]
    header = [
        "iter",
        "GTs",
        "no pos",
        f"pos ({per_level})",
        f"no pos ({per_level})",
        "Σy_s",
        "Σy_d",
        "max y_s",
        "max y_d",
        "IoU mean",
        "IoU max",
        "score mean",
        "score max",
        "r",
        "recall cand",
        "recall final",
    ]
    for bucket in rows[0]["buckets"]:
        title = bucket
        if bucket in area_bounds:
            lo, hi = area_bounds[bucket]
            title += f" (COCO: original area {math.sqrt(lo):g}² to {math.sqrt(hi):g}²)"
        elif bucket.startswith("side"):
            title += " (max side at the network input, px)"
        table = []
        for row in rows:
            b = row["buckets"][bucket]
            table.append(
                [
                    _checkpoint_name(row),
                    str(b["num_gts"]),
                    _fmt(b["zero_pos_share"], percent=True),
                    _fmt(b["pos_per_gt"])
                    + " ("
                    + "/".join(_fmt(v) for v in b["pos_per_gt_per_level"])
                    + ")",
                    "/".join(_fmt(v, percent=True) for v in b["zero_pos_share_per_level"]),
                    *(
                        _fmt(b[k])
                        for k in ("sum_y_s", "sum_y_d", "max_y_s", "max_y_d", "iou_mean", "iou_max")
                    ),
                    *(_fmt(b[k]) for k in ("score_mean", "score_max", "pearson_score_iou")),
                    _fmt(b["recall_candidates"], percent=True),
                    _fmt(b["recall_detections"], percent=True),
                ]
            )
        lines += ["", f"## {title}", "", *_table(header, table)]

    header = [
        "iter",
        "positives / image",
        "GTs with positives",
        "mean y_s",
        "mean y_d",
        "mean IoU",
        "mean score",
        "r",
    ]
    for level in levels:
        table = []
        for row in rows:
            s = row["levels"][level]
            table.append(
                [
                    _checkpoint_name(row),
                    _fmt(s["positives_per_image"]),
                    _fmt(s["gts_with_positives_share"], percent=True),
                    *(
                        _fmt(s[k])
                        for k in (
                            "mean_y_s",
                            "mean_y_d",
                            "mean_iou",
                            "mean_score",
                            "pearson_score_iou",
                        )
                    ),
                ]
            )
        lines += ["", f"## level {level}", "", *_table(header, table)]
    return "\n".join(lines) + "\n"


def plot_over_training(report: Dict, path: str):
    """Curves over the checkpoints' iterations of the main per-bucket figures, one line per COCO
    bucket."""
    rows = [r for r in report["checkpoints"] if r["iteration"] is not None]
    rows.sort(key=lambda r: r["iteration"])
    panels = [
        ("sum_y_d", "label mass Σy_d per GT"),
        ("iou_mean", "mean IoU of positives"),
        ("score_mean", "mean score of positives"),
        ("zero_pos_share", "share of GTs without positives"),
        ("recall_candidates", "recall, pre-NMS candidates"),
        ("recall_detections", "recall, final detections"),
    ]
    # A Figure without pyplot: no GUI backend is chosen or changed for the caller.
    fig = Figure(figsize=(13, 7))
    axes = fig.subplots(2, 3)
    iterations = [r["iteration"] for r in rows]
    for ax, (key, title) in zip(axes.flat, panels):
        for bucket in ("all", *(name for name, _, _ in COCO_AREA_BUCKETS)):
            values = [r["buckets"][bucket][key] for r in rows]
            ax.plot(
                iterations, [math.nan if v is None else v for v in values], marker="o", label=bucket
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(
        f"{report['meta_architecture']}: {report['config_file']} on {report['dataset']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_diagnosis(report: Dict, output_dir: str) -> List[str]:
    """
    Write ``diagnosis.json`` (nan as null), ``diagnosis.md`` and, with at least two checkpoints of
    known iteration, ``over_training.png`` to ``output_dir``; return their paths.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, "diagnosis.json"), os.path.join(output_dir, "diagnosis.md")]
    with open(paths[0], "w") as f:
        json.dump(_json_safe(report), f, indent=2)
    with open(paths[1], "w") as f:
        f.write(format_diagnosis(report))
    if sum(r["iteration"] is not None for r in report["checkpoints"]) >= 2:
        paths.append(os.path.join(output_dir, "over_training.png"))
        plot_over_training(report, paths[-1])
    return paths
