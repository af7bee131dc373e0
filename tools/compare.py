#!/usr/bin/env python
"""
``make compare``: train DSLA and detectron2's FCOS on the synthetic shapes dataset with the same
backbone, data,
schedule and seed; then report box AP and the score-IoU consistency of each, with plots. DSLA is
trained twice: with the quick-start level ranges, and with the COCO ranges that detectron2's FCOS
has built in.

    python tools/compare.py [--output output/compare] [--device cpu] [--seed 1] [KEY VALUE ...]

Trailing ``KEY VALUE`` pairs override every config (e.g. ``SOLVER.MAX_ITER 300`` for a shorter run).
Writes ``dsla/``, ``dsla-coco-ranges/`` and ``fcos/`` training outputs, ``score_vs_iou.png``,
``consistency.png``, ``summary.json`` (from ``tools/analyze_consistency.py``) and
``compare_summary.json`` to the output directory.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from dsla import engine

# name: (config, overrides). detectron2's FCOS fixes its level ranges at COCO's (0, 64) ... (512,
# inf); the quick-start DSLA scales them to its 160-pixel images. "DSLA-COCO-ranges" compares at
# FCOS's ranges.
MODELS = {
    "DSLA": ("configs/DSLA/dsla_quickstart_shapes.yaml", []),
    "DSLA-COCO-ranges": (
        "configs/DSLA/dsla_quickstart_shapes.yaml",
        [
            "MODEL.DSLA.REGRESS_RANGES",
            "[[0, 64], [64, 128], [128, 256], [256, 512], [512, 100000]]",
        ],
    ),
    "FCOS": ("configs/FCOS-Baseline/fcos_quickstart_shapes.yaml", []),
}
CONSISTENCY_KEYS = (
    "pearson",
    "spearman",
    "gt_top_score_not_best_iou",
    "mean_iou_top10",
    "mean_iou_top100",
)


def format_row(cells, widths):
    return " | ".join(str(c).ljust(w) for c, w in zip(cells, widths))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="output/compare")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    args = parser.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    results, minutes = {}, {}
    for name, (config, overrides) in MODELS.items():
        out = os.path.join(args.output, name.lower())
        start = time.perf_counter()
        engine.main(
            engine.default_argument_parser().parse_args(
                [
                    "--config-file",
                    os.path.join(repo, config),
                    "MODEL.DEVICE",
                    args.device,
                    "SEED",
                    str(args.seed),
                    "OUTPUT_DIR",
                    out,
                    *overrides,
                    *args.opts,
                ]
            )
        )
        minutes[name] = (time.perf_counter() - start) / 60
        results[name] = engine.final_metrics(out)

    analysis_args = ["--dataset", "shapes_val", "--output", args.output]
    for name, (config, _) in MODELS.items():
        weights = os.path.join(args.output, name.lower(), "model_final.pth")
        analysis_args += ["--model", name, os.path.join(repo, config), weights]
    # The per-model overrides are level ranges, which only training uses; the shared opts apply to
    # every model.
    analysis_args += ["MODEL.DEVICE", args.device, *args.opts]
    subprocess.run(
        [sys.executable, os.path.join(repo, "tools", "analyze_consistency.py"), *analysis_args],
        check=True,
    )
    with open(os.path.join(args.output, "summary.json")) as f:
        consistency = json.load(f)["models"]

    header = ["model", "AP", "AP50", "AP75", *CONSISTENCY_KEYS, "train min"]
    rows = []
    for name in MODELS:
        c = consistency[name]
        rows.append(
            [
                name,
                *(f"{results[name][k]:.1f}" for k in ("bbox/AP", "bbox/AP50", "bbox/AP75")),
                *("n/a" if c.get(k) is None else f"{c[k]:.3f}" for k in CONSISTENCY_KEYS),
                f"{minutes[name]:.1f}",
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("\n" + "\n".join(format_row(r, widths) for r in [header, *rows]))
    print(f"\nPlots: {args.output}/score_vs_iou.png, {args.output}/consistency.png")
    summary = {
        name: {
            "coco": results[name],
            "consistency": consistency[name],
            "train_minutes": minutes[name],
        }
        for name in MODELS
    }
    with open(os.path.join(args.output, "compare_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
