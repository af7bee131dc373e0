"""
Deformable convolutions through ``torchvision.ops.deform_conv2d``, which has CPU and CUDA kernels,
so that DCN configs work whether or not detectron2 was built with its compiled ops.

Each module owns the zero-initialized 3x3 conv that predicts its offsets (and mask), as the authors
trained: at initialization DCNv1 equals a plain conv, and DCNv2 equals a plain conv scaled by
    sigmoid(0) = 0.5.
"""

from typing import Optional

import torch
import torchvision
from torch import Tensor, nn

from detectron2.layers import get_norm

__all__ = ["DeformConv2d", "ModulatedDeformConv2d"]


class DeformConv2d(torchvision.ops.DeformConv2d):
    """
    torchvision's deformable conv that predicts its own offsets. DCNv1 (Dai et al., 2017): 2 offsets
    per kernel tap from a zero-initialized conv. With ``modulated=True``, DCNv2 (Zhu et al., 2019):
    the offset conv gives 3 channels per tap; the first two thirds are the offsets, the sigmoid of
    the last third is the modulation mask. Optional norm and activation follow, as in detectron2's
    ``Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride=1,
        padding=1,
        dilation=1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
        norm=None,
        activation=None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.modulated = modulated
        # The offset predictor sees the same window as the deformable conv.
        self.conv_offset = nn.Conv2d(
            in_channels,
            deformable_groups * (3 if modulated else 2) * kernel_size * kernel_size,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        self.norm = get_norm(norm, out_channels) if norm else None
        self.activation = activation

    def forward(self, x):
        # torchvision's CPU kernel crashes the process on non-finite offsets (NaN pixels give NaN
        # offsets); with them zeroed the non-finite input still reaches the output, where training
        # reports it as a FloatingPointError.
        offset = torch.nan_to_num(self.conv_offset(x), nan=0.0, posinf=0.0, neginf=0.0)
        mask: Optional[Tensor] = None
        if self.modulated:
            num_offsets = offset.shape[1] * 2 // 3
            offset, mask = offset[:, :num_offsets], offset[:, num_offsets:].sigmoid()
        # torchvision's DeformConv2d.forward, called as a function: TorchScript has no super().
        x = torchvision.ops.deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class ModulatedDeformConv2d(DeformConv2d):
    """DCNv2: :class:`DeformConv2d` with ``modulated=True``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, modulated=True, **kwargs)
