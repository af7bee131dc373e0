"""
Deformable convolutions through ``torchvision.ops.deform_conv2d``, which has CPU and CUDA kernels, so that DCN
configs work whether or not detectron2 was built with its compiled ops.

Each module owns the zero-initialized 3x3 conv that predicts its offsets (and mask), as the authors trained:
at initialization DCNv1 equals a plain conv, and DCNv2 equals a plain conv scaled by sigmoid(0) = 0.5.
"""
import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from detectron2.layers import get_norm

__all__ = ["DeformConv2d", "ModulatedDeformConv2d"]


class DeformConv2d(nn.Module):
    """
    DCNv1 (Dai et al., 2017): 2 offsets per kernel tap from a zero-initialized conv. With ``modulated=True``,
    DCNv2 (Zhu et al., 2019): the offset conv gives 3 channels per tap; the first two thirds are the offsets,
    the sigmoid of the last third is the modulation mask. Optional norm and activation follow, as in
    detectron2's ``Conv2d``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        dilation: int = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
        norm=None,
        activation=None,
    ):
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.modulated = modulated
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        # The offset predictor sees the same window as the deformable conv.
        channels_per_tap = 3 if modulated else 2
        self.conv_offset = nn.Conv2d(
            in_channels,
            deformable_groups * channels_per_tap * kernel_size * kernel_size,
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
        offset = self.conv_offset(x)
        mask = None
        if self.modulated:
            num_offsets = offset.shape[1] * 2 // 3
            offset, mask = offset[:, :num_offsets], offset[:, num_offsets:].sigmoid()
        x = deform_conv2d(
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
