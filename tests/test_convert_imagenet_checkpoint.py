"""
dsla.checkpoint.convert_imagenet and tools/convert_imagenet_checkpoint.py: ImageNet checkpoints of
torchvision, timm and efficientnet_pytorch (built here with random weights) become a MODEL.WEIGHTS
file that fills the backbone of a DSLA model, with a report of what was filled, what stays at its
initialization and what of the checkpoint was not used.
"""

import re

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from detectron2.modeling import build_model

from dsla.checkpoint import AtomicCheckpointer
from dsla.checkpoint.convert_imagenet import PREFIX, convert_imagenet_state_dict
from tools import convert_imagenet_checkpoint

from conftest import REPO_ROOT, load_config

TREES = "configs/DSLA/dsla_mobilenet_v2_trees.yaml"
QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


def _timm_opts(name):
    return ["MODEL.BACKBONE.NAME", "build_dsla_timm_fpn_backbone", "MODEL.TIMM.NAME", name]


def _randomize_norm_statistics(model, seed=0):
    """Non-trivial running statistics, so that a buffer left at its initialization shows."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def _convert(tmp_path, source_state, config, opts=(), name="imagenet.pth"):
    source, output = tmp_path / name, tmp_path / "converted.pth"
    if name.endswith(".safetensors"):
        save_file(source_state, source)
    else:
        torch.save(source_state, source)
    argv = [str(source), str(output), "--config", f"{REPO_ROOT}/{config}", *opts]
    return convert_imagenet_checkpoint.main(argv), output


def _load_through_model_weights(config, opts, output):
    """The detector of ``config`` with ``MODEL.WEIGHTS`` = ``output``, loaded as train_net.py
    loads it."""
    cfg = load_config(config, [*opts, "MODEL.WEIGHTS", str(output)])
    model = build_model(cfg)
    with torch.no_grad():  # so that a tensor the file does not fill shows
        for t in model.backbone.bottom_up.state_dict().values():
            t.fill_(float("nan") if t.is_floating_point() else -1)
    AtomicCheckpointer(model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return model.eval()


@pytest.fixture(scope="module")
def torchvision_mobilenet_v2():
    torch.manual_seed(0)
    return _randomize_norm_statistics(torchvision.models.mobilenet_v2(weights=None)).eval()


def test_torchvision_mobilenet_v2_fills_the_whole_trees_backbone(
    tmp_path, torchvision_mobilenet_v2
):
    source = torchvision_mobilenet_v2.state_dict()
    returncode, output = _convert(tmp_path, source, TREES)
    assert returncode == 0
    model = _load_through_model_weights(TREES, [], output)

    ours = model.backbone.bottom_up.state_dict()
    assert ours and all(torch.equal(v, source[k]) for k, v in ours.items())
    # The same features as torchvision's blocks, up to the last output stage.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.backbone.bottom_up(x)
        torch.testing.assert_close(out["stage5"], torchvision_mobilenet_v2.features[:18](x))


def test_mobilenet_v2_report_names_the_classifier_and_the_blocks_after_the_last_stage(
    torchvision_mobilenet_v2,
):
    model = build_model(load_config(TREES))
    conversion = convert_imagenet_state_dict(torchvision_mobilenet_v2.state_dict(), model)
    backbone = [k for k in model.state_dict() if k.startswith(PREFIX)]
    assert sorted(conversion.state_dict) == sorted(backbone)
    assert not any(k.startswith(PREFIX) for k in conversion.missing)
    assert conversion.missing  # the FPN and the head
    reasons = dict(conversion.unmatched)
    assert {k for k, r in reasons.items() if r == "ImageNet classifier"} == {
        "classifier.1.weight",
        "classifier.1.bias",
    }
    # The 1x1 conv to 1280 channels feeds only the classifier; its num_batches_tracked is dropped
    # without a report.
    after = {k for k in reasons if k.startswith("features.18.")}
    assert len(after) == 5 and "features.18.1.num_batches_tracked" not in reasons
    assert set(reasons) == after | {"classifier.1.weight", "classifier.1.bias"}


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_timm_checkpoint_fills_a_timm_backbone_whose_feature_names_differ(tmp_path, name):
    torch.manual_seed(0)
    reference = _randomize_norm_statistics(timm.create_model(name, pretrained=False)).eval()
    source = reference.state_dict()
    opts = _timm_opts(name)
    returncode, output = _convert(tmp_path, source, QUICKSTART, opts, "model.safetensors")
    assert returncode == 0
    model = _load_through_model_weights(QUICKSTART, opts, output)

    ours = {k[len("model.") :]: v for k, v in model.backbone.bottom_up.state_dict().items()}
    if name == "convnext_atto":
        # timm's features_only ConvNeXt flattens its top-level Sequentials: stem.0 -> stem_0.
        assert "stages_1.blocks.0.conv_dw.weight" in ours
    for key, value in ours.items():
        timm_key = re.sub(r"^(stem|stages)_(\d+)\.", r"\1.\2.", key)
        assert torch.equal(value, source[timm_key]), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.backbone.bottom_up(x)["stage5"], reference.forward_features(x)
        )

    conversion = convert_imagenet_state_dict(source, model)
    classifier = {"resnet18": "fc.", "convnext_atto": "head."}[name]
    assert conversion.unmatched and all(
        k.startswith(classifier) and r == "ImageNet classifier" for k, r in conversion.unmatched
    )


def _efficientnet_pytorch_name(timm_name):
    """A name in efficientnet_pytorch's style (``_conv_stem.weight``, ``_blocks.0.0._bn1.bias``)
    for a tensor of timm's tf_efficientnet_lite0."""
    *modules, tensor = timm_name.split(".")
    return ".".join([*(m if m.isdigit() else f"_{m}" for m in modules), tensor])


@pytest.fixture(scope="module")
def efficientnet_lite0():
    torch.manual_seed(0)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    return _randomize_norm_statistics(reference).eval().state_dict()


def test_efficientnet_pytorch_checkpoint_is_matched_to_timm_by_order_and_shape(
    tmp_path, efficientnet_lite0
):
    source = {_efficientnet_pytorch_name(k): v for k, v in efficientnet_lite0.items()}
    assert not set(source) & set(efficientnet_lite0)
    opts = _timm_opts("tf_efficientnet_lite0")
    returncode, output = _convert(tmp_path, source, QUICKSTART, opts)
    assert returncode == 0
    model = _load_through_model_weights(QUICKSTART, opts, output)
    for key, value in model.backbone.bottom_up.state_dict().items():
        assert torch.equal(value, efficientnet_lite0[key[len("model.") :]]), key

    conversion = convert_imagenet_state_dict(source, model)
    reasons = dict(conversion.unmatched)
    # Reported under the checkpoint's own names.
    assert reasons["_classifier.weight"] == "ImageNet classifier"
    assert "after the last stage" in reasons["_conv_head.weight"]


def test_checkpoint_in_another_naming_whose_shapes_differ_in_order_writes_nothing(
    tmp_path, efficientnet_lite0
):
    items = [(_efficientnet_pytorch_name(k), v) for k, v in efficientnet_lite0.items()]
    items[0], items[1] = items[1], items[0]
    returncode, output = _convert(
        tmp_path, dict(items), QUICKSTART, _timm_opts("tf_efficientnet_lite0")
    )
    assert returncode == 1 and not output.exists()


def test_output_named_pkl_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        convert_imagenet_checkpoint.main(["in.pth", str(tmp_path / "out.pkl"), "--config", TREES])
