import math
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm

from ..layers import ModulatedDeformConv2d

__all__ = ["DSLAHead"]


class Scale(nn.Module):
    """A learnable scalar that multiplies its input (one per FPN level)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self, x):
        return x * self.scale


class DSLAHead(nn.Module):
    """
    The DSLA head (FCOS without the centerness branch): a classification tower and a regression
    tower shared over levels, each ``num_convs x (conv3x3 -> norm -> ReLU)``, then a conv to
    ``num_classes`` logits and a conv to 4 distances (l, t, r, b), multiplied by a learnable scalar
    per level.

    Distances are returned in input-image pixels: ``exp(scale * raw)``, or with
    ``norm_reg_targets``, ``relu(scale * raw) * stride``. Both outputs are float32 also under
    autocast (the towers then run in bfloat16 or float16).
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_convs: int = 4,
        norm: str = "GN",
        conv_bias: bool = False,
        dcn_on_last_conv: bool = False,
        norm_reg_targets: bool = False,
        prior_prob: float = 0.01,
    ):
        """
        Args:
            input_shape: shapes of the input features, one per level (all with the same channels).
            num_classes: number of foreground classes.
            num_convs: convs per tower.
            norm: normalization of the tower convs (detectron2's ``get_norm`` names; "" for none).
            conv_bias: whether the tower convs have a bias.
            dcn_on_last_conv: make the last conv of each tower a modulated deformable conv (DCNv2).
            norm_reg_targets: distances as ``relu(scale * raw)`` in units of the level's stride.
            prior_prob: initial foreground probability of the classification logits.
        """
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(
                f"DSLAHead needs the same channels on every level; got {sorted(channels)}"
            )
        in_channels = channels.pop()
        self.strides = [s.stride for s in input_shape]
        self.num_classes = num_classes
        self.norm_reg_targets = norm_reg_targets

        self.cls_subnet = self._tower(in_channels, num_convs, norm, conv_bias, dcn_on_last_conv)
        self.bbox_subnet = self._tower(in_channels, num_convs, norm, conv_bias, dcn_on_last_conv)
        self.cls_score = nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, kernel_size=3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])

        for name, module in self.named_modules():
            # The offset convs of deformable layers keep their zero init: those layers start as
            # plain convs.
            if isinstance(module, (nn.Conv2d, ModulatedDeformConv2d)) and not name.endswith(
                "conv_offset"
            ):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))

    @staticmethod
    def _tower(channels, num_convs, norm, conv_bias, dcn_on_last_conv):
        layers = []
        for i in range(num_convs):
            if dcn_on_last_conv and i == num_convs - 1:
                conv = ModulatedDeformConv2d(channels, channels, 3, padding=1, bias=conv_bias)
            else:
                conv = Conv2d(channels, channels, kernel_size=3, padding=1, bias=conv_bias)
            layers += [conv, get_norm(norm, channels), nn.ReLU()] if norm else [conv, nn.ReLU()]
        return nn.Sequential(*layers)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.DSLA.NUM_CLASSES,
            "num_convs": cfg.MODEL.DSLA.NUM_CONVS,
            "norm": cfg.MODEL.DSLA.NORM,
            "conv_bias": cfg.MODEL.DSLA.CONV_BIAS,
            "dcn_on_last_conv": cfg.MODEL.DSLA.DCN_ON_LAST_CONV,
            "norm_reg_targets": cfg.MODEL.DSLA.NORM_REG_TARGETS,
            "prior_prob": cfg.MODEL.DSLA.PRIOR_PROB,
        }

    def forward(self, features: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """
        Args:
            features: one Tensor[N, C, Hi, Wi] per level, in the order of ``input_shape``.

        Returns:
            logits: one float32 Tensor[N, num_classes, Hi, Wi] per level.
            distances: one float32 Tensor[N, 4, Hi, Wi] per level: (l, t, r, b) in input pixels,
                all >= 0.
        """
        if len(features) != len(self.strides):
            raise ValueError(
                f"DSLAHead was built for {len(self.strides)} levels, got {len(features)}"
            )
        logits, distances = [], []
        # Indexed, not zipped: TorchScript iterates a ModuleList only with a static length.
        for level, scale in enumerate(self.scales):
            feature, stride = features[level], self.strides[level]
            # float32 under autocast: the scores rank the detections (bfloat16's 8 significant bits
            # would tie many of them) and the distances go through exp.
            logits.append(self.cls_score(self.cls_subnet(feature)).float())
            raw = scale(self.bbox_pred(self.bbox_subnet(feature))).float()
            if self.norm_reg_targets:
                distances.append(F.relu(raw) * stride)
            else:
                # Clamped so that a diverging prediction gives a huge finite box, not inf.
                distances.append(raw.clamp(max=math.log(1e5)).exp())
        return logits, distances
