#!/usr/bin/env python
"""
The quick start (``make demo``): train DSLA on the synthetic shapes dataset, evaluate it with
COCOEvaluator, and draw validation detections next to the ground truth, enlarged, with all pictures
on one contact sheet (``OUTPUT/vis/contact_sheet.png``, named at the end).

    python tools/quickstart.py [--output output/quickstart] [--device cpu] [KEY VALUE ...]

The dataset is generated on first use (``datasets/dsla_shapes``, or ``$DSLA_SHAPES_ROOT``).
Trailing ``KEY VALUE`` pairs override ``configs/DSLA/dsla_quickstart_shapes.yaml``.
"""

import argparse
import os
import time

import torch

from dsla.engine.demo import format_summary, train_and_show, write_summary

CONFIG = "configs/DSLA/dsla_quickstart_shapes.yaml"
THRESHOLD = 0.3


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

    # On the CPU a loader worker competes with the compute threads for the cores: the quick-start
    # iteration measured 14-15 % faster with the images mapped in the main process
    # (docs/benchmarks.md). The command line's DATALOADER.NUM_WORKERS still wins.
    cpu = ["DATALOADER.NUM_WORKERS", "0"] if torch.device(args.device).type == "cpu" else []
    start = time.perf_counter()
    result = train_and_show(
        os.path.join(repo, CONFIG),
        args.output,
        args.device,
        [*cpu, *args.opts],
        args.num_vis,
        THRESHOLD,
    )
    result["minutes"] = (time.perf_counter() - start) / 60
    print(format_summary("Quick start", result, result["cfg"].DATASETS.TEST[0], THRESHOLD))
    write_summary(os.path.join(args.output, "quickstart_summary.json"), result)
    return {k: v for k, v in result.items() if k.startswith("bbox/")}


if __name__ == "__main__":
    main()
