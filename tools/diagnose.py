#!/usr/bin/env python
"""
Why does a detector win or lose? Per ground truth, by size, aspect ratio and FPN level: its
positive points, their label mass (sum of y_s, y_d), the IoU of their decoded boxes, their score
and box loss, the IoU of its top-scored and best pre-NMS candidate and final detection, and its
recall among the candidates and the detections; for one or several checkpoints of a DSLA or
FCOS-baseline config.

    python tools/diagnose.py --config-file configs/DSLA/dsla_quickstart_shapes.yaml \\
        --weights output/quickstart/model_0000499.pth output/quickstart/model_final.pth \\
        --dataset shapes_val --num-images 64 --output output/diagnose/dsla MODEL.DEVICE cpu

Without ``--weights`` the model of MODEL.WEIGHTS (random if empty) is measured. Writes
``diagnosis.json``, ``diagnosis.md`` (two tables per size or aspect bucket, one per level, one row
per checkpoint) and, for several checkpoints, ``over_training.png`` to ``--output``. Trailing ``KEY
VALUE`` pairs override the config.

Two diagnoses side by side, with the difference, per bucket and level (the last checkpoint of each);
printed and, with ``--output``, written to ``comparison.md``:

    python tools/diagnose.py --compare output/diagnose/dsla/diagnosis.json \\
        output/diagnose/fcos/diagnosis.json --names DSLA FCOS
"""

import argparse
import logging
import os

from detectron2.utils.logger import setup_logger

from dsla.analysis import (
    DEFAULT_ASPECT_EDGES,
    DEFAULT_SIDE_EDGES,
    compare_diagnoses,
    load_diagnosis,
    run_diagnosis,
    write_diagnosis,
)
from dsla.data import add_dataset_arguments, register_datasets_from_args

logger = logging.getLogger("dsla")


def argument_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", metavar="FILE", help="required unless --compare")
    parser.add_argument(
        "--weights", nargs="*", default=[], help="checkpoints to measure, e.g. model_*.pth"
    )
    parser.add_argument(
        "--dataset",
        help="registered dataset, e.g. shapes_val or shapes_train; required unless --compare",
    )
    add_dataset_arguments(parser)
    parser.add_argument(
        "--num-images", type=int, default=64, help="the first N images of the dataset"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument(
        "--side-edges",
        type=float,
        nargs="+",
        default=list(DEFAULT_SIDE_EDGES),
        help="edges of the max-side buckets at the network input, in pixels",
    )
    parser.add_argument(
        "--aspect-edges",
        type=float,
        nargs="+",
        default=list(DEFAULT_ASPECT_EDGES),
        help="edges of the aspect-ratio buckets, max(w / h, h / w)",
    )
    parser.add_argument(
        "--output",
        help="directory for diagnosis.json, diagnosis.md and plots (with --compare: "
        "comparison.md); required unless --compare",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="instead of measuring, put two diagnosis.json side by side",
    )
    parser.add_argument(
        "--names", nargs=2, default=["A", "B"], help="names of the two compared diagnoses"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def compare(args):
    text = compare_diagnoses(*(load_diagnosis(p) for p in args.compare), names=args.names)
    print(text, end="")
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        path = os.path.join(args.output, "comparison.md")
        with open(path, "w") as f:
            f.write(text)
        logger.info(f"Wrote {path}")
    return text


def main(args):
    if args.compare:
        return compare(args)
    if not (args.config_file and args.dataset and args.output):
        argument_parser().error("--config-file, --dataset and --output are required")
    register_datasets_from_args(args)
    report = run_diagnosis(
        args.config_file,
        args.weights,
        args.dataset,
        num_images=args.num_images,
        opts=args.opts,
        side_edges=args.side_edges,
        batch_size=args.batch_size,
        aspect_edges=args.aspect_edges,
    )
    for path in write_diagnosis(report, args.output):
        logger.info(f"Wrote {path}")
    return report


if __name__ == "__main__":
    setup_logger()
    setup_logger(name="dsla")
    main(argument_parser().parse_args())
