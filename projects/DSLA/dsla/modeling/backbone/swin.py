"""
Swin Transformer (timm) as a detectron2 backbone, computing what the Swin of the authors' detectors
computes (the official Swin detection code and mmdetection's ``SwinTransformer``).

The modules and parameter names are timm's; the forward differs from timm's in one place: for a
feature map that is not a multiple of the window, the detection Swin pads it before the cyclic
shift, while timm shifts and then pads, which puts the shifted-in rows and the padding in different
windows and attention groups. Detection inputs are rarely multiples of 7 * 32 pixels, so the block
forward is the detection one here.
"""

from typing import Dict, Sequence

import timm
import torch
from timm.models.swin_transformer import window_partition, window_reverse
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone

from .fpn import build_dsla_fpn

__all__ = [
    "SwinTransformer",
    "build_dsla_swin_backbone",
    "build_dsla_swin_fpn_backbone",
]


def _swin_block_forward(block: nn.Module, x: Tensor, attn_masks: Dict) -> Tensor:
    """
    One timm ``SwinTransformerBlock`` on ``Tensor[N, H, W, C]``, padding to whole windows *before*
    the cyclic shift, as the detection Swin does. ``attn_masks`` caches the shifted-window masks of
    one forward pass: every shifted block of a stage needs the same one.
    """
    _, H, W, C = x.shape
    win_h, win_w = block.window_size
    shift_h, shift_w = block.shift_size
    shortcut = x
    x = block.norm1(x)
    x = F.pad(x, (0, 0, 0, -W % win_w, 0, -H % win_h))
    _, Hp, Wp, _ = x.shape
    has_shift = shift_h > 0 or shift_w > 0
    if has_shift:
        x = torch.roll(x, shifts=(-shift_h, -shift_w), dims=(1, 2))
    # Shifted windows mix regions that are not neighbours in the image; the mask keeps them apart.
    attn_mask = None
    if has_shift:
        key = (Hp, Wp, block.window_size, block.shift_size)
        if key not in attn_masks:
            attn_masks[key] = block.get_attn_mask(x)
        attn_mask = attn_masks[key]
    windows = window_partition(x, (win_h, win_w)).view(-1, win_h * win_w, C)
    windows = block.attn(windows, mask=attn_mask).view(-1, win_h, win_w, C)
    x = window_reverse(windows, (win_h, win_w), Hp, Wp)
    if has_shift:
        x = torch.roll(x, shifts=(shift_h, shift_w), dims=(1, 2))
    x = shortcut + block.drop_path1(x[:, :H, :W, :])
    return x + block.drop_path2(block.mlp(block.norm2(x)))


