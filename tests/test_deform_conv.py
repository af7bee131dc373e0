"""dsla.layers: deformable convolutions through torchvision, as the authors' DCNv1 (backbone) and
DCNv2 (head)."""

import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from dsla.layers import DeformConv2d, ModulatedDeformConv2d


@pytest.mark.parametrize("stride,dilation,groups", [(1, 1, 1), (2, 1, 2), (1, 2, 4)])
def test_dcnv1_equals_plain_conv_at_zero_offsets(stride, dilation, groups):
    torch.manual_seed(0)
    conv = DeformConv2d(
        8, 12, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=True
    )
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 8, 11, 14)
    expected = F.conv2d(
        x, conv.weight, conv.bias, stride=stride, padding=dilation, dilation=dilation, groups=groups
    )
    assert conv.conv_offset.out_channels == 18
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


def test_dcnv2_at_init_is_half_the_conv_plus_an_unmasked_bias():
    # The mask sigmoid(0) = 0.5 scales the sampled inputs; torchvision (like mmcv) adds the bias
    # after that.
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(8, 6, 3, padding=1, bias=True)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 8, 9, 10)
    expected = 0.5 * F.conv2d(x, conv.weight, None, padding=1) + conv.bias.view(1, -1, 1, 1)
    assert conv.conv_offset.out_channels == 27
    torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", ["dy", "dx"])
def test_offsets_are_dy_dx_pairs_per_tap_as_in_mmcv(axis):
    # Checkpoints trained with mmcv's DCN read the offset channels as (dy, dx) for each kernel tap.
    torch.manual_seed(0)
    conv = DeformConv2d(3, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.conv_offset.bias[slice(0 if axis == "dy" else 1, None, 2)] = 1.0
    x = torch.randn(1, 3, 8, 9)
    y = conv(x)
    # Shifting every tap by one pixel is a valid (unpadded) conv, one pixel further along that axis.
    valid = F.conv2d(x, conv.weight)  # [1, 4, 6, 7]
    if axis == "dy":
        torch.testing.assert_close(y[:, :, 0:6, 1:8], valid, rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(y[:, :, 1:7, 0:7], valid, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("modulated", [False, True])
def test_gradients_reach_the_weight_and_the_offset_conv(modulated):
    torch.manual_seed(0)
    conv = DeformConv2d(4, 4, 3, padding=1, modulated=modulated)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    (conv(x) ** 2).sum().backward()
    assert conv.weight.grad.abs().sum() > 0
    assert conv.bias.grad.abs().sum() > 0
    assert conv.conv_offset.weight.grad.abs().sum() > 0
    assert conv.conv_offset.bias.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("modulated", [False, True])
def test_non_finite_input_reaches_the_output_instead_of_crashing_the_process(modulated):
    # torchvision's CPU kernel segfaults on NaN offsets; run in a child so that a crash fails this
    # test only.
    code = (
        "import torch; from dsla.layers import DeformConv2d, ModulatedDeformConv2d\n"
        f"conv = (ModulatedDeformConv2d if {modulated} else DeformConv2d)(4, 4, 3, padding=1)\n"
        "torch.nn.init.normal_(conv.conv_offset.weight)\n"
        "x = torch.randn(1, 4, 8, 8); x[0, :, 2, 3] = float('nan'); x[0, :, 5, 5] = float('inf')\n"
        "y = conv(x)\n"
        "assert not torch.isfinite(y).all(), 'the non-finite input must stay visible'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("conv_type", [DeformConv2d, ModulatedDeformConv2d])
def test_scripted_deformable_conv_gives_the_eager_output(conv_type):
    torch.manual_seed(0)
    conv = conv_type(8, 6, 3, padding=1, bias=True)
    # Offsets away from zero, so that the deformable sampling is exercised.
    torch.nn.init.normal_(conv.conv_offset.weight, std=0.1)
    x = torch.randn(2, 8, 9, 10)
    torch.testing.assert_close(torch.jit.script(conv)(x), conv(x))
