"""
The ImageNet backbones: torchvision's MobileNetV2 and any timm ``features_only`` model, each feeding
the DSLA FPN; features named by stride, frozen stages and batch norms, torchvision's parameter
names (so that its ImageNet file converts by a prefix), and configs that build them.
"""

import pytest
import torch
import torchvision
from torch import nn

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_backbone

from dsla.modeling.backbone import MobileNetV2, TimmBackbone

from conftest import load_config

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


def _batch_norms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_mobilenet_v2_features_are_named_by_stride_at_any_input_size():
    model = MobileNetV2(out_features=("stage2", "stage3", "stage4", "stage5")).eval()
    shapes = model.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {
        "stage2": (24, 4),
        "stage3": (32, 8),
        "stage4": (96, 16),
        "stage5": (320, 32),
    }
    with torch.no_grad():
        out = model(torch.randn(1, 3, 100, 130))
    for name, feature in out.items():
        stride = shapes[name].stride
        assert feature.shape == (1, shapes[name].channels, -(-100 // stride), -(-130 // stride))


def test_mobilenet_v2_keeps_torchvision_names_and_computes_its_features():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    for m in reference.modules():  # non-trivial statistics, so that frozen BN is really checked
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model = MobileNetV2(out_features=("stage3", "stage5")).eval()
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}
    state = {k: v for k, v in state.items() if int(k.split(".")[1]) < 18}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == [] and unexpected == []
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        expected = reference.features[:7](x)
        assert torch.allclose(out["stage3"], expected, atol=1e-5)
        assert torch.allclose(out["stage5"], reference.features[7:18](expected), atol=1e-5)


def test_mobilenet_v2_frozen_bn_and_frozen_stages():
    frozen_bn = MobileNetV2(norm="FrozenBN")
    assert _batch_norms(frozen_bn) == []
    assert all(p.requires_grad for p in frozen_bn.parameters())

    model = MobileNetV2(norm="BN", freeze_at=2)
    # Stages 1-2 (features 0-3) are frozen, their norms fixed whatever the norm of the rest.
    for i, block in enumerate(model.features):
        params = list(block.parameters())
        assert all(not p.requires_grad for p in params) == (i < 4), i
        has_bn = bool(_batch_norms(block))
        assert has_bn == (i >= 4), i
        if i < 4:
            assert any(isinstance(m, FrozenBatchNorm2d) for m in block.modules())

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sum(f.sum() for f in model(torch.randn(2, 3, 64, 64)).values()).backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(("features.0.", "features.3.")) for k in changed)
    assert any(k.startswith("features.4.") and "running_mean" in k for k in changed)
    assert any(k.startswith("features.5.") and k.endswith("weight") for k in changed)


def test_mobilenet_v2_rejects_unknown_features_and_freezing_past_its_stages():
    with pytest.raises(ValueError, match="stage6"):
        MobileNetV2(out_features=("stage6",))
    with pytest.raises(ValueError, match="freeze_at=4"):
        MobileNetV2(out_features=("stage3",), freeze_at=4)
    with pytest.raises(ValueError, match="norm"):
        MobileNetV2(norm="GN")


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_timm_features_are_named_by_stride_in_nchw(name):
    model = TimmBackbone(name=name, out_features=("stage3", "stage4", "stage5")).eval()
    shapes = model.output_shape()
    assert sorted(shapes) == ["stage3", "stage4", "stage5"]
    assert [shapes[n].stride for n in ("stage3", "stage4", "stage5")] == [8, 16, 32]
    assert model.size_divisibility == 32
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 128))
    for n, feature in out.items():
        assert feature.shape == (
            1,
            shapes[n].channels,
            96 // shapes[n].stride,
            128 // shapes[n].stride,
        )


def test_timm_nhwc_models_give_nchw_features():
    model = TimmBackbone(name="swin_tiny_patch4_window7_224", out_features=("stage4", "stage5"))
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 224, 224))
    assert out["stage4"].shape == (1, 384, 14, 14) and out["stage5"].shape == (1, 768, 7, 7)
    assert model.output_shape()["stage5"].channels == 768


def test_timm_freeze_at_freezes_the_stem_and_stages_in_order():
    model = TimmBackbone(name="resnet18", norm="BN", freeze_at=2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # timm's features 1 and 2 of resnet18 are the stem (act1) and layer1.
    assert any(n.startswith("model.conv1.") for n in frozen)
    assert any(n.startswith("model.layer1.") for n in frozen)
    assert not any(n.startswith(("model.layer2.", "model.layer3.")) for n in frozen)
    assert type(model.model.bn1).__name__ == "FrozenBatchNorm2d"
    assert isinstance(model.model.layer2[0].bn1, nn.BatchNorm2d)
    assert _batch_norms(TimmBackbone(name="resnet18")) == []  # FrozenBN by default


def test_timm_frozen_bn_computes_what_its_batch_norms_compute_in_eval_mode():
    # EfficientNet's norms are timm's BatchNormAct2d (norm, then ReLU6): freezing them must keep
    # the activation.
    torch.manual_seed(0)
    trained = TimmBackbone(name="tf_efficientnet_lite0", norm="BN").eval()
    frozen = TimmBackbone(name="tf_efficientnet_lite0", norm="FrozenBN").eval()
    missing, unexpected = frozen.load_state_dict(trained.state_dict(), strict=False)
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        a, b = trained(x), frozen(x)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_timm_rejects_features_the_model_does_not_have():
    with pytest.raises(ValueError, match="stage6"):
        TimmBackbone(name="resnet18", out_features=("stage6",))


@pytest.mark.parametrize(
    "opts",
    [
        ["MODEL.BACKBONE.NAME", "build_dsla_mobilenet_v2_fpn_backbone"],
        ["MODEL.BACKBONE.NAME", "build_dsla_timm_fpn_backbone", "MODEL.TIMM.NAME", "resnet18"],
    ],
    ids=["mobilenet_v2", "timm"],
)
def test_configs_build_the_backbones_with_the_dsla_fpn(opts):
    cfg = load_config(QUICKSTART, [*opts, "MODEL.BACKBONE.FREEZE_AT", "2"])
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    assert sorted(backbone.output_shape()) == ["p3", "p4", "p5", "p6", "p7"]
    assert [backbone.output_shape()[f"p{i}"].stride for i in range(3, 8)] == [8, 16, 32, 64, 128]
    assert any(not p.requires_grad for p in backbone.bottom_up.parameters())
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 128))
    assert out["p3"].shape == (1, 64, 16, 16) and out["p7"].shape == (1, 64, 1, 1)
