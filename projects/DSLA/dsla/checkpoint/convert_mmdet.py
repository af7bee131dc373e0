"""
Parameter names of the DSLA authors' mmdetection 2.x checkpoints, mapped to this project's
detectron2 models.

mmdetection (left) and detectron2 (this project, right):

- ``backbone.conv1`` / ``bn1``: ``backbone.bottom_up.stem.conv1`` / ``.norm``
- ``backbone.layer{i}.{j}.conv{k}``: ``backbone.bottom_up.res{i+1}.{j}.conv{k}``
- ``backbone.layer{i}.{j}.bn{k}``: ``backbone.bottom_up.res{i+1}.{j}.conv{k}.norm``
- ``backbone.layer{i}.{j}.downsample.0``: ``backbone.bottom_up.res{i+1}.{j}.shortcut``
- ``backbone.layer{i}.{j}.downsample.1``: ``backbone.bottom_up.res{i+1}.{j}.shortcut.norm``
- ``...conv2.conv_offset`` (DCN): ``...conv2.conv_offset``
- ``backbone.stages.{i}.*`` (Swin): ``backbone.bottom_up.layers.*`` (timm; see below)
- ``neck.lateral_convs.{i}.conv``: ``backbone.fpn_lateral{l}``, l = 3, 4, 5
- ``neck.fpn_convs.{i}.conv``: ``backbone.fpn_output{l}``; i = 3, 4: ``backbone.top_block.p6``,
  ``p7``
- ``bbox_head.cls_convs.{i}.conv`` / ``gn``: ``proposal_generator.head.cls_subnet.{n}``: the conv /
  norm of layer i
- ``bbox_head.reg_convs.{i}.*``: ``proposal_generator.head.bbox_subnet.*``, likewise
- ``...convs.{i}.conv.conv_offset`` (DCN): ``..._subnet.{n}.conv_offset``
- ``bbox_head.conv_cls`` / ``conv_reg``: ``proposal_generator.head.cls_score`` / ``bbox_pred``
- ``bbox_head.scales.{i}.scale``: ``proposal_generator.head.scales.{i}.scale``

Swin: mmdetection's ``SwinTransformer`` (``stages.{i}.blocks.{j}.attn.w_msa.*``,
``ffn.layers.0.0`` / ``.1``, ``stages.{i}.downsample`` at the end of stage i,
``patch_embed.projection``, ``norm{i}``) and the official Swin detection code
(``layers.{i}.blocks.{j}.*``, ``layers.{i}.downsample``, ``norm{i}``) are both understood. timm
downsamples at the start of the next stage, and mmdetection's patch merging (``nn.Unfold``) orders
the merged channels differently from the official/timm one; both are converted.

Offsets of deformable convs need no change: mmcv and torchvision both order them (dy, dx) per kernel
tap, and mmcv's DCNv2 takes the first two thirds of its ``conv_offset`` output as offsets and the
sigmoid of the last third as the mask, as :class:`dsla.layers.DeformConv2d` does.

A checkpoint whose keys have no ``backbone.`` / ``neck.`` / ``bbox_head.`` prefix is taken for a
bare backbone (an ImageNet ResNet/ResNeXt in torchvision or mmdetection layout, or a Swin),
converted into the backbone only.
"""

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from torch import Tensor

__all__ = ["Conversion", "convert_mmdet_state_dict"]

# Buffers that the target recomputes, or that a frozen norm does not keep.
_IGNORED_SUFFIXES = ("relative_position_index", "attn_mask", "num_batches_tracked")


