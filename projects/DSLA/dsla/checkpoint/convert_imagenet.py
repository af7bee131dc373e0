"""
ImageNet classification checkpoints mapped onto the bottom-up backbone of a DSLA model, so that
``MODEL.WEIGHTS`` starts a detector from them, as detectron2's
``tools/convert-torchvision-to-d2.py`` does for its ResNets. The model decides the mapping:

- :class:`~dsla.modeling.backbone.MobileNetV2`: torchvision's names (``features.{i}.*``) under
  ``backbone.bottom_up.``; the classifier and the blocks after the last output stage are dropped.
- :class:`~dsla.modeling.backbone.TimmBackbone`: a timm model's names (``stages.0.*``, as timm's
  files and ``timm.create_model(name).state_dict()`` have them) become those of its
  ``features_only`` extractor, which may wrap the model (``model.*``) or flatten its top-level
  ``nn.Sequential`` children (``stages.0`` -> ``stages_0``). A file in another naming whose tensors
  are, in order, those of the timm model with the same shapes (efficientnet_pytorch's
  EfficientNet-Lite0 for ``tf_efficientnet_lite0``) is matched by that order.
- :class:`~dsla.modeling.backbone.SwinTransformer`: the official release's or timm's layout
  (:mod:`dsla.checkpoint.convert_swin`).
- detectron2's ``ResNet`` (also with DCN): torchvision's and timm's ResNet/ResNeXt names, by the
  rules of :mod:`dsla.checkpoint.convert_mmdet`. detectron2's own ``.pkl`` files (MSRA R-50 ...)
  need no conversion: ``MODEL.WEIGHTS`` reads them as they are.

Tensors of the source that have no place are reported with the reason; ``num_batches_tracked`` of
norms that keep none (detectron2's ``FrozenBatchNorm2d`` built frozen) are dropped silently.
"""

import logging
from typing import Callable, Dict, Iterator, Optional, Tuple

import timm
from torch import Tensor, nn

from detectron2.modeling.backbone import ResNet

from ..modeling.backbone import MobileNetV2, SwinTransformer, TimmBackbone
from .convert_mmdet import Conversion, convert_mmdet_state_dict
from .convert_swin import convert_swin_state_dict

__all__ = ["PREFIX", "convert_imagenet_state_dict"]

logger = logging.getLogger(__name__)

# Where the bottom-up backbone of a DSLA model (under its FPN) keeps its parameters.
PREFIX = "backbone.bottom_up."
CLASSIFIER = "ImageNet classifier"

# rename(source key) -> (target key, None), or (None, why it has no place).
Rename = Callable[[str], Tuple[Optional[str], Optional[str]]]


def convert_imagenet_state_dict(state_dict: Dict[str, Tensor], model: nn.Module) -> Conversion:
    """
    Map an ImageNet checkpoint onto the bottom-up backbone of ``model``.

    Args:
        state_dict: the checkpoint's tensors by the source's names.
        model: the detector to load into (``model.backbone.bottom_up``, e.g. an FPN's); its
            backbone type decides the mapping, its ``state_dict()`` the names and shapes.

    Returns:
        :class:`Conversion`: the tensors by target name (``state_dict``), the source keys not used
        with the reason (``unmatched``), and every target key the checkpoint leaves at its
        initialization (``missing``: the backbone's, then the FPN's and the head's).
    """
    bottom_up = getattr(model.backbone, "bottom_up", None)
    if bottom_up is None:
        raise ValueError(
            f"Expected a backbone with a bottom_up (an FPN); got {type(model.backbone).__name__}"
        )
    target = model.state_dict()
    if isinstance(bottom_up, ResNet):
        conversion = convert_mmdet_state_dict(state_dict, target)
        conversion.unmatched = [
            (k, CLASSIFIER if k.startswith("fc.") else reason) for k, reason in conversion.unmatched
        ]
        return conversion
    if isinstance(bottom_up, SwinTransformer):
        renamed, unmatched = convert_swin_state_dict(state_dict)
        conversion = _fill(renamed, target, lambda k: (k, None))
        conversion.unmatched = unmatched + conversion.unmatched
        return conversion
    if isinstance(bottom_up, MobileNetV2):
        return _fill(state_dict, target, _torchvision_mobilenet_v2)
    if isinstance(bottom_up, TimmBackbone):
        return _convert_timm(state_dict, target, bottom_up.model)
    raise ValueError(f"No ImageNet checkpoint mapping for the backbone {type(bottom_up).__name__}")


