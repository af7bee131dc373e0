#!/usr/bin/env python
"""
Export a DSLA model to TorchScript or ONNX by tracing, as detectron2's
``tools/deploy/export_model.py --export-method tracing`` does, and check the exported model against
the eager one on the sample image.

    python tools/export_model.py --config-file configs/DSLA/dsla_quickstart_shapes.yaml \
        --format onnx --output output/export MODEL.WEIGHTS output/quickstart/model_final.pth
    python tools/export_model.py --config-file configs/DSLA/dsla_quickstart_shapes.py \
        --format torchscript --output output/export \
        train.init_checkpoint=output/quickstart/model_final.pth

Writes ``OUTPUT/model.ts`` or ``OUTPUT/model.onnx``. The exported model takes one float image [3, H,
W] of 0-255 pixels in the config's ``INPUT.FORMAT``, at any height and width, and returns
``pred_boxes``, ``pred_classes``, ``scores`` and ``image_size`` (see ``dsla.export``). Without
``--sample-image`` a synthetic image is used. Exits with status 1 when the exported model's
detections differ from the eager model's.
"""

import argparse
import logging
import sys

from detectron2.config import LazyConfig
from detectron2.utils.logger import setup_logger

from dsla import get_dsla_cfg
from dsla.export import FORMATS, export_and_check

logger = logging.getLogger("dsla.export")


def get_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="path to a config file"
    )
    parser.add_argument(
        "--format", choices=sorted(FORMATS), default="torchscript", help="output format"
    )
    parser.add_argument("--output", required=True, help="output directory for the exported model")
    parser.add_argument(
        "--sample-image", help="image to trace with and to check on (default: a synthetic one)"
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE pairs (YAML) or key=value (LazyConfig)",
    )
    return parser


def main(argv=None):
    args = get_parser().parse_args(argv)
    setup_logger(name="dsla")
    logger.info(f"Command line arguments: {args}")
    if args.config_file.endswith(".py"):
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    else:
        cfg = get_dsla_cfg(args.config_file, args.opts, freeze=True)
    path, mismatch = export_and_check(cfg, args.format, args.output, args.sample_image)
    if mismatch:
        logger.error(f"{path} does NOT match the eager model on the sample image: {mismatch}")
        return 1
    logger.info(f"{path} matches the eager model on the sample image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
