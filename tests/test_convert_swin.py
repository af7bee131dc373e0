"""
dsla.checkpoint.convert_swin and tools/convert_swin_checkpoint.py (the ImageNet converter with the
Swin-S config): ImageNet Swin checkpoints (official release or timm) become a MODEL.WEIGHTS file
that loads into the Swin detector.
"""

import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from detectron2.modeling import build_model

from dsla.checkpoint import AtomicCheckpointer
from dsla.checkpoint.convert_swin import convert_swin_state_dict
from tools import convert_swin_checkpoint

from conftest import load_config

# Swin-T: Swin-S's layout with fewer blocks in stage 3, faster to build.
TINY = "swin_tiny_patch4_window7_224"
# The Swin-S config (the converter's default) with Swin-T, faster to build.
TINY_OPTS = ["MODEL.SWIN.NAME", TINY]
SWIN_CONFIG = "configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml"
DROPPED = {"head.weight", "head.bias", "norm.weight", "norm.bias"}


@pytest.fixture(scope="module")
def imagenet_swin():
    """A timm Swin-T with a 1000-class head, weights drawn at random (as if trained on ImageNet)."""
    torch.manual_seed(1)
    return timm.create_model(TINY, num_classes=1000).state_dict()


def _timm_to_official(state_dict):
    """
    timm's names -> the official release's: patch merging at the end of the previous stage,
    classifier ``head``, and the buffers the official checkpoints carry.
    """
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", k)
        out[k.replace("head.fc.", "head.")] = v
    out["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    out["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    return out


def _timm_features_only(state_dict):
    """Names of a timm ``features_only`` model (flattened stages, ``layers_{i}``)."""
    return {re.sub(r"^layers\.(\d+)\.", r"layers_\1.", k): v for k, v in state_dict.items()}


@pytest.fixture(scope="module")
def detector():
    """The Swin config's detector with Swin-T; only its names and shapes are used."""
    return build_model(load_config(SWIN_CONFIG, TINY_OPTS))


@pytest.mark.parametrize("layout", ["official", "timm", "timm_safetensors", "timm_features_only"])
def test_imagenet_checkpoint_loads_through_model_weights_into_the_whole_trunk(
    tmp_path, imagenet_swin, detector, layout
):
    path = tmp_path / "swin_tiny_d2.pth"
    if layout == "official":
        source = tmp_path / "swin_tiny_patch4_window7_224.pth"
        torch.save({"model": _timm_to_official(imagenet_swin)}, source)
    elif layout == "timm_safetensors":
        source = tmp_path / "model.safetensors"
        save_file(imagenet_swin, source)
    else:
        source = tmp_path / "pytorch_model.bin"
        torch.save(
            imagenet_swin if layout == "timm" else _timm_features_only(imagenet_swin), source
        )
    assert convert_swin_checkpoint.main([str(source), str(path), *TINY_OPTS]) == 0

    with torch.no_grad():
        for p in detector.backbone.bottom_up.parameters():
            p.fill_(float("nan"))
    AtomicCheckpointer(detector).load(str(path))
    loaded = torch.load(path)["model"]
    ours = detector.state_dict()
    trunk = {k for k in ours if k.startswith("backbone.bottom_up.") and ".out_norms." not in k}
    # Every parameter of the trunk comes from the file, and everything in the file has its place.
    # Official checkpoints merge patches at the end of stage i, timm (the reference here) at the
    # start of stage i + 1.
    assert set(loaded) == trunk
    for key in trunk:
        timm_key = key[len("backbone.bottom_up.") :]
        torch.testing.assert_close(ours[key], imagenet_swin[timm_key], msg=key, rtol=0, atol=0)


def test_classifier_final_norm_and_foreign_keys_are_reported_not_converted(imagenet_swin):
    source = {**_timm_to_official(imagenet_swin), "fc.weight": torch.zeros(1000, 768)}
    converted, unmatched = convert_swin_state_dict(source)
    reasons = dict(unmatched)
    assert set(reasons) == DROPPED | {"fc.weight"}
    assert "classifier" in reasons["head.weight"] and "out_norms" in reasons["norm.weight"]
    # Buffers that timm recomputes are dropped without a report.
    assert not any("relative_position_index" in k or "attn_mask" in k for k in converted)


def test_a_checkpoint_of_another_model_writes_nothing(tmp_path):
    source, output = tmp_path / "resnet.pth", tmp_path / "out.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, source)
    assert convert_swin_checkpoint.main([str(source), str(output), *TINY_OPTS]) == 1
    assert not output.exists()
