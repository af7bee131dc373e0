"""
Any timm model that supports ``features_only`` as a detectron2 backbone, for fine-tuning from
ImageNet weights.

The parameters are those of timm's feature extractor (``timm.create_model(name,
features_only=True)``) under ``model.``; ``tools/convert_imagenet_checkpoint.py`` maps a timm
ImageNet checkpoint onto them for ``MODEL.WEIGHTS``. Building the model reads no file.
"""

import math
from typing import Dict, Sequence

import timm
from timm.layers import freeze_batch_norm_2d
from torch import Tensor, nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone

from .fpn import build_dsla_fpn
from .mobilenet import NORMS

__all__ = ["TimmBackbone", "build_dsla_timm_backbone", "build_dsla_timm_fpn_backbone"]


def _stage_name(reduction: int) -> str:
    """The feature name of a timm feature of stride ``reduction``: "stage{log2(reduction)}"."""
    return f"stage{round(math.log2(reduction))}"


class TimmBackbone(Backbone):
    """
    A timm feature extractor: ``Tensor[N, C, H, W]`` in, one feature per requested stride out,
    named by stride as the other DSLA backbones: "stage2" (stride 4), "stage3" (8), "stage4" (16),
    "stage5" (32), in NCHW whatever the model's own layout.
    """

    def __init__(
        self,
        *,
        name: str,
        out_features: Sequence[str] = ("stage3", "stage4", "stage5"),
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
    ):
        """
        Args:
            name: a timm model name with ``features_only`` support (e.g. ``"resnet50"``,
                ``"tf_efficientnet_lite0"``, ``"convnext_tiny"``, ``"mobilenetv3_large_100"``).
            out_features: features by stride (see the class docstring).
            norm: "FrozenBN" or "BN": whether the model's batch norms are fixed (statistics and
                affine). timm's own freezing keeps the activation that its fused norm-activation
                layers (``BatchNormAct2d``, e.g. EfficientNet's) apply after normalizing.
            freeze_at: 0 trains everything; k freezes every module up to and including the one that
                gives timm's k-th feature (k = 1: the stem), as detectron2's ``FREEZE_AT``.
            in_chans: input channels.
            drop_path_rate: stochastic depth, for the models that have it.
        """
        super().__init__()
        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate > 0 else {}
        probe = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_chans)
        available = [_stage_name(r) for r in probe.feature_info.reduction()]
        unknown = [f for f in out_features if f not in available]
        if unknown:
            raise ValueError(
                f"timm model {name!r} has no features {unknown}; it gives {available} (strides "
                f"{probe.feature_info.reduction()})"
            )
        if not 0 <= freeze_at <= len(available):
            raise ValueError(f"freeze_at={freeze_at}: {name} has {len(available)} feature stages")
        indices = sorted(available.index(f) for f in out_features)
        self.model = timm.create_model(
            name,
            features_only=True,
            pretrained=False,
            in_chans=in_chans,
            out_indices=tuple(indices),
            **kwargs,
        )
        if norm not in NORMS:
            raise ValueError(f"Unknown backbone norm {norm!r}; expected one of {NORMS}")
        if norm == "FrozenBN":
            self.model = freeze_batch_norm_2d(self.model)
        # Swin and a few others give NHWC features; detectron2's FPN takes NCHW.
        self._nhwc = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        info = self.model.feature_info
        self._names = [_stage_name(r) for r in info.reduction()]
        self._out_features = list(self._names)
        self._out_feature_strides = dict(zip(self._names, info.reduction()))
        self._out_feature_channels = dict(zip(self._names, info.channels()))
        if freeze_at > 0:
            self._freeze(probe.feature_info.module_name()[freeze_at - 1])

    def _freeze(self, last_module: str) -> None:
        """
        Freeze the parameters and batch norms of the model's modules, in their order, up to and
        including ``last_module`` (a name of timm's ``feature_info``).
        """
        names = [n for n, _ in self.model.named_modules()]
        # Feature extractors that flatten the model's top level name "stages.0" "stages_0".
        flat = last_module.replace(".", "_", 1)
        target = next((t for t in (last_module, flat) if t in names), None)
        if target is None:
            raise ValueError(f"Cannot find timm module {last_module!r} to freeze up to")
        end = max(i for i, n in enumerate(names) if n == target or n.startswith(target + "."))
        for name in names[1 : end + 1]:
            module = self.model.get_submodule(name)
            for p in module.parameters(recurse=False):
                p.requires_grad = False
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                parent_name, _, child_name = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child_name, freeze_batch_norm_2d(module))

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            x: Tensor[N, C, H, W].

        Returns:
            dict of Tensor[N, C_i, H / s_i, W / s_i] by feature name.
        """
        features = self.model(x)
        if self._nhwc:
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return dict(zip(self._names, features))


@BACKBONE_REGISTRY.register()
def build_dsla_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """:class:`TimmBackbone` from ``cfg.MODEL.TIMM`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
    return TimmBackbone(
        name=cfg.MODEL.TIMM.NAME,
        out_features=cfg.MODEL.TIMM.OUT_FEATURES,
        norm=cfg.MODEL.TIMM.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_chans=input_shape.channels,
        drop_path_rate=cfg.MODEL.TIMM.DROP_PATH_RATE,
    )


@BACKBONE_REGISTRY.register()
def build_dsla_timm_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """A timm backbone (:func:`build_dsla_timm_backbone`) with the DSLA FPN (P3-P7)."""
    return build_dsla_fpn(cfg, build_dsla_timm_backbone(cfg, input_shape))
