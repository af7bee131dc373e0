"""dsla.modeling.backbone.swin: timm's Swin Transformer as a detectron2 backbone."""

import math

import pytest
import timm
import torch
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model

from dsla.modeling.backbone.swin import SwinTransformer, _swin_block_forward

from conftest import load_config

# Swin-T has Swin-S's widths, heads and window with fewer blocks: the same code paths, faster.
TINY = "swin_tiny_patch4_window7_224"
ALL_STAGES = ("stage1", "stage2", "stage3", "stage4")


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return SwinTransformer(name=TINY, drop_path_rate=0.0, out_features=ALL_STAGES).eval()


@pytest.mark.parametrize("size", [(97, 131), (64, 96), (33, 250)])
def test_outputs_are_nchw_at_strides_4_to_32_for_any_input_size(swin, size):
    with torch.no_grad():
        outputs = swin(torch.randn(2, 3, *size))
    shapes = swin.output_shape()
    assert list(outputs) == list(ALL_STAGES)
    for name, feature in outputs.items():
        stride = shapes[name].stride
        expected = (
            2,
            shapes[name].channels,
            math.ceil(size[0] / stride),
            math.ceil(size[1] / stride),
        )
        assert tuple(feature.shape) == expected
    assert [shapes[n].stride for n in ALL_STAGES] == [4, 8, 16, 32]
    assert [shapes[n].channels for n in ALL_STAGES] == [96, 192, 384, 768]
    assert swin.size_divisibility == 32


def test_matches_timm_where_feature_maps_are_whole_windows(swin):
    # 224 x 448: every stage is a multiple of the 7x7 window, so padding order does not matter.
    reference = timm.create_model(
        TINY, num_classes=0, always_partition=True, strict_img_size=False
    ).eval()
    reference.load_state_dict(swin.state_dict(), strict=False)
    x = torch.randn(1, 3, 224, 448)
    with torch.no_grad():
        ours = swin(x)
        theirs = reference.forward_intermediates(x, intermediates_only=True, norm=False)
    for name, feature in zip(ALL_STAGES, theirs):
        expected = swin.out_norms[name](feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(ours[name], expected, rtol=1e-4, atol=1e-4)


def test_blocks_pad_to_whole_windows_before_the_cyclic_shift(swin):
    # The detection Swin (official, mmdetection): normalize, pad with zeros to whole windows, then
    # shift. timm's own attention is exact on whole windows, so it serves as the reference on the
    # padded map.
    block = swin.layers[0].blocks[1]
    assert block.shift_size == (3, 3)
    x = torch.randn(1, 10, 12, 96)
    with torch.no_grad():
        padded = F.pad(block.norm1(x), (0, 0, 0, 2, 0, 4))  # 14 x 14
        attn = block._attn(padded)[:, :10, :12]
        expected = x + attn
        expected = expected + block.mlp(block.norm2(expected))
        torch.testing.assert_close(
            _swin_block_forward(block, x, {}), expected, rtol=1e-5, atol=1e-5
        )


def test_the_swin_s_config_builds_with_no_weights_file_anywhere(tmp_path, monkeypatch):
    # Weights arrive through MODEL.WEIGHTS (DetectionCheckpointer), never while building: an empty
    # working directory, and any read of a checkpoint fails the test.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "load", _no_file_read)
    monkeypatch.setattr(timm.models, "load_state_dict", _no_file_read)
    model = build_model(load_config("configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml"))
    swin = model.backbone.bottom_up
    assert isinstance(swin, SwinTransformer)
    assert [len(stage.blocks) for stage in swin.layers] == [2, 2, 18, 2]  # Swin-S


def _no_file_read(*args, **kwargs):
    raise AssertionError(f"building a model read a file: {args}")


def test_an_old_config_naming_pretrained_weights_still_loads():
    cfg = load_config(
        "configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml", ["MODEL.SWIN.PRETRAINED_WEIGHTS", "swin.pth"]
    )
    assert "PRETRAINED_WEIGHTS" not in cfg.MODEL.SWIN


def test_config_sets_drop_path_freezing_and_fpn_levels():
    cfg = load_config(
        "configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml",
        ["MODEL.SWIN.NAME", TINY, "MODEL.BACKBONE.FREEZE_AT", 2],
    )
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    swin = backbone.bottom_up
    last_block = swin.layers[-1].blocks[-1]
    assert last_block.drop_path1.drop_prob == pytest.approx(0.2)
    # FREEZE_AT 2: patch embedding and stage 1.
    assert not any(p.requires_grad for p in swin.patch_embed.parameters())
    assert not any(p.requires_grad for p in swin.layers[0].parameters())
    assert all(p.requires_grad for p in swin.layers[1].parameters())
    strides = {k: v.stride for k, v in backbone.output_shape().items()}
    assert strides == {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    backbone.train()
    outputs = backbone(torch.randn(1, 3, 64, 96))
    sum(v.sum() for v in outputs.values()).backward()
    assert swin.layers[3].blocks[1].attn.relative_position_bias_table.grad is not None


def test_scripting_is_a_clear_error_that_names_tracing(swin):
    with pytest.raises(
        RuntimeError, match="Swin backbone .* cannot be scripted.*tools/export_model"
    ):
        torch.jit.script(swin)
