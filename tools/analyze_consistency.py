#!/usr/bin/env python
"""
Does the score track the IoU? Score-vs-IoU consistency of trained detectors, side by side (spec
section 7).

    python tools/analyze_consistency.py --dataset coco_2017_val --output output/consistency \\
        --model DSLA configs/DSLA/dsla_R_50_FPN_1x.yaml dsla.pth \\
        --model FCOS configs/FCOS-Baseline/fcos_R_50_FPN_1x.yaml fcos.pth
    # Plots again from the pairs saved by a previous run, without inference:
    python tools/analyze_consistency.py --output output/consistency \\
        --pairs DSLA output/consistency/DSLA/score_iou_pairs.npz \\
        --pairs FCOS output/consistency/FCOS/score_iou_pairs.npz

Each model runs on the dataset with ``ScoreIoUEvaluator``, which saves its (score, IoU, class) pairs
to
``OUTPUT/NAME/score_iou_pairs.npz``. Written to ``--output``:

- ``score_vs_iou.png``: one density plot (hexbin, log counts) of score against IoU per model, side
  by side;
- ``consistency.png``: bar charts of the Pearson and Spearman correlations (detections with IoU >=
  0.5), the fraction of ground truths whose top-scored detection is not the best-localized one, and
  the top-k mean IoU;
- ``summary.json``: those figures per model (null where undefined).

Trailing ``KEY VALUE`` pairs override every model's config, e.g. ``MODEL.DEVICE cpu``. The models'
outputs are after NMS; to look at the detections NMS would remove, add ``MODEL.DSLA.NMS_THRESH_TEST
1.0`` (DSLA) or ``MODEL.FCOS.NMS_THRESH_TEST 1.0`` (FCOS baseline) and a larger
``TEST.DETECTIONS_PER_IMAGE``.
"""

import argparse
import json
import logging
import math
import os

import matplotlib
import numpy as np

from detectron2.data import build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from dsla import get_dsla_cfg
from dsla.checkpoint import AtomicCheckpointer
from dsla.data import add_dataset_arguments, register_datasets_from_args
from dsla.evaluation import ScoreIoUEvaluator, load_score_iou_pairs, summarize_score_iou
from dsla.evaluation.score_iou import PAIRS_FILE_NAME

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger("dsla")


def run_model(config_file, weights, dataset_name, output_dir, opts, *, iou_threshold, topk):
    """Run one model on the dataset with :class:`ScoreIoUEvaluator`; return the path of its saved
    pairs."""
    cfg = get_dsla_cfg(config_file, [*opts, "MODEL.WEIGHTS", weights], freeze=True)

    model = build_model(cfg)
    AtomicCheckpointer(model, allow_pickle=cfg.MODEL.WEIGHTS_ALLOW_PICKLE).load(cfg.MODEL.WEIGHTS)
    evaluator = ScoreIoUEvaluator(dataset_name, output_dir, iou_threshold=iou_threshold, topk=topk)
    inference_on_dataset(model, build_detection_test_loader(cfg, dataset_name), evaluator)
    return os.path.join(output_dir, PAIRS_FILE_NAME)


