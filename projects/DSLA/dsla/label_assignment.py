"""
The DSLA label: static smooth labels from centerness and interval relaxation, and the dynamic label
that couples them with the IoU of the predicted box (Su et al., "Dynamic Smooth Label Assignment",
2022).

Notation follows the paper: for a point ``p`` and a box ``g``, ``ctr`` is the centerness (with the
core zone), ``h`` the interval-relaxation weight with factor ``gamma``; the static label is ``y_s =
ctr * h`` and the dynamic label ``y_d = y_s * q`` with ``q`` the IoU of the predicted box with
``g``.

All functions are pure tensor functions, vectorized over points and boxes, and run on any device.
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "smooth_label_targets",
    "centerness_with_core_zone",
    "interval_relaxation",
    "dynamic_smooth_labels",
    "level_points",
]

# Points x boxes pairs handled at once by `smooth_label_targets`. A crowded image (thousands of
# boxes at 800x1333, ~22k points) is processed in chunks of boxes so that the temporaries stay at a
# few hundred MB; the result does not depend on the chunking.
MAX_PAIRS_PER_CHUNK = 1 << 21


def level_points(
    height: int, width: int, stride: int, offset: float, device: Optional[torch.device] = None
) -> Tensor:
    """
    Locations of one feature level in input-image pixels.

    Returns:
        Tensor[H*W, 2]: (x, y) = ((i + offset) * stride, (j + offset) * stride), row-major (j over
        rows), which is the order of a (N, C, H, W) prediction flattened to (N, H*W, C).
    """
    xs = (torch.arange(width, dtype=torch.float32, device=device) + offset) * stride
    ys = (torch.arange(height, dtype=torch.float32, device=device) + offset) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def interval_relaxation(max_dist: Tensor, lo: Tensor, hi: Tensor, gamma: float) -> Tensor:
    """
    The weight ``h`` of a point's regress range for a box, with soft shoulders of relative width
    ``gamma``.

    ``lo' = lo * (1 - gamma)``, ``hi' = hi * (1 + gamma)``; ``h`` is 1 on ``[lo, hi]``, rises
    linearly from 0 at ``lo'`` to 1 at ``lo``, falls linearly from 1 at ``hi`` to 0 at ``hi'``, and
    is 0 elsewhere. With ``gamma = 0`` it is the FCOS indicator ``lo <= m <= hi``. ``hi`` may be
    +inf.

    Args:
        max_dist: Tensor[...]: ``m = max(l, t, r, b)``.
        lo, hi: Tensors broadcastable to ``max_dist``.

    Returns:
        Tensor of the broadcast shape, values in [0, 1].
    """
    if gamma < 0:
        raise ValueError(f"The interval relaxation gamma must be >= 0, got {gamma}")
    m = max_dist
    inside = (m >= lo) & (m <= hi)
    h = inside.to(m.dtype)
    if gamma == 0:
        return h
    lo_relaxed = lo * (1.0 - gamma)
    hi_relaxed = hi * (1.0 + gamma)
    # Where lo = 0 the lower shoulder is empty; where hi = inf the upper one is (the unused branch
    # of `where` may then hold inf or nan, which it discards).
    lower = (m >= lo_relaxed) & (m < lo)
    h_lower = (m - lo_relaxed) / (lo - lo_relaxed).clamp(min=1e-12)
    upper = (m > hi) & (m <= hi_relaxed) & torch.isfinite(hi)
    h_upper = (hi_relaxed - m) / (hi_relaxed - hi).clamp(min=1e-12)
    h = torch.where(lower, h_lower, h)
    return torch.where(upper, h_upper, h)


def centerness_with_core_zone(
    ltrb: Tensor, inside: Tensor, center_offset: Tensor, stride: Tensor, core_zone: bool
) -> Tensor:
    """
    FCOS centerness ``ctr = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` for points inside
    their box (0 elsewhere), raised to 1 in the core zone: inside points within half a stride of the
    box center.

    Args:
        ltrb: Tensor[..., 4]: distances (l, t, r, b) from the point to the box sides.
        inside: bool Tensor[...]: whether the point counts as inside the box.
        center_offset: Tensor[..., 2]: |x - cx|, |y - cy|.
        stride: Tensor broadcastable to ``inside``.
        core_zone: whether to apply the core zone.

    Returns:
        Tensor[...] in [0, 1].
    """
    l, t, r, b = ltrb.unbind(-1)
    lr = torch.minimum(l, r) / torch.maximum(l, r).clamp(min=1e-12)
    tb = torch.minimum(t, b) / torch.maximum(t, b).clamp(min=1e-12)
    ctr = torch.where(inside, (lr * tb).clamp(min=0.0).sqrt(), torch.zeros_like(lr))
    if core_zone:
        core = inside & (center_offset <= stride.unsqueeze(-1) / 2).all(dim=-1)
        ctr = torch.where(core, torch.ones_like(ctr), ctr)
    return ctr


def _check_inputs(points, strides, regress_ranges, gt_boxes, gt_classes, num_classes):
    if points.dim() != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be [P, 2] (x, y); got shape {tuple(points.shape)}")
    num_points = points.shape[0]
    if strides.shape != (num_points,):
        raise ValueError(f"strides must be [P] = [{num_points}]; got shape {tuple(strides.shape)}")
    if regress_ranges.shape != (num_points, 2):
        raise ValueError(
            f"regress_ranges must be [P, 2] = [{num_points}, 2]; got shape "
            f"{tuple(regress_ranges.shape)}"
        )
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(
            f"gt_boxes must be [N, 4] (x0, y0, x1, y1); got shape {tuple(gt_boxes.shape)}"
        )
    if gt_classes.shape != (gt_boxes.shape[0],):
        raise ValueError(
            f"gt_classes must be [N] = [{gt_boxes.shape[0]}]; got shape {tuple(gt_classes.shape)}"
        )
    if gt_classes.dtype.is_floating_point or gt_classes.dtype == torch.bool:
        raise ValueError(f"gt_classes must be an integer tensor; got dtype {gt_classes.dtype}")
    bad_point = ~torch.isfinite(points).all(dim=1)
    bad_stride = ~(torch.isfinite(strides) & (strides > 0))
    # hi may be +inf; lo must be finite.
    bad_range = torch.isnan(regress_ranges).any(dim=1) | ~torch.isfinite(regress_ranges[:, 0])
    bad_box = ~torch.isfinite(gt_boxes).all(dim=1)
    bad_class = (gt_classes < 0) | (gt_classes >= num_classes)
    # One host sync for all checks; the messages are built only on failure.
    flags = torch.stack(
        [bad_point.any(), bad_stride.any(), bad_range.any(), bad_box.any(), bad_class.any()]
    )
    if not bool(flags.any()):
        return
    for name, values, bad, what in [
        ("points", points, bad_point, "non-finite coordinates"),
        ("strides", strides, bad_stride, "non-finite or non-positive values"),
        ("regress_ranges", regress_ranges, bad_range, "NaN or a non-finite lo"),
        ("gt_boxes", gt_boxes, bad_box, "non-finite coordinates"),
    ]:
        rows = torch.nonzero(bad).flatten().tolist()
        if rows:
            raise ValueError(f"{name} has {what} in rows {rows[:10]}: {values[rows[:3]].tolist()}")
    rows = torch.nonzero(bad_class).flatten().tolist()
    raise ValueError(
        f"gt_classes must lie in [0, {num_classes}); rows {rows[:10]} have "
        f"{gt_classes[rows[:10]].tolist()}"
    )


@torch.no_grad()
def smooth_label_targets(
    points: Tensor,
    strides: Tensor,
    regress_ranges: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    num_classes: int,
    *,
    relaxation: float = 0.2,
    core_zone: bool = True,
    center_sampling_radius: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """
    Static smooth labels ``y_s`` of one image (DSLA, Sec. 3): every point takes the box ``g*`` with
    the highest ``y_s(p, g) = ctr(p, g) * h(p, g)``; ties go to the smaller box, then to the lower
    index.

    Args:
        points: Tensor[P, 2]: (x, y) of every point of every level.
        strides: Tensor[P]: the stride of each point's level.
        regress_ranges: Tensor[P, 2]: (lo, hi) of each point's level; hi may be +inf.
        gt_boxes: Tensor[N, 4]: XYXY ground-truth boxes; N may be 0.
        gt_classes: long Tensor[N], in [0, num_classes).
        num_classes: the background class index for negatives.
        relaxation: ``gamma`` of the interval relaxation (0: FCOS's hard ranges).
        core_zone: set ``ctr = 1`` for inside points within half a stride of the box center.
        center_sampling_radius: ``R``; if > 0, a point is inside ``g`` only if it is strictly inside
            the square of half-size ``R * stride`` around ``g``'s center, clipped to ``g``.

    Returns:
        scores: Tensor[P]: ``y_s(p, g*)``; 0 for negatives.
        classes: long Tensor[P]: class of ``g*``; ``num_classes`` for negatives.
        box_targets: Tensor[P, 4]: (l, t, r, b) from the point to ``g*``; finite but meaningless for
            negatives.
    """
    _check_inputs(points, strides, regress_ranges, gt_boxes, gt_classes, num_classes)
    device = points.device
    points = points.float()
    strides = strides.float()
    regress_ranges = regress_ranges.float()
    gt_boxes = gt_boxes.float()
    num_points, num_boxes = points.shape[0], gt_boxes.shape[0]

    best_score = points.new_zeros(num_points)
    best_area = points.new_full((num_points,), math.inf)
    best_idx = torch.zeros(num_points, dtype=torch.long, device=device)
    if num_boxes == 0:
        classes = torch.full((num_points,), num_classes, dtype=torch.long, device=device)
        return best_score, classes, points.new_zeros(num_points, 4)

    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    chunk = max(1, MAX_PAIRS_PER_CHUNK // max(num_points, 1))
    for start in range(0, num_boxes, chunk):
        boxes = gt_boxes[start : start + chunk]
        point_idx, box_idx, scores = _static_labels_of_inside_pairs(
            points, strides, regress_ranges, boxes, relaxation, core_zone, center_sampling_radius
        )
        # Per point, the best score of this chunk; among the boxes that reach it, the smallest, then
        # the first.
        chunk_best = best_score.new_zeros(num_points).scatter_reduce(0, point_idx, scores, "amax")
        tied = scores == chunk_best[point_idx]
        pair_area = areas[start : start + chunk][box_idx]
        chunk_area = best_area.new_full((num_points,), math.inf).scatter_reduce(
            0, point_idx[tied], pair_area[tied], "amin"
        )
        tied &= pair_area == chunk_area[point_idx]
        chunk_idx = torch.full_like(best_idx, len(boxes)).scatter_reduce(
            0, point_idx[tied], box_idx[tied], "amin"
        )
        better = (chunk_best > best_score) | ((chunk_best == best_score) & (chunk_area < best_area))
        better &= chunk_best > 0
        best_score = torch.where(better, chunk_best, best_score)
        best_area = torch.where(better, chunk_area, best_area)
        best_idx = torch.where(better, chunk_idx + start, best_idx)

    positive = best_score > 0
    classes = torch.where(positive, gt_classes[best_idx], torch.full_like(best_idx, num_classes))
    matched = gt_boxes[best_idx]
    box_targets = torch.cat([points - matched[:, :2], matched[:, 2:] - points], dim=1)
    return best_score, classes, box_targets


def _static_labels_of_inside_pairs(
    points, strides, regress_ranges, boxes, relaxation, core_zone, radius
):
    """
    ``y_s`` of the (point, box) pairs whose point is inside the box; every other pair has ``y_s =
    0``. Only the cheap inside test touches all P x C pairs: the centerness and relaxation are
    computed for the few inside ones.

    Returns:
        point_idx, box_idx: long Tensor[K]: the inside pairs.
        scores: Tensor[K]: their ``y_s``.
    """
    x, y = points[:, 0:1], points[:, 1:2]  # [P, 1]
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2  # [C, 2]
    if radius > 0:
        # The square of half-size R * s around the center, clipped to the box, is centered on the
        # box too: its half-sizes are min(R * s, w / 2) and min(R * s, h / 2).
        half_wh = (boxes[:, 2:] - boxes[:, :2]) / 2
        radius_px = radius * strides[:, None]  # [P, 1]
        inside = (x - centers[:, 0]).abs() < torch.minimum(radius_px, half_wh[:, 0])
        inside &= (y - centers[:, 1]).abs() < torch.minimum(radius_px, half_wh[:, 1])
    else:
        inside = (
            (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
        )  # [P, C]
    point_idx, box_idx = inside.nonzero(as_tuple=True)

    pair_points, pair_boxes = points[point_idx], boxes[box_idx]  # [K, 2], [K, 4]
    ltrb = torch.cat([pair_points - pair_boxes[:, :2], pair_boxes[:, 2:] - pair_points], dim=1)
    center_offset = (pair_points - centers[box_idx]).abs()
    all_inside = torch.ones_like(point_idx, dtype=torch.bool)
    ctr = centerness_with_core_zone(ltrb, all_inside, center_offset, strides[point_idx], core_zone)
    ranges = regress_ranges[point_idx]
    h = interval_relaxation(ltrb.max(dim=1).values, ranges[:, 0], ranges[:, 1], relaxation)
    return point_idx, box_idx, ctr * h


def dynamic_smooth_labels(
    static_labels: Tensor, ious: Tensor, iou_coupling: bool = True, iou_only: bool = False
) -> Tensor:
    """
    The dynamic label ``y_d`` of positive points (DSLA, Sec. 3.3).

    Args:
        static_labels: Tensor[R]: ``y_s``.
        ious: Tensor[R]: ``q``, IoU of the (detached) predicted box with the target box.
        iou_coupling: ``y_d = y_s * q``; if False, ``y_d = y_s``.
        iou_only: ``y_d = q`` (the paper's "IoU instead of centerness" ablation); overrides
            ``iou_coupling``.

    Returns:
        Tensor[R] in [0, 1].
    """
    if iou_only:
        return ious.clamp(0.0, 1.0)
    if iou_coupling:
        return static_labels * ious.clamp(0.0, 1.0)
    return static_labels
