"""
Losses of DSLA: Quality Focal Loss for the soft classification label, and IoU / GIoU losses on
distance predictions (l, t, r, b) of paired points.
"""

import torch
import torch.distributed as dist
from fvcore.nn import giou_loss
from torch import Tensor
from torch.nn import functional as F

from detectron2.utils import comm

__all__ = ["quality_focal_loss", "paired_iou", "box_regression_loss", "all_reduce_mean"]


def quality_focal_loss(logits: Tensor, targets: Tensor, beta: float = 2.0) -> Tensor:
    """
    Quality Focal Loss (Li et al., "Generalized Focal Loss", 2020), elementwise and unreduced:
    ``BCEWithLogits(x, t) * |t - sigmoid(x)| ** beta``.

    Args:
        logits: Tensor[...] of raw scores.
        targets: Tensor of the same shape: soft one-hot labels in [0, 1].
        beta: the modulating exponent.

    Returns:
        Tensor of the shape of ``logits``.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape; got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}"
        )
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return bce * (targets - logits.sigmoid()).abs().pow(beta)


def _as_boxes_around_origin(ltrb: Tensor) -> Tensor:
    """(l, t, r, b) distances of a point to XYXY boxes with the point at the origin."""
    return torch.cat([-ltrb[:, :2], ltrb[:, 2:]], dim=1)


def paired_iou(pred_ltrb: Tensor, target_ltrb: Tensor) -> Tensor:
    """
    IoU of the predicted and target boxes of the same points, both given as distances (l, t, r, b)
    to the
    point: Tensor[R, 4] each -> Tensor[R]. Unchanged when both are scaled by the same stride.
    """
    pred_area = (pred_ltrb[:, 0] + pred_ltrb[:, 2]) * (pred_ltrb[:, 1] + pred_ltrb[:, 3])
    target_area = (target_ltrb[:, 0] + target_ltrb[:, 2]) * (target_ltrb[:, 1] + target_ltrb[:, 3])
    inter_lt_rb = torch.minimum(pred_ltrb, target_ltrb)
    inter_w = (inter_lt_rb[:, 0] + inter_lt_rb[:, 2]).clamp(min=0)
    inter_h = (inter_lt_rb[:, 1] + inter_lt_rb[:, 3]).clamp(min=0)
    inter = inter_w * inter_h
    union = pred_area + target_area - inter
    return inter / union.clamp(min=1e-12)


def box_regression_loss(pred_ltrb: Tensor, target_ltrb: Tensor, loss_type: str) -> Tensor:
    """
    Unreduced box loss of paired distance predictions, Tensor[R, 4] each -> Tensor[R].

    Args:
        loss_type: ``"iou"``: ``-log(IoU)`` with IoU clamped at 1e-6; ``"giou"``: ``1 - GIoU``.
    """
    if loss_type == "iou":
        return -paired_iou(pred_ltrb, target_ltrb).clamp(min=1e-6).log()
    if loss_type == "giou":
        return giou_loss(
            _as_boxes_around_origin(pred_ltrb),
            _as_boxes_around_origin(target_ltrb),
            reduction="none",
        )
    raise ValueError(f"Unknown box loss type '{loss_type}'; expected 'iou' or 'giou'")


def all_reduce_mean(value: Tensor) -> Tensor:
    """
    Mean of ``value`` over the workers of the default process group (itself in a single process),
    detached. Used for loss normalizers, so that the loss does not depend on how a batch is split
    over workers.
    """
    world_size = comm.get_world_size()
    if world_size == 1:
        return value.detach()
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world_size
