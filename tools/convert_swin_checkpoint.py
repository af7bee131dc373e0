#!/usr/bin/env python
"""
Convert an ImageNet Swin Transformer checkpoint for MODEL.WEIGHTS: the ImageNet converter
(tools/convert_imagenet_checkpoint.py) with the Swin-S detector's config unless --config names
another.

    python tools/convert_swin_checkpoint.py swin_small_patch4_window7_224.pth swin_small_d2.pth
    python train_net.py --config-file configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml \\
        MODEL.WEIGHTS swin_small_d2.pth

Where to get the original weights (ImageNet-1k, what the authors' Swin-S model started from):

- the official Swin release, https://github.com/microsoft/Swin-Transformer (README, "ImageNet-1K and
  ImageNet-22K Pretrained Swin-V1 Models"): ``swin_small_patch4_window7_224.pth``;
- or timm's ``swin_small_patch4_window7_224`` (Hugging Face
  ``timm/swin_small_patch4_window7_224.ms_in1k``, ``model.safetensors`` or ``pytorch_model.bin``).

Both layouts are recognized by their names (:mod:`dsla.checkpoint.convert_swin`). The classifier and
the final norm are dropped and reported; the detector's per-stage norms, FPN and head start from
their initialization.
"""

import sys

from detectron2.utils.logger import setup_logger

from dsla.checkpoint.converter import (
    convert_imagenet_checkpoint,
    converter_argument_parser,
    parse_converter_args,
)
from dsla.model_zoo import get_config_file


def argument_parser():
    return converter_argument_parser(
        __doc__.split("\n\n")[0].strip(),
        "official Swin .pth, or timm .pth / .bin / .safetensors",
        default_config=get_config_file("DSLA/dsla_Swin_S_FPN_ms_3x.yaml"),
    )


def main(argv=None) -> int:
    args = parse_converter_args(argument_parser(), argv)
    setup_logger(name="dsla")
    return convert_imagenet_checkpoint(args)


if __name__ == "__main__":
    sys.exit(main())
