"""
Optimizers of the DSLA configs: detectron2's SGD for the ResNet models and AdamW for Swin, selected by
``SOLVER.OPTIMIZER``, with the gradient clipping of the authors' configs (total norm over the whole model).
"""
import torch

from detectron2.config import CfgNode
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = ["add_solver_config", "build_optimizer"]

# Parameters without weight decay besides norms (as in the Swin papers' detection recipes): absolute position
# embeddings and relative position bias tables. Keys are parameter names within their module.
NO_WEIGHT_DECAY_PARAMS = ("absolute_pos_embed", "pos_embed", "relative_position_bias_table")


def add_solver_config(cfg):
    """Add ``SOLVER.OPTIMIZER``: "SGD" (detectron2's default) or "ADAMW"."""
    cfg.SOLVER.OPTIMIZER = "SGD"


def _add_gradient_clipping(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """
    detectron2's gradient clipping, plus ``CLIP_TYPE: "full_model"``: clip the L2 norm of all gradients
    together before each step, as mmdetection's ``grad_clip=dict(max_norm=35, norm_type=2)`` does; detectron2's
    "norm" clips each parameter on its own.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
        return maybe_add_gradient_clipping(cfg, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    max_norm, norm_type = clip.CLIP_VALUE, clip.NORM_TYPE

    def clip_all_gradients(_optimizer, _args, _kwargs):
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)

    optimizer.register_step_pre_hook(clip_all_gradients)
    return optimizer


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    """
    The optimizer of ``cfg.SOLVER``: ``OPTIMIZER`` "SGD" (``MOMENTUM``, ``NESTEROV``) or "ADAMW", with
    ``BASE_LR``, ``WEIGHT_DECAY``, ``WEIGHT_DECAY_NORM`` (all normalization layers), ``BIAS_LR_FACTOR``,
    ``WEIGHT_DECAY_BIAS`` and ``CLIP_GRADIENTS``. Position embeddings and relative position bias tables get no
    weight decay.
    """
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
        overrides={name: {"weight_decay": 0.0} for name in NO_WEIGHT_DECAY_PARAMS},
    )
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        optimizer = torch.optim.SGD(
            params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV
        )
    elif name == "ADAMW":
        optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR)
    else:
        raise ValueError(f"Unknown SOLVER.OPTIMIZER '{cfg.SOLVER.OPTIMIZER}'; expected 'SGD' or 'ADAMW'")
    return _add_gradient_clipping(cfg, optimizer)
