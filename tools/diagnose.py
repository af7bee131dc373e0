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
"""

import argparse
import logging

from detectron2.utils.logger import setup_logger

from dsla.analysis import DEFAULT_ASPECT_EDGES, DEFAULT_SIDE_EDGES, run_diagnosis, write_diagnosis
from dsla.data import add_dataset_arguments, register_datasets_from_args

logger = logging.getLogger("dsla")


def argument_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--weights", nargs="*", default=[], help="checkpoints to measure, e.g. model_*.pth"
    )
    parser.add_argument(
        "--dataset", required=True, help="registered dataset, e.g. shapes_val or shapes_train"
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
        "--output", required=True, help="directory for diagnosis.json, diagnosis.md and plots"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def main(args):
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
