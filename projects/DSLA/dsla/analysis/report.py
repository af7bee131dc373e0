"""
The diagnosis of one config over its checkpoints (see :mod:`dsla.analysis.diagnose`): load the data
as training sees it, measure each checkpoint, and write ``diagnosis.json``, ``diagnosis.md`` and,
for several checkpoints, ``over_training.png``; and the comparison of two diagnoses (DSLA and
FCOS), bucket by bucket.
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
from .diagnose import COCO_AREA_BUCKETS, DEFAULT_ASPECT_EDGES, diagnose_model

__all__ = [
    "DEFAULT_ASPECT_EDGES",
    "DEFAULT_SIDE_EDGES",
    "load_diagnosis_inputs",
    "run_diagnosis",
    "format_diagnosis",
    "write_diagnosis",
    "load_diagnosis",
    "compare_diagnoses",
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
    aspect_edges: Sequence[float] = DEFAULT_ASPECT_EDGES,
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
                **diagnose_model(model, inputs, side_edges, batch_size, aspect_edges),
            }
        )
    return {
        "config_file": config_file,
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "dataset": dataset_name,
        "num_images": len(inputs),
        "side_edges": list(side_edges),
        "aspect_edges": list(aspect_edges),
        "opts": list(opts),
        "checkpoints": rows,
    }


def _fmt(value, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
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


# The second table of each bucket and the box-loss columns of each level: (key, column, percent).
LOCALIZATION_COLUMNS = (
    ("top_candidate_iou", "top cand IoU", False),
    ("best_candidate_iou", "best cand IoU", False),
    ("top_candidate_iou50_share", "top cand ≥0.5", True),
    ("top_candidate_iou75_share", "top cand ≥0.75", True),
    ("top_detection_iou", "top det IoU", False),
    ("best_detection_iou", "best det IoU", False),
    ("top_detection_iou50_share", "top det ≥0.5", True),
    ("top_detection_iou75_share", "top det ≥0.75", True),
)
BOX_LOSS_COLUMNS = (
    ("box_loss_per_positive", "box loss / pos", False),
    ("weighted_box_loss_per_positive", "weighted loss / pos", False),
    ("giou_loss_per_positive", "GIoU loss / pos", False),
    ("box_weight_share", "box weight", True),
)


def _bucket_title(bucket: str) -> str:
    area_bounds = {name: (lo, hi) for name, lo, hi in COCO_AREA_BUCKETS}
    if bucket in area_bounds:
        lo, hi = area_bounds[bucket]
        return f"{bucket} (COCO: original area {math.sqrt(lo):g}² to {math.sqrt(hi):g}²)"
    if bucket.startswith("side"):
        return f"{bucket} (max side at the network input, px)"
    if bucket.startswith("aspect"):
        return f"{bucket} (max(w / h, h / w))"
    return bucket


def format_diagnosis(report: Dict) -> str:
    """A Markdown text of ``report`` (from :func:`run_diagnosis`): two tables per bucket (positives
    and labels; localization and box loss) and one per level, a row per checkpoint."""
    rows = report["checkpoints"]
    levels = list(rows[0]["levels"])
    per_level = "/".join(levels)
    lines = [
        f"# Diagnosis of {report['meta_architecture']} ({report['config_file']})",
        "",
        f"{report['num_images']} images of `{report['dataset']}`, {rows[0]['num_gts']} ground "
        "truths. Per ground truth, averaged over the bucket: positives (`pos`), label mass `Σy_s`, "
        "`Σy_d` and the largest label over its positives (0 without positives); IoU of its "
        "positives' decoded boxes with it and their score for its class (over ground truths with "
        "positives); `r`: Pearson correlation of score and IoU over the bucket's positive points; "
        "recall: a box of its class with IoU >= 0.5 among the pre-NMS candidates / the final "
        "detections. FCOS: its own matching, classification target 1 (y_s = y_d = 1), score "
        "sqrt(cls * centerness).",
        "",
        "Localization: each candidate (detection) belongs to the ground truth of its class it "
        "overlaps most; per ground truth the IoU of its top-scored candidate (detection) and the "
        "best IoU among them, averaged over the ground truths that have one; `≥0.5`, `≥0.75`: the "
        "share of all the bucket's ground truths whose top-scored one reaches that IoU (what AP50 "
        "and AP75 count). Box loss per positive point of the bucket: the model's own (DSLA: "
        "`MODEL.DSLA.BOX_LOSS_TYPE`; FCOS: 1 - GIoU), unweighted and weighted as training "
        "weights it (DSLA: by y_s, or 1 with `MODEL.DSLA.BOX_LOSS_WEIGHTING uniform`; FCOS: 1), "
        "and 1 - GIoU for every model; `box weight`: the bucket's share of the box loss's "
        "weight, the weights over its positives / over all (FCOS, uniform: its share of the "
        "positives).",
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
    columns = LOCALIZATION_COLUMNS + BOX_LOSS_COLUMNS
    for bucket in rows[0]["buckets"]:
        table, second = [], []
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
            second.append([_checkpoint_name(row), *(_fmt(b[k], p) for k, _, p in columns)])
        lines += ["", f"## {_bucket_title(bucket)}", "", *_table(header, table)]
        lines += ["", "Localization and box loss:", ""]
        lines += _table(["iter", *(name for _, name, _ in columns)], second)

    header = [
        "iter",
        "positives / image",
        "GTs with positives",
        "mean y_s",
        "mean y_d",
        "mean IoU",
        "mean score",
        "r",
        *(name for _, name, _ in BOX_LOSS_COLUMNS),
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
                    *(_fmt(s[k], p) for k, _, p in BOX_LOSS_COLUMNS),
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
        ("top_candidate_iou", "IoU of the top-scored candidate"),
        ("top_candidate_iou75_share", "share with top-scored candidate IoU >= 0.75"),
        ("box_loss_per_positive", "box loss per positive"),
    ]
    # A Figure without pyplot: no GUI backend is chosen or changed for the caller.
    fig = Figure(figsize=(13, 10))
    axes = fig.subplots(3, 3)
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


def load_diagnosis(path: str) -> Dict:
    """The report of :func:`run_diagnosis` as :func:`write_diagnosis` wrote it (nan as None)."""
    with open(path) as f:
        return json.load(f)


# The figures :func:`compare_diagnoses` puts side by side: (key, name, percent).
COMPARED_BUCKET_FIGURES = (
    ("num_gts", "GTs", False),
    ("zero_pos_share", "no positive", True),
    ("pos_per_gt", "positives", False),
    ("sum_y_s", "Σy_s", False),
    ("sum_y_d", "Σy_d", False),
    ("iou_mean", "IoU of positives", False),
    ("score_mean", "score of positives", False),
    ("pearson_score_iou", "r (score, IoU) of positives", False),
    ("recall_candidates", "recall, candidates", True),
    ("recall_detections", "recall, detections", True),
    *LOCALIZATION_COLUMNS,
    *BOX_LOSS_COLUMNS,
)
COMPARED_LEVEL_FIGURES = (
    ("positives_per_image", "positives / image", False),
    ("gts_with_positives_share", "GTs with positives", True),
    ("mean_y_s", "mean y_s", False),
    ("mean_iou", "mean IoU", False),
    ("mean_score", "mean score", False),
    *BOX_LOSS_COLUMNS,
)


def _difference(a, b, percent: bool) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return "-"
    # Shares differ by percentage points; an integer count by an integer.
    if percent:
        return f"{100 * (a - b):+.0f} pp"
    return f"{a - b:+d}" if isinstance(a, int) and isinstance(b, int) else f"{a - b:+.2f}"


def _compare_table(a: Dict, b: Dict, names: Sequence[str], figures) -> List[str]:
    rows = [
        [
            name,
            _fmt(a[key], percent),
            _fmt(b[key], percent),
            _difference(a[key], b[key], percent),
        ]
        for key, name, percent in figures
        if key in a and key in b
    ]
    return _table(["figure", names[0], names[1], f"{names[0]} − {names[1]}"], rows)


def compare_diagnoses(
    report_a: Dict, report_b: Dict, names: Sequence[str] = ("A", "B"), checkpoint: int = -1
) -> str:
    """
    A Markdown text that puts two diagnoses side by side (e.g. DSLA and FCOS on the same images),
    with the difference, per bucket and per level, so that a gap in AP can be located by size and
    aspect ratio. Each report (from :func:`run_diagnosis` or :func:`load_diagnosis`) contributes its
    checkpoint of index ``checkpoint`` (the last by default); buckets and levels missing from one
    are named, not compared.
    """
    rows = [report_a["checkpoints"][checkpoint], report_b["checkpoints"][checkpoint]]
    lines = [f"# {names[0]} vs {names[1]}", ""]
    for name, report, row in zip(names, (report_a, report_b), rows):
        lines.append(
            f"- {name}: {report['meta_architecture']} ({report['config_file']}), checkpoint "
            f"{_checkpoint_name(row)}, {report['num_images']} images of `{report['dataset']}`, "
            f"{row['num_gts']} ground truths"
        )
    for section, figures, title in (
        ("buckets", COMPARED_BUCKET_FIGURES, _bucket_title),
        ("levels", COMPARED_LEVEL_FIGURES, lambda level: f"level {level}"),
    ):
        a, b = rows[0][section], rows[1][section]
        missing = [k for k in a if k not in b] + [k for k in b if k not in a]
        if missing:
            lines += ["", f"Not in both diagnoses, not compared: {', '.join(missing)}."]
        for key in (k for k in a if k in b):
            lines += ["", f"## {title(key)}", "", *_compare_table(a[key], b[key], names, figures)]
    return "\n".join(lines) + "\n"
