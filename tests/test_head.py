import math

import pytest
import torch

from detectron2.layers import ShapeSpec

from dsla.layers import ModulatedDeformConv2d
from dsla.modeling import DSLAHead

STRIDES = [8, 16, 32, 64, 128]


def _head(**kwargs):
    shapes = [ShapeSpec(channels=32, stride=s) for s in STRIDES]
    return DSLAHead(input_shape=shapes, num_classes=3, num_convs=2, **kwargs)


def _features(batch=2, size=(130, 260)):
    return [torch.randn(batch, 32, math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in STRIDES]


def test_output_shapes_per_level():
    features = _features()
    logits, distances = _head()(features)
    assert len(logits) == len(distances) == len(STRIDES)
    for f, cls, dist in zip(features, logits, distances):
        n, _, h, w = f.shape
        assert cls.shape == (n, 3, h, w)
        assert dist.shape == (n, 4, h, w)
        assert (dist >= 0).all()


def test_initialization_follows_the_spec():
    head = _head()
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(head.cls_score.bias, torch.full((3,), prior))
    assert head.bbox_pred.bias.abs().sum() == 0
    assert head.cls_subnet[0].weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert all(s.scale.item() == 1.0 for s in head.scales)
    # No centerness branch, and no conv bias in the towers by default (GN follows).
    assert not any("ctrness" in name or "centerness" in name for name, _ in head.named_parameters())
    assert head.cls_subnet[0].bias is None


def test_distances_are_exp_of_scaled_raw_by_default_and_relu_times_stride_with_norm_reg():
    features = _features(batch=1)
    head = _head()
    with torch.no_grad():
        head.scales[2].scale.fill_(2.0)
        raw = head.bbox_pred(head.bbox_subnet(features[2]))
        assert torch.allclose(head(features)[1][2], torch.exp(2.0 * raw))

    head = _head(norm_reg_targets=True)
    with torch.no_grad():
        head.scales[1].scale.fill_(-3.0)
        raw = head.bbox_pred(head.bbox_subnet(features[1]))
        assert torch.allclose(head(features)[1][1], torch.relu(-3.0 * raw) * 16)


def test_dcn_on_last_conv_makes_the_last_tower_conv_deformable():
    head = _head(dcn_on_last_conv=True, conv_bias=True)
    convs = [
        m
        for m in head.cls_subnet
        if isinstance(m, torch.nn.Conv2d) or isinstance(m, ModulatedDeformConv2d)
    ]
    assert isinstance(convs[-1], ModulatedDeformConv2d)
    assert not any(isinstance(m, ModulatedDeformConv2d) for m in convs[:-1])
    assert convs[-1].conv_offset.weight.abs().sum() == 0
    logits, distances = head(_features(batch=1))
    (sum(x.sum() for x in logits) + sum(x.sum() for x in distances)).backward()
    assert convs[-1].conv_offset.weight.grad.abs().sum() > 0


def test_levels_with_different_channels_are_rejected():
    with pytest.raises(ValueError, match="same channels"):
        DSLAHead(
            input_shape=[ShapeSpec(channels=32, stride=8), ShapeSpec(channels=64, stride=16)],
            num_classes=2,
        )