def plot_score_vs_iou(pairs_by_model, summaries, iou_threshold, path):
    """One hexbin density of score (y) against IoU with the matched ground truth (x) per model."""
    num_models = len(pairs_by_model)
    fig, axes = plt.subplots(1, num_models, figsize=(4.5 * num_models, 4.2), squeeze=False)
    for ax, (name, pairs) in zip(axes[0], pairs_by_model.items()):
        if len(pairs["scores"]):
            density = ax.hexbin(
                pairs["ious"],
                pairs["scores"],
                gridsize=40,
                extent=(0, 1, 0, 1),
                bins="log",
                mincnt=1,
                cmap="viridis",
            )
            fig.colorbar(density, ax=ax, label="detections (log)")
        ax.axvline(iou_threshold, color="0.5", linestyle="--", linewidth=1)
        summary = summaries[name]
        ax.set_title(
            f"{name}\npearson {summary['pearson']:.3f}, spearman {summary['spearman']:.3f}",
            fontsize=10,
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("IoU with the matched ground truth")
        ax.set_ylabel("score")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_consistency(summaries, iou_threshold, topk, path):
    """Grouped bars per model: the correlations, and the ranking figures."""
    panels = [
        (
            f"score-IoU correlation (IoU >= {iou_threshold:g})",
            {"pearson": "Pearson", "spearman": "Spearman"},
        ),
        (
            "ranking",
            {
                "gt_top_score_not_best_iou": "GT: top score\nnot best IoU\n(lower is better)",
                "gt_pair_concordance": "GT: pairs ranked\nby IoU\n(1/2 = chance)",
                **{f"mean_iou_top{k}": f"mean IoU\nof top {k}" for k in topk},
            },
        ),
    ]
    names = list(summaries)
    width = 0.8 / len(names)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 + 2.5 * len(names), 4), squeeze=False)
    for ax, (title, labels) in zip(axes[0], panels):
        keys = list(labels)
        x = np.arange(len(keys))
        for i, name in enumerate(names):
            values = [summaries[name][k] for k in keys]
            bars = ax.bar(
                x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(values), width, label=name
            )
            ax.bar_label(
                bars, labels=["n/a" if math.isnan(v) else f"{v:.3f}" for v in values], fontsize=8
            )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(x, list(labels.values()))
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args):
    if not args.model and not args.pairs:
        raise SystemExit("give at least one --model or --pairs")
    if args.model and not args.dataset:
        raise SystemExit("--model needs --dataset")
    register_datasets_from_args(args)
    os.makedirs(args.output, exist_ok=True)

    pair_files = {}
    for name, config_file, weights in args.model:
        pair_files[name] = run_model(
            config_file,
            weights,
            args.dataset,
            os.path.join(args.output, name),
            args.opts,
            iou_threshold=args.iou_threshold,
            topk=args.topk,
        )
    pair_files.update(dict(args.pairs))

    pairs_by_model = {name: load_score_iou_pairs(path) for name, path in pair_files.items()}
    summaries = {
        name: summarize_score_iou(
            pairs["scores"],
            pairs["ious"],
            pairs["image_index"],
            pairs["gt_index"],
            iou_threshold=args.iou_threshold,
            topk=args.topk,
        )
        for name, pairs in pairs_by_model.items()
    }
    plot_score_vs_iou(
        pairs_by_model, summaries, args.iou_threshold, os.path.join(args.output, "score_vs_iou.png")
    )
    plot_consistency(
        summaries, args.iou_threshold, args.topk, os.path.join(args.output, "consistency.png")
    )

    summary_json = {
        "dataset": args.dataset,
        "iou_threshold": args.iou_threshold,
        "pairs": pair_files,
        "models": {
            name: {k: None if math.isnan(v) else v for k, v in summary.items()}
            for name, summary in summaries.items()
        },
    }
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary_json, f, indent=2)
    for name, summary in summaries.items():
        logger.info(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    logger.info(f"Wrote score_vs_iou.png, consistency.png and summary.json to {args.output}")
    return summaries


def argument_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "CONFIG", "WEIGHTS"),
        help="a trained model to run on --dataset (repeatable)",
    )
    parser.add_argument(
        "--pairs",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "FILE"),
        help="the score_iou_pairs.npz of an earlier run, instead of running a model (repeatable)",
    )
    parser.add_argument("--dataset", help="registered dataset to run the models on")
    add_dataset_arguments(parser)
    parser.add_argument(
        "--output", required=True, help="directory for the plots, summary.json and pairs"
    )
    parser.add_argument(
        "--iou-threshold", type=float, default=0.5, help="IoU from which a detection is matched"
    )
    parser.add_argument(
        "--topk",
        type=lambda s: [int(k) for k in s.split(",")],
        default=[10, 100],
        help="comma-separated k of the per-image top-k mean IoU (default: 10,100)",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every model"
    )
    return parser


if __name__ == "__main__":
    setup_logger()
    setup_logger(name="dsla")
    main(argument_parser().parse_args())
