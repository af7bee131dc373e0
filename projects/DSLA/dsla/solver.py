"""
Optimizers of the DSLA configs, with the parameter groups of the authors' training logs:
detectron2's SGD for the ResNet models and AdamW for Swin (``SOLVER.OPTIMIZER``), and the gradient
clipping of mmdetection (total norm over the whole model). :func:`get_param_groups` and
:func:`make_optimizer` serve the YAML configs (through :func:`build_optimizer`) and the LazyConfigs
alike.
"""

from typing import Any, Dict, Iterable, List, Optional

import torch
import torchvision
from torch import nn

from detectron2.config import CfgNode
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups
from detectron2.utils.events import get_event_storage

__all__ = ["build_optimizer", "get_param_groups", "make_optimizer"]

# Module types whose parameters are "normalization" parameters, as in detectron2 and mmcv.
# FrozenBatchNorm2d has no parameters; DSLA's FrozenStatsBatchNorm2d is a BatchNorm2d.
_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    *,
    weight_decay_norm: Optional[float] = None,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: Optional[float] = None,
    bias_rules_skip_norm_and_dcn: bool = False,
    no_weight_decay_keys: Iterable[str] = (),
) -> List[Dict[str, Any]]:
    """
    Optimizer parameter groups (lr and weight decay per parameter), as detectron2's
    ``get_default_optimizer_params`` or as mmcv's ``DefaultOptimizerConstructor`` with which the
    authors trained.

    Args:
        base_lr, weight_decay: of every parameter not named below.
        weight_decay_norm: of the weights and biases of normalization layers (None:
            ``weight_decay``).
        bias_lr_factor, weight_decay_bias: lr factor and weight decay (None: unchanged) of biases.
        bias_rules_skip_norm_and_dcn: mmcv's rule: the two bias options skip the biases of
            normalization layers (which keep ``base_lr`` and ``weight_decay_norm``) and the bias of
            a deformable conv itself (its offset conv is an ordinary conv). False: detectron2's
            rule, they apply to every bias.
        no_weight_decay_keys: parameters whose full name contains one of these get weight decay 0
            whatever else applies (mmcv's ``custom_keys`` with ``decay_mult=0``, e.g. ``"norm"`` for
            Swin).

    Returns:
        parameter groups for a ``torch.optim.Optimizer``, merged by hyperparameters.
    """
    no_weight_decay_keys = tuple(no_weight_decay_keys)
    groups = []
    seen = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_TYPES)
        is_dcn = isinstance(module, torchvision.ops.DeformConv2d)
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            lr, decay = base_lr, weight_decay
            if is_norm and weight_decay_norm is not None:
                decay = weight_decay_norm
            if param_name == "bias" and not (bias_rules_skip_norm_and_dcn and (is_norm or is_dcn)):
                lr = base_lr * bias_lr_factor
                if weight_decay_bias is not None:
                    decay = weight_decay_bias
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if any(key in full_name for key in no_weight_decay_keys):
                decay = 0.0
            groups.append({"params": [param], "lr": lr, "weight_decay": decay})
    return reduce_param_groups(groups)


