"""
torchvision's MobileNetV2 as a detectron2 backbone, for fine-tuning from its ImageNet weights on
small machines.

The parameters keep torchvision's names (``features.{i}.*``), so that torchvision's ImageNet file
(``mobilenet_v2-b0353104.pth``) converts by a prefix (``tools/convert_imagenet_checkpoint.py``) and
arrives through ``MODEL.WEIGHTS``; building the model reads no file.
"""

from typing import Dict, Sequence

import torchvision
from torch import Tensor, nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone

from .fpn import build_dsla_fpn

__all__ = [
    "MobileNetV2",
    "build_dsla_mobilenet_v2_backbone",
    "build_dsla_mobilenet_v2_fpn_backbone",
]

# Where each stage ends in torchvision's ``features`` (exclusive): stage i has stride 2**i. Stage 5
# ends with the last inverted residual block (320 channels at width 1), before the 1x1 conv to 1280
# channels that only the classifier uses.
_STAGE_ENDS = {"stage1": 2, "stage2": 4, "stage3": 7, "stage4": 14, "stage5": 18}
NORMS = ("FrozenBN", "BN")


def freeze(module: nn.Module) -> nn.Module:
    """
    ``module`` with its parameters frozen and its batch norms made ``FrozenBatchNorm2d``, as
    detectron2's ResNet freezes the stages before ``FREEZE_AT`` (whatever their norm).
    """
    for p in module.parameters():
        p.requires_grad = False
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


def norm_layers(module: nn.Module, norm: str) -> nn.Module:
    """
    The batch norms of ``module`` as ``norm`` asks: "FrozenBN" makes each a detectron2
    ``FrozenBatchNorm2d`` (statistics and affine fixed, as detectron2's ImageNet ResNets are
    fine-tuned), "BN" keeps them training.
    """
    if norm not in NORMS:
        raise ValueError(f"Unknown backbone norm {norm!r}; expected one of {NORMS}")
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    return module


class MobileNetV2(Backbone):
    """
    torchvision's MobileNetV2 trunk: ``Tensor[N, 3, H, W]`` in, ``"stage1"`` ... ``"stage5"``
    (strides 2 ... 32) out, e.g. stages 3-5 with 32, 96 and 320 channels at width 1 for an FPN.
    """

    def __init__(
        self,
        *,
        out_features: Sequence[str] = ("stage3", "stage4", "stage5"),
        width_mult: float = 1.0,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
    ):
        """
        Args:
            out_features: subset of "stage1" ... "stage5".
            width_mult: torchvision's width multiplier (its ImageNet weights are for 1.0).
            norm: "FrozenBN" or "BN" (see :func:`norm_layers`).
            freeze_at: detectron2's ``FREEZE_AT``: 0 trains everything, 1 freezes the stem
                (stage 1), k freezes stages 1 ... k (see :func:`freeze`).
        """
        super().__init__()
        unknown = [f for f in out_features if f not in _STAGE_ENDS]
        if unknown:
            raise ValueError(
                f"Unknown MobileNetV2 output features {unknown}; available: {list(_STAGE_ENDS)}"
            )
        last = max(_STAGE_ENDS[f] for f in out_features)
        features = torchvision.models.mobilenet_v2(weights=None, width_mult=width_mult).features
        self.features = norm_layers(features[:last], norm)
        self._stage_names = [n for n, end in _STAGE_ENDS.items() if end <= last]
        if not 0 <= freeze_at <= len(self._stage_names):
            raise ValueError(
                f"freeze_at={freeze_at}: MobileNetV2 up to {self._stage_names[-1]} has "
                f"{len(self._stage_names)} stages to freeze"
            )
        self._out_features = list(out_features)
        self._out_feature_strides = {n: 2 ** (i + 1) for i, n in enumerate(self._stage_names)}
        self._out_feature_channels = {
            n: self.features[_STAGE_ENDS[n] - 1].out_channels for n in self._stage_names
        }
        frozen_blocks = _STAGE_ENDS[self._stage_names[freeze_at - 1]] if freeze_at > 0 else 0
        for i in range(frozen_blocks):
            self.features[i] = freeze(self.features[i])

    @property
    def size_divisibility(self) -> int:
        return 32

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            x: Tensor[N, 3, H, W].

        Returns:
            dict of Tensor[N, C_i, ceil(H / s_i), ceil(W / s_i)] by feature name.
        """
        outputs = {}
        ends = {_STAGE_ENDS[n] - 1: n for n in self._out_features}
        for i, block in enumerate(self.features):
            x = block(x)
            if i in ends:
                outputs[ends[i]] = x
        return outputs


@BACKBONE_REGISTRY.register()
def build_dsla_mobilenet_v2_backbone(cfg, input_shape: ShapeSpec) -> MobileNetV2:
    """:class:`MobileNetV2` from ``cfg.MODEL.MOBILENET_V2`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
    if input_shape.channels != 3:
        raise ValueError(f"MobileNetV2 takes 3-channel images; got {input_shape.channels} channels")
    return MobileNetV2(
        out_features=cfg.MODEL.MOBILENET_V2.OUT_FEATURES,
        width_mult=cfg.MODEL.MOBILENET_V2.WIDTH_MULT,
        norm=cfg.MODEL.MOBILENET_V2.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_dsla_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """MobileNetV2 (:func:`build_dsla_mobilenet_v2_backbone`) with the DSLA FPN (P3-P7)."""
    return build_dsla_fpn(cfg, build_dsla_mobilenet_v2_backbone(cfg, input_shape))