def _fill(state_dict: Dict[str, Tensor], target: Dict[str, Tensor], rename: Rename) -> Conversion:
    """The tensors of ``state_dict`` under the names ``rename`` gives them, where ``target`` has a
    tensor of that name and shape."""
    result = Conversion()
    for key, value in state_dict.items():
        new_key, reason = rename(key)
        if new_key is not None and new_key not in target:
            new_key, reason = None, f"maps to {new_key}, which the model does not have"
        if new_key is None:
            if not key.endswith("num_batches_tracked"):
                result.unmatched.append((key, reason))
            continue
        expected = target[new_key].shape
        if value.shape != expected:
            result.unmatched.append(
                (key, f"shape {tuple(value.shape)} != {tuple(expected)} of {new_key}")
            )
            continue
        result.state_dict[new_key] = value
    result.missing = [k for k in target if k not in result.state_dict]
    return result


def _torchvision_mobilenet_v2(key: str) -> Tuple[Optional[str], Optional[str]]:
    if key.startswith("classifier."):
        return None, CLASSIFIER
    return PREFIX + key, None


def _feature_names(name: str) -> Iterator[str]:
    """
    The names that the tensor ``name`` of a timm ``features_only`` extractor may have in the full
    model: the same; without the ``model.`` of an extractor that wraps the model
    (``FeatureGetterNet``); with an ``_`` of its top-level module as the ``.`` that
    ``FeatureListNet`` flattened (``stages_0.blocks`` for ``stages.0.blocks``).
    """
    yield name
    if name.startswith("model."):
        yield name[len("model.") :]
    top, _, rest = name.partition(".")
    for i, char in enumerate(top):
        if char == "_":
            yield f"{top[:i]}.{top[i + 1 :]}.{rest}"


def _convert_timm(
    state_dict: Dict[str, Tensor], target: Dict[str, Tensor], features: nn.Module
) -> Conversion:
    """Map a timm checkpoint of the full model (classifier included) onto the ``features_only``
    extractor ``features`` (``TimmBackbone.model``)."""
    architecture = features.pretrained_cfg["architecture"]
    full_model = timm.create_model(architecture, pretrained=False)
    full = full_model.state_dict()
    # Timm name -> the checkpoint's, where they differ.
    original = {}
    if not set(state_dict) & set(full):
        state_dict, original = _rename_by_order(state_dict, full, architecture)
    # Full-model name -> target name.
    names = {}
    for name in features.state_dict():
        found = next((n for n in _feature_names(name) if n in full), None)
        if found is not None:
            names[found] = f"{PREFIX}model.{name}"
    # e.g. "fc", "classifier", "head.fc"; a features_only model's config no longer names it.
    classifier_root = full_model.pretrained_cfg["classifier"].split(".")[0]

    def rename(key: str) -> Tuple[Optional[str], Optional[str]]:
        if key.split(".")[0] == classifier_root:
            return None, CLASSIFIER
        if key in names:
            return names[key], None
        if key in full:
            return None, f"after the last stage of timm's features_only {architecture}"
        return None, f"not a tensor of timm's {architecture}"

    conversion = _fill(state_dict, target, rename)
    conversion.unmatched = [(original.get(k, k), reason) for k, reason in conversion.unmatched]
    return conversion


def _rename_by_order(
    state_dict: Dict[str, Tensor], full: Dict[str, Tensor], architecture: str
) -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """
    ``state_dict`` under the names of ``full`` (a timm model's state dict) if its tensors are, in
    order, as many and of the same shapes; unchanged (to be reported) otherwise.

    Returns:
        (the tensors by name, the checkpoint's name of each renamed tensor by its new name)
    """
    shapes = [v.shape for v in state_dict.values()]
    if shapes != [v.shape for v in full.values()]:
        logger.warning(
            f"No tensor name of the checkpoint is one of timm's {architecture}, and its "
            f"{len(shapes)} tensors are not, in order, the shapes of timm's {len(full)}"
        )
        return state_dict, {}
    logger.info(
        f"No tensor name of the checkpoint is one of timm's {architecture}; its {len(shapes)} "
        "tensors are those of the timm model in order, with the same shapes, and are matched by "
        "that order"
    )
    return dict(zip(full, state_dict.values())), dict(zip(full, state_dict))
