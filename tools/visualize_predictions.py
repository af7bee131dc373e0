#!/usr/bin/env python
"""
Draw a model's detections next to the ground truth for images of a registered dataset, and all of
them on one contact sheet.

    python tools/visualize_predictions.py --config-file configs/DSLA/dsla_quickstart_shapes.yaml \
        --dataset shapes_val --output output/quickstart/vis --num-images 24 \
        MODEL.WEIGHTS output/quickstart/model_final.pth

Each picture shows the ground truth on the left and the detections scoring at least
``--confidence-threshold`` on the right, drawn with detectron2's Visualizer on the image enlarged to
a short side of at least 480 pixels; ``OUTPUT/contact_sheet.png`` gathers them (see
:mod:`dsla.visualization`).
"""

import argparse
import logging

from detectron2.utils.logger import setup_logger

from dsla import get_dsla_cfg
from dsla.data import add_dataset_arguments, register_datasets_from_args
from dsla.engine import add_require_gpu_argument
from dsla.visualization import visualize_predictions

logger = logging.getLogger("dsla.visualize")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--dataset", help="registered dataset (default: first of DATASETS.TEST)")
    parser.add_argument(
        "--output", required=True, help="directory for the pictures and the contact sheet"
    )
    parser.add_argument(
        "--num-images", type=int, default=24, help="how many images, from the start of the dataset"
    )
    parser.add_argument("--confidence-threshold", type=float, default=0.3)
    add_dataset_arguments(parser)
    add_require_gpu_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    register_datasets_from_args(args)
    cfg = get_dsla_cfg(args.config_file, args.opts, freeze=True, require_gpu=args.require_gpu)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    paths, sheet = visualize_predictions(
        cfg, dataset, args.output, args.num_images, args.confidence_threshold
    )
    logger.info(
        f"Wrote {len(paths)} pictures (ground truth left, detections right) to {args.output}"
    )
    logger.info(f"Contact sheet: {sheet}")
    return paths, sheet


if __name__ == "__main__":
    main()
