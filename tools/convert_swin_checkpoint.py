#!/usr/bin/env python
"""
Convert an ImageNet Swin Transformer checkpoint to a file that MODEL.WEIGHTS loads into this
project's Swin detectors, the detectron2 way of starting from pretrained backbone weights.

    python tools/convert_swin_checkpoint.py swin_small_patch4_window7_224.pth swin_small_d2.pth
    python train_net.py --config-file configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml \
        MODEL.WEIGHTS swin_small_d2.pth

Where to get the original weights (ImageNet-1k, what the authors' Swin-S model started from):

- the official Swin release, https://github.com/microsoft/Swin-Transformer (README, "ImageNet-1K and
  ImageNet-22K Pretrained Swin-V1 Models"): ``swin_small_patch4_window7_224.pth``;
- or timm's ``swin_small_patch4_window7_224`` (Hugging Face
  ``timm/swin_small_patch4_window7_224.ms_in1k``, ``model.safetensors`` or ``pytorch_model.bin``).

Both layouts are recognized by their names (:mod:`dsla.checkpoint.convert_swin`). The classifier and
the final norm are dropped and reported; the detector's per-stage norms, FPN and head start from
their initialization. The output, ``{"model": state_dict, "__author__": ...}``, is written with
``torch.save``: name it ``.pth`` (detectron2 reads ``.pkl`` files as Caffe2-era pickles).
"""

import argparse
import logging
import sys

import torch

from detectron2.utils.logger import setup_logger

from dsla.checkpoint import load_state_dict_file
from dsla.checkpoint.convert_swin import convert_swin_state_dict

logger = logging.getLogger("dsla")


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "input", metavar="IN", help="official Swin .pth, or timm .pth / .bin / .safetensors"
    )
    parser.add_argument("output", metavar="OUT.pth", help="file for MODEL.WEIGHTS")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a checkpoint that holds arbitrary Python objects",
    )
    return parser


def main(argv=None) -> int:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.output.endswith(".pkl"):
        parser.error(
            "OUT must not end in .pkl: detectron2 would read it as a pickle, not as a torch file"
        )
    setup_logger(name="dsla")
    converted, unmatched = convert_swin_state_dict(
        load_state_dict_file(args.input, args.allow_pickle)
    )
    for key, reason in unmatched:
        logger.warning(f"Not converted: {key} ({reason})")
    if not converted:
        logger.error(f"{args.input} holds no Swin trunk parameters; nothing written")
        return 1
    logger.info(f"Converted {len(converted)} tensors, left out {len(unmatched)}")
    torch.save(
        {"model": converted, "__author__": f"Swin ImageNet weights, converted from {args.input}"},
        args.output,
    )
    logger.info(f"Wrote {args.output}; use it as MODEL.WEIGHTS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
