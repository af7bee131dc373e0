#!/usr/bin/env python
"""
Convert the DSLA authors' mmdetection 2.x checkpoints to this project's detectron2 models.

    python tools/convert_mmdet_checkpoint.py dsla_r101_dcn_2x.pth dsla_R_101_DCN_FPN_ms_2x.pth \\
        --config configs/DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml
    python train_net.py --config-file configs/DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml --eval-only \\
        MODEL.WEIGHTS dsla_R_101_DCN_FPN_ms_2x.pth

The config builds the target model (on the CPU, without loading weights); every key of the
checkpoint that finds no place in it, and every parameter of the model that the checkpoint leaves
unset, is reported. ``--strict`` makes either an error. The output, ``{"model": state_dict,
"__author__": ...}``, loads through ``MODEL.WEIGHTS``. The key mapping is in
:mod:`dsla.checkpoint.convert_mmdet`.

A checkpoint without ``backbone.`` / ``neck.`` / ``bbox_head.`` keys is an ImageNet backbone
(torchvision's ``resnet101``, mmdetection's ``resnext101_64x4d``): it is converted into the
backbone, for ``MODEL.WEIGHTS`` at the start of training; the neck and head are then reported as
missing, as they should be.

Inputs of the released models, from the authors' training logs (the configs here set them); a
converted
checkpoint gives wrong boxes under any other input normalization:

- R-50 1x (``dsla_R_50_FPN_1x.yaml``): BGR; pixel mean 102.9801, 115.9465, 122.7717; std 1, 1, 1
  (caffe style: ``STRIDE_IN_1X1: True``, ``FrozenBN``).
- R-101 DCN 2x, X-101-64x4d DCN 2x (``dsla_R_101_DCN_FPN_ms_2x.yaml``,
  ``dsla_X_101_64x4d_DCN_FPN_ms_2x.yaml``) and Swin-S 3x (``dsla_Swin_S_FPN_ms_3x.yaml``): RGB;
  pixel mean 123.675, 116.28, 103.53; std 58.395, 57.12, 57.375 (the ResNets pytorch style:
  ``STRIDE_IN_1X1: False``).

All four put points at offset 0 and compute P6 from the P5 output.
"""

import logging
import sys

from detectron2.utils.logger import setup_logger

from dsla.checkpoint import convert_mmdet_state_dict, load_state_dict_file
from dsla.checkpoint.converter import (
    build_target_model,
    converter_argument_parser,
    parse_converter_args,
    report_conversion,
    save_conversion,
)

logger = logging.getLogger("dsla")


def argument_parser():
    parser = converter_argument_parser(__doc__.split("\n\n")[0].strip(), "mmdetection checkpoint")
    parser.add_argument(
        "--strict", action="store_true", help="fail if any key is unmatched or missing"
    )
    return parser


def main(argv=None) -> int:
    args = parse_converter_args(argument_parser(), argv)
    setup_logger(name="dsla")
    cfg, model = build_target_model(args.config, args.opts)
    conversion = convert_mmdet_state_dict(
        load_state_dict_file(args.input, args.allow_pickle), model.state_dict()
    )
    report_conversion(conversion)
    logger.info(
        f"Inputs of this config: {cfg.INPUT.FORMAT}, PIXEL_MEAN {list(cfg.MODEL.PIXEL_MEAN)}, "
        f"PIXEL_STD {list(cfg.MODEL.PIXEL_STD)}."
    )
    if args.strict and (conversion.unmatched or conversion.missing):
        logger.error("--strict: not writing a partial conversion")
        return 1
    author = f"DSLA authors (mmdetection), converted from {args.input}"
    save_conversion(conversion, model, args.output, author)
    return 0


if __name__ == "__main__":
    sys.exit(main())
