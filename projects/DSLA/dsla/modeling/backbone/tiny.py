"""
A small from-scratch backbone for the quick start: trains on two CPU cores in minutes, with no
pretrained weights to download.
"""

import copy
from typing import Dict, List

from torch import Tensor, nn

from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .fpn import build_dsla_fpn

__all__ = ["TinyConvNet", "build_dsla_tiny_fpn_backbone"]


class TinyConvNet(Backbone):
    """
    Stages of two 3x3 conv -> norm -> ReLU, the first conv of each with stride 2; stage ``i``
    (1-based) has stride ``2**i``.
    """

    def __init__(self, in_channels: int, widths: List[int], norm: str = "BN", out_features=None):
        super().__init__()
        self._out_feature_strides, self._out_feature_channels = {}, {}
        self.stage_names, self.stages = [], []
        channels = in_channels
        for i, width in enumerate(widths, start=1):
            name = f"stage{i}"
            stage = nn.Sequential(
                Conv2d(
                    channels,
                    width,
                    3,
                    stride=2,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, width),
                ),
                nn.ReLU(inplace=True),
                Conv2d(width, width, 3, padding=1, bias=not norm, norm=get_norm(norm, width)),
                nn.ReLU(inplace=True),
            )
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            self._out_feature_strides[name] = 2**i
            self._out_feature_channels[name] = width
            channels = width
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._out_features = list(out_features or [self.stage_names[-1]])
        unknown = set(self._out_features) - set(self.stage_names)
        if unknown:
            raise ValueError(
                f"TinyConvNet has stages {self.stage_names}; unknown out_features {sorted(unknown)}"
            )
        last = max(self.stage_names.index(f) for f in self._out_features)
        # A tuple, static for scripting, as in detectron2's ResNet.
        self.stage_names = tuple(self.stage_names[: last + 1])
        self.stages = self.stages[: last + 1]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        outputs = {}
        for name, stage in zip(self.stage_names, self.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def __prepare_scriptable__(self):
        # TorchScript cannot iterate a Python list of modules (pytorch#36061): the scripted copy
        # holds the stages in a ModuleList, as detectron2's patch of its ResNet does.
        ret = copy.deepcopy(self)
        ret.stages = nn.ModuleList(ret.stages)
        for name in self.stage_names:
            delattr(ret, name)
        return ret


@BACKBONE_REGISTRY.register()
def build_dsla_tiny_fpn_backbone(cfg, input_shape: ShapeSpec):
    """:class:`TinyConvNet` (``cfg.MODEL.TINY_CONVNET``) with the DSLA FPN (P3-P7)."""
    bottom_up = TinyConvNet(
        input_shape.channels,
        cfg.MODEL.TINY_CONVNET.WIDTHS,
        norm=cfg.MODEL.TINY_CONVNET.NORM,
        out_features=cfg.MODEL.TINY_CONVNET.OUT_FEATURES,
    )
    return build_dsla_fpn(cfg, bottom_up)