class SwinTransformer(Backbone):
    """
    A timm Swin Transformer as a detectron2 backbone: ``Tensor[N, 3, H, W]`` in, ``"stage1"`` ...
    ``"stage4"`` (strides 4, 8, 16, 32) out in NCHW, each through its own LayerNorm, as in the
    detection Swin. Any input size works (feature maps have size ``ceil(H / stride)``); detectors
    pad to :attr:`size_divisibility` anyway.

    Parameters are timm's (``patch_embed.*``, ``layers.{i}.*``) plus ``out_norms.stage{i}.*``. The
    constructor reads no weights: ``tools/convert_swin_checkpoint.py``
    (:mod:`dsla.checkpoint.convert_swin`) turns an ImageNet checkpoint into a file for
    ``MODEL.WEIGHTS``.
    """

    def __init__(
        self,
        *,
        name: str = "swin_small_patch4_window7_224",
        drop_path_rate: float = 0.2,
        out_features: Sequence[str] = ("stage2", "stage3", "stage4"),
        freeze_at: int = 0,
        in_chans: int = 3,
    ):
        """
        Args:
            name: timm model name of a Swin Transformer (v1).
            drop_path_rate: stochastic depth rate of the last block; linear from 0 over the blocks.
            out_features: subset of "stage1" ... "stage4".
            freeze_at: 0 trains everything, 1 freezes the patch embedding, k > 1 also stages 1 ...
                k-1.
            in_chans: input channels.
        """
        super().__init__()
        # always_partition: windows and shifts as configured, even where a feature map is smaller
        # than a window (timm would otherwise shrink them according to its 224-pixel reference
        # size).
        swin = timm.create_model(
            name,
            pretrained=False,
            num_classes=0,
            in_chans=in_chans,
            drop_path_rate=drop_path_rate,
            always_partition=True,
            strict_img_size=False,
        )
        stage_names = [f"stage{i + 1}" for i in range(len(swin.layers))]
        unknown = [f for f in out_features if f not in stage_names]
        if unknown:
            raise ValueError(f"Unknown Swin output features {unknown}; available: {stage_names}")
        num_stages = max(stage_names.index(f) for f in out_features) + 1
        self.patch_embed = swin.patch_embed
        self.layers = swin.layers[:num_stages]
        self.patch_size = swin.patch_embed.patch_size
        self._out_features = list(out_features)
        self._out_feature_channels = {
            n: info["num_chs"] for n, info in zip(stage_names, swin.feature_info)
        }
        self._out_feature_strides = {
            n: info["reduction"] for n, info in zip(stage_names, swin.feature_info)
        }
        self.out_norms = nn.ModuleDict(
            {f: nn.LayerNorm(self._out_feature_channels[f]) for f in out_features}
        )
        self._size_divisibility = self._out_feature_strides[stage_names[num_stages - 1]]
        self.freeze(freeze_at)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def freeze(self, freeze_at: int = 0) -> "SwinTransformer":
        """Freeze the patch embedding (``freeze_at >= 1``) and the stages before ``freeze_at``."""
        frozen = ([self.patch_embed] if freeze_at >= 1 else []) + list(
            self.layers[: max(freeze_at - 1, 0)]
        )
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False
        return self

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            x: Tensor[N, C, H, W], any H and W.

        Returns:
            dict of Tensor[N, C_i, ceil(H / s_i), ceil(W / s_i)] by feature name.
        """
        patch_h, patch_w = self.patch_size
        x = F.pad(x, (0, -x.shape[-1] % patch_w, 0, -x.shape[-2] % patch_h))
        x = self.patch_embed(x)  # [N, H/4, W/4, C]
        outputs, attn_masks = {}, {}
        for i, stage in enumerate(self.layers):
            x = stage.downsample(x)
            for block in stage.blocks:
                x = _swin_block_forward(block, x, attn_masks)
            name = f"stage{i + 1}"
            if name in self._out_features:
                outputs[name] = self.out_norms[name](x).permute(0, 3, 1, 2).contiguous()
        return outputs

    def __prepare_scriptable__(self):
        raise RuntimeError(
            "The Swin backbone (dsla.modeling.backbone.SwinTransformer) cannot be scripted: its "
            "blocks run the detection Swin's forward as a function of timm's modules, and "
            "TorchScript cannot pass a module to a function. Trace the model instead "
            "(tools/export_model.py; docs/deployment.md)."
        )


@BACKBONE_REGISTRY.register()
def build_dsla_swin_backbone(cfg, input_shape: ShapeSpec) -> SwinTransformer:
    """:class:`SwinTransformer` from ``cfg.MODEL.SWIN`` and ``cfg.MODEL.BACKBONE.FREEZE_AT``."""
    return SwinTransformer(
        name=cfg.MODEL.SWIN.NAME,
        drop_path_rate=cfg.MODEL.SWIN.DROP_PATH_RATE,
        out_features=cfg.MODEL.SWIN.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_chans=input_shape.channels,
    )


@BACKBONE_REGISTRY.register()
def build_dsla_swin_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """Swin (:func:`build_dsla_swin_backbone`) with the DSLA FPN (:func:`build_dsla_fpn`)."""
    return build_dsla_fpn(cfg, build_dsla_swin_backbone(cfg, input_shape))