def make_optimizer(
    params: List[Dict[str, Any]],
    name: str = "SGD",
    *,
    clip_max_norm: float = 0.0,
    clip_norm_type: float = 2.0,
    **kwargs,
) -> torch.optim.Optimizer:
    """
    ``torch.optim.SGD`` or ``AdamW`` (``name``, case-insensitive) over ``params`` with ``kwargs``
    (lr, momentum, betas, weight_decay, ...). With ``clip_max_norm > 0`` the L2 norm of all
    gradients together is clipped to it before each step, as mmdetection's
    ``grad_clip=dict(max_norm=35, norm_type=2)`` does (detectron2's "norm" clipping clips each
    parameter on its own). Inside a trainer the norm before clipping goes to the event storage
    as ``grad_norm`` (the median of the writers' window, as the losses), the largest norm since
    this optimizer was built (a resumed run counts anew) as ``grad_norm_max`` and the number of
    steps clipped since then as ``grad_clipped_steps``, so that
    a run shows whether the clip acted and what it cut (a ``CLIP_VALUE`` such as 1e9 only logs).
    """
    optimizers = {"SGD": torch.optim.SGD, "ADAMW": torch.optim.AdamW}
    if name.upper() not in optimizers:
        raise ValueError(f"Unknown SOLVER.OPTIMIZER '{name}'; expected 'SGD' or 'ADAMW'")
    optimizer = optimizers[name.upper()](params, **kwargs)
    if clip_max_norm > 0:
        all_params = [p for group in optimizer.param_groups for p in group["params"]]

        clipped_steps, max_norm = 0, 0.0

        def clip_all_gradients(_optimizer, _args, _kwargs):
            nonlocal clipped_steps, max_norm
            norm = float(torch.nn.utils.clip_grad_norm_(all_params, clip_max_norm, clip_norm_type))
            clipped_steps += norm > clip_max_norm
            max_norm = max(max_norm, norm)
            storage = _current_event_storage()
            if storage is not None:
                storage.put_scalar("grad_norm", norm)
                storage.put_scalar("grad_norm_max", max_norm, smoothing_hint=False)
                storage.put_scalar("grad_clipped_steps", clipped_steps, smoothing_hint=False)

        optimizer.register_step_pre_hook(clip_all_gradients)
    return optimizer


def _current_event_storage():
    """The event storage of the training loop running now, or None outside one."""
    try:
        return get_event_storage()
    except AssertionError:  # detectron2's way of saying there is none
        return None


def param_group_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """The keyword arguments of :func:`get_param_groups` that ``cfg.SOLVER`` sets."""
    solver = cfg.SOLVER
    return {
        "base_lr": solver.BASE_LR,
        "weight_decay": solver.WEIGHT_DECAY,
        "weight_decay_norm": solver.WEIGHT_DECAY_NORM,
        "bias_lr_factor": solver.BIAS_LR_FACTOR,
        "weight_decay_bias": solver.WEIGHT_DECAY_BIAS,
        "bias_rules_skip_norm_and_dcn": solver.BIAS_RULES_SKIP_NORM_AND_DCN,
        "no_weight_decay_keys": list(solver.NO_WEIGHT_DECAY_KEYS),
    }


def optimizer_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """The keyword arguments of :func:`make_optimizer` that ``cfg.SOLVER`` sets."""
    solver = cfg.SOLVER
    name = solver.OPTIMIZER.upper()
    kwargs = {"name": name, "lr": solver.BASE_LR, "weight_decay": solver.WEIGHT_DECAY}
    if name == "SGD":
        kwargs.update(momentum=solver.MOMENTUM, nesterov=solver.NESTEROV)
    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        kwargs.update(clip_max_norm=clip.CLIP_VALUE, clip_norm_type=clip.NORM_TYPE)
    return kwargs


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    The optimizer of ``cfg.SOLVER``: ``OPTIMIZER`` "SGD" (``MOMENTUM``, ``NESTEROV``) or "ADAMW"
    over the parameter groups of :func:`get_param_groups` (``BASE_LR``, ``WEIGHT_DECAY``,
    ``WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``,
    ``BIAS_RULES_SKIP_NORM_AND_DCN``, ``NO_WEIGHT_DECAY_KEYS``), with ``CLIP_GRADIENTS``:
    ``CLIP_TYPE`` "full_model" clips all gradients together, "value" and "norm" are detectron2's.
    """
    optimizer = make_optimizer(
        get_param_groups(model, **param_group_kwargs(cfg)), **optimizer_kwargs(cfg)
    )
    if cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE == "full_model":
        return optimizer
    return maybe_add_gradient_clipping(cfg, optimizer)
