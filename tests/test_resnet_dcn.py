"""dsla.modeling.backbone.resnet_dcn: ResNet/ResNeXt with deformable stages on detectron2's
ResNet."""

import copy

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone.resnet import BottleneckBlock, build_resnet_backbone

from dsla import add_dsla_config
from dsla.layers import DeformConv2d
from dsla.modeling.backbone.resnet_dcn import (
    FrozenStatsBatchNorm2d,
    build_dsla_resnet_backbone,
    make_deformable,
)


def _resnet_cfg(*opts):
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.merge_from_list(["MODEL.RESNETS.OUT_FEATURES", ["res3", "res4", "res5"], *opts])
    return cfg


@pytest.mark.parametrize("stride_in_1x1,num_groups", [(True, 1), (False, 1), (False, 8)])
def test_deform_block_at_init_equals_the_plain_bottleneck(stride_in_1x1, num_groups):
    torch.manual_seed(0)
    kwargs = dict(
        bottleneck_channels=32,
        stride=2,
        num_groups=num_groups,
        norm="BN",
        stride_in_1x1=stride_in_1x1,
    )
    plain = BottleneckBlock(16, 64, **kwargs).eval()
    deform = make_deformable(copy.deepcopy(plain)).eval()
    extra = set(deform.state_dict()) - set(plain.state_dict())
    assert extra == {"conv2.conv_offset.weight", "conv2.conv_offset.bias"}
    assert isinstance(deform.conv2, DeformConv2d) and deform.conv2.weight.shape == (
        32,
        32 // num_groups,
        3,
        3,
    )
    x = torch.randn(2, 16, 13, 10)
    torch.testing.assert_close(deform(x), plain(x), rtol=1e-4, atol=1e-4)


def test_deform_on_per_stage_selects_the_deformable_stages_of_a_resnext():
    cfg = _resnet_cfg()
    # ResNeXt-50 32x4d, pytorch style, DCN in res4-res5.
    cfg.MODEL.RESNETS.NUM_GROUPS = 32
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, True, True]
    model = build_dsla_resnet_backbone(cfg, ShapeSpec(channels=3))
    for name in ("res2", "res3"):
        assert not any(isinstance(block.conv2, DeformConv2d) for block in getattr(model, name))
    for name in ("res4", "res5"):
        assert all(isinstance(block.conv2, DeformConv2d) for block in getattr(model, name))
    assert model.res4[0].conv2.weight.shape == (512, 512 // 32, 3, 3)
    outputs = model(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "res3": (1, 512, 8, 12),
        "res4": (1, 1024, 4, 6),
        "res5": (1, 2048, 2, 3),
    }


def test_without_deformable_stages_the_model_is_detectron2s_resnet():
    cfg = _resnet_cfg()
    ours = build_dsla_resnet_backbone(cfg, ShapeSpec(channels=3))
    reference = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert ours.output_shape() == reference.output_shape()


def test_frozen_stats_bn_trains_its_affine_but_keeps_its_statistics():
    cfg = _resnet_cfg("MODEL.RESNETS.NORM", "FrozenStatsBN", "MODEL.BACKBONE.FREEZE_AT", 2)
    model = build_dsla_resnet_backbone(cfg, ShapeSpec(channels=3)).train()
    # Frozen stages are detectron2's FrozenBatchNorm2d, the others keep trainable affine parameters.
    assert isinstance(model.stem.conv1.norm, FrozenBatchNorm2d)
    assert isinstance(model.res2[0].conv1.norm, FrozenBatchNorm2d)
    norm = model.res3[0].conv1.norm
    assert isinstance(norm, FrozenStatsBatchNorm2d) and norm.weight.requires_grad
    before = norm.running_mean.clone(), norm.running_var.clone()
    sum(v.sum() for v in model(torch.randn(2, 3, 64, 64)).values()).backward()
    torch.testing.assert_close((norm.running_mean, norm.running_var), before)
    assert norm.weight.grad is not None and norm.weight.grad.abs().sum() > 0
    assert model.stem.conv1.weight.grad is None
