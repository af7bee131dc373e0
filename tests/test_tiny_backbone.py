"""dsla.modeling.backbone.tiny: the quick start's from-scratch backbone with the DSLA FPN."""

import torch

from detectron2.export.torchscript_patch import patch_nonscriptable_classes
from detectron2.modeling import build_backbone

from dsla.modeling.backbone import TinyConvNet

from conftest import load_config

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


def test_scripted_tiny_fpn_backbone_gives_the_eager_features():
    # As detectron2 scripts its ResNet (tests/modeling/test_backbone.py); its patches give FPN a
    # scriptable copy.
    patch_nonscriptable_classes()
    torch.manual_seed(0)
    backbone = build_backbone(load_config(QUICKSTART)).eval()
    scripted = torch.jit.script(backbone)
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        expected, actual = backbone(x), scripted(x)
    assert list(actual) == ["p3", "p4", "p5", "p6", "p7"]
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name])


def test_stages_keep_their_parameter_names_and_only_the_needed_stages_run():
    # Checkpoints name the stages stage1 ... stage5; the list that scripting needs adds no names.
    net = TinyConvNet(3, [8, 8, 16, 16, 16], out_features=["stage2", "stage3"])
    assert {k.split(".")[0] for k in net.state_dict()} == {f"stage{i}" for i in range(1, 6)}
    assert net.stage_names == ("stage1", "stage2", "stage3")
    outputs = net(torch.rand(1, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "stage2": (1, 8, 8, 8),
        "stage3": (1, 16, 4, 4),
    }