@dataclass
class Conversion:
    """
    Result of :func:`convert_mmdet_state_dict`.

    Attributes:
        state_dict: converted tensors by detectron2 name.
        unmatched: source keys not converted, each with the reason.
        missing: target keys that the checkpoint does not provide (left at the model's
            initialization).
    """

    state_dict: Dict[str, Tensor] = field(default_factory=dict)
    unmatched: List[Tuple[str, str]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


def _unfold_to_timm_order(t: Tensor) -> Tensor:
    """
    Reorder the merged-patch channels (last dim, 4C) of a patch merging ``reduction`` weight or
    ``norm`` from mmdetection's ``nn.Unfold`` order ``c * 4 + dh * 2 + dw`` to the official/timm
    order ``(dw * 2 + dh) * C + c``.
    """
    c = t.shape[-1] // 4
    return t.reshape(*t.shape[:-1], c, 2, 2).transpose(-1, -3).flatten(-3)


def _layer_indices(target: Dict[str, Tensor], prefix: str) -> Tuple[List[int], List[int]]:
    """Positions of the convs (4-D weights) and the norms (1-D weights) in the nn.Sequential at
    ``prefix``."""
    convs, norms = [], []
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.weight$")
    for key, value in target.items():
        m = pattern.match(key)
        if m:
            (convs if value.dim() == 4 else norms).append(int(m.group(1)))
    return sorted(convs), sorted(norms)


def _fpn_levels(target: Dict[str, Tensor], name: str) -> List[int]:
    levels = [
        int(m.group(1))
        for k in target
        for m in [re.match(rf"backbone\.{name}(\d+)\.weight$", k)]
        if m
    ]
    return sorted(levels)


def _res(m: re.Match) -> str:
    """``layer{i}.{j}`` -> ``res{i+1}.{j}``."""
    return f"res{int(m['layer']) + 1}.{m['block']}"


def _swin_block(m: re.Match) -> str:
    return f"layers.{m['stage']}.blocks.{m['block']}"


_RESNET_BLOCK = r"layer(?P<layer>\d+)\.(?P<block>\d+)\."
_SWIN_BLOCK = r"stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\."
# Backbone keys (without "backbone.") -> names under the detectron2 backbone's bottom_up.
_BACKBONE_RULES = [
    (r"conv1\.(\w+)$", lambda m: f"stem.conv1.{m[1]}"),
    (r"bn1\.(\w+)$", lambda m: f"stem.conv1.norm.{m[1]}"),
    (_RESNET_BLOCK + r"conv(\d)\.(.+)$", lambda m: f"{_res(m)}.conv{m[3]}.{m[4]}"),
    (_RESNET_BLOCK + r"bn(\d)\.(\w+)$", lambda m: f"{_res(m)}.conv{m[3]}.norm.{m[4]}"),
    (_RESNET_BLOCK + r"downsample\.0\.(\w+)$", lambda m: f"{_res(m)}.shortcut.{m[3]}"),
    (_RESNET_BLOCK + r"downsample\.1\.(\w+)$", lambda m: f"{_res(m)}.shortcut.norm.{m[3]}"),
    (r"patch_embed\.projection\.(\w+)$", lambda m: f"patch_embed.proj.{m[1]}"),
    (_SWIN_BLOCK + r"attn\.w_msa\.(.+)$", lambda m: f"{_swin_block(m)}.attn.{m[3]}"),
    (_SWIN_BLOCK + r"ffn\.layers\.0\.0\.(\w+)$", lambda m: f"{_swin_block(m)}.mlp.fc1.{m[3]}"),
    (_SWIN_BLOCK + r"ffn\.layers\.1\.(\w+)$", lambda m: f"{_swin_block(m)}.mlp.fc2.{m[3]}"),
    (_SWIN_BLOCK + r"(norm\d\.\w+)$", lambda m: f"{_swin_block(m)}.{m[3]}"),
    (r"norm(\d)\.(\w+)$", lambda m: f"out_norms.stage{int(m[1]) + 1}.{m[2]}"),
    # The official Swin and timm share these names.
    (r"(patch_embed\.(proj|norm)\.\w+|layers\.\d+\.blocks\..+)$", lambda m: m[1]),
]
_BACKBONE_RULES = [(re.compile(pattern), rename) for pattern, rename in _BACKBONE_RULES]


class _Renamer:
    """Maps one mmdetection key to (detectron2 key, tensor transform), given the target model's
    layout."""

    def __init__(self, source_keys: List[str], target: Dict[str, Tensor]):
        self.official_swin = "backbone.layers.0.downsample.reduction.weight" in source_keys
        self.towers = {
            "cls": _layer_indices(target, "proposal_generator.head.cls_subnet"),
            "reg": _layer_indices(target, "proposal_generator.head.bbox_subnet"),
        }
        self.laterals = _fpn_levels(target, "fpn_lateral")
        self.outputs = _fpn_levels(target, "fpn_output")

    def __call__(self, key: str) -> Tuple[Optional[str], Optional[Callable[[Tensor], Tensor]]]:
        prefix, _, rest = key.partition(".")
        if prefix == "backbone":
            return self._backbone(rest)
        if prefix == "neck":
            return self._neck(rest), None
        if prefix == "bbox_head":
            return self._head(rest), None
        return None, None

    def _backbone(self, key: str):
        for pattern, rename in _BACKBONE_RULES:
            m = pattern.match(key)
            if m:
                return f"backbone.bottom_up.{rename(m)}", None
        # Patch merging: mmdetection and the official code at the end of stage i, timm at the start
        # of stage i+1.
        m = re.match(r"stages\.(\d+)\.downsample\.(\w+\.\w+)$", key)
        if m:
            return (
                f"backbone.bottom_up.layers.{int(m[1]) + 1}.downsample.{m[2]}",
                _unfold_to_timm_order,
            )
        m = re.match(r"layers\.(\d+)\.downsample\.(\w+\.\w+)$", key)
        if m:
            stage = int(m[1]) + 1 if self.official_swin else int(m[1])
            return f"backbone.bottom_up.layers.{stage}.downsample.{m[2]}", None
        return None, None

    def _neck(self, key: str) -> Optional[str]:
        m = re.match(r"lateral_convs\.(\d+)\.conv\.(\w+)$", key)
        if m and int(m[1]) < len(self.laterals):
            return f"backbone.fpn_lateral{self.laterals[int(m[1])]}.{m[2]}"
        m = re.match(r"fpn_convs\.(\d+)\.conv\.(\w+)$", key)
        if m:
            i = int(m[1])
            if i < len(self.outputs):
                return f"backbone.fpn_output{self.outputs[i]}.{m[2]}"
            # The extra convs, P6 then P7 (LastLevelP6P7).
            extra = {0: "p6", 1: "p7"}.get(i - len(self.outputs))
            return f"backbone.top_block.{extra}.{m[2]}" if extra else None
        return None

    def _head(self, key: str) -> Optional[str]:
        m = re.match(r"(cls|reg)_convs\.(\d+)\.(conv|gn|bn|norm)\.(.+)$", key)
        if m:
            tower, layer, kind, rest = m[1], int(m[2]), m[3], m[4]
            convs, norms = self.towers[tower]
            positions = convs if kind == "conv" else norms
            if layer >= len(positions):
                return None
            subnet = "cls_subnet" if tower == "cls" else "bbox_subnet"
            return f"proposal_generator.head.{subnet}.{positions[layer]}.{rest}"
        m = re.match(r"conv_(cls|reg)\.(\w+)$", key)
        if m:
            return f"proposal_generator.head.{'cls_score' if m[1] == 'cls' else 'bbox_pred'}.{m[2]}"
        m = re.match(r"scales\.(\d+)\.scale$", key)
        if m:
            return f"proposal_generator.head.scales.{m[1]}.scale"
        return None


def convert_mmdet_state_dict(
    state_dict: Dict[str, Tensor], target: Dict[str, Tensor]
) -> Conversion:
    """
    Convert an mmdetection state dict of a DSLA model (or of a bare backbone) to the names of
    ``target``.

    Args:
        state_dict: the checkpoint's ``state_dict``.
        target: ``model.state_dict()`` of the detectron2 model to load into; it decides the names
            that exist (tower layout, FPN levels, frozen norms) and the shapes.

    Returns:
        :class:`Conversion`. Keys of the source that map to no target key, or to one of another
        shape, are reported in ``unmatched``; recomputed buffers (``relative_position_index``,
        ``attn_mask``) and ``num_batches_tracked`` of norms that do not keep it are dropped
        silently.
    """
    bare_backbone = not any(k.startswith(("backbone.", "neck.", "bbox_head.")) for k in state_dict)
    # Source key as reported -> source key in the full model's naming.
    names = {k: f"backbone.{k}" if bare_backbone else k for k in state_dict}
    rename = _Renamer(list(names.values()), target)
    result = Conversion()
    for key, value in state_dict.items():
        new_key, transform = rename(names[key])
        if new_key is None or new_key not in target:
            if not key.endswith(_IGNORED_SUFFIXES):
                reason = (
                    "no mapping"
                    if new_key is None
                    else f"maps to {new_key}, which the model does not have"
                )
                result.unmatched.append((key, reason))
            continue
        if transform is not None:
            value = transform(value)
        expected = target[new_key].shape
        if value.shape != expected:
            # Only singleton dimensions may differ (e.g. a scalar stored as [1]); any other reshape
            # could hide a mis-mapped or transposed weight of the same size.
            if value.squeeze().shape != target[new_key].squeeze().shape:
                result.unmatched.append(
                    (key, f"shape {tuple(value.shape)} != {tuple(expected)} of {new_key}")
                )
                continue
            value = value.reshape(expected)
        if new_key in result.state_dict:
            result.unmatched.append((key, f"{new_key} already converted from another key"))
            continue
        result.state_dict[new_key] = value
    result.missing = [k for k in target if k not in result.state_dict]
    return result
