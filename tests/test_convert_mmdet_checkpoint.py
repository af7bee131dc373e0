"""
tools/convert_mmdet_checkpoint.py and dsla.checkpoint: the authors' mmdetection checkpoints into the
DSLA models.

The checkpoints are built here under mmdetection's names and shapes (ResNet/ResNeXt, Swin, FPN, the
FCOS-style head), with random values; numerical checks compare the converted modules with
computations written from the mmdetection modules' definitions.
"""

import importlib.util
import os
import re

import pytest
import torch
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from dsla.checkpoint import convert_mmdet_state_dict

from conftest import REPO_ROOT, load_config

R101_DCN = "configs/DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml"
X101_DCN = "configs/DSLA/dsla_X_101_64x4d_DCN_FPN_ms_2x.yaml"
R50 = "configs/DSLA/dsla_R_50_FPN_1x.yaml"
SWIN_S = "configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml"
# Smaller variants of the same families keep the test fast; the names are the same.
RESNET_OPTS = ["MODEL.RESNETS.DEPTH", 50]
SWIN_OPTS = ["MODEL.SWIN.NAME", "swin_tiny_patch4_window7_224"]


def _load_tool():
    path = os.path.join(REPO_ROOT, "tools", "convert_mmdet_checkpoint.py")
    spec = importlib.util.spec_from_file_location("convert_mmdet_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert_tool = _load_tool()


class _StateDict(dict):
    """An mmdetection state dict under construction, with random values."""

    def __init__(self, seed=0):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def tensor(self, key, *shape, std=1.0):
        self[key] = torch.randn(*shape, generator=self.gen) * std

    def bn(self, prefix, channels):
        self.tensor(f"{prefix}.weight", channels)
        self.tensor(f"{prefix}.bias", channels)
        self.tensor(f"{prefix}.running_mean", channels, std=0.1)
        self[f"{prefix}.running_var"] = torch.rand(channels, generator=self.gen) + 0.5
        self[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    def conv(self, prefix, out_channels, in_channels, k, bias=True, std=None):
        std = std if std is not None else (2.0 / (in_channels * k * k)) ** 0.5
        self.tensor(f"{prefix}.weight", out_channels, in_channels, k, k, std=std)
        if bias:
            self.tensor(f"{prefix}.bias", out_channels, std=0.1)


def mmdet_resnet(sd, depth=50, groups=1, width_per_group=64, dcn_stages=(False, True, True, True)):
    """mmdetection's ResNet / ResNeXt (``backbone.*``): ``conv1``, ``bn1``, ``layer{i}.{j}.*``."""
    sd.conv("backbone.conv1", 64, 3, 7, bias=False)
    sd.bn("backbone.bn1", 64)
    in_channels = 64
    for i, num_blocks in enumerate({50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]):
        width = groups * width_per_group * 2**i
        out_channels = 256 * 2**i
        for j in range(num_blocks):
            p = f"backbone.layer{i + 1}.{j}"
            sd.conv(f"{p}.conv1", width, in_channels, 1, bias=False)
            sd.bn(f"{p}.bn1", width)
            sd.conv(f"{p}.conv2", width, width // groups, 3, bias=False)
            if dcn_stages[i]:
                sd.conv(f"{p}.conv2.conv_offset", 18, width, 3, std=0.01)
            sd.bn(f"{p}.bn2", width)
            sd.conv(f"{p}.conv3", out_channels, width, 1, bias=False)
            sd.bn(f"{p}.bn3", out_channels)
            if j == 0:
                sd.conv(f"{p}.downsample.0", out_channels, in_channels, 1, bias=False)
                sd.bn(f"{p}.downsample.1", out_channels)
            in_channels = out_channels
    return [512, 1024, 2048]


def mmdet_swin(sd, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), dim=96, window=7):
    """mmdetection's SwinTransformer with ``out_indices=(1, 2, 3)``."""
    sd.conv("backbone.patch_embed.projection", dim, 3, 4)
    sd.tensor("backbone.patch_embed.norm.weight", dim)
    sd.tensor("backbone.patch_embed.norm.bias", dim)
    for i, (depth, num_heads) in enumerate(zip(depths, heads)):
        d = dim * 2**i
        for j in range(depth):
            p = f"backbone.stages.{i}.blocks.{j}"
            for norm in ("norm1", "norm2"):
                sd.tensor(f"{p}.{norm}.weight", d)
                sd.tensor(f"{p}.{norm}.bias", d)
            sd.tensor(
                f"{p}.attn.w_msa.relative_position_bias_table",
                (2 * window - 1) ** 2,
                num_heads,
                std=0.02,
            )
            sd[f"{p}.attn.w_msa.relative_position_index"] = torch.zeros(
                window**2, window**2, dtype=torch.long
            )
            for name, out_features, in_features in [
                ("attn.w_msa.qkv", 3 * d, d),
                ("attn.w_msa.proj", d, d),
                ("ffn.layers.0.0", 4 * d, d),
                ("ffn.layers.1", d, 4 * d),
            ]:
                sd.tensor(f"{p}.{name}.weight", out_features, in_features, std=0.02)
                sd.tensor(f"{p}.{name}.bias", out_features, std=0.02)
        if i < len(depths) - 1:
            sd.tensor(f"backbone.stages.{i}.downsample.norm.weight", 4 * d)
            sd.tensor(f"backbone.stages.{i}.downsample.norm.bias", 4 * d)
            sd.tensor(f"backbone.stages.{i}.downsample.reduction.weight", 2 * d, 4 * d, std=0.02)
    for i in (1, 2, 3):
        sd.tensor(f"backbone.norm{i}.weight", dim * 2**i)
        sd.tensor(f"backbone.norm{i}.bias", dim * 2**i)
    return [dim * 2, dim * 4, dim * 8]


def mmdet_fpn_and_head(sd, in_channels, conv_bias=True, dcn_on_last_conv=True, num_classes=80):
    """mmdetection's FPN (P6 on the P5 output, P7) and the FCOS-style head without centerness."""
    for i, c in enumerate(in_channels):
        sd.conv(f"neck.lateral_convs.{i}.conv", 256, c, 1)
    for i in range(5):
        sd.conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            p = f"bbox_head.{tower}.{i}"
            sd.conv(f"{p}.conv", 256, 256, 3, bias=conv_bias, std=0.02)
            if dcn_on_last_conv and i == 3:
                # Offsets of a few pixels, so that a wrong offset layout shows.
                sd.conv(f"{p}.conv.conv_offset", 27, 256, 3, std=0.02)
            sd.tensor(f"{p}.gn.weight", 256)
            sd.tensor(f"{p}.gn.bias", 256)
    sd.conv("bbox_head.conv_cls", num_classes, 256, 3, std=0.02)
    sd.conv("bbox_head.conv_reg", 4, 256, 3, std=0.02)
    for i in range(5):
        sd[f"bbox_head.scales.{i}.scale"] = torch.tensor(1.0 + 0.1 * i)


def _convert(tmp_path, state_dict, config, opts, *extra_args):
    source, output = tmp_path / "mmdet.pth", tmp_path / "converted.pth"
    torch.save({"meta": {"mmdet_version": "2.25.0"}, "state_dict": dict(state_dict)}, source)
    args = [
        str(source),
        str(output),
        "--config",
        os.path.join(REPO_ROOT, config),
        *extra_args,
        *map(str, opts),
    ]
    return convert_tool.main(args), output


def _load_converted(config, opts, output):
    """Load strictly (no missing or unexpected key), then through detectron2's checkpointer."""
    model = build_model(load_config(config, opts)).eval()
    model.load_state_dict(torch.load(output)["model"], strict=True)
    DetectionCheckpointer(model).load(str(output))
    return model


@pytest.fixture(scope="module")
def r101_dcn(tmp_path_factory):
    sd = _StateDict()
    mmdet_fpn_and_head(sd, mmdet_resnet(sd))
    returncode, output = _convert(
        tmp_path_factory.mktemp("r101"), sd, R101_DCN, RESNET_OPTS, "--strict"
    )
    assert returncode == 0
    return sd, _load_converted(R101_DCN, RESNET_OPTS, output)


def test_resnet_dcn_checkpoint_loads_with_every_key_in_place(r101_dcn):
    sd, model = r101_dcn
    resnet, head = model.backbone.bottom_up, model.proposal_generator.head
    for ours, key in [
        (resnet.res4[2].conv2.conv_offset.weight, "backbone.layer3.2.conv2.conv_offset.weight"),
        (resnet.res3[0].shortcut.norm.running_var, "backbone.layer2.0.downsample.1.running_var"),
        (model.backbone.fpn_lateral5.weight, "neck.lateral_convs.2.conv.weight"),
        (model.backbone.top_block.p6.weight, "neck.fpn_convs.3.conv.weight"),
        (model.backbone.top_block.p7.bias, "neck.fpn_convs.4.conv.bias"),
        (head.bbox_subnet[9].conv_offset.weight, "bbox_head.reg_convs.3.conv.conv_offset.weight"),
        (head.scales[4].scale, "bbox_head.scales.4.scale"),
    ]:
        torch.testing.assert_close(ours, sd[key], msg=key)


def _reference_head(sd, features, strides):
    """The mmdetection head (FCOSHead without centerness, norm_on_bbox) written out from the
    checkpoint."""

    def tower(name, x):
        for i in range(4):
            p = f"bbox_head.{name}.{i}.conv"
            if f"{p}.conv_offset.weight" in sd:
                # mmcv's ModulatedDeformConv2dPack: chunk into (o1, o2, mask), offsets cat(o1, o2),
                # sigmoid mask.
                offset_mask = F.conv2d(
                    x, sd[f"{p}.conv_offset.weight"], sd[f"{p}.conv_offset.bias"], padding=1
                )
                o1, o2, mask = torch.chunk(offset_mask, 3, dim=1)
                offset = torch.cat([o1, o2], dim=1)
                x = deform_conv2d(
                    x,
                    offset,
                    sd[f"{p}.weight"],
                    sd.get(f"{p}.bias"),
                    padding=1,
                    mask=mask.sigmoid(),
                )
            else:
                x = F.conv2d(x, sd[f"{p}.weight"], sd.get(f"{p}.bias"), padding=1)
            gn = f"bbox_head.{name}.{i}.gn"
            x = F.relu(F.group_norm(x, 32, sd[f"{gn}.weight"], sd[f"{gn}.bias"]))
        return x

    def conv(name, x):
        return F.conv2d(x, sd[f"bbox_head.{name}.weight"], sd[f"bbox_head.{name}.bias"], padding=1)

    logits, distances = [], []
    for level, (x, stride) in enumerate(zip(features, strides)):
        logits.append(conv("conv_cls", tower("cls_convs", x)))
        raw = conv("conv_reg", tower("reg_convs", x))
        distances.append(F.relu(raw * sd[f"bbox_head.scales.{level}.scale"]) * stride)
    return logits, distances


def test_converted_head_computes_what_the_mmdetection_head_computes(r101_dcn):
    sd, model = r101_dcn
    head = model.proposal_generator.head
    gen = torch.Generator().manual_seed(1)
    strides = [8, 16, 32, 64, 128]
    features = [
        torch.randn(1, 256, h, w, generator=gen)
        for h, w in [(10, 12), (5, 6), (3, 3), (2, 2), (1, 1)]
    ]
    with torch.no_grad():
        logits, distances = head(features)
        expected_logits, expected_distances = _reference_head(sd, features, strides)
    for ours, theirs in zip(logits + distances, expected_logits + expected_distances):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_converted_deformable_bottleneck_computes_what_the_mmdetection_block_computes(r101_dcn):
    # layer2.0 of a pytorch-style ResNet: stride 2 in the deformable 3x3 conv, projection shortcut.
    sd, model = r101_dcn
    p = "backbone.layer2.0"

    def bn(x, name):
        return F.batch_norm(
            x,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
        )

    x = torch.randn(1, 256, 12, 14, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
        offset_conv = sd[f"{p}.conv2.conv_offset.weight"], sd[f"{p}.conv2.conv_offset.bias"]
        offset = F.conv2d(out, *offset_conv, stride=2, padding=1)
        out = deform_conv2d(out, offset, sd[f"{p}.conv2.weight"], stride=2, padding=1)
        out = F.relu(bn(out, f"{p}.bn2"))
        out = bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
        shortcut = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2), f"{p}.downsample.1")
        expected = F.relu(out + shortcut)
        torch.testing.assert_close(
            model.backbone.bottom_up.res3[0](x), expected, rtol=1e-4, atol=1e-4
        )


@pytest.mark.parametrize(
    "config,backbone_kwargs,head_kwargs",
    [
        (X101_DCN, dict(groups=64, width_per_group=4, dcn_stages=(False, False, True, True)), {}),
        (R50, dict(dcn_stages=(False,) * 4), dict(conv_bias=False, dcn_on_last_conv=False)),
    ],
)
def test_other_resnet_models_convert_without_unmatched_or_missing_keys(
    tmp_path, config, backbone_kwargs, head_kwargs
):
    sd = _StateDict()
    mmdet_fpn_and_head(sd, mmdet_resnet(sd, **backbone_kwargs), **head_kwargs)
    returncode, output = _convert(tmp_path, sd, config, RESNET_OPTS, "--strict")
    assert returncode == 0
    _load_converted(config, RESNET_OPTS, output)


@pytest.fixture(scope="module")
def swin_model(tmp_path_factory):
    sd = _StateDict()
    mmdet_fpn_and_head(sd, mmdet_swin(sd))
    returncode, output = _convert(
        tmp_path_factory.mktemp("swin"), sd, SWIN_S, SWIN_OPTS, "--strict"
    )
    assert returncode == 0
    return sd, _load_converted(SWIN_S, SWIN_OPTS, output)


def test_swin_checkpoint_loads_with_every_key_in_place(swin_model):
    sd, model = swin_model
    swin = model.backbone.bottom_up
    block = "backbone.stages.3.blocks.1.attn.w_msa"
    for ours, key in [
        (swin.layers[2].blocks[5].attn.qkv.bias, "backbone.stages.2.blocks.5.attn.w_msa.qkv.bias"),
        (
            swin.layers[3].blocks[1].attn.relative_position_bias_table,
            f"{block}.relative_position_bias_table",
        ),
        (swin.layers[1].blocks[0].mlp.fc2.weight, "backbone.stages.1.blocks.0.ffn.layers.1.weight"),
        (swin.patch_embed.proj.weight, "backbone.patch_embed.projection.weight"),
        (swin.out_norms["stage4"].bias, "backbone.norm3.bias"),
        (model.backbone.fpn_lateral3.weight, "neck.lateral_convs.0.conv.weight"),
    ]:
        torch.testing.assert_close(ours, sd[key], msg=key)


def test_swin_patch_merging_computes_what_mmdetections_unfold_merging_computes(swin_model):
    sd, model = swin_model
    p = "backbone.stages.1.downsample"  # 192 -> 384 channels, before stage 3
    x = torch.randn(2, 6, 10, 192, generator=torch.Generator().manual_seed(3))  # [N, H, W, C]
    with torch.no_grad():
        # mmdetection: nn.Unfold(2, stride=2) on NCHW, channels ordered (c, dh, dw), then norm and
        # reduction.
        merged = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)
        merged = F.layer_norm(merged, (4 * 192,), sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"])
        expected = (merged @ sd[f"{p}.reduction.weight"].T).reshape(2, 3, 5, 384)
        torch.testing.assert_close(
            model.backbone.bottom_up.layers[2].downsample(x), expected, rtol=1e-4, atol=1e-4
        )


def test_official_swin_names_convert_too(swin_model):
    sd, model = swin_model
    official = {}
    for k, v in sd.items():
        if ".downsample." in k:
            # The official code merges patches in (h, w) order: undo mmdetection's unfold order.
            c = v.shape[-1] // 4
            v = v.reshape(*v.shape[:-1], c, 2, 2).transpose(-1, -3).flatten(-3)
        k = k.replace("backbone.stages.", "backbone.layers.").replace("attn.w_msa.", "attn.")
        k = k.replace("ffn.layers.0.0", "mlp.fc1").replace("ffn.layers.1", "mlp.fc2")
        official[k.replace("patch_embed.projection", "patch_embed.proj")] = v
    conversion = convert_mmdet_state_dict(official, model.state_dict())
    assert not conversion.unmatched and not conversion.missing
    for key, value in model.state_dict().items():
        torch.testing.assert_close(conversion.state_dict[key], value, msg=key)


def test_every_unmatched_key_is_reported_and_strict_refuses_to_write(tmp_path):
    sd = _StateDict()
    mmdet_fpn_and_head(sd, mmdet_resnet(sd), conv_bias=False, dcn_on_last_conv=False)
    sd.conv("bbox_head.conv_centerness", 1, 256, 3)
    sd.tensor("backbone.fc.weight", 1000, 2048)
    del sd["bbox_head.scales.4.scale"]
    # The R-50 model has no deformable stage: the DCN offsets of the checkpoint have no place there.
    target = build_model(load_config(R50, RESNET_OPTS)).state_dict()
    conversion = convert_mmdet_state_dict(sd, target)
    unmatched = {key for key, _ in conversion.unmatched}
    offsets = {k for k in sd if re.search(r"conv2\.conv_offset", k)}
    centerness = {"bbox_head.conv_centerness.weight", "bbox_head.conv_centerness.bias"}
    assert unmatched == centerness | {"backbone.fc.weight"} | offsets
    assert conversion.missing == ["proposal_generator.head.scales.4.scale"]

    returncode, output = _convert(tmp_path, sd, R50, RESNET_OPTS, "--strict")
    assert returncode == 1 and not output.exists()


def test_a_bare_imagenet_backbone_converts_into_the_backbone():
    # torchvision's / mmdetection's ImageNet ResNets: the ResNet names without the "backbone."
    # prefix.
    sd = _StateDict()
    mmdet_resnet(sd, dcn_stages=(False,) * 4)
    bare = {k[len("backbone.") :]: v for k, v in sd.items()}
    bare["fc.weight"] = torch.zeros(1000, 2048)
    target = build_model(load_config(R50, RESNET_OPTS)).state_dict()
    conversion = convert_mmdet_state_dict(bare, target)
    assert [key for key, _ in conversion.unmatched] == ["fc.weight"]
    assert all(not k.startswith("backbone.bottom_up.") for k in conversion.missing)
    converted = conversion.state_dict["backbone.bottom_up.res5.2.conv3.weight"]
    torch.testing.assert_close(converted, bare["layer4.2.conv3.weight"])
