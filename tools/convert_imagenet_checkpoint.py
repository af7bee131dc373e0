#!/usr/bin/env python
"""
Convert an ImageNet checkpoint (torchvision, timm, the official Swin release, efficientnet_pytorch)
to a file that MODEL.WEIGHTS loads into the backbone of a DSLA model, the detectron2 way of
starting from pretrained weights (as its tools/convert-torchvision-to-d2.py for ResNets).

    python tools/convert_imagenet_checkpoint.py mobilenet_v2-b0353104.pth \\
        mobilenet_v2_imagenet_dsla.pth --config configs/DSLA/dsla_mobilenet_v2_trees.yaml
    python tools/convert_imagenet_checkpoint.py efficientnet-lite0-57934424.pth lite0_dsla.pth \\
        --config configs/DSLA/dsla_quickstart_shapes.yaml \\
        MODEL.BACKBONE.NAME build_dsla_timm_fpn_backbone MODEL.TIMM.NAME tf_efficientnet_lite0
    python train_net.py --config-file configs/DSLA/dsla_mobilenet_v2_trees.yaml \\
        MODEL.WEIGHTS mobilenet_v2_imagenet_dsla.pth

The config (with trailing KEY VALUE overrides) builds the target model on the CPU with random
weights; its backbone decides the mapping (:mod:`dsla.checkpoint.convert_imagenet`): torchvision's
MobileNetV2, any timm model for MODEL.BACKBONE.NAME build_dsla_timm_fpn_backbone, Swin, and
torchvision/timm ResNets for detectron2's ResNet. The report names every backbone tensor filled and
every one left at its initialization, and every tensor of the checkpoint not used, with the reason
(the classifier, a block after the last output stage, a shape that differs). The input is read as
data (``.pth``, ``.bin``, ``.safetensors``; ``--allow-pickle`` for a trusted file that holds
more); the output, ``{"model": state_dict, "__author__": ...}``, is written with ``torch.save``:
name it ``.pth`` (detectron2 reads ``.pkl`` files as pickles).
"""

import sys

from detectron2.utils.logger import setup_logger

from dsla.checkpoint.converter import (
    convert_imagenet_checkpoint,
    converter_argument_parser,
    parse_converter_args,
)


def argument_parser():
    return converter_argument_parser(
        __doc__.split("\n\n")[0].strip(), "ImageNet checkpoint: .pth, .bin or .safetensors"
    )


def main(argv=None) -> int:
    args = parse_converter_args(argument_parser(), argv)
    setup_logger(name="dsla")
    return convert_imagenet_checkpoint(args)


if __name__ == "__main__":
    sys.exit(main())
