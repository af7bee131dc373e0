#!/usr/bin/env python
"""
The quick start (``make demo``): train DSLA on the synthetic shapes dataset, evaluate it with
COCOEvaluator, and draw validation detections next to the ground truth, enlarged, with all pictures
on one contact sheet (``OUTPUT/vis/contact_sheet.png``, named at the end).

    python tools/quickstart.py [--output output/quickstart] [--device cpu] [KEY VALUE ...]

The dataset is generated on first use (``datasets/dsla_shapes``, or ``$DSLA_SHAPES_ROOT``). Trailing
``KEY VALUE`` pairs override ``configs/DSLA/dsla_quickstart_shapes.yaml``.
"""

import argparse
import json
import os
import time

import torch

from dsla import engine, get_dsla_cfg
from dsla.visualization import visualize_predictions

CONFIG = "configs/DSLA/dsla_quickstart_shapes.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", default="output/quickstart")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-vis", type=int, default=24, help="validation images to visualize")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = parser.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    start = time.perf_counter()
    train_args = engine.default_argument_parser().parse_args(
        [
            "--config-file",
            os.path.join(repo, CONFIG),
            "MODEL.DEVICE",
            args.device,
            "OUTPUT_DIR",
            args.output,
            *args.opts,
        ]
    )
    engine.main(train_args)
    metrics = engine.final_metrics(args.output)

    weights = os.path.join(args.output, "model_final.pth")
    cfg = get_dsla_cfg(train_args.config_file, [*train_args.opts, "MODEL.WEIGHTS", weights])
    vis_dir = os.path.join(args.output, "vis")
    _, contact_sheet = visualize_predictions(
        cfg, cfg.DATASETS.TEST[0], vis_dir, args.num_vis, threshold=0.3
    )
    minutes = (time.perf_counter() - start) / 60

    summary = (
        f"\nQuick start finished in {minutes:.1f} minutes on {args.device}.\n"
        f"  box AP on shapes_val: {metrics['bbox/AP']:.1f}  (AP50 {metrics['bbox/AP50']:.1f}, "
        f"AP75 {metrics['bbox/AP75']:.1f}, APs {metrics['bbox/APs']:.1f}, APm "
        f"{metrics['bbox/APm']:.1f}, "
        f"APl {metrics['bbox/APl']:.1f})\n"
        f"  model:          {cfg.MODEL.WEIGHTS}\n"
        f"  visualizations: {vis_dir}/ (ground truth left, detections with score >= 0.3 right)\n"
        f"  contact sheet:  {contact_sheet}\n"
    )
    print(summary)
    with open(os.path.join(args.output, "quickstart_summary.json"), "w") as f:
        json.dump(
            {"minutes": minutes, "device": args.device, "contact_sheet": contact_sheet, **metrics},
            f,
            indent=2,
        )
    return metrics


if __name__ == "__main__":
    main()
