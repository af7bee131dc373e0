"""
ImageNet Swin Transformer checkpoints, renamed for this project's Swin backbone so that
``MODEL.WEIGHTS`` loads them into a detector (``build_dsla_swin_fpn_backbone``).

Two layouts are understood:

- the official Swin release (https://github.com/microsoft/Swin-Transformer, e.g.
  ``swin_small_patch4_window7_224.pth``): ``{"model": ...}`` with ``layers.{i}.blocks.{j}.*``, the
  patch merging at the end of stage i (``layers.{i}.downsample``) and the classifier as ``head``;
- timm's ``swin_small_patch4_window7_224`` (``layers.{i}.*``, or ``layers_{i}.*`` from a
  ``features_only`` model): the patch merging at the start of stage i, the classifier as
  ``head.fc``.

Either becomes ``backbone.bottom_up.<timm name>``. The classifier and the final norm have no place
in a detector, which normalizes each output stage with a LayerNorm of its own (``out_norms``,
initialized fresh as in the official Swin detection code); they are dropped and reported.
"""

import re
from typing import Dict, List, Tuple

from torch import Tensor

__all__ = ["convert_swin_state_dict"]

PREFIX = "backbone.bottom_up."

# Buffers that timm recomputes from the window size.
_RECOMPUTED = ("relative_position_index", "attn_mask")
_DROPPED = {
    "head": "ImageNet classifier",
    "norm": (
        "final norm of the classifier; the detector normalizes each output stage with its own "
        "out_norms"
    ),
}


def convert_swin_state_dict(
    state_dict: Dict[str, Tensor],
) -> Tuple[Dict[str, Tensor], List[Tuple[str, str]]]:
    """
    Rename an ImageNet Swin state dict (official or timm layout) to this project's detector.

    Args:
        state_dict: the checkpoint's tensors (the official release's ``"model"`` entry, or timm's
            file).

    Returns:
        (converted, unmatched): tensors by detector name (``backbone.bottom_up.*``), and the source
        keys left out, each with the reason. Recomputed buffers (``relative_position_index``,
        ``attn_mask``) are dropped silently.
    """
    state_dict = {re.sub(r"^layers_(\d+)\.", r"layers.\1.", k): v for k, v in state_dict.items()}
    # The official layout is the one with patch merging in stage 0; timm's stage 0 has none.
    official = "layers.0.downsample.reduction.weight" in state_dict
    converted, unmatched = {}, []
    for key, value in state_dict.items():
        if key.endswith(_RECOMPUTED):
            continue
        root = key.split(".", 1)[0]
        if root in _DROPPED:
            unmatched.append((key, _DROPPED[root]))
            continue
        m = re.match(r"layers\.(\d+)\.downsample\.(.+)$", key)
        if m and official:
            key = f"layers.{int(m[1]) + 1}.downsample.{m[2]}"
        elif not (m or re.match(r"(patch_embed\.(proj|norm)|layers\.\d+\.blocks)\.", key)):
            unmatched.append((key, "not a parameter of the Swin trunk"))
            continue
        converted[PREFIX + key] = value
    return converted, unmatched
